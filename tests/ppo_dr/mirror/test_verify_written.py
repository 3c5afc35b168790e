"""The mirror run's check of what it wrote (``verify_written``) on real repositories on a
local disk: it finds damage in the new snapshot (a pack gone or cut, a manifest gone),
names the client and snapshot, leaves older snapshots to the whole check, and its
listings do not grow with the repository's history; ``whole_check_due`` decides when
a run also checks the whole repository."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ppo_dr.mirror.api import (
    ClientSource,
    MirrorTarget,
    ensure_repository,
    snapshot_server,
    verify,
    verify_written,
)
from ppo_dr.mirror.index_cache import IndexCache
from ppo_dr.mirror.repository import STATS_PER_LISTING, Repository
from ppo_dr.mirror.runbook import WHOLE_CHECK_EVERY_S, whole_check_due
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.base import RemoteStat
from tests.ppo_dr.mirror.helpers import T0, local_target

pytestmark = pytest.mark.timeout(120)


class CountingRemote(LocalRemote):
    """The local disk, counting the listings and stats a check asks of it."""

    def __init__(self) -> None:
        super().__init__()
        self.listings = 0
        self.stats = 0

    def listdir(self, path: str) -> list[RemoteStat]:
        self.listings += 1
        return super().listdir(path)

    def stat(self, path: str) -> RemoteStat | None:
        self.stats += 1
        return super().stat(path)


def _runs(tmp_path: Path, count: int, remote: LocalRemote | None = None) -> Iterator[str]:
    """*count* mirror runs of client c1 onto one mirror, a changed file each run; yields
    each run's snapshot id."""
    src = tmp_path / "src" / "c1"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(20_000))
    target = _target(tmp_path, remote)
    ensure_repository(target, app_server="app1", compression="none")
    for run in range(count):
        (src / f"new{run}.bin").write_bytes(os.urandom(5_000))
        [result] = snapshot_server(
            LocalRemote(),
            "app1",
            [ClientSource("c1", str(src))],
            [target],
            taken_at=T0 + timedelta(hours=run),
        )
        yield result.snapshot_id


def _target(tmp_path: Path, remote: LocalRemote | None = None) -> MirrorTarget:
    plain = local_target(tmp_path, "m1")
    return MirrorTarget(plain.mirror_id, remote or LocalRemote(), plain.repo_path)


def _packs_of(target: MirrorTarget, snapshot_id: str, *, trees: bool = True) -> list[str]:
    """The packs *snapshot_id* uses; without *trees*, those holding none of its trees
    (losing one of those fails reading the manifest itself)."""
    repo = Repository.open(target.remote, target.repo_path, target.mirror_id, None)
    index = repo.load_index()
    manifest = repo.read_manifest("c1", snapshot_id)
    tree_packs = {index.blobs[t].pack_id for t in manifest.tree_ids}
    data_packs = {index.blobs[c].pack_id for e in manifest.entries for c in e.chunks}
    return sorted(data_packs | tree_packs if trees else data_packs - tree_packs)


def _pack_file(target: MirrorTarget, pack_id: str) -> Path:
    return Path(target.repo_path, "packs", pack_id[:2], pack_id)


def _details(report: Any) -> list[tuple[str, str, str]]:
    return [(p.client_id, p.snapshot_id, p.detail) for p in report.problems]


def test_a_sound_new_snapshot_passes(tmp_path: Path, cache_dir: Path) -> None:
    *_, newest = _runs(tmp_path, 2)
    target = _target(tmp_path)
    report = verify_written(target, snapshots={"c1": newest})
    assert report.ok and report.problems == []
    assert report.packs_checked == len(_packs_of(target, newest))


def test_a_pack_of_the_new_snapshot_gone_or_cut_is_named_with_its_snapshot(
    tmp_path: Path, cache_dir: Path
) -> None:
    *_, newest = _runs(tmp_path, 2)
    target = _target(tmp_path)
    gone, *_ = _packs_of(target, newest, trees=False)
    pack = _pack_file(target, gone)
    kept = pack.read_bytes()
    pack.chmod(0o600)
    pack.write_bytes(kept[:-1])
    report = verify_written(target, snapshots={"c1": newest})
    cut = f"pack {gone} has {len(kept) - 1} bytes, index says {len(kept)}"
    assert not report.ok and _details(report) == [("c1", newest, cut)]
    pack.unlink()
    report = verify_written(target, snapshots={"c1": newest})
    assert _details(report) == [("c1", newest, f"pack {gone} is indexed but missing")]


