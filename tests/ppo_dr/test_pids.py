"""Process liveness: the lock's staleness and the lab's sweeps ask the same module."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ppo_dr import pids
from ppo_dr.mirror.lock import is_stale


def _exited_child() -> subprocess.Popen[bytes]:
    """A child that has exited and is not yet reaped: a zombie."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        if stat.split(") ")[1][0] == "Z":
            return child
        time.sleep(0.02)
    raise AssertionError("the child did not exit")


def test_a_running_process_is_alive() -> None:
    assert pids.alive(os.getpid())


def test_a_zombie_and_a_reaped_pid_are_dead() -> None:
    child = _exited_child()
    assert not pids.alive(child.pid)
    child.wait()
    assert not pids.alive(child.pid)


def test_proc_files_lists_this_process() -> None:
    found = dict(pids.proc_files("stat"))
    assert found[os.getpid()].startswith(f"{os.getpid()} (".encode())


def test_a_lock_held_by_a_dead_process_on_this_host_is_stale() -> None:
    child = _exited_child()
    host = socket.gethostname()
    now = time.time()
    doc = {"host": host, "pid": child.pid, "time": now}
    assert is_stale(doc, now, host)
    assert not is_stale({**doc, "pid": os.getpid()}, now, host)
    assert not is_stale(doc, now, "another-host")  # cannot see its processes: not stale
    child.wait()
