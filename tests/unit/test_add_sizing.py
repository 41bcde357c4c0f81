"""`add_sizing` (SPEC §11): registration and its validation, `add_strategy(sizing_name=…)`,
and the pure entry decision the live tick and the backtest share (`size_entry`, the ATR
window, the machine's sizer hook)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

import bkit
from bkit.core import sizing
from bkit.core.candles import Candle
from bkit.core.config import Config
from bkit.core.errors import RegistrationError, UnknownNameError
from bkit.core.machine import KeyContext, KeyState, StrategyAnswer, advance
from bkit.core.registry import REGISTRY, add_sizing, add_strategy, reset_config
from bkit.core.sizing import SizingInputs, entry_sizer, size_entry
from bkit.core.sizing import aggregate_minutes as aggregate
from bkit.core.sizing import atr_candle_window as window_of
from bkit.core.sizing import closed_window as closed
from bkit.core.sizing import notional_balance as notional
from bkit.core.sizing import window_atr as atr_at

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
CTX = KeyContext("BTC/USDT", "sized", "binance", "1m")


def _fresh() -> None:
    REGISTRY.clear()
    reset_config()


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Each test registers on an empty registry with the default config."""
    _fresh()
    yield
    _fresh()


def noop(symbol: str, when: datetime, price: float) -> None:
    return None


# --- registration -------------------------------------------------------------------------


def test_add_sizing_is_public_and_fills_defaults() -> None:
    assert bkit.add_sizing is add_sizing and "add_sizing" in bkit.__all__
    kelly = bkit.add_sizing("k", "kelly")
    assert (kelly.method, dict(kelly.params)) == ("kelly", {"kelly_multiplier": 0.25})
    atr_sizing = add_sizing("a", "atr", risk_percentage=1, max_position_percentage=50)
    assert dict(atr_sizing.params) == {"risk_percentage": 1.0, "atr_multiplier": 2.0,
                                       "atr_period": 14.0}
    assert atr_sizing.max_position_percentage == 50.0
    assert REGISTRY.sizing("a") is atr_sizing
    assert add_sizing("f", cost=250).params["cost"] == 250.0  # method defaults to fixed


@pytest.mark.parametrize(("method", "params", "words"), [
    ("martingale", {}, "unknown method 'martingale'"),
    ("fixed", {}, "fixed needs cost"),
    ("fixed", {"cost": -5}, "cost must be > 0"),
    ("fixed_percentage", {"risk_percentage": 150}, "risk_percentage must be in (0, 100]"),
    ("fixed_percentage", {"risk_percentage": 1, "kelly_multiplier": 0.5}, "unknown params"),
    ("kelly", {"kelly_multiplier": 2}, "kelly_multiplier must be ≤ 1"),
    ("atr", {"risk_percentage": 1, "atr_period": 2.5}, "atr_period must be a whole number"),
    ("atr", {"risk_percentage": "1"}, "risk_percentage must be a finite number"),
])
def test_bad_sizings_are_refused_at_registration(method: str, params: dict[str, object],
                                                 words: str) -> None:
    with pytest.raises(RegistrationError, match="sizing 'bad'") as caught:
        add_sizing("bad", method, **params)  # type: ignore[arg-type]
    assert words in str(caught.value)
    assert "bad" not in REGISTRY.sizings


def test_bad_caps_names_and_duplicates_are_refused() -> None:
    with pytest.raises(RegistrationError, match="must not exceed max_position_size"):
        add_sizing("caps", cost=10, min_position_size=50, max_position_size=20)
    with pytest.raises(RegistrationError, match="max_position_percentage must be in"):
        add_sizing("caps", cost=10, max_position_percentage=0)
    with pytest.raises(RegistrationError, match="sizing name"):
        add_sizing("bad name!", cost=10)
    add_sizing("once", cost=10)
    with pytest.raises(RegistrationError, match="already registered"):
        add_sizing("once", cost=20)


def test_add_strategy_needs_a_registered_sizing() -> None:
    with pytest.raises(RegistrationError, match=r"unknown sizing 'nope'.*add_sizing first"):
        add_strategy("s", noop, sizing_name="nope")
    assert "s" not in REGISTRY.strategies
    add_sizing("pct", "fixed_percentage", risk_percentage=2)
    assert add_strategy("s", noop, sizing_name="pct").sizing_name == "pct"
    with pytest.raises(UnknownNameError, match="unknown sizing 'other'"):
        REGISTRY.sizing("other")


