"""The one interface the mirror, restore and failover code use to touch a server.

Everything above this layer speaks :class:`Remote`; SSH/SFTP (paramiko) and object
storage implement it. The contract every implementation keeps:

- Paths are POSIX strings; names may hold spaces, newlines and any Unicode (names
  that are not UTF-8 on the server come back with surrogate escapes and round-trip).
- :meth:`Remote.stat` and :meth:`Remote.walk` never follow symlinks: a mirror must
  record a link, not copy what it points to (which may be outside the data root).
- Writes are atomic: data goes to a temporary sibling created exclusively, then is
  renamed over the final name, so a reader (or an interrupted run) sees the old file
  or the new one, never half of one. Temporary names are recognisable
  (:func:`is_temp_name`) so a later run can sweep what a crash left behind.
- Commands are argv lists quoted with :func:`shlex.join` (:func:`build_command`);
  a string is never concatenated into a shell line.
- Only :mod:`ppo_dr.errors` types leave an implementation: TransientError (retry) or
  a PermanentError such as HostKeyError, AuthError, RemotePathError.
"""

from __future__ import annotations

import abc
import errno
import posixpath
import secrets
import shlex
import stat as stat_mod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Protocol, Self

from ppo_dr.closing import ClosesOnExit, LeavesOnExit
from ppo_dr.errors import UnsafeInputError

TEMP_MARKER = ".ppo-tmp-"
NAME_MAX = 255


class EntryType(StrEnum):
    """What a directory entry is; the value is what manifests store."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"  # device, fifo, socket: recorded, never copied


def entry_type_of(st_mode: int | None) -> EntryType:
    """What a POSIX mode (``st_mode``, as lstat or SFTP reports it) says an entry is."""
    mode = st_mode or 0
    if stat_mod.S_ISREG(mode):
        return EntryType.FILE
    if stat_mod.S_ISDIR(mode):
        return EntryType.DIR
    if stat_mod.S_ISLNK(mode):
        return EntryType.SYMLINK
    return EntryType.OTHER


# errno values that mean a path is missing or not ours to touch: a refusal, not a retry.
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


@dataclass(frozen=True, slots=True)
class RemoteStat:
    """Metadata of one remote entry, as the quick check and the manifests need it.

    ``path`` is the path as asked for (:meth:`Remote.stat`, :meth:`Remote.listdir`)
    or relative to the walk root (:meth:`Remote.walk`). ``mode`` holds the permission
    bits only; ``mtime`` is whole seconds (SFTP v3 carries no more). ``mtime_ns`` and
    ``inode`` only where the server can tell (a local walk; None over SFTP): they make
    the snapshot's quick check as strict as git's index.
    """

    path: str
    type: EntryType
    mode: int
    mtime: int
    size: int
    link_target: str | None = None
    mtime_ns: int | None = None
    inode: int | None = None

    @property
    def name(self) -> str:
        """The last path component."""
        return posixpath.basename(self.path)


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What a remote command did. A non-zero status is a result, not an exception."""

    exit_status: int  # -1 if the command died from a signal or the server sent none
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        """True if the command exited with status 0."""
        return self.exit_status == 0


class UsedInWith(Protocol):
    """Something used as ``with thing:``."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class RemoteReader(UsedInWith, Protocol):
    """A remote file opened for sequential reading."""

    def read(self, size: int = -1) -> bytes: ...

    def close(self) -> None: ...


class AtomicWriter(UsedInWith, Protocol):
    """A remote file being written under a temporary name.

    Leaving the ``with`` block normally commits (rename into place); leaving it with
    an exception aborts (the temporary file is removed, the final name untouched).
    """

    final_path: str
    temp_path: str

    def write(self, data: bytes) -> int: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...


class CommitOnExit(LeavesOnExit):
    """The commit skeleton every :class:`AtomicWriter` shares.

    Leaving the ``with`` block normally commits, leaving it with an exception aborts.
    :meth:`commit` runs the backend's :meth:`_finish` (flush, close, move under the
    final name) once; any exception in it aborts before it propagates, so a failed
    commit never leaves a half-written file behind. :meth:`abort` runs
    :meth:`_discard` once, and never after a commit.
    """

    _done: bool = False

    @abc.abstractmethod
    def _finish(self) -> None:
        """Send what is still held and make it visible under the final name."""

    @abc.abstractmethod
    def _discard(self) -> None:
        """Drop what was written (best effort); the final name stays untouched."""

    def commit(self) -> None:
        """Make the written data visible under the final name; abort if that fails."""
        if self._done:
            return
        try:
            self._finish()
            self._done = True
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop what was written; the final name stays untouched. Best effort."""
        if self._done:
            return
        self._done = True
        self._discard()

    def _leave(self, *, failed: bool) -> None:
        if failed:
            self.abort()
        else:
            self.commit()


