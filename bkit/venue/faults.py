"""Scriptable faults: what the venue does instead of (or after) answering a request.

Build one with the `VenueFault` constructors and arm it on a path from any thread with
`Venue.fail_next(path, fault, count)` (the next `count` requests) or `Venue.set_fault(path,
fault)` (every request until cleared). A path is `/api/v3/order` (any method),
`POST /api/v3/order` (one method) or `*` (any request).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

_RATE_LIMIT_MSG = ("Too many requests; current limit of IP(127.0.0.1) is 6000 requests per "
                   "minute. Please use the websocket for live updates to avoid polling the API.")
_BANNED_MSG = ("Way too much request weight used; IP banned until {until}. Please use WebSocket "
               "Streams for live updates to avoid bans.")


@dataclass(frozen=True, slots=True)
class VenueFault:
    """One fault. `kind` says what happens; the other fields parametrise it.

    Kinds: `timeout_after_accept` (handled for real, the reply delayed `seconds`),
    `disconnect_after_accept` (handled for real, the connection dropped with no reply),
    `timeout` (delayed `seconds` before handling: nothing happens if the client gave up first;
    handled after the delay otherwise), `disconnect` (dropped, not handled) and `error` (an
    HTTP `status` with a Binance `code` / `msg` body, or `html` for a proxy page; not handled).
    """

    kind: str
    seconds: float = 0.0
    status: int = 0
    code: int = 0
    msg: str = ""
    retry_after: int | None = None
    html: bool = False

    @property
    def applies_request(self) -> bool:
        """Whether the request is handled (state changed) despite the fault."""
        return self.kind in ("timeout_after_accept", "disconnect_after_accept", "timeout")

    @classmethod
    def timeout_after_accept(cls, seconds: float) -> VenueFault:
        """The request IS handled (an order accepted and applied); the reply waits `seconds`."""
        return cls("timeout_after_accept", seconds=seconds)

    @classmethod
    def disconnect_after_accept(cls) -> VenueFault:
        """The request IS handled; the connection is then closed without a reply."""
        return cls("disconnect_after_accept")

    @classmethod
    def timeout(cls, seconds: float) -> VenueFault:
        """Wait `seconds` before handling: past the client's time-out nothing is applied."""
        return cls("timeout", seconds=seconds)

    @classmethod
    def disconnect(cls) -> VenueFault:
        """Close the connection without an answer; nothing is applied."""
        return cls("disconnect")

    @classmethod
    def server_error(cls, status: int = 500) -> VenueFault:
        """HTTP 500 (-1000 unknown error), 502 (a proxy's HTML page) or 503 (-1001)."""
        if status == 502:
            return cls("error", status=502, msg="<html><body><h1>502 Bad Gateway</h1></body>"
                                                "</html>", html=True)
        if status == 503:
            return cls("error", status=503, code=-1001,
                       msg="Internal error; unable to process your request. Please try again.")
        return cls("error", status=status, code=-1000,
                   msg="An unknown error occurred while processing the request.")

    @classmethod
    def rate_limit(cls, status: int = 429, retry_after: int = 1) -> VenueFault:
        """HTTP 429 (too many requests) or 418 (IP banned), -1003, with `Retry-After` (s)."""
        msg = _RATE_LIMIT_MSG if status == 429 else _BANNED_MSG.format(until="1700000000000")
        return cls("error", status=status, code=-1003, msg=msg, retry_after=retry_after)

    @classmethod
    def clock_skew(cls) -> VenueFault:
        """HTTP 400, -1021: the request's timestamp is outside the recvWindow."""
        return cls("error", status=400, code=-1021,
                   msg="Timestamp for this request is outside of the recvWindow.")

    @classmethod
    def auth_error(cls) -> VenueFault:
        """HTTP 401, -2015: invalid API key, IP or permissions."""
        return cls("error", status=401, code=-2015,
                   msg="Invalid API-key, IP, or permissions for action.")

    @classmethod
    def error(cls, status: int, code: int, msg: str) -> VenueFault:
        """Any Binance error answer."""
        return cls("error", status=status, code=code, msg=msg)


class FaultBoard:
    """Armed faults per path: queued (next N requests) before persistent ones. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, deque[VenueFault]] = {}
        self._persistent: dict[str, VenueFault] = {}

    def fail_next(self, path: str, fault: VenueFault, count: int = 1) -> None:
        with self._lock:
            self._queued.setdefault(path, deque()).extend([fault] * count)

    def set_fault(self, path: str, fault: VenueFault | None) -> None:
        with self._lock:
            if fault is None:
                self._persistent.pop(path, None)
            else:
                self._persistent[path] = fault

    def clear(self) -> None:
        with self._lock:
            self._queued.clear()
            self._persistent.clear()

    def take(self, method: str, path: str) -> VenueFault | None:
        """The fault for this request, if any (a queued one is used up)."""
        keys = (f"{method} {path}", path, "*")
        with self._lock:
            for key in keys:
                queue = self._queued.get(key)
                if queue:
                    return queue.popleft()
            for key in keys:
                if key in self._persistent:
                    return self._persistent[key]
        return None
