"""Candles (SPEC §2): parsing and sanity checks, the closed-candle window and the VWAP."""

from __future__ import annotations

import csv
import itertools
import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from bkit.core.candles import (
    Candle,
    CandleError,
    closed_candles_before,
    floor_to_minute,
    parse_candle,
    parse_candles,
    to_ms,
    vwap,
)
from tests.real_candles import REAL_CANDLES_DIR

DATA = REAL_CANDLES_DIR
SYMBOL = "BTC/USDT"
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
T0_MS = 1_704_110_400_000  # 2024-01-01T12:00:00Z, written out by hand


def candle_at(minute: int, close: float = 100.0, volume: float = 1.0) -> Candle:
    return Candle(T0_MS + minute * 60_000, close, close + 1, close - 1, close, volume)


# --- VWAP ---------------------------------------------------------------------------------
def test_vwap_is_volume_weighted_typical_price() -> None:
    candles = [
        Candle(0, 10, 12, 8, 10, 2),  # typical (12 + 8 + 10)/3 = 10, weight 2
        Candle(60_000, 20, 22, 18, 20, 1),  # typical 20, weight 1
        Candle(120_000, 30, 33, 27, 30, 1),  # typical 30, weight 1
    ]
    # (10×2 + 20×1 + 30×1) / 4 = 70 / 4
    assert vwap(candles) == pytest.approx(17.5, abs=1e-12)


def test_vwap_uses_high_low_and_close_not_open() -> None:
    # typical (13 + 7 + 11)/3 = 31/3; the open (1000) must not matter.
    assert vwap([Candle(0, 1000, 13, 7, 11, 5)]) == pytest.approx(31 / 3, abs=1e-12)


def test_vwap_zero_volume_candle_has_no_weight() -> None:
    candles = [Candle(0, 10, 12, 8, 10, 3), Candle(60_000, 50, 55, 45, 50, 0)]
    assert vwap(candles) == pytest.approx(10.0, abs=1e-12)


def test_vwap_with_zero_total_volume_is_the_mean_close() -> None:
    candles = [
        Candle(0, 9, 12, 8, 10, 0),
        Candle(60_000, 21, 22, 18, 20, 0),
        Candle(120_000, 39, 45, 35, 40, 0),
    ]
    assert vwap(candles) == pytest.approx(70 / 3, abs=1e-12)


def test_vwap_of_tiny_prices_keeps_precision() -> None:
    candles = [
        Candle(0, 0.00162, 0.00163, 0.00161, 0.00162, 108.0),
        Candle(60_000, 0.00161, 0.00161, 0.00161, 0.00161, 82.0),
    ]
    expected = (0.00162 * 108 + 0.00161 * 82) / 190
    assert vwap(candles) == pytest.approx(expected, rel=1e-12)


def test_vwap_without_candles_is_an_error() -> None:
    with pytest.raises(CandleError, match="no closed candles"):
        vwap([])


def test_vwap_that_overflows_is_an_error_not_inf() -> None:
    huge = Candle(0, 1e308, 1.7e308, 1.6e308, 1.7e308, 1e10)
    with pytest.raises(CandleError, match="not a finite price"):
        vwap([huge])


def test_vwap_with_subnormal_volumes_stays_the_weighted_price() -> None:
    # 1.5 × 5e-324 rounds to 1e-323 in floats: a naive Σ(p·v)/Σv says 2.0 here.
    assert vwap([Candle(0, 1.5, 1.5, 1.5, 1.5, 5e-324)]) == 1.5
    candles = [Candle(0, 1, 1, 1, 1, 5e-324), Candle(60_000, 4, 4, 4, 4, 1.5e-323)]  # 1 : 3
    assert vwap(candles) == pytest.approx((1 * 1 + 4 * 3) / 4, rel=1e-12)


def test_vwap_with_huge_volumes_does_not_overflow() -> None:
    candles = [
        Candle(0, 1e10, 1e10, 1e10, 1e10, 1e300),
        Candle(60_000, 3e10, 3e10, 3e10, 3e10, 1e300),
    ]
    assert vwap(candles) == pytest.approx(2e10, rel=1e-12)


# --- the closed-candle window -------------------------------------------------------------
def test_window_takes_the_last_five_closed_candles_and_never_the_forming_one() -> None:
    candles = [candle_at(m) for m in range(12)]  # minutes 0..11; 10 forms at T0+10, 11 future
    window = closed_candles_before(candles, T0 + timedelta(minutes=10), 5)
    assert [c.timestamp for c in window] == [T0_MS + m * 60_000 for m in (5, 6, 7, 8, 9)]


def test_window_floors_when_to_the_minute() -> None:
    candles = [candle_at(m) for m in range(12)]
    window = closed_candles_before(candles, T0 + timedelta(minutes=10, seconds=59), 5)
    assert [c.timestamp for c in window] == [T0_MS + m * 60_000 for m in (5, 6, 7, 8, 9)]


def test_window_with_gaps_gives_fewer_candles() -> None:
    candles = [candle_at(m) for m in (3, 4, 5, 8, 9, 10)]  # 6 and 7 missing
    window = closed_candles_before(candles, T0 + timedelta(minutes=10), 5)
    assert [c.timestamp for c in window] == [T0_MS + m * 60_000 for m in (5, 8, 9)]


