"""Balances (free / locked per asset) and the venue's fee rule, in Decimal.

An order reserves what it may spend (quote for a buy, base for a sell) by moving it from free to
locked; a fill spends from locked and credits what was received minus the commission. Fee rules:
"base" (Binance without BNB: a buy pays in the base asset received, a sell in the quote asset
received), "quote" (always quote), or a third asset such as "BNB" (charged in that asset at a
configured price, falling back to the base rule when there is not enough of it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal

from bkit.venue.errors import VenueError

#: Binance keeps balances, commissions and quote amounts to 8 decimals.
EIGHT = Decimal("0.00000001")


def dec(value: float | int | str | Decimal) -> Decimal:
    """A Decimal from a float (by its shortest repr), an int, a string or a Decimal."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def quantize(value: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    return value.quantize(EIGHT, rounding=rounding)


@dataclass(frozen=True, slots=True)
class FeeRule:
    """Which asset pays the commission and at what rate (fraction, 0.001 = 0.1 %).

    `asset` is "base", "quote" or a third asset's code; `asset_price` is the price of that third
    asset in the traded market's quote currency (e.g. BNB at 600 USDT).
    """

    rate: Decimal = Decimal("0.001")
    asset: str = "base"
    asset_price: Decimal | None = None

    def quote_fee_on_buy(self) -> bool:
        """True when a buy pays its fee in quote (then it must reserve cost + fee)."""
        return self.asset == "quote"

    def commission(self, side: str, base: str, quote: str, qty: Decimal, quote_qty: Decimal,
                   third_free: Decimal) -> tuple[Decimal, str]:
        """(commission, asset) of one fill of `qty` base for `quote_qty` quote."""
        if self.asset not in ("base", "quote") and self.asset_price:
            third = quantize(quote_qty * self.rate / self.asset_price, ROUND_UP)
            if third <= third_free:
                return third, self.asset
        if self.asset == "quote" or side == "SELL":
            return quantize(quote_qty * self.rate), quote
        return quantize(qty * self.rate), base


class Accounts:
    """Free and locked balance per asset."""

    def __init__(self, balances: Mapping[str, float | int | str | Decimal]) -> None:
        self.free: dict[str, Decimal] = {a: dec(v) for a, v in balances.items()}
        self.locked: dict[str, Decimal] = {a: Decimal(0) for a in balances}

    def set_free(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = amount
        self.locked.setdefault(asset, Decimal(0))

    def get_free(self, asset: str) -> Decimal:
        return self.free.get(asset, Decimal(0))

    def reserve(self, asset: str, amount: Decimal) -> None:
        """Move `amount` from free to locked; -2010 insufficient balance if free is short."""
        if amount > self.get_free(asset):
            raise VenueError.insufficient_balance()
        self.free[asset] = self.get_free(asset) - amount
        self.locked[asset] = self.locked.get(asset, Decimal(0)) + amount

    def release(self, asset: str, amount: Decimal) -> None:
        """Move `amount` from locked back to free."""
        if amount:
            self.locked[asset] = self.locked.get(asset, Decimal(0)) - amount
            self.free[asset] = self.get_free(asset) + amount

    def spend_locked(self, asset: str, amount: Decimal) -> None:
        self.locked[asset] = self.locked.get(asset, Decimal(0)) - amount

    def credit(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.get_free(asset) + amount
        self.locked.setdefault(asset, Decimal(0))

    def debit_free(self, asset: str, amount: Decimal) -> None:
        self.free[asset] = self.get_free(asset) - amount

    def snapshot(self) -> dict[str, tuple[Decimal, Decimal]]:
        assets = sorted(set(self.free) | set(self.locked))
        return {a: (self.get_free(a), self.locked.get(a, Decimal(0))) for a in assets}
