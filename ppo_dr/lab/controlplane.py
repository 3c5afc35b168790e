"""Prefect in its production shape on 127.0.0.1: the lab's control plane.

``up(DIR)`` starts, in order, and records each pid in ``DIR/controlplane.json`` the
moment it is spawned (so a ``kill -9`` of ``up`` leaves a record ``down`` acts on):

1. a private PostgreSQL cluster (Debian's binaries; the engine needs >= 14.9), run as
   the ``postgres`` user when we are root, with databases ``prefect`` and ``store``
   owned by a role whose password lives only in ``DIR/pg/password`` and the libpq
   file ``DIR/pgpass`` (mode 0600); in a namespaced lab it also listens on the control
   site's address for the lab's own /16 (:mod:`ppo_dr.lab.store_network`);
2. Redis, the broker, cache, causal ordering and lease storage of ``prefect-redis``;
3. the Prefect database migration, once (the API servers are told not to migrate:
   two of them migrating at once would race);
4. two API servers (``prefect server start --no-services``) on their own ports;
5. one background-services process (``prefect server services start``);
6. HAProxy on one address, health-checking ``/api/health`` every second and retrying
   a request on the other server when a connection fails or answers nothing.

With ``netns=NAME`` (the namespaced lab's control site) every process but HAProxy
runs inside that network namespace, on its loopback; HAProxy stays in the host's
namespace and listens in both (its ``namespace`` keyword): on 127.0.0.1 for the
operator and on the namespace's address for the workers in the data centres, and it
reaches the API servers inside the namespace, and forwards a TCP port on 127.0.0.1
to PostgreSQL there (the store's database, as the host sees it).

``down(DIR)`` stops them in reverse order and then sweeps every process whose
environment carries ``PPO_DR_CONTROL_PLANE=<DIR>`` (children included), so nothing
outlives it. Nothing here imports Prefect: the engine is run as a program. The record
and process helpers are in :mod:`ppo_dr.lab.controlplane_record`, the PostgreSQL
cluster in :mod:`ppo_dr.lab.controlplane_postgres`.
"""

from __future__ import annotations

import functools
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ppo_dr.errors import LabError
from ppo_dr.lab import pid_identity as processes
from ppo_dr.lab.controlplane_postgres import as_postgres, start_postgres
from ppo_dr.lab.controlplane_record import (
    HOST,
    MARKER_ENV,
    START_TIMEOUT,
    STATE_FILE,
    STOP_TIMEOUT,
    ControlPlane,
    Echo,
    load,
    log_tail,
    marked_env,
    run,
    save,
    spawn,
    wait_until,
)
from ppo_dr.lab.store_network import store_proxy_config
from ppo_dr.lab.topology import free_ports
from ppo_dr.pids import alive

API_SERVERS = 2


