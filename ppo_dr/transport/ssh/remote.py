"""One SSH connection with one SFTP session as a :class:`~ppo_dr.transport.base.Remote`:
metadata, namespace and content operations over SFTP, commands on their own channels."""

from __future__ import annotations

import logging
import os
import posixpath
import select
import stat as stat_mod
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_FSTAT,
    CMD_LSTAT,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READDIR,
    CMD_STATUS,
    SFTP_FLAG_READ,
)
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_client import SFTPError

from ppo_dr.errors import RemotePathError, TransientError
from ppo_dr.transport import base
from ppo_dr.transport.openssh_client import SshEndpoint
from ppo_dr.transport.ssh.connection import open_session
from ppo_dr.transport.ssh.reader import SshReader
from ppo_dr.transport.ssh.translate import error_boundary
from ppo_dr.transport.ssh.wire import (
    DEFAULT_REQUEST,
    Replies,
    path_from_wire,
    wire_path,
)
from ppo_dr.transport.ssh.writer import SshAtomicWriter

log = logging.getLogger(__name__)

KEEPALIVE_S = 15
IO_TIMEOUT_S = 60.0
MAX_EXEC_OUTPUT = 16 * 1024 * 1024
#: :meth:`SshRemote.stat_many`'s requests in flight (each request and reply is about
#: 100 bytes; replies are collected in whatever order they come).
STATS_IN_FLIGHT = 64
EXEC_GRACE_S = 2.0  # our deadline trails the server-side one by this much
_CMSG_CHANNEL_REQUEST = bytes([98])  # SSH_MSG_CHANNEL_REQUEST


