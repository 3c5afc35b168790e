"""Repository format 2 (tree objects): a version 1 repository an older ppo-dr wrote is
still restored, verified, pruned and then upgraded; a run that changed nothing sends
almost nothing; prune keeps the trees live snapshots use."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import zstandard

from ppo_dr.mirror.api import ClientSource, prune, restore, snapshot_server, verify
from ppo_dr.mirror.copy import copy_snapshot
from ppo_dr.mirror.manifest import Manifest
from ppo_dr.mirror.repository import Repository
from ppo_dr.mirror.results import MirrorTarget
from ppo_dr.transport import LocalRemote
from tests.ppo_dr.mirror.helpers import T0, local_target, tree_state, v1_manifest_bytes
from tests.ppo_dr.mirror.v1_fixture import FIRST, KEY, SECOND, first_tree, second_tree

DATA = Path(__file__).parent / "data" / "v1"
NO_OP_BUDGET = 50_000  # bytes per unchanged client per mirror (issue 11)


def _v1_copy(tmp_path: Path, name: str) -> MirrorTarget:
    repo = tmp_path / "mirror" / name
    shutil.copytree(DATA / name, repo)
    for sub in ("packs", "index", "snapshots", "locks"):  # git keeps no empty folder
        (repo / sub).mkdir(exist_ok=True)
    return MirrorTarget("m1", LocalRemote(), str(repo))


def _restored(target: MirrorTarget, sid: str, dest: Path, key: bytes | None) -> dict[str, object]:
    result = restore([target], "c1", sid, LocalRemote(), str(dest), key=key)
    assert result.refused == []
    return tree_state(dest)


def _expected(tmp_path: Path, build: Callable[[Path], None]) -> dict[str, object]:
    root = tmp_path / f"expected-{build.__name__}"
    build(root)
    return tree_state(root)


def _manifest_version(target: MirrorTarget, sid: str) -> int:
    path = Path(target.repo_path) / "snapshots" / "c1" / f"{sid}.json.zst"
    return int(json.loads(zstandard.ZstdDecompressor().decompress(path.read_bytes()))["version"])


@pytest.mark.parametrize(("name", "key"), [("plain", None), ("sealed", KEY)])
def test_a_version_1_repository_restores_verifies_prunes_and_upgrades(
    tmp_path: Path, name: str, key: bytes | None
) -> None:
    target = _v1_copy(tmp_path, name)
    config = Path(target.repo_path) / "config.json"
    assert json.loads(config.read_text())["version"] == 1
    first, second = _expected(tmp_path, first_tree), _expected(tmp_path, second_tree)
    assert _restored(target, FIRST, tmp_path / "r1", key) == first
    assert _restored(target, SECOND, tmp_path / "r2", key) == second
    assert verify(target, key=key, read_data=True).ok
    elsewhere = local_target(tmp_path, "new-home")
    copied = copy_snapshot(target, elsewhere, "c1", FIRST, dest_app_server="app1", key=key)
    assert copied.manifest_written  # as version 2, with trees built from the entries
    assert _restored(elsewhere, FIRST, tmp_path / "r-copy", key) == first

    src = tmp_path / "src" / "c1"
    second_tree(src)  # unchanged since snapshot 2: same sizes and mtimes
    third = T0 + timedelta(hours=2)
    [result] = snapshot_server(
        LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], key=key, taken_at=third
    )
    assert result.per_mirror["m1"].ok
    assert result.files_changed == 0  # the version 1 manifest drove the quick check
    assert json.loads(config.read_text())["version"] == 2
    if key is None:
        assert _manifest_version(target, SECOND) == 1
        assert _manifest_version(target, "2026-11-30T07-00-00Z") == 2
    assert _restored(target, "2026-11-30T07-00-00Z", tmp_path / "r3", key) == second
    assert _restored(target, FIRST, tmp_path / "r1b", key) == first
    assert verify(target, key=key, read_data=True).ok

    pruned = prune(
        target, key=key, keep_last=1, keep_hourly=0, keep_daily=0, keep_weekly=0, now=third
    )
    assert pruned.removed_snapshots == [f"c1/{FIRST}", f"c1/{SECOND}"]
    assert _restored(target, "latest", tmp_path / "r4", key) == second
    assert verify(target, key=key, read_data=True).ok


def _wide_tree(root: Path, dirs: int = 200, files: int = 20) -> None:
    for d in range(dirs):
        folder = root / f"pkg{d:03d}" / "sub"
        folder.mkdir(parents=True)
        for f in range(files):
            (folder / f"module_{f:02d}.py").write_bytes(f"# {d} {f}\n".encode() * (1 + f))


def _sizes(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_ino) for p in root.rglob("*") if p.is_file()}


def test_a_run_that_changed_nothing_sends_at_most_50_kb_per_mirror(tmp_path: Path) -> None:
    src = tmp_path / "src" / "c1"
    _wide_tree(src)
    targets = [local_target(tmp_path, "m1"), local_target(tmp_path, "m2")]
    client = [ClientSource("c1", str(src))]
    [full] = snapshot_server(LocalRemote(), "app1", client, targets, taken_at=T0)
    assert all(o.ok for o in full.per_mirror.values())
    before = {t.mirror_id: _sizes(Path(t.repo_path)) for t in targets}

    later = T0 + timedelta(minutes=5)
    [noop] = snapshot_server(LocalRemote(), "app1", client, targets, taken_at=later)
    assert noop.files_changed == 0
    for target in targets:
        after = _sizes(Path(target.repo_path))
        written = sum(
            n for p, (n, ino) in after.items() if before[target.mirror_id].get(p) != (n, ino)
        )
        assert noop.per_mirror[target.mirror_id].ok
        assert noop.per_mirror[target.mirror_id].bytes_sent <= NO_OP_BUDGET
        assert written <= NO_OP_BUDGET, f"{target.mirror_id}: {written} bytes written"

    # The bound means something: the version 1 manifest of this tree is over it.
    repo = Repository.open(targets[0].remote, targets[0].repo_path, "m1", None)
    manifest: Manifest = repo.read_manifest("c1", "2026-11-30T05-05-00Z")
    assert len(manifest.entries) == 200 * 22
    assert len(repo.codec.seal_document(v1_manifest_bytes(manifest))) > NO_OP_BUDGET

    # One changed file costs its directory's tree and those above it, not the rest.
    changed = src / "pkg007" / "sub" / "module_03.py"
    changed.write_bytes(b"changed\n")
    os.utime(changed, (1, 1))
    [one] = snapshot_server(
        LocalRemote(), "app1", client, targets, taken_at=later + timedelta(minutes=5)
    )
    assert one.files_changed == 1
    assert one.per_mirror["m1"].bytes_sent <= NO_OP_BUDGET


def test_prune_keeps_the_tree_objects_live_snapshots_reference(tmp_path: Path) -> None:
    src = tmp_path / "src" / "c1"
    first_tree(src)
    target = local_target(tmp_path, "m1")
    client = [ClientSource("c1", str(src))]
    snapshot_server(LocalRemote(), "app1", client, [target], taken_at=T0)
    (src / "docs" / "deep" / "b.bin").write_bytes(b"changed deep down")
    later = T0 + timedelta(hours=1)
    snapshot_server(LocalRemote(), "app1", client, [target], taken_at=later)

    repo = Repository.open(target.remote, target.repo_path, "m1", None)
    kept = repo.read_manifest("c1", "2026-11-30T06-00-00Z")
    old = repo.read_manifest("c1", "2026-11-30T05-00-00Z")
    assert set(kept.tree_ids) & set(old.tree_ids), "unchanged directories share trees"
    assert set(kept.tree_ids) - set(old.tree_ids), "changed ones have new trees"

    result = prune(target, keep_last=1, keep_hourly=0, keep_daily=0, keep_weekly=0, now=later)
    assert result.removed_snapshots == ["c1/2026-11-30T05-00-00Z"]
    index = Repository.open(target.remote, target.repo_path, "m1", None).load_index()
    assert all(t in index for t in kept.tree_ids)
    assert verify(target, read_data=True).ok
    expected = tree_state(src)
    assert _restored(target, "latest", tmp_path / "dest", None) == expected


def test_a_mirror_that_joins_later_gets_every_tree_the_other_one_reuses(tmp_path: Path) -> None:
    src = tmp_path / "src" / "c1"
    _wide_tree(src, dirs=5, files=3)
    first, late = local_target(tmp_path, "m1"), local_target(tmp_path, "m2")
    client = [ClientSource("c1", str(src))]
    snapshot_server(LocalRemote(), "app1", client, [first], taken_at=T0)
    (src / "pkg001" / "sub" / "module_00.py").write_bytes(b"changed\n")
    [run] = snapshot_server(
        LocalRemote(), "app1", client, [first, late], taken_at=T0 + timedelta(hours=1)
    )
    # m1 reused its unchanged directories' trees; m2 has none of them and stored all.
    assert run.per_mirror["m1"].bytes_sent < run.per_mirror["m2"].bytes_sent
    report = verify(late, client_id="c1", read_data=True)
    assert report.ok, report.problems
    sid = run.snapshot_id
    assert _restored(late, sid, tmp_path / "out", None) == tree_state(src)
