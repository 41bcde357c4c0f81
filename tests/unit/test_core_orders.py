"""The pure order lifecycle and money arithmetic of `bkit.core.orders` (SPEC §8), with exact
numbers, and the reconciliation comparison."""

from __future__ import annotations

import pytest

from bkit.core.orders import (
    FINAL_STATUSES,
    ORDER_TRANSITIONS,
    Fee,
    IllegalTransition,
    MarketRules,
    SettleState,
    VenueOrder,
    can_move,
    check_move,
    default_cost_problem,
    exit_size,
    floor_to_step,
    net_bought,
    quote_fees,
    realised_pnl,
    remainder_is_dust,
    settle_verdict,
)
from bkit.core.reconciliation import HeldPosition, compare

BTC = MarketRules("BTC", "USDT", amount_step=0.00001, min_amount=0.00001, min_cost=5.0)


def order(status: str | None, amount: float | None = 0.01, filled: float | None = 0.01,
          **kw: object) -> VenueOrder:
    return VenueOrder("bkx", "1", status, amount, filled, 50_000.0, **kw)  # type: ignore[arg-type]


def test_an_answer_without_a_status_is_unknown_not_filled_nor_empty() -> None:
    ack = order(None, amount=None, filled=0.0)  # what ccxt makes of Binance's ACK answer
    assert ack.state == "unknown"
    assert order("None").state == "unknown"
    assert order("weird").state == "unknown"


@pytest.mark.parametrize(("status", "state"), [("closed", "filled"), ("open", "open"),
                                               ("canceled", "canceled"), ("expired", "expired"),
                                               ("rejected", "rejected")])
def test_ccxt_statuses_map_to_lifecycle_states(status: str, state: str) -> None:
    assert order(status).state == state


def test_an_expired_market_order_keeps_what_it_filled() -> None:
    expired = order("expired", amount=0.01, filled=0.004)
    assert expired.state in FINAL_STATUSES and expired.filled_amount == 0.004
    assert expired.filled_cost == pytest.approx(0.004 * 50_000)


def test_transition_table_forbids_going_backwards_and_allows_cancel_then_fill() -> None:
    assert can_move("unknown", "filled") and can_move("open", "expired")
    assert can_move("canceled", "filled")  # a cancel acknowledged before its fill report
    assert not can_move("filled", "open") and not can_move("expired", "filled")
    assert not can_move("rejected", "pending")
    with pytest.raises(IllegalTransition):
        check_move("filled", "unknown")
    assert set(ORDER_TRANSITIONS) >= FINAL_STATUSES


def test_position_is_net_of_the_base_fee() -> None:
    fees = (Fee(0.00001, "BTC"),)
    assert net_bought(0.01, fees, "BTC") == pytest.approx(0.00999, abs=1e-15)
    assert net_bought(0.01, (Fee(0.5, "USDT"),), "BTC") == 0.01
    assert quote_fees((*fees, Fee(0.25, "USDT"), Fee(0.001, "BNB")), "BTC", "USDT",
                      50_000.0) == pytest.approx(0.75)


def test_floor_to_step_is_exact_in_decimal() -> None:
    assert floor_to_step(0.0099899999, 0.00001) == 0.00998
    assert floor_to_step(0.00999, 0.00001) == 0.00999  # 0.00999/0.00001 is 998.9999… in floats
    assert floor_to_step(123.456, 0.1) == 123.4
    assert floor_to_step(-1.0, 0.1) == 0.0


def test_exit_sells_the_free_balance_floored_and_leaves_dust() -> None:
    size = exit_size(0.009991, 0.009991, 50_000.0, BTC)
    assert size.problem is None
    assert size.amount == 0.00999 and size.dust == pytest.approx(0.000001, abs=1e-15)
    # less free than the position (the fee came out of it): sell what is there
    size = exit_size(0.01, 0.00999, 50_000.0, BTC)
    assert size.amount == 0.00999 and size.dust == pytest.approx(0.00001, abs=1e-15)