def test_window_is_empty_after_a_long_gap() -> None:
    candles = [candle_at(m) for m in (0, 1, 2, 3, 4, 12)]
    assert closed_candles_before(candles, T0 + timedelta(minutes=10), 5) == []


def test_window_count_is_respected() -> None:
    candles = [candle_at(m) for m in range(10)]
    window = closed_candles_before(candles, T0 + timedelta(minutes=10), 3)
    assert [c.timestamp for c in window] == [T0_MS + m * 60_000 for m in (7, 8, 9)]


def test_price_of_a_tick_ignores_a_crazy_forming_candle() -> None:
    candles = [candle_at(m, close=100.0) for m in range(5)] + [candle_at(5, close=1e6)]
    window = closed_candles_before(candles, T0 + timedelta(minutes=5), 5)
    # every closed candle has typical (101 + 99 + 100)/3 = 100
    assert vwap(window) == pytest.approx(100.0, abs=1e-9)


def test_time_helpers() -> None:
    assert to_ms(T0) == T0_MS
    assert to_ms(datetime(2024, 1, 1, 12, 0)) == T0_MS  # naive is UTC
    assert floor_to_minute(datetime(2024, 1, 1, 12, 0, 42, 999)) == T0
    assert candle_at(0).opened_at == T0


# --- parsing: accepted forms ----------------------------------------------------------------
def test_parse_dict_tuple_list_and_candle() -> None:
    expected = Candle(T0_MS, 1.0, 2.0, 0.5, 1.5, 10.0)
    as_dict = {
        "timestamp": T0_MS,
        "open": 1,
        "high": 2,
        "low": 0.5,
        "close": 1.5,
        "volume": 10,
        "extra": "ignored",
    }
    assert parse_candle(as_dict, SYMBOL) == expected
    assert parse_candle((T0_MS, 1, 2, 0.5, 1.5, 10), SYMBOL) == expected
    assert parse_candle([T0_MS, 1, 2, 0.5, 1.5, 10, 999], SYMBOL) == expected  # extra column
    assert parse_candle(expected, SYMBOL) == expected


def test_parse_numeric_strings_as_a_csv_gives_them() -> None:
    parsed = parse_candle(
        {
            "timestamp": "1509836520000",
            "open": "0.00162008",
            "high": "0.00162008",
            "low": "0.00162008",
            "close": "0.00162008",
            "volume": "108.14853839",
        },
        SYMBOL,
    )
    assert parsed == Candle(
        1_509_836_520_000, 0.00162008, 0.00162008, 0.00162008, 0.00162008, 108.14853839
    )
    assert isinstance(parsed.timestamp, int)


def test_parse_accepts_zero_volume_and_a_flat_candle() -> None:
    assert parse_candle((0, 5, 5, 5, 5, 0), SYMBOL) == Candle(0, 5.0, 5.0, 5.0, 5.0, 0.0)


def test_parse_candles_mixed_forms_in_order() -> None:
    raws = [
        (T0_MS, 1, 2, 0.5, 1.5, 10),
        {"timestamp": T0_MS + 60_000, "open": 1, "high": 2, "low": 1, "close": 1, "volume": 0},
        Candle(T0_MS + 180_000, 1, 1, 1, 1, 1),
    ]  # a gap at +120 000 is fine
    assert [c.timestamp for c in parse_candles(raws, SYMBOL)] == [
        T0_MS,
        T0_MS + 60_000,
        T0_MS + 180_000,
    ]
    assert parse_candles([], SYMBOL) == []


# --- parsing: rejected candles name symbol and timestamp ------------------------------------
GOOD = {"timestamp": T0_MS, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}


def with_value(**changes: object) -> dict[str, object]:
    return {**GOOD, **changes}


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"close": float("nan")}, "close"),
        ({"high": float("inf")}, "high"),
        ({"low": float("-inf")}, "low"),
        ({"volume": float("nan")}, "volume"),
        ({"open": 0}, "open"),
        ({"close": -1.5}, "close"),
        ({"low": 0.0}, "low"),
        ({"high": 0.4}, "high 0.4 < low 0.5"),
        ({"volume": -1}, "volume"),
        ({"close": "abc"}, "close"),
        ({"open": ""}, "open"),
        ({"open": "nan"}, "open"),
        ({"volume": None}, "volume"),
        ({"high": True}, "high"),
        ({"close": [1.5]}, "close"),
        ({"close": 10**400}, "close"),  # an int too large for a float
    ],
)
def test_bad_value_is_rejected_naming_symbol_and_timestamp(
    changes: dict[str, object], words: str
) -> None:
    with pytest.raises(CandleError) as info:
        parse_candle(with_value(**changes), SYMBOL)
    message = str(info.value)
    assert SYMBOL in message
    assert str(T0_MS) in message
    assert "2024-01-01T12:00:00" in message  # the timestamp as a readable UTC time too
    assert words in message


