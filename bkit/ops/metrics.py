"""Prometheus metrics of the trading engine, read from the database on every scrape.

`bkit metrics --port 9808` serves them (bound to 127.0.0.1 by default: the endpoint has no
authentication). Nothing is counted in process memory, so the figures are the same whichever
worker did the work and survive restarts. Per key (labels `strategy`, `exchange`, `symbol`):

- `bkit_key_status{status}` 1 for the key's current status (the other statuses are absent);
- `bkit_key_tick_lag_seconds`: how late the last tick was written, after its minute began
  (wall seconds);
- `bkit_key_last_tick_timestamp_seconds`: the last tick minute (market time, Unix seconds);
- `bkit_key_ticks_total`: completed ticks (the key row's counter);
- `bkit_key_ticks_failed_total`: ticks that were claimed and failed (error events of stage
  `tick`, e.g. no price): the next minute retries them;
- `bkit_key_ticks_skipped_total`: minutes between the key's first and last completed tick with
  no completed tick (worker outage, failure, beat drift, time spent disabled);
- `bkit_key_errors_total`, `bkit_key_last_error_timestamp_seconds`: error events of the key
  and the minute of the newest (market time, like the last tick);
- `bkit_key_open_positions`: positions open on the key (opening, opened, closing).

Global: `bkit_up` (the database answered), `bkit_halted`, `bkit_live_signals{state}`,
`bkit_order_intents{status}`, `bkit_positions_stuck`, `bkit_reconcile_differences` and
`bkit_scrape_duration_seconds`.

Each scrape reads the key rows (counters and last results live there, SPEC §13), the live
signals and the outbox's open part: its cost grows with keys and open orders, never with the
ticks ever made.

The per-key families are ~9,000 samples at 1,000 keys: building a prometheus_client sample
object for each and formatting it took about 70 % of a scrape, so bkit writes their sample
lines itself, one f-string each over the key rows of one Core select. prometheus_client still
writes everything else: the global families, the HELP / TYPE lines and sample names of the
per-key families (from a one-sample probe per family, so that the format negotiated with the
scraper, Prometheus text or OpenMetrics and its name escaping, stays its own), and it picks
that format from `Accept` (`choose_encoder`). `make_metrics_app` answers HTTP as
prometheus_client's own app does (`name[]`, gzip when accepted, OPTIONS, 405).
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import Engine, func, select
from sqlmodel import col

from bkit.core.signals import LIVE_STATES
from bkit.ops.defaults import LOOPBACK, METRICS_PORT
from bkit.ops.serving import serve_until, start_wsgi_server
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import is_halted
from bkit.store.tables import OrderIntent, SignalRecord, StrategySymbol

log = logging.getLogger("bkit.ops.metrics")
DEFAULT_ADDRESS = LOOPBACK
DEFAULT_PORT = METRICS_PORT
ORDER_INTENT_STATUSES = ("pending", "unknown", "open", "filled", "canceled", "expired",
                         "rejected", "stuck")
OPEN_POSITION_STATES = ("opening", "opened", "closing")
# Most values repeat between keys and scrapes (counts, the minute every key last ticked), so
# each is formatted once. Equal values share a spelling: only -0.0 could come out as 0.0,
# which Prometheus reads as the same number.
_go_float = lru_cache(maxsize=16_384)(floatToGoString)
Encoder = Callable[[Collector], bytes]


class KeyFamily(NamedTuple):
    """One per-key metric family: its name (without `_total`), type and HELP text."""

    name: str
    kind: str  # "gauge" | "counter"
    documentation: str

    @property
    def sample_name(self) -> str:
        """The name of the family's samples (counters' end in `_total`)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


# In the order their sample lines are written by `_key_sample_lines`.
KEY_FAMILIES = (
    KeyFamily("bkit_key_status", "gauge", "1 for the key's current status"),
    KeyFamily("bkit_key_tick_lag_seconds", "gauge",
              "Wall seconds between the last tick minute and its write"),
    KeyFamily("bkit_key_last_tick_timestamp_seconds", "gauge",
              "Last tick minute (market time, Unix s)"),
    KeyFamily("bkit_key_ticks", "counter", "Completed ticks"),
    KeyFamily("bkit_key_ticks_failed", "counter",
              "Claimed ticks that failed (retried next minute)"),
    KeyFamily("bkit_key_ticks_skipped", "counter",
              "Minutes between first and last completed tick without a completed tick"),
    KeyFamily("bkit_key_errors", "counter", "Error events"),
    KeyFamily("bkit_key_last_error_timestamp_seconds", "gauge",
              "Newest error of the key (Unix s)"),
    KeyFamily("bkit_key_open_positions", "gauge", "Open positions (opening, opened, closing)"),
)
_KEY_COLUMNS = (StrategySymbol.id, StrategySymbol.strategy_name, StrategySymbol.exchange_name,
                StrategySymbol.symbol, StrategySymbol.status, StrategySymbol.last_tick_lag_ms,
                StrategySymbol.last_tick_at, StrategySymbol.first_tick_at,
                StrategySymbol.ticks_total, StrategySymbol.ticks_failed,
                StrategySymbol.errors_total, StrategySymbol.last_error_at)


