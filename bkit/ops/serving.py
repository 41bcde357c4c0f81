"""Running an operator's HTTP server (metrics, dashboard) until told to stop."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request; daemon threads, so that a hung client never holds the exit."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (a scrape every few seconds would fill the log)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


def start_wsgi_server(app: Callable[..., Any], address: str, port: int
                      ) -> tuple[WSGIServer, threading.Thread]:
    """Serve the WSGI `app` on `address:port` (IPv4 or IPv6, as `address` resolves) from a
    daemon thread; port 0 picks a free port (read it from `server.server_port`)."""
    family, _type, _proto, _name, sockaddr = socket.getaddrinfo(
        address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server_class = type("WSGIServerOf" + family.name, (_ThreadingWSGIServer,),
                        {"address_family": family})
    server: WSGIServer = make_server(str(sockaddr[0]), port, app, server_class,
                                     handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="bkit-http")
    thread.start()
    return server, thread


def serve_until(server: Any, thread: threading.Thread, stop: threading.Event) -> None:
    """Block until `stop` is set, then shut `server` down and wait for its `thread`
    (at most 5 s)."""
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
