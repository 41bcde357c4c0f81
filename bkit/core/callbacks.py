"""Running a strategy's callbacks (SPEC §1): an exception inside one becomes an error notice,
never a broken tick. Pure: shared by the live tick and the backtest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bkit.core.machine import KeyContext
from bkit.core.results import CallbackCall, Notice


def run_callbacks(callbacks: dict[str, Callable[..., Any]] | Any, calls: Sequence[CallbackCall],
                  ctx: KeyContext, when: Any = None) -> list[Notice]:
    """Run the `calls` the strategy has callbacks for; their errors as notices."""
    errors = []
    for call in calls:
        fn = callbacks.get(call.name) if callbacks else None
        if fn is None:
            continue
        try:
            fn(*call.args)
        except Exception as exc:
            errors.append(Notice("error", f"callback {call.name} of {ctx.strategy_name} "
                                 f"failed: {type(exc).__name__}: {exc}",
                                 {"stage": "callback", "callback": call.name}))
    return errors
