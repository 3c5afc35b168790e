"""Directory signatures: an unchanged directory keeps its tree unread, and no change the
per-file quick check would see is missed (same-second rewrite, rename over, a mirror
that missed a run, hard links, a damaged table), and ``read_all`` still reads all."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ppo_dr.errors import RemotePathError
from ppo_dr.mirror.api import ClientSource, restore, snapshot_server
from ppo_dr.mirror.dir_sigs import (
    DirRow,
    DirTable,
    Walked,
    entry_row,
    listed_rows,
    listings,
    reusable,
    row_stat,
    signature,
    stat_row,
    table_for,
)
from ppo_dr.mirror.errors import RepositoryError
from ppo_dr.mirror.manifest import Entry, Manifest
from ppo_dr.mirror.repository import Repository
from ppo_dr.mirror.results import MirrorTarget
from ppo_dr.mirror.snapshot import ClientReader
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.base import EntryType, RemoteStat
from tests.ppo_dr.mirror.helpers import T0, local_target, odd_tree, tree_state

pytestmark = pytest.mark.timeout(60)

NS = 1_700_000_000 * 10**9 + 100
ID = "ab" * 32


def _file(path: str, size: int = 5, ns: int = NS, inode: int = 7) -> RemoteStat:
    return RemoteStat(path, EntryType.FILE, 0o644, ns // 10**9, size, None, ns, inode)


def _dir(path: str) -> RemoteStat:
    return RemoteStat(path, EntryType.DIR, 0o755, 1_700_000_000, 4096, None, None, 9)


@pytest.mark.parametrize(
    "changed",
    [
        _file("d/f", size=6),
        _file("d/f", ns=NS + 1),  # a rewrite within the same second
        _file("d/f", inode=8),  # replaced by another file (rename over)
        _file("d/g"),  # renamed
        RemoteStat("d/f", EntryType.FILE, 0o600, NS // 10**9, 5, None, NS, 7),
        RemoteStat("d/f", EntryType.SYMLINK, 0o777, NS // 10**9, 5, "x", None, None),
    ],
)
def test_any_field_the_quick_check_or_the_tree_records_changes_the_signature(
    changed: RemoteStat,
) -> None:
    before = signature([stat_row(_file("d/f")), stat_row(_dir("d/e"))])
    assert signature([stat_row(_dir("d/e")), stat_row(_file("d/f"))]) == before  # any order
    assert signature([stat_row(changed), stat_row(_dir("d/e"))]) != before


def test_a_walked_entry_and_its_recorded_entry_give_the_same_row() -> None:
    st = _file("d/f")
    entry = Entry("d/f", EntryType.FILE, 0o644, st.mtime, 5, chunks=(ID,), mtime_ns=NS, inode=7)
    assert stat_row(st) == entry_row(entry)
    # a directory's size and inode are not recorded, so they are not in its row
    assert stat_row(_dir("d/e")) == entry_row(Entry("d/e", EntryType.DIR, 0o755, 1_700_000_000))


def _table(walked: Walked, **sigs: str | None) -> DirTable:
    now = {d: signature(rows) for d, rows in walked.items()}
    rows = {d: DirRow(sigs.get(d.replace("/", "_") or "top", now[d]), ID, 0, 0) for d in walked}
    return DirTable(ID, rows)


def test_a_directory_is_reused_only_with_all_its_subdirectories() -> None:
    stats = [_dir("a"), _dir("b"), _dir("a/x"), _file("a/x/f"), _file("b/g")]
    walked = listings(stats)
    assert set(walked) == {"", "a", "b", "a/x"}
    sigs = {d: signature(rows) for d, rows in walked.items()}
    assert set(reusable(walked, sigs, _table(walked), {ID})) == {"", "a", "b", "a/x"}
    changed_leaf = _table(walked, a_x="0" * 32)
    assert set(reusable(walked, sigs, changed_leaf, {ID})) == {"b"}
    assert set(reusable(walked, sigs, _table(walked, b=None), {ID})) == {"a", "a/x"}
    assert set(reusable(walked, sigs, _table(walked), {ID}, never={"a"})) == {"b", "a/x"}
    assert reusable(walked, sigs, _table(walked), set()) == {}  # the mirror lacks the trees


def test_the_local_walk_s_rows_are_the_walk_s_entries(tmp_path: Path) -> None:
    """LocalRemote.walk_rows (no stat object per entry) says what walk says, as rows,
    and the rows give back the walk's entries (a directory's size and inode are no
    part of a tree, so they are the ones left out)."""
    odd_tree(tmp_path / "t")
    (tmp_path / "t" / "fifo").parent.mkdir(exist_ok=True)
    os.mkfifo(tmp_path / "t" / "fifo")
    remote = LocalRemote()
    stats = list(remote.walk(str(tmp_path / "t")))
    rows = remote.walk_rows(str(tmp_path / "t"))
    assert rows == listings(stats)
    assert list(rows) == list(listings(stats))  # the same directories in the same order
    kinds = {row[1] for listed in rows.values() for row in listed}
    assert kinds == {"file", "dir", "symlink", "other"}
    back = {
        st.path: st for st in (row_stat(d, row) for d, listed in rows.items() for row in listed)
    }
    assert set(back) == {st.path for st in stats}
    for st in stats:
        if st.type is EntryType.FILE:
            assert back[st.path] == st
        else:
            assert (back[st.path].type, back[st.path].mode, back[st.path].mtime) == (
                st.type,
                st.mode,
                st.mtime,
            )
            assert back[st.path].link_target == st.link_target


def test_the_table_reads_back_and_bad_input_is_refused() -> None:
    table = DirTable(ID, {"": DirRow("0" * 32, ID, 1, 5), "a": DirRow(None, "cd" * 32, 0, 0)})
    assert DirTable.from_bytes(table.to_bytes(), "t") == table
    for bad in (
        b"not json",
        b'{"version": 9, "root": "' + ID.encode() + b'", "dirs": {}}',
        table.to_bytes().replace(b'"a":[null', b'"a":["zz"'),
        table.to_bytes().replace(b",1,5]", b",-1,5]"),
        table.to_bytes().replace(b'"":', b'"b":'),  # no top directory
    ):
        with pytest.raises(RepositoryError, match="directory table unreadable"):
            DirTable.from_bytes(bad, "t")


def test_a_directory_with_a_hard_link_is_never_given_a_signature() -> None:
    plain = Entry("f", EntryType.FILE, 0o644, 1, 5, chunks=(ID,))
    linked = Entry("d/g", EntryType.FILE, 0o644, 1, 5, chunks=(ID,), link="f")
    rows = listed_rows([plain, Entry("d", EntryType.DIR, 0o755, 1), linked], ["", "d", "e"])
    dirs = table_for(rows, {"": ID, "d": "cd" * 32, "e": ID}).dirs
    assert dirs["d"].sig is None and dirs[""].sig is not None
    assert (dirs[""].files, dirs[""].bytes, dirs["d"].tree) == (1, 5, "cd" * 32)
    assert dirs["e"] == DirRow(signature([]), ID, 0, 0)  # an empty directory has a row


def _latest(target: MirrorTarget, client: str = "c1") -> Manifest:
    repo = Repository.open(target.remote, target.repo_path, target.mirror_id, None)
    return repo.read_manifest(client, repo.list_snapshot_ids(client)[-1])


def _restored(tmp_path: Path, target: MirrorTarget, name: str) -> dict[str, tuple[object, ...]]:
    out = tmp_path / name
    restore([target], "c1", "latest", LocalRemote(), str(out))
    return tree_state(out)


def _run(src: Path, targets: list[MirrorTarget], hours: int, read_all: bool = False) -> int:
    clients = [ClientSource("c1", str(src))]
    when = T0 + timedelta(hours=hours)
    result = snapshot_server(
        LocalRemote(), "app1", clients, targets, taken_at=when, read_all=read_all
    )[0]
    assert all(o.ok for o in result.per_mirror.values())
    return result.files_changed


def test_changes_in_kept_and_missed_directories_are_all_seen(tmp_path: Path) -> None:
    src = tmp_path / "src"
    odd_tree(src)
    for d in ("x/deep/er", "y"):
        (src / d).mkdir(parents=True)
        for name in ("rewritten", "replaced", "calm"):
            (src / d / name).write_bytes(name.encode().ljust(4096, b"."))
            os.utime(src / d / name, ns=(NS, NS))
    m1, m2 = local_target(tmp_path, "m1"), local_target(tmp_path, "m2")
    assert _run(src, [m1, m2], 0) > 0
    first = _latest(m1)
    assert first.dirs is not None and first.dirs in first.blob_ids()  # prune keeps it
    assert _run(src, [m1, m2], 1) == 0  # a no-op reads nothing and lists no directory
    noop = _latest(m1)
    dirs = ["", *(e.path for e in first.entries if e.type is EntryType.DIR)]
    # hard links sit in the top, names/ and d0/.../d29/: those and their parents are listed
    linked = [d for d in dirs if d in {"", "names"} or d.startswith("d0")]
    assert len(linked) == 32 and noop.stats["dirs_kept"] == len(dirs) - 32
    assert (noop.tree, noop.dirs, noop.files) == (first.tree, first.dirs, first.files)

    deep = src / "x/deep/er"
    (deep / "rewritten").write_bytes(b"R".ljust(4096, b"."))  # same size, same second
    os.utime(deep / "rewritten", ns=(NS + 1, NS + 1))
    (deep / "other").write_bytes(b"P".ljust(4096, b"."))  # same size and time, new inode
    os.utime(deep / "other", ns=(NS, NS))
    (deep / "other").replace(deep / "replaced")
    assert _run(src, [m1], 2) == 2  # m2 misses this run
    kept = _latest(m1).stats["dirs_kept"]
    assert kept == noop.stats["dirs_kept"] - 3  # x/deep/er and x/deep and x listed

    y_mtime = (src / "y").stat().st_mtime_ns
    (src / "y/calm").write_bytes(b"C".ljust(4096, b"."))
    os.utime(src / "y/calm", ns=(NS + 5, NS + 5))
    os.utime(src / "y", ns=(y_mtime, y_mtime))  # only the file's stat tells
    assert _run(src, [m1, m2], 3) == 3  # m2 still has the old x/deep/er: read for it
    want = tree_state(src)
    assert _restored(tmp_path, m1, "out1") == want
    assert _restored(tmp_path, m2, "out2") == want
    assert _run(src, [m1, m2], 4, read_all=True) == _latest(m1).files


def test_a_file_unreadable_in_one_run_is_read_in_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its directory's table row is taken from what was recorded (the file missing),
    not from the walk, so the next run lists that directory and reads the file,
    although the file's stat did not change in between."""
    src = tmp_path / "src"
    for d in ("a", "b"):
        (src / d).mkdir(parents=True)
        for i in range(3):
            (src / d / f"f{i}").write_bytes(f"{d}{i}".encode() * 500)
    m1 = local_target(tmp_path, "m1")
    _run(src, [m1], 0)
    (src / "a" / "f1").write_bytes(b"new content " * 100)
    real = ClientReader.read

    def refusing(self: ClientReader, path: str, *args: Any, **kwargs: Any) -> Any:
        if path.endswith("/a/f1"):
            raise RemotePathError(f"{path}: permission denied")
        return real(self, path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(ClientReader, "read", refusing)
        _run(src, [m1], 1)
    assert _latest(m1).stats["unreadable"] == ["a/f1"]
    assert _run(src, [m1], 2) == 1  # read now: its directory was not taken as unchanged
    assert _restored(tmp_path, m1, "out") == tree_state(src)


def test_a_damaged_table_or_one_from_before_falls_back_to_the_trees(tmp_path: Path) -> None:
    src = tmp_path / "src"
    odd_tree(src)
    m1 = local_target(tmp_path, "m1")
    _run(src, [m1], 0)
    repo = Repository.open(m1.remote, m1.repo_path, "m1", None)
    head = repo.read_manifest("c1", repo.list_snapshot_ids("c1")[-1])
    head.dirs = None  # as a writer before tables (or a copy) leaves it
    repo.write_manifest(head, table=None)
    assert _latest(m1).dirs is None
    (src / "names" / "spa ce").write_bytes(b"changed")
    assert _run(src, [m1], 1) == 1  # every tree read, as before tables
    table_id = _latest(m1).dirs
    assert table_id is not None
    where = repo.load_index().blobs[table_id]
    path = Path(repo.pack_path(where.pack_id))
    raw = bytearray(path.read_bytes())
    raw[where.offset] ^= 0xFF  # the table blob no longer matches its id
    path.write_bytes(bytes(raw))
    assert _run(src, [m1], 2) == 0  # quick-checked against its trees instead
    assert _restored(tmp_path, m1, "out") == tree_state(src)
