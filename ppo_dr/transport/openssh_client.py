"""Feeding a long stdin stream to a command through OpenSSH's ``ssh`` client.

Why: a restore streams a whole client into ``tar -x`` on the new server. Through
paramiko, the encryption and packet framing cost 1.74 CPU seconds per GB in our own
process, beside the 2.9 s of building the stream (PERF-NOTES, docs/repository.md).
The ``ssh`` client does the same work in C, in a process of its own (a second core),
so when it is installed a stream goes through it and paramiko is the fallback.

The same promises as :class:`~ppo_dr.transport.ssh.SshRemote`, spelled out on the
command line because ``ssh`` would otherwise read the user's configuration:

- the host key is checked against *our* known_hosts only (``StrictHostKeyChecking=yes``,
  no global file, never updated), so an unknown or changed key is a
  :class:`~ppo_dr.errors.HostKeyError` before anything is sent;
- only our key file authenticates (no agent, no other identity, no password, no
  configuration file, no forwarding, no multiplexing);
- no secret is on the command line: the key is a file name (``-i``), the command is
  the same argv :class:`SshRemote` sends (wrapped in GNU ``timeout`` on the server);
- aes128-gcm first (one pass per byte, AES-NI), as the paramiko path prefers.

A file name ``ssh`` would expand (``%`` tokens, ``~``) or split (spaces) is not given
to it: :func:`stream_endpoint` returns None and the caller stays on paramiko.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Final

from ppo_dr.errors import AuthError, HostKeyError, TransientError
from ppo_dr.transport.base import ExecResult, build_command
from ppo_dr.transport.dial import NETNS_ENV

log = logging.getLogger(__name__)

SSH_FAILED: Final = 255  # ssh's own status for a connection, host key or auth failure
SERVER_GRACE_S: Final = 2.0  # our deadline trails the server-side `timeout` by this much
KEEPALIVE_S: Final = 15
KEEPALIVE_MISSES: Final = 4  # a silent server is given up after 60 s
PIPE_BYTES: Final = 1 << 20  # a 1 MiB pipe to ssh: fewer wake-ups than the 64 KiB default
GATHER_BYTES: Final = 256 * 1024
GATHER_PIECES: Final = 512  # below the kernel's IOV_MAX (1024)
_F_SETPIPE_SZ: Final = 1031  # fcntl.F_SETPIPE_SZ (Linux), named only from Python 3.10 on
_SAFE_PATH: Final = re.compile(r"/[A-Za-z0-9_./+@,=-]*")  # what ssh neither expands nor splits
_HOST_KEY_SIGNS: Final = (
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "No matching host key",
)
_AUTH_SIGNS: Final = ("Permission denied", "Too many authentication failures")


@dataclass(frozen=True)
class SshEndpoint:
    """How to reach one server with OpenSSH's client: the same host, user, key file
    and known_hosts a paramiko connection to it was opened with."""

    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    connect_timeout: float = 10.0

    @property
    def label(self) -> str:
        """``user@host:port``, as :class:`SshRemote` names itself."""
        return f"{self.user}@{self.host}:{self.port}"


def ssh_client() -> str | None:
    """The ``ssh`` program on PATH, or None (then streams go through paramiko)."""
    return shutil.which("ssh")


def stream_endpoint(endpoint: SshEndpoint | None) -> SshEndpoint | None:
    """*endpoint* if ``ssh`` is installed and can be given its files verbatim, else None."""
    if endpoint is None or ssh_client() is None:
        return None
    for path in (endpoint.key_file, endpoint.known_hosts):
        if _SAFE_PATH.fullmatch(path) is None:
            log.info("%s: ssh would not take %r verbatim; using paramiko", endpoint.label, path)
            return None
    return endpoint


def netns_prefix() -> list[str]:
    """``ip netns exec NAME`` when :data:`~ppo_dr.transport.dial.NETNS_ENV` names one: the
    client connects from there, as :func:`~ppo_dr.transport.dial.dial` does."""
    namespace = os.environ.get(NETNS_ENV)
    return ["ip", "netns", "exec", namespace] if namespace else []


def client_argv(ssh: str, endpoint: SshEndpoint, remote_line: str) -> list[str]:
    """argv running *remote_line* on *endpoint* with nothing but the options below."""
    options = {
        "BatchMode": "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": endpoint.known_hosts,
        "GlobalKnownHostsFile": "none",
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        "IdentityFile": endpoint.key_file,
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "HostbasedAuthentication": "no",
        "GSSAPIAuthentication": "no",
        "ControlMaster": "no",
        "ControlPath": "none",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "PermitLocalCommand": "no",
        "Compression": "no",
        "Ciphers": "^aes128-gcm@openssh.com,aes256-gcm@openssh.com",
        "ConnectTimeout": str(max(1, round(endpoint.connect_timeout))),
        "ServerAliveInterval": str(KEEPALIVE_S),
        "ServerAliveCountMax": str(KEEPALIVE_MISSES),
        "LogLevel": "ERROR",
    }
    argv = [*netns_prefix(), ssh, "-F", "none", "-T"]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return [*argv, "-p", str(endpoint.port), "-l", endpoint.user, "--", endpoint.host, remote_line]


def _write_all(fd: int, pieces: Iterable[bytes]) -> None:
    """Write *pieces* to the pipe *fd* in order, gathered into ``writev`` calls of
    about :data:`GATHER_BYTES` (a tar header is 512 bytes: one system call each would
    cost more than its data, and joining them first would copy every byte)."""
    held: list[bytes] = []
    held_bytes = 0
    for piece in pieces:
        held.append(piece)
        held_bytes += len(piece)
        if held_bytes >= GATHER_BYTES or len(held) >= GATHER_PIECES:
            _writev_all(fd, held, held_bytes)
            held, held_bytes = [], 0
    if held:
        _writev_all(fd, held, held_bytes)


def _writev_all(fd: int, pieces: list[bytes], total: int) -> None:
    """One ``writev``, continued where a short write stopped (a signal can cut one)."""
    written = os.writev(fd, pieces)
    if written == total:
        return
    rest = memoryview(b"".join(pieces))[written:]
    while rest:
        rest = rest[os.write(fd, rest) :]


def _keep_reading(stream: IO[bytes], keep: bytearray, limit: int) -> None:
    """Read *stream* to its end, keeping its first *limit* bytes (the rest is dropped,
    so a chatty command can neither stall nor fill our memory)."""
    while chunk := stream.read(65536):
        keep += chunk[: max(0, limit - len(keep))]


def _failure(endpoint: SshEndpoint, stderr: bytes) -> Exception:
    """The error for ssh's status 255, from what it printed."""
    text = stderr.decode(errors="replace").strip()[-500:]
    if any(sign in text for sign in _HOST_KEY_SIGNS):
        return HostKeyError(
            f"{endpoint.label}: host key unknown or changed (checked against "
            f"{endpoint.known_hosts} only; never accepted automatically): {text}"
        )
    if any(sign in text for sign in _AUTH_SIGNS):
        return AuthError(f"{endpoint.label}: the server refused our key: {text}")
    return TransientError(f"{endpoint.label}: ssh connection failed or dropped: {text}")


