"""Running an operator's HTTP server (metrics, dashboard) until told to stop."""

from __future__ import annotations

import threading
from typing import Any


def serve_until(server: Any, thread: threading.Thread, stop: threading.Event) -> None:
    """Block until `stop` is set, then shut `server` down and wait for its `thread`
    (at most 5 s)."""
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
