"""The money path against a venue that behaves like Binance (SPEC §8; issue 11's nine
findings): the real ccxt client → the venue model (balances, base-asset fees, filters,
partial market fills that expire, lookup lag, client-id reuse after fill, ACK answers), the
real tick and orders code on PostgreSQL. Each test drives the orders worker's step function
(`submit_intent`, what the `orders` task runs) in this process so the venue's clock and
faults can be set between steps; `test_orders.py` runs the same code on real workers.

After every test: the venue holds exactly the initial balances plus every fill bkit recorded
(fees included), no open order bkit does not know, no position bkit believes open that the
venue does not hold, no order placed twice for one intent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from bkit import listen_exit
from bkit.broker import Broker, broker_for
from bkit.broker.ccxt_broker import CcxtBroker
from bkit.clock import ManualClock
from bkit.core.candles import Candle
from bkit.core.registry import add_strategy, set_config
from bkit.exchange import MARKETS_DIR
from bkit.exchange.ccxt_exchange import add_ccxt_exchange
from bkit.live import Live
from bkit.orders import RETRYABLE, OrdersEnv, submit_intent
from bkit.reconcile import reconcile
from bkit.store.engine import get_engine, session_scope
from bkit.store.tables import EventRecord, OrderIntent, SignalRecord
from bkit.testing.ledger import venue_problems
from bkit.venue import Venue, VenueFault
from tests.integration.conftest import Runtime
from tests.unit.spec_oracle import spec_pnl

pytestmark = pytest.mark.integration
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SYMBOL, STRATEGY, EXCHANGE = "BTC/USDT", "money-long", "venuebin"
ORDER = "/api/v3/order"
START_USDT = Decimal("10000")


def flat_candles(price: float, minutes: range) -> list[Candle]:
    start = int(T0.timestamp() * 1000)
    return [Candle(start + m * 60_000, price, price, price, price, 10.0) for m in minutes]


@dataclass
class Money:
    """One test's venue, orders environment and the strategy's next signal."""

    venue: Venue
    env: OrdersEnv
    clock: ManualClock
    signal: dict[str, Any] = field(default_factory=dict)
    queued: list[tuple[int, float]] = field(default_factory=list)

    def tick(self, minute: int) -> Any:
        when = T0 + timedelta(minutes=minute)
        self.clock.current = when + timedelta(seconds=20)
        return Live.tick(SYMBOL, STRATEGY, EXCHANGE, when)

    def candles(self, price: float, minutes: range) -> None:
        self.venue.load_candles(SYMBOL, flat_candles(price, minutes))

    def step(self, intent_id: int) -> str:
        return submit_intent(self.env, intent_id)

    def drive(self, *, until: Callable[[], bool] | None = None, steps: int = 40,
              pause: float = 0.0) -> list[str]:
        """Run the orders worker over every active intent until none is left (or `until`)."""
        seen = []
        for _ in range(steps):
            active = [i.id for i in intents() if i.status in RETRYABLE]
            if (until is not None and until()) or (until is None and not active):
                return seen
            for intent_id in active:
                assert intent_id is not None
                seen.append(self.step(intent_id))
            if pause:
                time.sleep(pause)
        raise AssertionError(f"orders did not settle: {seen[-12:]}")


def intents(kind: str | None = None) -> list[OrderIntent]:
    with session_scope(get_engine()) as session:
        stmt = select(OrderIntent).order_by(OrderIntent.id)  # type: ignore[arg-type]
        if kind:
            stmt = stmt.where(OrderIntent.kind == kind)
        return list(session.execute(stmt).scalars())


def signal() -> SignalRecord:
    with session_scope(get_engine()) as session:
        return session.execute(select(SignalRecord).order_by(
            SignalRecord.id.desc())).scalars().first()  # type: ignore[union-attr]


def events(kind: str) -> list[EventRecord]:
    with session_scope(get_engine()) as session:
        return list(session.execute(select(EventRecord).where(
            EventRecord.kind == kind).order_by(EventRecord.id)).scalars())  # type: ignore


@pytest.fixture
def money(make_runtime: Callable[..., Runtime], pg_url: str) -> Iterator[Money]:
    make_runtime(pg_url)
    with Venue(balances={"USDT": str(START_USDT), "BTC": "0"}) as venue:
        venue.set_clock(int((T0 + timedelta(hours=6)).timestamp() * 1000))
        venue.load_candles(SYMBOL, flat_candles(50_000.0, range(-30, 0)))
        venue.set_price(SYMBOL, 50_000)
        exchange = add_ccxt_exchange("binance", exchange_name=EXCHANGE,
                                     markets=MARKETS_DIR / "binance_markets.json",
                                     api_base_url=venue.base_url, timeout_ms=1_500,
                                     candle_cache=None)
        import os

        os.environ["BKIT_VENUEBIN_API_KEY"] = "venue-key-8c1e"
        os.environ["BKIT_VENUEBIN_SECRET"] = "venue-secret-2b7d"
        Broker.clear()
        Broker.use(EXCHANGE, CcxtBroker(exchange))
        clock = ManualClock(T0)
        state = Money(venue, OrdersEnv(engine=get_engine(), clock=clock, brokers=broker_for,
                                       enqueue=lambda i, d: state.queued.append((i, d)),
                                       backoff_ceiling_seconds=1.0,
                                       rate_limit_backoff_seconds=0.5, poll_seconds=0.1),
                      clock)
        state.signal = {"position": "long", "price_take_profit": 50_500.0,
                        "price_stop_loss": 49_500.0, "minute_estimated_time": 60,
                        "cost": 500.0}
        add_strategy(STRATEGY, lambda s, w, p: dict(state.signal) if state.signal else None)
        # these cases are about the exit path: no protective stop on the venue here
        # (test_protection.py covers the stops)
        set_config(CC_ORDER_SETTLE_SECONDS=1.5, CC_EXCHANGE_STOP=False)
        try:
            yield state
            assert_venue_agrees(venue)
        finally:
            Broker.clear()
            os.environ.pop("BKIT_VENUEBIN_API_KEY", None)
            os.environ.pop("BKIT_VENUEBIN_SECRET", None)


def assert_venue_agrees(venue: Venue) -> None:
    """The four end-of-run checks of issue 11 (D): balances = initial + recorded fills, no
    unknown open order, no position the venue does not hold, no order twice."""
    assert venue_problems(get_engine(), venue, {"USDT": START_USDT, "BTC": 0}) == []


def open_long(money: Money, minute: int = 0) -> SignalRecord:
    result = money.tick(minute)
    assert result is not None and result.signal is not None
    money.drive()
    row = signal()
    assert row.state == "opened", row.state
    return row


# --- finding 1: the exit sells what the account holds, never what the entry asked --------
def test_exit_sells_the_position_net_of_the_base_fee_and_records_dust(money: Money) -> None:
    row = open_long(money)
    (entry,) = intents("open")
    assert entry.filled_amount == pytest.approx(0.01)  # 500 USDT at 50,000
    assert row.amount == pytest.approx(0.00999, abs=1e-12)  # Binance took 0.00001 BTC
    assert money.venue.balance("BTC") == Decimal("0.00999")
    money.venue.set_price(SYMBOL, 51_000)
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    money.tick(1)
    money.drive()
    row = signal()
    assert row.state == "closed" and row.close_reason == "closed"
    (exit_,) = intents("close")
    assert exit_.amount == pytest.approx(0.00999) and exit_.status == "filled"
    assert money.venue.balance("BTC") == 0
    # realised: sold 0.00999 at 51,000 less the 0.1 % quote fee, paid 500
    proceeds = 0.00999 * 51_000
    assert row.realised_pnl_cost == pytest.approx(proceeds * 0.999 - 500.0, abs=1e-6)
    assert row.fill_price_close == pytest.approx(51_000)


def test_refused_exits_leave_the_position_stuck_and_no_second_entry(money: Money) -> None:
    exits: list[dict[str, Any]] = []
    listen_exit(exits.append)
    open_long(money)
    money.venue.set_fault(ORDER, VenueFault.error(400, -2010, "Account has insufficient "
                                                  "balance for requested action."))
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    money.tick(1)
    money.drive(until=lambda: bool(signal().stuck), pause=0.05)
    row = signal()
    assert (row.state, row.stuck, row.close_reason, row.pnl_percentage) == (
        "closing", True, None, None)
    assert exits and "stuck" in exits[-1]["message"]
    money.venue.clear_faults()
    for minute in (2, 3, 4):  # no new entry while the position is stuck
        result = money.tick(minute)
        assert result is not None and result.action == "idle"
    assert len(intents("open")) == 1
    assert money.venue.balance("BTC") == Decimal("0.00999")  # still held, still tracked
    # the operator retries: it goes out and closes
    from bkit.ops.resolve import resolve_stuck

    assert resolve_stuck(get_engine(), STRATEGY, EXCHANGE, SYMBOL, "retry", actor="t") == "retry"
    money.drive()
    assert signal().state == "closed" and money.venue.balance("BTC") == 0


# --- finding 2: an exit under the minimum notional is never recorded closed --------------
def test_exit_below_min_notional_is_stuck_not_closed(money: Money) -> None:
    money.signal = {**money.signal, "cost": 6.0, "price_stop_loss": 40_000.0,
                    "price_take_profit": 60_000.0}
    open_long(money)
    money.venue.set_price(SYMBOL, 41_000)  # 0.00011988 BTC is worth 4.9 USDT < 5
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    money.tick(1)
    money.drive(until=lambda: bool(signal().stuck), pause=0.05)
    row = signal()
    assert (row.state, row.stuck, row.close_reason) == ("closing", True, None)
    (exit_,) = intents("close")
    assert exit_.status == "stuck" and "notional" in (exit_.last_error or "").lower()
    assert money.venue.orders_for(exit_.client_order_id) == []  # nothing was ever sent


# --- finding 3: a market sell that filled 40 % and expired is not a full close -----------
def test_partial_expired_exit_resends_the_remainder(money: Money) -> None:
    open_long(money)
    money.venue.set_fill_fraction(0.4)
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    money.tick(1)
    (first,) = intents("close")
    money.step(first.id)  # type: ignore[arg-type]
    money.venue.set_fill_fraction(1.0)
    money.drive()
    closes = intents("close")
    assert [c.status for c in closes] == ["expired", "filled"]
    assert closes[0].filled_amount == pytest.approx(0.00399, abs=1e-12)  # 40 % floored
    assert closes[1].amount == pytest.approx(0.006, abs=1e-12)
    assert len({c.client_order_id for c in closes}) == 2
    row = signal()
    assert row.state == "closed" and row.exit_filled == pytest.approx(0.00999, abs=1e-12)
    assert money.venue.balance("BTC") == 0


# --- finding 4: a lookup "not found" during lag is not "not placed" ----------------------
def test_timeout_and_lookup_lag_place_one_entry(money: Money) -> None:
    set_config(CC_ORDER_SETTLE_SECONDS=4)  # the settle window outlasts the venue's lag
    money.venue.set_lookup_lag(2.5)
    money.venue.fail_next(ORDER, VenueFault.timeout_after_accept(2.0))  # > 1.5 s client
    money.tick(0)
    (entry,) = intents("open")
    money.drive(pause=0.3, steps=80)
    assert len(money.venue.orders_for(entry.client_order_id)) == 1
    (entry,) = intents("open")
    assert entry.status == "filled" and entry.attempts == 1 and entry.resends == 0
    assert signal().state == "opened"


def test_settle_window_resends_only_when_nothing_was_placed(money: Money) -> None:
    money.venue.fail_next(ORDER, VenueFault.disconnect())  # dropped: never reached the book
    money.tick(0)
    (entry,) = intents("open")
    money.drive(pause=0.3, steps=80)
    (entry,) = intents("open")
    assert entry.status == "filled" and entry.resends == 1 and entry.attempts == 2
    assert len(money.venue.orders_for(entry.client_order_id)) == 1


# --- finding 5: an error from the lookup never rolls a filled entry back ----------------
def test_auth_error_from_the_lookup_is_not_a_rejection(money: Money) -> None:
    money.venue.fail_next(ORDER, VenueFault.timeout_after_accept(2.0))
    money.tick(0)
    (entry,) = intents("open")
    money.step(entry.id)  # type: ignore[arg-type]  # times out: unknown
    money.venue.set_fault(ORDER, VenueFault.auth_error())  # every lookup: -2015
    for _ in range(6):
        assert money.step(entry.id) == "unknown"  # type: ignore[arg-type]
    assert signal().state == "opening"  # never rolled back
    assert [e for e in events("exit") if "outcome unknown" in e.message]
    money.venue.clear_faults()
    money.drive()
    assert signal().state == "opened" and len(money.venue.orders_for(entry.client_order_id)) == 1


# --- finding 6: an answer without a status is unknown, resolved by looking ---------------
def test_ack_answers_are_resolved_by_lookup_with_fees_from_trades(money: Money) -> None:
    money.venue.set_response_type("ACK")
    row = open_long(money)
    (entry,) = intents("open")
    assert entry.filled_amount == pytest.approx(0.01)
    assert entry.base_fee == pytest.approx(0.00001)  # from myTrades: the lookup has no fees
    assert row.amount == pytest.approx(0.00999, abs=1e-12)
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    money.tick(1)
    money.drive()
    assert signal().state == "closed" and money.venue.balance("BTC") == 0


# --- finding 7: size in the unit the user means ------------------------------------------
def test_default_cost_on_a_non_usd_quote_is_refused_before_sending(money: Money) -> None:
    money.venue.load_candles("XRP/ETH", [Candle(c.timestamp, 0.0014, 0.0014, 0.0014, 0.0014,
                                               10.0) for c in flat_candles(1, range(-30, 0))])
    add_strategy("money-default", lambda s, w, p: {
        "position": "long", "price_take_profit": p * 1.01, "price_stop_loss": p * 0.99})
    result = Live.tick("XRP/ETH", "money-default", EXCHANGE, T0)
    assert result is not None and result.action == "idle" and result.signal is None
    errors = [e.message for e in events("error")]
    assert any("quoted in ETH" in m and "cost" in m for m in errors)
    assert intents() == []


# --- finding 8: polling a resting entry is not retrying ----------------------------------
def test_polls_of_a_resting_limit_entry_use_no_attempts(money: Money) -> None:
    Broker.use(EXCHANGE, CcxtBroker(Broker_exchange(), entry_order_type="limit"))
    money.signal = {**money.signal, "price_open": 49_900.0, "price_take_profit": 50_500.0,
                    "price_stop_loss": 49_000.0}
    money.tick(0)  # scheduled
    money.candles(49_850.0, range(-5, 4))
    money.tick(3)  # activated: a limit buy at 49,900 rests (the venue is at 50,000)
    (entry,) = intents("open")
    for _ in range(12):
        assert money.step(entry.id) in ("open", "unknown")  # type: ignore[arg-type]
    money.venue.fail_next(ORDER, VenueFault.rate_limit(429, retry_after=1))
    money.step(entry.id)  # type: ignore[arg-type]
    (entry,) = intents("open")
    assert entry.status == "open" and entry.attempts == 1 and entry.polls >= 11
    money.venue.set_price(SYMBOL, 49_800)
    money.venue.match()
    money.drive()
    assert signal().state == "opened"
    assert money.venue.open_orders() == []


def Broker_exchange() -> Any:
    from bkit.core.registry import REGISTRY

    return REGISTRY.exchange(EXCHANGE).source


# --- finding 9: realised PnL from the fills, beside the signal PnL -----------------------
def test_stop_loss_records_the_real_fill_beside_the_signal_pnl(money: Money) -> None:
    open_long(money)
    money.candles(47_550.0, range(0, 6))  # the market fell through the 49,500 stop
    money.venue.set_price(SYMBOL, 47_550)  # and the exit fills −4.9 % below the entry
    money.tick(5)
    money.drive()
    row = signal()
    assert (row.state, row.close_reason, row.price_close) == ("closed", "stop_loss", 49_500.0)
    assert row.pnl_percentage == pytest.approx(spec_pnl("long", 50_000, 49_500), abs=1e-9)
    proceeds = 0.00999 * 47_550
    realised = proceeds * 0.999 - 500.0
    assert row.realised_pnl_cost == pytest.approx(realised, abs=1e-6)
    assert row.realised_pnl_percentage == pytest.approx(realised / 5.0, abs=1e-6)
    assert row.realised_pnl_percentage < -5.0


# --- reconciliation ----------------------------------------------------------------------
def test_reconciliation_is_clean_after_trades_with_dust(money: Money) -> None:
    money.venue.set_fill_fraction(0.4)  # an expired partial exit, then the remainder
    open_long(money)
    Live.close_position(SYMBOL, STRATEGY, EXCHANGE)
    money.tick(1)
    money.drive()
    money.venue.set_fill_fraction(1.0)
    assert signal().state == "closed"
    open_long(money, minute=2)
    views = reconcile(money.env)
    assert [d for v in views for d in v.differences] == []
    assert views[0].assets[0].believed == pytest.approx(0.00999, abs=1e-12)


def test_reconciliation_reports_orphans_and_shortfalls(money: Money) -> None:
    open_long(money)
    from tests.venue.conftest import make_client

    client = make_client(money.venue)
    client.create_order(SYMBOL, "limit", "buy", 0.001, 40_000, {"clientOrderId": "bkorphan1"})
    views = reconcile(money.env)
    kinds = sorted(d.kind for v in views for d in v.differences)
    assert kinds == ["orphan_order"]
    money.venue.set_balance("BTC", "0.005")  # someone sold half of bkit's coins
    views = reconcile(money.env)
    kinds = sorted(d.kind for v in views for d in v.differences)
    assert kinds == ["orphan_order", "shortfall"]
    assert [e for e in events("error") if (e.payload or {}).get("stage") == "reconcile"]
    client.cancel_order(None, SYMBOL, {"clientOrderId": "bkorphan1"})
    money.venue.set_balance("BTC", "0.00999")
