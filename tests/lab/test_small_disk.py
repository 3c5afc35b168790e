"""The lab's ``disk-full`` fault: a mirror's data root on a tmpfs with one page free. A
lock file fits, no snapshot does; the heal puts back what the disk held, without the
filler. Mounting needs root (as the fault does)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ppo_dr.lab.mirror_faults import (
    DISK_FULL_HEADROOM,
    FILLER_NAME,
    _mount_small_disk,
    _unmount_small_disk,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def _tree(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_a_full_disk_has_room_for_a_lock_and_not_for_a_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "repos" / "acme" / "data").mkdir(parents=True)
    for i in range(40):  # a tree of many small files: the size estimate is loosest there
        (root / "repos" / "acme" / "data" / f"pack-{i:02d}").write_bytes(os.urandom(1000 + i))
    before = _tree(root)
    entry = _mount_small_disk(root)
    try:
        assert os.path.ismount(root)
        stat = os.statvfs(root)
        assert stat.f_bavail * stat.f_frsize <= DISK_FULL_HEADROOM
        (root / "repos" / "acme" / "lock").write_text('{"pid": 1}')  # the lock fits
        with pytest.raises(OSError) as full:  # a pack, an index and a snapshot do not
            for name in ("pack-new", "index-new", "snapshot-new"):
                (root / "repos" / "acme" / name).write_bytes(b"x" * 100)
        assert full.value.errno == errno.ENOSPC
    finally:
        _unmount_small_disk(root, Path(entry["aside"]))
    assert not os.path.ismount(root)
    after = _tree(root)
    assert FILLER_NAME not in after
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) <= {"repos/acme/lock", "repos/acme/pack-new"}
