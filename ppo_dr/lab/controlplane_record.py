"""The record of a lab control plane and how its processes are started and awaited.

``DIR/controlplane.json`` holds a :class:`ControlPlane`: its ports and one
:class:`Component` per process, written the moment each is spawned so a ``kill -9``
of ``up`` leaves a record ``down`` can act on. Kept apart from the start-up order
(:mod:`ppo_dr.lab.controlplane`) so the PostgreSQL cluster
(:mod:`ppo_dr.lab.controlplane_postgres`) and the restart faults
(:mod:`ppo_dr.lab.controlplane_restart`) share it without importing each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ppo_dr.errors import LabError
from ppo_dr.lab import netns as lab_netns
from ppo_dr.lab import pid_identity as processes
from ppo_dr.lab.processes import spawn_detached
from ppo_dr.pids import alive

Echo = Callable[[str], None]

HOST = "127.0.0.1"
STATE_FILE = "controlplane.json"
#: Where a distributed lab keeps its control plane: ``<lab>/control-plane``.
LAB_SUBDIR = "control-plane"
#: Environment marker of every process we start; ``down`` sweeps by it.
MARKER_ENV = "PPO_DR_CONTROL_PLANE"
START_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0


@dataclass
class Component:
    """One process of the control plane: what ran, with which pid and port."""

    name: str
    pid: int
    port: int | None
    command: list[str]
    #: Start time of the process (clock ticks after boot): a recycled pid has another.
    started: int | None = None

    def is_running(self) -> bool:
        """Whether our process still runs (Redis rewrites its environment, so the
        marker cannot tell; the start time can)."""
        ticks = processes.start_ticks(self.pid)
        return self.started is not None and ticks == self.started and alive(self.pid)


@dataclass
class ControlPlane:
    """What ``DIR/controlplane.json`` holds."""

    directory: str
    state: str = "starting"
    pg_bin: str = ""
    pg_port: int = 0
    redis_port: int = 0
    api_ports: list[int] = field(default_factory=list)
    proxy_port: int = 0
    components: list[Component] = field(default_factory=list)
    started_in_s: float | None = None
    #: The network namespace of the control site, and its address there (namespaced lab).
    netns: str | None = None
    netns_address: str | None = None
    #: HAProxy's TCP port that forwards to PostgreSQL from the host (namespaced lab).
    store_proxy_port: int = 0

    @property
    def api_url(self) -> str:
        """The one address clients use: HAProxy's."""
        return f"http://{HOST}:{self.proxy_port}/api"

    @property
    def inner_api_url(self) -> str:
        """HAProxy's address as the data centres' workers see it (namespaced lab)."""
        if self.netns_address is None:
            return self.api_url
        return f"http://{self.netns_address}:{self.proxy_port}/api"

    def inside(self, command: list[str]) -> list[str]:
        """*command* run inside the control site's namespace (if it has one)."""
        return [*lab_netns.exec_prefix(self.netns), *command]

    def check(self, probe: Callable[[], bool]) -> Callable[[], bool]:
        """*probe* made to run from inside the control site's namespace."""
        return lambda: lab_netns.call_in(self.netns, probe)

    def component(self, name: str) -> Component:
        """The component called *name*; :class:`LabError` names the known ones."""
        for c in self.components:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.components)
        raise LabError(f"no control-plane component {name!r}; known: {known}")

    def database_url(self, database: str, *, driver: str = "postgresql+asyncpg") -> str:
        """SQLAlchemy URL of *database* (``prefect`` or ``store``); carries the password."""
        password = (Path(self.directory) / "pg" / "password").read_text().strip()
        return f"{driver}://ppo:{password}@{HOST}:{self.pg_port}/{database}"


def load(directory: Path) -> ControlPlane:
    """The recorded control plane of *directory*."""
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LabError(f"no control plane recorded in {directory}: {exc}") from exc
    components = [Component(**c) for c in data.pop("components", [])]
    return ControlPlane(components=components, **data)


def save(plane: ControlPlane) -> None:
    path = Path(plane.directory) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(plane), indent=2), encoding="utf-8")
    tmp.replace(path)


def run(command: list[str], env: dict[str, str], what: str, timeout: float = 120.0) -> None:
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise LabError(f"{what} failed (exit {done.returncode}):\n" + "\n".join(tail))


def marked_env(directory: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env[MARKER_ENV] = str(directory)
    env.update(extra or {})
    return env


def replace_component(plane: ControlPlane, component: Component) -> None:
    """Record *component*, in place of the one of its name (a restart) or appended."""
    names = [c.name for c in plane.components]
    if component.name in names:
        plane.components[names.index(component.name)] = component
    else:
        plane.components.append(component)


def spawn(
    plane: ControlPlane, name: str, command: list[str], env: dict[str, str], port: int | None
) -> Component:
    """Start *command* in its own session, log to ``logs/NAME.log``, record it at once
    (in place of a component of the same name: a restart)."""
    directory = Path(plane.directory)
    log = (directory / "logs" / f"{name}.log").open("ab")
    try:
        proc = spawn_detached(command, env, log, cwd=directory)
    finally:
        log.close()
    component = Component(name, proc.pid, port, command, processes.start_ticks(proc.pid))
    replace_component(plane, component)
    save(plane)
    return component


def log_tail(directory: Path, name: str) -> str:
    try:
        lines = (directory / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-15:])


def wait_until(
    check: Callable[[], bool],
    what: str,
    plane: ControlPlane,
    name: str,
    timeout: float = START_TIMEOUT,
) -> None:
    deadline = time.monotonic() + timeout
    pid = next((c.pid for c in plane.components if c.name == name), None)
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not alive(pid):
            break
        time.sleep(0.3)
    tail = log_tail(Path(plane.directory), name)
    raise LabError(f"{what} did not come up; the end of logs/{name}.log:\n{tail}")
