"""A lab server's own clock, which the ``clock-skew`` fault can set ahead or behind.

A real machine whose clock is wrong reports the wrong time and stamps the files it
writes with it; the runbooks must not believe either (snapshot ids, RPO and outage
times are the orchestrator's). A lab server is a process on the orchestrator's
machine, so its skew is a number in ``servers/<id>/clock.json`` (``{"skew_s": 7200}``),
re-read when the file changes: the fault takes effect without a restart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Final

from ppo_dr.lab.procutil import WatchedFile

log = logging.getLogger("ppo_dr.lab.clock")

CLOCK_FILE: Final = "clock.json"
#: A skew beyond this is a broken file, not a clock: ignored.
MAX_SKEW_S: Final = 366 * 86400.0


class ServerClock:
    """The time as this server believes it: the host's time plus the file's skew."""

    def __init__(self, path: Path | None) -> None:
        self._file = WatchedFile(path) if path is not None else None
        self._skew = 0.0
        self._lock = threading.Lock()

    @property
    def skew_s(self) -> float:
        """The skew now in force (0 without a file)."""
        if self._file is None:
            return 0.0
        with self._lock:
            if self._file.changed():
                self._skew = _read_skew(self._file.path)
                log.warning("clock skew now %+.0f s", self._skew)
            return self._skew

    def now(self) -> float:
        """Seconds since the epoch, as this server's clock says."""
        return time.time() + self.skew_s

    def stamp(self, path: Path) -> None:
        """Give *path* this server's time as its mtime, as a skewed machine's write would."""
        skew = self.skew_s
        if skew:
            when = time.time() + skew
            os.utime(path, (when, when))


def _read_skew(path: Path) -> float:
    try:
        value = float(json.loads(path.read_text("utf-8"))["skew_s"])
    except FileNotFoundError:
        return 0.0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring clock file %s: %s", path, exc)
        return 0.0
    return value if abs(value) <= MAX_SKEW_S else 0.0
