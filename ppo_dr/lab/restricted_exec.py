"""A lab server's disk as the outside world may touch it, and the few commands SSH may run.

A lab server is a process, not a machine: there is no shell and no user account to
contain what an SSH ``exec`` request does. So this module is the containment:

* :class:`ServerDisk` is the only way the server's SSH commands and its HTTP app reach
  the disk. Every path a caller names is an absolute path *inside* the server's
  filesystem (``/srv/ppo/...``), resolved with symlinks followed and refused if the
  result leaves ``fs_root``. Client ids are checked with :func:`ppo_dr.ids.check_id`
  before they become paths. The journal of each client is written under a per-client
  lock that the freeze and the snapshot hook take too, so "frozen" and "dumped" mean
  what they say even while the app is appending.
* :func:`run_command` runs one SSH ``exec`` request: the command line is split with
  :mod:`shlex` (never handed to a shell) and looked up in a fixed table
  (:data:`COMMANDS`). One command reads stdin: the restore's tar receiver, accepted
  with exactly the options a restore sends (:func:`_tar_request`,
  :mod:`ppo_dr.lab.tar_receiver`). Exit statuses: 0 done, 1 failed (no such path, client not on
  this server), 2 refused (bad usage, unsafe path or id), 124 timed out (under a
  ``timeout`` wrapper, which the SSH transport adds), 127 command not allowed.

Errors of the lab's own (subclasses of :class:`~ppo_dr.errors.LabError`):
:class:`ClientNotHere` (no data for that client on this server: HTTP 404),
:class:`DataRootMissing` (the disk is gone: HTTP 503), :class:`ClientFrozen` (writes
refused while a snapshot or move is under way: HTTP 503).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ppo_dr.errors import LabError, UnsafeInputError
from ppo_dr.ids import absolute_path_problem, check_id
from ppo_dr.lab.clock import ServerClock
from ppo_dr.lab.tar_receiver import StdinReader, extract
from ppo_dr.local_files import replace_with
from ppo_dr.mirror.tar_stream import TAR_EXTRACT

if TYPE_CHECKING:
    from ppo_dr.lab.procutil import FleetWatch

FROZEN_MARKER: Final = ".ppo-frozen"
JOURNAL: Final = "journal/journal.log"
JOURNAL_DUMP: Final = ".ppo-dump/journal.dump"

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_REFUSED: Final = 2
EXIT_TIMED_OUT: Final = 124
EXIT_NOT_ALLOWED: Final = 127

MAX_COMMAND_LINE: Final = 4096
_CHUNK: Final = 1 << 20


class ClientNotHere(LabError):
    """The client is unknown, or its data directory is not on this server."""


class DataRootMissing(LabError):
    """The server's data root is gone or not writable (a disk fault)."""


class ClientFrozen(LabError):
    """The client's ``.ppo-frozen`` marker is set: writes are refused until unfrozen."""


def is_inside(root: Path, path: Path) -> bool:
    """True if *path* is *root* or below it (both already resolved)."""
    return path == root or path.is_relative_to(root)