def exec_fed(
    endpoint: SshEndpoint,
    command: Sequence[str],
    timeout: float,
    stdin: Iterable[bytes],
    *,
    max_output: int = 1 << 20,
) -> ExecResult:
    """Run argv *command* on *endpoint* through ``ssh``, fed *stdin* (then EOF).

    As :meth:`SshRemote.exec`: the command is stopped on the server after *timeout*
    seconds by GNU ``timeout``, and here after a little more by killing ``ssh`` (a
    server that stopped answering); either is a TransientError. A command that stops
    reading early ends the feed: its status and stderr say why. An error raised by
    *stdin* itself (the producer) kills ``ssh`` before the error propagates, so the
    command sees a cut connection, never a complete-looking stream.
    """
    ssh = ssh_client()
    if ssh is None:
        raise FileNotFoundError("ssh")
    line = build_command(["timeout", "--kill-after=5", f"{timeout:.3f}", *command])
    proc = subprocess.Popen(
        client_argv(ssh, endpoint, line),
        bufsize=0,  # we write the pipe ourselves (writev)
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a signal to our group (Ctrl-C) reaches us, not ssh
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    with contextlib.suppress(OSError):
        fcntl.fcntl(proc.stdin.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
    out, err = bytearray(), bytearray()
    readers = [
        threading.Thread(target=_keep_reading, args=(proc.stdout, out, max_output), daemon=True),
        threading.Thread(target=_keep_reading, args=(proc.stderr, err, max_output), daemon=True),
    ]
    for reader in readers:
        reader.start()
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    watchdog = threading.Timer(timeout + SERVER_GRACE_S, expire)
    watchdog.daemon = True
    watchdog.start()
    started = time.monotonic()
    try:
        try:
            _write_all(proc.stdin.fileno(), stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ssh or the command stopped reading: the status says why
        except BaseException:
            proc.kill()  # the producer failed: cut the stream, do not end it cleanly
            raise
        status = proc.wait()
    finally:
        watchdog.cancel()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for reader in readers:
            reader.join(timeout=5)
    timed_out = time.monotonic() - started >= timeout
    if expired.is_set() or (timed_out and status in (124, 137)):
        raise TransientError(
            f"{endpoint.label}: exec {command[0]!r} did not finish within {timeout:g} s; stopped"
        )
    if status == SSH_FAILED:
        raise _failure(endpoint, bytes(err))
    return ExecResult(status, bytes(out), bytes(err))
