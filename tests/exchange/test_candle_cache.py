"""The candle cache: windows, what may be cached (closed candles only), single-flight and
failure handling, on the in-process backend with the real ccxt client and the fake venue."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from bkit.core.candles import Candle, to_ms
from bkit.exchange import (
    CachingCandleSource,
    CandleWindow,
    CcxtExchange,
    MemoryCandleCache,
    TransientExchangeError,
    cached_get_candles,
    last_cache_outcome,
)
from bkit.exchange.candle_cache import _encode
from bkit.testing import FakeExchange, Fault

KLINES = "/api/v3/klines"
SYMBOL = "XRP/ETH"
NAME = "fake-binance"


def tick_time(candles: list[Candle], index: int) -> datetime:
    """A tick's `when`: the open time of candle `index` (a whole minute)."""
    return candles[index].opened_at


def window_of(candles: list[Candle], when: datetime, minutes: int = 5) -> list[Candle]:
    start = to_ms(when - timedelta(minutes=minutes))
    return [c for c in candles if start <= c.timestamp < to_ms(when)]


def ask(cache: MemoryCandleCache | None, exchange: CcxtExchange, when: datetime,
        now: datetime | None = None, limit: int = 5) -> list[Candle]:
    """What a tick at `when` asks: the `limit` closed 1m candles before `when`."""
    return cached_get_candles(cache, NAME, exchange.get_candles, SYMBOL, "1m",
                              when - timedelta(minutes=limit), limit,
                              now or when + timedelta(seconds=5))


def test_a_window_starts_on_the_interval_grid() -> None:
    window = CandleWindow.of(NAME, SYMBOL, "5m", datetime(2024, 1, 1, 12, 1, 30, tzinfo=UTC), 3)
    assert window.start == datetime(2024, 1, 1, 12, 5, tzinfo=UTC)
    assert window.end_ms - window.start_ms == 15 * 60_000
    assert window.key == f"{NAME}|{SYMBOL}|5m|{window.start_ms}|3"
    assert not window.is_closed(window.end_ms + 1_999)
    assert window.is_closed(window.end_ms + 2_000)
    with pytest.raises(ValueError):
        CandleWindow.of(NAME, SYMBOL, "2m", datetime(2024, 1, 1, tzinfo=UTC), 3)


