"""Replay real 1m candles (freqtrade test data, with real gaps) through the state machine,
minute by minute, the way the runtime ticks, and check the invariants of SPEC §2-§5, §7."""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bkit.core.candles import Candle, CandleError, closed_candles_before, parse_candles, vwap
from bkit.core.machine import (
    KeyContext,
    KeyState,
    StrategyAnswer,
    advance,
    signal_window_of,
    wants_signal,
)
from bkit.core.registry import get_config, reset_config
from tests.real_candles import REAL_CANDLES_DIR
from tests.unit.spec_oracle import spec_pnl

DATA = REAL_CANDLES_DIR
LIFETIME = 120  # minutes


@pytest.fixture(autouse=True)
def default_config() -> Iterator[None]:
    reset_config()
    yield
    reset_config()


def load(name: str) -> list[Candle]:
    with (DATA / name).open(newline="") as handle:
        return parse_candles(csv.DictReader(handle), name)




def strategy(when: datetime, price: float) -> dict[str, Any] | None:
    """Deterministic by 15-minute window: long now, long at a price 0.2 % lower (scheduled),
    short now, long now, nothing. TP/SL ±1 % from the entry, 120-minute lifetime."""
    kind = (int(when.timestamp()) // 900) % 5
    if kind == 4:
        return None
    if kind == 3:
        return {
            "position": "short",
            "price_take_profit": price * 0.99,
            "price_stop_loss": price * 1.01,
            "minute_estimated_time": LIFETIME,
        }
    entry = price * 0.998 if kind == 1 else price
    signal = {
        "position": "long",
        "price_take_profit": entry * 1.01,
        "price_stop_loss": entry * 0.99,
        "minute_estimated_time": LIFETIME,
    }
    if kind == 1:
        signal["price_open"] = entry
    return signal


def risk(valid: Any, public: Any) -> str | None:
    """Rejects on minutes divisible by 7, so risk retries happen inside a window."""
    assert public.scheduled_at is not None
    return "busy minute" if public.scheduled_at.minute % 7 == 0 else None


@dataclass
class Tally:
    ticks: int = 0
    skipped: int = 0
    asked: Counter[int] = field(default_factory=Counter)  # window → get_signal calls
    risk_rejections: Counter[int] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)
    cancels: Counter[str] = field(default_factory=Counter)
    acquired: int = 0
    released: int = 0
    live: set[str] = field(default_factory=set)
    opened_ids: set[str] = field(default_factory=set)


