"""Fixtures for the lab's runtime components (server, netsim, front door, workload).

Everything is real: processes started with ``python -m ppo_dr.lab.<component>`` as the
supervisor does, sockets on 127.0.0.1, keys from ``ssh-keygen``, the OpenSSH client.
Fixtures of this file are prefixed ``rt_`` (runtime) so they do not collide with the
supervisor's fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 15.0

# A minimal fleet the inventory rules accept: one app server with an on-site and an
# off-site mirror, a spare, and two clients on the app server.
SERVERS = {
    "app-jhb1-1": ("jhb1", "app", "/srv/ppo"),
    "mirror-jhb1-1": ("jhb1", "mirror", "/srv/ppo-mirror"),
    "mirror-cpt1-1": ("cpt1", "mirror", "/srv/ppo-mirror"),
    "spare-cpt1-1": ("cpt1", "spare", "/srv/ppo"),
}
CLIENTS = {"acme": "tenants/acme", "globex": "tenants/globex"}


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (free unless someone races us)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Wait until 127.0.0.1:*port* accepts; fail with the process's log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            pytest.fail(f"process exited with {proc.returncode} before listening:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair from ssh-keygen; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Procs:
    """Processes a test started; all of them are killed at teardown."""

    logs: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, component: str, config: Path, name: str | None = None
    ) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name or component}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"ppo_dr.lab.{component}", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        self.started.append(proc)
        return proc

    def log_of(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a test may have left it stopped
                proc.terminate()
        for proc in self.started:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@dataclass
class MiniLab:
    """A lab directory laid out as docs/lab.md says, for a handful of servers."""

    dir: Path
    procs: Procs
    ports: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def fleet_path(self) -> Path:
        return self.dir / "fleet.yaml"

    @property
    def operator_key(self) -> Path:
        return self.dir / "keys" / "operator_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def fs(self, server: str) -> Path:
        return self.dir / "servers" / server / "fs"

    def client_dir(self, server: str, client: str) -> Path:
        return self.fs(server) / "srv/ppo" / CLIENTS[client]

    def config_path(self, server: str) -> Path:
        return self.dir / "servers" / server / "server.json"

    def write_fleet(self, extra_clients: dict[str, str] | None = None) -> None:
        """fleet.yaml whose endpoints are the servers' own (internal) ports."""
        clients = {**CLIENTS, **(extra_clients or {})}
        doc: dict[str, Any] = {
            "version": 1,
            "name": "rt-lab",
            "data_centres": [
                {"id": "jhb1", "country": "ZA", "provider": "lab"},
                {"id": "cpt1", "country": "ZA", "provider": "lab"},
            ],
            "servers": [],
            "clients": [
                {
                    "id": cid,
                    "name": cid.title(),
                    "server": "app-jhb1-1",
                    "data_path": path,
                    "url": f"http://127.0.0.1/c/{cid}/",
                    "countries": ["ZA"],
                }
                for cid, path in clients.items()
            ],
        }
        for sid, (dc, role, data_root) in SERVERS.items():
            host_key = (self.dir / "keys" / f"{sid}_host_ed25519.pub").read_text().split()
            entry: dict[str, Any] = {
                "id": sid,
                "dc": dc,
                "role": role,
                "data_root": data_root,
                "ssh": {
                    "host": "127.0.0.1",
                    "port": self.ports[sid]["ssh"],
                    "user": "ppo",
                    "host_key": " ".join(host_key[:2]),
                },
            }
            if role != "mirror":
                entry["http"] = {"host": "127.0.0.1", "port": self.ports[sid]["http"]}
            if role == "app":
                entry["mirrors"] = ["mirror-jhb1-1", "mirror-cpt1-1"]
            doc["servers"].append(entry)
        tmp = self.fleet_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.replace(self.fleet_path)

    def start_server(self, server: str) -> subprocess.Popen[bytes]:
        proc = self.procs.start("server", self.config_path(server), name=server)
        wait_for_port(self.ports[server]["ssh"], proc, self.procs.logs / f"{server}.log")
        http = self.ports[server].get("http")
        if http:
            wait_for_port(http, proc, self.procs.logs / f"{server}.log")
        return proc

    def ssh_base(
        self,
        server: str,
        known_hosts: Path | None = None,
        port_flag: str = "-p",
        identity: Path | None = None,
    ) -> list[str]:
        """OpenSSH options: strict host key checking against our known_hosts, our key only."""
        return [
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR",
            "-i", str(identity or self.operator_key),
            "-F", "/dev/null",
            port_flag, str(self.ports[server]["ssh"]),
        ]  # fmt: skip

    def ssh(
        self,
        server: str,
        command: str,
        *options: str,
        timeout: float = 15,
        known_hosts: Path | None = None,
        identity: Path | None = None,
        user: str = "ppo",
    ) -> subprocess.CompletedProcess[str]:
        """Run *command* on *server* with the OpenSSH client."""
        base = self.ssh_base(server, known_hosts, identity=identity)
        return subprocess.run(
            # OpenSSH keeps the first value of an option: the caller's win over the base.
            ["ssh", *options, *base, f"{user}@127.0.0.1", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def sftp(
        self, server: str, batch: str, timeout: float = 15
    ) -> subprocess.CompletedProcess[str]:
        """Run an sftp batch (one command a line) against *server* with OpenSSH's sftp."""
        return subprocess.run(
            ["sftp", *self.ssh_base(server, port_flag="-P"), "-b", "-", "ppo@127.0.0.1"],
            input=batch,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def build_minilab(root: Path, procs: Procs) -> MiniLab:
    """Keys, known_hosts, fleet.yaml, server configs and seeded client data under *root*."""
    lab = MiniLab(root, procs)
    keys = root / "keys"
    keys.mkdir(parents=True)
    operator = keygen(keys / "operator_ed25519", "operator@rt-lab")
    (keys / "authorized_keys").write_text(operator + "\n")
    known = []
    for sid, (dc, role, data_root) in SERVERS.items():
        lab.ports[sid] = {"ssh": free_port()}
        if role != "mirror":
            lab.ports[sid]["http"] = free_port()
        host_pub = keygen(keys / f"{sid}_host_ed25519", f"{sid}@rt-lab")
        known.append(f"[127.0.0.1]:{lab.ports[sid]['ssh']} {' '.join(host_pub.split()[:2])}")
        fs = lab.fs(sid)
        (fs / data_root.lstrip("/")).mkdir(parents=True)
        config = {
            "id": sid,
            "dc": dc,
            "role": role,
            "lab_dir": str(root),
            "fs_root": str(fs),
            "data_root": data_root,
            "ssh_port": lab.ports[sid]["ssh"],
            "http_port": lab.ports[sid].get("http"),
            "host_key": str(keys / f"{sid}_host_ed25519"),
            "authorized_keys": str(keys / "authorized_keys"),
            "user": "ppo",
            "fleet": str(root / "fleet.yaml"),
        }
        lab.config_path(sid).write_text(json.dumps(config, indent=1))
    lab.known_hosts.write_text("\n".join(known) + "\n")
    lab.write_fleet()
    for client in CLIENTS:
        journal = lab.client_dir("app-jhb1-1", client) / "journal"
        journal.mkdir(parents=True)
        (journal / "journal.log").write_text("")
        (journal.parent / "files").mkdir()
        (journal.parent / "files" / "hello.txt").write_text(f"hello from {client}\n")
    return lab


@pytest.fixture
def rt_procs(tmp_path: Path) -> Iterator[Procs]:
    """Start processes in a test; they are all stopped (then killed) at teardown."""
    procs = Procs(tmp_path / "logs")
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def rt_minilab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MiniLab]:
    """A lab directory with keys, fleet.yaml and server configs; no process started."""
    root = tmp_path_factory.mktemp("rtlab")
    procs = Procs(root / "logs")
    try:
        yield build_minilab(root, procs)
    finally:
        procs.stop_all()


@pytest.fixture
def rt_fresh_minilab(tmp_path: Path) -> Iterator[MiniLab]:
    """Like ``rt_minilab`` but for one test (it may break the servers' disks)."""
    procs = Procs(tmp_path / "logs")
    try:
        yield build_minilab(tmp_path / "lab", procs)
    finally:
        procs.stop_all()


def require_openssh_client() -> None:
    for tool in ("ssh", "sftp", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install openssh-client)")


@contextmanager
def paramiko_client(
    port: int, operator_key: Path, host_keys: paramiko.HostKeys
) -> Iterator[paramiko.SSHClient]:
    """A paramiko client as the runbooks' transport configures it: *host_keys* only
    (RejectPolicy), the operator's key, no agent; closed on the way out."""
    client = paramiko.SSHClient()
    client.get_host_keys().update(host_keys)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username="ppo",
        key_filename=str(operator_key),
        allow_agent=False,
        look_for_keys=False,
        timeout=5,
    )
    try:
        yield client
    finally:
        client.close()
