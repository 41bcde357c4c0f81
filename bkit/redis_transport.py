"""kombu's Redis transport, made to ride out a Redis restart (issue 11; celery/kombu#582).

When the broker connection drops, celery's consumer closes the old connection, and kombu's
channel close restores the messages this worker holds unacknowledged (the orders worker
always holds some: submits scheduled with a countdown). By then the connection object has
been released, so kombu builds a client from `connection.client = None` and raises
`AttributeError: 'NoneType' object has no attribute 'hostname'`, which celery treats as an
unrecoverable error: the worker exits (seen in 2 of 3 Redis restarts of a chaos run).

Here that restore is best-effort: if the channel has no connection left, or Redis cannot be
reached, the messages are left where kombu keeps them anyway (the `unacked` hash in Redis),
from which any worker restores them after the visibility timeout; and the orders outbox in
the database (with the relay) never depends on a broker message. The consumer reconnects.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis

log = logging.getLogger("bkit.redis_transport")


class QoS(redis.QoS):
    def restore_unacked(self, client: Any = None) -> Any:
        channel = self.channel
        if client is None and getattr(getattr(channel, "connection", None), "client",
                                      None) is None:
            log.warning("broker connection gone: %d unacknowledged message(s) left to the "
                        "visibility timeout (the database outbox keeps every order)",
                        len(self._delivered))
            self._delivered.clear()
            return None
        try:
            return super().restore_unacked(client)
        except (AttributeError, *redis.get_redis_error_classes().connection_errors) as exc:
            log.warning("could not restore %d unacknowledged message(s) at reconnect (%s); "
                        "the visibility timeout restores them", len(self._delivered), exc)
            self._delivered.clear()
            return None


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel
