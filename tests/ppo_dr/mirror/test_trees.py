"""Tree objects (pure): cutting a client's entries into one blob per directory and
reading them back gives the same entries, the same directory gives the same id, and a
tree a hostile mirror wrote is refused, not followed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppo_dr.mirror.errors import RepositoryError
from ppo_dr.mirror.manifest import Entry
from ppo_dr.mirror.trees import TreeSet, build_trees, canonical_order, expand_trees
from ppo_dr.transport.base import EntryType

DIR, FILE, LINK = EntryType.DIR, EntryType.FILE, EntryType.SYMLINK
NAMES = st.text(st.characters(blacklist_characters="/\x00"), min_size=1).filter(
    lambda n: n not in {".", ".."}
) | st.just(os.fsdecode(b"latin1-\xe9\xff"))  # not UTF-8 on disk: lone surrogates


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(trees: TreeSet) -> tuple[list[list[str]], Callable[[list[str]], dict[str, bytes]]]:
    calls: list[list[str]] = []

    def fetch(ids: list[str]) -> dict[str, bytes]:
        calls.append(ids)
        return {i: trees.objects[i] for i in ids}

    return calls, fetch


@st.composite
def client_trees(draw: st.DrawFn) -> list[Entry]:
    """Random trees: nested directories, files with chunk lists, symlinks, links."""
    entries: list[Entry] = []
    dirs = [""]
    for _ in range(draw(st.integers(0, 40))):
        parent = draw(st.sampled_from(dirs))
        name = draw(NAMES)
        path = f"{parent}/{name}" if parent else name
        if any(e.path == path for e in entries):
            continue
        kind = draw(st.sampled_from([DIR, FILE, LINK]))
        mtime = draw(st.integers(-(2**40), 2**40))
        if kind is DIR:
            entries.append(Entry(path, DIR, draw(st.integers(0, 0o7777)), mtime))
            dirs.append(path)
        elif kind is LINK:
            entries.append(Entry(path, LINK, 0o777, mtime, target=draw(st.text(min_size=1))))
        else:
            chunks = tuple(_sha(bytes([i])) for i in draw(st.lists(st.integers(0, 9))))
            files = [e.path for e in entries if e.type is FILE and e.link is None]
            link = draw(st.sampled_from([None, *files]))
            entries.append(Entry(path, FILE, 0o644, mtime, len(chunks), None, chunks, link))
    return entries


@settings(max_examples=200, deadline=None)
@given(client_trees(), st.randoms())
def test_trees_give_back_the_entries_whatever_order_they_came_in(
    entries: list[Entry], rnd: random.Random
) -> None:
    trees = build_trees(entries, _sha)
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert build_trees(shuffled, _sha) == trees  # bytes do not depend on listing order
    _, fetch = _fetch(trees)
    back, visited, _ = expand_trees(trees.root, fetch, "test")
    assert back == canonical_order(entries)
    assert set(visited) == set(trees.objects)


def test_an_unchanged_directory_keeps_its_tree_and_a_change_costs_the_path_up() -> None:
    entries = [Entry(d, DIR, 0o755, 1) for d in ("a", "a/x", "b")]
    entries += [Entry(f"{d}/f", FILE, 0o644, 1, 1, None, (_sha(d.encode()),)) for d in ("a/x", "b")]
    before = build_trees(entries, _sha)
    entries[-2] = Entry("a/x/f", FILE, 0o644, 2, 1, None, (_sha(b"new"),))
    after = build_trees(entries, _sha)
    new = set(after.objects) - set(before.objects)
    assert len(new) == 3  # a/x, a and the root; b's tree is shared
    assert len(set(after.objects) & set(before.objects)) == 1


def _changed(entries: list[Entry], rnd: random.Random) -> list[Entry]:
    """*entries* after a random hour of use: some touched, some gone, some new."""
    out: list[Entry] = []
    for e in entries:
        roll = rnd.random()
        if roll < 0.1 and e.type is not DIR:
            continue  # deleted (a directory stays: its contents would be orphaned)
        if roll < 0.3:
            e = dataclasses.replace(e, mtime=e.mtime + 1)  # touched, or written
        out.append(e)
    dirs = [""] + [e.path for e in out if e.type is DIR]
    for i in range(rnd.randint(0, 3)):
        parent = rnd.choice(dirs)
        out.append(Entry(f"{parent}/new{i}" if parent else f"new{i}", FILE, 0o644, 5))
    return [e for e in out if e.link is None or any(o.path == e.link for o in out)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(client_trees(), st.randoms())
def test_reusing_the_previous_trees_gives_the_ids_a_full_build_gives(
    entries: list[Entry], rnd: random.Random
) -> None:
    before = build_trees(entries, _sha)
    _, fetch = _fetch(before)
    previous = expand_trees(before.root, fetch, "test").dirs
    after = _changed(entries, rnd)
    full = build_trees(after, _sha)
    reused = build_trees(after, _sha, previous, set(before.objects))
    assert (reused.root, set(reused.all_ids)) == (full.root, set(full.all_ids))
    # every tree that is new is built, and no tree the snapshot does not use
    assert set(full.objects) - set(before.objects) <= set(reused.objects) <= set(full.objects)
    unchanged = build_trees(entries, _sha, previous, set(before.objects))
    assert (unchanged.root, unchanged.objects) == (before.root, {})  # nothing built


def test_an_unchanged_tree_is_not_built_again_unless_the_mirror_lacks_it() -> None:
    entries = [Entry("a", DIR, 0o755, 1), Entry("a/f", FILE, 0o644, 1, 1, None, (_sha(b"f"),))]
    before = build_trees(entries, _sha)
    previous = expand_trees(before.root, _fetch(before)[1], "test").dirs
    same = build_trees(list(reversed(entries)), _sha, previous, set(before.objects))
    assert (same.root, same.objects, set(same.ids)) == (before.root, {}, set(before.objects))
    lacking = build_trees(entries, _sha, previous, {before.root})  # a's tree is not stored
    assert lacking.root == before.root
    assert set(lacking.objects) == set(before.objects) - {before.root}  # a's tree, built
    moved = [Entry("b", DIR, 0o755, 1), Entry("b/f", FILE, 0o644, 1, 1, None, (_sha(b"f"),))]
    renamed = build_trees(moved, _sha, previous, set(before.objects))
    assert renamed == build_trees(moved, _sha) and renamed.root != before.root


def test_one_fetch_per_level_and_a_shared_tree_is_read_once() -> None:
    entries = [Entry("a", DIR, 0o755, 1), Entry("b", DIR, 0o755, 1), Entry("a/c", DIR, 0o755, 1)]
    trees = build_trees(entries, _sha)
    calls, fetch = _fetch(trees)
    back, _, _ = expand_trees(trees.root, fetch, "test")
    assert [len(c) for c in calls] == [1, 2]  # root; a and b (a/c is empty, like b)
    assert [e.path for e in back] == ["a", "a/c", "b"]


def _hostile(children: list[dict[str, object]]) -> tuple[str, dict[str, bytes]]:
    data = json.dumps({"entries": children}).encode()
    return _sha(data), {_sha(data): data}


FILE_ROW = {"type": "file", "mode": "0644", "mtime": 1, "size": 0, "chunks": []}
HOSTILE_TREES = [
    ("dot-dot", [{"name": "..", **FILE_ROW}]),
    ("dot", [{"name": ".", **FILE_ROW}]),
    ("slash", [{"name": "a/../../etc", **FILE_ROW}]),
    ("empty name", [{"name": "", **FILE_ROW}]),
    ("NUL", [{"name": "a\x00b", **FILE_ROW}]),
    ("no name", [FILE_ROW]),
    ("bad subtree", [{"name": "d", "type": "dir", "mode": "0755", "mtime": 1, "tree": "../x"}]),
    ("missing subtree", [{"name": "d", "type": "dir", "mode": "0755", "mtime": 1}]),
    ("bad type", [{"name": "x", **FILE_ROW, "type": "socket?"}]),
    ("not an object", ["x"]),
]


@pytest.mark.parametrize(
    "children", [h[1] for h in HOSTILE_TREES], ids=[h[0] for h in HOSTILE_TREES]
)
def test_a_hostile_tree_is_refused(children: list[dict[str, object]]) -> None:
    root, objects = _hostile(children)
    with pytest.raises(RepositoryError, match="test: tree"):
        expand_trees(root, lambda ids: {i: objects[i] for i in ids if i in objects}, "test")


def test_a_tree_that_is_not_json_or_not_fetched_is_refused() -> None:
    with pytest.raises(RepositoryError, match="unreadable"):
        expand_trees(_sha(b"x"), lambda ids: {_sha(b"x"): b"not json"}, "test")
    with pytest.raises(RepositoryError, match="unreadable"):
        expand_trees(_sha(b"x"), lambda ids: {}, "test")
