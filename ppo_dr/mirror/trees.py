"""Tree objects: one content-addressed blob per directory of a snapshot (restic's trees).

Why: a manifest that lists every path is rewritten whole on every run, so an unchanged
40,000-file client cost ~1.8 MB per mirror per run. Cut per directory instead, a
directory whose entries did not change serialises to the same bytes, hence the same
blob id, which the mirror already stores: an unchanged directory costs nothing, and a
change costs its directory and the directories above it. The manifest then names only
the root tree.

A tree is compact JSON ``{"entries": [...]}``, one entry per name in the directory,
sorted by name so the bytes do not depend on the order a server lists them in. An entry
is a manifest entry (``Entry.to_json``) with ``name`` instead of ``path``, and a
directory's entry adds ``tree``: its own tree's id. Pure: no I/O here; the repository
stores and fetches the blobs.
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ppo_dr.mirror.errors import RepositoryError
from ppo_dr.mirror.manifest import BLOB_ID_RE, Entry
from ppo_dr.transport.base import EntryType

MAX_DEPTH = 4096  # deeper than any file system allows a path to go


@dataclass(frozen=True)
class TreeSet:
    """The trees of one snapshot: the root's id, the bytes of every tree built (id ->
    bytes) and every tree id it uses, those reused from the previous snapshot too."""

    root: str
    objects: dict[str, bytes]
    ids: tuple[str, ...] = field(default=())
    by_path: dict[str, str] = field(default_factory=dict)  # directory -> its tree's id

    @property
    def all_ids(self) -> tuple[str, ...]:
        return self.ids or tuple(self.objects)


# A previous snapshot's directories: path ("" = the top) -> (its tree's id, its
# entries in stored order). What lets an unchanged directory keep its id unbuilt.
DirTrees = Mapping[str, tuple[str, Sequence[Entry]]]


class Expanded(NamedTuple):
    """A snapshot's trees read back: its entries in canonical order, every tree id it
    uses, and each directory's tree (for :func:`build_trees`' reuse)."""

    entries: list[Entry]
    tree_ids: tuple[str, ...]
    dirs: dict[str, tuple[str, list[Entry]]]


def canonical_order(entries: Iterable[Entry]) -> list[Entry]:
    """*entries* in the order trees give them back: depth first, names sorted, every
    directory before its contents (so "the first name of an inode" is stable)."""
    return sorted(entries, key=lambda e: e.path.split("/"))


def _tree_bytes(children: list[dict[str, Any]]) -> bytes:
    children.sort(key=lambda c: str(c["name"]))
    return json.dumps({"entries": children}, ensure_ascii=True, separators=(",", ":")).encode()


def _name_of(entry: Entry) -> str:
    return entry.path.rpartition("/")[2]


def build_trees(
    entries: Iterable[Entry],
    blob_id: Callable[[bytes], str],
    previous: DirTrees | None = None,
    stored: Container[str] = (),
    kept: Mapping[str, str] | None = None,
) -> TreeSet:
    """Cut *entries* (a client's tree, paths relative to its top) into tree objects.

    *previous*: the last snapshot's directories; a directory whose entries (and whose
    subdirectories' ids) are all as they were there keeps its old id without being
    serialised or hashed again, if that id is in *stored* (the mirror has it). Such an
    id is in :attr:`TreeSet.ids`, not in :attr:`TreeSet.objects`. *kept*: directories
    known unchanged (``dir_sigs.reusable``) and their ids; their contents are not in
    *entries*.
    """
    by_parent: dict[str, list[Entry]] = defaultdict(list)
    dirs: set[str] = {""}
    for entry in entries:
        by_parent[posixpath.dirname(entry.path)].append(entry)
        if entry.type is EntryType.DIR:
            dirs.add(entry.path)
    objects: dict[str, bytes] = {}
    ids: dict[str, str] = dict(kept or {})
    # deepest first, then by path: the same entries always give the same TreeSet
    for directory in sorted(dirs, key=lambda d: (-d.count("/") - (d != ""), d)):
        if directory in ids:
            continue
        listed = by_parent.get(directory, [])
        old = previous.get(directory) if previous is not None else None
        if old is not None and old[0] in stored and _unchanged(listed, old[1], ids, previous):
            ids[directory] = old[0]
            continue
        children: list[dict[str, Any]] = []
        for entry in listed:
            raw = entry.to_json()
            del raw["path"]
            raw = {"name": posixpath.basename(entry.path), **raw}
            if entry.type is EntryType.DIR:
                raw["tree"] = ids[entry.path]
            children.append(raw)
        data = _tree_bytes(children)
        ids[directory] = tree_id = blob_id(data)
        objects[tree_id] = data
    return TreeSet(ids[""], objects, tuple(dict.fromkeys(ids.values())), ids)


def _unchanged(
    listed: list[Entry], old: Sequence[Entry], ids: dict[str, str], previous: DirTrees | None
) -> bool:
    """Whether a directory's entries now (*listed*) are those of its old tree (*old*,
    sorted by name), each subdirectory's tree id included."""
    if len(listed) != len(old) or previous is None:
        return False
    if sorted(listed, key=_name_of) != list(old):
        return False
    for entry in listed:
        if entry.type is EntryType.DIR:
            was = previous.get(entry.path)
            if was is None or ids[entry.path] != was[0]:
                return False
    return True


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "is empty or not text"
    if "/" in name or "\x00" in name or name in {".", ".."}:
        return "is not a single name"
    return None


