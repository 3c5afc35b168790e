"""Processes we started and must be able to stop: found again by start time or by a
marker in their environment, never by name.

A pid alone is not an identity: it is recycled. The start time (``/proc/PID/stat``
field 22) is, for a pid; an environment variable set at spawn is inherited by every
child, so a sweep finds what a dead parent left behind. Some programs rewrite their
environment area with their process title (Redis does), so callers use both.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

from ppo_dr.pids import alive, proc_files


def start_ticks(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat``; None when the process is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def marked_pids(variable: str, value: str) -> list[int]:
    """Every live process whose environment has ``variable=value`` (children inherit it)."""
    needle = f"{variable}={value}".encode() + b"\0"
    return [pid for pid, environ in proc_files("environ") if needle in environ and alive(pid)]


def signal_group(pid: int, signum: int) -> None:
    """Send *signum* to the process group led by *pid* and to *pid* itself (we start
    each component in its own session, so its children share the group)."""
    for send in (os.killpg, os.kill):
        try:
            send(pid, signum)
        except (ProcessLookupError, PermissionError):
            continue


def group_members(pgid: int) -> list[int]:
    """Every live process in process group *pgid* (``/proc/PID/stat`` field 5): the
    children a group kill must also outlive before the group counts as gone."""
    members = []
    for pid, stat in proc_files("stat"):
        try:
            group = int(stat.rsplit(b") ", 1)[1].split()[2])
        except (IndexError, ValueError):
            continue
        if group == pgid and alive(pid):
            members.append(pid)
    return members


def reap(pid: int) -> None:
    """Collect *pid*'s exit status if it is our child (``up`` ran in this process) and
    has exited, so no zombie is left behind."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0 if not alive(pid) else os.WNOHANG)


def until_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait up to *timeout* s for *pids* to end (reaping our children); those left."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left and time.monotonic() < deadline:
        for pid in left:
            reap(pid)
        left = [p for p in left if alive(p)]
        if left:
            time.sleep(0.1)
    return left
