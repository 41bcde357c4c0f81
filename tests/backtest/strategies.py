"""Deterministic test strategies for the backtest tests: each answer depends only on the
minute and the price, so `Live.tick` and `Backtest.run` can be held against each other."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def market_long(symbol: str, when: datetime, price: float) -> dict[str, Any]:
    """The bench's strategy: long at market, TP/SL 0.4 % away, 120 minutes."""
    return {"position": "long", "price_take_profit": price * 1.004,
            "price_stop_loss": price * 0.996, "minute_estimated_time": 120}


def limit_short(symbol: str, when: datetime, price: float) -> dict[str, Any]:
    """A short resting 0.3 % above the price, TP −0.6 %, SL +0.5 % from the entry."""
    entry = price * 1.003
    return {"position": "short", "price_open": entry, "price_take_profit": entry * 0.994,
            "price_stop_loss": entry * 1.005, "minute_estimated_time": 60}


def mixed(symbol: str, when: datetime, price: float) -> dict[str, Any] | None:
    """By minute: long now, short now, long limit 0.1 % lower, a limit short, nothing."""
    kind = (int(when.timestamp()) // 60) % 5
    if kind == 4:
        return None
    if kind == 1:
        return {"position": "short", "price_take_profit": price * 0.995,
                "price_stop_loss": price * 1.005, "minute_estimated_time": 30}
    if kind == 2:
        entry = price * 0.999
        return {"position": "long", "price_open": entry, "price_take_profit": entry * 1.005,
                "price_stop_loss": entry * 0.995, "minute_estimated_time": 45}
    if kind == 3:
        entry = price * 1.001
        return {"position": "short", "price_open": entry, "price_take_profit": entry * 0.995,
                "price_stop_loss": entry * 1.006, "minute_estimated_time": 45}
    return {"position": "long", "price_take_profit": price * 1.005,
            "price_stop_loss": price * 0.995, "minute_estimated_time": 30}


def unruly(symbol: str, when: datetime, price: float) -> Any:
    """Raises, returns garbage, an invalid signal, a reused id, or a fair long."""
    kind = (int(when.timestamp()) // 60) % 6
    if kind == 0:
        raise RuntimeError("strategy bug")
    if kind == 1:
        return "garbage"
    if kind == 2:
        return {"position": "long", "price_take_profit": price * 0.9,
                "price_stop_loss": price * 0.99}
    if kind == 3:
        return {"id": "fixed-id", "position": "long", "price_take_profit": price * 1.006,
                "price_stop_loss": price * 0.994, "minute_estimated_time": 20}
    return {"position": "short", "price_take_profit": price * 0.994,
            "price_stop_loss": price * 1.006, "minute_estimated_time": 20}


def risk_odd_minutes(payload: dict[str, Any]) -> str | None:
    """A risk validation rejecting entries on minutes divisible by 3."""
    return "minute divisible by 3" if payload["when"].minute % 3 == 0 else None