def replay(candles: list[Candle], symbol: str) -> tuple[Tally, KeyState]:
    config = get_config()
    ctx = KeyContext(symbol, "replay", "csv", "15m")
    by_minute = {c.timestamp // 60_000: c for c in candles}
    first, last = candles[0].timestamp // 60_000, candles[-1].timestamp // 60_000
    state, tally = KeyState(), Tally()
    for minute in range(first, last + 2):
        when = datetime.fromtimestamp(minute * 60, tz=UTC)
        # What the exchange returns around `when`, forming and future candles included.
        feed = [by_minute[m] for m in range(minute - 7, minute + 2) if m in by_minute]
        window = closed_candles_before(feed, when, config.CC_AVG_PRICE_CANDLES_COUNT)
        assert all(when - timedelta(minutes=5) <= c.opened_at < when for c in window)
        try:
            price = vwap(window)
        except CandleError:
            assert window == []  # a gap: the tick fails, the next one tries again
            tally.skipped += 1
            continue
        tally.ticks += 1
        answer = None
        if wants_signal(state, when, ctx.interval):
            tally.asked[signal_window_of(when, ctx.interval)] += 1
            answer = StrategyAnswer(raw=strategy(when, price))
        outcome = advance(ctx, state, when, price, config, answer=answer, risk_check=risk)
        check_outcome(outcome, price, when, tally, state)
        state = KeyState(
            signal=outcome.signal if outcome.signal is not None else state.signal,
            status=state.status,
            signal_window=outcome.signal_window
            if outcome.signal_window is not None
            else state.signal_window,
        )
    return tally, state


def check_outcome(
    outcome: Any, price: float, when: datetime, tally: Tally, before: KeyState
) -> None:
    result = outcome.result
    tally.actions[result.action] += 1
    assert result.created_at == when
    signal = result.signal
    if outcome.slot == "acquire":
        tally.acquired += 1
    elif outcome.slot == "release":
        tally.released += 1
    if any(n.kind == "risk" for n in outcome.notices):
        tally.risk_rejections[signal_window_of(when, "15m")] += 1
        assert result.action == "idle" and outcome.signal is None
    assert not [n for n in outcome.notices if n.kind == "error"], outcome.notices

    if result.action in ("scheduled", "opened"):
        assert signal is not None
        if result.action == "scheduled" or signal.id not in tally.live:
            assert not tally.live, "at most one live signal per key"
        tally.live.add(signal.id)
        sign = 1 if signal.position == "long" else -1
        assert (
            sign * signal.price_take_profit
            > sign * signal.price_open
            > sign * signal.price_stop_loss
        )
    if result.action == "opened":
        assert signal is not None and signal.id not in tally.opened_ids  # never entered twice
        tally.opened_ids.add(signal.id)
        assert result.current_price == signal.price_open
        assert signal.pending_at == when
    if result.action == "active":
        assert 0 <= result.percent_tp <= 100 and 0 <= result.percent_sl <= 100
    if result.action == "closed":
        assert signal is not None and signal.id in tally.live
        tally.live.discard(signal.id)
        reason = result.close_reason
        tally.closes[reason] += 1
        assert reason in {"take_profit", "stop_loss", "time_expired"}
        if reason == "take_profit":
            assert result.current_price == signal.price_take_profit
        elif reason == "stop_loss":
            assert result.current_price == signal.price_stop_loss
        else:
            assert result.current_price == price
            assert signal.pending_at is not None
            assert when - signal.pending_at >= timedelta(minutes=LIFETIME)
        expected = spec_pnl(signal.position, signal.price_open, result.current_price)
        assert result.pnl.pnl_percentage == pytest.approx(expected, abs=1e-9)
        assert result.pnl.pnl_cost == pytest.approx(expected / 100 * 100, abs=1e-9)
        assert outcome.signal.price_close == result.current_price
    if result.action == "cancelled":
        assert signal is not None and signal.id in tally.live
        tally.live.discard(signal.id)
        tally.cancels[result.reason] += 1
        assert result.reason in {"timeout", "price_reject"}
    assert len(tally.live) <= 1


@pytest.mark.parametrize(
    ("name", "min_skipped"), [("UNITTEST_BTC-1m.csv", 7), ("XRP_ETH-1m.csv", 19)]
)
def test_replay_keeps_every_invariant(name: str, min_skipped: int) -> None:
    tally, final = replay(load(name), name.split("-")[0])

    still_live = final.signal is not None and final.signal.is_live
    assert len(tally.live) == (1 if still_live else 0)
    still_open = still_live and final.signal is not None and final.signal.state == "opened"
    still_scheduled = still_live and final.signal is not None and final.signal.state == "scheduled"

    closed, cancelled = sum(tally.closes.values()), sum(tally.cancels.values())
    assert tally.actions["opened"] == len(tally.opened_ids)  # no signal entered twice
    assert tally.actions["opened"] == closed + (1 if still_open else 0)
    assert tally.acquired == tally.released + (1 if still_live else 0)
    assert tally.released == closed + cancelled
    # a slot is taken by an immediate entry or by scheduling; every scheduled signal was
    # activated, cancelled, or is still waiting
    immediate = tally.acquired - tally.actions["scheduled"]
    activated = tally.actions["opened"] - immediate
    assert tally.actions["scheduled"] == activated + cancelled + (1 if still_scheduled else 0)

    # once per 15m window, plus one more ask per risk rejection in that window
    for window, asks in tally.asked.items():
        assert asks <= 1 + tally.risk_rejections[window]

    # the replay really exercised the machine, gaps included
    assert tally.skipped >= min_skipped
    assert tally.actions["opened"] >= 20
    assert min(tally.closes[r] for r in ("take_profit", "stop_loss", "time_expired")) >= 1
    assert tally.actions["scheduled"] >= 5 and tally.cancels["timeout"] >= 1
    assert tally.actions["waiting"] > 100 and tally.actions["active"] > 1000
    assert sum(tally.risk_rejections.values()) >= 3


def test_replay_prices_are_vwaps_of_closed_candles() -> None:
    candles = load("UNITTEST_BTC-1m.csv")
    # 2017-11-04 23:07 UTC: written out from the CSV rows of 23:02 .. 23:06
    when = datetime.fromtimestamp(candles[0].timestamp / 1000, tz=UTC) + timedelta(minutes=5)
    window = closed_candles_before(candles, when, 5)
    assert [c.timestamp for c in window] == [c.timestamp for c in candles[:5]]
    expected = sum((c.high + c.low + c.close) / 3 * c.volume for c in window) / sum(
        c.volume for c in window
    )
    assert vwap(window) == pytest.approx(expected, rel=1e-12)
    assert math.isclose(vwap(window), 0.00161, rel_tol=0.01)
