"""The snapshot's quick check: what it trusts (size, mtime, and where the app server
reports them mtime in nanoseconds and the inode), and the full read that trusts none."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from ppo_dr.mirror.api import ClientSource, restore, snapshot_server
from ppo_dr.mirror.manifest import Entry, same_file_stat
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.base import EntryType, RemoteStat
from tests.ppo_dr.mirror.helpers import T0, local_target, tree_state

pytestmark = pytest.mark.timeout(60)

SECOND = 1_700_000_000


def _stat(
    size: int = 5, mtime_ns: int | None = SECOND * 10**9, inode: int | None = 7
) -> RemoteStat:
    mtime = SECOND if mtime_ns is None else mtime_ns // 10**9
    return RemoteStat("f", EntryType.FILE, 0o644, mtime, size, None, mtime_ns, inode)


@pytest.mark.parametrize(
    ("now", "same"),
    [
        (_stat(), True),
        (_stat(size=6), False),
        (_stat(mtime_ns=(SECOND + 1) * 10**9), False),  # another second
        (_stat(mtime_ns=SECOND * 10**9 + 1), False),  # the same second, other ns
        (_stat(inode=8), False),  # replaced by another file
        (_stat(mtime_ns=None), True),  # a server that reports seconds only (SFTP)
        (_stat(inode=None), True),  # a server that reports no inode (SFTP)
        (_stat(mtime_ns=None, inode=None, size=6), False),
    ],
)
def test_same_file_stat_compares_what_both_sides_know(now: RemoteStat, same: bool) -> None:
    before = _stat()
    assert same_file_stat(before, now) is same
    assert same_file_stat(now, before) is same


def test_an_entry_written_before_nanoseconds_still_passes_the_quick_check() -> None:
    old = Entry.from_json(
        {"type": "file", "mode": "0644", "mtime": SECOND, "size": 5, "chunks": []}, "f"
    )
    assert (old.mtime_ns, old.inode) == (None, None)
    assert same_file_stat(old, _stat()) and not same_file_stat(old, _stat(size=4))
    new = Entry("f", EntryType.FILE, 0o644, SECOND, 5, mtime_ns=SECOND * 10**9 + 3, inode=9)
    assert Entry.from_json(new.to_json()) == new
    with pytest.raises(TypeError):
        Entry.from_json({**new.to_json(), "inode": "9"})


def test_a_rewrite_within_the_second_and_a_replaced_file_are_read_again(tmp_path: Path) -> None:
    src = tmp_path / "src" / "c1"
    src.mkdir(parents=True)
    ns = SECOND * 10**9 + 100
    for name in ("rewritten", "replaced", "calm"):
        (src / name).write_bytes(name.encode().ljust(4096, b"."))
        os.utime(src / name, ns=(ns, ns))
    targets = [local_target(tmp_path, "m1"), local_target(tmp_path, "m2")]
    clients = [ClientSource("c1", str(src))]
    first = snapshot_server(LocalRemote(), "app1", clients, targets, taken_at=T0)[0]
    assert first.files_changed == 3

    (src / "rewritten").write_bytes(b"R".ljust(4096, b"."))  # same size, same second
    os.utime(src / "rewritten", ns=(ns + 1, ns + 1))
    other = src / "other"
    other.write_bytes(b"P".ljust(4096, b"."))  # same size, same mtime_ns, new inode
    os.utime(other, ns=(ns, ns))
    other.replace(src / "replaced")
    second = snapshot_server(
        LocalRemote(), "app1", clients, targets, taken_at=T0 + timedelta(hours=1)
    )[0]
    assert (second.files_scanned, second.files_changed) == (3, 2)
    assert all(o.ok and o.new_chunks == 2 for o in second.per_mirror.values())

    out = tmp_path / "out"
    restore([targets[0]], "c1", "latest", LocalRemote(), str(out))
    assert tree_state(out) == tree_state(src)


def test_read_all_reads_every_file_and_stores_nothing_new(tmp_path: Path) -> None:
    src = tmp_path / "src" / "c1"
    (src / "d").mkdir(parents=True)
    for i in range(5):
        (src / "d" / f"f{i}").write_bytes(os.urandom(70_000 + i))
    targets = [local_target(tmp_path, "m1"), local_target(tmp_path, "m2")]
    clients = [ClientSource("c1", str(src))]
    snapshot_server(LocalRemote(), "app1", clients, targets, taken_at=T0)
    again = snapshot_server(
        LocalRemote(), "app1", clients, targets, taken_at=T0 + timedelta(minutes=5)
    )[0]
    assert again.files_changed == 0 and again.bytes_read == 0
    full = snapshot_server(
        LocalRemote(),
        "app1",
        clients,
        targets,
        taken_at=T0 + timedelta(minutes=10),
        read_all=True,
    )[0]
    assert full.files_changed == 5 and full.bytes_read == sum(70_000 + i for i in range(5))
    for outcome in full.per_mirror.values():
        assert outcome.ok and outcome.new_chunks == 0 and outcome.bytes_sent < 2_000
