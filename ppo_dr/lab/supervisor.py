"""The lab supervisor: brings the embedded fleet up, breaks it, heals it, takes it down.

:class:`Lab` owns one lab directory (layout in ``docs/lab.md``). Every process it
starts is recorded in ``lab.json`` the moment it is spawned, so nothing it started can
be forgotten, not even if ``lab up`` itself is killed with ``kill -9``: ``down`` stops
every recorded pid that is still ours (checked against ``/proc/<pid>/cmdline``, so a
recycled pid is never hit) and then sweeps ``/proc`` for any lab process of this
directory that was spawned but not yet recorded.

Faults are recorded in ``lab.json`` too, so ``status`` shows them and ``heal`` knows
what to undo:

    power     SIGKILL of the server process     heal: start it again, same ports and disk
    hang      SIGSTOP                           heal: SIGCONT
    disk      data root moved to quarantine/    heal: moved back
    network   server listed in net/cut.json     heal: removed (netsim re-reads on SIGHUP)

Component states in :class:`ComponentStatus`: ``running``; ``hung`` (stopped by a
signal, ``T`` in ``/proc``); ``dead`` (should run but does not: a power fault or a
crash); ``stopped`` (the lab is down).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml

from ppo_dr.errors import InventoryError, LabError
from ppo_dr.ids import is_valid_id
from ppo_dr.lab import keys as lab_keys
from ppo_dr.lab import seed as lab_seed
from ppo_dr.lab import topology
from ppo_dr.lab.topology import ServerPlan, ServerPorts, write_text_atomic

if TYPE_CHECKING:
    from ppo_dr.inventory import Server

Fault = Literal["power", "hang", "disk", "network"]
FAULTS: tuple[str, ...] = get_args(Fault)
State = Literal["running", "hung", "dead", "stopped"]

MODULES = {
    "server": "ppo_dr.lab.server",
    "netsim": "ppo_dr.lab.netsim",
    "frontdoor": "ppo_dr.lab.frontdoor",
    "workload": "ppo_dr.lab.workload",
}
LAB_FILE = "lab.json"
LOCK_FILE = ".lab.lock"
PROBE_TIMEOUT = 1.0
STOP_GRACE = 3.0
# Heal undoes faults in this order: the disk is back before the process restarts.
_HEAL_ORDER = ("disk", "network", "hang", "power")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ComponentStatus:
    """One component of the lab as seen now, through its public ports."""

    name: str
    kind: str  # server | netsim | frontdoor | workload
    dc: str | None
    role: str | None
    pid: int | None
    port: int | None  # public port: SSH for a server, HTTP for the front door
    state: State
    healthy: bool
    detail: str
    http_port: int | None = None
    faults: tuple[str, ...] = ()


# --------------------------------------------------------------------------- processes


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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


def _is_ours(pid: int | None, module: str, directory: Path) -> bool:
    """True if *pid* is a live lab process running *module* for *directory*."""
    if not pid or pid == os.getpid():
        return False
    return _lab_module_of(_cmdline(pid), directory) == module


def _alive(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect *pid*'s exit status if it is our child (a zombie otherwise lingers)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _wait_gone(pids: Iterable[int], deadline: float) -> list[int]:
    """Wait until every pid has exited or *deadline* passes; return the survivors."""
    left = list(pids)
    while left:
        for pid in left:
            _reap(pid)
        left = [pid for pid in left if _alive(pid)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return left


def _lab_processes(directory: Path) -> list[tuple[int, str]]:
    """Every live process whose command line is a lab module of *directory*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        module = _lab_module_of(_cmdline(pid), directory)
        if module is not None and _alive(pid):
            found.append((pid, module))
    return found


def _tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# --------------------------------------------------------------------------- probes