class SshRemote(base.RemoteBase):
    """One authenticated SSH connection with one SFTP session; see the module doc.

    Safe to share between threads: SFTP calls are serialised by a lock, because
    paramiko's SFTPClient lets one thread swallow another's reply. Commands (exec)
    run on their own channels and do not wait for it. For throughput, use one
    connection per process rather than many threads on one (PERF-NOTES).
    """

    def __init__(
        self,
        transport: paramiko.Transport,
        sftp: paramiko.SFTPClient,
        label: str,
        *,
        read_size: int = DEFAULT_REQUEST,
        write_size: int = DEFAULT_REQUEST,
        endpoint: SshEndpoint | None = None,
    ) -> None:
        self._transport = transport
        # How OpenSSH's client reaches the same server (None: not known, paramiko only).
        self.endpoint = endpoint
        self.read_size = read_size
        self.write_size = write_size
        self._sftp = sftp
        self._label = label
        self._retired = False
        self._lock = threading.RLock()
        self._local_port = int(transport.sock.getsockname()[1])

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        user: str,
        key_file: str | os.PathLike[str],
        known_hosts: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        io_timeout: float = IO_TIMEOUT_S,
        keepalive: int = KEEPALIVE_S,
    ) -> SshRemote:
        """Connect, verify the host key against *known_hosts* only, authenticate with
        *key_file* only, and open SFTP.

        *timeout* bounds TCP connect, banner, key exchange and auth; *io_timeout*
        bounds each SFTP reply (a hung server becomes a TransientError, not a hang).
        """
        transport, sftp, read_size, write_size = open_session(
            host,
            port,
            user,
            key_file,
            known_hosts,
            timeout=timeout,
            io_timeout=io_timeout,
            keepalive=keepalive,
        )
        label = f"{user}@{host}:{port}"
        key, known = str(Path(key_file).resolve()), str(Path(known_hosts).resolve())
        endpoint = SshEndpoint(host, port, user, key, known, timeout)
        return cls(
            transport, sftp, label, read_size=read_size, write_size=write_size, endpoint=endpoint
        )

    # ----- bookkeeping -------------------------------------------------------------

    @property
    def label(self) -> str:
        """``user@host:port``."""
        return self._label

    @property
    def cipher(self) -> str:
        """The negotiated cipher (to check the GCM preference took effect)."""
        return str(self._transport.remote_cipher)

    @property
    def local_port(self) -> int:
        """Our end's TCP port (lets tests find the server process of this connection)."""
        return self._local_port

    def alive(self) -> bool:
        """True while the connection is usable (not closed, not retired after an error)."""
        return not self._retired and self._transport.is_active()

    def _retire(self) -> None:
        self._retired = True
        self._transport.close()

    @contextmanager
    def _op(self, what: str, path: str) -> Iterator[None]:
        """One SFTP operation: exclusive use of the session, errors translated."""
        with self._lock, self._unlocked_op(what, path):
            yield

    def _unlocked_op(self, what: str, path: str) -> AbstractContextManager[None]:
        """Errors translated, no SFTP lock: for work on a channel of its own (exec)."""
        return error_boundary(self._label, f"{what} {path!r}", self.alive, self._retire)

    def _wait(self, replies: Replies, num: int) -> tuple[int, Message]:
        """The reply to request *num*, reading (and routing) replies until it is in."""
        while num not in replies.got:
            self._sftp._read_response()
        return replies.got.pop(num)

    def close(self) -> None:
        """Close SFTP and the connection; safe to call twice."""
        self._retired = True
        try:
            self._sftp.close()
        finally:
            self._transport.close()

    # ----- metadata ----------------------------------------------------------------

    def _to_stat(
        self, path: str, attr: SFTPAttributes, report_as: str | None = None
    ) -> base.RemoteStat:
        kind = base.entry_type_of(attr.st_mode)
        target = None
        if kind is base.EntryType.SYMLINK:
            target = path_from_wire(self._sftp.readlink(wire_path(path)) or b"")
        return base.RemoteStat(
            path=path if report_as is None else report_as,
            type=kind,
            mode=stat_mod.S_IMODE(attr.st_mode or 0),
            mtime=int(attr.st_mtime or 0),
            size=int(attr.st_size or 0),
            link_target=target,
        )

    def stat(self, path: str) -> base.RemoteStat | None:
        """lstat *path*; None if it does not exist."""
        with self._op("stat", path):
            try:
                attr = self._sftp.lstat(wire_path(path))
            except FileNotFoundError:
                return None
            return self._to_stat(path, attr)

    def stat_many(self, paths: Sequence[str]) -> list[base.RemoteStat | None]:
        """lstat each of *paths*, up to :data:`STATS_IN_FLIGHT` requests in flight (a
        round trip per window of them, not per path); None for one that does not exist."""
        sftp = self._sftp
        found: list[base.RemoteStat | None] = []
        for start in range(0, len(paths), STATS_IN_FLIGHT):
            window = paths[start : start + STATS_IN_FLIGHT]
            with self._op("stat", window[0]):
                replies = Replies()
                nums = [sftp._async_request(replies, CMD_LSTAT, wire_path(p)) for p in window]
                for path, num in zip(window, nums, strict=True):
                    t, msg = self._wait(replies, num)
                    if t == CMD_STATUS:
                        try:
                            sftp._convert_status(msg)  # raises the error it reports
                        except FileNotFoundError:
                            found.append(None)
                            continue
                    if t != CMD_ATTRS:
                        raise SFTPError(f"stat {path!r}: expected attributes, got reply {t}")
                    found.append(self._to_stat(path, SFTPAttributes._from_msg(msg)))
        return found

    def _read_dir(self, path: str) -> list[tuple[str, SFTPAttributes]]:
        """READDIR with names decoded losslessly (paramiko's listdir_attr decodes names
        strictly as UTF-8 and would fail a whole mirror on one Latin-1 file name)."""
        sftp = self._sftp
        _t, msg = sftp._request(CMD_OPENDIR, wire_path(path))
        handle = msg.get_binary()
        entries: list[tuple[str, SFTPAttributes]] = []
        try:
            while True:
                try:
                    t, msg = sftp._request(CMD_READDIR, handle)
                except EOFError:  # SFTP's "end of directory" status
                    break
                if t != CMD_NAME:
                    raise SFTPError("expected a name response")
                for _ in range(msg.get_int()):
                    name = path_from_wire(msg.get_string())
                    longname = msg.get_string()
                    attr = SFTPAttributes._from_msg(msg, name, longname)
                    if name not in (".", ".."):
                        entries.append((name, attr))
        finally:
            sftp._request(CMD_CLOSE, handle)
        entries.sort(key=lambda e: wire_path(e[0]))
        return entries

    def listdir(self, path: str) -> list[base.RemoteStat]:
        """Entries of *path*, sorted by (byte) name, each with its full path."""
        with self._op("list", path):
            return [
                self._to_stat(posixpath.join(path, name), attr)
                for name, attr in self._read_dir(path)
            ]

    def walk(self, root: str) -> Iterator[base.RemoteStat]:
        """Pre-order walk below *root*; paths relative to it; symlinks not followed."""
        pending = [""]
        while pending:
            rel = pending.pop()
            here = posixpath.join(root, rel) if rel else root
            with self._op("list", here):
                try:
                    entries = self._read_dir(here)
                except FileNotFoundError:
                    if not rel:
                        raise
                    continue  # deleted while we walked
                stats = [
                    self._to_stat(
                        posixpath.join(here, name),
                        attr,
                        report_as=posixpath.join(rel, name) if rel else name,
                    )
                    for name, attr in entries
                ]
            yield from stats
            pending.extend(reversed([s.path for s in stats if s.type is base.EntryType.DIR]))

    # ----- content -----------------------------------------------------------------

    def open_read(self, path: str, size_hint: int | None = None) -> SshReader:
        """Open *path* for a pipelined front-to-back read.

        *size_hint* (the size a walk just reported) saves the round trip that asks
        for it; a file that has grown since is still read to its end.
        """
        sftp = self._sftp
        with self._op("open", path):
            _t, msg = sftp._request(CMD_OPEN, wire_path(path), SFTP_FLAG_READ, SFTPAttributes())
            handle = msg.get_binary()
            if size_hint is None:
                try:
                    _t, msg = sftp._request(CMD_FSTAT, handle)
                    size_hint = int(SFTPAttributes._from_msg(msg).st_size or 0)
                except BaseException:
                    sftp._async_request(Replies(), CMD_CLOSE, handle)
                    raise
        return SshReader(self, path, handle, size_hint)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """*length* bytes of *path* from *offset* (fewer at its end): the same pipelined
        reads as :meth:`open_read`, started at *offset* and never past its range."""
        base.check_range(self.label, path, offset, length)
        if length == 0:
            return b""
        with self._op("open", path):
            _t, msg = self._sftp._request(
                CMD_OPEN, wire_path(path), SFTP_FLAG_READ, SFTPAttributes()
            )
            handle = msg.get_binary()
        with SshReader(self, path, handle, offset + length, start=offset, limit=length) as reader:
            return reader.read(length)

    def open_write(self, path: str, mode: int = 0o644) -> SshAtomicWriter:
        """Atomic write of *path*: temporary sibling (O_EXCL), then posix-rename."""
        return SshAtomicWriter(self, path, mode)

    def rename_into_place(self, temp_path: str, final_path: str) -> None:
        """posix-rename@openssh.com: replaces *final_path* atomically."""
        with self._op("rename", f"{temp_path} -> {final_path}"):
            self._sftp.posix_rename(wire_path(temp_path), wire_path(final_path))

    # ----- namespace ---------------------------------------------------------------

    def mkdir_p(self, path: str, mode: int = 0o755) -> None:
        """Create *path* and missing parents; a directory already there is success."""
        existing = self.stat(path)
        if existing is not None:
            if existing.type is not base.EntryType.DIR:
                raise RemotePathError(f"{self._label}: mkdir {path!r}: exists and is not a dir")
            return
        parent = posixpath.dirname(path.rstrip("/"))
        if parent and parent != path:
            self.mkdir_p(parent, mode)
        try:
            with self._op("mkdir", path):
                self._sftp.mkdir(wire_path(path), mode)
        except RemotePathError:
            now = self.stat(path)  # lost a race with another creator?
            if now is None or now.type is not base.EntryType.DIR:
                raise

    def remove(self, path: str) -> None:
        """Unlink a file or symlink."""
        with self._op("remove", path):
            self._sftp.remove(wire_path(path))

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        with self._op("rmdir", path):
            self._sftp.rmdir(wire_path(path))

    def rename(self, src: str, dst: str) -> None:
        """Plain SFTP rename: OpenSSH refuses if *dst* exists, so it never clobbers."""
        with self._op("rename", f"{src} -> {dst}"):
            self._sftp.rename(wire_path(src), wire_path(dst))

    def symlink(self, target: str, path: str) -> None:
        """Create symlink *path* -> *target*."""
        with self._op("symlink", path):
            self._sftp.symlink(wire_path(target), wire_path(path))

    def readlink(self, path: str) -> str:
        """Target of symlink *path*."""
        with self._op("readlink", path):
            return path_from_wire(self._sftp.readlink(wire_path(path)) or b"")

    def chmod(self, path: str, mode: int) -> None:
        """Set permission bits (follows a symlink, as SFTP setstat does)."""
        with self._op("chmod", path):
            self._sftp.chmod(wire_path(path), mode)

    def utime(self, path: str, mtime: int, atime: int | None = None) -> None:
        """Set mtime (and atime, default the same), whole seconds."""
        with self._op("utime", path):
            self._sftp.utime(wire_path(path), (mtime if atime is None else atime, mtime))

    # ----- commands ----------------------------------------------------------------

    def exec(
        self,
        command: Sequence[str],
        timeout: float,
        *,
        max_output: int = MAX_EXEC_OUTPUT,
        enforce_on_server: bool = True,
        stdin: Iterable[bytes] | None = None,
    ) -> base.ExecResult:
        """Run argv *command* (quoted by shlex.join), fed *stdin* (pieces sent in order,
        then EOF; none by default).

        A command that outlives *timeout* seconds raises TransientError, and is
        stopped on the server too, so a retry does not pile a second run (say, a
        database dump) on top of a hung first one. Two mechanisms, because neither is
        enough alone: GNU ``timeout`` wraps the command (TERM to its process group,
        KILL 5 s later; works even if we vanish, needs coreutils, so
        *enforce_on_server* can turn it off), and the SSH "signal" request (OpenSSH
        honours it for non-root sessions only). Output beyond *max_output* bytes per
        stream is read and dropped: a chatty command cannot stall or fill our memory.
        """
        argv = list(command)
        base.build_command(argv)  # validate what the caller gave, before any wrapping
        grace = 0.0
        if enforce_on_server:
            argv = ["timeout", "--kill-after=5", f"{timeout:.3f}", *argv]
            grace = EXEC_GRACE_S
        line = base.build_command(argv)
        what = f"exec {command[0]!r}"
        started = time.monotonic()
        with self._unlocked_op(what, ""):
            channel = self._transport.open_session(timeout=min(timeout, IO_TIMEOUT_S))
        try:
            with self._unlocked_op(what, ""):
                channel.exec_command(line)
                if stdin is not None:
                    _feed(channel, stdin)
                channel.shutdown_write()
                # Our deadline is a little later, so the server's own kill (status 124)
                # is normally what we see; ours covers a server that stopped answering.
                result = self._collect(channel, timeout + grace, max_output, what)
        finally:
            channel.close()
        timed_out = time.monotonic() - started >= timeout
        if enforce_on_server and timed_out and result.exit_status in (124, 137):
            raise TransientError(
                f"{self._label}: {what} did not finish within {timeout:g} s; stopped on the server"
            )
        return result

    def _collect(
        self, channel: paramiko.Channel, timeout: float, max_output: int, what: str
    ) -> base.ExecResult:
        deadline = time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        channel.setblocking(False)
        while True:
            while channel.recv_ready():
                chunk = channel.recv(65536)
                out += chunk[: max(0, max_output - len(out))]
            while channel.recv_stderr_ready():
                chunk = channel.recv_stderr(65536)
                err += chunk[: max(0, max_output - len(err))]
            if (
                channel.exit_status_ready()
                # OpenSSH sends EOF before closing; asyncssh (the lab) may just close.
                and (channel.eof_received or channel.closed)
                and not channel.recv_ready()
                and not channel.recv_stderr_ready()
            ):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                _signal(channel, "TERM")
                raise TransientError(
                    f"{self._label}: {what} did not finish within {timeout:g} s; sent SIGTERM"
                )
            if not self._transport.is_active():
                raise TransientError(f"{self._label}: {what}: connection lost")
            select.select([channel], [], [], min(left, 0.05))
        return base.ExecResult(channel.recv_exit_status(), bytes(out), bytes(err))


