"""The version 1 repositories in data/v1/: their source trees, and how they were made.

They were written by ppo-dr at commit f50497c (the last version 1 writer), so the
old-format tests read bytes an older release really wrote, not what today's code
imagines it wrote. To make them again (needs the old code, not this tree's):

    git archive f50497c ppo_dr | tar -x -C /tmp/old
    cd /tmp && PYTHONPATH=/tmp/old:$REPO python -m tests.ppo_dr.mirror.v1_fixture \
        $REPO/tests/ppo_dr/mirror/data/v1      # from /tmp, so /tmp/old's ppo_dr comes first
"""

from __future__ import annotations

import os
import shutil
import sys
from datetime import timedelta
from pathlib import Path

KEY = bytes(range(32))  # the sealed repository's key (test data, not a secret)
T1 = 1_700_000_000
FIRST, SECOND = "2026-11-30T05-00-00Z", "2026-11-30T06-00-00Z"


def first_tree(root: Path) -> None:
    """Snapshot 1's client tree: chunks, a hard link, a symlink, odd names, modes."""
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "docs" / "a.txt").write_bytes(b"hello " * 50_000)  # > 256 KiB: several chunks
    (root / "docs" / "deep" / "b.bin").write_bytes(bytes(range(256)) * 40)
    (root / "docs" / "odd name\n").write_bytes(b"odd")
    os.link(root / "docs" / "a.txt", root / "a-again.txt")
    (root / "docs" / "link").symlink_to("a.txt")
    (root / "docs" / "deep" / "b.bin").chmod(0o600)
    (root / "empty").chmod(0o2750)
    _settle(root)


def second_tree(root: Path) -> None:
    """Snapshot 2's: snapshot 1's with one file rewritten and one added."""
    first_tree(root)
    (root / "docs" / "deep" / "b.bin").write_bytes(b"rewritten " * 1000)
    (root / "docs" / "new.txt").write_bytes(b"new")
    _settle(root)


def _settle(root: Path) -> None:
    """Fixed mtimes, deepest first, symlinks' own included."""
    paths = sorted(root.rglob("*"), key=lambda p: -len(p.parts))
    for n, path in enumerate(paths):
        os.utime(path, (T1 + n, T1 + n), follow_symlinks=False)


def make(out: Path) -> None:
    """Write data/v1/{plain,sealed}: two snapshots of client c1 each (old code only)."""
    from ppo_dr.mirror.api import ClientSource, MirrorTarget, snapshot_server
    from ppo_dr.transport import LocalRemote
    from tests.ppo_dr.mirror.helpers import T0

    work = out / ".src"
    for name, key in (("plain", None), ("sealed", KEY)):
        target = MirrorTarget("m1", LocalRemote(), str(out / name))
        for build, when in ((first_tree, T0), (second_tree, T0 + timedelta(hours=1))):
            shutil.rmtree(work, ignore_errors=True)
            build(work / "c1")
            snapshot_server(
                LocalRemote(), "app1", [ClientSource("c1", str(work / "c1"))], [target],
                key=key, taken_at=when,
            )  # fmt: skip
    shutil.rmtree(work)


if __name__ == "__main__":
    make(Path(sys.argv[1]))
