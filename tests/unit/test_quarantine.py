"""A stored signal row that cannot be right (hand-edited, corrupted) is quarantined: an error
event, its slot released, never traded."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from bkit.core.config import Config
from bkit.core.machine import KeyContext, KeyState, advance
from bkit.core.signals import SignalRow, stored_row_problems

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CTX = KeyContext("BTCUSDT", "s", "x")


def _row(**changes: object) -> SignalRow:
    base = SignalRow(id="sig-1", symbol="BTCUSDT", strategy_name="s", exchange_name="x",
                     position="long", price_open=100.0, price_take_profit=110.0,
                     price_stop_loss=95.0, minute_estimated_time=60, note="", cost=100.0,
                     state="opened", created_at=T0, scheduled_at=T0, pending_at=T0)
    return base.evolve(**changes)


def test_a_sound_row_has_no_problems() -> None:
    assert stored_row_problems(_row()) == []


@pytest.mark.parametrize("changes, fragment", [
    ({"price_take_profit": math.nan}, "price_take_profit is nan"),
    ({"price_stop_loss": -5.0}, "price_stop_loss is -5.0"),
    ({"price_open": 0.0}, "price_open is 0.0"),
    ({"price_take_profit": 90.0}, "is impossible"),  # a long with TP below the entry
    ({"position": "short"}, "is impossible"),  # TP above the entry for a short
    ({"position": "sideways"}, "position is 'sideways'"),
    ({"minute_estimated_time": 0}, "minute_estimated_time is 0"),
    ({"cost": math.inf}, "cost is inf"),
    ({"pending_at": None}, "open without pending_at"),
])
def test_corrupted_rows_are_quarantined_never_traded(changes: dict, fragment: str) -> None:
    row = _row(**changes)
    assert any(fragment in p for p in stored_row_problems(row))
    # A price far past TP would close it if it were traded: it must not be.
    outcome = advance(CTX, KeyState(signal=row), T0 + timedelta(minutes=5), 150.0, Config())
    assert outcome.result.action == "idle"
    assert outcome.signal is not None and outcome.signal.state == "quarantined"
    assert outcome.slot == "release" and outcome.order is None
    assert outcome.signal.pnl_percentage is None and outcome.signal.close_reason is None
    (notice,) = outcome.notices
    assert notice.kind == "error" and "quarantined" in notice.message and fragment in \
        notice.message