def _feed(channel: paramiko.Channel, pieces: Iterable[bytes]) -> None:
    """Send *pieces* as the command's stdin; a command that exits early stops the feed.

    Each send waits at most :data:`IO_TIMEOUT_S` for window space (a server that stops
    reading is a TransientError, not a hang). An error raised by *pieces* itself (the
    producer) propagates, and the channel is closed without EOF, so the command sees a
    truncated stream rather than a complete one.
    """
    channel.settimeout(IO_TIMEOUT_S)
    for piece in pieces:
        if channel.exit_status_ready() or channel.closed:
            return  # it stopped reading (an error): its status and stderr say why
        try:
            channel.sendall(piece)
        except OSError:
            if channel.exit_status_ready() or channel.eof_received:
                return
            raise


def _signal(channel: paramiko.Channel, name: str) -> None:
    """Ask sshd to signal the command's process group (RFC 4254 6.9; OpenSSH >= 7.8).

    paramiko has no API for it, so the request is built by hand; if that fails the
    channel close still stops output, and the command may run on.
    """
    try:
        msg = Message()
        msg.add_byte(_CMSG_CHANNEL_REQUEST)
        msg.add_int(channel.remote_chanid)
        msg.add_string("signal")
        msg.add_boolean(False)
        msg.add_string(name)
        channel.transport._send_user_message(msg)
    except Exception:
        log.debug("could not send signal %s", name, exc_info=True)


if TYPE_CHECKING:  # mypy proves SshRemote satisfies the Remote protocol

    def _is_a_remote(remote: SshRemote) -> base.Remote:
        return remote
