"""SSH/SFTP :class:`~ppo_dr.transport.base.Remote` over paramiko, tuned and fenced.

Why it looks the way it does (figures in PERF-NOTES.md):

- We open the TCP socket ourselves so we can set ``TCP_NODELAY`` before paramiko
  sees it: without it every small SFTP request waits 13-20 ms for delayed ACKs.
- ``aes128-gcm@openssh.com`` is moved to the front of the cipher list: paramiko
  lists GCM last and would otherwise negotiate aes128-ctr + HMAC, which costs a
  second pass over every byte.
- File reads and writes are pipelined on paramiko's request layer, not its file
  objects: its pipelined writes drop their status replies (a full disk went
  unnoticed, file truncated) and its prefetch thread sends requests outside any
  lock. Requests use the sizes OpenSSH announces (255 KiB, not 32 KiB) in whole
  SSH packets; a small file costs three round trips to write, two to read.
- One connection is shared by threads under a lock (paramiko's SFTP client lets
  one thread swallow another's reply); for throughput use a connection per process.
- Host keys are checked against the known_hosts file we are given and nothing else
  (not ``~/.ssh``, no agent, never auto-added), before any credential is offered.
  Unknown or changed keys raise :class:`~ppo_dr.errors.HostKeyError`, which is
  permanent: a possible man-in-the-middle is a page, not a retry.
- Every paramiko/socket/SFTP error is translated in one place
  (:func:`translate_error`), most specific first, into the ppo-dr error tree. A
  transient error also retires the connection, so :class:`SshPool` reconnects.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import posixpath
import select
import socket
import stat as stat_mod
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_FSETSTAT,
    CMD_FSTAT,
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_STATUS,
    CMD_WRITE,
    SFTP_FLAG_CREATE,
    SFTP_FLAG_EXCL,
    SFTP_FLAG_READ,
    SFTP_FLAG_WRITE,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_client import SFTPError

from ppo_dr.errors import (
    AuthError,
    DRError,
    HostKeyError,
    PermanentError,
    RemotePathError,
    TransientError,
)
from ppo_dr.transport.base import (
    CommitOnExit,
    EntryType,
    ExecResult,
    Remote,
    RemoteBase,
    RemoteStat,
    build_command,
    check_range,
    temp_path_for,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 22
KEEPALIVE_S = 15
IO_TIMEOUT_S = 60.0
MAX_EXEC_OUTPUT = 16 * 1024 * 1024
EXEC_GRACE_S = 2.0  # our deadline trails the server-side one by this much
# SFTP sizing. paramiko asks for 32 KiB per request, and a 32 KiB reply does not fit
# a 32 KiB SSH packet, so every reply costs two packets. OpenSSH announces bigger
# limits (limits@openssh.com: 255 KiB reads/writes); with a channel that accepts
# 256 KiB packets and an 8 MiB window, loopback reads of large files went from ~100
# to ~220 MB/s (same run) and writes ~20 % up. Other servers get 32 KiB.
DEFAULT_REQUEST = 32768
SFTP_WINDOW = 8 * 1024 * 1024
SFTP_MAX_PACKET = 256 * 1024 + 1024  # a full 255 KiB read reply plus headers
READ_AHEAD_BYTES = SFTP_WINDOW  # read requests in flight per open file
WRITE_REQUESTS_IN_FLIGHT = 64  # unanswered writes before we wait for the oldest
_WRITE_HEADER = 4 + 1 + 4 + 4 + 8 + 4  # length, type, id, handle length, offset, data length
_CHANNEL_SLACK = 64  # paramiko keeps each channel packet 64 bytes under the peer's maximum
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
_CMSG_CHANNEL_REQUEST = bytes([98])  # SSH_MSG_CHANNEL_REQUEST

# errno values that mean "the network or the peer went away": worth a retry.
NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ENETRESET,
        errno.EHOSTDOWN,
        errno.EPIPE,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
    }
)
# errno values SFTP uses for a path that is missing or not ours to touch.
PATH_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EACCES,
        errno.EPERM,
        errno.EEXIST,
        errno.EISDIR,
        errno.ENOTEMPTY,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)


def translate_error(
    exc: BaseException, where: str, what: str, *, alive: bool = True
) -> DRError | None:
    """The ppo-dr error for a paramiko/socket/SFTP failure, or None if it is a bug.

    *where* names the server (``user@host:port``), *what* the operation and path;
    *alive* says whether the SSH connection still stands (a bare ``OSError`` from a
    dead connection is a network failure, from a live one a refusal by the server).
    Order matters: the most specific classes come first, because paramiko's auth
    and host key errors are also ``SSHException`` and its SFTP errors are ``OSError``.
    Messages carry no key material and no file contents.
    """
    if isinstance(exc, DRError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            f"{where}: host key changed — possible man-in-the-middle; refusing to connect"
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return AuthError(f"{where}: {what}: the client key is encrypted and has no passphrase")
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthError(f"{where}: {what}: the server refused our key ({type(exc).__name__})")
    if isinstance(exc, paramiko.ssh_exception.IncompatiblePeer):
        return PermanentError(f"{where}: {what}: no common SSH algorithms ({exc})")
    if isinstance(exc, socket.timeout | TimeoutError):
        return TransientError(f"{where}: {what}: timed out")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return TransientError(f"{where}: {what}: connection refused or host unreachable")
    if isinstance(exc, socket.gaierror):
        if exc.errno == socket.EAI_AGAIN:
            return TransientError(f"{where}: {what}: name resolution failed for now ({exc})")
        return PermanentError(f"{where}: {what}: cannot resolve host name ({exc})")
    if isinstance(exc, ConnectionError | EOFError):
        return TransientError(f"{where}: {what}: connection lost ({type(exc).__name__})")
    if not alive:
        return TransientError(f"{where}: {what}: connection lost ({type(exc).__name__}: {exc})")
    if isinstance(exc, OSError):
        if exc.errno in NETWORK_ERRNOS:
            return TransientError(f"{where}: {what}: network error ({exc.strerror})")
        if exc.errno == errno.ENOENT:
            return RemotePathError(f"{where}: {what}: no such file or directory")
        if exc.errno in PATH_ERRNOS:
            reason = exc.strerror or os.strerror(exc.errno or 0)
            return RemotePathError(f"{where}: {what}: {reason.lower()}")
        if exc.errno is None:
            # SFTP's catch-all "Failure" (exists, not empty, disk full, ...) on a live
            # connection: the server refused this operation, and will again.
            return RemotePathError(f"{where}: {what}: refused by the server ({exc})")
        return TransientError(f"{where}: {what}: {exc.strerror or exc}")
    if isinstance(exc, paramiko.SSHException | SFTPError):
        return TransientError(f"{where}: {what}: SSH failure ({exc})")
    return None


@contextmanager
def _boundary(
    where: str, what: str, alive: Callable[[], bool], retire: Callable[[], None]
) -> Iterator[None]:
    """Translate everything raised inside into the error tree; retire the connection
    on a transient failure (its SFTP state may be out of step with the server)."""
    try:
        yield
    except DRError:
        raise  # ours, already precise; the connection itself is fine
    except Exception as exc:
        err = translate_error(exc, where, what, alive=alive())
        if err is None:
            raise
        if isinstance(err, TransientError):
            retire()
        # A host key exception's text carries whole public keys: do not chain it.
        raise err from (None if isinstance(exc, paramiko.BadHostKeyException) else exc)


def _b(path: str) -> bytes:
    """Path to wire bytes; surrogate escapes turn back into the original bytes."""
    return path.encode("utf-8", "surrogateescape")


def _s(raw: bytes | str) -> str:
    """Wire bytes to a path that round-trips even if the server's names are not UTF-8."""
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def _entry_type(st_mode: int | None) -> EntryType:
    mode = st_mode or 0
    if stat_mod.S_ISREG(mode):
        return EntryType.FILE
    if stat_mod.S_ISDIR(mode):
        return EntryType.DIR
    if stat_mod.S_ISLNK(mode):
        return EntryType.SYMLINK
    return EntryType.OTHER


