"""The order lifecycle (SPEC §8, DESIGN "Order lifecycle"): what an order may become, read
only from the venue's evidence, and the money arithmetic of a position. Pure, no I/O.

An intent's stored status is the last thing the venue showed about its order:

```
pending ──send──► open ─────────────► filled | canceled | expired      (final, with fills)
   │        │       (resting, maybe partly filled)
   │        ├──► unknown ──look──► open | final | unknown
   │        │       └── settle window shows no order and no trade ──► pending (re-send)
   │        └──► rejected (the create call was refused: nothing exists on the venue)
   └── (exit refused N times) ──► stuck ──operator──► pending
```
`ORDER_TRANSITIONS` is the one table of what may follow what; an answer that would move an
order backwards (a stale "open" after "filled") is ignored, never written. `canceled →
filled` is legal: a venue may acknowledge a cancel before it reports a fill that beat it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

IntentStatus = Literal["pending", "unknown", "open", "filled", "canceled", "expired",
                       "rejected", "stuck"]
#: Statuses the venue can no longer change (for our purposes).
FINAL_STATUSES: frozenset[str] = frozenset({"filled", "canceled", "expired", "rejected"})
#: Statuses the orders worker still has to act on (send, look, poll).
ACTIVE_STATUSES: frozenset[str] = frozenset({"pending", "unknown", "open"})

ORDER_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"pending", "unknown", "open", "filled", "canceled", "expired",
                          "rejected", "stuck"}),
    "unknown": frozenset({"unknown", "open", "filled", "canceled", "expired", "rejected",
                          "pending"}),
    "open": frozenset({"open", "filled", "canceled", "expired"}),
    "canceled": frozenset({"filled"}),
    "stuck": frozenset({"pending"}),
    "filled": frozenset(),
    "expired": frozenset(),
    "rejected": frozenset(),
}


class IllegalTransition(ValueError):
    """An order status change the lifecycle table does not allow."""


def can_move(old: str, new: str) -> bool:
    """Whether an order in `old` may be recorded as `new`."""
    return new in ORDER_TRANSITIONS.get(old, frozenset())


def check_move(old: str, new: str) -> None:
    if not can_move(old, new):
        raise IllegalTransition(f"order status {old!r} cannot become {new!r}")


@dataclass(frozen=True, slots=True)
class Fee:
    """One fee charged by the venue: `cost` in units of `currency`."""

    cost: float
    currency: str


@dataclass(frozen=True, slots=True)
class VenueOrder:
    """An order as the venue showed it (a create answer, a lookup, a cancel answer).

    `status` is ccxt's unified one: open | closed | canceled | expired | rejected, or None
    when the answer carried none (Binance's ACK response type): that is *unknown*, never
    "filled" nor "nothing filled". Amounts in base units, `cost` in quote units."""

    client_order_id: str
    exchange_order_id: str | None
    status: str | None
    amount: float | None
    filled: float | None
    average: float | None
    cost: float | None = None
    fees: tuple[Fee, ...] = ()

    @property
    def state(self) -> str:
        """What the evidence says: `unknown`, `open`, or a final status (`filled` when ccxt
        says closed, `canceled`, `expired`, `rejected`). A final order may hold a partial
        fill: compare `filled_amount` with what was asked, for every final status."""
        if self.status is None or self.status == "None":
            return "unknown"
        if self.status == "open":
            return "open"
        if self.status == "closed":
            return "filled"
        if self.status in ("canceled", "cancelled"):
            return "canceled"
        if self.status in ("expired", "rejected"):
            return self.status
        return "unknown"  # a status we do not know is not evidence of anything

    @property
    def filled_amount(self) -> float:
        value = self.filled or 0.0
        return value if math.isfinite(value) and value > 0 else 0.0

    @property
    def filled_cost(self) -> float:
        """Quote units paid (buy) or received (sell) for what filled."""
        if self.cost is not None and math.isfinite(self.cost) and self.cost > 0:
            return self.cost
        if self.average is not None and math.isfinite(self.average):
            return self.filled_amount * self.average
        return 0.0


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade of an order (from the venue's trade list): amount (base), price, fee."""

    amount: float
    price: float
    fee: Fee | None = None


def fees_of_fills(fills: list[Fill]) -> tuple[Fee, ...]:
    return tuple(f.fee for f in fills if f.fee is not None)


def base_fee(fees: tuple[Fee, ...] | list[Fee], base: str) -> float:
    """Fees charged in the base asset (Binance takes the buy fee from what you receive)."""
    return sum(f.cost for f in fees if f.currency == base and math.isfinite(f.cost))


def quote_fees(fees: tuple[Fee, ...] | list[Fee], base: str, quote: str, price: float) -> float:
    """Fees in quote units: quote fees as they are, base fees valued at `price`. Fees in a
    third asset (BNB) are left out: no price for them is known here (see `other_fees`)."""
    total = 0.0
    for fee in fees:
        if not math.isfinite(fee.cost):
            continue
        if fee.currency == quote:
            total += fee.cost
        elif fee.currency == base:
            total += fee.cost * price
    return total


def other_fees(fees: tuple[Fee, ...] | list[Fee], base: str, quote: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fee in fees:
        if fee.currency not in (base, quote) and fee.cost:
            out[fee.currency] = out.get(fee.currency, 0.0) + fee.cost
    return out


def net_bought(filled: float, fees: tuple[Fee, ...] | list[Fee], base: str) -> float:
    """What a buy that filled `filled` base units left in the account: filled minus any fee
    taken in the base asset. The position amount of a long is this, never `filled`."""
    return max(0.0, filled - base_fee(fees, base))


def floor_to_step(amount: float, step: float | None) -> float:
    """`amount` floored to a multiple of the venue's step size (exact in decimal)."""
    if not math.isfinite(amount) or amount <= 0:
        return 0.0
    if not step or step <= 0:
        return amount
    d_step = Decimal(repr(step))
    units = (Decimal(repr(amount)) / d_step).to_integral_value(rounding=ROUND_FLOOR)
    return float(units * d_step)


@dataclass(frozen=True, slots=True)
class MarketRules:
    """The venue's rules for one symbol that an order must satisfy."""

    base: str
    quote: str
    amount_step: float | None = None
    min_amount: float | None = None
    min_cost: float | None = None


@dataclass(frozen=True, slots=True)
class ExitSize:
    """What an exit sends: `amount` (0 = nothing can be sent), the `dust` that stays behind
    (below the step, or a remainder the venue would refuse), and `problem` when nothing
    sellable is left although the position is not dust-only... (kept for the operator)."""

    amount: float
    dust: float
    problem: str | None = None


def sellable(amount: float, price: float, rules: MarketRules) -> str | None:
    """Why `amount` at `price` cannot be sent on this market, or None if it can."""
    if amount <= 0:
        return "nothing to sell"
    if rules.min_amount is not None and amount < rules.min_amount - 1e-15:
        return f"amount {amount:.10g} below the venue's minimum {rules.min_amount:.10g}"
    if rules.min_cost is not None and amount * price < rules.min_cost - 1e-12:
        return (f"notional {amount * price:.10g} {rules.quote} below the venue's minimum "
                f"{rules.min_cost:.10g}")
    return None


def exit_size(position: float, free: float, price: float, rules: MarketRules) -> ExitSize:
    """SPEC §8: sell `min(position, free balance)` floored to the step. The rest of the
    position stays behind as dust. `problem` says why nothing can be sent (the caller keeps
    the position `closing` and retries: a refusal, never a close)."""
    wanted = max(0.0, min(position, free))
    amount = floor_to_step(wanted, rules.amount_step)
    dust = max(0.0, position - amount)
    problem = sellable(amount, price, rules)
    if problem is not None:
        if free + 1e-15 < position and amount <= 0:
            problem = (f"free balance {free:.10g} {rules.base} cannot cover the position "
                       f"{position:.10g}: {problem}")
        return ExitSize(0.0, position, problem)
    return ExitSize(amount, dust)


def remainder_is_dust(remaining: float, price: float, rules: MarketRules) -> bool:
    """After a partial exit: a remainder the venue would refuse (below the step, the minimum
    amount or the minimum notional) is recorded as dust, not as an open position."""
    if remaining <= 0:
        return True
    return sellable(floor_to_step(remaining, rules.amount_step), price, rules) is not None


@dataclass(frozen=True, slots=True)
class Realised:
    """PnL made on the venue: from fills and fees, in quote units and % of the entry's cost."""

    pnl_cost: float
    pnl_percentage: float
    fees_quote: float


def realised_pnl(position: str, entry_cost: float, exit_cost: float,
                 fees_in_quote: float) -> Realised:
    """Long: received for the sells − paid for the buys − fees paid in quote; short: the
    mirror. Base-asset fees need no term of their own: they already made the position (and
    so the sale) smaller. `fees_in_quote` are the fees charged in the quote currency only."""
    if position == "long":
        pnl = exit_cost - entry_cost - fees_in_quote
    else:
        pnl = entry_cost - exit_cost - fees_in_quote
    percentage = pnl / entry_cost * 100 if entry_cost > 0 else 0.0
    return Realised(pnl, percentage, fees_in_quote)


@dataclass(frozen=True, slots=True)
class SettleState:
    """What the looks at an order of unknown outcome have shown so far."""

    seconds_unknown: float      # since the outcome first became unknown
    not_found_looks: int        # looks that found no order and no trade under the id
    failed_looks: int           # looks that got no answer at all (errors, time-outs)


def settle_verdict(state: SettleState, settle_seconds: float) -> str:
    """`resend` only when the settle window has passed and at least two looks spread over it
    found no order, no open order and no trade under the client id; else `look_again`.
    A look that failed proves nothing either way."""
    if state.seconds_unknown >= settle_seconds and state.not_found_looks >= 2:
        return "resend"
    return "look_again"


def look_delay(settle_seconds: float, not_found_looks: int) -> float:
    """Spread the looks over the settle window: about four of them, at least 2 s apart."""
    return max(2.0, settle_seconds / 4) if not_found_looks else 2.0


USD_QUOTES: frozenset[str] = frozenset({"USD", "USDT", "USDC", "BUSD", "FDUSD", "TUSD", "DAI",
                                        "USDP", "PYUSD", "USDE"})


def quote_of(symbol: str) -> str:
    """The quote currency of a ccxt symbol (`BTC/USDT` → USDT, `BTC/USDT:USDT` → USDT)."""
    quote = symbol.split("/", 1)[1] if "/" in symbol else ""
    return quote.split(":", 1)[0]


def base_of(symbol: str) -> str:
    return symbol.split("/", 1)[0]


def is_spot_symbol(symbol: str) -> bool:
    """ccxt writes derivatives with a settle currency (`BTC/USDT:USDT`); spot has none."""
    return ":" not in symbol


def default_cost_problem(symbol: str, explicit_size: bool, default_cost: float) -> str | None:
    """SPEC §8: a default cost (`CC_POSITION_ENTRY_COST`, meant as USD) must never become an
    absurd order in another quote currency. None when the size is fine."""
    quote = quote_of(symbol)
    if explicit_size or quote in USD_QUOTES:
        return None
    return (f"{symbol} is quoted in {quote}, not a USD stablecoin: the default cost "
            f"{default_cost:g} would buy {default_cost:g} {quote} worth. Give each signal an "
            f"explicit `cost` in {quote} (or a sizing) for this symbol")
