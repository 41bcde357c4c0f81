"""Position management (SPEC §11): effective entry, PnL with partials and DCA, the commands."""

from __future__ import annotations

import math

import pytest

from bkit.core.config import Config
from bkit.core.pnl import pnl_for
from bkit.core.position import (
    Entry,
    OpenPosition,
    PartialClose,
    average_buy,
    breakeven,
    closed_cost,
    effective_entry,
    fully_closed,
    partial_executed,
    partial_loss,
    partial_profit,
    pnl_with_partials,
    position_from_dict,
    remaining_basis,
    total_entries,
    total_partials,
    trailing_stop,
    trailing_take,
)

CONFIG = Config()


def accepted(outcome: OpenPosition | str) -> OpenPosition:
    assert isinstance(outcome, OpenPosition), outcome
    return outcome


def refused(outcome: OpenPosition | str, *words: str) -> str:
    assert isinstance(outcome, str), outcome
    for word in words:
        assert word in outcome
    return outcome


def long_at_100(tp: float = 200.0, sl: float = 50.0) -> OpenPosition:
    return OpenPosition.opened("long", 100.0, 100.0, tp, sl)


def record(
    position: str,
    entries: list[tuple[float, float]],
    partials: list[tuple[str, float, float, float, int]],
    tp: float = 200.0,
    sl: float = 50.0,
) -> OpenPosition:
    """A position written the way SPEC §11 states its examples."""
    return OpenPosition(
        position,
        tp,
        sl,
        tuple(Entry(*e) for e in entries),
        tuple(PartialClose(*p) for p in partials),
    )  # type: ignore[arg-type]


# --- effective entry -----------------------------------------------------------------------


def test_effective_entry_is_the_cost_weighted_harmonic_mean() -> None:
    position = record("long", [(100, 100), (80, 100)], [])
    assert effective_entry(position) == pytest.approx(88.888888889, abs=1e-9)
    assert effective_entry(position) == pytest.approx(200 / (1 + 1.25), rel=1e-15)


def test_effective_entry_walks_the_partials() -> None:
    # entries [100, 80], a 30 % partial at 120 after the first entry → 170 / 1.95.
    position = record("long", [(100, 100), (80, 100)], [("profit", 30, 120, 100, 1)])
    assert effective_entry(position) == pytest.approx(87.179487179, abs=1e-9)
    assert effective_entry(position) == pytest.approx(170 / 1.95, rel=1e-15)


def test_effective_entry_of_one_entry_is_its_price_exactly() -> None:
    assert (
        effective_entry(OpenPosition.opened("long", 50_123.45, 37.0, 60_000, 40_000)) == 50_123.45
    )


def test_effective_entry_walks_several_partials_with_entries_between() -> None:
    # 100 @ 100; 50 % at 110 (cb 100); DCA 100 @ 80; 50 % at 95 (cb 150); DCA 100 @ 70.
    position = record(
        "long",
        [(100, 100), (80, 100), (70, 100)],
        [("profit", 50, 110, 100, 1), ("profit", 50, 95, 150, 2)],
    )
    eff0 = 100.0
    eff1 = (50 + 100) / (50 / eff0 + 100 / 80)
    final = (75 + 100) / (75 / eff1 + 100 / 70)
    assert effective_entry(position) == pytest.approx(final, rel=1e-14)
    assert remaining_basis(position) == pytest.approx(175, rel=1e-15)


def test_effective_entry_after_a_full_close_stays_the_last_one() -> None:
    position = record("long", [(100, 100), (80, 100)], [("profit", 100, 120, 200, 2)])
    assert effective_entry(position) == pytest.approx(88.888888889, abs=1e-9)
    assert remaining_basis(position) == 0
    assert fully_closed(position)


# --- PnL with partials and DCA: every SPEC §11 number ----------------------------------------