def _known_host_name(host: str, port: int) -> str:
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def _fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint)  # "SHA256:..." as OpenSSH prints it; a hash, not the key


def _load_known_keys(known_hosts: Path, host: str, port: int) -> dict[str, paramiko.PKey]:
    """The keys *known_hosts* lists for host:port (by key type); nothing else is read."""
    try:
        host_keys = paramiko.HostKeys(str(known_hosts))
    except OSError as exc:
        raise HostKeyError(
            f"cannot read known_hosts file {known_hosts}: {exc.strerror or exc}"
        ) from exc
    entry = host_keys.lookup(_known_host_name(host, port))
    return dict(entry) if entry else {}


def _load_client_key(key_file: Path, where: str) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(key_file)
    except paramiko.PasswordRequiredException as exc:
        raise AuthError(
            f"{where}: client key {key_file} is encrypted; no passphrase given"
        ) from exc
    except OSError as exc:
        raise AuthError(f"{where}: cannot read client key {key_file}: {exc.strerror}") from exc
    except Exception as exc:  # cryptography/paramiko parse errors: name the type only
        raise AuthError(
            f"{where}: cannot load client key {key_file} ({type(exc).__name__})"
        ) from None


def _check_host_key(
    offered: paramiko.PKey, known: dict[str, paramiko.PKey], where: str, known_hosts: Path
) -> None:
    """Raise HostKeyError unless *offered* is exactly a key known_hosts has for us."""
    if not known:
        raise HostKeyError(
            f"{where}: host key unknown — {known_hosts} has no entry for this host/port; "
            f"it offered {offered.get_name()} {_fingerprint(offered)}: verify it out of "
            "band and add it to known_hosts (keys are never accepted automatically)"
        )
    expected = known.get(offered.get_name())
    if expected is None or expected.asbytes() != offered.asbytes():
        raise HostKeyError(
            f"{where}: host key changed — possible man-in-the-middle! It offered "
            f"{offered.get_name()} {_fingerprint(offered)}, which does not match "
            f"{known_hosts}; refusing to connect (our key was not offered)"
        )


