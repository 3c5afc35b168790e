"""``crash_and_start``, the crash-and-come-back of the control plane's restart and of the
chaos run's Prefect server: real processes in their own sessions, children included."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ppo_dr.lab.controlplane_restart import crash_and_start
from ppo_dr.lab.pid_identity import group_members, until_gone
from ppo_dr.pids import alive


def _group_with_a_child() -> tuple[subprocess.Popen[bytes], int]:
    """A shell leading its own session with a ``sleep`` child; (shell, child pid)."""
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert shell.stdout is not None
    return shell, int(shell.stdout.readline())


def test_the_whole_group_is_gone_and_down_before_the_start() -> None:
    shell, child = _group_with_a_child()
    seen: list[tuple[bool, bool, float]] = []
    crashed = time.monotonic()

    def start() -> None:
        seen.append((alive(shell.pid), alive(child), time.monotonic() - crashed))

    took = crash_and_start(shell.pid, start, down_s=0.5)

    assert len(seen) == 1
    shell_alive, child_alive, started_after = seen[0]
    assert not shell_alive and not child_alive  # SIGKILL reached the group
    assert started_after >= 0.5  # kept down as long as asked
    assert took >= started_after - 0.1
    assert not Path(f"/proc/{shell.pid}").exists()  # reaped: no zombie left behind


def test_a_given_crash_replaces_the_sigkill_and_is_waited_for() -> None:
    shell, child = _group_with_a_child()
    order: list[str] = []

    def crash() -> None:
        order.append("crash")
        os.killpg(shell.pid, signal.SIGTERM)

    def start() -> None:
        order.append(f"start, gone: {not alive(shell.pid) and not alive(child)}")

    crash_and_start(shell.pid, start, crash=crash)

    assert order == ["crash", "start, gone: True"]


def test_the_group_members_are_the_leader_and_its_children() -> None:
    shell, child = _group_with_a_child()
    try:
        assert set(group_members(shell.pid)) == {shell.pid, child}
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
    assert until_gone([child], 10) == []
    assert group_members(shell.pid) == []