SPEC_PNL = [
    # (position, entries, partials, close, pnl %)
    ("long", [(100, 100)], [("profit", 50, 110, 100, 1)], 120, 14.555459540),
    ("short", [(100, 100)], [("profit", 50, 90, 100, 1)], 80, 14.644659660),
    ("long", [(100, 100), (80, 100)], [], 100, 12.062949550),
    ("long", [(100, 100), (80, 100)], [("profit", 50, 120, 100, 1)], 90, 8.324184565),
    ("long", [(100, 100), (80, 100)], [("profit", 50, 110, 200, 2)], 120, 28.887391983),
    ("long", [(100, 100), (80, 100)], [("loss", 30, 75, 200, 2)], 100, 3.650728334),
    ("long", [(100, 100), (80, 100)], [("profit", 30, 120, 100, 1)], 105, 19.914356019),
    ("long", [(100, 100), (60, 100)], [("loss", 30, 80, 100, 1)], 90, 18.044973526),
]


@pytest.mark.parametrize(("position", "entries", "partials", "close", "expected"), SPEC_PNL)
def test_spec_pnl_with_partials_and_dca(
    position: str,
    entries: list[tuple[float, float]],
    partials: list[tuple[str, float, float, float, int]],
    close: float,
    expected: float,
) -> None:
    pnl = pnl_with_partials(
        record(
            position,
            entries,
            partials,
            tp=200 if position == "long" else 50,
            sl=50 if position == "long" else 200,
        ),
        close,
        CONFIG,
    )
    assert pnl.pnl_percentage == pytest.approx(expected, abs=1e-9)
    invested = sum(cost for _, cost in entries)
    assert pnl.pnl_cost == pytest.approx(expected / 100 * invested, abs=1e-9)
    assert pnl.price_close == close


def spec_formula(position: OpenPosition, close: float) -> float:
    """SPEC §11's formula written out literally (weighted − fees), as a cross-check."""
    s, f = CONFIG.CC_PERCENT_SLIPPAGE / 100, CONFIG.CC_PERCENT_FEE

    def gross(entry: float, exit_: float) -> tuple[float, float]:
        if position.position == "long":
            o, c = entry * (1 + s), exit_ * (1 - s)
            return (c - o) / o * 100, c / o
        o, c = entry * (1 - s), exit_ * (1 + s)
        return (o - c) / o * 100, c / o

    invested = position.invested
    entries, partials = position.entries, position.partials
    first = entries[: partials[0].entry_count]
    effs = [partials[0].cost_basis / sum(e.cost / e.price for e in first)]
    for j in range(1, len(partials) + 1):
        stop = partials[j].entry_count if j < len(partials) else len(entries)
        added = entries[partials[j - 1].entry_count : stop]
        rem = partials[j - 1].cost_basis * (1 - partials[j - 1].percent / 100)
        coins = rem / effs[-1] + sum(e.cost / e.price for e in added)
        effs.append((rem + sum(e.cost for e in added)) / coins)
    weighted, fees, dollars = 0.0, f, 0.0
    for partial, eff in zip(partials, effs, strict=False):
        dollar = partial.percent / 100 * partial.cost_basis
        w = dollar / invested
        g, ratio = gross(eff, partial.price)
        weighted += w * g
        fees += f * w * ratio
        dollars += dollar
    w_rem = (invested - dollars) / invested
    g, ratio = gross(effs[-1], close)
    return weighted + w_rem * g - (fees + f * w_rem * ratio)


@pytest.mark.parametrize(
    ("position", "entries", "partials", "close", "expected"), [case for case in SPEC_PNL if case[2]]
)
def test_regrouped_sum_equals_the_literal_spec_formula(
    position: str,
    entries: list[tuple[float, float]],
    partials: list[tuple[str, float, float, float, int]],
    close: float,
    expected: float,
) -> None:
    book = record(
        position,
        entries,
        partials,
        tp=200 if position == "long" else 50,
        sl=50 if position == "long" else 200,
    )
    literal = spec_formula(book, close)
    assert literal == pytest.approx(expected, abs=1e-9)
    assert pnl_with_partials(book, close, CONFIG).pnl_percentage == pytest.approx(
        literal, abs=1e-12
    )


