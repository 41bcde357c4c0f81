"""The `Live` facade (SPEC §1): run, background, stop, tick, commands, list, data, reports.

Ticks happen in workers (`celery -A bkit worker -B`) or in-process through `Live.tick`; both
run `bkit.ticking.run_tick`. Everything `Live` reports is read from the database, so it sees
the work of every process.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bkit.backtest import commands as backtest_commands
from bkit.broker.registry import broker_for
from bkit.clock import SystemClock
from bkit.commit_api import PositionCommandsApi
from bkit.core.errors import BkitError
from bkit.core.registry import REGISTRY, get_config
from bkit.core.results import RUN_ACTIONS, TickResult
from bkit.core.running_statistics import statistics_from
from bkit.core.statistics import ClosedTrade, LiveStatistics, ReportRow
from bkit.pricing import tick_price
from bkit.report.markdown import render_markdown_report
from bkit.runtime import enqueue_submit
from bkit.store import signal_rows
from bkit.store.closed_trades import closed_trades, key_statistics
from bkit.store.commands import command_status, queue_command
from bkit.store.engine import get_engine, session_scope
from bkit.store.event_log import event_as_dict, events_after, last_event_id, report_rows
from bkit.store.keys import ensure_key, find_key, set_command, set_status
from bkit.store.schema_check import ensure_schema
from bkit.store.tables import StrategySymbol
from bkit.ticking import TickEnv, bucket_of, minute_of, run_tick

#: A market symbol as keys store it (the column holds 64 characters).
_SYMBOL = re.compile(r"^[^\s\x00-\x1f\x7f]{1,64}$")


def _no_key(symbol: str, strategy_name: str, exchange_name: str) -> ValueError:
    return ValueError(f"no live key {strategy_name}/{exchange_name}/{symbol}; "
                      "start it with Live.run or Live.background first")


class LiveApi(PositionCommandsApi):
    """Singleton behind `bkit.Live`."""

    def __init__(self) -> None:
        self._env: TickEnv | None = None
        self._lock = threading.Lock()

    # --- plumbing ---------------------------------------------------------------------------
    def _engine(self) -> Any:
        engine = get_engine()
        ensure_schema(engine)
        return engine

    def _check_names(self, strategy_name: str, exchange_name: str) -> None:
        REGISTRY.strategy(strategy_name)  # raises UnknownNameError naming it
        REGISTRY.exchange(exchange_name)

    def _check_key_names(self, symbol: str, strategy_name: str, exchange_name: str) -> None:
        if not isinstance(symbol, str) or not _SYMBOL.match(symbol):
            raise ValueError(f"symbol must be 1-64 printable characters without spaces, "
                             f"got {symbol!r}")
        self._check_names(strategy_name, exchange_name)

    def _key_id(self, symbol: str, strategy_name: str, exchange_name: str,
                *, create: bool = True) -> int:
        self._check_key_names(symbol, strategy_name, exchange_name)
        engine = self._engine()
        if create:
            return ensure_key(engine, strategy_name, exchange_name, symbol)
        with session_scope(engine) as session:
            key = find_key(session, strategy_name, exchange_name, symbol)
        if key is None or key.id is None:
            raise _no_key(symbol, strategy_name, exchange_name)
        return key.id

    def _tick_env(self) -> TickEnv:
        with self._lock:
            if self._env is None or self._env.engine is not get_engine():
                from bkit.settings import get_settings

                settings = get_settings()
                self._env = TickEnv(engine=self._engine(), clock=SystemClock(),
                                    lease_seconds=settings.lease_seconds,
                                    brokers=broker_for, enqueue_order=enqueue_submit,
                                    history_days=settings.tick_history_days)
            return self._env

    def _start(self, symbol: str, strategy_name: str, exchange_name: str) -> int:
        key_id = self._key_id(symbol, strategy_name, exchange_name)
        engine = self._engine()
        with session_scope(engine) as session:
            status = session.get(StrategySymbol, key_id).status  # type: ignore[union-attr]
        if status in ("disabled", "draining"):
            set_status(engine, [key_id], "enabled", actor="Live.run")
        return key_id

    # --- SPEC §1 ----------------------------------------------------------------------------
    def tick(self, symbol: str, strategy_name: str, exchange_name: str,
             when: datetime) -> TickResult | None:
        """One tick at `when` (floored to the minute), synchronously, in this process, with the
        same code as the worker. None if this minute was already ticked for the key."""
        key_id = self._key_id(symbol, strategy_name, exchange_name)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        env = self._tick_env()
        bucket = bucket_of(when)
        result = run_tick(env, key_id, bucket)
        if result is None:
            return self._stopped_idle(env, key_id, bucket)
        return result

    def _stopped_idle(self, env: TickEnv, key_id: int, bucket: int) -> TickResult | None:
        """SPEC §6: a stopped key with nothing live is `idle` (§4 step 4), not None; None
        stays for a minute already ticked (or a tick that failed: its error event says why)."""
        with session_scope(env.engine) as session:
            key = session.get(StrategySymbol, key_id)
            if key is None or key.status != "disabled" or key.last_bucket >= bucket:
                return None
            if signal_rows.live_signal(session, key_id) is not None:
                return None
            symbol, strategy_name, exchange_name = key.symbol, key.strategy_name, \
                key.exchange_name
        when = minute_of(bucket)
        try:
            price = tick_price(REGISTRY.exchange(exchange_name), symbol, when, get_config())
        except BkitError:
            return None
        return TickResult("idle", symbol, strategy_name, exchange_name, price, when)

    def run(self, symbol: str, strategy_name: str, exchange_name: str, *,
            poll_seconds: float = 0.25) -> Iterator[TickResult]:
        """Yield `opened`, `closed` and `cancelled` results of the key as workers (or
        `Live.tick`) produce them, in any process. Ends after a stop has finished."""
        key_id = self._start(symbol, strategy_name, exchange_name)
        engine = self._engine()
        with session_scope(engine) as session:
            after = last_event_id(session)
        while True:
            with session_scope(engine) as session:
                rows = [event_as_dict(r) for r in events_after(
                    session, after, key_id=key_id, kinds=("signal", "done"))]
            for row in rows:
                after = row["id"]
                if row["kind"] == "done":
                    return
                if row["action"] in RUN_ACTIONS:
                    yield TickResult.from_dict(row["payload"])
            if not rows:
                time.sleep(poll_seconds)

    def background(self, symbol: str, strategy_name: str, exchange_name: str
                   ) -> Callable[[], None]:
        """Run the key in the background (workers tick it; listeners get its events) and
        return `cancel()`, which stops it: no new signals, an open position runs to its close,
        then `listen_done_live` fires once."""
        from bkit import events

        self._start(symbol, strategy_name, exchange_name)
        events._ensure_follower()

        def cancel() -> None:
            self.stop(symbol, strategy_name, exchange_name)
        return cancel

    def stop(self, symbol: str, strategy_name: str, exchange_name: str) -> None:
        """No new signals; a scheduled entry is cancelled (user) on the next tick; an open
        position keeps being monitored until TP, SL or time. Not "close now"."""
        key_id = self._key_id(symbol, strategy_name, exchange_name, create=False)
        set_status(self._engine(), [key_id], "draining", actor="Live.stop")

    def close_position(self, symbol: str, strategy_name: str, exchange_name: str) -> None:
        """Close the open position at market on the next tick (close reason `closed`)."""
        key_id = self._key_id(symbol, strategy_name, exchange_name, create=False)
        set_command(self._engine(), key_id, "close_position")

    # --- position commands (SPEC §11, `PositionCommandsApi.commit_*`): applied on the key's
    # next tick, at its price
    def command_status(self, command_id: int) -> tuple[str, str | None]:
        """(pending | accepted | refused, the message) of a position command. With a broker
        a partial or a DCA stays `accepted` while its order is at the venue, then becomes
        `filled` (what filled, at what average price) or `refused` (the venue's reason)."""
        in_backtest = backtest_commands.status(command_id)
        if in_backtest is not None:
            return in_backtest
        return command_status(self._engine(), command_id)

    def _commit(self, symbol: str, strategy_name: str, exchange_name: str, name: str,
                value: float | None, actor: str = "Live") -> int:
        # Called from a callback of a backtest running on this thread: the command goes to
        # the backtest's key (applied at its next minute), never to the database (SPEC §12).
        routed = backtest_commands.route(symbol, strategy_name, exchange_name, name, value)
        if routed is not None:
            return routed
        key_id = self._key_id(symbol, strategy_name, exchange_name, create=False)
        return queue_command(self._engine(), key_id, name, value, actor=actor)

    def cancel_scheduled(self, symbol: str, strategy_name: str, exchange_name: str) -> None:
        """Cancel a resting (scheduled) entry on the next tick (cancel reason `user`)."""
        key_id = self._key_id(symbol, strategy_name, exchange_name, create=False)
        set_command(self._engine(), key_id, "cancel_scheduled")

    def list(self) -> list[dict[str, Any]]:
        """Every key with its status and live signal (id, state) if any."""
        engine = self._engine()
        with session_scope(engine) as session:
            keys = list(session.execute(select(StrategySymbol).order_by(StrategySymbol.id))
                        .scalars())
            out = []
            for key in keys:
                assert key.id is not None
                live = signal_rows.live_signal(session, key.id)
                out.append({"id": key.id, "symbol": key.symbol,
                            "strategy_name": key.strategy_name,
                            "exchange_name": key.exchange_name, "status": key.status,
                            "last_tick_at": key.last_tick_at,
                            "signal_id": None if live is None else live.signal_id,
                            "signal_state": None if live is None else live.state})
        return out

    def _closed_trades(self, key_id: int) -> list[ClosedTrade]:
        """Every closed trade of the key (reports that chart them), in close-time order."""
        with session_scope(self._engine()) as session:
            return closed_trades(session, key_id)

    def _report_rows(self, key_id: int, limit: int) -> list[ReportRow]:
        with session_scope(self._engine()) as session:
            return report_rows(session, key_id, limit)

    def _statistics_and_rows(self, symbol: str, strategy_name: str, exchange_name: str,
                             limit: int) -> tuple[LiveStatistics, list[ReportRow]]:
        """The key's statistics, from the running figures on its row (SPEC §13: one row, not
        every trade), and its newest `limit` report rows, in one unit of work."""
        self._check_key_names(symbol, strategy_name, exchange_name)
        with session_scope(self._engine()) as session:
            key = find_key(session, strategy_name, exchange_name, symbol)
            if key is None or key.id is None:
                raise _no_key(symbol, strategy_name, exchange_name)
            return (statistics_from(key_statistics(key)),
                    report_rows(session, key.id, limit))

    def get_data(self, symbol: str, strategy_name: str, exchange_name: str) -> dict[str, Any]:
        """Statistics of SPEC §9 over the key's closed trades, plus `event_list`."""
        stats, rows = self._statistics_and_rows(symbol, strategy_name, exchange_name,
                                                get_config().CC_MAX_LIVE_MARKDOWN_ROWS)
        data = asdict(stats)
        data["event_list"] = rows
        return data

    def get_report(self, symbol: str, strategy_name: str, exchange_name: str) -> str:
        """The Markdown report of SPEC §9 for the key."""
        limit = get_config().CC_MAX_LIVE_MARKDOWN_ROWS
        stats, rows = self._statistics_and_rows(symbol, strategy_name, exchange_name, limit)
        return render_markdown_report(f"{strategy_name} · {exchange_name} · {symbol}",
                                      rows, stats, max_rows=limit,
                                      generated_at=datetime.now(UTC))

    def dump(self, symbol: str, strategy_name: str, exchange_name: str,
             path: str | Path = "./dump/live") -> Path:
        """Write the Markdown report to `path/{strategy}_{exchange}_{symbol}.md` atomically."""
        report = self.get_report(symbol, strategy_name, exchange_name)
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in
                       f"{strategy_name}_{exchange_name}_{symbol}")
        target = folder / f"{safe}.md"
        temp = target.with_suffix(".md.tmp")
        temp.write_text(report, encoding="utf-8")
        temp.replace(target)
        return target


Live = LiveApi()
