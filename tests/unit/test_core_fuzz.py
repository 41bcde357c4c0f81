"""Property tests: garbage in never crashes the core and never becomes a trade.

Random signals (NaN, inf, negatives, strings, None, huge numbers, bools, wrong types) and random
prices/candles go through `validate_signal`, `advance` and `parse_candles`. Either the result is
valid by SPEC §2-§5, or the input is rejected with a clear error.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bkit.core.candles import Candle, CandleError, closed_candles_before, parse_candles, vwap
from bkit.core.config import Config
from bkit.core.errors import SignalValidationError
from bkit.core.machine import KeyContext, KeyState, StrategyAnswer, advance
from bkit.core.signals import Signal, SignalRow, validate_signal
from tests.unit.spec_oracle import spec_pnl

# BKIT_FUZZ_EXAMPLES=20000 runs a deeper campaign; the default keeps the suite fast.
FUZZ = settings(
    max_examples=int(os.environ.get("BKIT_FUZZ_EXAMPLES", "250")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
CTX = KeyContext("BTC/USDT", "fuzz", "paper", "1m")
CONFIG = Config()
EPS = 1e-9  # percentage points of slack for float rounding in the distance rules

garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**310),
    st.floats(),
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(float("-inf")),
    st.text(max_size=6),
    st.sampled_from(["100", "nan", "1e400", "long", "short", ""]),
    st.binary(max_size=3),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
prices = st.one_of(
    st.floats(min_value=1e-8, max_value=1e9, allow_nan=False),
    st.sampled_from([100.0, 0.0016, 50_000.0, 1e-300, 1e300, 5e-324]),
)


SIGNAL_FIELDS = (
    "position",
    "price_take_profit",
    "price_stop_loss",
    "price_open",
    "minute_estimated_time",
    "cost",
    "symbol",
    "note",
    "id",
)


@st.composite
def raw_signals(draw: st.DrawFn, price: float) -> Any:
    """Signal-shaped input near `price`: a plausible signal (often valid, sometimes a distance
    or lifetime off), then 0-3 fields replaced by garbage or removed; now and then pure garbage
    or a `Signal` object."""
    if draw(st.integers(0, 19)) == 0:
        return draw(garbage)  # not even a dict
    position = draw(st.sampled_from(["long", "short"]))
    sign = 1 if position == "long" else -1
    scheduled = draw(st.booleans())
    entry = price * (1 + draw(st.floats(min_value=-0.05, max_value=0.05))) if scheduled else price
    raw: dict[Any, Any] = {
        "position": position,
        "price_take_profit": entry * (1 + sign * draw(st.floats(min_value=0.001, max_value=0.5))),
        "price_stop_loss": entry * (1 - sign * draw(st.floats(min_value=0.001, max_value=0.3))),
    }
    if scheduled:
        raw["price_open"] = entry
    if draw(st.booleans()):
        raw["minute_estimated_time"] = draw(st.integers(-5, 2000))
    if draw(st.integers(0, 3)) == 0:
        raw["cost"] = draw(st.floats(min_value=1, max_value=1e4))
    if draw(st.integers(0, 9)) == 0:
        raw["note"] = draw(st.text(max_size=5))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        field = draw(st.one_of(st.sampled_from(SIGNAL_FIELDS), st.text(max_size=4), st.integers()))
        if field in raw and draw(st.integers(0, 4)) == 0:
            del raw[field]
        else:
            raw[field] = draw(garbage)
    if draw(st.integers(0, 4)) == 0 and all(k in SIGNAL_FIELDS for k in raw):
        return Signal(
            **{"position": None, "price_take_profit": None, "price_stop_loss": None, **raw}
        )
    return raw


def assert_tradeable(
    position: str,
    price_open: float,
    tp: float,
    sl: float,
    minutes: Any,
    cost: float,
    config: Config = CONFIG,
) -> None:
    """Everything SPEC §3 promises about a signal that was accepted."""
    assert position in ("long", "short")
    for value in (price_open, tp, sl, cost):
        assert isinstance(value, float) and math.isfinite(value) and value > 0
    sign = 1 if position == "long" else -1
    assert sign * tp > sign * price_open > sign * sl
    tp_distance = abs(tp - price_open) / price_open * 100
    sl_distance = abs(sl - price_open) / price_open * 100
    assert tp_distance >= config.CC_MIN_TAKEPROFIT_DISTANCE_PERCENT - EPS
    assert config.CC_MIN_STOPLOSS_DISTANCE_PERCENT - EPS <= sl_distance
    assert sl_distance <= config.CC_MAX_STOPLOSS_DISTANCE_PERCENT + EPS
    assert isinstance(minutes, int) and not isinstance(minutes, bool)
    assert 0 < minutes <= config.CC_MAX_SIGNAL_LIFETIME_MINUTES


@FUZZ
@given(data=st.data(), price=prices)
def test_validate_signal_accepts_only_tradeable_signals(data: st.DataObject, price: float) -> None:
    raw = data.draw(raw_signals(price))
    try:
        valid = validate_signal(raw, symbol="BTC/USDT", current_price=price, config=CONFIG)
    except SignalValidationError as exc:
        event("rejected")
        assert exc.reasons and all(isinstance(r, str) and r for r in exc.reasons)
        return
    event("accepted")
    assert_tradeable(
        valid.position,
        valid.price_open,
        valid.price_take_profit,
        valid.price_stop_loss,
        valid.minute_estimated_time,
        valid.cost,
    )
    sign = 1 if valid.position == "long" else -1
    if valid.immediate:  # rule 6: not already past TP or SL
        assert sign * valid.price_take_profit > sign * price > sign * valid.price_stop_loss
        assert sign * price <= sign * valid.price_open
    else:
        assert sign * price > sign * valid.price_open


@FUZZ
@given(data=st.data(), price=prices)
def test_advance_from_idle_never_trades_invalid_input(data: st.DataObject, price: float) -> None:
    raw = data.draw(raw_signals(price))
    error = data.draw(st.one_of(st.none(), st.none(), st.none(), st.text(min_size=1, max_size=5)))
    answer = StrategyAnswer(raw=raw, error=error)
    outcome = advance(CTX, KeyState(), T0, price, CONFIG, answer=answer)
    action = outcome.result.action
    event(f"from idle: {action}")
    assert action in {"idle", "scheduled", "opened"}
    assert outcome.result.created_at == T0 and outcome.result.symbol == "BTC/USDT"
    if action == "idle":
        assert outcome.signal is None and outcome.slot is None and outcome.order is None
        if error is not None or raw is not None:
            [notice] = outcome.notices
            assert notice.kind == "error" and notice.message
        return
    assert error is None
    row = outcome.signal
    assert row is not None and outcome.slot == "acquire"
    assert_tradeable(
        row.position,
        row.price_open,
        row.price_take_profit,
        row.price_stop_loss,
        row.minute_estimated_time,
        row.cost,
    )
    assert row.state == ("opened" if action == "opened" else "scheduled")
    # the same input through the validator is accepted too
    validate_signal(raw, symbol="BTC/USDT", current_price=price, config=CONFIG)


@st.composite
def live_rows(draw: st.DrawFn) -> SignalRow:
    position = draw(st.sampled_from(["long", "short"]))
    entry = draw(st.floats(min_value=1e-4, max_value=1e6))
    sign = 1 if position == "long" else -1
    tp = entry * (1 + sign * draw(st.floats(min_value=0.006, max_value=0.5)))
    sl = entry * (1 - sign * draw(st.floats(min_value=0.006, max_value=0.19)))
    scheduled = draw(st.booleans())
    return SignalRow(
        id="fuzz",
        symbol="BTC/USDT",
        strategy_name="fuzz",
        exchange_name="paper",
        position=position,
        price_open=entry,
        price_take_profit=tp,
        price_stop_loss=sl,
        minute_estimated_time=draw(st.integers(1, 1440)),
        note="",
        cost=100.0,
        state="scheduled" if scheduled else "opened",
        created_at=T0,
        scheduled_at=T0,
        pending_at=None if scheduled else T0,
    )




@FUZZ
@given(
    row=live_rows(),
    moves=st.lists(
        st.tuples(
            st.one_of(
                st.floats(min_value=-0.1, max_value=0.1),  # log10 move vs entry
                st.floats(min_value=-3, max_value=3),
            ),
            st.integers(1, 200),  # minutes to the next tick
            st.sampled_from([None] * 8 + ["close_position", "cancel_scheduled"]),
            st.sampled_from(["enabled"] * 6 + ["paused", "draining"]),
        ),
        min_size=1,
        max_size=25,
    ),
    broker=st.booleans(),
)
def test_random_price_paths_keep_every_invariant(
    row: SignalRow, moves: list[Any], broker: bool
) -> None:
    state = KeyState(signal=row)
    minute, live, slots = 0, True, 1
    for move, step, command, status in moves:
        minute += step
        when = T0 + timedelta(minutes=minute)
        price = row.price_open * 10**move
        state = replace(state, command=command, status=status)  # type: ignore[arg-type]
        outcome = advance(CTX, state, when, price, CONFIG, uses_broker=broker)
        result = outcome.result
        event(f"path: {result.action} {result.close_reason or result.reason or ''}".strip())
        assert result.action in {"idle", "waiting", "opened", "active", "closed", "cancelled"}
        if not live:
            assert result.action == "idle" and outcome.slot is None
        if result.action == "active":
            assert result.percent_tp is not None and result.percent_sl is not None
            assert 0 <= result.percent_tp <= 100 and 0 <= result.percent_sl <= 100
            assert result.percent_tp == 0 or result.percent_sl == 0
        if result.action == "closed":
            assert result.close_reason in {"take_profit", "stop_loss", "time_expired", "closed"}
            expected_price = {
                "take_profit": row.price_take_profit,
                "stop_loss": row.price_stop_loss,
            }.get(result.close_reason, price)
            assert result.current_price == expected_price
            assert result.pnl is not None
            assert math.isclose(
                result.pnl.pnl_percentage,
                spec_pnl(row.position, row.price_open, expected_price),
                rel_tol=1e-9,
                abs_tol=1e-9,
            )
        if result.action == "cancelled":
            assert result.reason in {"timeout", "price_reject", "user"}
        slots += {"acquire": 1, "release": -1, None: 0}[outcome.slot]
        assert slots == (1 if live else 0) - (1 if result.action in {"closed", "cancelled"} else 0)
        if outcome.signal is not None:
            new = outcome.signal
            assert new.id == row.id
            live = new.is_live
            if broker and new.order_in_flight:  # the exchange answers at once in this test
                assert outcome.order is not None
                new = new.evolve(
                    state="opened" if new.state == "opening" else new.state,
                    pending_at=new.pending_at or when,
                    order_in_flight=False,
                )
                if new.state == "closing":
                    live, slots = False, slots - 1
                    new = new.evolve(state="closed")
            state = replace(state, signal=new)
        if outcome.finished:
            assert not live


# --- candles --------------------------------------------------------------------------------
@st.composite
def raw_candles(draw: st.DrawFn) -> list[Any]:
    base = draw(st.floats(min_value=1e-6, max_value=1e6))
    count = draw(st.integers(0, 8))
    start = draw(st.integers(0, 2 * 10**12))
    rows: list[Any] = []
    timestamp = start
    for _ in range(count):
        timestamp += 60_000 * draw(st.integers(0, 3))  # 0 makes a duplicate
        low = base * draw(st.floats(min_value=0.9, max_value=1.0))
        high = base * draw(st.floats(min_value=1.0, max_value=1.1))
        values: list[Any] = [
            timestamp,
            base,
            high,
            low,
            base,
            draw(st.floats(min_value=0, max_value=1e6)),
        ]
        if draw(st.integers(0, 5)) == 0:
            values[draw(st.integers(0, 5))] = draw(garbage)
        form = draw(st.sampled_from(["tuple", "list", "dict", "candle"]))
        if form == "dict":
            row: Any = dict(
                zip(("timestamp", "open", "high", "low", "close", "volume"), values, strict=True)
            )
            if draw(st.integers(0, 9)) == 0:
                del row[draw(st.sampled_from(sorted(row)))]
        elif form == "candle":
            row = Candle(*values)
        else:
            row = tuple(values) if form == "tuple" else list(values)
        rows.append(row)
    if draw(st.integers(0, 9)) == 0:
        rows.reverse()
    return rows


@FUZZ
@given(rows=raw_candles())
def test_parse_candles_returns_valid_candles_or_raises_candle_error(rows: list[Any]) -> None:
    try:
        candles = parse_candles(rows, "BTC/USDT")
    except CandleError as exc:
        assert "BTC/USDT" in str(exc)
        return
    assert len(candles) == len(rows)
    for candle in candles:
        assert isinstance(candle.timestamp, int) and candle.timestamp >= 0
        for value in (candle.open, candle.high, candle.low, candle.close):
            assert math.isfinite(value) and value > 0
        assert math.isfinite(candle.volume) and candle.volume >= 0
        assert candle.high >= candle.low
    assert all(a.timestamp < b.timestamp for a, b in itertools.pairwise(candles))
    try:
        price = vwap(candles)
    except CandleError as exc:  # no candles, or values so extreme the VWAP overflows
        assert not candles or "not a finite price" in str(exc)
        return
    lowest = min(min(c.low, c.close) for c in candles)
    highest = max(max(c.high, c.close) for c in candles)
    assert math.isfinite(price) and price > 0
    assert lowest * (1 - 1e-9) <= price <= highest * (1 + 1e-9)


@FUZZ
@given(
    candles=st.lists(
        st.builds(
            Candle,
            st.integers(0, 3 * 10**12),
            st.floats(min_value=1e-300, max_value=1e300),
            st.floats(min_value=1e-300, max_value=1e300),
            st.floats(min_value=1e-300, max_value=1e300),
            st.floats(min_value=1e-300, max_value=1e300),
            st.floats(min_value=0, max_value=1e300),
        ),
        max_size=6,
    )
)
def test_vwap_of_any_valid_candles_is_a_price_or_a_candle_error(candles: list[Candle]) -> None:
    try:
        price = vwap(candles)
    except CandleError:
        return
    assert math.isfinite(price) and price > 0


@FUZZ
@given(
    timestamps=st.lists(st.integers(0, 600), unique=True, max_size=20),
    when_minute=st.integers(0, 620),
    seconds=st.integers(0, 59),
    count=st.integers(1, 10),
)
def test_window_only_holds_closed_candles_of_the_last_count_minutes(
    timestamps: list[int], when_minute: int, seconds: int, count: int
) -> None:
    start_ms = int(T0.timestamp() * 1000)
    candles = [Candle(start_ms + m * 60_000, 1, 1, 1, 1, 1) for m in sorted(timestamps)]
    when = T0 + timedelta(minutes=when_minute, seconds=seconds)
    window = closed_candles_before(candles, when, count)
    expected = [m for m in sorted(timestamps) if when_minute - count <= m < when_minute]
    assert [(c.timestamp - start_ms) // 60_000 for c in window] == expected
