"""Process liveness read from ``/proc``: the one place that says whether a pid runs.

Both the repository lock (is the holder on this host still running?) and the lab
(is the process we started still there?) ask the same question; a zombie is dead
for both, since it holds no lock and serves nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def proc_files(name: str) -> Iterator[tuple[int, bytes]]:
    """Each process's pid and its ``/proc/PID/<name>``, skipping what cannot be read
    (a process that ended meanwhile, or another user's)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            content = (proc / name).read_bytes()
        except OSError:
            continue
        yield int(proc.name), content