class _Snapshot:
    """One scrape's worth of rows, read in one session: the key rows as plain tuples of
    `_KEY_COLUMNS` (no ORM objects: 1,000 of them cost more than the query)."""

    def __init__(self, engine: Engine) -> None:
        signal_key, state = col(SignalRecord.key_id), col(SignalRecord.state)
        with session_scope(engine) as session:
            self.keys = [tuple(row) for row in session.execute(
                select(*(col(c) for c in _KEY_COLUMNS)).order_by(col(StrategySymbol.id)))]
            self.signals = [tuple(row) for row in session.execute(
                select(signal_key, state, func.count())
                .where(state.in_(sorted(LIVE_STATES))).group_by(signal_key, state))]
            self.intents: dict[str, int] = {row[0]: row[1] for row in session.execute(
                select(col(OrderIntent.status), func.count())
                .group_by(col(OrderIntent.status)))}
            self.halted = is_halted(session)
            self.stuck = int(session.execute(
                select(func.count()).select_from(SignalRecord)
                .where(state == "closing", col(SignalRecord.stuck).is_(True))).scalar() or 0)
            from bkit.reconcile import last_differences

            self.reconcile_differences = last_differences(session)


def _label_value(value: str) -> str:
    """A label value as both text formats write it: backslash, newline and double quote
    escaped (backslash first, so that the others' backslashes stay single)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _key_sample_lines(snap: _Snapshot, sample_names: list[str]) -> list[list[str]]:
    """The sample lines of each of `KEY_FAMILIES`, written with `sample_names` (as the
    negotiated format spells them). Labels are in name order (exchange, status, strategy,
    symbol), values formatted as prometheus_client formats them (`floatToGoString`)."""
    lines: list[list[str]] = [[] for _ in KEY_FAMILIES]
    status, lag, last_tick, done, failed, skipped, errors, last_error, open_positions = lines
    (status_n, lag_n, last_tick_n, done_n, failed_n, skipped_n, errors_n, last_error_n,
     open_n) = sample_names
    positions: dict[int, int] = {}
    for key_id, state, count in snap.signals:
        if state in OPEN_POSITION_STATES:
            positions[key_id] = positions.get(key_id, 0) + int(count)
    go = _go_float
    for (key_id, strategy, exchange, symbol, key_status, lag_ms, last_at, first_at, ticks,
         ticks_failed, errors_total, error_at) in snap.keys:
        head = f'{{exchange="{_label_value(exchange)}"'
        tail = f'strategy="{_label_value(strategy)}",symbol="{_label_value(symbol)}"}} '
        labels = f"{head},{tail}"
        # Only the current status: one sample per key, not one per status.
        status.append(f'{status_n}{head},status="{_label_value(key_status)}",{tail}1.0\n')
        if lag_ms is not None:
            lag.append(f"{lag_n}{labels}{go(lag_ms / 1000)}\n")
        if last_at is not None:
            last_tick.append(f"{last_tick_n}{labels}{go(last_at.timestamp())}\n")
        count = int(ticks or 0)
        done.append(f"{done_n}{labels}{go(count)}\n")
        failed.append(f"{failed_n}{labels}{go(int(ticks_failed or 0))}\n")
        span = 0 if first_at is None or last_at is None else \
            int((last_at - first_at).total_seconds() // 60) + 1
        skipped.append(f"{skipped_n}{labels}{go(max(0, span - count))}\n")
        errors.append(f"{errors_n}{labels}{go(int(errors_total or 0))}\n")
        if error_at is not None:
            last_error.append(f"{last_error_n}{labels}{go(error_at.timestamp())}\n")
        open_positions.append(f"{open_n}{labels}{go(positions.get(key_id, 0))}\n")
    return lines


class _Families(Collector):
    """Fixed metric families, for handing them to a prometheus_client encoder."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _spelling(family: KeyFamily, encoder: Encoder) -> tuple[str, str]:
    """(HELP and TYPE lines, sample name) of `family` as `encoder` writes them, read from
    its output for a one-sample probe of the family."""
    probe_type = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    probe = probe_type(family.name, family.documentation, value=0)
    help_line, type_line, sample_line, *_ = encoder(_Families([probe])).decode().split("\n")
    return f"{help_line}\n{type_line}\n", sample_line.rsplit(" ", 1)[0]


def _key_families_text(snap: _Snapshot, encoder: Encoder, names: set[str] | None) -> str:
    """The per-key families in `encoder`'s format; with `names`, only the families whose
    samples are named there and that have samples (as prometheus_client's `name[]`)."""
    spellings = [_spelling(family, encoder) for family in KEY_FAMILIES]
    lines = _key_sample_lines(snap, [name for _header, name in spellings])
    parts: list[str] = []
    for family, (header, _name), samples in zip(KEY_FAMILIES, spellings, lines, strict=True):
        if names is not None and (family.sample_name not in names or not samples):
            continue
        parts.append(header)
        parts.extend(samples)
    return "".join(parts)