class _Replies:
    """Collects the replies to our pipelined requests, whoever reads them off the wire.

    paramiko hands each reply to the object registered with its request. Its own
    pipelined writes register ``type(None)``, so their status replies (a full disk, a
    failed write) are silently dropped, and a reply read by another caller is lost
    to its waiter. Registering this object instead keeps every reply.
    """

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, Message]] = {}

    def _async_response(self, t: int, msg: Message, num: int) -> None:
        self.got[num] = (t, msg)


class SshReader(io.RawIOBase):
    """A remote file read front to back; pipelined reads, errors come out translated.

    Requests of ``read_size`` are kept in flight up to READ_AHEAD_BYTES, issued and
    consumed under the connection's lock (paramiko's prefetch thread sends outside
    any lock and could split another thread's multi-packet request). The expected
    size is probed by one request *at* it, so a small file costs one round trip and a
    file that grew since its size was taken is still read to its real end.
    """

    def __init__(
        self,
        remote: SshRemote,
        path: str,
        handle: bytes,
        size: int,
        *,
        start: int = 0,
        limit: int | None = None,
    ) -> None:
        """*start*/*limit*: read only *limit* bytes from offset *start* (a range)."""
        super().__init__()
        self._remote = remote
        self._path = path
        self._handle = handle
        self._replies = _Replies()
        self._queue: deque[tuple[int, int, int]] = deque()  # (request, offset, length)
        self._next = start  # next offset to ask for
        self._end = None if limit is None else start + limit  # never ask at or past it
        self._expect: int | None = size  # None once the file proved longer
        self._buffer = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def _top_up(self) -> None:
        step = self._remote.read_size
        depth = max(2, READ_AHEAD_BYTES // step)
        sftp = self._remote._sftp
        while len(self._queue) < depth:
            if self._expect is not None and self._next > self._expect:
                break  # everything up to the expected end, and the probe at it, is asked
            if self._end is not None and self._next >= self._end:
                break  # a range: all of it is asked, and no probe beyond it
            length = step
            if self._expect is not None and self._next < self._expect:
                length = min(step, self._expect - self._next)
            if self._end is not None:
                length = min(length, self._end - self._next)
            num = sftp._async_request(
                self._replies, CMD_READ, self._handle, int64(self._next), length
            )
            self._queue.append((num, self._next, length))
            self._next += length

    def _piece(self) -> bytes:
        """The next bytes of the file, b"" at its end (caller holds the lock)."""
        sftp = self._remote._sftp
        while not self._eof:
            self._top_up()
            if not self._queue:  # a range read to its end
                self._eof = True
                break
            num, offset, length = self._queue.popleft()
            t, msg = self._remote._wait(self._replies, num)
            if t == CMD_STATUS:
                try:
                    sftp._convert_status(msg)
                except EOFError:
                    self._eof = True
                    break
                raise SFTPError("expected data, got an OK status")
            if t != CMD_DATA:
                raise SFTPError("expected data")
            data = msg.get_string()
            if self._expect is not None and offset >= self._expect and data:
                self._expect = None  # the probe found more: the file grew, read on
            if len(data) < length:  # short read: ask for the gap before anything else
                gap = offset + len(data)
                gap_num = sftp._async_request(
                    self._replies, CMD_READ, self._handle, int64(gap), length - len(data)
                )
                self._queue.appendleft((gap_num, gap, length - len(data)))
            if data:
                return bytes(data)
        return b""

    def read(self, size: int | None = -1) -> bytes:
        want = sys.maxsize if size is None or size < 0 else size
        pieces: list[bytes | memoryview] = []
        got = 0
        with self._remote._op("read", self._path):
            while got < want:
                if not self._buffer:
                    piece = self._piece()
                    if not piece:
                        break
                    self._buffer = memoryview(piece)
                take = self._buffer[: want - got]
                self._buffer = self._buffer[len(take) :]
                pieces.append(take)
                got += len(take)
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Close the remote handle without waiting for the reply (nothing depends on it)."""
        if not self.closed:
            try:
                if self._remote.alive():
                    with self._remote._op("close", self._path):
                        self._remote._sftp._async_request(self._replies, CMD_CLOSE, self._handle)
            finally:
                super().close()


class SshAtomicWriter(CommitOnExit):
    """Writes to an exclusively created temporary sibling; commit renames it into place.

    Pipelined on paramiko's request layer: the permission change and every write are
    sent without waiting, and every status reply is checked before the handle is
    closed and the file renamed, so a short write or a full disk fails the commit.
    Requests are cut to fill whole SSH packets (see :func:`_write_piece`) whatever
    sizes the caller writes. A small file costs three round trips: open, the rest
    (chmod, data, close), rename.
    """

    def __init__(self, remote: SshRemote, final_path: str, mode: int) -> None:
        self._remote = remote
        self.final_path = final_path
        self.temp_path = temp_path_for(final_path)
        self._written = 0
        self._offset = 0
        self._done = False
        self._replies = _Replies()
        self._inflight: deque[int] = deque()
        self._pending = bytearray()
        sftp = remote._sftp
        with remote._op("create", self.temp_path):
            # O_CREAT|O_EXCL: never reuse or follow whatever sits at that name.
            flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL
            _t, msg = sftp._request(CMD_OPEN, _b(self.temp_path), flags, SFTPAttributes())
            self._handle: bytes = msg.get_binary()
            attrs = SFTPAttributes()
            attrs.st_mode = mode  # exact bits, whatever the server's umask
            self._inflight.append(
                sftp._async_request(self._replies, CMD_FSETSTAT, self._handle, attrs)
            )
        self._piece_size = _write_piece(remote, self._handle)

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        self._written += size
        if self._pending:  # top up the partial request first
            take = min(self._piece_size - len(self._pending), size)
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == self._piece_size:
                self._send(self._pending)
                self._pending = bytearray()
        whole = len(view) - len(view) % self._piece_size
        if whole:
            self._send(view[:whole])  # no copy: paramiko frames straight from the view
        self._pending += view[whole:]
        return size

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        sftp = self._remote._sftp
        with self._remote._op("write", self.temp_path):
            for start in range(0, len(data), self._piece_size):
                piece = data[start : start + self._piece_size]
                self._inflight.append(
                    sftp._async_request(
                        self._replies, CMD_WRITE, self._handle, int64(self._offset), piece
                    )
                )
                self._offset += len(piece)
                while len(self._inflight) > WRITE_REQUESTS_IN_FLIGHT:
                    self._check(self._inflight.popleft())

    def _check(self, num: int) -> None:
        """Wait for one reply and raise if it is not an OK status (caller holds the lock)."""
        t, msg = self._remote._wait(self._replies, num)
        if t != CMD_STATUS:
            raise SFTPError("expected a status reply")
        self._remote._sftp._convert_status(msg)

    def commit(self) -> None:
        """Send the rest, check every reply, close, then rename over the final name."""
        if self._done:
            return
        try:
            if self._pending:
                self._send(self._pending)
                self._pending = bytearray()
            sftp = self._remote._sftp
            with self._remote._op("write", self.temp_path):
                self._inflight.append(sftp._async_request(self._replies, CMD_CLOSE, self._handle))
                while self._inflight:
                    self._check(self._inflight.popleft())
            self._handle = b""
            self._remote.rename_into_place(self.temp_path, self.final_path)
            self._done = True
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file; the final name is untouched. Best effort."""
        if self._done:
            return
        self._done = True
        if not self._remote.alive():
            return  # a later run sweeps the temp file (is_temp_name)
        try:
            with self._remote._lock:
                sftp = self._remote._sftp
                if self._handle:
                    sftp._async_request(self._replies, CMD_CLOSE, self._handle)
                sftp.remove(_b(self.temp_path))
        except Exception:
            log.debug("could not remove %s on %s", self.temp_path, self._remote.label)


class SshRemote(RemoteBase):
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
    ) -> None:
        self._transport = transport
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
        where = f"{user}@{host}:{port}"
        known = _load_known_keys(Path(known_hosts), host, port)
        pkey = _load_client_key(Path(key_file), where)
        sock: socket.socket | None = None
        transport: paramiko.Transport | None = None
        try:
            # No SFTP session yet, so no OSError here can be a path refusal: alive=False.
            with _boundary(where, "connect", lambda: False, lambda: None):
                sock = socket.create_connection((host, port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                transport = paramiko.Transport(sock)
                _prefer_algorithms(transport, known)
                transport.banner_timeout = timeout
                transport.handshake_timeout = timeout
                transport.auth_timeout = timeout
                _negotiate(transport, timeout)
                _check_host_key(transport.get_remote_server_key(), known, where, Path(known_hosts))
                transport.auth_publickey(user, pkey)
                if not transport.is_authenticated():
                    raise AuthError(f"{where}: the server wants more than our key")
                transport.set_keepalive(keepalive)
                sftp = paramiko.SFTPClient.from_transport(
                    transport, window_size=SFTP_WINDOW, max_packet_size=SFTP_MAX_PACKET
                )
                if sftp is None:
                    raise TransientError(f"{where}: could not open the SFTP subsystem")
                sftp.get_channel().settimeout(io_timeout)
                read_size, write_size = _sftp_limits(sftp)
        except BaseException:
            if transport is not None:
                transport.close()
            elif sock is not None:
                sock.close()
            raise
        log.debug("connected to %s (cipher %s)", where, transport.remote_cipher)
        return cls(transport, sftp, where, read_size=read_size, write_size=write_size)

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
        return _boundary(self._label, f"{what} {path!r}", self.alive, self._retire)

    def _wait(self, replies: _Replies, num: int) -> tuple[int, Message]:
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

    def _to_stat(self, path: str, attr: SFTPAttributes, report_as: str | None = None) -> RemoteStat:
        kind = _entry_type(attr.st_mode)
        target = None
        if kind is EntryType.SYMLINK:
            target = _s(self._sftp.readlink(_b(path)) or b"")
        return RemoteStat(
            path=path if report_as is None else report_as,
            type=kind,
            mode=stat_mod.S_IMODE(attr.st_mode or 0),
            mtime=int(attr.st_mtime or 0),
            size=int(attr.st_size or 0),
            link_target=target,
        )

    def stat(self, path: str) -> RemoteStat | None:
        """lstat *path*; None if it does not exist."""
        with self._op("stat", path):
            try:
                attr = self._sftp.lstat(_b(path))
            except FileNotFoundError:
                return None
            return self._to_stat(path, attr)

    def _read_dir(self, path: str) -> list[tuple[str, SFTPAttributes]]:
        """READDIR with names decoded losslessly (paramiko's listdir_attr decodes names
        strictly as UTF-8 and would fail a whole mirror on one Latin-1 file name)."""
        sftp = self._sftp
        _t, msg = sftp._request(CMD_OPENDIR, _b(path))
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
                    name = _s(msg.get_string())
                    longname = msg.get_string()
                    attr = SFTPAttributes._from_msg(msg, name, longname)
                    if name not in (".", ".."):
                        entries.append((name, attr))
        finally:
            sftp._request(CMD_CLOSE, handle)
        entries.sort(key=lambda e: _b(e[0]))
        return entries

    def listdir(self, path: str) -> list[RemoteStat]:
        """Entries of *path*, sorted by (byte) name, each with its full path."""
        with self._op("list", path):
            return [
                self._to_stat(posixpath.join(path, name), attr)
                for name, attr in self._read_dir(path)
            ]

    def walk(self, root: str) -> Iterator[RemoteStat]:
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
            pending.extend(reversed([s.path for s in stats if s.type is EntryType.DIR]))

    # ----- content -----------------------------------------------------------------

    def open_read(self, path: str, size_hint: int | None = None) -> SshReader:
        """Open *path* for a pipelined front-to-back read.

        *size_hint* (the size a walk just reported) saves the round trip that asks
        for it; a file that has grown since is still read to its end.
        """
        sftp = self._sftp
        with self._op("open", path):
            _t, msg = sftp._request(CMD_OPEN, _b(path), SFTP_FLAG_READ, SFTPAttributes())
            handle = msg.get_binary()
            if size_hint is None:
                try:
                    _t, msg = sftp._request(CMD_FSTAT, handle)
                    size_hint = int(SFTPAttributes._from_msg(msg).st_size or 0)
                except BaseException:
                    sftp._async_request(_Replies(), CMD_CLOSE, handle)
                    raise
        return SshReader(self, path, handle, size_hint)

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """*length* bytes of *path* from *offset* (fewer at its end): the same pipelined
        reads as :meth:`open_read`, started at *offset* and never past its range."""
        check_range(self.label, path, offset, length)
        if length == 0:
            return b""
        with self._op("open", path):
            _t, msg = self._sftp._request(CMD_OPEN, _b(path), SFTP_FLAG_READ, SFTPAttributes())
            handle = msg.get_binary()
        with SshReader(self, path, handle, offset + length, start=offset, limit=length) as reader:
            return reader.read(length)

    def open_write(self, path: str, mode: int = 0o644) -> SshAtomicWriter:
        """Atomic write of *path*: temporary sibling (O_EXCL), then posix-rename."""
        return SshAtomicWriter(self, path, mode)

    def rename_into_place(self, temp_path: str, final_path: str) -> None:
        """posix-rename@openssh.com: replaces *final_path* atomically."""
        with self._op("rename", f"{temp_path} -> {final_path}"):
            self._sftp.posix_rename(_b(temp_path), _b(final_path))

    # ----- namespace ---------------------------------------------------------------

    def mkdir_p(self, path: str, mode: int = 0o755) -> None:
        """Create *path* and missing parents; a directory already there is success."""
        existing = self.stat(path)
        if existing is not None:
            if existing.type is not EntryType.DIR:
                raise RemotePathError(f"{self._label}: mkdir {path!r}: exists and is not a dir")
            return
        parent = posixpath.dirname(path.rstrip("/"))
        if parent and parent != path:
            self.mkdir_p(parent, mode)
        try:
            with self._op("mkdir", path):
                self._sftp.mkdir(_b(path), mode)
        except RemotePathError:
            now = self.stat(path)  # lost a race with another creator?
            if now is None or now.type is not EntryType.DIR:
                raise

    def remove(self, path: str) -> None:
        """Unlink a file or symlink."""
        with self._op("remove", path):
            self._sftp.remove(_b(path))

    def rmdir(self, path: str) -> None:
        """Remove an empty directory."""
        with self._op("rmdir", path):
            self._sftp.rmdir(_b(path))

    def rename(self, src: str, dst: str) -> None:
        """Plain SFTP rename: OpenSSH refuses if *dst* exists, so it never clobbers."""
        with self._op("rename", f"{src} -> {dst}"):
            self._sftp.rename(_b(src), _b(dst))

    def symlink(self, target: str, path: str) -> None:
        """Create symlink *path* -> *target*."""
        with self._op("symlink", path):
            self._sftp.symlink(_b(target), _b(path))

    def readlink(self, path: str) -> str:
        """Target of symlink *path*."""
        with self._op("readlink", path):
            return _s(self._sftp.readlink(_b(path)) or b"")

    def chmod(self, path: str, mode: int) -> None:
        """Set permission bits (follows a symlink, as SFTP setstat does)."""
        with self._op("chmod", path):
            self._sftp.chmod(_b(path), mode)

    def utime(self, path: str, mtime: int, atime: int | None = None) -> None:
        """Set mtime (and atime, default the same), whole seconds."""
        with self._op("utime", path):
            self._sftp.utime(_b(path), (mtime if atime is None else atime, mtime))

    # ----- commands ----------------------------------------------------------------

    def exec(
        self,
        command: Sequence[str],
        timeout: float,
        *,
        max_output: int = MAX_EXEC_OUTPUT,
        enforce_on_server: bool = True,
    ) -> ExecResult:
        """Run argv *command* (quoted by shlex.join) with no stdin.

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
        build_command(argv)  # validate what the caller gave, before any wrapping
        grace = 0.0
        if enforce_on_server:
            argv = ["timeout", "--kill-after=5", f"{timeout:.3f}", *argv]
            grace = EXEC_GRACE_S
        line = build_command(argv)
        what = f"exec {command[0]!r}"
        started = time.monotonic()
        with self._unlocked_op(what, ""):
            channel = self._transport.open_session(timeout=min(timeout, IO_TIMEOUT_S))
        try:
            with self._unlocked_op(what, ""):
                channel.exec_command(line)
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
    ) -> ExecResult:
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
        return ExecResult(channel.recv_exit_status(), bytes(out), bytes(err))


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


def _prefer_algorithms(transport: paramiko.Transport, known: dict[str, paramiko.PKey]) -> None:
    """GCM first (one pass per byte, AES-NI); the host key types we know first, so a
    server with several keys shows us the one we can check (as OpenSSH does)."""
    opts = transport.get_security_options()
    ciphers = [c for c in PREFERRED_CIPHERS if c in opts.ciphers]
    opts.ciphers = tuple(ciphers + [c for c in opts.ciphers if c not in ciphers])
    known_types = [k for k in opts.key_types if k in known]
    if known_types:
        opts.key_types = tuple(known_types + [k for k in opts.key_types if k not in known_types])


def _sftp_limits(sftp: paramiko.SFTPClient) -> tuple[int, int]:
    """(read, write) request sizes the server accepts; 32 KiB if it does not say.

    Asks OpenSSH's limits@openssh.com; a server without it answers with an error
    status, which is fine: the SFTP v3 guarantee of 32 KiB is then what we use.
    """
    try:
        _t, msg = sftp._request(CMD_EXTENDED, "limits@openssh.com")
        _max_packet, max_read, max_write = (msg.get_int64() for _ in range(3))
    except (OSError, EOFError, SFTPError):
        return DEFAULT_REQUEST, DEFAULT_REQUEST
    cap = SFTP_MAX_PACKET - 1024
    read = min(max_read, cap) if max_read else DEFAULT_REQUEST
    write = min(max_write, cap) if max_write else DEFAULT_REQUEST
    return max(read, DEFAULT_REQUEST), max(write, DEFAULT_REQUEST)


def _write_piece(remote: SshRemote, handle: bytes) -> int:
    """The largest write payload whose request exactly fills whole SSH packets.

    The server takes channel packets of ``out_max_packet_size`` (32 KiB for sshd);
    paramiko sends at most that minus 64 per packet. A 32 KiB payload plus the SFTP
    header spills a 29-byte second packet: sizing requests to whole packets halves
    the packet count.
    """
    packet = remote._sftp.get_channel().out_max_packet_size - _CHANNEL_SLACK
    header = _WRITE_HEADER + len(handle)
    packets = max(1, (remote.write_size + header) // packet)
    return max(1024, min(remote.write_size, packets * packet - header))


def _negotiate(transport: paramiko.Transport, timeout: float) -> None:
    """Key exchange with a real deadline (paramiko's start_client just stops waiting)."""
    done = threading.Event()
    transport.start_client(event=done)
    if not done.wait(timeout):
        raise TransientError(f"SSH key exchange did not finish within {timeout:g} s")
    if not transport.is_active():
        exc = transport.get_exception()
        raise exc if exc is not None else paramiko.SSHException("key exchange failed")


class SshPool:
    """Live SSH connections keyed by (host, port, user), shared by threads.

    ``get`` hands back the same :class:`SshRemote` while it is alive and replaces it
    once it has died or been retired after a transient error. After a fork the child
    starts with an empty pool: paramiko's transport threads do not survive fork.
    """

    def __init__(
        self,
        key_file: str | os.PathLike[str],
        known_hosts: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        io_timeout: float = IO_TIMEOUT_S,
        connect: Callable[..., SshRemote] = SshRemote.connect,
    ) -> None:
        self._key_file = key_file
        self._known_hosts = known_hosts
        self._timeout = timeout
        self._io_timeout = io_timeout
        self._connect = connect
        self._lock = threading.Lock()
        self._host_locks: dict[tuple[str, int, str], threading.Lock] = {}
        self._remotes: dict[tuple[str, int, str], SshRemote] = {}
        self._pid = os.getpid()

    def get(self, host: str, port: int, user: str) -> SshRemote:
        """A live connection to user@host:port, connecting if needed (one at a time
        per key, so ten threads asking at once make one connection, not ten)."""
        key = (host, port, user)
        with self._lock:
            if self._pid != os.getpid():
                self._remotes.clear()
                self._host_locks.clear()
                self._pid = os.getpid()
            host_lock = self._host_locks.setdefault(key, threading.Lock())
        with host_lock:
            with self._lock:
                remote = self._remotes.get(key)
            if remote is not None and remote.alive():
                return remote
            if remote is not None:
                log.info("dropping dead connection to %s", remote.label)
                remote.close()
            remote = self._connect(
                host,
                port,
                user,
                self._key_file,
                self._known_hosts,
                timeout=self._timeout,
                io_timeout=self._io_timeout,
            )
            with self._lock:
                self._remotes[key] = remote
            return remote

    def close_all(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            remotes = list(self._remotes.values())
            self._remotes.clear()
        for remote in remotes:
            remote.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close_all()


if TYPE_CHECKING:  # mypy proves SshRemote satisfies the Remote protocol

    def _is_a_remote(remote: SshRemote) -> Remote:
        return remote
