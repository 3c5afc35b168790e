"""Process control for the lab: start components, know which pids are ours, stop them.

A pid is only ever signalled after ``/proc/<pid>/cmdline`` shows it runs a lab module
for this very directory (``python -m MODULE --config DIR/...``), so a recycled pid is
never hit. Every pid is recorded in ``lab.json`` the moment it is spawned; stopping
sweeps ``/proc`` too, for a process spawned but not yet recorded.

A component may also be any program given by its command line (``argv``: the
namespaced lab's Prefect workers). Such a process is ours while its start time is the
one recorded at spawn, and it and its children carry ``PPO_DR_LAB=<DIR>`` in their
environment, which the final sweep looks for. A component with ``netns`` runs inside
that network namespace (``ip netns exec``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Literal

from ppo_dr.lab import pid_identity
from ppo_dr.lab.labdir import LabDir, now_text
from ppo_dr.lab.netns import exec_prefix

#: A component's process as seen now (``stopped``: the lab is down).
State = Literal["running", "hung", "dead", "stopped"]

MODULES = {
    "server": "ppo_dr.lab.server",
    "netsim": "ppo_dr.lab.netsim",
    "frontdoor": "ppo_dr.lab.frontdoor",
    "workload": "ppo_dr.lab.workload",
}
STOP_GRACE = 3.0
#: Environment marker of every program-component (and its children) of a lab.
MARKER_ENV = "PPO_DR_LAB"


def spawn_detached(
    command: list[str], env: Mapping[str, str], log: IO[bytes], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start *command* in a session of its own (a Ctrl-C of ours does not reach it),
    with no stdin and stdout+stderr appended to *log*."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        close_fds=True,
        start_new_session=True,
        cwd=cwd,
        env=env,
    )


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0") if part]


def _proc_state(pid: int) -> str | None:
    """The one-letter state of *pid* from ``/proc`` (R, S, T, Z, ...), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return stat.rsplit(")", 1)[1].split()[0]
    except IndexError:
        return None


def _lab_module_of(argv: list[str], directory: Path) -> str | None:
    """The lab module *argv* runs for *directory* (``python -m MODULE --config DIR/...``)."""
    try:
        module = argv[argv.index("-m") + 1]
        config = argv[argv.index("--config") + 1]
    except (ValueError, IndexError):
        return None
    if module not in MODULES.values():
        return None
    if not config.startswith(str(directory) + os.sep):
        return None
    return module


def is_ours(pid: int | None, module: str, directory: Path) -> bool:
    """True if *pid* is a live lab process running *module* for *directory*."""
    if not pid or pid == os.getpid():
        return False
    return _lab_module_of(_cmdline(pid), directory) == module