def test_a_closed_window_is_fetched_once(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    cache = MemoryCandleCache()
    when = tick_time(xrp_candles, 500)
    outcomes = []
    for _ in range(3):
        assert ask(cache, exchange, when) == window_of(xrp_candles, when)
        outcomes.append(last_cache_outcome())
    assert outcomes == ["filled", "hit", "hit"]
    assert fake.request_count(KLINES) == 1
    later = when + timedelta(minutes=1)  # the next minute is another window
    assert ask(cache, exchange, later) == window_of(xrp_candles, later)
    assert fake.request_count(KLINES) == 2


def test_candles_past_the_window_never_leak_in(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    # a window with a gap: the venue answers `limit` candles, some opening after the window
    i = next(i for i in range(10, len(xrp_candles))
             if len(window_of(xrp_candles, tick_time(xrp_candles, i))) < 4)
    when = tick_time(xrp_candles, i)
    got = ask(MemoryCandleCache(), exchange, when)
    assert got == window_of(xrp_candles, when)
    assert all(c.timestamp < to_ms(when) for c in got)


def test_a_window_holding_the_forming_candle_is_never_cached(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    cache = MemoryCandleCache()
    i = next(i for i in range(10, len(xrp_candles))
             if xrp_candles[i].close != xrp_candles[i].open and xrp_candles[i].volume > 0)
    forming = xrp_candles[i]
    when = forming.opened_at + timedelta(minutes=1)  # window [when-5, when) ends with it
    mid_minute = forming.opened_at + timedelta(seconds=30)
    fake.set_clock(to_ms(mid_minute))

    early = ask(cache, exchange, when, now=mid_minute)
    assert last_cache_outcome() == "bypass"
    assert early[-1].timestamp == forming.timestamp
    assert early[-1].volume < forming.volume  # the venue's partial view

    ask(cache, exchange, when, now=mid_minute)
    assert fake.request_count(KLINES) == 2  # each ask went upstream

    closed_at = forming.opened_at + timedelta(minutes=1, seconds=5)
    fake.set_clock(to_ms(closed_at))
    final = ask(cache, exchange, when, now=closed_at)
    assert last_cache_outcome() == "filled"
    assert final == window_of(xrp_candles, when)  # the full candle, not the partial one
    assert final[-1] == forming


def test_the_settle_margin_keeps_a_just_closed_window_uncached(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    cache = MemoryCandleCache()
    when = tick_time(xrp_candles, 600)
    ask(cache, exchange, when, now=when + timedelta(seconds=1))
    assert last_cache_outcome() == "bypass"
    ask(cache, exchange, when, now=when + timedelta(seconds=2))
    assert last_cache_outcome() == "filled"


def test_100_concurrent_askers_make_one_request(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    cache = MemoryCandleCache()
    when = tick_time(xrp_candles, 700)
    fake.set_latency(0.05)  # the leader takes a while: the others must wait, not fetch
    results: list[list[Candle]] = []
    outcomes: Counter[str] = Counter()
    barrier = threading.Barrier(100)
    lock = threading.Lock()

    def strategy() -> None:
        barrier.wait()
        got = ask(cache, exchange, when)
        with lock:
            results.append(got)
            outcomes[last_cache_outcome() or "?"] += 1

    threads = [threading.Thread(target=strategy) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.request_count(KLINES) == 1
    assert len(results) == 100 and all(r == window_of(xrp_candles, when) for r in results)
    assert outcomes["filled"] == 1 and outcomes["waited"] + outcomes["hit"] == 99


def test_a_failed_fetch_is_shared_not_repeated(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    cache = MemoryCandleCache(failure_ttl_ms=300)
    when = tick_time(xrp_candles, 800)
    fake.set_latency(0.05)
    fake.fail_next(KLINES, Fault.unavailable())
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def strategy() -> None:
        barrier.wait()
        try:
            ask(cache, exchange, when)
        except TransientExchangeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=strategy) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 20
    assert fake.request_count(KLINES) == 1
    assert sum("moments ago" in str(e) for e in errors) == 19

    time.sleep(0.35)  # the note expires; the venue is healthy again
    assert ask(cache, exchange, when) == window_of(xrp_candles, when)
    assert fake.request_count(KLINES) == 2


def test_an_entry_for_another_window_is_never_served(
        exchange: CcxtExchange, xrp_candles: list[Candle],
        caplog: pytest.LogCaptureFixture) -> None:
    cache = MemoryCandleCache()
    when = tick_time(xrp_candles, 900)
    asked = CandleWindow.of(NAME, SYMBOL, "1m", when - timedelta(minutes=5), 5)
    other = CandleWindow.of(NAME, SYMBOL, "1m", when - timedelta(minutes=60), 5)
    cache._set("c|" + asked.key, _encode(other, other.clip(xrp_candles)), 60_000)

    assert cache.get(asked) is None
    assert "holds another window" in caplog.text
    assert ask(cache, exchange, when) == window_of(xrp_candles, when)


def test_put_refuses_candles_outside_the_window(xrp_candles: list[Candle]) -> None:
    window = CandleWindow.of(NAME, SYMBOL, "1m", tick_time(xrp_candles, 10), 2)
    with pytest.raises(ValueError, match="outside the window"):
        MemoryCandleCache().put(window, xrp_candles[:30])


def test_memory_cache_is_bounded_and_expires(xrp_candles: list[Candle]) -> None:
    cache = MemoryCandleCache(max_entries=3, ttl_ms=100)
    windows = [CandleWindow.of(NAME, SYMBOL, "1m", tick_time(xrp_candles, i), 1)
               for i in range(5)]
    for w in windows:
        cache.put(w, w.clip(xrp_candles))
    assert len(cache) == 3
    assert cache.get(windows[0]) is None and cache.get(windows[4]) == windows[4].clip(
        xrp_candles)
    time.sleep(0.15)
    assert cache.get(windows[4]) is None


def test_memory_cache_bound_holds_fill_locks_too_and_still_serves_correct_candles(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    """Leaders that died holding their fill locks (a killed worker child) cannot grow the
    per-process cache past its bound, and what it serves after evictions is still right."""
    cache = MemoryCandleCache(max_entries=4, lock_ms=60_000)
    for i in range(50):
        window = CandleWindow.of(NAME, SYMBOL, "1m", tick_time(xrp_candles, 100 + i), 1)
        assert cache._set_nx("l|" + window.key, f"dead-leader-{i}", 60_000)
    assert len(cache) == 4
    for minute in range(1000, 1012):  # 12 windows through a bound of 4
        when = tick_time(xrp_candles, minute)
        assert ask(cache, exchange, when) == window_of(xrp_candles, when)
        assert len(cache) <= 4
    assert ask(cache, exchange, when) == window_of(xrp_candles, when)
    assert last_cache_outcome() == "hit"


def test_a_crashed_leader_lock_expires(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    cache = MemoryCandleCache(lock_ms=200)
    when = tick_time(xrp_candles, 1000)
    window = CandleWindow.of(NAME, SYMBOL, "1m", when - timedelta(minutes=5), 5)
    assert cache._set_nx("l|" + window.key, "a-worker-that-died", 200)
    started = time.monotonic()
    assert ask(cache, exchange, when) == window_of(xrp_candles, when)
    assert time.monotonic() - started >= 0.15
    assert last_cache_outcome() == "filled"


def test_a_waiter_gives_up_on_a_stuck_leader(
        exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    cache = MemoryCandleCache(lock_ms=60_000, wait_ms=150)
    when = tick_time(xrp_candles, 1100)
    window = CandleWindow.of(NAME, SYMBOL, "1m", when - timedelta(minutes=5), 5)
    cache._set_nx("l|" + window.key, "stuck", 60_000)
    assert ask(cache, exchange, when) == window_of(xrp_candles, when)
    assert last_cache_outcome() == "fallback"


def test_a_bug_in_the_fetch_releases_the_lock(
        exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    cache = MemoryCandleCache(lock_ms=60_000, wait_ms=60_000)
    when = tick_time(xrp_candles, 1200)

    def broken(*_: object) -> list[Candle]:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        cached_get_candles(cache, NAME, broken, SYMBOL, "1m", when - timedelta(minutes=5), 5,
                           when + timedelta(seconds=5))
    started = time.monotonic()
    assert ask(cache, exchange, when) == window_of(xrp_candles, when)
    assert time.monotonic() - started < 5


def test_caching_source_reads_its_clock(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    when = tick_time(xrp_candles, 1300)
    now = [when + timedelta(seconds=30)]
    source = CachingCandleSource(MemoryCandleCache(), NAME, exchange.get_candles,
                                 clock=lambda: now[0])
    for _ in range(2):
        assert source(SYMBOL, "1m", when - timedelta(minutes=5), 5) == window_of(
            xrp_candles, when)
    assert fake.request_count(KLINES) == 1
    now[0] = when - timedelta(minutes=1)  # a clock inside the window: nothing is closed
    source(SYMBOL, "1m", when - timedelta(minutes=5), 5)
    assert last_cache_outcome() == "bypass"


def test_no_cache_means_straight_through(
        fake: FakeExchange, exchange: CcxtExchange, xrp_candles: list[Candle]) -> None:
    when = tick_time(xrp_candles, 1400)
    for _ in range(2):
        assert ask(None, exchange, when) == window_of(xrp_candles, when)
    assert fake.request_count(KLINES) == 2
