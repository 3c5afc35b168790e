"""Snapshot manifests: what one client's tree looked like at one UTC second.

A manifest is plain JSON a person can read (docs/repository.md). Version 2 names the
root of the snapshot's tree objects (``ppo_dr.mirror.trees``: one blob per directory,
so an unchanged directory is not sent again); version 1, still read, listed every path
itself. Either way a reader gets one entry per path with its type, mode, mtime, size,
symlink target and the ids of the blobs that make up its content, in order. It is the
last thing a snapshot writes, so a manifest never names a blob that is not already
stored and indexed.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ppo_dr.errors import UnsafeInputError
from ppo_dr.mirror.errors import RepositoryError
from ppo_dr.transport.base import EntryType, RemoteStat

MANIFEST_VERSION = 2  # 2: the entries live in tree objects; 1: listed in the manifest
READABLE_MANIFEST_VERSIONS = (1, 2)
SNAPSHOT_ID_FORMAT = "%Y-%m-%dT%H-%M-%SZ"
BLOB_ID_RE = re.compile(r"^[0-9a-f]{64}$")
SNAPSHOT_ID_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z$")


def snapshot_id_for(taken_at: datetime) -> str:
    """The id of a snapshot taken at *taken_at* (UTC, to the second)."""
    if taken_at.tzinfo is None:
        raise ValueError("taken_at must be timezone-aware")
    return taken_at.astimezone(UTC).strftime(SNAPSHOT_ID_FORMAT)


def snapshot_time(snapshot_id: str) -> datetime:
    """Inverse of :func:`snapshot_id_for`."""
    return datetime.strptime(snapshot_id, SNAPSHOT_ID_FORMAT).replace(tzinfo=UTC)


def check_snapshot_id(value: object) -> str:
    """*value* if it is a snapshot id (safe as a file name), else UnsafeInputError."""
    if not isinstance(value, str) or not SNAPSHOT_ID_RE.fullmatch(value):
        raise UnsafeInputError(f"snapshot id {value!r} refused: expected {SNAPSHOT_ID_FORMAT}")
    return value


_ENTRY_TYPES = {t.value: t for t in EntryType}  # a dict look-up, not Enum's slow call


@dataclass(frozen=True)
class Entry:
    """One path of a client's tree; *chunks* only for files."""

    path: str
    type: EntryType
    mode: int
    mtime: int
    size: int = 0
    target: str | None = None
    chunks: tuple[str, ...] = ()
    # A file only: the path of an earlier file of the manifest with the same inode
    # (a hard link); its chunks are kept, so a copy can be restored instead.
    link: str | None = None
    # A file only, where the app server reports them (not over SFTP): the quick check's
    # stricter keys (a rewrite within the same second, a file replaced by another).
    mtime_ns: int | None = None
    inode: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "type": self.type.value,
            "mode": f"{self.mode:04o}",
            "mtime": self.mtime,
        }
        if self.type is EntryType.FILE:
            out["size"] = self.size
            out["chunks"] = list(self.chunks)
        if self.target is not None:
            out["target"] = self.target
        if self.link is not None:
            out["link"] = self.link
        if self.mtime_ns is not None:
            out["mtime_ns"] = self.mtime_ns
        if self.inode is not None:
            out["inode"] = self.inode
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any], path: str | None = None) -> Entry:
        """An entry of a version 1 manifest (its own ``path``), or of a tree (*path*
        given: the tree's path and the entry's ``name``)."""
        return cls(
            path=str(raw["path"]) if path is None else path,
            type=_ENTRY_TYPES[raw["type"]],
            mode=int(raw["mode"], 8),
            mtime=int(raw["mtime"]),
            size=int(raw.get("size", 0)),
            target=raw.get("target"),
            chunks=tuple(raw.get("chunks", ())),
            link=raw.get("link"),
            mtime_ns=_optional_int(raw.get("mtime_ns")),
            inode=_optional_int(raw.get("inode")),
        )


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{value!r} is not an integer")
    return value


def same_file_stat(a: RemoteStat | Entry, b: RemoteStat | Entry) -> bool:
    """The quick check: same size and mtime, and, where both sides know them, the
    same mtime in nanoseconds and the same inode (so a rewrite within one second, or a
    file replaced by another of the same size and time, is read again)."""
    if a.size != b.size or a.mtime != b.mtime:
        return False
    if a.mtime_ns is not None and b.mtime_ns is not None and a.mtime_ns != b.mtime_ns:
        return False
    return a.inode is None or b.inode is None or a.inode == b.inode