def is_alive(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def send_signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect *pid*'s exit status if it is our child (a zombie otherwise lingers)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_gone(pids: Iterable[int], deadline: float) -> list[int]:
    """Wait until every pid has exited or *deadline* passes; return the survivors."""
    left = list(pids)
    while left:
        for pid in left:
            _reap(pid)
        left = [pid for pid in left if is_alive(pid)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return left


def lab_processes(directory: Path) -> list[tuple[int, str]]:
    """Every live process whose command line is a lab module of *directory*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        module = _lab_module_of(_cmdline(pid), directory)
        if module is not None and is_alive(pid):
            found.append((pid, module))
    return found


class LabProcesses(LabDir):
    """Spawning, watching and stopping the processes of one lab directory."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def _spawn(self, state: dict[str, Any], name: str) -> int:
        """Start component *name* and record its pid in lab.json before anything else."""
        comp = state["components"][name]
        log = self.log_file(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        if comp.get("argv"):
            command = list(comp["argv"])
            env.update(comp.get("env") or {})
            env[MARKER_ENV] = str(self.directory)
        else:
            command = [sys.executable, "-m", comp["module"], "--config", comp["config"]]
        with log.open("ab") as out:
            proc = spawn_detached(
                [*exec_prefix(comp.get("netns")), *command], env, out, cwd=self.directory
            )
        self._children[proc.pid] = proc
        if comp.get("pid"):
            state.setdefault("retired_pids", []).append([comp["module"], comp["pid"]])
        comp["pid"] = proc.pid
        comp["started_at"] = now_text()
        comp["ticks"] = pid_identity.start_ticks(proc.pid)
        self._save(state)
        return proc.pid

    def _poll_children(self) -> None:
        for proc in list(self._children.values()):
            if proc.poll() is not None:
                self._children.pop(proc.pid, None)

    def _owns(self, pid: int, module: str, comp: Mapping[str, Any] | None = None) -> bool:
        """True if *pid* runs *module* for this lab (*comp*'s program, if it has one).

        A child this object spawned and has not reaped yet is ours without asking
        ``/proc`` (its pid cannot be recycled before it is reaped): right after
        ``exec`` its cmdline can still read empty for a moment, and a busy machine
        made a workload just started look dead.
        """
        child = self._children.get(pid)
        if child is not None and child.poll() is None:
            return True
        if comp is not None and comp.get("argv"):
            ticks = comp.get("ticks")
            return ticks is not None and pid_identity.start_ticks(pid) == ticks
        return is_ours(pid, module, self.directory)

    def _pid_state(self, comp: Mapping[str, Any]) -> tuple[int | None, State]:
        """(pid if ours and alive, 'running' | 'hung' | 'dead')."""
        self._poll_children()
        pid = comp.get("pid")
        if not pid or not self._owns(pid, comp["module"], comp):
            return None, "dead"
        state = _proc_state(pid)
        if state in (None, "Z", "X"):
            return None, "dead"
        return pid, "hung" if state in ("T", "t") else "running"

    def _stop_pids(self, victims: list[tuple[str, int]]) -> list[str]:
        """SIGCONT, SIGTERM, wait, SIGKILL: each (name, pid) already checked to be ours."""
        for _name, pid in victims:
            send_signal(pid, signal.SIGCONT)  # a hung process cannot act on SIGTERM
            send_signal(pid, signal.SIGTERM)
        left = wait_gone([pid for _, pid in victims], time.monotonic() + STOP_GRACE)
        for pid in left:
            send_signal(pid, signal.SIGKILL)
        wait_gone(left, time.monotonic() + 2.0)
        self._poll_children()
        return [name for name, _pid in victims]

    def _stop_everything(self, state: dict[str, Any] | None) -> list[str]:
        """Stop recorded processes that are still ours, then sweep /proc for strays."""
        victims: list[tuple[str, int]] = []
        if state is not None:
            for name, comp in state["components"].items():
                pid = comp.get("pid")
                if pid and self._owns(pid, comp["module"], comp):
                    victims.append((name, pid))
            for module, pid in state.get("retired_pids", []):
                if is_ours(pid, module, self.directory):
                    victims.append((f"{module.rsplit('.', 1)[-1]} (pid {pid})", pid))
        stopped = self._stop_pids(victims) if victims else []
        strays = [
            (f"stray {module.rsplit('.', 1)[-1]} (pid {pid})", pid)
            for pid, module in lab_processes(self.directory)
        ] + [
            (f"stray program (pid {pid})", pid)
            for pid in pid_identity.marked_pids(MARKER_ENV, str(self.directory))
        ]
        if strays:
            for _name, pid in strays:
                send_signal(pid, signal.SIGCONT)
                send_signal(pid, signal.SIGKILL)
            wait_gone([pid for _, pid in strays], time.monotonic() + 2.0)
            stopped += [name for name, _ in strays]
        if state is not None:
            for comp in state["components"].values():
                if comp.get("pid"):
                    comp["last_pid"] = comp["pid"]
                comp["pid"] = None
            state["retired_pids"] = []
        return stopped

    def _reload_netsim(self, state: Mapping[str, Any]) -> None:
        pid, _pstate = self._pid_state(state["components"]["netsim"])
        if pid is not None:
            send_signal(pid, signal.SIGHUP)
