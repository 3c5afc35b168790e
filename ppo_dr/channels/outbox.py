"""The outbox: every message as one JSON line in a file, instead of a real provider.

The lab and the demo use it by default and read it back (``read_outbox``). Each line is
``{"id", "channel", "provider", "recipient", "subject", "body", "key", "at"}``; ``id``
is the receipt. A line is written with one ``write`` under an exclusive ``flock``,
flushed and fsynced before ``send`` returns, so flows in several processes can share
the file and a receipt in the store always has its line on disk.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from ppo_dr.channels.base import (
    ChannelPermanentError,
    ChannelTransientError,
    OutboundMessage,
    Receipt,
)

_log = logging.getLogger(__name__)


class Outbox:
    """Appends messages of every channel to one JSON-lines file."""

    name: ClassVar[str] = "outbox"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_file():
            raise ChannelPermanentError(self.name, f"{self.path} exists and is not a file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChannelPermanentError(
                self.name, f"cannot create {self.path.parent}: {exc.strerror}"
            ) from None

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r})"

    def send(self, message: OutboundMessage) -> Receipt:
        """Append one line and make it durable; its ``id`` is the receipt."""
        line_id = uuid.uuid4().hex
        line = {
            "id": line_id,
            "channel": message.channel,
            "provider": self.name,
            "recipient": message.recipient,
            "subject": message.subject,
            "body": message.body,
            "key": message.key,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)  # closing releases the lock
        except OSError as exc:
            # A full or read-only disk may be freed; the notice stays pending for a retry.
            raise ChannelTransientError(
                self.name, f"cannot append to {self.path}: {exc.strerror}"
            ) from None
        _log.info("outbox %s: %s notice %s", line_id, message.channel, message.key)
        return Receipt(self.name, line_id)


def read_outbox(path: str | Path) -> list[dict[str, Any]]:
    """Every message in the outbox at *path*, oldest first (an absent file is empty)."""
    file = Path(path)
    if not file.exists():
        return []
    with file.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
