"""kombu's `filesystem://` transport with atomic publishing, for the embedded default.

kombu writes a message file in place (open, then write) while a consumer may already move and
read it: a worker can read an empty file and crash with a JSON decode error (seen in our
tests). Here a message is written under a hidden temporary name the consumer ignores, then
renamed into place, which is atomic on one filesystem.

Two more departures from kombu's defaults: an idle consumer looks at the folder every 0.1 s,
not every second (a tick task at a fast replay expires within a second: waiting a whole
second to see it made the worker discard most of them), and a folder has no host, so kombu's
"No hostname was supplied" warning, printed by every connection, does not apply."""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".{name}.tmp")  # not a queue file
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(temporary, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
    #: Seconds an idle consumer waits before looking at the queue folder again.
    polling_interval = 0.1

    @property
    def default_connection_params(self) -> dict[str, Any]:
        return {}