def test_exit_below_the_minimum_notional_is_not_sendable() -> None:
    size = exit_size(0.00009, 0.00009, 50_000.0, BTC)  # 4.5 USDT < 5
    assert size.amount == 0.0 and size.problem is not None and "notional" in size.problem
    assert remainder_is_dust(0.00009, 50_000.0, BTC)
    assert not remainder_is_dust(0.0002, 50_000.0, BTC)


def test_realised_pnl_from_fills_and_quote_fees() -> None:
    # bought 0.01 BTC for 500 USDT (fee 0.00001 BTC), sold 0.00999 at 51,000 (fee 0.509490)
    proceeds = 0.00999 * 51_000
    sell_fee = proceeds * 0.001
    realised = realised_pnl("long", 500.0, proceeds, sell_fee)
    assert realised.pnl_cost == pytest.approx(509.49 - 0.50949 - 500.0, abs=1e-9)
    assert realised.pnl_percentage == pytest.approx((509.49 - 0.50949 - 500.0) / 5, abs=1e-9)


def test_settle_window_needs_time_and_two_empty_looks() -> None:
    assert settle_verdict(SettleState(10.0, 5, 0), 120) == "look_again"
    assert settle_verdict(SettleState(130.0, 1, 0), 120) == "look_again"
    assert settle_verdict(SettleState(130.0, 2, 0), 120) == "resend"


def test_default_cost_is_refused_for_a_non_usd_quote() -> None:
    problem = default_cost_problem("XRP/ETH", False, 100.0)
    assert problem is not None and "ETH" in problem and "cost" in problem
    assert default_cost_problem("XRP/ETH", True, 100.0) is None
    assert default_cost_problem("BTC/USDT", False, 100.0) is None
    assert default_cost_problem("BTC/USDT:USDT", False, 100.0) is None


def test_reconciliation_reports_shortfalls_and_orphans_not_the_users_coins() -> None:
    held = [HeldPosition(1, "s1", "x", "BTC/USDT", "BTC", 0.02)]
    balances = {"BTC": (0.015, 0.015), "ETH": (3.0, 3.0)}
    opened = [VenueOrder("bkorphan", "9", "open", 1.0, 0.0, 10.0),
              VenueOrder("bkflight", "10", "open", 1.0, 0.0, 10.0),
              VenueOrder("usermade", "11", "open", 1.0, 0.0, 10.0),
              VenueOrder("bkended", "12", "open", 1.0, 0.0, 10.0)]
    diffs = compare("x", balances, held, opened, {"bkflight"}, {"bkended"})
    kinds = sorted((d.kind, d.data.get("asset") or d.data.get("client_order_id")) for d in diffs)
    assert kinds == [("order_open_for_final_intent", "bkended"), ("orphan_order", "bkorphan"),
                     ("shortfall", "BTC")]
    # a surplus (coins the user holds outside bkit) is not a difference
    assert compare("x", {"BTC": (5.0, 5.0)}, held, [], set(), set()) == []
    # a shortfall within the step is rounding, not a loss
    assert compare("x", {"BTC": (0.019995, 0.019995)}, held, [], set(), set(),
                   tolerance={"BTC": 0.00001}) == []


def test_a_surplus_our_fills_explain_and_no_position_claims_is_a_difference() -> None:
    held = [HeldPosition(1, "s1", "x", "BTC/USDT", "BTC", 0.01)]
    # our fills left 0.03 BTC, one open position claims 0.01, the account has 0.05
    diffs = compare("x", {"BTC": (0.05, 0.05)}, held, [], set(), set(),
                    fills_left={"BTC": 0.03}, tolerance={"BTC": 0.00001})
    assert [(d.kind, round(d.data["unclaimed"], 10)) for d in diffs] == [
        ("unclaimed_fills", 0.02)]
    # the user's own coins (more than our fills left) are not a difference
    assert compare("x", {"BTC": (5.0, 5.0)}, held, [], set(), set(),
                   fills_left={"BTC": 0.01}, tolerance={"BTC": 0.00001}) == []
    # if the account does not hold the unclaimed coins, the shortfall rule speaks instead
    assert compare("x", {"BTC": (0.01, 0.01)}, held, [], set(), set(),
                   fills_left={"BTC": 0.03}, tolerance={"BTC": 0.00001}) == []