@pytest.mark.parametrize(
    ("position", "entry", "close"),
    [
        ("long", 50_000, 52_000),
        ("long", 50_000, 46_000),
        ("long", 50_000, 50_000),
        ("short", 50_000, 48_000),
        ("long", 100, 110),
        ("short", 100, 90),
    ],
)
@pytest.mark.parametrize("cost", [100.0, 37.5])
def test_one_entry_no_partial_is_exactly_the_section_5_pnl(
    position: str, entry: float, close: float, cost: float
) -> None:
    tp, sl = (entry * 2, entry / 2) if position == "long" else (entry / 2, entry * 2)
    book = OpenPosition.opened(position, entry, cost, tp, sl)
    assert pnl_with_partials(book, close, CONFIG) == pnl_for(position, entry, close, cost, CONFIG)


def test_dca_pnl_reports_the_effective_entry_and_invested_cost() -> None:
    pnl = pnl_with_partials(record("long", [(100, 100), (80, 100)], []), 100, CONFIG)
    assert pnl.price_open == pytest.approx(88.888888889, abs=1e-9)
    assert pnl.pnl_cost == pytest.approx(12.062949550 / 100 * 200, abs=1e-9)


# --- the SPEC numbers reached through the commands --------------------------------------------


def test_commands_build_the_spec_records() -> None:
    # long $100 at 100, 50 % at 110, close 120.
    book = accepted(partial_profit(long_at_100(), 50, 110))
    assert book.partials == (PartialClose("profit", 50.0, 110, 100.0, 1),)
    assert pnl_with_partials(book, 120, CONFIG).pnl_percentage == pytest.approx(
        14.555459540, abs=1e-9
    )
    # short mirror.
    short = accepted(partial_profit(OpenPosition.opened("short", 100, 100, 50, 200), 50, 90))
    assert pnl_with_partials(short, 80, CONFIG).pnl_percentage == pytest.approx(
        14.644659660, abs=1e-9
    )
    # DCA [100, 80] closed at 100.
    dca = accepted(average_buy(long_at_100(), 100, 80))
    assert pnl_with_partials(dca, 100, CONFIG).pnl_percentage == pytest.approx(
        12.062949550, abs=1e-9
    )
    # 50 % at 120 after one entry, then DCA at 80, close 90.
    book = accepted(average_buy(accepted(partial_profit(long_at_100(), 50, 120)), 100, 80))
    assert pnl_with_partials(book, 90, CONFIG).pnl_percentage == pytest.approx(
        8.324184565, abs=1e-9
    )
    # DCA at 80, then 50 % at 110 (basis 200, two entries), close 120.
    book = accepted(partial_profit(dca, 50, 110))
    assert book.partials[0] == PartialClose("profit", 50.0, 110, 200.0, 2)
    assert pnl_with_partials(book, 120, CONFIG).pnl_percentage == pytest.approx(
        28.887391983, abs=1e-9
    )
    # DCA at 80, then partial loss 30 % at 75 (basis 200), close 100.
    book = accepted(partial_loss(dca, 30, 75))
    assert pnl_with_partials(book, 100, CONFIG).pnl_percentage == pytest.approx(
        3.650728334, abs=1e-9
    )
    # 30 % at 120 after one entry, DCA at 80, close 105.
    book = accepted(average_buy(accepted(partial_profit(long_at_100(), 30, 120)), 100, 80))
    assert effective_entry(book) == pytest.approx(87.179487179, abs=1e-9)
    assert pnl_with_partials(book, 105, CONFIG).pnl_percentage == pytest.approx(
        19.914356019, abs=1e-9
    )
    # partial loss 30 % at 80 after one entry, DCA at 60, close 90.
    book = accepted(average_buy(accepted(partial_loss(long_at_100(), 30, 80)), 100, 60))
    assert pnl_with_partials(book, 90, CONFIG).pnl_percentage == pytest.approx(
        18.044973526, abs=1e-9
    )


# --- counts and basis --------------------------------------------------------------------------


def test_counts_basis_and_executed_share() -> None:
    book = accepted(average_buy(accepted(partial_profit(long_at_100(), 30, 120)), 100, 80))
    assert total_entries(book) == 2
    assert total_partials(book) == 1
    assert book.invested == 200
    assert closed_cost(book) == pytest.approx(30)
    assert remaining_basis(book) == pytest.approx(170)
    assert partial_executed(book) == pytest.approx(15)
    assert not fully_closed(book)
    fresh = long_at_100()
    assert (total_entries(fresh), total_partials(fresh), partial_executed(fresh)) == (1, 0, 0)
    assert remaining_basis(fresh) == 100