@dataclass
class Manifest:
    """A client's snapshot: entries (parents before children) and run statistics."""

    client_id: str
    snapshot_id: str
    app_server: str
    entries: list[Entry]
    stats: dict[str, Any] = field(default_factory=dict)
    # The client's top directory itself (path ""): its mode and mtime, restored last.
    # None in manifests written before it was recorded.
    top: Entry | None = None
    # Version 2: the root tree's id (set by the writer, or read; the repository then
    # fills *entries* and *tree_ids*, every tree blob the snapshot uses).
    tree: str | None = None
    tree_ids: tuple[str, ...] = ()
    # Optional: the blob id of the snapshot's directory table (``dir_sigs``), which
    # lets the next run reuse unchanged directories' trees unread. Set by the writer.
    dirs: str | None = None
    # The writer's files and bytes in directories reused unlisted (not in *entries*).
    unlisted: tuple[int, int] = (0, 0)

    def blob_ids(self) -> set[str]:
        """Every blob this snapshot needs: its files' chunks, its trees, its table."""
        table = {self.dirs} if self.dirs is not None else set()
        return {c for e in self.entries for c in e.chunks} | set(self.tree_ids) | table

    @property
    def files(self) -> int:
        return self.unlisted[0] + sum(1 for e in self.entries if e.type is EntryType.FILE)

    @property
    def total_bytes(self) -> int:
        return self.unlisted[1] + sum(e.size for e in self.entries if e.type is EntryType.FILE)

    def fields(self) -> dict[str, Any]:
        """What a manifest says of itself in either version (all but its entries)."""
        doc: dict[str, Any] = {
            "client_id": self.client_id,
            "snapshot_id": self.snapshot_id,
            "taken_at": snapshot_time(self.snapshot_id).isoformat(),
            "app_server": self.app_server,
            "summary": {"files": self.files, "bytes": self.total_bytes},
            "stats": self.stats,
        }
        if self.top is not None:
            doc["top"] = {"mode": f"{self.top.mode:04o}", "mtime": self.top.mtime}
        return doc

    def to_bytes(self) -> bytes:
        """The version 2 document; *tree* must be set (the trees are stored first)."""
        if self.tree is None:
            raise ValueError("a manifest is written after its trees: tree is not set")
        doc = {"version": MANIFEST_VERSION, **self.fields(), "tree": self.tree}
        if self.dirs is not None:
            doc["dirs"] = self.dirs
        # surrogateescape'd names (non-UTF-8 on disk) survive as \udcXX escapes.
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, what: str) -> Manifest:
        """Either version; a version 2 manifest comes back with its root *tree* and no
        entries yet (the repository reads the trees)."""
        try:
            doc = json.loads(data)
            version = doc.get("version")
            if version not in READABLE_MANIFEST_VERSIONS:
                raise RepositoryError(f"{what}: manifest version {version!r} unknown")
            tree = None if version == 1 else str(doc["tree"])
            return cls(
                client_id=str(doc["client_id"]),
                snapshot_id=str(doc["snapshot_id"]),
                app_server=str(doc["app_server"]),
                entries=[Entry.from_json(e) for e in doc["entries"]] if version == 1 else [],
                stats=dict(doc.get("stats", {})),
                top=_top_from_json(doc.get("top")),
                tree=tree,
                dirs=_blob_id_or_none(doc.get("dirs")) if version == 2 else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryError(f"{what}: manifest unreadable ({exc})") from None


def _blob_id_or_none(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not BLOB_ID_RE.fullmatch(value)):
        raise ValueError(f"dirs {value!r} is not a blob id")
    return value


def _top_from_json(raw: dict[str, Any] | None) -> Entry | None:
    if raw is None:
        return None
    return Entry("", EntryType.DIR, int(raw["mode"], 8), int(raw["mtime"]))


def path_problem(path: str) -> str | None:
    """Why *path* cannot be a manifest path, or None. Backslashes, newlines and any
    Unicode are legal file names on POSIX; only escape routes are refused."""
    if not path:
        return "is empty"
    if "\x00" in path:
        return "contains a NUL byte"
    if path.startswith("/"):
        return "is absolute"
    parts = path.split("/")
    if ".." in parts:
        return "contains '..'"
    if any(part in {"", "."} for part in parts):
        return "is not normalised (empty or '.' component)"
    return None


def check_restorable(entries: list[Entry]) -> None:
    """Refuse a manifest that could write outside the restore target.

    Every path must be relative, normalised, free of ``..``, and every parent must be
    a directory entry of the same manifest (so no path runs through a symlink that
    the restore itself creates). Raises UnsafeInputError naming the path.
    """
    dirs: set[str] = set()
    seen: set[str] = set()
    for entry in entries:
        path = entry.path
        problem = path_problem(path)
        if problem is None and path in seen:
            problem = "appears twice"
        parent = posixpath.dirname(path)
        if problem is None and parent and parent not in dirs:
            problem = "its parent is not a directory of this snapshot"
        if problem is not None:
            raise UnsafeInputError(f"restore refused: manifest path {path!r} {problem}")
        seen.add(path)
        if entry.type is EntryType.DIR:
            dirs.add(path)
