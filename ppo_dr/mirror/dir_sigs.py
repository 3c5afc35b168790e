"""Directory signatures: which directories of a client did not change since the last
snapshot, told from the walk's stats alone (git's index, per directory).

Why: on a many-file client a run that changed little was Python work per file: the
previous snapshot's trees parsed into entries, each file quick-checked, each
directory's entries compared to learn that its tree could be reused. A directory's
*signature* is a hash of what its tree records of its direct entries (names, types,
modes, mtimes, sizes, symlink targets, and the files' mtime_ns and inode), chunks
excepted. The snapshot stores one table per snapshot, *dir path -> (signature, tree
id, files, bytes)*; the next run hashes each directory's fresh listing the same way,
and a directory whose signature and every subdirectory's tree are as they were keeps
its tree id without its tree being read, parsed or compared.

It never trusts more than the per-file quick check: equal signatures mean every
entry records the very size, mtime (seconds and ns) and inode the walk sees now, the
quick check's keys, and the same names (a file added, removed or renamed over
changes the listing). A directory holding an entry marked as a hard link is never
reused (its ``link`` depends on other directories). Pure: no I/O here.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ppo_dr.mirror.errors import RepositoryError
from ppo_dr.mirror.manifest import BLOB_ID_RE, Entry
from ppo_dr.transport.base import EntryType, RemoteStat

TABLE_VERSION = 1
_SIG_RE = re.compile(r"^[0-9a-f]{32}$")

# What a tree records of one direct entry, chunks and link excepted.
Row = tuple[str, str, int, int, int, str | None, int | None, int | None]


def stat_row(st: RemoteStat) -> Row:
    """The row of a walked entry, as its tree entry will record it (a non-file has
    no size, mtime_ns or inode: see ``snapshot._entry``)."""
    if st.type is EntryType.FILE:
        return (st.name, "file", st.mode, st.mtime, st.size, st.link_target, st.mtime_ns, st.inode)
    return (st.name, st.type.value, st.mode, st.mtime, 0, st.link_target, None, None)


def entry_row(entry: Entry) -> Row:
    """The row of an entry of a snapshot (the same fields as :func:`stat_row`)."""
    name = entry.path.rpartition("/")[2]
    return (
        name,
        entry.type.value,
        entry.mode,
        entry.mtime,
        entry.size,
        entry.target,
        entry.mtime_ns,
        entry.inode,
    )


def signature(rows: Iterable[Row]) -> str:
    """The signature of a directory's rows (any order): 128 bits of BLAKE2b over
    their repr, which is unambiguous for str, int and None."""
    text = repr(sorted(rows))
    return hashlib.blake2b(text.encode("utf-8", "backslashreplace"), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class DirRow:
    """One directory of a snapshot: its listing's signature (None: never reuse), its
    tree's id, and its direct files' count and bytes (for the manifest's summary)."""

    sig: str | None
    tree: str
    files: int
    bytes: int


@dataclass(frozen=True)
class DirTable:
    """A snapshot's directories by path ("" = the client's top), and its root tree."""

    root: str
    dirs: dict[str, DirRow]

    def to_bytes(self) -> bytes:
        rows = {p: [r.sig, r.tree, r.files, r.bytes] for p, r in sorted(self.dirs.items())}
        doc = {"version": TABLE_VERSION, "root": self.root, "dirs": rows}
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, what: str) -> DirTable:
        """RepositoryError if *data* is not a table this reads."""
        try:
            doc = json.loads(data)
            if doc.get("version") != TABLE_VERSION:
                raise ValueError(f"version {doc.get('version')!r} unknown")
            root = _checked(doc["root"], BLOB_ID_RE, "root")
            dirs = {str(p): _row(raw) for p, raw in doc["dirs"].items()}
            if root != dirs[""].tree:
                raise ValueError("its top directory is not its root")
            return cls(root, dirs)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RepositoryError(f"{what}: directory table unreadable ({exc})") from None


def _checked(value: Any, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"bad {what} {value!r}")
    return value


