"""One lab server as one process: SSH/SFTP for the runbooks, and the app for app/spare roles.

``python -m ppo_dr.lab.server --config DIR/servers/ID/server.json`` (docs/lab.md).

SSH (asyncssh) behaves like the hardened OpenSSH the runbooks meet in production:
the server's own host key (so known_hosts checking is real), public-key auth for the
one configured user only (no passwords, no keyboard-interactive, no host-based
auth), SFTP confined to the server's ``fs_root`` so clients see ``/srv/ppo/...``,
``exec`` requests limited to the fixed command table of
:mod:`ppo_dr.lab.restricted_exec`, and no shells, ptys, port or agent forwarding.

App and spare servers also run the HTTP app (:mod:`ppo_dr.lab.app`) in the same
asyncio loop, so the lab's faults hit both at once: ``kill -9`` is a power loss and
SIGSTOP a hang of the whole machine. SIGTERM shuts down cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import asyncssh
from asyncssh.channel import SSHChannel

from ppo_dr.errors import LabError
from ppo_dr.lab.clock import CLOCK_FILE, ServerClock
from ppo_dr.lab.procutil import FleetWatch, LabConfig, read_config, run_component, stop_event
from ppo_dr.lab.restricted_exec import (
    EXIT_NOT_ALLOWED,
    EXIT_TIMED_OUT,
    ExecResult,
    ServerDisk,
    execute,
    is_inside,
    parse_command,
)
from ppo_dr.lab.tar_receiver import StdinReader

if TYPE_CHECKING:
    from aiohttp.web import AppRunner

log = logging.getLogger("ppo_dr.lab.server")

SFTP_VERSION = 3  # what OpenSSH speaks
LOGIN_TIMEOUT_S = 30
SHUTDOWN_GRACE_S = 3.0
EXEC_WORKERS = 4
RECEIVER_WORKERS = 16  # restores streaming into this server at once (2 per client restore)
#: ``asyncssh.listen`` options: key login only, no PTY, no forwarding, no Kerberos; a
#: stale socket of a crashed run does not block the port; a silent client is cut off.
_LOCKED_DOWN: Final[dict[str, Any]] = {
    "allow_pty": False,
    "agent_forwarding": False,
    "x11_forwarding": False,
    "gss_host": None,
    "login_timeout": LOGIN_TIMEOUT_S,
    "reuse_address": True,
}


class ServerConfig(LabConfig):
    """``servers/<id>/server.json``: ports are the internal ones, behind netsim."""

    id: str
    dc: str
    role: Literal["app", "mirror", "spare"]
    lab_dir: Path
    fs_root: Path
    data_root: str = "/srv/ppo"
    ssh_port: int
    http_port: int | None = None
    host_key: Path
    authorized_keys: Path
    user: str = "ppo"
    fleet: Path
    #: Address to listen on: loopback, or the DC's address in a namespaced lab.
    bind: str = "127.0.0.1"
    #: The clock-skew fault's file (:mod:`ppo_dr.lab.clock`); default: beside server.json.
    clock_file: Path | None = None


class ConfinedSFTPServer(asyncssh.SFTPServer):
    """SFTP chrooted to ``fs_root`` that also refuses symlinks leading out of it.

    asyncssh's own chroot maps names but follows a pre-existing symlink wherever it
    points. Here every path's directory must resolve inside ``fs_root`` (enough for
    operations on a name itself: lstat, readlink, remove, rename), and operations
    that follow the final symlink (open, stat, setstat, listing, statvfs) require the
    fully resolved path to stay inside too. A link swapped between the check and the
    use could still escape: the lab's SFTP users are our runbooks and tests, not an
    adversary with write access.
    """

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], fs_root: Path) -> None:
        super().__init__(chan, chroot=os.fsencode(fs_root))
        self._root = Path(os.path.realpath(fs_root))
        self._root_bytes = os.fsencode(self._root)

    def _inside(self, local: bytes) -> bool:
        return is_inside(self._root, Path(os.path.realpath(os.fsdecode(local))))

    def map_path(self, path: bytes) -> bytes:
        mapped = super().map_path(path)
        if mapped != self._root_bytes and not self._inside(posixpath.dirname(mapped)):
            raise asyncssh.SFTPPermissionDenied("path leads outside the server's filesystem")
        return mapped

    def _followed(self, path: bytes) -> None:
        """Refuse *path* if following its final symlink would leave ``fs_root``."""
        if not self._inside(self.map_path(path)):
            raise asyncssh.SFTPPermissionDenied("path leads outside the server's filesystem")

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        self._followed(path)
        return super().open(path, pflags, attrs)

    def open56(
        self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs
    ) -> object:
        self._followed(path)
        return super().open56(path, desired_access, flags, attrs)

    def stat(self, path: bytes) -> Any:
        self._followed(path)
        return super().stat(path)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> Any:
        self._followed(path)
        return super().setstat(path, attrs)

    def statvfs(self, path: bytes) -> Any:
        self._followed(path)
        return super().statvfs(path)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        self._followed(path)
        async for name in super().scandir(path):
            yield name

    def readlink(self, path: bytes) -> bytes:
        """The link's target as stored; absolute targets inside ``fs_root`` as clients see them.

        (asyncssh resolves relative targets against the server's working directory,
        which breaks links such as ``current -> releases/2``.)
        """
        target = os.fsencode(Path(os.fsdecode(self.map_path(path))).readlink())
        if target == self._root_bytes:
            return b"/"
        if target.startswith(self._root_bytes + b"/"):
            return target[len(self._root_bytes) :]
        return target


class _ExecOrSFTPSession(asyncssh.SSHServerProcess[Any]):
    """A session that may run one permitted command or SFTP, and nothing else."""

    def shell_requested(self) -> bool:
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp" and super().subsystem_requested(subsystem)


@dataclass(eq=False)
class LabSSHServer(asyncssh.SSHServer):
    """Per-connection policy: who may log in, and what a session may do. The fields are
    the server's, shared by all its connections; ``_conn`` is this connection."""

    _config: ServerConfig
    _disk: ServerDisk
    _live: set[Any]
    _workers: Executor
    _receivers: Executor
    _conn: asyncssh.SSHServerConnection | None = field(default=None, init=False)

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._live.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        """Load authorized_keys now (the supervisor may add keys) for the one user."""
        assert self._conn is not None
        if username != self._config.user:
            log.warning("login as %r refused: only %r may log in", username, self._config.user)
            return True  # no keys loaded: every attempt fails
        try:
            self._conn.set_authorized_keys(str(self._config.authorized_keys))
        except (OSError, asyncssh.KeyImportError) as exc:
            log.error("cannot read %s: %s", self._config.authorized_keys, exc)
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def session_requested(
        self,
    ) -> tuple[asyncssh.SSHServerChannel[bytes], _ExecOrSFTPSession]:
        # A binary channel: the restore's tar stream arrives on an exec's stdin.
        assert self._conn is not None
        chan = self._conn.create_server_channel(encoding=None)
        return chan, _ExecOrSFTPSession(self._run_exec, self._start_sftp, SFTP_VERSION, False)

    def _start_sftp(self, chan: SSHChannel[bytes]) -> ConfinedSFTPServer:
        server_chan = cast("asyncssh.SSHServerChannel[bytes]", chan)  # we are the server side
        return ConfinedSFTPServer(server_chan, self._disk.fs_root)

    async def _run_exec(self, process: asyncssh.SSHServerProcess[Any]) -> None:
        """Run one exec request through the command table, in an exec worker thread.

        Exec commands have their own threads so a runbook hashing large files never
        delays the app's journal writes (which use the loop's default executor).
        """
        command = process.command
        if command is None:
            process.stderr.write(b"interactive shells are not allowed\n")
            process.exit(EXIT_NOT_ALLOWED)
            return
        parsed = parse_command(command)
        if isinstance(parsed, ExecResult):
            result = parsed
        else:
            loop = asyncio.get_running_loop()

            def read_stdin(size: int) -> bytes:  # in the worker thread
                read = process.stdin.read(size)
                return bytes(asyncio.run_coroutine_threadsafe(read, loop).result())

            stdin = StdinReader(read_stdin) if parsed.command.reads_stdin else None
            # A restore's receivers last as long as their streams: threads of their own,
            # so they neither wait behind nor hold up the short commands.
            pool = self._workers if stdin is None else self._receivers
            work = loop.run_in_executor(pool, execute, self._disk, parsed, stdin)
            try:
                result = await asyncio.wait_for(work, parsed.timeout)
            except TimeoutError:
                # The worker thread finishes on its own; the caller has its answer.
                result = ExecResult(
                    EXIT_TIMED_OUT, stderr=f"timed out after {parsed.timeout:g} s\n"
                )
        log.info(
            "exec %r by %s -> %d", command[:200], process.get_extra_info("username"), result.status
        )
        if result.stdout:
            process.stdout.write(result.stdout.encode())
        if result.stderr:
            process.stderr.write(result.stderr.encode())
        process.exit(result.status)