def test_partials_are_of_the_remaining_basis_and_close_fully() -> None:
    book = accepted(partial_profit(long_at_100(), 50, 110))
    book = accepted(partial_profit(book, 50, 115))
    assert book.partials[1].cost_basis == pytest.approx(50)
    assert remaining_basis(book) == pytest.approx(25)
    assert partial_executed(book) == pytest.approx(75)
    book = accepted(partial_profit(book, 100, 118))
    assert fully_closed(book)
    assert partial_executed(book) == pytest.approx(100)
    refused(partial_profit(book, 10, 119), "nothing left")
    # All closed by partials: the final price does not matter any more.
    assert pnl_with_partials(book, 1, CONFIG).pnl_percentage == pytest.approx(
        pnl_with_partials(book, 1000, CONFIG).pnl_percentage, abs=1e-12
    )


def test_round_trip_through_a_dict() -> None:
    book = accepted(
        trailing_stop(
            accepted(average_buy(accepted(partial_profit(long_at_100(), 30, 120)), 100, 80)),
            -5,
            100,
        )
    )
    assert position_from_dict(book.as_dict()) == book


# --- partial profit / loss refusals ------------------------------------------------------------


@pytest.mark.parametrize("percent", [0, -1, 100.5, math.nan, math.inf, "50", None, True])
def test_partial_percent_out_of_range_is_refused(percent: object) -> None:
    refused(partial_profit(long_at_100(), percent, 110), "percent")  # type: ignore[arg-type]
    refused(partial_loss(long_at_100(), percent, 90), "percent")  # type: ignore[arg-type]


def test_partial_profit_needs_the_profit_side_of_the_effective_entry() -> None:
    refused(partial_profit(long_at_100(), 50, 100), "not above")
    refused(partial_profit(long_at_100(), 50, 95), "not above")
    short = OpenPosition.opened("short", 100, 100, 50, 200)
    refused(partial_profit(short, 50, 105), "not below")
    accepted(partial_profit(short, 50, 95))
    # After a DCA the effective entry (88.9) decides, not the first entry price.
    dca = accepted(average_buy(long_at_100(), 100, 80))
    accepted(partial_profit(dca, 50, 95))


def test_partial_loss_needs_the_loss_side() -> None:
    refused(partial_loss(long_at_100(), 50, 105), "not below")
    accepted(partial_loss(long_at_100(), 50, 95))
    short = OpenPosition.opened("short", 100, 100, 50, 200)
    refused(partial_loss(short, 50, 95), "not above")
    accepted(partial_loss(short, 50, 105))


def test_partial_profit_refused_once_the_effective_tp_is_crossed() -> None:
    book = long_at_100(tp=120)
    refused(partial_profit(book, 50, 120), "take profit")
    refused(partial_profit(book, 50, 125), "take profit")
    accepted(partial_profit(book, 50, 119))
    trailed = accepted(trailing_take(book, -10, 105))  # TP → 110
    refused(partial_profit(trailed, 50, 112), "take profit 110")


def test_partial_loss_refused_once_the_effective_sl_is_crossed() -> None:
    book = long_at_100(sl=90)
    refused(partial_loss(book, 50, 90), "stop loss")
    refused(partial_loss(book, 50, 85), "stop loss")
    accepted(partial_loss(book, 50, 91))
    short = OpenPosition.opened("short", 100, 100, 80, 110)
    refused(partial_loss(short, 50, 110), "stop loss")


def test_partial_refused_when_total_closed_would_exceed_invested() -> None:
    # An inconsistent record (basis above what is open) must not be closed beyond invested.
    book = record("long", [(100, 100)], [("profit", 10, 110, 150, 1)])
    assert effective_entry(book) == pytest.approx(150)
    refused(partial_profit(book, 100, 190), "above the 100 USD invested")


def test_bad_tick_price_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="price"):
        partial_profit(long_at_100(), 50, 0)
    with pytest.raises(ValueError, match="price"):
        trailing_stop(long_at_100(), -5, math.nan)


