"""Building and comparing trees for the mirror tests (plain functions, real disk)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

from ppo_dr.mirror.api import MirrorTarget
from ppo_dr.transport import LocalRemote

T0 = datetime(2026, 11, 30, 5, 0, 0, tzinfo=UTC)


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything restore must reproduce: type, mode, mtime (s), content / link target."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", str(full.readlink()))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), int(st.st_mtime))
            else:
                found[rel] = (
                    "file",
                    stat.S_IMODE(st.st_mode),
                    int(st.st_mtime),
                    full.read_bytes(),
                )
    return found


def local_target(base: Path, mirror_id: str) -> MirrorTarget:
    return MirrorTarget(mirror_id, LocalRemote(), str(base / mirror_id / "repos" / "app1"))
