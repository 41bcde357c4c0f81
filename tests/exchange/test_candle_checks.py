"""Candle sanity at the exchange boundary: the outlier check, and malformed rows from the venue
turned into a `CandleError` that names the candle."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bkit.core.candles import Candle, CandleError
from bkit.exchange import CcxtExchange, check_outliers
from bkit.testing import FakeExchange, Fault

KLINES = "/api/v3/klines"
T0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
ExchangeFactory = Callable[..., CcxtExchange]


def flat(count: int, price: float = 100.0) -> list[Candle]:
    return [Candle(T0 + i * 60_000, price, price * 1.001, price * 0.999, price, 1.0)
            for i in range(count)]


def with_candle(candles: list[Candle], index: int, high: float, low: float) -> list[Candle]:
    out = list(candles)
    c = out[index]
    out[index] = Candle(c.timestamp, c.open, high, low, c.close, c.volume)
    return out


def test_real_candles_pass(xrp_candles: list[Candle], btc_candles: list[Candle]) -> None:
    check_outliers(xrp_candles, "XRP/ETH")
    check_outliers(btc_candles, "UNITTEST/BTC")


@pytest.mark.parametrize("index", [0, 7, 19])
def test_a_fat_finger_high_is_named(index: int) -> None:
    candles = with_candle(flat(20), index, high=1000.0, low=99.0)
    stamp = candles[index].timestamp
    when = datetime.fromtimestamp(stamp / 1000, tz=UTC).isoformat()
    with pytest.raises(CandleError, match=re.escape(f"BTC/USDT candle {stamp} ({when})")
                       + ".*900%"):
        check_outliers(candles, "BTC/USDT")


def test_a_crash_print_low_is_named() -> None:
    candles = with_candle(flat(10), 4, high=100.1, low=1.0)
    with pytest.raises(CandleError, match=str(candles[4].timestamp)):
        check_outliers(candles, "BTC/USDT")


def test_the_limit_is_a_fraction_of_the_median_close() -> None:
    check_outliers(with_candle(flat(10), 5, high=149.0, low=99.0), "S")  # 49 % away: kept
    with pytest.raises(CandleError):
        check_outliers(with_candle(flat(10), 5, high=151.0, low=99.0), "S")  # 51 %
    check_outliers(with_candle(flat(10), 5, high=151.0, low=99.0), "S", max_deviation=0.6)


def test_a_single_candle_has_no_neighbours() -> None:
    check_outliers(with_candle(flat(1), 0, high=1e9, low=1.0), "S")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        check_outliers(flat(3), "S", max_deviation=0)
    with pytest.raises(ValueError):
        check_outliers(flat(3), "S", neighbours=0)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.floats(-0.03, 0.03), min_size=2, max_size=60))
def test_ordinary_moves_never_trip_the_check(steps: list[float]) -> None:
    price, candles = 100.0, []
    for i, step in enumerate(steps):
        close = price * (1 + step)
        candles.append(Candle(T0 + i * 60_000, price, max(price, close) * 1.002,
                              min(price, close) * 0.998, close, 1.0))
        price = close
    check_outliers(candles, "S")


@settings(max_examples=60, deadline=None)
@given(count=st.integers(2, 40), data=st.data(), factor=st.floats(1.6, 1000.0))
def test_a_spike_is_always_caught(count: int, data: st.DataObject, factor: float) -> None:
    index = data.draw(st.integers(0, count - 1))
    candles = with_candle(flat(count), index, high=100.0 * factor, low=99.9)
    with pytest.raises(CandleError, match=str(candles[index].timestamp)):
        check_outliers(candles, "S")


# --- malformed rows from the venue -----------------------------------------------------------
@pytest.mark.parametrize(("mode", "message"), [
    ("high_below_low", "high .* < low"),
    ("text", "open None is not a number"),
    ("negative", "close .* <= 0"),
    ("outlier", "away from the median close"),
])
def test_malformed_kline_rows_name_the_candle(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle], mode: str,
        message: str) -> None:
    fake.fail_next(KLINES, Fault.malformed_rows(mode))
    with pytest.raises(CandleError, match=message) as caught:
        exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 20)
    assert f"XRP/ETH candle {xrp_candles[0].timestamp}" in str(caught.value)
    # the next answer is clean again: no state was poisoned
    assert exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 20) == (
        xrp_candles[:20])


def test_the_outlier_check_can_be_switched_off(
        fake: FakeExchange, make_exchange: ExchangeFactory, xrp_candles: list[Candle]) -> None:
    exchange = make_exchange(max_deviation=None)
    fake.fail_next(KLINES, Fault.malformed_rows("outlier"))
    got = exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 20)
    assert got[0].high == pytest.approx(xrp_candles[0].high * 10)


def test_gaps_from_the_venue_are_kept(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    fake.fail_next(KLINES, Fault.kline_gaps(every=3))
    got = exchange.get_candles("XRP/ETH", "1m", xrp_candles[0].opened_at, 30)
    stamps = {c.timestamp for c in got}
    assert len(got) == 20  # every third row of the first page missing...
    assert stamps < {c.timestamp for c in xrp_candles}  # ...and nothing invented
