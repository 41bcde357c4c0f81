"""`bkit resolve`: an operator ends a stuck position (SPEC §8).

A position is `stuck` when the venue kept refusing its exit. Only an operator (or
reconciliation) ends that: `retry` sends a fresh exit (after the operator fixed the cause:
balance, filters, permissions), `flat` records the close because the operator saw on the
account that the coins are gone (sold by hand, say). Both are audited in the event log.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from sqlalchemy import Engine

from bkit import events
from bkit.core.candles import floor_to_minute
from bkit.core.machine import KeyContext
from bkit.core.order_outcomes import close_as_gone, retry_stuck
from bkit.core.registry import get_config
from bkit.ops.admin import AdminError, UnknownTargetError, _admin_event
from bkit.store import signal_rows
from bkit.store.engine import session_scope
from bkit.store.event_log import event_as_dict
from bkit.store.keys import find_key
from bkit.store.outcomes import store_outcome

HOW = ("retry", "flat")


def resolve_stuck(engine: Engine, strategy_name: str, exchange_name: str, symbol: str,
                  how: str, *, actor: str) -> str:
    """Resolve the stuck position of one key by `how` ("retry" | "flat"). Returns `how`.
    Raises `UnknownTargetError` (no such key) or `AdminError` (nothing stuck there)."""
    if how not in HOW:
        raise AdminError(f"resolve needs --retry or --flat, got {how!r}")
    now = datetime.now(UTC)
    when = floor_to_minute(now)
    with session_scope(engine) as session:
        key = find_key(session, strategy_name, exchange_name, symbol, for_update=True)
        if key is None or key.id is None:
            raise UnknownTargetError(f"no key {strategy_name} × {exchange_name} × {symbol}")
        record = signal_rows.live_signal(session, key.id, for_update=True)
        row = None if record is None else signal_rows.to_core(record)
        if row is None or row.state != "closing" or not row.stuck:
            state = "no live signal" if row is None else f"signal {row.id} is {row.state}"
            raise AdminError(f"{strategy_name} × {exchange_name} × {symbol}: nothing stuck "
                             f"to resolve ({state})")
        ctx = KeyContext(key.symbol, key.strategy_name, key.exchange_name)
        if how == "retry":
            outcome = retry_stuck(ctx, row, when)
        else:
            outcome = close_as_gone(ctx, row, when, get_config(),
                                    f"operator {actor} says the account no longer holds it",
                                    finished=key.status == "draining")
        added, intent_ids = store_outcome(session, key, record, outcome, when, now, actor[:96])
        audit = _admin_event(key, actor, f"resolve {how} of stuck signal {row.id}", now,
                             action="resolve", signal_id=row.id, how=how)
        session.add(audit)
        session.flush()
        dispatched = [event_as_dict(r) for r in [*added, audit]]
    events.dispatch(dispatched)
    if intent_ids:
        from bkit.runtime import enqueue_submit

        for intent_id in intent_ids:
            # if the broker is unreachable the relay sends it: the intent is in the outbox
            with contextlib.suppress(Exception):
                enqueue_submit(intent_id)
    return how
