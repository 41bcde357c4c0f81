"""The risk decision of SPEC §7, pure: given the profile's slots in use, the candidate's
rejection note or None. The live tick (slots from the database, under the budget lock) and
the backtest (slots of its own book) both call it, so they refuse the same signals."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bkit.core.machine import KeyContext
from bkit.core.registry import RiskSchema
from bkit.core.signals import PublicSignal


def risk_verdict(risk: RiskSchema, ctx: KeyContext, when: datetime, price: float,
                 public: PublicSignal, slots: list[dict[str, Any]]) -> str | None:
    """`max_concurrent_positions` against `slots` (each a dict with symbol, strategy_name,
    exchange_name, signal_id), then each validation in order; the first note wins."""
    if risk.max_concurrent_positions is not None and \
            len(slots) >= risk.max_concurrent_positions:
        return (f"risk {risk.risk_name}: {len(slots)} of "
                f"{risk.max_concurrent_positions} concurrent positions in use")
    payload = {
        "symbol": ctx.symbol, "strategy_name": ctx.strategy_name,
        "exchange_name": ctx.exchange_name, "current_price": price, "when": when,
        "signal": public, "active_position_count": len(slots), "active_positions": slots}
    for validation in risk.validations:
        try:
            verdict = validation.validate(payload)
        except Exception as exc:
            return str(exc) or validation.note or type(exc).__name__
        if verdict:
            return verdict if isinstance(verdict, str) else (validation.note or "rejected")
    return None
