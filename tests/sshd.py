"""pytest plugin: a real OpenSSH ``sshd`` on 127.0.0.1 for transport tests.

Register it with ``pytest_plugins = ["tests.sshd"]`` in the top-level conftest. The
``sshd`` fixture is session-scoped: one daemon (about 0.1 s to start) serves every
test, each with its own directories under ``sshd.data_root``. It listens on loopback
only, accepts one generated client key and nothing else (no passwords, no PAM), and
is killed at teardown. Without ``/usr/sbin/sshd`` the tests that need it are skipped
(CI installs ``openssh-server``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ppo_dr.pids import proc_files

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SshdServer:
    """What a test needs to reach the daemon, and to look behind its back."""

    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_public_key: str
    data_root: Path
    log_path: Path
    pid: int

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH and paramiko file this server under in known_hosts."""
        return f"[{self.host}]:{self.port}"

    def log_text(self) -> str:
        """The daemon's log so far (LogLevel VERBOSE)."""
        return self.log_path.read_text(errors="replace")

    def accepted_logins(self) -> int:
        """How many sessions have authenticated so far (to prove one did not)."""
        return self.log_text().count("Accepted publickey for ")

    def connections_seen(self) -> int:
        """How many TCP connections the daemon has accepted so far."""
        return self.log_text().count("Connection from ")

    def signal_connection(self, client_port: int, sig: int = signal.SIGKILL) -> int:
        """Send *sig* to the sshd processes serving the client at 127.0.0.1:*client_port*.

        SIGKILL simulates the server dropping one connection, SIGSTOP a hung server,
        without touching other connections. Returns how many processes were signalled.
        """
        inodes = _socket_inodes(self.port, client_port)
        killed = 0
        for pid in _descendants(self.pid):
            try:
                fds = list(Path(f"/proc/{pid}/fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    target = str(fd.readlink())
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    os.kill(pid, sig)
                    killed += 1
                    break
        return killed


def _socket_inodes(server_port: int, client_port: int) -> set[str]:
    """Inodes of the server-side TCP sockets of one loopback connection."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    inodes: set[str] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            inodes.add(fields[9])
    return inodes


def _descendants(root_pid: int) -> list[int]:
    """Every process below *root_pid* (the per-connection sshd children)."""
    children: dict[int, list[int]] = {}
    for pid, stat in proc_files("stat"):
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [root_pid]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            found.append(child)
            todo.append(child)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path, comment: str) -> str:
    """Generate an ed25519 key pair without a passphrase; return the public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def _banner_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _write_config(base: Path, port: int, user: str) -> Path:
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {base / 'ssh_host_ed25519_key'}",
                f"PidFile {base / 'sshd.pid'}",
                f"AuthorizedKeysFile {base / 'authorized_keys'}",
                f"AllowUsers {user}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UseDNS no",
                "PrintMotd no",
                "X11Forwarding no",
                "AllowTcpForwarding no",
                "MaxStartups 50:30:100",
                "LogLevel VERBOSE",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    return config


def _start(sshd: str, config: Path, log_path: Path, port: int) -> subprocess.Popen[bytes] | None:
    """Start sshd and wait for its banner; None if it died (e.g. lost the port race)."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if _banner_ready(port):
            return proc
        time.sleep(0.05)
    _stop(proc)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the daemon and, with it, every connection it still serves."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    for pid in _descendants(proc.pid):  # per-connection children left behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def find_sshd() -> str | None:
    """The sshd binary, or None when openssh-server is not installed."""
    return next((c for c in SSHD_CANDIDATES if Path(c).exists()), None) or shutil.which("sshd")


@contextlib.contextmanager
def running_sshd(base: Path, binary: str | None = None) -> Iterator[SshdServer]:
    """Run a real OpenSSH sshd on 127.0.0.1 with keys and config under *base*.

    Usable outside pytest (the benchmarks in bench/ run their peers through it).
    """
    binary = binary or find_sshd()
    if binary is None:
        raise RuntimeError("sshd not found: install openssh-server")
    # Privilege separation directory: sshd refuses to start as root without it.
    try:
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    except PermissionError:
        if os.geteuid() == 0:
            raise

    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o700)
    user = pwd.getpwuid(os.geteuid()).pw_name
    host_pub = _keygen(base / "ssh_host_ed25519_key", "ppo-dr-test-host")
    client_pub = _keygen(base / "client_ed25519", "ppo-dr-test-client")
    (base / "authorized_keys").write_text(client_pub + "\n")
    data_root = base / "data"
    data_root.mkdir(exist_ok=True)
    log_path = base / "sshd.log"

    proc = None
    for _attempt in range(3):
        port = _free_port()
        config = _write_config(base, port, user)
        proc = _start(binary, config, log_path, port)
        if proc is not None:
            break
    if proc is None:
        raise RuntimeError(
            f"sshd did not start; log:\n{log_path.read_text(errors='replace')[-2000:]}"
        )

    host_key_type, host_key_b64 = host_pub.split()[:2]
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key_type} {host_key_b64}\n")
    try:
        yield SshdServer(
            host="127.0.0.1",
            port=port,
            user=user,
            client_key=base / "client_ed25519",
            known_hosts=known_hosts,
            host_public_key=f"{host_key_type} {host_key_b64}",
            data_root=data_root,
            log_path=log_path,
            pid=proc.pid,
        )
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """A real OpenSSH sshd on 127.0.0.1:<free port>, key auth for the current user."""
    binary = find_sshd()
    if binary is None:
        pytest.skip("sshd not found: install openssh-server")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not found: install openssh-client")
    try:
        with running_sshd(tmp_path_factory.mktemp("sshd"), binary) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))