def _row(raw: Any) -> DirRow:
    sig, tree, files, size = raw
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (files, size)):
        raise ValueError(f"bad counts {files!r}, {size!r}")
    return DirRow(
        None if sig is None else _checked(sig, _SIG_RE, "signature"),
        _checked(tree, BLOB_ID_RE, "tree id"),
        files,
        size,
    )


# A walk's entries by directory ("" = the top), as rows (:func:`stat_row`).
Walked = Mapping[str, list[Row]]


def listings(stats: Iterable[RemoteStat]) -> dict[str, list[Row]]:
    """A walk's entries by directory ("" = the top), as rows; every directory walked
    has a listing, an empty one if it is empty. (``LocalRemote.walk_rows`` gives the
    same without a stat object per entry.)"""
    out: dict[str, list[Row]] = {"": []}
    for st in stats:
        out.setdefault(st.path.rpartition("/")[0], []).append(stat_row(st))  # dirname
        if st.type is EntryType.DIR:
            out.setdefault(st.path, [])
    return out


_TYPES = {t.value: t for t in EntryType}


def row_stat(directory: str, row: Row) -> RemoteStat:
    """The walked entry a row of *directory* stands for (path relative to the top)."""
    name, kind, mode, mtime, size, target, mtime_ns, inode = row
    path = f"{directory}/{name}" if directory else name
    return RemoteStat(path, _TYPES[kind], mode, mtime, size, target, mtime_ns, inode)


def subdirs(directory: str, rows: Iterable[Row]) -> Iterator[str]:
    """The paths of the directories listed in *rows* (those of *directory*)."""
    prefix = f"{directory}/" if directory else ""
    return (prefix + row[0] for row in rows if row[1] == "dir")


def reusable(
    walked: Walked,
    sigs: Mapping[str, str],
    table: DirTable,
    stored: Collection[str],
    never: Collection[str] = (),
) -> dict[str, str]:
    """The directories whose trees can be reused, with their tree ids: its signature
    now (*sigs*) is the one in *table*, its tree is *stored* on the mirror, it is not
    in *never* (directories with hard links), and so are all its subdirectories."""
    out: dict[str, str] = {}
    for directory in sorted(walked, key=lambda d: -d.count("/") - (d != "")):
        row = table.dirs.get(directory)
        if (
            row is None
            or row.sig is None
            or row.sig != sigs.get(directory)
            or row.tree not in stored
            or directory in never
        ):
            continue
        if all(s in out for s in subdirs(directory, walked[directory])):
            out[directory] = row.tree
    return out


# A directory's row before its tree id is known: signature (None: never reuse), files
# and bytes directly in it. The same for every mirror; each adds its own tree ids.
Listing = tuple[str | None, int, int]


def unlisted_rows(
    walked: Walked, sigs: Mapping[str, str], dirs: Iterable[str]
) -> dict[str, Listing]:
    """The rows of directories reused unlisted (*dirs*), from the walk."""
    out: dict[str, Listing] = {}
    for directory in dirs:
        files = [row[4] for row in walked[directory] if row[1] == "file"]
        out[directory] = (sigs[directory], len(files), sum(files))
    return out


def listed_rows(entries: Iterable[Entry], dirs: Iterable[str]) -> dict[str, Listing]:
    """The rows of the directories listed this run (*dirs*), from *entries* as they
    are recorded (a file unreadable or changing while read shows here, so the next
    run lists its directory again)."""
    by_dir: dict[str, list[Entry]] = {d: [] for d in dirs}
    for entry in entries:
        by_dir[posixpath.dirname(entry.path)].append(entry)
    out: dict[str, Listing] = {}
    for directory, listed in by_dir.items():
        files = [e for e in listed if e.type is EntryType.FILE]
        linked = any(e.link is not None for e in files)
        sig = None if linked else signature(entry_row(e) for e in listed)
        out[directory] = (sig, len(files), sum(e.size for e in files))
    return out


def table_for(rows: Mapping[str, Listing], tree_ids: Mapping[str, str]) -> DirTable:
    """A mirror's table: every directory's row (:func:`unlisted_rows`,
    :func:`listed_rows`) with its tree id there."""
    dirs = {d: DirRow(sig, tree_ids[d], n, size) for d, (sig, n, size) in rows.items()}
    return DirTable(tree_ids[""], dirs)
