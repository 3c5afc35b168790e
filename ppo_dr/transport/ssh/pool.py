"""Live SSH connections shared by threads, one per (host, port, user)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from functools import partial

from ppo_dr.closing import LeavesOnExit
from ppo_dr.transport.ssh.remote import IO_TIMEOUT_S, SshRemote

log = logging.getLogger(__name__)


class SshPool(LeavesOnExit):
    """Live SSH connections keyed by (host, port, user), shared by threads.

    ``get`` hands back the same :class:`SshRemote` while it is alive and replaces it
    once it has died or been retired after a transient error. After a fork the child
    starts with an empty pool: paramiko's transport threads do not survive fork.
    """

    def __init__(
        self,
        key_file: str | os.PathLike[str],
        known_hosts: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        io_timeout: float = IO_TIMEOUT_S,
        connect: Callable[..., SshRemote] = SshRemote.connect,
    ) -> None:
        # What every connection is opened with; get() adds where to (host, port, user).
        self._connect = partial(
            connect,
            key_file=key_file,
            known_hosts=known_hosts,
            timeout=timeout,
            io_timeout=io_timeout,
        )
        self._lock = threading.Lock()
        self._host_locks: dict[tuple[str, int, str], threading.Lock] = {}
        self._remotes: dict[tuple[str, int, str], SshRemote] = {}
        self._pid = os.getpid()

    def get(self, host: str, port: int, user: str) -> SshRemote:
        """A live connection to user@host:port, connecting if needed (one at a time
        per key, so ten threads asking at once make one connection, not ten)."""
        key = (host, port, user)
        with self._lock:
            if self._pid != os.getpid():
                self._remotes.clear()
                self._host_locks.clear()
                self._pid = os.getpid()
            host_lock = self._host_locks.setdefault(key, threading.Lock())
        with host_lock:
            with self._lock:
                remote = self._remotes.get(key)
            if remote is not None and remote.alive():
                return remote
            if remote is not None:
                log.info("dropping dead connection to %s", remote.label)
                remote.close()
            remote = self._connect(host, port, user)
            with self._lock:
                self._remotes[key] = remote
            return remote

    def close_all(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            remotes = list(self._remotes.values())
            self._remotes.clear()
        for remote in remotes:
            remote.close()

    def _leave(self, *, failed: bool) -> None:
        self.close_all()
