"""Delivery through apprise, one target (URL of `BKIT_NOTIFY_URLS`) at a time, so a dead
target is retried alone and a working one is not sent the same message twice.

URLs carry tokens (a Telegram bot token, a Discord webhook secret), so a target is named in
logs and in the database only by its position, scheme and a short hash (`Target.label`,
`Target.tag`), and the log records of apprise and urllib3 (which print request paths)
pass through a filter that removes secrets.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import apprise

from bkit.notify.messages import Message, scrub, secret_values, split_urls, url_secrets

log = logging.getLogger("bkit.notify")
ENV_URLS = "BKIT_NOTIFY_URLS"
_LEVELS = {"info": apprise.NotifyType.INFO, "success": apprise.NotifyType.SUCCESS,
           "warning": apprise.NotifyType.WARNING, "failure": apprise.NotifyType.FAILURE}


@dataclass(frozen=True, slots=True)
class Target:
    """One apprise URL. `tag` (12 hex digits of its SHA-256) is what the outbox stores;
    `label` (`#1 json://`) is what logs show. The URL itself is never printed."""

    url: str = field(repr=False)
    tag: str
    label: str


class Sender(Protocol):
    """What the scan needs from a sender: the targets and one delivery attempt."""

    @property
    def targets(self) -> Sequence[Target]: ...

    def send(self, target: Target, message: Message) -> bool: ...


def notify_targets(environ: Mapping[str, str] | None = None) -> list[Target]:
    """The targets of `BKIT_NOTIFY_URLS` (comma, space or newline separated), in order."""
    environ = os.environ if environ is None else environ
    targets = []
    for index, url in enumerate(split_urls(environ.get(ENV_URLS, "")), start=1):
        tag = hashlib.sha256(url.encode()).hexdigest()[:12]
        scheme = url.split("://", 1)[0] if "://" in url else "?"
        targets.append(Target(url, tag, f"#{index} {scheme}://"))
    return targets


class _ScrubSecrets(logging.Filter):
    """Removes secrets from apprise's log records (its debug lines print whole URLs)."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage(), self.secrets)
        record.args = None
        return True


#: Loggers that see request lines (urllib3 logs the path, where webhook tokens live).
_GUARDED_LOGGERS = ("apprise", "urllib3.connectionpool", "requests")


def _guard_http_logs(secrets: Sequence[str]) -> None:
    for name in _GUARDED_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, _ScrubSecrets)]:
            logger.removeFilter(old)
        logger.addFilter(_ScrubSecrets(secrets))


class AppriseSender:
    """Sends messages with apprise to the targets of the environment (or those given)."""

    def __init__(self, targets: Sequence[Target] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self._targets = list(notify_targets(environ) if targets is None else targets)
        found = set(secret_values(environ))
        found.update(s for t in self._targets for s in url_secrets(t.url) if len(s) >= 4)
        self.secrets = sorted(found, key=len, reverse=True)
        _guard_http_logs(self.secrets)

    @property
    def targets(self) -> Sequence[Target]:
        return self._targets

    def send(self, target: Target, message: Message) -> bool:
        """One attempt to deliver `message` to `target`; False on any failure (logged by
        the target's label, never its URL). The text is scrubbed once more here."""
        clean = message.scrubbed(self.secrets)
        client = apprise.Apprise()
        if not client.add(target.url):
            log.error("notify target %s is not a valid apprise URL; check %s", target.label,
                      ENV_URLS)
            return False
        try:
            sent = bool(client.notify(title=clean.title, body=clean.body,
                                      notify_type=_LEVELS.get(clean.level,
                                                              apprise.NotifyType.INFO)))
        except Exception as exc:  # a plugin bug must not stop the other messages
            log.error("notify target %s raised %s", target.label, type(exc).__name__)
            return False
        if not sent:
            log.warning("notify %s to %s failed; retried later", clean.id, target.label)
        return sent