class _GlobalFamilies(Collector):
    """The families that are not per key, over one scrape's rows (`None`: the database did
    not answer, and only `bkit_up 0` is exported)."""

    def __init__(self, snap: _Snapshot | None, read_seconds: float) -> None:
        self._snap = snap
        self._read_seconds = read_seconds

    def collect(self) -> Iterator[Metric]:
        snap = self._snap
        up = GaugeMetricFamily("bkit_up", "1 if the database answered this scrape, else 0")
        up.add_metric([], 0 if snap is None else 1)
        yield up
        if snap is None:
            return
        halted = GaugeMetricFamily("bkit_halted", "1 while the global kill switch is on")
        halted.add_metric([], 1 if snap.halted else 0)
        live = GaugeMetricFamily("bkit_live_signals", "Live signals by state", labels=["state"])
        by_state: dict[str, int] = dict.fromkeys(sorted(LIVE_STATES), 0)
        for _key_id, state, count in snap.signals:
            by_state[state] = by_state.get(state, 0) + int(count)
        for state, count in by_state.items():
            live.add_metric([state], count)
        intents = GaugeMetricFamily("bkit_order_intents", "Order intents by status",
                                    labels=["status"])
        for name in sorted(set(ORDER_INTENT_STATUSES) | set(snap.intents)):
            intents.add_metric([name], int(snap.intents.get(name, 0)))
        stuck = GaugeMetricFamily("bkit_positions_stuck", "Positions whose exit the venue "
                                  "keeps refusing (an operator must `bkit resolve` them)")
        stuck.add_metric([], snap.stuck)
        differences = GaugeMetricFamily("bkit_reconcile_differences", "Differences between "
                                        "bkit and the account at the last reconciliation")
        if snap.reconcile_differences is not None:
            differences.add_metric([], snap.reconcile_differences)
        duration = GaugeMetricFamily("bkit_scrape_duration_seconds",
                                     "Time spent reading the database for this scrape")
        duration.add_metric([], self._read_seconds)
        yield from (halted, live, intents, stuck, differences, duration)


def render_metrics(engine_factory: Callable[[], Engine] = get_engine,
                   accept_header: str | None = None, names: Iterable[str] | None = None
                   ) -> tuple[bytes, str]:
    """One scrape: (the page, its Content-Type) in the format `accept_header` asks for
    (Prometheus text 0.0.4 when it asks for none prometheus_client knows); `names` keeps
    only the samples of those names (the `name[]` query parameter)."""
    encoder, content_type = choose_encoder(accept_header or "")
    started = time.perf_counter()
    snap: _Snapshot | None
    try:
        snap = _Snapshot(engine_factory())
    except Exception as exc:  # a scrape must answer even when the database is down
        log.warning("metrics scrape: database unavailable: %s", exc)
        snap = None
    # Without names the registry would give `name[]` no collector to restrict (an empty page).
    registry = CollectorRegistry(support_collectors_without_names=True)
    registry.register(_GlobalFamilies(snap, time.perf_counter() - started))
    wanted = None if names is None else set(names)
    global_text = encoder(registry if wanted is None else registry.restricted_registry(wanted))
    if snap is None:
        return global_text, content_type
    # Before the global families: OpenMetrics ends the page with their `# EOF`.
    return _key_families_text(snap, encoder, wanted).encode() + global_text, content_type


def make_metrics_app(engine_factory: Callable[[], Engine] = get_engine
                     ) -> Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]:
    """The WSGI app of `/metrics`, answering as prometheus_client's own app does: GET on any
    path but `/favicon.ico` is the page (gzipped when the client accepts gzip), OPTIONS lists
    the methods, other methods get 405."""

    def metrics_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        headers: list[tuple[str, str]]
        if method == "OPTIONS":
            status, headers, body = "200 OK", [("Allow", "OPTIONS,GET")], b""
        elif method != "GET":
            status, headers = "405 Method Not Allowed", [("Allow", "OPTIONS,GET")]
            body = f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()
        elif environ["PATH_INFO"] == "/favicon.ico":  # what browsers ask for
            status, headers, body = "200 OK", [], b""
        else:
            params = parse_qs(environ.get("QUERY_STRING", ""))
            body, content_type = render_metrics(engine_factory, environ.get("HTTP_ACCEPT"),
                                                params.get("name[]"))
            status, headers = "200 OK", [("Content-Type", content_type)]
            if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING") or ""):
                body = gzip.compress(body)
                headers.append(("Content-Encoding", "gzip"))
        start_response(status, headers)
        return [body]

    return metrics_app


def start_metrics_server(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT,
                         engine_factory: Callable[[], Engine] = get_engine
                         ) -> tuple[WSGIServer, threading.Thread]:
    """Serve `/metrics` on `address:port` from a daemon thread (port 0 picks a free port:
    read it from `server.server_port`). Stop it with `server.shutdown()`."""
    return start_wsgi_server(make_metrics_app(engine_factory), address, port)


def serve_metrics(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT,
                  stop: threading.Event | None = None) -> None:
    """Serve until `stop` is set (the CLI sets it on SIGINT / SIGTERM)."""
    server, thread = start_metrics_server(address, port)
    serve_until(server, thread, stop or threading.Event())