async def serve(config: ServerConfig, stop: asyncio.Event) -> None:
    """Run the server until *stop* is set, then close listeners and connections."""
    if not config.fs_root.is_dir():
        raise LabError(f"server {config.id}: fs_root {config.fs_root} is not a directory")
    try:
        host_key = asyncssh.read_private_key(str(config.host_key))
    except (OSError, asyncssh.KeyImportError) as exc:
        raise LabError(
            f"server {config.id}: cannot read host key {config.host_key}: {exc}"
        ) from exc
    clock = ServerClock(config.clock_file)
    disk = ServerDisk(
        config.id, config.role, config.fs_root, config.data_root, FleetWatch(config.fleet), clock
    )
    live: set[Any] = set()
    workers = ThreadPoolExecutor(max_workers=EXEC_WORKERS, thread_name_prefix="exec")
    receivers = ThreadPoolExecutor(max_workers=RECEIVER_WORKERS, thread_name_prefix="untar")
    try:
        acceptor = await asyncssh.listen(
            config.bind,
            config.ssh_port,
            server_factory=lambda: LabSSHServer(config, disk, live, workers, receivers),
            server_host_keys=[host_key],
            **_LOCKED_DOWN,
        )
    except OSError as exc:
        workers.shutdown(wait=False)
        receivers.shutdown(wait=False)
        raise LabError(
            f"server {config.id}: cannot listen on ssh port {config.ssh_port}: {exc}"
        ) from exc
    runner: AppRunner | None = None
    try:
        if config.http_port is not None:
            runner = await _start_http(disk, config.bind, config.http_port)
        log.info(
            "server %s (%s, %s) ready: ssh %s:%d, http %s, fs %s",
            config.id,
            config.role,
            config.dc,
            config.bind,
            config.ssh_port,
            f"{config.bind}:{config.http_port}" if config.http_port else "none",
            disk.fs_root,
        )
        await stop.wait()
        log.info("server %s stopping", config.id)
    finally:
        acceptor.close()
        for conn in list(live):
            conn.close()
        if runner is not None:
            await asyncio.wait_for(runner.cleanup(), SHUTDOWN_GRACE_S)
        await asyncio.wait_for(acceptor.wait_closed(), SHUTDOWN_GRACE_S)
        workers.shutdown(wait=False, cancel_futures=True)
        receivers.shutdown(wait=False, cancel_futures=True)


async def _start_http(disk: ServerDisk, host: str, port: int) -> AppRunner:
    from aiohttp import web

    from ppo_dr.lab.app import build_app

    runner = web.AppRunner(build_app(disk), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        raise LabError(
            f"server {disk.server_id}: cannot listen on http port {port}: {exc}"
        ) from exc
    return runner


async def main(config_path: Path) -> None:
    """Entry point body: read the config, quieten asyncssh's per-packet logging, serve."""
    config = read_config(config_path, ServerConfig)
    if config.clock_file is None:
        config = config.model_copy(update={"clock_file": config_path.parent / CLOCK_FILE})
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    await serve(config, stop_event())


if __name__ == "__main__":
    raise SystemExit(run_component("server", main))