# --- trailing stop ---------------------------------------------------------------------------


def test_trailing_stop_spec_example() -> None:
    book = long_at_100(tp=120, sl=90)
    book = accepted(trailing_stop(book, -5, 100))
    assert book.effective_stop_loss == pytest.approx(95)
    refused(trailing_stop(book, -3, 100), "not higher", "95")  # 93 is worse
    assert book.effective_stop_loss == pytest.approx(95)
    book = accepted(trailing_stop(book, -7, 100))
    assert book.effective_stop_loss == pytest.approx(97)
    assert book.price_stop_loss == 90  # the original is kept for d0


def test_trailing_stop_short() -> None:
    short = OpenPosition.opened("short", 100, 100, 80, 110)
    book = accepted(trailing_stop(short, -4, 100))
    assert book.effective_stop_loss == pytest.approx(106)
    refused(trailing_stop(book, -2, 100), "not lower")
    assert accepted(trailing_stop(book, -8, 100)).effective_stop_loss == pytest.approx(102)


def test_trailing_stop_first_call_sets_it_even_looser() -> None:
    book = accepted(trailing_stop(long_at_100(tp=120, sl=90), 5, 100))
    assert book.effective_stop_loss == pytest.approx(85)


@pytest.mark.parametrize("shift", [0, -100.01, 100.5, math.nan, "5", None, False])
def test_trailing_shift_out_of_range_is_refused(shift: object) -> None:
    refused(trailing_stop(long_at_100(), shift, 100), "shift")  # type: ignore[arg-type]
    refused(trailing_take(long_at_100(), shift, 100), "shift")  # type: ignore[arg-type]


def test_trailing_stop_refused_when_price_crossed_or_tp_reached() -> None:
    book = long_at_100(tp=120, sl=90)
    refused(trailing_stop(book, -5, 95), "already crossed")  # P ≤ new SL 95
    refused(trailing_stop(book, -5, 94), "already crossed")
    refused(trailing_stop(book, -30, 125), "take profit")  # SL 120 reaches TP 120
    refused(trailing_stop(book, 95, 100), "≤ 0")  # d0 + shift = 105 %
    short = OpenPosition.opened("short", 100, 100, 80, 110)
    refused(trailing_stop(short, -5, 105), "already crossed")


def test_trailing_stop_in_profit() -> None:
    book = accepted(trailing_stop(long_at_100(tp=120, sl=90), -15, 110))
    assert book.effective_stop_loss == pytest.approx(105)


# --- trailing take ---------------------------------------------------------------------------


def test_trailing_take_long_only_lower() -> None:
    book = long_at_100(tp=120, sl=90)
    book = accepted(trailing_take(book, -5, 100))
    assert book.effective_take_profit == pytest.approx(115)
    refused(trailing_take(book, -2, 100), "not lower")  # 118 is less conservative
    book = accepted(trailing_take(book, -10, 100))
    assert book.effective_take_profit == pytest.approx(110)
    assert book.price_take_profit == 120


def test_trailing_take_short_only_higher() -> None:
    short = OpenPosition.opened("short", 100, 100, 80, 110)
    book = accepted(trailing_take(short, -5, 100))
    assert book.effective_take_profit == pytest.approx(85)
    refused(trailing_take(book, -3, 100), "not higher")
    assert accepted(trailing_take(book, -12, 100)).effective_take_profit == pytest.approx(92)


def test_trailing_take_crossing_checks() -> None:
    book = long_at_100(tp=120, sl=90)
    refused(trailing_take(book, -10, 111), "already crossed")  # P ≥ new TP 110
    accepted(trailing_take(book, -10, 109))
    refused(trailing_take(book, -30, 85), "stop loss")  # TP 90 reaches SL 90
    short = OpenPosition.opened("short", 100, 100, 80, 110)
    refused(trailing_take(short, -10, 90), "already crossed")
    refused(trailing_take(short, -30, 115), "stop loss")  # TP 110 reaches SL 110


# --- breakeven -------------------------------------------------------------------------------