@pytest.mark.parametrize(
    "timestamp", [-60_000, 1.5, float("nan"), float("inf"), "soon", None, True, 10**400]
)
def test_bad_timestamp_is_rejected(timestamp: object) -> None:
    with pytest.raises(CandleError) as info:
        parse_candle(with_value(timestamp=timestamp), SYMBOL)
    assert SYMBOL in str(info.value)
    assert "timestamp" in str(info.value)


def test_missing_fields_are_named() -> None:
    raw = {"timestamp": T0_MS, "open": 1, "high": 2, "close": 1}
    with pytest.raises(CandleError) as info:
        parse_candle(raw, SYMBOL)
    message = str(info.value)
    assert SYMBOL in message and str(T0_MS) in message
    assert "low" in message and "volume" in message


def test_short_row_is_rejected() -> None:
    with pytest.raises(CandleError, match=r"BTC/USDT.*expected 6 values, got 5"):
        parse_candle((T0_MS, 1, 2, 0.5, 1.5), SYMBOL)


@pytest.mark.parametrize("raw", [42, "1,2,3,4,5,6", None, 1.5])
def test_something_that_is_not_a_candle_is_rejected(raw: object) -> None:
    with pytest.raises(CandleError, match="BTC/USDT"):
        parse_candle(raw, SYMBOL)


def test_a_candle_object_is_checked_too() -> None:
    with pytest.raises(CandleError, match=str(T0_MS)):
        parse_candle(Candle(T0_MS, 1, 0.5, 2, 1, 1), SYMBOL)  # high 0.5 < low 2


def test_duplicate_timestamp_is_rejected() -> None:
    raws = [
        with_value(),
        with_value(timestamp=T0_MS + 60_000),
        with_value(timestamp=T0_MS + 60_000),
    ]
    with pytest.raises(CandleError) as info:
        parse_candles(raws, SYMBOL)
    message = str(info.value)
    assert "duplicate" in message and SYMBOL in message and str(T0_MS + 60_000) in message


def test_out_of_order_timestamp_is_rejected() -> None:
    raws = [with_value(timestamp=T0_MS + 60_000), with_value()]
    with pytest.raises(CandleError) as info:
        parse_candles(raws, SYMBOL)
    message = str(info.value)
    assert "out-of-order" in message and SYMBOL in message and str(T0_MS) in message


def test_one_bad_candle_rejects_the_feed() -> None:
    raws = [with_value(), with_value(timestamp=T0_MS + 60_000, close=float("nan"))]
    with pytest.raises(CandleError, match=str(T0_MS + 60_000)):
        parse_candles(raws, SYMBOL)


# --- the real feeds -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "rows", "gaps"),
    [
        ("UNITTEST_BTC-1m.csv", 3_000, 203),
        ("XRP_ETH-1m.csv", 2_469, 676),
    ],
)
def test_real_feeds_parse_cleanly_with_their_gaps(name: str, rows: int, gaps: int) -> None:
    with (DATA / name).open(newline="") as handle:
        candles = parse_candles(csv.DictReader(handle), name)
    assert len(candles) == rows
    steps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(candles)]
    assert sum(step > 60_000 for step in steps) == gaps
    assert all(step % 60_000 == 0 for step in steps)
    assert all(math.isfinite(c.close) and c.close > 0 for c in candles)


# --- Candle objects (what a paper exchange serves) -------------------------------------------
def test_a_sound_candle_object_is_served_as_is() -> None:
    candle = Candle(T0_MS, 10.0, 12.0, 8.0, 11.0, 3.0)
    assert parse_candle(candle, SYMBOL) is candle


@pytest.mark.parametrize(
    ("candle", "problem"),
    [
        (Candle(T0_MS, 10.0, 12.0, 8.0, float("nan"), 3.0), "close is nan"),
        (Candle(T0_MS, 10.0, 12.0, 8.0, 11.0, -1.0), "volume -1.0 < 0"),
        (Candle(T0_MS, 10.0, 7.0, 8.0, 11.0, 3.0), "high 7.0 < low 8.0"),
        (Candle(T0_MS, -10.0, 12.0, 8.0, 11.0, 3.0), "open -10.0 <= 0"),
        (Candle(T0_MS, 10.0, float("inf"), 8.0, 11.0, 3.0), "high is inf"),
    ],
)
def test_an_unsound_candle_object_gets_the_full_checks(candle: Candle, problem: str) -> None:
    with pytest.raises(CandleError, match=re.escape(problem)):
        parse_candle(candle, SYMBOL)


def test_a_candle_object_with_int_prices_comes_back_with_floats() -> None:
    parsed = parse_candle(Candle(T0_MS, 10, 12, 8, 11, 3), SYMBOL)  # type: ignore[arg-type]
    assert parsed == Candle(T0_MS, 10.0, 12.0, 8.0, 11.0, 3.0)
    assert all(type(v) is float for v in (parsed.open, parsed.high, parsed.low, parsed.close,
                                          parsed.volume))


def test_huge_but_finite_candle_prices_still_pass() -> None:
    candle = Candle(T0_MS, 1e308, 1e308, 1e308, 1e308, 1e308)  # their sum overflows
    assert parse_candle(candle, SYMBOL) == candle