class ServerDisk:
    """One lab server's filesystem: confined paths, client directories, journals.

    Shared by the SSH commands (run in worker threads) and the HTTP app (whose file work
    also runs in worker threads), hence thread-safe: journal changes hold the client's
    lock.
    """

    def __init__(
        self,
        server_id: str,
        role: str,
        fs_root: Path,
        data_root: str,
        fleet: FleetWatch,
        clock: ServerClock | None = None,
    ) -> None:
        self.server_id = server_id
        self.clock = clock or ServerClock(None)
        self.role = role
        self.fs_root = Path(os.path.realpath(fs_root))
        self.data_root = data_root
        self.fleet = fleet
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ---- paths

    @property
    def data_root_path(self) -> Path:
        """The data root on the host (``<fs_root>/srv/ppo``), not resolved."""
        return self.fs_root / self.data_root.lstrip("/")

    def host_path(self, visible: str) -> Path:
        """The resolved host path of *visible* (``/srv/ppo/x``); refused if it escapes."""
        problem = absolute_path_problem(visible)
        if problem is not None:
            raise UnsafeInputError(f"path {visible!r} refused: {problem}")
        real = Path(os.path.realpath(self.fs_root / visible.lstrip("/")))
        if not is_inside(self.fs_root, real):
            raise UnsafeInputError(
                f"path {visible!r} refused: it leads outside the server's filesystem"
            )
        return real

    def visible_path(self, host: Path) -> str:
        """How a client of this server names *host* (the inverse of :meth:`host_path`)."""
        relative = host.relative_to(self.fs_root)
        return "/" if relative == Path() else f"/{relative.as_posix()}"

    def data_root_problem(self) -> str | None:
        """Why the data root is unusable (missing, not writable), or None if it is fine."""
        root = self.data_root_path
        if not root.is_dir():
            return f"data root {self.data_root} is missing"
        if not os.access(root, os.W_OK | os.X_OK):
            return f"data root {self.data_root} is not writable"
        return None

    def client_dir(self, client_id: str) -> Path:
        """The resolved data directory of *client_id* on this server.

        Raises :class:`UnsafeInputError` for a malformed id, :class:`DataRootMissing`
        when the disk is gone and :class:`ClientNotHere` when the fleet does not know
        the client or its directory does not exist here (it lives on another server).
        """
        client_id = check_id(client_id, "client id")
        fleet = self.fleet.current()
        if fleet is None:
            raise ClientNotHere(f"no fleet loaded from {self.fleet.path}")
        try:
            client = fleet.client(client_id)
        except KeyError:
            raise ClientNotHere(f"client {client_id!r} is not in the fleet") from None
        problem = self.data_root_problem()
        if problem is not None:
            raise DataRootMissing(problem)
        real = Path(os.path.realpath(self.data_root_path / client.data_path))
        if not is_inside(self.fs_root, real):
            raise UnsafeInputError(f"data of client {client_id!r} leads outside the filesystem")
        if not real.is_dir():
            raise ClientNotHere(f"client {client_id!r} has no data on server {self.server_id}")
        return real

    def _lock(self, client_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(client_id, threading.Lock())

    # ---- freeze

    def is_frozen(self, client_dir: Path) -> bool:
        return (client_dir / FROZEN_MARKER).exists()

    def set_frozen(self, client_id: str, frozen: bool) -> Path:
        """Create or remove the client's freeze marker; idempotent. Returns the client dir.

        Taken under the journal lock: once this returns, no append is half-way, so every
        write acknowledged before the freeze is in the journal and none lands after it.
        """
        cdir = self.client_dir(client_id)
        marker = cdir / FROZEN_MARKER
        with self._lock(client_id):
            if frozen:
                marker.touch()
            else:
                marker.unlink(missing_ok=True)
        return cdir

    # ---- the journal

    def append_journal(self, client_id: str, record: dict[str, Any]) -> None:
        """Append *record* as one JSON line and fsync it: an acknowledged write is durable.

        Refused with :class:`ClientFrozen` while the client is frozen. A torn last line
        (the process was killed mid-write) is closed with a newline first, so one
        crash costs at most that one record, never the next.
        """
        cdir = self.client_dir(client_id)
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
        with self._lock(client_id):
            if self.is_frozen(cdir):
                raise ClientFrozen(f"client {client_id!r} is frozen on {self.server_id}")
            path = cdir / JOURNAL
            path.parent.mkdir(exist_ok=True)
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            self.clock.stamp(path)
            if created:
                _fsync_dir(path.parent)

    def read_journal(self, client_id: str, after: int = -1) -> list[dict[str, Any]]:
        """The client's journal records with ``seq > after``, in file order."""
        path = self.client_dir(client_id) / JOURNAL
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        return [r for r in parse_journal(data.splitlines()) if r["seq"] > after]

    def dump_journal(self, client_id: str) -> tuple[Path, int, int]:
        """The pre-snapshot hook: a consistent copy of the journal, replaced atomically.

        Copies only whole lines, under the journal lock, to a temporary file that is
        fsynced and renamed over ``.ppo-dump/journal.dump``. Returns (dump path, record
        count, bytes).
        """
        cdir = self.client_dir(client_id)
        dump = cdir / JOURNAL_DUMP
        dump.parent.mkdir(exist_ok=True)
        tmp = dump.with_name(f".{dump.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with self._lock(client_id):
            try:
                data = (cdir / JOURNAL).read_bytes()
            except FileNotFoundError:
                data = b""
            data = data[: data.rfind(b"\n") + 1]
            replace_with(dump, tmp, data, exclusive=False)
            self.clock.stamp(dump)
            _fsync_dir(dump.parent)
        return dump, data.count(b"\n"), len(data)


def parse_journal(lines: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """Journal records from raw lines; torn or foreign lines are skipped, not fatal."""
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("seq"), int):
            records.append(record)
    return records


def _fsync_dir(path: Path) -> None:
    """Make a new or renamed directory entry durable, not only the file's data."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- the commands


class CommandFailed(LabError):
    """A permitted command could not do its work (exit status 1)."""


@dataclass(frozen=True)
class ExecResult:
    """What an SSH exec request answers: exit status and the two output streams."""

    status: int
    stdout: str = ""
    stderr: str = ""


def _json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True) + "\n"


def _health(disk: ServerDisk) -> str:
    ok = disk.data_root_problem() is None
    now = datetime.fromtimestamp(disk.clock.now(), UTC).isoformat(timespec="seconds")
    return _json_line(
        {"server": disk.server_id, "role": disk.role, "data_root_ok": ok, "time": now}
    )


def _df(disk: ServerDisk) -> str:
    problem = disk.data_root_problem()
    if problem is not None:
        raise CommandFailed(problem)
    st = os.statvfs(disk.data_root_path)
    total = st.f_blocks * st.f_frsize
    return _json_line(
        {
            "total": total,
            "used": total - st.f_bfree * st.f_frsize,
            "free": st.f_bavail * st.f_frsize,
        }
    )


def _existing(disk: ServerDisk, visible: str) -> Path:
    path = disk.host_path(visible)
    if not path.exists():
        raise CommandFailed(f"{visible}: no such file or directory")
    return path


def _du(disk: ServerDisk, visible: str) -> str:
    path = _existing(disk, visible)
    if not path.is_dir():
        return f"{path.stat().st_size}\n"
    total = 0
    for top, _dirs, files in os.walk(path):  # does not follow symlinks
        for name in files:
            st = Path(top, name).lstat()
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return f"{total}\n"


def _sha256sum(disk: ServerDisk, visible: str) -> str:
    path = _existing(disk, visible)
    if not path.is_file():
        raise CommandFailed(f"{visible}: not a regular file")
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
    return f"{digest.hexdigest()}  {visible}\n"


def _freeze(disk: ServerDisk, client: str) -> str:
    disk.set_frozen(client, True)
    return _json_line({"client": client, "frozen": True, "server": disk.server_id})


def _unfreeze(disk: ServerDisk, client: str) -> str:
    disk.set_frozen(client, False)
    return _json_line({"client": client, "frozen": False, "server": disk.server_id})


def _snapshot_hook(disk: ServerDisk, client: str) -> str:
    dump, records, size = disk.dump_journal(client)
    return _json_line(
        {"client": client, "dump": disk.visible_path(dump), "records": records, "bytes": size}
    )


def _untar(disk: ServerDisk, visible: str, stdin: StdinReader) -> str:
    path = _existing(disk, visible)
    root = Path(os.path.realpath(disk.data_root_path))
    if not is_inside(root, path) or path == root or not path.is_dir():
        raise UnsafeInputError(f"{visible}: not a directory inside the data root")
    try:
        members = extract(stdin, path)
    except tarfile.TarError as exc:  # a truncated or malformed stream: what is written stays
        raise CommandFailed(f"{visible}: {exc}") from exc
    return _json_line({"directory": visible, "members": members})


@dataclass(frozen=True)
class Command:
    """One permitted command: its usage line and its implementation (given stdin
    after its arguments if *reads_stdin*)."""

    usage: str
    run: Callable[..., str]
    nargs: int
    reads_stdin: bool = False


COMMANDS: Final[dict[str, Command]] = {
    "health": Command("health", _health, 0),
    "df": Command("df", _df, 0),
    "du": Command("du PATH", _du, 1),
    "sha256sum": Command("sha256sum PATH", _sha256sum, 1),
    "freeze": Command("freeze CLIENT", _freeze, 1),
    "unfreeze": Command("unfreeze CLIENT", _unfreeze, 1),
    "snapshot-hook": Command("snapshot-hook CLIENT", _snapshot_hook, 1),
    "tar": Command(shlex.join([*TAR_EXTRACT, "--directory=DIR"]), _untar, 1, reads_stdin=True),
}
_DIRECTORY_OPTION: Final = "--directory="


def _tar_request(argv: list[str]) -> list[str] | None:
    """argv as ``[tar, DIR]`` if it is exactly the restore's receiver, else None."""
    if argv[:-1] != list(TAR_EXTRACT) or not argv[-1].startswith(_DIRECTORY_OPTION):
        return None
    return ["tar", argv[-1][len(_DIRECTORY_OPTION) :]]


def _printable(text: str) -> str:
    return text if text.isprintable() else repr(text)


@dataclass(frozen=True)
class ExecRequest:
    """A parsed, permitted command line: what to run, and for how long at most."""

    name: str
    args: tuple[str, ...]
    command: Command
    timeout: float | None = None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_S: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float | None:
    match = _DURATION.fullmatch(text)
    return float(match.group(1)) * _UNIT_S[match.group(2)] if match else None


def _strip_timeout(argv: list[str]) -> tuple[float | None, list[str]] | ExecResult:
    """Take off a leading GNU ``timeout [-k D | --kill-after=D] DURATION``.

    The SSH transport wraps every command this way so a hung command is stopped on the
    server; the lab accepts the wrapper and answers 124 (as ``timeout`` does) when the
    command runs longer.
    """
    if not argv or argv[0] != "timeout":
        return None, argv
    rest = argv[1:]
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-k", "--kill-after") and rest and _duration(rest[0]) is not None:
            rest.pop(0)
        elif not (
            option.startswith("--kill-after=") and _duration(option.split("=", 1)[1]) is not None
        ):
            return ExecResult(EXIT_REFUSED, stderr=f"timeout: option {option!r} not supported\n")
    limit = _duration(rest[0]) if rest else None
    if limit is None or len(rest) < 2:
        return ExecResult(EXIT_REFUSED, stderr="usage: timeout [-k DURATION] DURATION COMMAND\n")
    return (limit or None), rest[1:]  # 0 means no limit, as in GNU timeout


def parse_command(command_line: str) -> ExecRequest | ExecResult:
    """Split and check one exec request; an :class:`ExecResult` is a refusal to send back."""
    if len(command_line) > MAX_COMMAND_LINE:
        return ExecResult(EXIT_REFUSED, stderr=f"command line longer than {MAX_COMMAND_LINE}\n")
    try:
        argv = shlex.split(command_line)
    except ValueError as exc:
        return ExecResult(EXIT_REFUSED, stderr=f"cannot parse command line: {exc}\n")
    stripped = _strip_timeout(argv)
    if isinstance(stripped, ExecResult):
        return stripped
    timeout, argv = stripped
    name = argv[0] if argv else ""
    if name == "tar":
        argv = _tar_request(argv) or argv
    command = COMMANDS.get(name)
    if command is None:
        return ExecResult(EXIT_NOT_ALLOWED, stderr=f"command not allowed: {_printable(name)}\n")
    if len(argv) - 1 != command.nargs:
        return ExecResult(EXIT_REFUSED, stderr=f"usage: {command.usage}\n")
    return ExecRequest(name, tuple(argv[1:]), command, timeout)


def execute(disk: ServerDisk, request: ExecRequest, stdin: StdinReader | None = None) -> ExecResult:
    """Run a parsed request; failures become exit statuses, never exceptions.

    Blocking (hashing, walking a tree, reading *stdin*): call it from a worker thread.
    A command that reads stdin and is given none reads an empty stream.
    """
    args: tuple[object, ...] = request.args
    if request.command.reads_stdin:
        args = (*args, stdin or StdinReader(lambda _size: b""))
    try:
        return ExecResult(EXIT_OK, stdout=request.command.run(disk, *args))
    except UnsafeInputError as exc:
        return ExecResult(EXIT_REFUSED, stderr=f"{request.name}: {exc}\n")
    except LabError as exc:
        return ExecResult(EXIT_FAILED, stderr=f"{request.name}: {exc}\n")
    except OSError as exc:
        return ExecResult(EXIT_FAILED, stderr=f"{request.name}: {exc.strerror or exc}\n")


def run_command(disk: ServerDisk, command_line: str) -> ExecResult:
    """Parse and run one command line, ignoring any ``timeout`` wrapper's limit."""
    parsed = parse_command(command_line)
    return parsed if isinstance(parsed, ExecResult) else execute(disk, parsed)
