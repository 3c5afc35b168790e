"""The repository lock: one writer (snapshot or prune) at a time.

``locks/lock`` is created by renaming a fully written temporary file onto that name
with a rename that never clobbers, so exactly one of two racing writers wins and
the file is never seen half written. It records who holds it (owner, pid, host,
time). The holder rewrites it every ``REFRESH_S`` seconds; a lock not refreshed for
``STALE_AFTER_S`` seconds, or one held by a process that no longer exists on this
same host, is stale and is taken over. A live lock is never waited for: the run is
skipped (RepositoryLocked is transient, the next run tries again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import secrets
import socket
import threading
import time
from typing import Any, Self

from ppo_dr import pids
from ppo_dr.closing import LeavesOnExit
from ppo_dr.errors import DRError, RemotePathError
from ppo_dr.mirror.errors import RepositoryLocked
from ppo_dr.transport.base import Remote

log = logging.getLogger(__name__)

STALE_AFTER_S = 15 * 60
REFRESH_S = 60.0


def is_stale(doc: dict[str, Any], now: float, host: str) -> bool:
    """True if the lock described by *doc* may be taken over."""
    try:
        age = now - float(doc["time"])
        if age > float(doc.get("stale_after_s", STALE_AFTER_S)):
            return True
        return doc.get("host") == host and not pids.alive(int(doc["pid"]))
    except (KeyError, TypeError, ValueError):
        return True  # unreadable: written by no version of us, or damaged


class RepositoryLock(LeavesOnExit):
    """Held while a snapshot or prune writes to one repository (a context manager)."""

    def __init__(self, remote: Remote, repo_path: str, purpose: str, *, owner: str = "") -> None:
        self._remote = remote
        self._dir = posixpath.join(repo_path, "locks")
        self.path = posixpath.join(self._dir, "lock")
        self._purpose = purpose
        self._owner = owner or "ppo-dr"
        self._host = socket.gethostname()
        self._token = secrets.token_hex(16)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _doc(self) -> bytes:
        return json.dumps(
            {
                "owner": self._owner,
                "purpose": self._purpose,
                "host": self._host,
                "pid": os.getpid(),
                "time": time.time(),
                "stale_after_s": STALE_AFTER_S,
                "token": self._token,
            }
        ).encode()

    def _read(self) -> dict[str, Any] | None:
        try:
            raw = self._remote.read_bytes(self.path)
        except RemotePathError:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def _try_create(self) -> bool:
        temp = posixpath.join(self._dir, f".ppo-tmp-{secrets.token_hex(8)}.lock")
        self._remote.write_bytes(temp, self._doc(), 0o600)
        try:
            self._remote.rename(temp, self.path)
            return True
        except RemotePathError:
            with contextlib.suppress(DRError):
                self._remote.remove(temp)
            return False

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; RepositoryLocked if it is live."""
        self._remote.mkdir_p(self._dir, 0o700)
        for _attempt in range(3):
            if self._try_create():
                self._start_refresh()
                return
            held = self._read()
            if held is None:
                continue  # released between our rename and our read
            if not is_stale(held, time.time(), self._host):
                raise RepositoryLocked(
                    f"{self._remote.label}:{self.path}: locked by {held.get('owner')} "
                    f"({held.get('purpose')}, pid {held.get('pid')} on {held.get('host')})"
                )
            if self._read() == held:  # still the same stale holder: take it over
                log.warning("taking over stale lock %s: %s", self.path, held)
                with contextlib.suppress(RemotePathError):
                    self._remote.remove(self.path)
        raise RepositoryLocked(f"{self._remote.label}:{self.path}: lock is contended")

    def _start_refresh(self) -> None:
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True, name="repo-lock")
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                held = self._read()
                if not held or held.get("token") != self._token:
                    log.error("lock %s was taken from us", self.path)
                    return
                self._remote.write_bytes(self.path, self._doc(), 0o600)
            except DRError:
                log.warning("could not refresh lock %s", self.path, exc_info=True)

    def release(self) -> None:
        """Remove the lock if it is still ours. Best effort: a stale lock expires."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            held = self._read()
            if held and held.get("token") == self._token:
                self._remote.remove(self.path)
        except DRError:
            log.warning("could not release lock %s", self.path, exc_info=True)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def _leave(self, *, failed: bool) -> None:
        self.release()