def expand_trees(root: str, fetch: Callable[[list[str]], dict[str, bytes]], what: str) -> Expanded:
    """The entries below tree *root* in canonical order, every tree id visited, and
    each directory's tree id and entries.

    *fetch* returns the verified plaintext of the tree blobs asked for; it is called
    once per level of the tree, so a repository can batch the reads by pack.
    RepositoryError if a tree is not one or names an unsafe entry.
    """
    parsed: dict[str, list[dict[str, Any]]] = {}
    level = [root]
    for _depth in range(MAX_DEPTH):
        wanted = sorted({t for t in level if t not in parsed})
        if not wanted:
            break
        got = fetch(wanted)
        level = []
        for tree_id in wanted:
            parsed[tree_id] = listed = _children(got.get(tree_id), what, tree_id)
            level += [_subtree(c, what, tree_id) for c in listed if c.get("type") == "dir"]
    else:
        raise RepositoryError(f"{what}: trees nested deeper than {MAX_DEPTH}")
    # Depth first, each tree's entries in their stored (sorted) order: the canonical
    # order, with every directory right before its contents.
    entries: list[Entry] = []
    visited: list[str] = [root]
    dirs: dict[str, tuple[str, list[Entry]]] = {"": (root, [])}
    stack: list[tuple[Iterator[dict[str, Any]], str, str]] = [(iter(parsed[root]), "", root)]
    while stack:
        children, prefix, tree_id = stack[-1]
        raw = next(children, None)
        if raw is None:
            stack.pop()
            continue
        entry = _entry(raw, prefix, what, tree_id)
        entries.append(entry)
        dirs[prefix][1].append(entry)
        if entry.type is EntryType.DIR:
            subtree = str(raw["tree"])
            visited.append(subtree)
            dirs[entry.path] = (subtree, [])
            stack.append((iter(parsed[subtree]), entry.path, subtree))
    return Expanded(entries, tuple(dict.fromkeys(visited)), dirs)


def _children(data: bytes | None, what: str, tree_id: str) -> list[dict[str, Any]]:
    try:
        if data is None:
            raise KeyError(tree_id)  # not fetched
        children = json.loads(data)["entries"]
        if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
            raise TypeError("entries is not a list of objects")
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(f"{what}: tree {tree_id} unreadable ({exc})") from None
    return children


def dir_entries(data: bytes, directory: str, what: str, tree_id: str) -> list[Entry]:
    """The direct entries of one tree (*data*, the tree of *directory*), in stored
    order, without reading its subtrees; RepositoryError as :func:`expand_trees`."""
    entries = []
    for raw in _children(data, what, tree_id):
        entry = _entry(raw, directory, what, tree_id)
        if entry.type is EntryType.DIR:
            _subtree(raw, what, tree_id)
        entries.append(entry)
    return entries


def _subtree(raw: dict[str, Any], what: str, tree_id: str) -> str:
    subtree = raw.get("tree")
    if not isinstance(subtree, str) or not BLOB_ID_RE.fullmatch(subtree):
        raise RepositoryError(f"{what}: tree {tree_id}: bad subtree id {subtree!r}")
    return subtree


def _entry(raw: dict[str, Any], prefix: str, what: str, tree_id: str) -> Entry:
    name = raw.get("name")
    problem = _name_problem(name)
    if problem is not None:
        raise RepositoryError(f"{what}: tree {tree_id}: entry name {name!r} {problem}")
    try:
        return Entry.from_json(raw, f"{prefix}/{name}" if prefix else str(name))
    except (ValueError, KeyError, TypeError) as exc:
        raise RepositoryError(
            f"{what}: tree {tree_id}: entry {name!r} unreadable ({exc})"
        ) from None
