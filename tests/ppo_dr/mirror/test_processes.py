"""The process paths: uploads and restores by separate processes, each with its own
connection (``MirrorTarget.connect``), give the same results as the thread paths,
fall back the same way, and leave no process behind."""

from __future__ import annotations

import functools
import multiprocessing
import os
from pathlib import Path

from ppo_dr.errors import TransientError
from ppo_dr.mirror.api import ClientSource, MirrorTarget, restore, snapshot_server, verify
from ppo_dr.transport import LocalRemote, Remote
from tests.ppo_dr.mirror.helpers import T0, tree_state


def _target(base: Path, mirror_id: str, connect: object = LocalRemote) -> MirrorTarget:
    repo = str(base / mirror_id / "repos" / "app1")
    return MirrorTarget(mirror_id, LocalRemote(), repo, connect)  # type: ignore[arg-type]


def _unreachable() -> Remote:
    raise TransientError("mirror unreachable from the worker")


def _tree(root: Path) -> Path:
    src = root / "src" / "c1"
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(12):
            (src / f"d{d}" / f"f{f}.txt").write_bytes(f"file {d}/{f} ".encode() * (f * 300 + 1))
    (src / "d0" / "big.bin").write_bytes(os.urandom(3_000_000))
    (src / "empty").mkdir()
    (src / "link").symlink_to("d0/f1.txt")
    (src / "notes.txt").write_bytes(b"the one file " * 100)
    return src


def _flip_byte_in_pack_holding(repo: Path, needle: bytes) -> None:
    for pack in (p for p in (repo / "packs").rglob("*") if p.is_file()):
        data = bytearray(pack.read_bytes())
        at = data.find(needle)
        if at >= 0:
            data[at] ^= 0xFF
            pack.chmod(0o600)
            pack.write_bytes(bytes(data))
            return
    raise AssertionError("needle not found in any pack")


def test_upload_and_restore_processes_round_trip(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    targets = [_target(tmp_path, "m1"), _target(tmp_path, "m2")]
    key = b"p" * 32
    results = snapshot_server(
        LocalRemote(), "app1", [ClientSource("c1", str(src))], targets, key=key, taken_at=T0
    )
    assert all(o.ok and o.bytes_sent > 3_000_000 for o in results[0].per_mirror.values())
    assert all(verify(t, key=key, read_data=True).ok for t in targets)
    dest = tmp_path / "restored"
    result = restore(targets, "c1", "latest", LocalRemote(), str(dest), key=key, processes=2)
    assert result.refused == [] and result.files == 50
    assert result.served_by["m1"] > 0 and result.served_by["m2"] == 0
    assert tree_state(dest) == tree_state(src)
    assert multiprocessing.active_children() == []


def test_restore_processes_fall_back_to_the_other_mirror(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    targets = [_target(tmp_path, "m1"), _target(tmp_path, "m2")]
    snapshot_server(LocalRemote(), "app1", [ClientSource("c1", str(src))], targets, taken_at=T0)
    _flip_byte_in_pack_holding(Path(targets[0].repo_path), b"the one file")

    alone = restore(targets[:1], "c1", "latest", LocalRemote(), str(tmp_path / "r1"), processes=2)
    assert alone.refused == ["notes.txt"]
    assert not (tmp_path / "r1" / "notes.txt").exists()
    both = restore(targets, "c1", "latest", LocalRemote(), str(tmp_path / "r2"), processes=2)
    assert both.refused == [] and both.served_by["m2"] >= 1
    assert tree_state(tmp_path / "r2") == tree_state(src)
    assert multiprocessing.active_children() == []


def test_a_worker_that_cannot_connect_leaves_its_files_to_the_threads(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    target = _target(tmp_path, "m1")
    snapshot_server(LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], taken_at=T0)
    broken = _target(tmp_path, "m1", functools.partial(_unreachable))
    dest = tmp_path / "restored"
    result = restore([broken], "c1", "latest", LocalRemote(), str(dest), processes=2)
    assert result.refused == [] and result.files == 50
    assert tree_state(dest) == tree_state(src)
    assert multiprocessing.active_children() == []
