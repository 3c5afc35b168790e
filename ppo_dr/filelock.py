"""An exclusive ``flock`` on a file, waited for up to a bound, for changes made by
several processes on one host (the lab's ``lab.json``, the static provider's claims)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

POLL_S = 0.05


@contextlib.contextmanager
def exclusive_lock(path: Path, timeout: float, mode: int = 0o644) -> Iterator[bool]:
    """Hold an exclusive lock on *path* (created if missing) for the ``with`` block.

    Yields True once the lock is held, or False if another process still held it after
    *timeout* seconds: the caller decides whether to refuse or go on without it. The
    lock goes with the file descriptor, closed however the block ends.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held = False
                    break
                time.sleep(POLL_S)
        yield held
    finally:
        os.close(fd)
