"""What the operator is told, as plain text: pure functions from event-log rows to messages.

Nothing here does I/O. An event row is the dict of `bkit.store.event_log.event_as_dict`; a
closed trade's realised PnL comes from its signal row (`TradeFacts`). Errors are not sent one
by one: an `ErrorWindow` counts them per key and becomes one message per window. `scrub`
removes secrets (API keys and secrets from `BKIT_*` variables, tokens of notification URLs,
`apiKey=…`-style query values) from every text that leaves the process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

#: Event kinds the scan reads; everything else (risk, partial levels, …) is not notified.
NOTIFY_KINDS: tuple[str, ...] = ("signal", "exit", "error", "admin")
#: Signal actions that become a message.
SIGNAL_ACTIONS: tuple[str, ...] = ("opened", "closed")
ADMIN_ACTIONS: tuple[str, ...] = ("halt", "unhalt")
#: Keys listed by name in one error summary; the rest are counted together.
ERROR_KEYS_LISTED = 10
MAX_BODY_CHARS = 1800  # Telegram allows 4096, Discord 2000: stay under both
REDACTED = "***"

_SECRET_SUFFIXES = ("API_KEY", "APIKEY", "SECRET", "PASSWORD", "PASSPHRASE", "TOKEN", "UID",
                    "PRIVATE_KEY")
_QUERY_SECRET = re.compile(
    r"(?i)\b(api[_-]?key|api[_-]?secret|secret|token|password|passphrase|signature|sig)"
    r"(\s*[=:]\s*)([^\s&,;\"']+)")
_MIN_SECRET_CHARS = 4


@dataclass(frozen=True, slots=True)
class Message:
    """One notification. `id` is stable per event (or per error window), so a message is
    never queued twice; `level` is apprise's notify type (info, success, warning, failure)."""

    id: str
    kind: str
    title: str
    body: str
    level: str = "info"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Message:
        return Message(id=str(data["id"]), kind=str(data["kind"]), title=str(data["title"]),
                       body=str(data["body"]), level=str(data.get("level") or "info"))

    def scrubbed(self, secrets: Iterable[str]) -> Message:
        """This message with every secret replaced by `***`."""
        values = list(secrets)
        return Message(self.id, self.kind, scrub(self.title, values),
                       scrub(self.body, values)[:MAX_BODY_CHARS], self.level)


