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
outlives it. Nothing here imports Prefect: the engine is run as a program.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ppo_dr.errors import LabError
from ppo_dr.lab import netns as lab_netns
from ppo_dr.lab import pid_identity as processes
from ppo_dr.lab.processes import spawn_detached
from ppo_dr.lab.store_network import (
    listen_addresses,
    pg_hba,
    pg_password,
    store_proxy_config,
    write_passfile,
)
from ppo_dr.lab.topology import free_ports
from ppo_dr.pids import alive

Echo = Callable[[str], None]

HOST = "127.0.0.1"
STATE_FILE = "controlplane.json"
#: Environment marker of every process we start; ``down`` sweeps by it.
MARKER_ENV = "PPO_DR_CONTROL_PLANE"
#: The engine's documented minimum for its PostgreSQL backend.
MIN_POSTGRES = (14, 9)
PG_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT = 180.0
STOP_TIMEOUT = 10.0
API_SERVERS = 2


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


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL ``bin`` directory; refuses one older than 14.9."""
    versions = sorted(
        (p for p in PG_ROOT.glob("*/bin/postgres")), key=lambda p: float(p.parent.parent.name)
    )
    if not versions:
        raise LabError(f"no PostgreSQL under {PG_ROOT} (apt-get install postgresql)")
    binary = versions[-1]
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"(\d+)\.(\d+)", out.stdout)
    if not match or (int(match[1]), int(match[2])) < MIN_POSTGRES:
        need = ".".join(map(str, MIN_POSTGRES))
        raise LabError(f"{binary}: {out.stdout.strip()}; Prefect needs PostgreSQL >= {need}")
    return binary.parent


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


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


def _log_tail(directory: Path, name: str) -> str:
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
    tail = _log_tail(Path(plane.directory), name)
    raise LabError(f"{what} did not come up; the end of logs/{name}.log:\n{tail}")


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


def start_postgres_server(plane: ControlPlane, env: dict[str, str]) -> None:
    """``pg_ctl start`` of the recorded cluster on its port (inside the control site's
    namespace, if any); waits until it accepts connections."""
    pg_dir = Path(plane.directory) / "pg"
    options = (
        f"-c listen_addresses={listen_addresses(plane)} -c port={plane.pg_port} "
        f"-c unix_socket_directories={pg_dir} -c max_connections=300"
    )
    command = [
        str(Path(plane.pg_bin) / "pg_ctl"), "-D", str(pg_dir / "data"),
        "-l", str(pg_dir / "postgres.log"), "-w", "-t", "60", "-o", options, "start",
    ]  # fmt: skip
    run(plane.inside(as_postgres(command)), env, "PostgreSQL start")


def postgres_component(plane: ControlPlane) -> Component:
    """The running postmaster as a component (its pid from ``postmaster.pid``)."""
    pg_dir = Path(plane.directory) / "pg"
    pid = int((pg_dir / "data" / "postmaster.pid").read_text().split()[0])
    return Component(
        "postgres", pid, plane.pg_port, ["postgres", str(pg_dir)], processes.start_ticks(pid)
    )


def _start_postgres(plane: ControlPlane, echo: Echo) -> None:
    directory = Path(plane.directory)
    pg_bin = postgres_bin()
    plane.pg_bin = str(pg_bin)
    pg_dir = directory / "pg"
    pg_dir.mkdir(mode=0o700)
    password = pg_password()
    (pg_dir / "password").write_text(password + "\n")
    (pg_dir / "password").chmod(0o600)
    env = marked_env(directory)
    if os.geteuid() == 0:
        shutil.chown(pg_dir, "postgres", "postgres")
        reach = subprocess.run(as_postgres(["test", "-x", str(pg_dir)]), check=False)
        if reach.returncode:
            raise LabError(
                f"the postgres user cannot reach {pg_dir}: a parent directory is private "
                "(mode 0700?); choose a directory under a world-traversable path"
            )
    run(
        as_postgres(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(pg_dir / "data"),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ]
        ),
        env,
        "initdb",
    )
    (pg_dir / "data" / "pg_hba.conf").write_text(pg_hba(plane.netns_address))
    start_postgres_server(plane, env)
    replace_component(plane, postgres_component(plane))
    save(plane)
    sql = (
        f"CREATE ROLE ppo LOGIN PASSWORD '{password}';"
        " CREATE DATABASE prefect OWNER ppo; CREATE DATABASE store OWNER ppo;"
    )
    for statement in sql.split(";"):
        if statement.strip():
            run(
                as_postgres(
                    [
                        str(pg_bin / "psql"),
                        "-q",
                        "-h",
                        str(pg_dir),
                        "-p",
                        str(plane.pg_port),
                        "-U",
                        "postgres",
                        "-c",
                        statement,
                    ]
                ),
                env,
                "creating the role and databases",
            )
    write_passfile(plane)
    echo(f"PostgreSQL: {listen_addresses(plane)} port {plane.pg_port} (databases prefect, store)")


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
        _start_postgres(plane, echo)
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
            raise LabError("Prefect services exited:\n" + _log_tail(directory, "services"))
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
