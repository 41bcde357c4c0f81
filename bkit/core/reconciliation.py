"""Reconciliation (SPEC §8): bkit's open positions and in-flight orders held against the
account's balances and open orders. Pure: the caller reads the venue first, then the
database, so an order placed in between is never mistaken for an orphan.

Coins the user holds outside bkit are not a difference; a shortfall (bkit believes it holds
more than the account has) always is; an open order with our client-id prefix that no
in-flight intent explains is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bkit.core.orders import VenueOrder


@dataclass(frozen=True, slots=True)
class HeldPosition:
    """A position bkit believes open: `amount` base units of `base` on `exchange_name`."""

    key_id: int
    signal_id: str
    exchange_name: str
    symbol: str
    base: str
    amount: float
    stuck: bool = False


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement between bkit and the account."""

    kind: str  # shortfall | orphan_order | order_open_for_final_intent
    exchange_name: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AssetView:
    """One asset: what bkit's open positions hold and what the account shows."""

    asset: str
    believed: float
    free: float
    total: float

    @property
    def shortfall(self) -> float:
        return max(0.0, self.believed - self.total)


def asset_views(balances: dict[str, tuple[float, float]], positions: Iterable[HeldPosition]
                ) -> list[AssetView]:
    believed: dict[str, float] = {}
    for position in positions:
        believed[position.base] = believed.get(position.base, 0.0) + position.amount
    return [AssetView(asset, amount, *balances.get(asset, (0.0, 0.0)))
            for asset, amount in sorted(believed.items())]


def compare(exchange_name: str, balances: dict[str, tuple[float, float]],
            positions: list[HeldPosition], open_orders: list[VenueOrder],
            in_flight_ids: set[str], final_ids: set[str], *, prefix: str = "bk",
            tolerance: dict[str, float] | None = None,
            fills_left: dict[str, float] | None = None) -> list[Difference]:
    """Every difference on one exchange. `in_flight_ids`: client ids of intents the orders
    worker still acts on; `final_ids`: those of intents that ended. `tolerance`: per asset,
    what a shortfall may be without counting (the step size: rounding is not a loss).
    `fills_left`: per asset, what bkit's own fills left in the account (buys net of
    base-asset fees − sells − recorded dust): more than the open positions claim, while the
    account does hold it, is a surplus our fills explain that no position claims."""
    differences = []
    tolerance = tolerance or {}
    claimed = {v.asset: v.believed for v in asset_views(balances, positions)}
    for asset, left in sorted((fills_left or {}).items()):
        unclaimed = left - claimed.get(asset, 0.0)
        total = balances.get(asset, (0.0, 0.0))[1]
        allowed = tolerance.get(asset, 1e-12)
        if unclaimed > allowed and total + allowed >= claimed.get(asset, 0.0) + unclaimed:
            differences.append(Difference(
                "unclaimed_fills", exchange_name,
                f"{exchange_name}: bkit's own fills left {unclaimed:.10g} {asset} in the "
                "account that no open position claims",
                {"asset": asset, "unclaimed": unclaimed, "total": total}))
    for view in asset_views(balances, positions):
        if view.shortfall > tolerance.get(view.asset, 1e-12):
            differences.append(Difference(
                "shortfall", exchange_name,
                f"{exchange_name}: bkit's open positions hold {view.believed:.10g} "
                f"{view.asset}, the account has {view.total:.10g}",
                {"asset": view.asset, "believed": view.believed, "total": view.total,
                 "free": view.free}))
    for order in open_orders:
        cid = order.client_order_id or ""
        if not cid.startswith(prefix) or cid in in_flight_ids:
            continue
        kind = "order_open_for_final_intent" if cid in final_ids else "orphan_order"
        what = "whose intent has ended" if cid in final_ids else "that no intent explains"
        differences.append(Difference(
            kind, exchange_name,
            f"{exchange_name}: open order {cid} carries our prefix {what}",
            {"client_order_id": cid, "exchange_order_id": order.exchange_order_id}))
    return differences


def compare_positions(exchange_name: str, believed: dict[tuple[str, str], float],
                      venue: dict[tuple[str, str], float], *,
                      steps: dict[str, float] | None = None,
                      busy_symbols: set[str] | None = None) -> list[Difference]:
    """Futures (SPEC §10): bkit's open positions against the venue's, per (symbol, side)
    in base units, not the balances (those are margin). A side bkit holds that the venue
    does not is left to the caller (a liquidation to look up, or `position_missing`); a side
    the venue holds that bkit does not is `position_unknown`; both holding but by more than
    a step apart is `position_size`. Symbols with an order in flight (`busy_symbols`) are
    skipped: a fill may be on the venue and not recorded yet."""
    steps, busy = steps or {}, busy_symbols or set()
    differences = []
    for symbol, side in sorted(set(believed) | set(venue)):
        if symbol in busy:
            continue
        mine, theirs = believed.get((symbol, side), 0.0), venue.get((symbol, side), 0.0)
        allowed = steps.get(symbol, 0.0) * 1.000001 or 1e-12
        data = {"symbol": symbol, "side": side, "believed": mine, "venue": theirs}
        if mine <= allowed and theirs > allowed:
            differences.append(Difference(
                "position_unknown", exchange_name,
                f"{exchange_name}: the venue holds a {side} position of {theirs:.10g} on "
                f"{symbol} that bkit does not know", data))
        elif mine > allowed and theirs > allowed and abs(mine - theirs) > allowed:
            differences.append(Difference(
                "position_size", exchange_name,
                f"{exchange_name}: bkit's {side} positions on {symbol} hold {mine:.10g}, "
                f"the venue's {theirs:.10g}", data))
    return differences
