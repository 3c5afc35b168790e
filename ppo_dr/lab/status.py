"""What the lab looks like now: probes through public ports, health waits, the status table.

Component states (:class:`ComponentStatus`): ``running``; ``hung`` (stopped by a
signal, ``T`` in ``/proc``); ``dead`` (should run but does not: a power fault or a
crash); ``stopped`` (the lab is down). Health is only ever judged through the ports a
runbook would use: an SSH banner, ``GET /health``, a data root that exists.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppo_dr.errors import LabError
from ppo_dr.lab import netns, store_database
from ppo_dr.lab.labdir import FAULTS
from ppo_dr.lab.netns import NetPlan, public_host
from ppo_dr.lab.processes import LabProcesses, State
from ppo_dr.lab.topology import ServerPorts

PROBE_TIMEOUT = 1.0
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ComponentStatus:
    """One component of the lab as seen now, through its public ports."""

    name: str
    kind: str  # server | netsim | frontdoor | workload | store
    dc: str | None
    role: str | None
    pid: int | None
    port: int | None  # public port: SSH for a server, HTTP for the front door
    state: State
    healthy: bool
    detail: str
    http_port: int | None = None
    faults: tuple[str, ...] = ()


def probe_ssh(port: int, timeout: float = PROBE_TIMEOUT, host: str = LOOPBACK) -> str | None:
    """None if an SSH banner comes back from *host*:*port*, else what went wrong."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            end = time.monotonic() + timeout
            while b"\n" not in data and len(data) < 512:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
                if time.monotonic() > end:
                    break
    except TimeoutError:
        return "ssh: no banner (timed out)"
    except OSError as exc:
        return f"ssh: {exc.strerror or exc}"
    if not data.startswith(b"SSH-"):
        return "ssh: connection closed without a banner" if not data else "ssh: not an SSH banner"
    return None


