"""Protection on the exchange (issue 12): how far beyond the stop-loss a position is closed when
the market falls 1 % a minute and bkit is down, with and without the exchange-side stop, and
how soon the stop rests on the venue after the entry fills.

    .venv/bin/python bench/protection.py --outage-minutes 10 --entries 40

The venue model is driven on its own clock (one market minute per step); bkit's tick and
orders code run in this process on SQLite through the real ccxt client. Printed: the exit's
fill vs the SL (%) for both cases (the floor is the SL itself: 0 %), and the placement latency
of the protective stop (entry fill recorded → stop resting, wall ms, p50/p99).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SYMBOL, EXCHANGE = "BTC/USDT", "protect-venue"


def _setup(home: Path) -> None:
    os.environ.update({"BKIT_HOME": str(home),
                       "BKIT_DATABASE_URL": f"sqlite:///{home / 'bkit.sqlite'}",
                       "BKIT_VENUEBIN_API_KEY": "k-protect", "BKIT_PROTECT_VENUE_API_KEY":
                       "bench-key", "BKIT_PROTECT_VENUE_SECRET": "bench-secret"})
    from bkit.settings import reset_settings
    from bkit.store.engine import dispose_all

    reset_settings()
    dispose_all()


def _candles(prices: list[float], start_minute: int) -> list:
    from bkit.core.candles import Candle

    start = int(T0.timestamp() * 1000)
    out = []
    for i, price in enumerate(prices):
        minute = start_minute + i
        open_ = prices[i - 1] if i else price
        out.append(Candle(start + minute * 60_000, open_, max(open_, price), min(open_, price),
                          price, 10.0))
    return out


def outage_case(exchange_stop: bool, outage_minutes: int, strategy: str) -> float:
    """One position through a 1 %/minute fall while bkit is down; returns the exit's average
    fill vs the SL, in % (negative: worse than the SL)."""
    from sqlalchemy import select

    from bkit.broker import Broker, broker_for
    from bkit.broker.ccxt_broker import CcxtBroker
    from bkit.clock import ManualClock
    from bkit.core.registry import REGISTRY, add_strategy, reset_config, set_config
    from bkit.exchange import MARKETS_DIR
    from bkit.exchange.ccxt_exchange import add_ccxt_exchange
    from bkit.live import Live
    from bkit.orders import RETRYABLE, OrdersEnv, submit_intent
    from bkit.store.engine import get_engine, session_scope
    from bkit.store.tables import OrderIntent, SignalRecord
    from bkit.venue import Venue

    REGISTRY.clear()
    reset_config()
    with Venue(balances={"USDT": "10000", "BTC": "0"}) as venue:
        flat = _candles([50_000.0] * 30, -30)
        venue.load_candles(SYMBOL, flat)
        venue.set_clock(int(T0.timestamp() * 1000))
        exchange = add_ccxt_exchange("binance", exchange_name=EXCHANGE,
                                     markets=MARKETS_DIR / "binance_markets.json",
                                     api_base_url=venue.base_url, timeout_ms=3_000,
                                     candle_cache=None)
        Broker.clear()
        Broker.use(EXCHANGE, CcxtBroker(exchange))
        add_strategy(strategy, lambda s, w, p: {
            "position": "long", "price_take_profit": 50_500.0, "price_stop_loss": 49_500.0,
            "minute_estimated_time": 120, "cost": 500.0})
        set_config(CC_EXCHANGE_STOP=exchange_stop, CC_ORDER_SETTLE_SECONDS=1)
        clock = ManualClock(T0)
        env = OrdersEnv(engine=get_engine(), clock=clock, brokers=broker_for,
                        enqueue=lambda _i, _d: None, poll_seconds=0.0)

        def work() -> None:
            for _ in range(20):
                with session_scope(env.engine) as session:
                    ids = [i.id for i in session.execute(select(OrderIntent).where(
                        OrderIntent.status.in_(RETRYABLE))).scalars()]  # type: ignore
                if not ids:
                    return
                for intent_id in ids:
                    submit_intent(env, intent_id)

        Live.tick(SYMBOL, strategy, EXCHANGE, T0)
        work()
        # bkit goes down; the market falls 1 % a minute, candle by candle on the venue
        prices = [50_000.0 * 0.99 ** (m + 1) for m in range(outage_minutes + 1)]
        venue.load_candles(SYMBOL, flat + _candles(prices, 0))
        venue.set_clock(int((T0 + timedelta(minutes=outage_minutes + 1)).timestamp() * 1000))
        venue.set_price(SYMBOL, prices[-1])
        # bkit is back: the next tick (and the orders worker) see the damage
        when = T0 + timedelta(minutes=outage_minutes + 1)
        clock.current = when
        work()
        Live.tick(SYMBOL, strategy, EXCHANGE, when)
        work()
        with session_scope(env.engine) as session:
            row = session.execute(select(SignalRecord).order_by(
                SignalRecord.id.desc())).scalars().first()  # type: ignore[union-attr]
            assert row is not None and row.state == "closed", row and row.state
            fill = row.fill_price_close
        Broker.clear()
        assert fill is not None
        return (fill - 49_500.0) / 49_500.0 * 100


def placement_latency(entries: int) -> list[float]:
    """Wall ms from the entry's fill being recorded to its stop resting on the venue, through
    the orders worker's code in this process."""
    from sqlalchemy import select

    from bkit.broker import Broker, broker_for
    from bkit.broker.ccxt_broker import CcxtBroker
    from bkit.clock import ManualClock
    from bkit.core.registry import REGISTRY, add_strategy, reset_config, set_config
    from bkit.exchange import MARKETS_DIR
    from bkit.exchange.ccxt_exchange import add_ccxt_exchange
    from bkit.live import Live
    from bkit.orders import OrdersEnv, submit_intent
    from bkit.store.engine import get_engine, session_scope
    from bkit.store.tables import OrderIntent

    REGISTRY.clear()
    reset_config()
    latencies = []
    with Venue_() as venue:
        venue.load_candles(SYMBOL, _candles([50_000.0] * 30, -30))
        venue.set_clock(int(T0.timestamp() * 1000))
        exchange = add_ccxt_exchange("binance", exchange_name=EXCHANGE,
                                     markets=MARKETS_DIR / "binance_markets.json",
                                     api_base_url=venue.base_url, timeout_ms=3_000,
                                     candle_cache=None)
        Broker.clear()
        Broker.use(EXCHANGE, CcxtBroker(exchange))
        set_config(CC_EXCHANGE_STOP=True)
        env = OrdersEnv(engine=get_engine(), clock=ManualClock(T0), brokers=broker_for,
                        enqueue=lambda _i, _d: None)
        for n in range(entries):
            name = f"lat{n}"
            add_strategy(name, lambda s, w, p: {
                "position": "long", "price_take_profit": 50_500.0,
                "price_stop_loss": 49_500.0, "minute_estimated_time": 120, "cost": 100.0})
            Live.tick(SYMBOL, name, EXCHANGE, T0)
            with session_scope(env.engine) as session:
                entry = session.execute(select(OrderIntent).where(
                    OrderIntent.kind == "open").order_by(
                    OrderIntent.id.desc())).scalars().first()  # type: ignore[union-attr]
            assert entry is not None and entry.id is not None
            submit_intent(env, entry.id)
            filled_at = time.perf_counter()
            with session_scope(env.engine) as session:
                stop = session.execute(select(OrderIntent).where(
                    OrderIntent.kind == "stop", OrderIntent.signal_id == entry.signal_id)
                ).scalars().first()
            assert stop is not None and stop.id is not None
            assert submit_intent(env, stop.id) == "open"
            latencies.append((time.perf_counter() - filled_at) * 1000)
        Broker.clear()
    return latencies


def Venue_():
    from bkit.venue import Venue

    return Venue(balances={"USDT": "1000000", "BTC": "0"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outage-minutes", type=int, default=10)
    parser.add_argument("--entries", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bkit-protect-") as tmp:
        _setup(Path(tmp))
        from bkit.store.engine import get_engine
        from bkit.store.migrations import upgrade

        upgrade(get_engine())
        without = outage_case(False, args.outage_minutes, "no-stop")
        with_stop = outage_case(True, args.outage_minutes, "with-stop")
        latencies = placement_latency(args.entries)
    q = statistics.quantiles(latencies, n=100)
    print(f"1 %/min fall, bkit down {args.outage_minutes} min, SL -1 %: exit fill vs SL "
          f"without exchange stop {without:+.2f} %, with exchange stop {with_stop:+.2f} % "
          f"(floor: the SL itself, +0.00 %)")
    print(f"stop placement after the entry fill ({args.entries} entries, in-process orders "
          f"code, real ccxt → venue): p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms")


if __name__ == "__main__":
    main()