def probe_ssh(port: int, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if an SSH banner comes back from 127.0.0.1:*port*, else what went wrong."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
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


def probe_http(port: int, path: str = "/health", timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if GET *path* on 127.0.0.1:*port* answers 200, else what went wrong."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
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


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _checked_mirrors(
    server_id: str, dc: str, mirrors: Sequence[str], servers: Iterable[ServerPlan]
) -> tuple[str, ...]:
    """*mirrors* for a new app server in *dc*, if they are a valid pair (on-site first)."""
    by_id = {s.id: s for s in servers}
    for mirror_id in mirrors:
        found = by_id.get(mirror_id) if isinstance(mirror_id, str) else None
        if found is None:
            raise LabError(f"mirror {mirror_id!r} of {server_id} is not a server of the lab")
        if found.role != "mirror":
            raise LabError(
                f"{mirror_id} cannot mirror {server_id}: it is {_article(found.role)} server"
            )
    if len(set(mirrors)) != len(mirrors):
        raise LabError(f"mirrors of {server_id} name a server twice: {', '.join(mirrors)}")
    onsite = [m for m in mirrors if by_id[m].dc == dc]
    if len(onsite) != 1 or len(onsite) == len(mirrors):
        raise LabError(
            f"mirrors of {server_id} must be one mirror in {dc} and at least one in another "
            f"data centre (got {', '.join(mirrors) or 'none'})"
        )
    return (onsite[0], *(m for m in mirrors if m != onsite[0]))


def probe_tcp(port: int, timeout: float = PROBE_TIMEOUT) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return None
    except OSError as exc:
        return f"tcp {port}: {exc.strerror or exc}"


# --------------------------------------------------------------------------- the lab


class Lab:
    """The embedded lab fleet in one directory (see ``docs/lab.md``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ---- paths

    @property
    def fleet_file(self) -> Path:
        return self.directory / "fleet.yaml"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def operator_key(self) -> Path:
        return self.directory / "keys" / lab_keys.OPERATOR_KEY

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.directory / 'state.db'}"

    @property
    def state_file(self) -> Path:
        return self.directory / LAB_FILE

    @property
    def routes_file(self) -> Path:
        return self.directory / "net" / "routes.json"

    @property
    def cut_file(self) -> Path:
        return self.directory / "net" / "cut.json"

    def server_dir(self, server_id: str) -> Path:
        return self.directory / "servers" / server_id

    def data_root(self, server_id: str, data_root: str) -> Path:
        """Where a server's data root (``/srv/ppo``) is on this machine."""
        return self.server_dir(server_id) / "fs" / data_root.lstrip("/")

    def log_file(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    # ---- lab.json

    def _load(self) -> dict[str, Any] | None:
        try:
            text = self.state_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LabError(f"cannot read {self.state_file}: {exc.strerror}") from exc
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise LabError(f"{self.state_file} is not valid JSON: {exc}") from exc
        if not isinstance(state, dict) or "components" not in state:
            raise LabError(f"{self.state_file} is not a lab state file")
        return state

    def _require(self) -> dict[str, Any]:
        state = self._load()
        if state is None:
            raise LabError(
                f"no lab in {self.directory} "
                f"(start one with `ppo-dr lab up --dir {self.directory}`)"
            )
        return state

    def _require_running(self) -> dict[str, Any]:
        state = self._require()
        if state.get("state") != "running":
            raise LabError(
                f"the lab in {self.directory} is not running (state: {state.get('state')}); "
                "`ppo-dr lab up` first"
            )
        return state

    def _save(self, state: dict[str, Any]) -> None:
        state["updated_at"] = _now()
        write_text_atomic(self.state_file, json.dumps(state, indent=1, ensure_ascii=False) + "\n")

    @contextlib.contextmanager
    def _locked(
        self, timeout: float = 60.0, *, required: bool = True, create: bool = False
    ) -> Iterator[None]:
        """Serialise changes to the lab (lab.json, fleet.yaml, cut.json) across processes."""
        if create:
            self.directory.mkdir(parents=True, exist_ok=True)
        elif not self.directory.is_dir():
            raise LabError(f"no lab in {self.directory} (the directory does not exist)")
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        if required:
                            raise LabError(
                                f"the lab in {self.directory} is busy (another `ppo-dr lab` "
                                "command holds its lock); try again"
                            ) from None
                        break
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    # ---- processes

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
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", comp["module"], "--config", comp["config"]],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                close_fds=True,
                start_new_session=True,
                cwd=self.directory,
                env=env,
            )
        self._children[proc.pid] = proc
        if comp.get("pid"):
            state.setdefault("retired_pids", []).append([comp["module"], comp["pid"]])
        comp["pid"] = proc.pid
        comp["started_at"] = _now()
        self._save(state)
        return proc.pid

    def _poll_children(self) -> None:
        for proc in list(self._children.values()):
            if proc.poll() is not None:
                self._children.pop(proc.pid, None)

    def _pid_state(self, comp: Mapping[str, Any]) -> tuple[int | None, State]:
        """(pid if ours and alive, 'running' | 'hung' | 'dead')."""
        self._poll_children()
        pid = comp.get("pid")
        if not pid or not _is_ours(pid, comp["module"], self.directory):
            return None, "dead"
        state = _proc_state(pid)
        if state in (None, "Z", "X"):
            return None, "dead"
        return pid, "hung" if state in ("T", "t") else "running"

    def _stop_pids(self, victims: list[tuple[str, int]]) -> list[str]:
        """SIGCONT, SIGTERM, wait, SIGKILL: each (name, pid) already checked to be ours."""
        for _name, pid in victims:
            _signal(pid, signal.SIGCONT)  # a hung process cannot act on SIGTERM
            _signal(pid, signal.SIGTERM)
        left = _wait_gone([pid for _, pid in victims], time.monotonic() + STOP_GRACE)
        for pid in left:
            _signal(pid, signal.SIGKILL)
        _wait_gone(left, time.monotonic() + 2.0)
        self._poll_children()
        return [name for name, _pid in victims]

    def _stop_everything(self, state: dict[str, Any] | None) -> list[str]:
        """Stop recorded processes that are still ours, then sweep /proc for strays."""
        victims: list[tuple[str, int]] = []
        if state is not None:
            for name, comp in state["components"].items():
                pid = comp.get("pid")
                if pid and _is_ours(pid, comp["module"], self.directory):
                    victims.append((name, pid))
            for module, pid in state.get("retired_pids", []):
                if _is_ours(pid, module, self.directory):
                    victims.append((f"{module.rsplit('.', 1)[-1]} (pid {pid})", pid))
        stopped = self._stop_pids(victims) if victims else []
        strays = [
            (f"stray {module.rsplit('.', 1)[-1]} (pid {pid})", pid)
            for pid, module in _lab_processes(self.directory)
        ]
        if strays:
            for _name, pid in strays:
                _signal(pid, signal.SIGCONT)
                _signal(pid, signal.SIGKILL)
            _wait_gone([pid for _, pid in strays], time.monotonic() + 2.0)
            stopped += [name for name, _ in strays]
        if state is not None:
            for comp in state["components"].values():
                if comp.get("pid"):
                    comp["last_pid"] = comp["pid"]
                comp["pid"] = None
            state["retired_pids"] = []
        return stopped

    # ---- up

    def up(
        self,
        *,
        clients: int = 20,
        size_mb: int = 200,
        fast: bool = False,
        seed: int = 1,
        timeout: float = 15.0,
        progress: Progress | None = None,
    ) -> None:
        """Generate the fleet, start every component and wait until all are healthy.

        *timeout* bounds the whole start except the time spent writing client data
        (disk-bound; it overlaps the processes' start-up). On any failure everything
        started is stopped again and :class:`LabError` says which component failed,
        with the end of its log.
        """
        say = progress or (lambda _message: None)
        started = time.monotonic()
        if clients < 1:
            raise LabError(f"a lab needs at least one client (got {clients})")
        if size_mb < 0:
            raise LabError(f"--size must not be negative (got {size_mb})")
        self._refuse_foreign_directory()
        with self._locked(create=True):
            self._prepare_directory()
            say(
                f"lab {self.directory}: starting {clients} clients, {size_mb} MiB of data"
                f"{', fast timings' if fast else ''}"
            )
            state: dict[str, Any] | None = None
            try:
                state = self._generate(
                    clients=clients, size_mb=size_mb, fast=fast, seed=seed, say=say
                )
                self._start(state, size_mb=size_mb, seed=seed, deadline=started + timeout, say=say)
            except BaseException as exc:
                stopped = self._stop_everything(state)
                if state is not None:
                    state["state"] = "failed"
                    state["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self._save(state)
                if stopped:
                    say(f"stopped what had started: {', '.join(stopped)}")
                if isinstance(exc, LabError):
                    raise
                if isinstance(exc, Exception):
                    raise LabError(f"lab up failed: {type(exc).__name__}: {exc}") from exc
                raise
            state["state"] = "running"
            state["healthy_after_s"] = round(time.monotonic() - started, 2)
            self._save(state)
        say(f"healthy after {state['healthy_after_s']:.1f} s")

    def _refuse_foreign_directory(self) -> None:
        """A non-empty directory that holds no lab is someone else's: leave it alone."""
        if not self.directory.is_dir() or self.state_file.exists():
            return
        if any(p.name != LOCK_FILE for p in self.directory.iterdir()):
            raise LabError(
                f"{self.directory} is not empty and holds no lab ({LAB_FILE} missing); "
                "pick an empty or new directory"
            )

    def _prepare_directory(self) -> None:
        """Refuse a running lab or a foreign directory; clear the remains of an old lab."""
        self._refuse_foreign_directory()  # again, under the lock
        state = self._load() if self.state_file.exists() else None
        if state is not None:
            live = [
                name
                for name, comp in state["components"].items()
                if _is_ours(comp.get("pid"), comp["module"], self.directory)
            ]
            if live:
                raise LabError(
                    f"the lab in {self.directory} is already up ({len(live)} processes running; "
                    "see `ppo-dr lab status`, or `ppo-dr lab down` first)"
                )
        if self.directory.exists():
            entries = [p for p in self.directory.iterdir() if p.name != LOCK_FILE]
            self._stop_everything(state)  # strays of a crashed `up` (none normally)
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.directory.mkdir(parents=True, exist_ok=True)
        # Mark the directory as a lab's at once: a crash from here on leaves a lab
        # directory that `down` and the next `up` recognise.
        self._save(
            {"version": 1, "lab_dir": str(self.directory), "state": "starting", "components": {}}
        )

    def _generate(
        self, *, clients: int, size_mb: int, fast: bool, seed: int, say: Progress
    ) -> dict[str, Any]:
        """Keys, ports, configs and fleet.yaml (checked); lab.json in state 'starting'."""
        d = self.directory
        for sub in ("keys", "net", "logs", "servers", "quarantine", "workload"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "keys").chmod(0o700)
        servers = list(topology.SERVERS)
        client_plans = topology.plan_clients(clients, servers)
        keys = lab_keys.generate_lab_keys(d / "keys", [s.id for s in servers])
        free = topology.free_ports(topology.ports_needed(servers) + 1)
        frontdoor_port = free.pop(0)
        ports = {s.id: topology.allocate_server_ports(s, free) for s in servers}
        say(f"generated the operator key and host keys for {len(servers)} servers")

        document = topology.fleet_document(
            lab_dir=d,
            servers=servers,
            clients=client_plans,
            ports=ports,
            host_keys=keys.host_public,
            frontdoor_port=frontdoor_port,
            size_mb=size_mb,
            fast=fast,
        )
        topology.write_yaml(self.fleet_file, document, topology.FLEET_HEADER)
        self._check_fleet(self.fleet_file)
        lab_keys.write_known_hosts(
            self.known_hosts, [(ports[s.id].ssh, keys.host_public[s.id]) for s in servers]
        )
        say(
            f"fleet.yaml: {len(topology.DATA_CENTRES)} data centres, {len(servers)} servers, "
            f"{len(client_plans)} clients: valid"
        )

        components: dict[str, Any] = {
            "netsim": {
                "kind": "netsim",
                "module": MODULES["netsim"],
                "config": str(self.routes_file),
                "pid": None,
            }
        }
        for server in servers:
            components[server.id] = self._server_component(server, ports[server.id])
            self._write_server_config(server, ports[server.id])
        self._write_routes(components)
        write_text_atomic(self.cut_file, json.dumps({"servers": []}) + "\n")
        components["frontdoor"] = {
            "kind": "frontdoor",
            "module": MODULES["frontdoor"],
            "config": str(d / "frontdoor.json"),
            "port": frontdoor_port,
            "pid": None,
        }
        components["workload"] = {
            "kind": "workload",
            "module": MODULES["workload"],
            "config": str(d / "workload.json"),
            "pid": None,
        }
        frontdoor = {
            "lab_dir": str(d),
            "port": frontdoor_port,
            "fleet": str(self.fleet_file),
            "store_url": self.store_url,
        }
        workload = {
            "lab_dir": str(d),
            "frontdoor": f"http://127.0.0.1:{frontdoor_port}",
            "interval": 1.0,
            "acks": str(d / "workload" / "acks.jsonl"),
            "fleet": str(self.fleet_file),
        }
        write_text_atomic(d / "frontdoor.json", json.dumps(frontdoor, indent=1) + "\n")
        write_text_atomic(d / "workload.json", json.dumps(workload, indent=1) + "\n")
        state: dict[str, Any] = {
            "version": 1,
            "lab_dir": str(d),
            "state": "starting",
            "created_at": _now(),
            "options": {"clients": clients, "size_mb": size_mb, "fast": fast, "seed": seed},
            "frontdoor_port": frontdoor_port,
            "components": components,
            "faults": {},
            "retired_pids": [],
        }
        self._save(state)
        return state

    def _check_fleet(self, path: Path) -> None:
        from ppo_dr.inventory import load_fleet

        try:
            load_fleet(path)
        except InventoryError as exc:
            raise LabError(
                f"the generated fleet does not pass the inventory check (a bug): {exc}"
            ) from exc

    def _server_component(self, server: ServerPlan, ports: ServerPorts) -> dict[str, Any]:
        return {
            "kind": "server",
            "module": MODULES["server"],
            "config": str(self.server_dir(server.id) / "server.json"),
            "dc": server.dc,
            "role": server.role,
            "data_root": server.data_root,
            "ports": ports.as_dict(),
            "pid": None,
        }

    def _write_server_config(self, server: ServerPlan, ports: ServerPorts) -> None:
        d = self.directory
        config = {
            "id": server.id,
            "dc": server.dc,
            "role": server.role,
            "lab_dir": str(d),
            "fs_root": str(self.server_dir(server.id) / "fs"),
            "data_root": server.data_root,
            "ssh_port": ports.ssh_internal,
            "http_port": ports.http_internal,
            "host_key": str(d / "keys" / lab_keys.host_key_name(server.id)),
            "authorized_keys": str(d / "keys" / lab_keys.AUTHORIZED_KEYS),
            "user": topology.SSH_USER,
            "fleet": str(self.fleet_file),
        }
        self.data_root(server.id, server.data_root).mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            self.server_dir(server.id) / "server.json", json.dumps(config, indent=1) + "\n"
        )

    def _write_routes(self, components: Mapping[str, Any]) -> None:
        routes = []
        for name, comp in components.items():
            if comp["kind"] != "server":
                continue
            ports = ServerPorts.from_dict(comp["ports"])
            routes.append(
                {
                    "server": name,
                    "dc": comp["dc"],
                    "kind": "ssh",
                    "listen": ports.ssh,
                    "target": ports.ssh_internal,
                }
            )
            if ports.http is not None:
                routes.append(
                    {
                        "server": name,
                        "dc": comp["dc"],
                        "kind": "http",
                        "listen": ports.http,
                        "target": ports.http_internal,
                    }
                )
        document = {
            "lab_dir": str(self.directory),
            "cut_file": str(self.cut_file),
            "routes": routes,
        }
        write_text_atomic(self.routes_file, json.dumps(document, indent=1) + "\n")

    def _start(
        self, state: dict[str, Any], *, size_mb: int, seed: int, deadline: float, say: Progress
    ) -> None:
        """Placements, then netsim, servers and front door at once; data while they import.

        The workload starts last, once its clients' data exists. Seeding runs on a few
        threads so that its disk waits overlap the processes' start-up work.
        """
        from ppo_dr.inventory import load_fleet
        from ppo_dr.store import Store

        fleet = load_fleet(self.fleet_file)
        store = Store(self.store_url)
        try:
            store.upgrade()
            placed = store.seed_placements({c.id: c.server for c in fleet.clients})
        finally:
            store.close()
        say(f"state store ready: {placed} client placements")

        comps = state["components"]
        for name in comps:
            if name != "workload":
                self._spawn(state, name)
        servers = sum(1 for c in comps.values() if c["kind"] == "server")
        say(f"started netsim, {servers} servers and the front door")

        t = time.monotonic()
        per_client = size_mb * lab_seed.MIB // max(len(fleet.clients), 1)

        def seed_one(client_id: str) -> lab_seed.SeedStats:
            client = fleet.client(client_id)
            home = fleet.server(client.server)
            directory = self.data_root(home.id, home.data_root) / client.data_path
            return lab_seed.seed_client(directory, client.id, per_client, seed=seed)

        with ThreadPoolExecutor(max_workers=4) as pool:
            stats = list(pool.map(seed_one, [c.id for c in fleet.clients]))
        # Writing the data is bound by a disk we share; the timeout is for the processes.
        deadline += time.monotonic() - t
        say(
            f"seeded {len(stats)} clients: {sum(s.bytes for s in stats) / lab_seed.MIB:.0f} MiB "
            f"in {sum(s.files for s in stats)} files ({time.monotonic() - t:.1f} s)"
        )
        self._spawn(state, "workload")
        say("started the workload writer")
        self._wait_healthy(state, list(comps), deadline)

    # ---- health

    def _checks(self, name: str, comp: Mapping[str, Any]) -> list[Callable[[], str | None]]:
        """The probes that say *name* is healthy, all through public ports."""
        kind = comp["kind"]
        if kind == "server":
            ports = ServerPorts.from_dict(comp["ports"])
            root = self.data_root(name, comp["data_root"])
            checks: list[Callable[[], str | None]] = [
                lambda: probe_ssh(ports.ssh),
                # A mirror has no HTTP health to say its disk is gone; look at it directly.
                lambda: None if root.is_dir() else f"data root {comp['data_root']} missing",
            ]
            if ports.http is not None:
                http_port = ports.http
                checks.append(lambda: probe_http(http_port))
            return checks
        if kind == "frontdoor":
            return [lambda: probe_http(comp["port"])]
        return []  # netsim and workload: alive is healthy (netsim is probed via the servers)

    def _probe(self, names: Iterable[str], comps: Mapping[str, Any]) -> dict[str, str | None]:
        """Probe *names* concurrently; name -> None when healthy, else the first problem."""
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
                jobs.extend((name, check) for check in self._checks(name, comps[name]))
        if jobs:
            with ThreadPoolExecutor(max_workers=min(32, len(jobs))) as pool:
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
                        f"{_tail(self.log_file(name))}"
                    )
            problems = self._probe(waiting, comps)
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
            f"{_tail(self.log_file(first))}"
        )

    # ---- status

    def status(self) -> list[ComponentStatus]:
        """Every component: process state and a health probe through its public ports."""
        state = self._require()
        comps = state["components"]
        running = state.get("state") in ("running", "starting")
        faults: Mapping[str, Mapping[str, Any]] = state.get("faults", {})
        problems = self._probe(list(comps), comps) if running else {}
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
        return out

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

    # ---- faults

    def _servers_of(self, state: Mapping[str, Any], target: str) -> list[str]:
        comps = state["components"]
        servers = {name: c for name, c in comps.items() if c["kind"] == "server"}
        if target in servers:
            return [target]
        dcs = sorted({c["dc"] for c in servers.values()})
        if target in dcs:
            return [name for name, c in servers.items() if c["dc"] == target]
        raise LabError(
            f"unknown target {target!r}: a data centre ({', '.join(dcs)}) "
            f"or a server ({', '.join(servers)})"
        )

    def break_(self, target: str, fault: str) -> list[str]:
        """Inject *fault* into server *target*, or every server of data centre *target*.

        Returns the servers that now have the fault. Breaking a server that already
        has this fault changes nothing; a hang on a powered-off server is skipped.
        """
        if fault not in FAULTS:
            raise LabError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
        with self._locked():
            state = self._require_running()
            servers = self._servers_of(state, target)
            affected: list[str] = []
            errors: list[str] = []
            try:
                for server_id in servers:
                    try:
                        if self._inject(state, server_id, fault):
                            affected.append(server_id)
                    except LabError as exc:
                        errors.append(f"{server_id}: {exc}")
            finally:
                self._save(state)
            if fault == "network" and affected:
                self._reload_netsim(state)
                self._wait_cut(state, affected)
            if errors:
                raise LabError(f"{fault} fault not applied everywhere: " + "; ".join(errors))
            return affected

    def _inject(self, state: dict[str, Any], server_id: str, fault: str) -> bool:
        comp = state["components"][server_id]
        recorded: dict[str, Any] = state["faults"].setdefault(server_id, {})
        if fault in recorded:
            return True
        entry: dict[str, Any] = {"at": _now()}
        if fault == "power":
            pid, _pstate = self._pid_state(comp)
            if pid is not None:
                _signal(pid, signal.SIGKILL)
                _wait_gone([pid], time.monotonic() + 2.0)
                entry["pid"] = pid
            recorded.pop("hang", None)
        elif fault == "hang":
            if "power" in recorded:
                return False
            pid, _pstate = self._pid_state(comp)
            if pid is None:
                raise LabError("its process is not running: nothing to hang")
            _signal(pid, signal.SIGSTOP)
            entry["pid"] = pid
        elif fault == "disk":
            root = self.data_root(server_id, comp["data_root"])
            if not root.exists():
                raise LabError(f"its data root {root} is missing already")
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            quarantine = self.directory / "quarantine" / f"{server_id}-{stamp}"
            quarantine.parent.mkdir(parents=True, exist_ok=True)
            root.rename(quarantine)
            entry["quarantine"] = str(quarantine)
            entry["data_root"] = str(root)
        elif fault == "network":
            cut = self._read_cut()
            if server_id not in cut:
                self._write_cut([*cut, server_id])
        recorded[fault] = entry
        return True

    def heal(self, target: str, *, timeout: float = 15.0) -> list[str]:
        """Undo every fault recorded on *target*; returns the servers healed.

        Waits until the healed servers answer through their public ports again. A
        target without faults is left alone.
        """
        with self._locked():
            state = self._require_running()
            servers = self._servers_of(state, target)
            healed: list[str] = []
            reload_net = False
            try:
                for server_id in servers:
                    recorded = state["faults"].get(server_id) or {}
                    if not recorded:
                        continue
                    for fault in _HEAL_ORDER:
                        if fault in recorded:
                            self._undo(state, server_id, fault, recorded[fault])
                            reload_net |= fault == "network"
                            del recorded[fault]
                    state["faults"].pop(server_id, None)
                    healed.append(server_id)
            finally:
                self._save(state)
            if reload_net:
                self._reload_netsim(state)
            if healed:
                self._wait_healthy(state, healed, time.monotonic() + timeout)
            return healed

    def _undo(
        self, state: dict[str, Any], server_id: str, fault: str, entry: Mapping[str, Any]
    ) -> None:
        comp = state["components"][server_id]
        if fault == "disk":
            root = self.data_root(server_id, comp["data_root"])
            quarantine = Path(entry["quarantine"])
            if not quarantine.exists():
                raise LabError(f"{server_id}: quarantined data root {quarantine} has disappeared")
            if root.exists() or root.is_symlink():
                # The server made a new, empty data root meanwhile: the quarantined one
                # is the real data; keep the new one aside for a post-mortem.
                root.rename(quarantine.with_name(quarantine.name + "-recreated"))
            root.parent.mkdir(parents=True, exist_ok=True)
            quarantine.rename(root)
        elif fault == "network":
            self._write_cut([s for s in self._read_cut() if s != server_id])
        elif fault == "hang":
            pid, _ = self._pid_state(comp)
            if pid is not None:
                _signal(pid, signal.SIGCONT)
        elif fault == "power":
            pid, _pstate = self._pid_state(comp)
            if pid is None:
                self._spawn(state, server_id)

    def _read_cut(self) -> list[str]:
        try:
            data = json.loads(self.cut_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [s for s in data.get("servers", []) if isinstance(s, str)]

    def _write_cut(self, servers: list[str]) -> None:
        write_text_atomic(self.cut_file, json.dumps({"servers": sorted(set(servers))}) + "\n")

    def _reload_netsim(self, state: Mapping[str, Any]) -> None:
        pid, _pstate = self._pid_state(state["components"]["netsim"])
        if pid is not None:
            _signal(pid, signal.SIGHUP)

    def _wait_cut(self, state: Mapping[str, Any], servers: list[str], timeout: float = 3.0) -> None:
        """Wait until netsim black-holes the servers' public SSH ports (it polls too)."""
        comps = state["components"]
        deadline = time.monotonic() + timeout
        left = list(servers)
        while left and time.monotonic() < deadline:
            left = [s for s in left if probe_ssh(comps[s]["ports"]["ssh"], timeout=0.3) is None]
            if left:
                time.sleep(0.1)

    # ---- servers at run time

    def start_server(
        self,
        server_id: str,
        dc: str,
        role: str = "spare",
        *,
        mirrors: Sequence[str] | None = None,
        exist_ok: bool = False,
        timeout: float = 15.0,
    ) -> Server:
        """Provision one more server: keys, ports, route, known_hosts, fleet.yaml, process.

        Returns its fleet entry once it answers through its public ports. An app server
        mirrors to *mirrors* when given (a failover plan's pair: existing mirror
        servers, exactly one of them in *dc*, at least one elsewhere), else to an
        on-site mirror in *dc* and an off-site one (same country first).

        With *exist_ok*, a server this method started before under the same id, DC,
        role (and mirrors, if given) is returned instead of refused, and started again
        if its process died without a recorded fault: a provider rerun after a crash
        gets the same server, never a second one.
        """
        from ppo_dr.inventory import load_fleet

        if not is_valid_id(server_id):
            raise LabError(f"server id {server_id!r} does not match the fleet id syntax")
        if role not in ("app", "mirror", "spare"):
            raise LabError(f"unknown role {role!r}: one of app, mirror, spare")
        if mirrors is not None and role != "app":
            raise LabError(f"only an app server has mirrors ({server_id} would be {role})")
        with self._locked():
            state = self._require_running()
            comps = state["components"]
            fleet_data = yaml.safe_load(self.fleet_file.read_text(encoding="utf-8"))
            dcs = [d["id"] for d in fleet_data["data_centres"]]
            if dc not in dcs:
                raise LabError(f"unknown data centre {dc!r}: one of {', '.join(dcs)}")
            known = {s["id"] for s in fleet_data["servers"]} | set(comps)
            if server_id in known:
                if not exist_ok:
                    raise LabError(f"server {server_id!r} exists already")
                self._adopt_server(state, fleet_data, server_id, dc, role, mirrors, timeout)
                return load_fleet(self.fleet_file).server(server_id)
            existing = [ServerPlan(s["id"], s["dc"], s["role"]) for s in fleet_data["servers"]]
            if role != "app":
                planned: tuple[str, ...] = ()
            elif mirrors is None:
                planned = topology.mirrors_for_new_app(dc, existing)
            else:
                planned = _checked_mirrors(server_id, dc, mirrors, existing)
            plan = ServerPlan(server_id, dc, role, planned)  # type: ignore[arg-type]

            key_file = self.directory / "keys" / lab_keys.host_key_name(server_id)
            public = lab_keys.generate_keypair(key_file, f"{server_id}@lab")
            needed = 4 if plan.serves_http else 2
            recorded = [
                port
                for comp in comps.values()
                for port in [*(comp.get("ports") or {}).values(), comp.get("port")]
                if port
            ]
            ports = topology.allocate_server_ports(
                plan, topology.free_ports(needed, exclude=recorded)
            )

            fleet_data["servers"].append(topology.server_entry(plan, ports, public))
            tmp = self.fleet_file.with_name(f".fleet.{server_id}.yaml")
            try:
                topology.write_yaml(tmp, fleet_data, topology.FLEET_HEADER)
                self._check_fleet(tmp)
                tmp.replace(self.fleet_file)
            finally:
                tmp.unlink(missing_ok=True)

            comps[server_id] = self._server_component(plan, ports)
            comps[server_id]["provisioned"] = True
            self._write_server_config(plan, ports)
            lab_keys.add_known_host(self.known_hosts, ports.ssh, public)
            self._write_routes(comps)
            self._save(state)
            self._reload_netsim(state)
            self._spawn(state, server_id)
            self._wait_healthy(state, [server_id], time.monotonic() + timeout)
        return load_fleet(self.fleet_file).server(server_id)

    def _adopt_server(
        self,
        state: dict[str, Any],
        fleet_data: Mapping[str, Any],
        server_id: str,
        dc: str,
        role: str,
        mirrors: Sequence[str] | None,
        timeout: float,
    ) -> None:
        """:meth:`start_server` ran before for *server_id*: check it is the same server
        (never hand out a fixed or different one) and that it answers."""
        comp = state["components"].get(server_id)
        entry = next((s for s in fleet_data["servers"] if s["id"] == server_id), None)
        if comp is None or comp["kind"] != "server" or not comp.get("provisioned") or not entry:
            raise LabError(
                f"server {server_id!r} exists already and was not started by start_server"
            )
        if (comp["dc"], comp["role"]) != (dc, role):
            raise LabError(
                f"server {server_id!r} exists already as {_article(comp['role'])} server in "
                f"{comp['dc']}, not as {_article(role)} server in {dc}"
            )
        if mirrors is not None and tuple(entry.get("mirrors") or ()) != tuple(mirrors):
            raise LabError(
                f"server {server_id!r} exists already with mirrors "
                f"{', '.join(entry.get('mirrors') or ()) or 'none'}, not {', '.join(mirrors)}"
            )
        _pid, pstate = self._pid_state(comp)
        if pstate == "dead" and not state["faults"].get(server_id):
            self._spawn(state, server_id)
        self._wait_healthy(state, [server_id], time.monotonic() + timeout)

    def remove_server(self, server_id: str, *, missing_ok: bool = False) -> None:
        """Release a server added by :meth:`start_server`: stop it, forget its route,
        host key entry and fleet.yaml entry. Its files stay for a post-mortem.

        Refused while a client is placed on it or an app server mirrors to it. With
        *missing_ok* a server that is gone already (released before) is not an error.
        """
        with self._locked():
            state = self._require_running()
            comps = state["components"]
            comp = comps.get(server_id)
            if comp is None and missing_ok and is_valid_id(server_id):
                fleet_data = yaml.safe_load(self.fleet_file.read_text(encoding="utf-8"))
                if all(s["id"] != server_id for s in fleet_data["servers"]):
                    return
            if comp is None or comp["kind"] != "server":
                raise LabError(f"unknown server {server_id!r}")
            if not comp.get("provisioned"):
                raise LabError(
                    f"{server_id} belongs to the lab's fixed topology; only servers added "
                    "at run time (start_server) can be removed"
                )
            from ppo_dr.store import Store

            store = Store(self.store_url)
            try:
                placed = sorted(p.client_id for p in store.placements() if p.server_id == server_id)
            finally:
                store.close()
            if placed:
                raise LabError(f"{server_id} still hosts clients: {', '.join(placed)}")
            fleet_data = yaml.safe_load(self.fleet_file.read_text(encoding="utf-8"))
            fleet_data["servers"] = [s for s in fleet_data["servers"] if s["id"] != server_id]
            tmp = self.fleet_file.with_name(f".fleet.{server_id}.yaml")
            try:
                topology.write_yaml(tmp, fleet_data, topology.FLEET_HEADER)
                self._check_fleet(tmp)
                tmp.replace(self.fleet_file)
            finally:
                tmp.unlink(missing_ok=True)
            pid = comp.get("pid")
            if pid and _is_ours(pid, comp["module"], self.directory):
                self._stop_pids([(server_id, pid)])
            del comps[server_id]
            state["faults"].pop(server_id, None)
            self._write_cut([s for s in self._read_cut() if s != server_id])
            self._write_routes(comps)
            lab_keys.remove_known_host(self.known_hosts, comp["ports"]["ssh"])
            self._save(state)
            self._reload_netsim(state)

    # ---- down

    def down(self) -> list[str]:
        """Stop every process of this lab; keep its files. Safe to repeat."""
        if not self.directory.exists():
            return []
        with self._locked(timeout=5.0, required=False):
            try:
                state = self._load()
            except LabError:  # unreadable lab.json: the /proc sweep still finds everything
                state = None
            stopped = self._stop_everything(state)
            if state is not None:
                state["state"] = "stopped"
                state["stopped_at"] = _now()
                self._save(state)
        return stopped

    # ---- for tests and tools

    def recorded_pids(self) -> dict[str, int]:
        """Every pid lab.json names now (components and retired ones)."""
        state = self._load() or {"components": {}}
        pids = {
            name: comp.get("pid") or comp.get("last_pid")
            for name, comp in state["components"].items()
            if comp.get("pid") or comp.get("last_pid")
        }
        for module, pid in state.get("retired_pids", []):
            pids[f"{module} {pid}"] = pid
        return pids

    def processes(self) -> list[tuple[int, str]]:
        """Live lab processes of this directory found in /proc: (pid, module)."""
        return _lab_processes(self.directory)

    def client_homes(self) -> dict[str, str]:
        """client -> home server from fleet.yaml."""
        from ppo_dr.inventory import load_fleet

        fleet = load_fleet(self.fleet_file)
        return {c.id: c.server for c in fleet.clients}
