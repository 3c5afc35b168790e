"""One component of the lab's control plane lost and brought back: the restart faults.

``restart(DIR, NAME, down_s=...)`` stops component NAME the way a crash would and
starts it again with the same command, port and environment, then waits until it
answers. That is what systemd's ``Restart=always`` does on real hosts, and what the
"what survives which loss" table of docs/deploy.md is measured against:

- ``postgres``: ``pg_ctl stop -m immediate`` (every backend quits at once without a
  checkpoint: the next start recovers from the WAL, as after a power loss), then
  ``pg_ctl start`` on the same port;
- ``redis``: SIGKILL. The lab's Redis keeps nothing on disk (``--save ""``), so it
  comes back empty: streams, consumer groups and leases in flight are lost, as with
  a Redis without persistence on real hosts;
- ``api-N``, ``services``, ``haproxy``: SIGKILL of the process group, then the same
  command again.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable
from pathlib import Path

from ppo_dr.errors import LabError
from ppo_dr.lab import pid_identity as processes
from ppo_dr.lab.controlplane import api_healthy, prefect_env, redis_pong
from ppo_dr.lab.controlplane_postgres import (
    as_postgres,
    postgres_component,
    start_postgres_server,
)
from ppo_dr.lab.controlplane_record import (
    HOST,
    STOP_TIMEOUT,
    ControlPlane,
    load,
    marked_env,
    replace_component,
    run,
    save,
    spawn,
    wait_until,
)
from ppo_dr.pids import alive


def _answers(plane: ControlPlane, name: str, pid: Callable[[], int]) -> Callable[[], bool]:
    """How to tell that component *name* is back: it answers on its port (the
    services have none: alive is all we can see from outside)."""
    if name == "redis":
        return plane.check(functools.partial(redis_pong, plane.redis_port))
    if name.startswith("api-"):
        port = plane.component(name).port
        return plane.check(functools.partial(api_healthy, f"http://{HOST}:{port}/api"))
    if name == "haproxy":
        return functools.partial(api_healthy, plane.api_url)
    return lambda: alive(pid())


def _environment(plane: ControlPlane, name: str) -> dict[str, str]:
    if name == "services" or name.startswith("api-"):
        return prefect_env(plane, name)
    return marked_env(Path(plane.directory))


def crash_and_start(
    pid: int,
    start: Callable[[], None],
    *,
    down_s: float = 0.0,
    crash: Callable[[], None] | None = None,
) -> float:
    """The crash-and-come-back every restart fault shares (a control-plane component
    here, the chaos run's Prefect server in ``cli/chaos.py``): *crash* (by default
    SIGKILL of *pid*'s process group), wait until *pid* is gone and reaped, stay down
    *down_s* seconds, then *start*, which returns once the new one answers. The seconds
    from the crash until then. Every member of *pid*'s group is waited for, not only
    its leader: a child that outlives the leader may still hold the ports or files the
    new one needs."""
    members = {pid, *processes.group_members(pid)}
    crashed = time.monotonic()
    if crash is None:
        processes.signal_group(pid, signal.SIGKILL)
    else:
        crash()
    processes.until_gone(sorted(members), STOP_TIMEOUT)
    processes.reap(pid)
    time.sleep(down_s)
    start()
    return round(time.monotonic() - crashed, 1)


def restart_together(directory: Path, names: list[str], *, down_s: float = 0.0) -> float:
    """Crash every component of *names* at once (SIGKILL of each process group, e.g.
    both API servers: the whole API gone, not one server behind HAProxy), keep them
    down *down_s* seconds, start each again and wait until each answers; the seconds
    from the crash to the last answer. PostgreSQL has its own crash: use :func:`restart`."""
    directory = directory.resolve()
    plane = load(directory)
    old = [plane.component(name) for name in names]  # unknown names refused first
    if any(c.name == "postgres" for c in old):
        raise LabError("restart_together kills processes: restart postgres on its own")
    crashed = time.monotonic()
    running = [c for c in old if c.is_running()]
    members = {m for c in running for m in (c.pid, *processes.group_members(c.pid))}
    for component in running:
        processes.signal_group(component.pid, signal.SIGKILL)
    processes.until_gone(sorted(members), STOP_TIMEOUT)
    for component in running:
        processes.reap(component.pid)
    time.sleep(down_s)
    for component in old:
        new = spawn(
            plane,
            component.name,
            component.command,
            _environment(plane, component.name),
            component.port,
        )
        wait_until(
            _answers(plane, component.name, functools.partial(getattr, new, "pid")),
            component.name,
            plane,
            component.name,
        )
    return round(time.monotonic() - crashed, 1)


def restart(directory: Path, name: str, *, down_s: float = 0.0) -> float:
    """Crash component *name* of the control plane in *directory*, keep it down
    *down_s* seconds, start it again and wait until it answers; the seconds from the
    crash to its answer. :class:`~ppo_dr.errors.LabError` names an unknown component."""
    directory = directory.resolve()
    plane = load(directory)
    old = plane.component(name)

    def crash() -> None:
        if name == "postgres":
            data = directory / "pg" / "data"
            pg_ctl = str(Path(plane.pg_bin) / "pg_ctl")
            stop = [pg_ctl, "-D", str(data), "-m", "immediate", "stop"]
            run(as_postgres(stop), marked_env(directory), "PostgreSQL stop")
        elif old.is_running():  # its pid, not one the system gave to another since
            processes.signal_group(old.pid, signal.SIGKILL)

    def start() -> None:
        if name == "postgres":
            start_postgres_server(plane, marked_env(directory))
            replace_component(plane, postgres_component(plane))
            save(plane)
        else:
            new = spawn(plane, name, old.command, _environment(plane, name), old.port)
            wait_until(_answers(plane, name, lambda: new.pid), name, plane, name)

    return crash_and_start(old.pid, start, down_s=down_s, crash=crash)
