"""The notification scan end to end: events written by `Live.tick` (paper exchange) and by
the admin commands, on PostgreSQL and on SQLite, sent by apprise to a local webhook."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bkit.core.results import Notice
from bkit.live import Live
from bkit.notify import AppriseSender, scan_events
from bkit.notify.scan import CURSOR_KEY, OUTBOX_KEY
from bkit.notify.sender import notify_targets
from bkit.ops.admin import set_halt
from bkit.store.engine import get_engine, session_scope
from bkit.store.event_log import notice_event
from bkit.store.migrations import upgrade
from bkit.store.tables import BkitSetting, SignalRecord
from tests.integration.conftest import Runtime
from tests.notify.conftest import Webhook

pytestmark = pytest.mark.integration
START = datetime(2019, 10, 11, 1, 0, tzinfo=UTC)
SECRET = "sEcReT-9f8e7d6c5b4a"
API_KEY = "AK-0123456789abcdef"


class Now:
    """A wall clock the test moves by hand (epoch seconds)."""

    def __init__(self) -> None:
        self.value = 1_900_000_000.0

    def __call__(self) -> float:
        return self.value


def _sender(webhook: Webhook, path: str = "") -> AppriseSender:
    environ = {"BKIT_NOTIFY_URLS": webhook.url(path)}
    return AppriseSender(notify_targets(environ), environ)


def _start(sender: AppriseSender, now: Now) -> None:
    engine = get_engine()
    upgrade(engine)
    report = scan_events(engine, sender, now=now)  # the first scan only places the cursor
    assert report.queued == 0


def _trade_until_closed() -> SignalRecord:
    for minute in range(60):
        result = Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(minutes=minute))
        if result is not None and result.action == "closed":
            break
    else:
        raise AssertionError("the test strategy never closed a trade")
    with session_scope(get_engine()) as session:
        return session.execute(select(SignalRecord).where(
            SignalRecord.state == "closed")).scalars().one()


def test_an_open_and_a_close_become_webhooks_once(in_process_runtime: Runtime,
                                                  webhook: Webhook) -> None:
    now, sender = Now(), _sender(webhook)
    _start(sender, now)
    closed = _trade_until_closed()
    report = scan_events(get_engine(), sender, now=now)
    assert report.queued == 2 and report.delivered == 2 and report.failed == 0
    opened_msg, closed_msg = webhook.received
    assert opened_msg["title"] == "Opened long XRP/ETH · it-long@paper"
    assert f"signal {closed.signal_id}" in opened_msg["message"]
    assert f"entry {closed.price_open:.10g}" in opened_msg["message"]
    assert closed_msg["title"] == (f"Closed long XRP/ETH · it-long@paper: "
                                   f"{closed.pnl_percentage:+.2f} % ({closed.close_reason})")
    assert f"({closed.pnl_cost:+.6g} ETH" in closed_msg["message"]
    assert closed_msg["type"] in ("success", "warning")
    # A later scan sends nothing again; neither does a scan that re-reads the whole log.
    assert scan_events(get_engine(), sender, now=now).delivered == 0
    with session_scope(get_engine()) as session:
        row = session.get(BkitSetting, CURSOR_KEY)
        assert row is not None
        row.value = json.dumps({"after": 0, "gaps": {}})
    again = scan_events(get_engine(), sender, now=now)
    assert again.read == again.cursor > 2 and again.queued == 0 and again.delivered == 0
    assert len(webhook.received) == 2


def test_a_failed_send_is_retried_with_backoff(in_process_runtime: Runtime,
                                               webhook: Webhook,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = "hooktoken-5e4d3c2b1a"  # a token in the URL must never reach a log line
    now, sender = Now(), _sender(webhook, token)
    _start(sender, now)
    assert Live.tick("XRP/ETH", "it-long", "paper", START).action == "opened"  # type: ignore[union-attr]
    webhook.fail_next = 1
    first = scan_events(get_engine(), sender, now=now)
    assert (first.queued, first.delivered, first.failed) == (1, 0, 1)
    assert scan_events(get_engine(), sender, now=now).failed == 0  # not due yet
    assert webhook.attempts == 1
    now.value += 16  # past the first backoff (15 s)
    second = scan_events(get_engine(), sender, now=now)
    assert (second.delivered, second.failed) == (1, 0)
    assert webhook.titles() == ["Opened long XRP/ETH · it-long@paper"]
    assert webhook.paths == [f"/{token}"]
    assert token not in caplog.text
    with session_scope(get_engine()) as session:
        outbox = json.loads(session.get(BkitSetting, OUTBOX_KEY).value)  # type: ignore[union-attr]
    assert outbox["pending"] == [] and len(outbox["sent"]) == 1


def test_secrets_never_leave_and_halt_exit_and_errors_are_told(
        in_process_runtime: Runtime, webhook: Webhook, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BKIT_BINANCE_API_KEY", API_KEY)
    monkeypatch.setenv("BKIT_BINANCE_SECRET", SECRET)
    now = Now()
    environ = {"BKIT_BINANCE_API_KEY": API_KEY, "BKIT_BINANCE_SECRET": SECRET,
               "BKIT_NOTIFY_URLS": webhook.url()}
    sender = AppriseSender(notify_targets(environ), environ)
    _start(sender, now)
    engine = get_engine()
    set_halt(True, actor="cli:ops", reason=f"key {API_KEY} leaked?", engine=engine)
    set_halt(False, actor="cli:ops", engine=engine)
    with session_scope(engine) as session:  # the exit notice a venue error would write
        session.add(notice_event(None, Notice(
            "exit", f"exit of signal s1 refused 5 times: the position is stuck: "
            f"binance {{'apiKey': '{API_KEY}', 'secret': '{SECRET}'}} url=/api?signature=abc123",
            {"signal_id": "s1"}), symbol="XRP/ETH", strategy_name="it-long",
            exchange_name="paper", when=datetime.now(UTC), origin="test"))
    before_data = datetime(2019, 10, 10, 0, 0, tzinfo=UTC)  # no candles: each tick an error
    for minute in range(3):
        assert Live.tick("XRP/ETH", "it-long", "paper",
                         before_data + timedelta(minutes=minute)) is None
    report = scan_events(engine, sender, now=now, error_window_seconds=600)
    assert report.delivered == 3  # halt, unhalt, exit; the errors wait for their window
    now.value += 601
    assert scan_events(engine, sender, now=now, error_window_seconds=600).delivered == 1
    raw = b"".join(webhook.raw).decode()
    assert API_KEY not in raw and SECRET not in raw and "abc123" not in raw
    halt, unhalt, exit_, errors = webhook.received
    assert halt["title"] == "Trading HALTED (kill switch set)"
    assert "by cli:ops" in halt["message"] and "key *** leaked?" in halt["message"]
    assert unhalt["title"] == "Trading resumed (unhalt)"
    assert exit_["title"] == "Needs attention: XRP/ETH · it-long@paper"
    assert exit_["type"] == "failure" and "stuck" in exit_["message"]
    assert errors["title"] == "3 errors on 1 key in the last 10 min"
    assert "3× XRP/ETH · it-long@paper: " in errors["message"]
    assert "no closed candles" in errors["message"]
    assert scan_events(engine, sender, now=now).delivered == 0


def test_the_celery_task_scans_with_the_environment(in_process_runtime: Runtime,
                                                    webhook: Webhook,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from bkit.settings import reset_settings
    from workers.notify import scan

    monkeypatch.setenv("BKIT_NOTIFY_URLS", f"  {webhook.url()} ,")
    reset_settings()  # settings (BKIT_NOTIFY_URLS among them) are read once per process
    upgrade(get_engine())
    assert scan() == 0  # places the cursor
    Live.tick("XRP/ETH", "it-long", "paper", START)
    assert scan() == 1
    assert webhook.titles() == ["Opened long XRP/ETH · it-long@paper"]
    monkeypatch.delenv("BKIT_NOTIFY_URLS")
    reset_settings()
    Live.tick("XRP/ETH", "it-long", "paper", START + timedelta(minutes=1))
    assert scan() == 0  # without targets the cursor follows the log
