"""Notifications for the operator (apprise: Telegram, Discord, Slack, e-mail, webhooks).

`BKIT_NOTIFY_URLS` holds the apprise URLs. The `bkit.notify.scan` task (`workers.notify`)
reads the event log after a cursor, turns what the operator must know (a position opened or
closed, a stuck exit, errors counted per key, halt/unhalt) into messages, and sends them after
the events are committed — never from inside a tick's transaction. `messages` formats (pure),
`sender` delivers through apprise, `scan` holds the cursor, the outbox and the retries.
"""

from __future__ import annotations

from bkit.notify.messages import Message, scrub, secret_values
from bkit.notify.scan import ScanReport, scan_events
from bkit.notify.sender import AppriseSender, notify_targets

__all__ = ["AppriseSender", "Message", "ScanReport", "notify_targets", "scan_events", "scrub",
           "secret_values"]
