"""What the `bkit` admin script does, without the printing: keys (enable, disable, drain,
pause, resume), the global halt switch, status, and reports.

Every change is a database write that the next fan-out reads: nothing needs a restart. Every
change is recorded in the event log (kind `admin`) with who (`$USER@host` or `--actor`), when
and what. Names are checked before anything is written: an unknown strategy, exchange or
symbol raises `UnknownTargetError` and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from bkit.core.errors import BkitError, UnknownNameError
from bkit.core.registry import REGISTRY, ExchangeSchema, Registry, get_config
from bkit.core.signals import LIVE_STATES
from bkit.core.statistics import ClosedTrade, LiveStatistics, ReportRow, compute_statistics
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import KEY_STATUSES, find_key, set_status
from bkit.store.schema_check import ensure_schema
from bkit.store.tables import BkitSetting, EventRecord, SignalRecord, StrategySymbol

HALT_KEY = "halt"
#: ccxt's unified symbols: BASE/QUOTE, optionally :SETTLE (and -EXPIRY) for derivatives.
_SYMBOL_FORMAT = re.compile(r"^[A-Z0-9][A-Z0-9._]*/[A-Z0-9][A-Z0-9._]*(:[A-Z0-9]+(-[A-Z0-9]+)*)?$")


class AdminError(BkitError):
    """An admin operation was refused; nothing was changed."""


class UnknownTargetError(AdminError, UnknownNameError):
    """An unknown strategy, exchange, symbol or key was named; nothing was changed."""


@dataclass(frozen=True)
class KeyChange:
    """One key touched by an admin command: `before` is None when the key was created."""

    symbol: str
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class ChangeReport:
    """The outcome of one admin command over several symbols of one strategy × exchange."""

    strategy_name: str
    exchange_name: str
    status: str
    changes: tuple[KeyChange, ...]

    @property
    def changed_count(self) -> int:
        return sum(1 for change in self.changes if change.changed)


@dataclass(frozen=True)
class KeyStatus:
    """One key as `bkit status` shows it. Lag in ms, win rate and PnL in %."""

    key_id: int
    strategy_name: str
    exchange_name: str
    symbol: str
    status: str
    signal_id: str | None
    signal_state: str | None
    position: str | None
    last_tick_at: datetime | None
    last_tick_lag_ms: float | None
    last_error_at: datetime | None
    closed_trades: int
    win_count: int
    total_pnl: float
    #: Broker mode (SPEC §8): the sum of the closed trades' realised PnL (quote units, from
    #: fills and fees; None when no closed trade has one), the live position's amount held
    #: (base units) and whether its exit is stuck.
    realised_pnl: float | None = None
    amount: float | None = None
    stuck: bool = False
    #: The newest error of the key (its message, market minute) and whether the key is
    #: failing now (that error is newer than its last completed tick).
    last_error: str | None = None
    last_error_minute: datetime | None = None
    failing: bool = False

    @property
    def win_rate(self) -> float | None:
        """Winning closed trades / closed trades × 100 (%); None with no closed trade."""
        return None if not self.closed_trades else self.win_count / self.closed_trades * 100


@dataclass(frozen=True)
class StrategyInfo:
    """A registered strategy and its keys."""

    strategy_name: str
    interval: str
    risk_name: str | None
    note: str
    keys: tuple[KeyStatus, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class HaltState:
    """The global kill switch: `halted`, and who set or cleared it, when and why."""

    halted: bool
    actor: str | None = None
    at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class Report:
    """Everything a Markdown or HTML report renders, for one key or merged across keys."""

    title: str
    rows: list[ReportRow]
    trades: list[ClosedTrade]
    stats: LiveStatistics
    max_rows: int


def _engine(engine: Engine | None) -> Engine:
    engine = engine or get_engine()
    ensure_schema(engine)
    return engine


def load_registry() -> Registry:
    """Import the strategy modules of BKIT_STRATEGIES (once per process) and return the
    registry they filled. A broken module raises `StrategyImportError` naming it."""
    from bkit.strategy_modules import import_strategy_modules

    import_strategy_modules()
    return REGISTRY


def resolve_exchange(registry: Registry, exchange_name: str | None) -> str:
    """The exchange to act on: the one named, or the only one registered."""
    if exchange_name is not None:
        try:
            registry.exchange(exchange_name)
        except UnknownNameError as exc:
            raise UnknownTargetError(str(exc)) from None
        return exchange_name
    names = sorted(registry.exchanges)
    if len(names) == 1:
        return names[0]
    listed = ", ".join(names) or "none registered (check BKIT_STRATEGIES)"
    raise UnknownTargetError(f"pass --exchange NAME (registered exchanges: {listed})")


def check_strategy(registry: Registry, strategy_name: str) -> None:
    try:
        registry.strategy(strategy_name)
    except UnknownNameError as exc:
        hint = "" if registry.strategies else " (is BKIT_STRATEGIES set?)"
        raise UnknownTargetError(f"{exc}{hint}") from None


def exchange_symbols(schema: ExchangeSchema) -> set[str] | None:
    """The symbols an exchange is known to serve, or None when it cannot tell without I/O."""
    source = schema.source
    known = getattr(source, "known_symbols", None)
    if callable(known):
        return set(known())
    series = getattr(source, "series", None)
    if isinstance(series, dict) and series and getattr(source, "default", None) is None:
        return set(series)
    markets = getattr(source, "_markets", None)  # a CcxtExchange with markets already loaded
    if isinstance(markets, list) and markets:
        return {str(m.get("symbol")) for m in markets if isinstance(m, dict)}
    return None


def _check_symbols(symbols: Sequence[str]) -> list[str]:
    if not symbols:
        raise UnknownTargetError("name at least one symbol (or --all)")
    cleaned = []
    for symbol in symbols:
        if not isinstance(symbol, str) or not symbol.strip() or len(symbol) > 64 \
                or any(ch.isspace() for ch in symbol):
            raise UnknownTargetError(f"invalid symbol {symbol!r}")
        if symbol not in cleaned:
            cleaned.append(symbol)
    return cleaned


def _check_sizes(registry: Registry, strategy_name: str, exchange_name: str,
                 symbols: Sequence[str], explicit_cost: bool) -> None:
    from bkit.broker.registry import broker_for
    from bkit.core.orders import default_cost_problem

    if explicit_cost or registry.strategy(strategy_name).sizing_name is not None:
        return
    if broker_for(exchange_name) is None:
        return  # signals only: no order is ever sent
    config = get_config()
    problems = [p for p in (default_cost_problem(s, False, config.CC_POSITION_ENTRY_COST)
                            for s in symbols) if p]
    if problems:
        raise AdminError("refused: " + "; ".join(problems) + ". Enable with --explicit-cost "
                         "once every signal of the strategy sets `cost` in the quote coin")


def _admin_event(key: StrategySymbol | None, actor: str, message: str, now: datetime,
                 action: str | None = None, **payload: object) -> EventRecord:
    return EventRecord(key_id=None if key is None else key.id, kind="admin", action=action,
                       symbol=None if key is None else key.symbol,
                       strategy_name=None if key is None else key.strategy_name,
                       exchange_name=None if key is None else key.exchange_name,
                       message=f"{actor}: {message}", origin=actor[:96], created_at=now,
                       payload={"actor": actor, "at": now.isoformat(), **payload})


def enable_keys(strategy_name: str, symbols: Sequence[str], exchange_name: str | None = None,
                *, actor: str, engine: Engine | None = None,
                registry: Registry | None = None, explicit_cost: bool = False
                ) -> ChangeReport:
    """Create the keys as enabled, or re-enable existing ones (from disabled, draining or
    paused). Symbols the exchange is known not to serve are refused before any write, and so
    is a symbol quoted in a coin that is not a USD stablecoin when orders go to a broker and
    the strategy has no sizing, unless `explicit_cost` says its signals carry their own
    `cost` in that coin (SPEC §8: a default cost never becomes an absurd order)."""
    registry = registry or REGISTRY
    check_strategy(registry, strategy_name)
    exchange_name = resolve_exchange(registry, exchange_name)
    wanted = _check_symbols(symbols)
    served = exchange_symbols(registry.exchange(exchange_name))
    if served is not None:
        unknown = [s for s in wanted if s not in served]
        if unknown:
            raise UnknownTargetError(
                f"exchange {exchange_name!r} has no symbol {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(served))})")
    _check_sizes(registry, strategy_name, exchange_name, wanted, explicit_cost)
    engine = _engine(engine)
    with session_scope(engine) as session:  # a new key needs a real symbol name
        new = [s for s in wanted if find_key(session, strategy_name, exchange_name, s) is None]
    for symbol in new:
        if not _SYMBOL_FORMAT.match(symbol):
            raise UnknownTargetError(
                f"invalid symbol {symbol!r}: symbols are BASE/QUOTE in capitals, as ccxt "
                "writes them (BTC/USDT, XRP/ETH, BTC/USDT:USDT for a perpetual)")
    changes: list[KeyChange] = []
    existing: list[int] = []
    for symbol in wanted:
        now = datetime.now(UTC)
        try:
            with session_scope(engine) as session:
                key = find_key(session, strategy_name, exchange_name, symbol)
                if key is not None:
                    assert key.id is not None
                    existing.append(key.id)
                    changes.append(KeyChange(symbol, key.status, "enabled"))
                    continue
                key = StrategySymbol(strategy_name=strategy_name, exchange_name=exchange_name,
                                     symbol=symbol, status="enabled", created_at=now,
                                     updated_at=now)
                session.add(key)
                session.flush()
                session.add(_admin_event(key, actor, "created key (enabled)", now,
                                         **{"from": None, "to": "enabled"}))
                changes.append(KeyChange(symbol, None, "enabled"))
        except IntegrityError:  # created by another process meanwhile: enable that one
            with session_scope(engine) as session:
                key = find_key(session, strategy_name, exchange_name, symbol)
                assert key is not None and key.id is not None
                existing.append(key.id)
                changes.append(KeyChange(symbol, key.status, "enabled"))
    if existing:
        set_status(engine, existing, "enabled", actor=actor)
    return ChangeReport(strategy_name, exchange_name, "enabled", tuple(changes))


def _existing_keys(engine: Engine, strategy_name: str, exchange_name: str,
                   symbols: Sequence[str] | None) -> list[StrategySymbol]:
    with session_scope(engine) as session:
        keys = list(session.execute(select(StrategySymbol).where(
            col(StrategySymbol.strategy_name) == strategy_name,
            col(StrategySymbol.exchange_name) == exchange_name).order_by(col(StrategySymbol.id))
        ).scalars())
    if symbols is None:
        if not keys:
            raise UnknownTargetError(f"strategy {strategy_name!r} has no keys on exchange "
                                     f"{exchange_name!r}")
        return keys
    by_symbol = {key.symbol: key for key in keys}
    wanted = _check_symbols(symbols)
    unknown = [s for s in wanted if s not in by_symbol]
    if unknown:
        listed = ", ".join(sorted(by_symbol)) or "none"
        raise UnknownTargetError(
            f"no key {strategy_name}/{exchange_name} for symbol "
            f"{', '.join(map(repr, unknown))} (existing: {listed}); create it with bkit enable")
    return [by_symbol[s] for s in wanted]


def _live_signals(engine: Engine, key_ids: list[int]) -> dict[int, SignalRecord]:
    with session_scope(engine) as session:
        rows = session.execute(select(SignalRecord).where(
            col(SignalRecord.key_id).in_(key_ids),
            col(SignalRecord.state).in_(sorted(LIVE_STATES)))).scalars()
        return {row.key_id: row for row in rows}


def change_status(strategy_name: str, symbols: Sequence[str] | None, status: str,
                  exchange_name: str | None = None, *, actor: str, force: bool = False,
                  only_from: Sequence[str] | None = None, engine: Engine | None = None,
                  registry: Registry | None = None) -> ChangeReport:
    """Set existing keys to `status` (None symbols = every key of the strategy on the exchange).

    `disabled` stops ticking at once, so it is refused for a key with an open position or a
    scheduled entry unless `force` (use `draining` to let the position run to its close).
    `only_from` limits the change to keys in those statuses (`resume` only resumes paused keys).
    """
    if status not in KEY_STATUSES:
        raise AdminError(f"status must be one of {', '.join(KEY_STATUSES)}, got {status!r}")
    registry = registry or REGISTRY
    check_strategy(registry, strategy_name)
    exchange_name = resolve_exchange(registry, exchange_name)
    engine = _engine(engine)
    keys = _existing_keys(engine, strategy_name, exchange_name, symbols)
    if status == "disabled" and not force:
        live = _live_signals(engine, [k.id for k in keys if k.id is not None])
        busy = [f"{k.symbol} ({live[k.id].state} {live[k.id].position} {live[k.id].signal_id})"
                for k in keys if k.id in live and k.status != "disabled"]
        if busy:
            raise AdminError(
                f"refusing to disable keys with a live signal: {', '.join(busy)}. Disabling "
                "stops monitoring it; use `bkit drain` to let it run to its close, or "
                "--force to disable anyway")
    targets = {k.id for k in keys if k.id is not None
               and (only_from is None or k.status in only_from)}
    set_status(engine, sorted(targets), status, actor=actor)
    changes = tuple(KeyChange(k.symbol, k.status, status if k.id in targets else k.status)
                    for k in keys)
    return ChangeReport(strategy_name, exchange_name, status, changes)


def key_statuses(strategy_name: str | None = None, exchange_name: str | None = None,
                 *, engine: Engine | None = None) -> list[KeyStatus]:
    """Every key (optionally of one strategy / exchange) with its live signal, last tick,
    lag and closed-trade figures. Read from the database only: no registry needed."""
    engine = _engine(engine)
    with session_scope(engine) as session:
        name, exchange = col(StrategySymbol.strategy_name), col(StrategySymbol.exchange_name)
        stmt = select(StrategySymbol).order_by(name, exchange, col(StrategySymbol.symbol))
        if strategy_name is not None:
            stmt = stmt.where(name == strategy_name)
        if exchange_name is not None:
            stmt = stmt.where(exchange == exchange_name)
        keys = list(session.execute(stmt).scalars())
        state = col(SignalRecord.state)
        live = {row.key_id: row for row in session.execute(select(SignalRecord).where(
            state.in_(sorted(LIVE_STATES)))).scalars()}
    # Closed-trade totals, the newest error and its minute are on the key rows (SPEC §13):
    # one row per key, however long bkit has run.
    out = []
    for key in keys:
        assert key.id is not None
        signal = live.get(key.id)
        out.append(KeyStatus(
            key_id=key.id, strategy_name=key.strategy_name, exchange_name=key.exchange_name,
            symbol=key.symbol, status=key.status,
            signal_id=None if signal is None else signal.signal_id,
            signal_state=None if signal is None else signal.state,
            position=None if signal is None else signal.position,
            last_tick_at=key.last_tick_at, last_tick_lag_ms=key.last_tick_lag_ms,
            last_error_at=key.last_error_at, closed_trades=int(key.closed_total or 0),
            win_count=int(key.closed_wins or 0), total_pnl=float(key.closed_pnl_total or 0.0),
            realised_pnl=key.closed_realised_total,
            amount=None if signal is None else signal.amount,
            stuck=bool(signal is not None and signal.stuck),
            last_error=key.last_error_message,
            last_error_minute=key.last_error_at,
            failing=key.last_error_message is not None and key.last_error_at is not None and (
                key.last_tick_at is None or key.last_error_at >= key.last_tick_at)))
    return out


def queue_position_command(strategy_name: str, symbol: str, exchange_name: str | None,
                           name: str, value: float | None, *, actor: str,
                           engine: Engine | None = None,
                           registry: Registry | None = None) -> tuple[int, str]:
    """Queue a position command (SPEC §11) for an existing key, audited in the event log.
    Returns (command id, exchange name)."""
    from bkit.store.commands import queue_command

    registry = registry or load_registry()
    check_strategy(registry, strategy_name)
    exchange_name = resolve_exchange(registry, exchange_name)
    engine = _engine(engine)
    with session_scope(engine) as session:
        key = find_key(session, strategy_name, exchange_name, symbol)
        if key is None or key.id is None:
            raise UnknownTargetError(f"no key {strategy_name} × {exchange_name} × {symbol}")
        key_id = key.id
    command_id = queue_command(engine, key_id, name, value, actor=actor)
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        key = session.get(StrategySymbol, key_id)
        session.add(_admin_event(key, actor, f"queued {name}"
                                 f"{'' if value is None else f' {value:g}'}", now,
                                 action="command", command_id=command_id, command=name,
                                 value=value))
    return command_id, exchange_name


@dataclass(frozen=True)
class ErrorRow:
    """One recorded error (or `exit` alarm) for `bkit errors`."""

    at: datetime
    kind: str
    strategy_name: str | None
    exchange_name: str | None
    symbol: str | None
    message: str


def recent_errors(strategy_name: str | None = None, symbol: str | None = None, *,
                  since: datetime | None = None, limit: int = 50,
                  engine: Engine | None = None) -> list[ErrorRow]:
    """The newest errors and `exit` alarms, newest first (read through the (kind, id) index:
    bounded by `limit`, not by the history)."""
    engine = _engine(engine)
    kind = col(EventRecord.kind)
    stmt = select(EventRecord).where(kind.in_(["error", "exit"]))
    if strategy_name is not None:
        stmt = stmt.where(EventRecord.strategy_name == strategy_name)
    if symbol is not None:
        stmt = stmt.where(EventRecord.symbol == symbol)
    if since is not None:
        stmt = stmt.where(col(EventRecord.created_at) >= since)
    stmt = stmt.order_by(col(EventRecord.id).desc()).limit(max(1, limit))
    with session_scope(engine) as session:
        return [ErrorRow(r.created_at, r.kind, r.strategy_name, r.exchange_name, r.symbol,
                         r.message) for r in session.execute(stmt).scalars()]


def strategies_overview(*, engine: Engine | None = None,
                        registry: Registry | None = None) -> list[StrategyInfo]:
    """Registered strategies (after importing BKIT_STRATEGIES) with their keys."""
    registry = registry or REGISTRY
    keys = key_statuses(engine=engine)
    return [StrategyInfo(name, schema.interval, schema.risk_name, schema.note,
                         tuple(k for k in keys if k.strategy_name == name))
            for name, schema in sorted(registry.strategies.items())]


def set_halt(halted: bool, *, actor: str, reason: str = "",
             engine: Engine | None = None) -> bool:
    """Set (`halted`) or clear the global kill switch `BkitSetting(key="halt")` and record
    who, when and why in the event log. Returns False when it was already in that state."""
    engine = _engine(engine)
    value = "1" if halted else "0"
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        row = session.get(BkitSetting, HALT_KEY, with_for_update=True)
        if (row.value if row is not None else "0") == value:
            return False
        if row is None:
            session.add(BkitSetting(key=HALT_KEY, value=value, updated_at=now))
        else:
            row.value, row.updated_at = value, now
        action = "halt" if halted else "unhalt"
        what = "halted trading" if halted else "resumed trading (unhalt)"
        session.add(_admin_event(None, actor, f"{what}{': ' + reason if reason else ''}", now,
                                 action=action, halted=halted, reason=reason))
    return True


def halt_state(*, engine: Engine | None = None) -> HaltState:
    """Whether trading is halted, with the actor, time and reason of the last switch."""
    engine = _engine(engine)
    with session_scope(engine) as session:
        row = session.get(BkitSetting, HALT_KEY)
        last = session.execute(select(EventRecord).where(
            col(EventRecord.kind) == "admin", col(EventRecord.action).in_(("halt", "unhalt")))
            .order_by(col(EventRecord.id).desc()).limit(1)).scalars().first()
    halted = row is not None and row.value == "1"
    if last is None:
        return HaltState(halted, at=None if row is None else row.updated_at)
    payload = last.payload or {}
    return HaltState(halted, actor=payload.get("actor"), at=last.created_at,
                     reason=str(payload.get("reason") or ""))


def build_report(strategy_name: str, symbols: Sequence[str] | None = None,
                 exchange_name: str | None = None, *,
                 registry: Registry | None = None) -> tuple[Report, list[Report]]:
    """The report merged across the keys (newest rows of every symbol, all their closed
    trades, statistics over them) and one report per key. Reads the settings' database,
    like `Live.get_report`."""
    from bkit.live import Live

    registry = registry or REGISTRY
    check_strategy(registry, strategy_name)
    exchange_name = resolve_exchange(registry, exchange_name)
    keys = _existing_keys(_engine(None), strategy_name, exchange_name, symbols)
    limit = get_config().CC_MAX_LIVE_MARKDOWN_ROWS
    per_key = []
    for key in keys:
        assert key.id is not None
        trades = Live._closed_trades(key.id)
        per_key.append(Report(f"{strategy_name} · {exchange_name} · {key.symbol}",
                              Live._report_rows(key.id, limit), trades,
                              compute_statistics(trades), limit))
    if len(per_key) == 1:
        return per_key[0], per_key
    rows = sorted((r for rep in per_key for r in rep.rows), key=lambda r: r.timestamp)[-limit:]
    trades = sorted((t for rep in per_key for t in rep.trades), key=lambda t: t.closed_at)
    title = f"{strategy_name} · {exchange_name} · {', '.join(k.symbol for k in keys)}"
    return Report(title, rows, trades, compute_statistics(trades), limit), per_key


def render_report(report: Report, *, html: bool = False) -> str:
    """The report as Markdown (SPEC §9) or as one self-contained HTML page."""
    from bkit.report import render_html_report, render_markdown_report

    now = datetime.now(UTC)
    if html:
        return render_html_report(report.title, report.rows, report.stats, report.trades,
                                  generated_at=now, max_rows=report.max_rows)
    return render_markdown_report(report.title, report.rows, report.stats,
                                  max_rows=report.max_rows, generated_at=now)
