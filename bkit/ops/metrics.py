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
`bkit_order_intents{status}` and `bkit_scrape_duration_seconds`.

Each scrape reads the key rows (counters and last results live there, SPEC §13), the live
signals and the outbox's open part: its cost grows with keys and open orders, never with the
ticks ever made.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlmodel import col

from bkit.core.signals import LIVE_STATES
from bkit.ops.serving import serve_until
from bkit.store.engine import get_engine, session_scope
from bkit.store.keys import is_halted
from bkit.store.tables import OrderIntent, SignalRecord, StrategySymbol

log = logging.getLogger("bkit.ops.metrics")
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 9808
KEY_LABELS = ("strategy", "exchange", "symbol")
ORDER_INTENT_STATUSES = ("pending", "unknown", "open", "filled", "canceled", "expired",
                         "rejected", "stuck")
OPEN_POSITION_STATES = ("opening", "opened", "closing")


class _Snapshot:
    """One scrape's worth of rows, read in one session."""

    def __init__(self, engine: Engine) -> None:
        signal_key, state = col(SignalRecord.key_id), col(SignalRecord.state)
        with session_scope(engine) as session:
            self.keys = list(session.execute(
                select(StrategySymbol).order_by(col(StrategySymbol.id))).scalars())
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


class BkitCollector(Collector):
    """A Prometheus collector that reads the engine's state from the database per scrape."""

    def __init__(self, engine_factory: Callable[[], Engine] = get_engine) -> None:
        self._engine_factory = engine_factory

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        up = GaugeMetricFamily("bkit_up", "1 if the database answered this scrape, else 0")
        try:
            snap = _Snapshot(self._engine_factory())
        except Exception as exc:  # a scrape must answer even when the database is down
            log.warning("metrics scrape: database unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._key_metrics(snap)
        yield from self._global_metrics(snap)
        duration = GaugeMetricFamily("bkit_scrape_duration_seconds",
                                     "Time spent reading the database for this scrape")
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def _key_metrics(self, snap: _Snapshot) -> Iterator[Metric]:
        status = GaugeMetricFamily("bkit_key_status", "1 for the key's current status",
                                   labels=[*KEY_LABELS, "status"])
        lag = GaugeMetricFamily("bkit_key_tick_lag_seconds",
                                "Wall seconds between the last tick minute and its write",
                                labels=KEY_LABELS)
        last_tick = GaugeMetricFamily("bkit_key_last_tick_timestamp_seconds",
                                      "Last tick minute (market time, Unix s)", labels=KEY_LABELS)
        done = CounterMetricFamily("bkit_key_ticks", "Completed ticks", labels=KEY_LABELS)
        failed = CounterMetricFamily("bkit_key_ticks_failed",
                                     "Claimed ticks that failed (retried next minute)",
                                     labels=KEY_LABELS)
        skipped = CounterMetricFamily("bkit_key_ticks_skipped",
                                      "Minutes between first and last completed tick without "
                                      "a completed tick", labels=KEY_LABELS)
        errors = CounterMetricFamily("bkit_key_errors", "Error events", labels=KEY_LABELS)
        last_error = GaugeMetricFamily("bkit_key_last_error_timestamp_seconds",
                                       "Newest error of the key (Unix s)", labels=KEY_LABELS)
        open_positions = GaugeMetricFamily("bkit_key_open_positions",
                                           "Open positions (opening, opened, closing)",
                                           labels=KEY_LABELS)
        positions: dict[int, int] = {}
        for key_id, state, count in snap.signals:
            if state in OPEN_POSITION_STATES:
                positions[key_id] = positions.get(key_id, 0) + int(count)
        for key in snap.keys:
            labels = [key.strategy_name, key.exchange_name, key.symbol]
            # Only the current status: one sample per key, not one per status (a scrape of
            # 1,000 keys spends most of its time formatting samples).
            status.add_metric([*labels, key.status], 1)
            if key.last_tick_lag_ms is not None:
                lag.add_metric(labels, key.last_tick_lag_ms / 1000)
            if key.last_tick_at is not None:
                last_tick.add_metric(labels, key.last_tick_at.timestamp())
            count = int(key.ticks_total or 0)
            done.add_metric(labels, count)
            first, last = key.first_tick_at, key.last_tick_at
            span = 0 if first is None or last is None else \
                int((last - first).total_seconds() // 60) + 1
            skipped.add_metric(labels, max(0, span - count))
            failed.add_metric(labels, int(key.ticks_failed or 0))
            errors.add_metric(labels, int(key.errors_total or 0))
            if key.last_error_at is not None:
                last_error.add_metric(labels, key.last_error_at.timestamp())
            open_positions.add_metric(labels, positions.get(key.id or -1, 0))
        yield from (status, lag, last_tick, done, failed, skipped, errors, last_error,
                    open_positions)

    def _global_metrics(self, snap: _Snapshot) -> Iterator[Metric]:
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
        yield from (halted, live, intents, stuck, differences)


def make_registry(engine_factory: Callable[[], Engine] = get_engine) -> CollectorRegistry:
    """A registry holding only the bkit collector (no process metrics of the exporter)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BkitCollector(engine_factory))
    return registry


def start_metrics_server(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT,
                         engine_factory: Callable[[], Engine] = get_engine
                         ) -> tuple[WSGIServer, threading.Thread]:
    """Serve `/metrics` on `address:port` from a daemon thread (port 0 picks a free port:
    read it from `server.server_port`). Stop it with `server.shutdown()`."""
    return start_http_server(port, addr=address, registry=make_registry(engine_factory))


def serve_metrics(address: str = DEFAULT_ADDRESS, port: int = DEFAULT_PORT,
                  stop: threading.Event | None = None) -> None:
    """Serve until `stop` is set (the CLI sets it on SIGINT / SIGTERM)."""
    server, thread = start_metrics_server(address, port)
    serve_until(server, thread, stop or threading.Event())