# --- the entry decision ---------------------------------------------------------------------


def test_fixed_without_a_percentage_cap_needs_no_balance() -> None:
    fixed = add_sizing("f", cost=250, max_position_size=200)
    assert size_entry(fixed, SizingInputs(balance_problem="no account"), 100, 95) == 200.0
    capped = add_sizing("g", cost=250, max_position_percentage=10)
    assert size_entry(capped, SizingInputs(balance=1000.0), 100, 95) == 100.0
    refused = size_entry(capped, SizingInputs(balance_problem="no account"), 100, 95)
    assert refused == "sizing 'g': no balance to size from: no account"


def test_size_entry_numbers_per_method() -> None:
    pct = add_sizing("pct", "fixed_percentage", risk_percentage=2)
    # 1000 × 2 % / |100 − 95| = 4 units × 100 = 400
    assert size_entry(pct, SizingInputs(balance=1000.0), 100.0, 95.0) == pytest.approx(400.0)
    kelly = add_sizing("k", "kelly")
    history = (4.0,) * 6 + (-2.0,) * 4  # W 0.6, R 2 → k = 0.4; 1000 × 0.4 × 0.25 = 100
    assert size_entry(kelly, SizingInputs(balance=1000.0, closed_pnls=history), 50.0, 45.0
                      ) == pytest.approx(100.0)
    by_atr = add_sizing("a", "atr", risk_percentage=1)
    # 1000 × 1 % / (2.5 × 2) = 2 units × 100 = 200
    assert size_entry(by_atr, SizingInputs(balance=1000.0, atr=2.5), 100.0, 95.0
                      ) == pytest.approx(200.0)
    assert size_entry(by_atr, SizingInputs(balance=1000.0, atr_problem="a gap"), 100.0, 95.0
                      ) == "sizing 'a': no ATR: a gap"


def test_notional_balance() -> None:
    assert notional(1000.0, [12.5, -2.5], "none") == 1010.0
    assert notional(0.0, [12.5], "none") == "none"


def test_atr_window_reads_only_closed_candles_of_the_interval() -> None:
    when = T0 + timedelta(minutes=7)  # inside the 5m bucket 12:05
    since, count = window_of(when, 5, 2)
    assert (since, count) == (T0 - timedelta(minutes=10), 3)  # buckets 11:50, 11:55, 12:00
    ms = int(T0.timestamp() * 1000)
    candles = [Candle(ms + m * 60_000, 100, 100 + m, 99 - m, 100, 1) for m in range(-15, 10)]
    five = aggregate(candles, 5)
    window = closed(five, when, 5, 2)
    assert [c.timestamp for c in window] == [ms - 600_000, ms - 300_000, ms]
    assert window[-1].high == 104 and window[-1].low == 95  # minutes 0..4 of 12:00
    assert atr_at(five, when, 5, 2) == sizing.atr(window, 2)
    assert atr_at(five[:1], when, 5, 2) == (
        "ATR(2) needs 3 closed 5m candles before 2024-01-01T12:07:00+00:00, got 0")


# --- the machine's hook ----------------------------------------------------------------------


def test_the_sizer_sets_the_cost_or_refuses_the_entry() -> None:
    signal = {"position": "long", "price_take_profit": 110.0, "price_stop_loss": 95.0,
              "cost": 5.0}
    pct = add_sizing("pct", "fixed_percentage", risk_percentage=2)
    sized = advance(CTX, KeyState(), T0, 100.0, Config(), answer=StrategyAnswer(signal),
                    sizer=entry_sizer(pct, SizingInputs(balance=1000.0)))
    assert sized.result.action == "opened" and sized.signal is not None
    assert sized.signal.cost == pytest.approx(400.0)  # the signal's own cost is ignored
    refused = advance(CTX, KeyState(), T0, 100.0, Config(), answer=StrategyAnswer(signal),
                      sizer=entry_sizer(pct, SizingInputs(balance_problem="no account")))
    assert refused.result.action == "idle" and refused.signal is None
    assert refused.signal_window is not None  # asked again at the next interval only
    [notice] = refused.notices
    assert (notice.kind, notice.data["stage"]) == ("error", "sizing")
    assert notice.message == "entry refused: sizing 'pct': no balance to size from: no account"
    assert not math.isnan(sized.signal.cost)