class Remote(Protocol):
    """A server (or bucket) the DR runbooks read from and write to."""

    @property
    def label(self) -> str:
        """Who this is, for messages and logs (``user@host:port``); never secret."""
        ...

    def stat(self, path: str) -> RemoteStat | None:
        """Metadata of *path* without following a symlink; None if it does not exist."""
        ...

    def stat_many(self, paths: Sequence[str]) -> list[RemoteStat | None]:
        """:meth:`stat` of each of *paths*, in order; a backend with round trips sends
        them together (SFTP: many requests in flight) instead of one after another."""
        ...

    def listdir(self, path: str) -> list[RemoteStat]:
        """The entries of directory *path* (not ``.``/``..``), sorted by name."""
        ...

    def walk(self, root: str) -> Iterator[RemoteStat]:
        """Every entry below *root*, parents before children, paths relative to *root*.

        Symlinks are reported, not followed. A directory that vanishes mid-walk is
        skipped (it was deleted; the next run sees that).
        """
        ...

    def open_read(self, path: str) -> RemoteReader:
        """Open *path* for reading front to back (read-ahead is on)."""
        ...

    def open_write(self, path: str, mode: int = 0o644) -> AtomicWriter:
        """Start an atomic write of *path*; see :class:`AtomicWriter`."""
        ...

    def rename_into_place(self, temp_path: str, final_path: str) -> None:
        """Atomically replace *final_path* by *temp_path* (POSIX rename semantics)."""
        ...

    def read_bytes(self, path: str) -> bytes:
        """The whole content of *path*."""
        ...

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        """*length* bytes of *path* from *offset* (fewer at its end): the blobs of a
        pack a restore or a client's verify needs, without the rest of the pack."""
        ...

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write *data* to *path* atomically (temporary name, then rename into place)."""
        ...

    def mkdir_p(self, path: str, mode: int = 0o755) -> None:
        """Create *path* and missing parents; an existing directory is success."""
        ...

    def remove(self, path: str) -> None:
        """Delete a file or symlink."""
        ...

    def rmdir(self, path: str) -> None:
        """Delete an empty directory."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Rename *src* to *dst*; fails if *dst* exists (never clobbers)."""
        ...

    def symlink(self, target: str, path: str) -> None:
        """Create symlink *path* pointing at *target* (stored verbatim)."""
        ...

    def readlink(self, path: str) -> str:
        """The target of symlink *path*, verbatim."""
        ...

    def chmod(self, path: str, mode: int) -> None:
        """Set the permission bits of *path*."""
        ...

    def utime(self, path: str, mtime: int, atime: int | None = None) -> None:
        """Set the modification (and access) time of *path*, in whole seconds."""
        ...

    def exec(self, command: Sequence[str], timeout: float) -> ExecResult:
        """Run argv *command* on the server; TransientError if it outlives *timeout* s."""
        ...

    def close(self) -> None:
        """Release the connection; further calls fail."""
        ...


class RemoteBase(ClosesOnExit):
    """What every backend builds the same way on top of its own ``open_read`` and
    ``open_write`` (one implementation instead of one per backend)."""

    @abc.abstractmethod
    def open_read(self, path: str) -> RemoteReader:
        """Open *path* for reading front to back."""

    @abc.abstractmethod
    def open_write(self, path: str, mode: int = 0o644) -> AtomicWriter:
        """Start an atomic write of *path*."""

    @abc.abstractmethod
    def stat(self, path: str) -> RemoteStat | None:
        """Metadata of *path* without following a symlink; None if it does not exist."""

    def read_bytes(self, path: str) -> bytes:
        """The whole of *path*."""
        with self.open_read(path) as reader:
            return reader.read()

    def stat_many(self, paths: Sequence[str]) -> list[RemoteStat | None]:
        """Each of *paths* stat-ed in turn (a backend with round trips pipelines them)."""
        return [self.stat(path) for path in paths]

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write *data* to *path* atomically (temporary name, then rename into place)."""
        with self.open_write(path, mode) as writer:
            writer.write(data)


def check_range(label: str, path: str, offset: int, length: int) -> None:
    """Refuse a negative offset or length before it reaches a server."""
    if offset < 0 or length < 0:
        raise UnsafeInputError(f"{label}: read {path!r}: negative offset or length")


def build_command(command: Sequence[str]) -> str:
    """Quote argv *command* into one POSIX shell line; refuse what cannot be quoted.

    SSH hands the server a single string that the login shell parses, so every
    element is quoted by :func:`shlex.join`: ``"a; touch x"`` stays one argument.
    """
    if isinstance(command, str | bytes):
        raise UnsafeInputError("command must be an argv list, not a string")
    if not command:
        raise UnsafeInputError("command must not be empty")
    for arg in command:
        if not isinstance(arg, str):
            raise UnsafeInputError(f"command argument {arg!r} is not a str")
        if "\x00" in arg:
            raise UnsafeInputError("command argument contains a NUL byte")
    return shlex.join(command)


def temp_path_for(final_path: str) -> str:
    """A fresh hidden sibling of *final_path* (same directory, so rename is atomic)."""
    head, tail = posixpath.split(final_path)
    if not tail:
        raise UnsafeInputError(f"cannot write to a directory path {final_path!r}")
    prefix = f"{TEMP_MARKER}{secrets.token_hex(8)}."
    # Stay within NAME_MAX (255 bytes): the tail is only a hint for a human reading ls.
    room = NAME_MAX - len(prefix)
    tail = tail.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
    return posixpath.join(head, prefix + tail)


def is_temp_name(name: str) -> bool:
    """True for a name :func:`temp_path_for` made: leftovers of an interrupted write."""
    return posixpath.basename(name).startswith(TEMP_MARKER)
