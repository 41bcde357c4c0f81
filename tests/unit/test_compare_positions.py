"""Futures reconciliation compares positions (SPEC §10), pure: bkit/core/reconciliation.py."""

from __future__ import annotations

from bkit.core.reconciliation import compare_positions

BTC = "BTC/USDT:USDT"


def kinds(differences: list) -> list[tuple[str, str, str]]:
    return [(d.kind, d.data["symbol"], d.data["side"]) for d in differences]


def test_agreeing_positions_and_rounding_within_a_step_are_no_difference() -> None:
    assert compare_positions("fut", {(BTC, "long"): 0.010}, {(BTC, "long"): 0.0100004},
                             steps={BTC: 0.001}) == []


def test_a_side_only_the_venue_holds_is_unknown_and_sizes_apart_are_reported() -> None:
    found = compare_positions("fut", {(BTC, "long"): 0.010},
                              {(BTC, "long"): 0.012, (BTC, "short"): 0.003},
                              steps={BTC: 0.001})
    assert kinds(found) == [("position_size", BTC, "long"), ("position_unknown", BTC, "short")]
    assert (found[0].data["believed"], found[0].data["venue"]) == (0.010, 0.012)


def test_a_side_only_bkit_holds_is_left_to_the_liquidation_lookup() -> None:
    assert compare_positions("fut", {(BTC, "long"): 0.010}, {}, steps={BTC: 0.001}) == []


def test_symbols_with_an_order_in_flight_are_skipped() -> None:
    assert compare_positions("fut", {}, {(BTC, "long"): 0.01}, busy_symbols={BTC}) == []