def probe_http(
    port: int, path: str = "/health", timeout: float = PROBE_TIMEOUT, host: str = LOOPBACK
) -> str | None:
    """None if GET *path* on *host*:*port* answers 200, else what went wrong."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
    except TimeoutError:
        return f"http {path}: no answer (timed out)"
    except (OSError, http.client.HTTPException) as exc:
        return f"http {path}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}"
    finally:
        conn.close()
    if response.status != 200:
        return f"http {path}: {response.status} {response.reason}"
    return None


def probe_tcp(port: int, timeout: float = PROBE_TIMEOUT, host: str = LOOPBACK) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"tcp {port}: {exc.strerror or exc}"


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class LabStatus(LabProcesses):
    """Health probes of the lab's components and the status report built on them."""

    def _checks(
        self, name: str, comp: Mapping[str, Any], host: str
    ) -> list[Callable[[], str | None]]:
        """The probes that say *name* is healthy, all through public ports on *host*."""
        kind = comp["kind"]
        if kind == "server":
            ports = ServerPorts.from_dict(comp["ports"])
            root = self.data_root(name, comp["data_root"])
            checks: list[Callable[[], str | None]] = [
                lambda: probe_ssh(ports.ssh, host=host),
                # A mirror has no HTTP health to say its disk is gone; look at it directly.
                lambda: None if root.is_dir() else f"data root {comp['data_root']} missing",
            ]
            if ports.http is not None:
                http_port = ports.http
                checks.append(lambda: probe_http(http_port, host=host))
            return checks
        if kind == "frontdoor":
            return [lambda: probe_http(comp["port"], host=host)]
        # netsim, workload and workers: alive is healthy (netsim is probed via the servers)
        return []

    def _probe(
        self, names: Iterable[str], comps: Mapping[str, Any], net: NetPlan | None = None
    ) -> dict[str, str | None]:
        """Probe *names* concurrently; name -> None when healthy, else the first problem.

        In a namespaced lab the probes run on threads inside the wan namespace, where
        the public ports are, as a client on the internet would see them.
        """
        host = public_host(net)
        jobs: list[tuple[str, Callable[[], str | None]]] = []
        result: dict[str, str | None] = {}
        for name in names:
            _pid, pstate = self._pid_state(comps[name])
            if pstate == "dead":
                result[name] = "process not running"
            elif pstate == "hung":
                result[name] = "process stopped (SIGSTOP)"
            else:
                result[name] = None
                jobs.extend((name, check) for check in self._checks(name, comps[name], host))
        if jobs:
            wan = net.wan if net else None
            with ThreadPoolExecutor(
                max_workers=min(32, len(jobs)),
                initializer=(lambda: netns.enter(wan)) if wan else None,
            ) as pool:
                answers = list(pool.map(lambda job: (job[0], job[1]()), jobs))
            for name, problem in answers:
                if problem and result[name] is None:
                    result[name] = problem
        return result

    def _wait_healthy(self, state: dict[str, Any], names: list[str], deadline: float) -> None:
        comps = state["components"]
        waiting = list(names)
        problems: dict[str, str | None] = {}
        while True:
            for name in waiting:
                _pid, pstate = self._pid_state(comps[name])
                if pstate == "dead":
                    raise LabError(
                        f"{name} exited while starting; end of {self.log_file(name)}:\n"
                        f"{log_tail(self.log_file(name))}"
                    )
            problems = self._probe(waiting, comps, self._net(state))
            waiting = [name for name in waiting if problems.get(name)]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        first = waiting[0]
        listing = "; ".join(f"{name}: {problems[name]}" for name in waiting)
        raise LabError(
            f"not healthy in time: {listing}\nend of {self.log_file(first)}:\n"
            f"{log_tail(self.log_file(first))}"
        )

    # ---- status

    def status(self) -> list[ComponentStatus]:
        """Every component: process state and a health probe through its public ports."""
        state = self._require()
        comps = state["components"]
        running = state.get("state") in ("running", "starting")
        faults: Mapping[str, Mapping[str, Any]] = state.get("faults", {})
        problems = self._probe(list(comps), comps, self._net(state)) if running else {}
        cut = set(self._read_cut())
        out = []
        for name, comp in comps.items():
            pid, pstate = self._pid_state(comp)
            if not running:
                pstate, pid = "stopped", None
            recorded = tuple(f for f in FAULTS if f in faults.get(name, {}))
            problem = problems.get(name) if running else "lab is down"
            detail_parts = []
            if recorded:
                detail_parts.append("fault: " + ", ".join(recorded))
            if problem:
                detail_parts.append(problem)
            if comp["kind"] == "workload" and running:
                detail_parts.append(self._workload_detail())
            if comp["kind"] == "netsim" and running and cut:
                detail_parts.append(f"cut: {', '.join(sorted(cut))}")
            ports = comp.get("ports") or {}
            out.append(
                ComponentStatus(
                    name=name,
                    kind=comp["kind"],
                    dc=comp.get("dc"),
                    role=comp.get("role"),
                    pid=pid,
                    port=ports.get("ssh") if comp["kind"] == "server" else comp.get("port"),
                    state=pstate,
                    healthy=running and not problem,
                    detail="; ".join(detail_parts),
                    http_port=ports.get("http"),
                    faults=recorded,
                )
            )
        if (store := self._store_row(running)) is not None:
            out.append(store)
        return out

    def _store_row(self, running: bool) -> ComponentStatus | None:
        """The store's own PostgreSQL, for a lab that has one (``up --store postgres``):
        its postmaster, and whether it takes connections on its port."""
        if not store_database.recorded(self.directory):
            return None
        pid, port, recorded = store_database.postmaster(self.directory)
        state: State
        problem: str | None
        if not running or recorded == "stopped":
            state, pid, problem = "stopped", None, "lab is down"
        elif pid is None:
            state, problem = "dead", "postmaster not running (restarting?)"
        else:
            state, problem = "running", probe_tcp(port)
        detail = "PostgreSQL holding the state store"
        return ComponentStatus(
            name="store-db",
            kind="store",
            dc=None,
            role="store",
            pid=pid,
            port=port,
            state=state,
            healthy=state == "running" and problem is None,
            detail=f"{detail}; {problem}" if problem else detail,
        )

    def _workload_detail(self) -> str:
        """What the workload's status.json says: writes acknowledged, failing clients."""
        path = self.directory / "workload" / "status.json"
        try:
            age = time.time() - path.stat().st_mtime
            clients = json.loads(path.read_text(encoding="utf-8")).get("clients", {})
        except (OSError, ValueError, AttributeError):
            return "no writes recorded yet"
        acked = sum(int(c.get("acked") or 0) for c in clients.values())
        # A client is failing when writes after its last acknowledged one went
        # unanswered; one write still in flight is normal.
        failing = sorted(
            name
            for name, c in clients.items()
            if c.get("last_sent_seq") is not None
            and c["last_sent_seq"] - (c.get("last_ok_seq") or 0) >= 2
        )
        detail = f"{acked} writes acknowledged (status {age:.0f} s old)"
        if failing:
            detail += f"; failing: {', '.join(failing)}"
        return detail