def api_healthy(url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET <url>/health`` answers 200 (*url* ends in ``/api``)."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def redis_pong(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def prefect_env(plane: ControlPlane, home: str) -> dict[str, str]:
    """The HA settings every server process shares, as the engine's "scale
    self-hosted Prefect" guide lists them (names checked in prefect 3.9.1 and
    prefect-redis 0.3.0 source)."""
    directory = Path(plane.directory)
    return marked_env(
        directory,
        {
            "PREFECT_HOME": str(directory / "prefect" / home),
            "PREFECT_API_DATABASE_CONNECTION_URL": plane.database_url("prefect"),
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_HOST": HOST,
            "PREFECT_REDIS_MESSAGING_PORT": str(plane.redis_port),
            "PREFECT_REDIS_MESSAGING_DB": "0",
            # Docket coordinates the services' loops; memory:// is single-server only.
            "PREFECT_SERVER_DOCKET_URL": f"redis://{HOST}:{plane.redis_port}/1",
            "PREFECT_SERVER_UI_API_URL": plane.api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **database_patience(),
        },
    )


def database_patience() -> dict[str, str]:
    """Longer database timeouts than the engine's 5 s connect / 10 s query: on a loaded
    machine (the 50x20 lab, load ~50 on 2 cores) PostgreSQL took longer than 5 s to
    fork a backend, and the API answered 500 to workers trying to start the probe."""
    return {
        "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30",
        "PREFECT_SERVER_DATABASE_TIMEOUT": "60",
    }


def _prefect() -> str:
    found = Path(sys.executable).with_name("prefect")
    return str(found) if found.exists() else "prefect"


def _haproxy_config(plane: ControlPlane) -> str:
    inside = f" namespace {plane.netns}" if plane.netns else ""
    servers = "\n".join(
        f"  server api-{i} {HOST}:{port}{inside} check" for i, port in enumerate(plane.api_ports, 1)
    )
    binds = f"  bind {HOST}:{plane.proxy_port}"
    if plane.netns and plane.netns_address:
        binds += f"\n  bind {plane.netns_address}:{plane.proxy_port}{inside}"
    return f"""# written by ppo_dr.lab.controlplane
global
  maxconn 1024
defaults
  mode http
  timeout connect 2s
  timeout client 5m
  timeout server 5m
  timeout tunnel 1h
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response
frontend prefect
{binds}
  default_backend prefect_api
backend prefect_api
  balance roundrobin
  option httpchk GET /api/health
  http-check expect status 200
  default-server inter 1s fall 2 rise 2
{servers}
{store_proxy_config(plane)}"""


def up(
    directory: Path,
    *,
    echo: Echo = print,
    netns: str | None = None,
    netns_address: str | None = None,
) -> ControlPlane:
    """Start the whole control plane in the empty or new *directory* (inside network
    namespace *netns*, reachable at *netns_address* there, when given); on any failure
    stop what was started and raise :class:`LabError` with the failing log's tail."""
    directory = directory.resolve()
    if (directory / STATE_FILE).exists() and load(directory).state != "stopped":
        raise LabError(f"a control plane is recorded in {directory}; run down first")
    for sub in ("pg", "redis", "prefect", "logs"):
        target = directory / sub
        if target.exists():
            shutil.rmtree(target)
    for sub in ("redis", "prefect", "logs"):
        (directory / sub).mkdir(parents=True)
    started = time.monotonic()
    ports = free_ports(4 + API_SERVERS)
    plane = ControlPlane(
        directory=str(directory),
        pg_port=ports[0],
        redis_port=ports[1],
        proxy_port=ports[2],
        store_proxy_port=ports[3],
        api_ports=ports[4:],
        netns=netns,
        netns_address=netns_address,
    )
    save(plane)
    try:
        start_postgres(plane, echo)
        spawn(
            plane,
            "redis",
            plane.inside(
                [
                    "redis-server",
                    "--bind",
                    HOST,
                    "--port",
                    str(plane.redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(directory / "redis"),
                ]
            ),
            marked_env(directory),
            plane.redis_port,
        )
        wait_until(plane.check(lambda: redis_pong(plane.redis_port)), "Redis", plane, "redis")
        echo(f"Redis: {HOST}:{plane.redis_port}")
        run(
            plane.inside([_prefect(), "server", "database", "upgrade", "-y"]),
            prefect_env(plane, "migrate"),
            "Prefect database migration",
            timeout=START_TIMEOUT,
        )
        # One at a time: each registers the block types at start-up, and two doing it
        # at once collide on a unique key (measured) and one exits.
        for i, port in enumerate(plane.api_ports, 1):
            spawn(
                plane,
                f"api-{i}",
                plane.inside(
                    [
                        _prefect(),
                        "server",
                        "start",
                        "--host",
                        HOST,
                        "--port",
                        str(port),
                        "--no-services",
                    ]
                ),
                prefect_env(plane, f"api-{i}"),
                port,
            )
            healthy = plane.check(functools.partial(api_healthy, f"http://{HOST}:{port}/api"))
            wait_until(healthy, f"Prefect API server api-{i}", plane, f"api-{i}")
        spawn(
            plane,
            "services",
            plane.inside([_prefect(), "server", "services", "start"]),
            prefect_env(plane, "services"),
            None,
        )
        config = directory / "haproxy.cfg"
        config.write_text(_haproxy_config(plane))
        run(["haproxy", "-c", "-q", "-f", str(config)], marked_env(directory), "haproxy -c")
        spawn(
            plane,
            "haproxy",
            ["haproxy", "-db", "-f", str(config)],
            marked_env(directory),
            plane.proxy_port,
        )
        wait_until(lambda: api_healthy(plane.api_url), "HAProxy", plane, "haproxy")
        if not alive(plane.component("services").pid):
            raise LabError("Prefect services exited:\n" + log_tail(directory, "services"))
    except BaseException:
        down(directory, echo=lambda _: None)
        raise
    plane.state = "up"
    plane.started_in_s = round(time.monotonic() - started, 1)
    save(plane)
    echo(
        f"Prefect API: {plane.api_url} (HAProxy over {len(plane.api_ports)} servers), "
        f"up in {plane.started_in_s} s"
    )
    return plane


def marked_pids(directory: Path) -> list[int]:
    """Every live process of the control plane in *directory*, children included."""
    return processes.marked_pids(MARKER_ENV, str(directory.resolve()))


def kill(directory: Path, name: str, signum: int = signal.SIGKILL) -> int:
    """Send *signum* to component *name* and its process group (a fault); its pid."""
    component = load(directory.resolve()).component(name)
    if component.is_running():
        processes.signal_group(component.pid, signum)
    return component.pid


def down(directory: Path, *, echo: Echo = print) -> list[str]:
    """Stop every component (reverse order), then every marked straggler; the names
    stopped. A recorded pid is signalled only while it is still the process we started
    (same start time, or our marker in its environment)."""
    directory = directory.resolve()
    plane = load(directory)
    marked = set(marked_pids(directory))
    stopped: list[str] = []
    for component in reversed(plane.components):
        if component.name == "postgres":
            pg_data = directory / "pg" / "data"
            if (pg_data / "postmaster.pid").exists():
                subprocess.run(
                    as_postgres(
                        [
                            str(Path(plane.pg_bin) / "pg_ctl"),
                            "-D",
                            str(pg_data),
                            "-m",
                            "fast",
                            "-w",
                            "-t",
                            "30",
                            "stop",
                        ]
                    ),
                    capture_output=True,
                    check=False,
                    timeout=60,
                )
            if component.is_running():  # pg_ctl could not stop it
                processes.signal_group(component.pid, signal.SIGKILL)
        elif component.is_running() or component.pid in marked:
            processes.signal_group(component.pid, signal.SIGTERM)
            if processes.until_gone([component.pid], STOP_TIMEOUT):
                processes.signal_group(component.pid, signal.SIGKILL)
        stopped.append(component.name)
    left = marked_pids(directory)
    for pid in left:
        processes.signal_group(pid, signal.SIGTERM)
    left = processes.until_gone(left, STOP_TIMEOUT)
    for pid in left:
        processes.signal_group(pid, signal.SIGKILL)
    if processes.until_gone(left, STOP_TIMEOUT):
        raise LabError(f"control plane in {directory}: processes {left} survived SIGKILL")
    for component in plane.components:
        processes.reap(component.pid)
    plane.state = "stopped"
    save(plane)
    echo(f"control plane stopped: {', '.join(stopped) or 'nothing was running'}")
    return stopped