def test_a_pack_of_its_trees_gone_fails_reading_the_snapshot(
    tmp_path: Path, cache_dir: Path
) -> None:
    *_, newest = _runs(tmp_path, 2)
    target = _target(tmp_path)
    data = set(_packs_of(target, newest, trees=False))
    trees = sorted(set(_packs_of(target, newest)) - data)
    assert trees  # a version 2 snapshot's trees are packed blobs
    _pack_file(target, trees[0]).unlink()
    report = verify_written(target, snapshots={"c1": newest})
    assert [(c, s) for c, s, _ in _details(report)] == [("c1", newest)]
    assert trees[0] in report.problems[0].detail


def test_a_missing_manifest_is_named(tmp_path: Path, cache_dir: Path) -> None:
    *_, newest = _runs(tmp_path, 1)
    target = _target(tmp_path)
    for manifest in Path(target.repo_path, "snapshots", "c1").iterdir():
        manifest.unlink()
    report = verify_written(target, snapshots={"c1": newest})
    assert [(c, s) for c, s, _ in _details(report)] == [("c1", newest)]


def test_damage_only_older_snapshots_use_is_left_to_the_whole_check(
    tmp_path: Path, cache_dir: Path
) -> None:
    """The scope, said by a test: a pack only an older snapshot uses is not looked at."""
    first, newest = _runs(tmp_path, 2)
    target = _target(tmp_path)
    only_old = sorted(set(_packs_of(target, first)) - set(_packs_of(target, newest)))
    assert only_old  # its trees at least: the second run added a file
    _pack_file(target, only_old[0]).unlink()
    assert verify_written(target, snapshots={"c1": newest}).ok
    whole = verify(target)
    assert f"pack {only_old[0]} is indexed but missing" in [p.detail for p in whole.problems]


def test_its_listings_do_not_grow_with_the_history(tmp_path: Path, cache_dir: Path) -> None:
    """Twelve runs leave packs in many folders: the whole check lists each of them and
    reads every manifest; the check of the last run lists at most its own packs'
    folders, and asks one stat per pack where a folder holds few of them."""
    remote = CountingRemote()
    *_, newest = _runs(tmp_path, 12, remote)
    target = _target(tmp_path, remote)
    folders = [p for p in Path(target.repo_path, "packs").iterdir() if p.is_dir()]
    remote.listings = remote.stats = 0
    verify(target)
    whole = remote.listings
    assert whole >= len(folders) + 1  # packs/ and every folder in it
    remote.listings = remote.stats = 0
    assert verify_written(target, snapshots={"c1": newest}).ok
    packs = _packs_of(target, newest)
    used_folders = {p[:2] for p in packs}
    assert remote.listings <= 2 + len(used_folders)  # index/, the snapshot's, the folders
    assert remote.listings < whole


def test_pack_sizes_stats_a_few_and_lists_a_full_folder(tmp_path: Path) -> None:
    remote = CountingRemote()
    target = _target(tmp_path, remote)
    ensure_repository(target, app_server="app1", compression="none")
    folder = Path(target.repo_path, "packs", "ab")
    folder.mkdir(parents=True)
    many = [f"ab{i:062x}" for i in range(STATS_PER_LISTING + 1)]
    for i, pack_id in enumerate(many):
        (folder / pack_id).write_bytes(b"x" * (i + 1))
    repo = Repository.open(remote, target.repo_path, target.mirror_id, None)
    remote.listings = remote.stats = 0
    sizes = repo.pack_sizes([*many, "cd" + "0" * 62])
    assert sizes == {**{p: i + 1 for i, p in enumerate(many)}, "cd" + "0" * 62: None}
    assert remote.listings == 1  # the full folder, listed once
    assert remote.stats == 2  # that folder's existence, and the one pack in "cd"


@pytest.mark.parametrize(
    ("last", "now", "due"),
    [
        (None, 1000.0, True),  # never checked whole on this machine
        (1000.0, 1000.0, False),
        (1000.0, 1000.0 + WHOLE_CHECK_EVERY_S - 1, False),
        (1000.0, 1000.0 + WHOLE_CHECK_EVERY_S, True),
        (1000.0, 999.0, True),  # the clock went back: cannot tell
    ],
)
def test_whole_check_due(last: float | None, now: float, due: bool) -> None:
    assert whole_check_due(last, now) is due


def test_the_whole_check_stamp_is_kept_beside_the_index_copies(cache_dir: Path) -> None:
    cache = IndexCache(cache_dir)
    key = IndexCache.repo_key("m1", "/srv/repos/app1")
    assert cache.whole_check_at(key) is None
    cache.note_whole_check(key, 1234.5)
    assert cache.whole_check_at(key) == 1234.5
    cache.keep_only(key, [])  # a load that drops the copies of unlisted files keeps it
    assert cache.whole_check_at(key) == 1234.5
    (cache_dir / key / ".whole-check").write_text("garbage")
    assert cache.whole_check_at(key) is None