@dataclass(frozen=True, slots=True)
class TradeFacts:
    """What the signal row says about a trade: amounts in base units, PnL in % and in the
    quote currency, realised PnL from fills and fees (None without an order broker)."""

    amount: float | None = None
    stuck: bool = False
    realised_pnl_cost: float | None = None
    realised_pnl_percentage: float | None = None
    pnl_cost: float | None = None
    pnl_percentage: float | None = None
    fill_price_open: float | None = None
    fill_price_close: float | None = None
    close_reason: str | None = None


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Every secret the environment holds: values of `BKIT_*_API_KEY`, `*_SECRET`,
    `*_PASSWORD`, `*_TOKEN`…, the passwords of `BKIT_*` URLs, the notification URLs and
    their parts (user, password, host tokens, path segments), the dashboard credentials.
    Longest first, so a secret that contains another is replaced whole."""
    found: set[str] = set()
    for name, value in environ.items():
        if not name.startswith("BKIT_") or not value:
            continue
        upper = name.upper()
        if upper.endswith(_SECRET_SUFFIXES):
            found.add(value.strip())
        if upper == "BKIT_DASHBOARD_BASIC_AUTH":
            found.add(value)
            found.update(part for part in value.split(":", 1))
        if upper == "BKIT_NOTIFY_URLS":
            for url in split_urls(value):
                found.update(url_secrets(url))
        elif "://" in value:
            parts = urlsplit(value.strip())
            if parts.password:
                found.add(unquote(parts.password))
    return sorted((s for s in found if len(s) >= _MIN_SECRET_CHARS), key=len, reverse=True)


def split_urls(value: str) -> list[str]:
    """The apprise URLs of `BKIT_NOTIFY_URLS` (separated by commas, spaces or newlines)."""
    return [part for part in re.split(r"[\s,]+", value or "") if part]


def url_secrets(url: str) -> list[str]:
    """The URL itself and the parts of it that may be tokens (a Telegram bot token is the
    host, a Discord webhook token a path segment, a password the password)."""
    parts = urlsplit(url)
    found = [url, url.split("?", 1)[0]]
    host = parts.netloc.rsplit("@", 1)[-1]
    pieces = [host, *parts.netloc.rsplit("@", 1)[0].split(":")] if "@" in parts.netloc \
        else [host, *host.split(":")]
    found += [unquote(p) for p in pieces if p and not _is_plain_host(p)]
    found += [unquote(seg) for seg in parts.path.split("/") if len(seg) >= 8]
    found += [unquote(v) for kv in parts.query.split("&") if "=" in kv
              for v in [kv.split("=", 1)[1]] if len(v) >= 8]
    # Short pieces (a user name like `ops`) would blank ordinary words; a password is kept.
    found = [s for s in found if len(s) >= 6]
    return found + ([unquote(parts.password)] if parts.password else [])


def _is_plain_host(piece: str) -> bool:
    # An address (IP, dotted host name, with a port) is not a token; a bot token
    # (`123456:ABC-…`) or a bare word is treated as one.
    return bool(re.fullmatch(r"(localhost|[0-9.]+|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+)(:\d+)?",
                             piece)) or (piece.isdigit() and len(piece) <= 5)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (and any `apiKey=…`, `secret: …` value) replaced by `***`."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return _QUERY_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def key_label(event: Mapping[str, Any]) -> str:
    """`SYMBOL · strategy@exchange` of an event, or `bkit` for events of no key."""
    symbol, strategy, exchange = (event.get("symbol"), event.get("strategy_name"),
                                  event.get("exchange_name"))
    if not (symbol or strategy):
        return "bkit"
    return f"{symbol or '-'} · {strategy or '-'}@{exchange or '-'}"


def event_message(event: Mapping[str, Any], trade: TradeFacts | None = None
                  ) -> Message | None:
    """The message an event becomes, or None when it is not one the operator is told about
    (ticks that changed nothing, risk notices, errors: those go to an `ErrorWindow`)."""
    kind, action = event.get("kind"), event.get("action")
    if kind == "signal" and action == "opened":
        return _opened(event, trade)
    if kind == "signal" and action == "closed":
        return _closed(event, trade)
    if kind == "exit":
        return Message(f"event-{event['id']}", "exit",
                       f"Needs attention: {key_label(event)}",
                       f"{event.get('message') or 'exit needs an operator'}\n"
                       f"at {_when(event.get('created_at'))}", "failure")
    if kind == "admin" and action in ADMIN_ACTIONS:
        payload = event.get("payload") or {}
        who = payload.get("actor") or event.get("origin") or "?"
        reason = payload.get("reason") or ""
        if action == "halt":
            title, level = "Trading HALTED (kill switch set)", "warning"
        else:
            title, level = "Trading resumed (unhalt)", "info"
        body = f"by {who} at {_when(event.get('created_at'))}"
        return Message(f"event-{event['id']}", action, title,
                       body + (f"\nreason: {reason}" if reason else ""), level)
    return None


def _opened(event: Mapping[str, Any], trade: TradeFacts | None) -> Message:
    payload = event.get("payload") or {}
    signal = payload.get("signal") or {}
    quote = _quote(event)
    position = str(signal.get("position") or "?")
    price = (trade.fill_price_open if trade and trade.fill_price_open is not None
             else signal.get("price_open", payload.get("current_price")))
    lines = [f"entry {_num(price)}  TP {_num(signal.get('price_take_profit'))}  "
             f"SL {_num(signal.get('price_stop_loss'))}",
             f"cost {_num(signal.get('cost'))} {quote}"]
    amount = trade.amount if trade else signal.get("amount")
    if amount is not None:
        lines.append(f"amount {_num(amount)} {_base(event)}")
    lines.append(f"signal {event.get('signal_id') or signal.get('id')} at "
                 f"{_when(event.get('created_at'))}")
    return Message(f"event-{event['id']}", "opened",
                   f"Opened {position} {key_label(event)}", "\n".join(lines), "info")


def _closed(event: Mapping[str, Any], trade: TradeFacts | None) -> Message:
    payload = event.get("payload") or {}
    signal = payload.get("signal") or {}
    pnl = payload.get("pnl") or {}
    quote = _quote(event)
    position = str(signal.get("position") or "?")
    reason = (trade.close_reason if trade and trade.close_reason else
              payload.get("close_reason")) or "closed"
    realised_pct = trade.realised_pnl_percentage if trade else signal.get(
        "realised_pnl_percentage")
    realised_cost = trade.realised_pnl_cost if trade else signal.get("realised_pnl_cost")
    signal_pct = trade.pnl_percentage if trade and trade.pnl_percentage is not None \
        else pnl.get("pnl_percentage")
    signal_cost = trade.pnl_cost if trade and trade.pnl_cost is not None \
        else pnl.get("pnl_cost")
    lines = []
    if realised_pct is not None or realised_cost is not None:
        headline = realised_pct
        lines.append(f"realised PnL {_pct(realised_pct)} ({_signed(realised_cost)} {quote}, "
                     "from fills and fees)")
        lines.append(f"signal PnL {_pct(signal_pct)} ({_signed(signal_cost)} {quote})")
    else:
        headline = signal_pct
        lines.append(f"PnL {_pct(signal_pct)} ({_signed(signal_cost)} {quote}, after fees "
                     "and slippage)")
    lines.append(f"open {_num(pnl.get('price_open', signal.get('price_open')))} → close "
                 f"{_num(pnl.get('price_close', payload.get('current_price')))}")
    lines.append(f"signal {event.get('signal_id') or signal.get('id')} at "
                 f"{_when(event.get('created_at'))}")
    level = "success" if (headline or 0.0) >= 0 else "warning"
    return Message(f"event-{event['id']}", "closed",
                   f"Closed {position} {key_label(event)}: {_pct(headline)} ({reason})",
                   "\n".join(lines), level)


@dataclass(slots=True)
class ErrorWindow:
    """Errors counted per key since `since` (epoch seconds, wall clock), with the last
    message of each key and the id of the first error (the summary's message id)."""

    since: float | None = None
    first_id: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)

    def add(self, event: Mapping[str, Any], now: float) -> None:
        """Count one error event (kind `error`)."""
        label = key_label(event)
        if self.since is None:
            self.since, self.first_id = now, int(event["id"])
        self.counts[label] = self.counts.get(label, 0) + 1
        self.last[label] = str(event.get("message") or "")[:300]

    def due(self, now: float, window_seconds: float) -> bool:
        """True when errors were counted and the window they opened has passed."""
        return self.since is not None and now - self.since >= window_seconds

    def summary(self, now: float) -> Message:
        """The one message for the window: total, keys with counts (most first), last
        message of each listed key."""
        total = sum(self.counts.values())
        minutes = max(1, round((now - (self.since or now)) / 60))
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        lines = [f"{count}× {label}: {self.last.get(label, '')}"
                 for label, count in ranked[:ERROR_KEYS_LISTED]]
        rest = ranked[ERROR_KEYS_LISTED:]
        if rest:
            lines.append(f"… and {sum(c for _, c in rest)} more on {len(rest)} other keys")
        lines.append("details: `bkit status`, `bkit errors`")
        return Message(f"errors-{self.first_id}", "errors",
                       f"{total} error{'s' if total != 1 else ''} on {len(ranked)} "
                       f"key{'s' if len(ranked) != 1 else ''} in the last {minutes} min",
                       "\n".join(lines), "warning")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: Mapping[str, Any] | None) -> ErrorWindow:
        data = data or {}
        return ErrorWindow(since=data.get("since"), first_id=data.get("first_id"),
                           counts=dict(data.get("counts") or {}),
                           last=dict(data.get("last") or {}))


def _when(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "-"


def _num(value: Any) -> str:
    return f"{value:.10g}" if isinstance(value, int | float) else "-"


def _signed(value: Any) -> str:
    return f"{value:+.6g}" if isinstance(value, int | float) else "-"


def _pct(value: Any) -> str:
    return f"{value:+.2f} %" if isinstance(value, int | float) else "- %"


def _quote(event: Mapping[str, Any]) -> str:
    symbol = str(event.get("symbol") or "")
    return symbol.split("/", 1)[1] if "/" in symbol else "quote"


def _base(event: Mapping[str, Any]) -> str:
    return str(event.get("symbol") or "base").split("/", 1)[0]