def test_breakeven_moves_sl_to_the_effective_entry() -> None:
    book = long_at_100(tp=120, sl=90)
    moved = accepted(breakeven(book, 100.6, CONFIG))
    assert moved.effective_stop_loss == pytest.approx(100)
    refused(breakeven(book, 100.5, CONFIG), "threshold")
    # DCA moves e: breakeven goes to the new effective entry.
    dca = accepted(average_buy(book, 100, 95))
    e = effective_entry(dca)
    assert accepted(breakeven(dca, e * 1.006 + 1e-9, CONFIG)).effective_stop_loss == pytest.approx(
        e
    )


def test_breakeven_short() -> None:
    short = OpenPosition.opened("short", 100, 100, 80, 110)
    assert accepted(breakeven(short, 99.4, CONFIG)).effective_stop_loss == pytest.approx(100)
    refused(breakeven(short, 99.5, CONFIG), "threshold")
    refused(breakeven(short, 100.2, CONFIG), "not in profit")


def test_breakeven_after_the_threshold_fired_needs_only_the_right_side_of_e() -> None:
    book = long_at_100(tp=120, sl=90)
    assert accepted(
        breakeven(book, 100.1, CONFIG, threshold_reached=True)
    ).effective_stop_loss == pytest.approx(100)
    refused(breakeven(book, 100, CONFIG, threshold_reached=True), "not in profit")
    refused(breakeven(book, 99, CONFIG, threshold_reached=True), "not in profit")


def test_breakeven_keeps_a_trailing_sl_in_profit() -> None:
    book = accepted(trailing_stop(long_at_100(tp=120, sl=90), -12, 105))  # SL 102
    refused(breakeven(book, 106, CONFIG), "kept")
    assert book.effective_stop_loss == pytest.approx(102)
    # A trailing SL still below e is replaced.
    tight = accepted(trailing_stop(long_at_100(tp=120, sl=90), -5, 105))  # SL 95
    assert accepted(breakeven(tight, 106, CONFIG)).effective_stop_loss == pytest.approx(100)


def test_breakeven_threshold_follows_config() -> None:
    config = Config(CC_BREAKEVEN_THRESHOLD=1.0)  # 2 × 0.2 + 1.0 = 1.4 %
    refused(breakeven(long_at_100(), 101.3, config), "1.4 % threshold")
    accepted(breakeven(long_at_100(), 101.4, config))


# --- average buy (DCA) -----------------------------------------------------------------------


def test_average_buy_rules() -> None:
    book = long_at_100(tp=120, sl=70)
    refused(average_buy(book, 100, 100), "not below")
    refused(average_buy(book, 100, 101), "not below")
    book = accepted(average_buy(book, 100, 90))
    refused(average_buy(book, 100, 95), "not below the lowest entry 90")
    book = accepted(average_buy(book, 50, 80))
    assert [e.price for e in book.entries] == [100, 90, 80]
    assert (book.price_take_profit, book.price_stop_loss) == (120, 70)
    assert (book.effective_take_profit, book.effective_stop_loss) == (120, 70)
    refused(average_buy(book, 100, 70), "stop loss")
    short = OpenPosition.opened("short", 100, 100, 80, 130)
    refused(average_buy(short, 100, 99), "not above")
    assert accepted(average_buy(short, 100, 110)).entries[-1] == Entry(110, 100)


@pytest.mark.parametrize("cost", [0, -5, math.nan, math.inf, "100", None])
def test_average_buy_bad_cost_is_refused(cost: object) -> None:
    refused(average_buy(long_at_100(), cost, 90), "cost")  # type: ignore[arg-type]


# --- record checks ---------------------------------------------------------------------------


def test_an_inconsistent_record_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        record("sideways", [(100, 100)], [])
    with pytest.raises(ValueError):
        OpenPosition("long", 120, 90, ())
    with pytest.raises(ValueError):
        record("long", [(100, 100)], [("profit", 10, 110, 100, 2)])
    with pytest.raises(ValueError):
        record("long", [(100, 100)], [("profit", 0, 110, 100, 1)])
    with pytest.raises(ValueError):
        record(
            "long",
            [(100, 100), (90, 10)],
            [("profit", 10, 110, 110, 2), ("profit", 10, 110, 100, 1)],
        )
