"""Ranged reads: restore and a client's verify fetch only the blobs they need of a pack
that is mostly dead weight to them (S3 Range GETs on moto, reads at an offset locally)."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ppo_dr.mirror.api import (
    ClientSource,
    MirrorTarget,
    prune,
    restore,
    snapshot_server,
    verify,
)
from ppo_dr.mirror.repository import BlobLocation, Repository, plan_ranges, wants_ranges
from ppo_dr.transport import LocalRemote
from tests.ppo_dr.mirror.helpers import T0, local_target, tree_state
from tests.s3 import RemoteFactory

pytestmark = pytest.mark.timeout(120)


def _loc(offset: int, length: int) -> BlobLocation:
    return BlobLocation("p" * 64, offset, length, length, False)


@pytest.mark.parametrize(
    ("locs", "gap", "ranges"),
    [
        ([], 10, []),
        ([(0, 5)], 10, [(0, 5)]),
        ([(0, 5), (5, 5)], 1, [(0, 10)]),  # adjacent
        ([(0, 5), (14, 1)], 10, [(0, 15)]),  # gap 9 < 10: one request
        ([(0, 5), (15, 1)], 10, [(0, 5), (15, 1)]),  # gap 10: two
        ([(100, 5), (0, 5), (50, 5)], 10, [(0, 5), (50, 5), (100, 5)]),  # any order in
    ],
)
def test_plan_ranges(locs: list[tuple[int, int]], gap: int, ranges: list[tuple[int, int]]) -> None:
    assert plan_ranges([_loc(o, n) for o, n in locs], gap) == ranges


def test_wants_ranges_only_for_at_most_half_a_pack() -> None:
    assert wants_ranges(1000, [_loc(0, 500)])
    assert not wants_ranges(1000, [_loc(0, 300), _loc(600, 201)])


def _mostly_dead_pack(src: Path, targets: list[MirrorTarget]) -> list[str]:
    """One run stores 40 files of 100 kB (one pack); 32 are then deleted, a second run
    stores nothing new, and prune drops the first snapshot but keeps the pack (no
    repacking): the one snapshot left needs a fifth of it."""
    rng = random.Random(5)
    src.mkdir(parents=True)
    for i in range(40):
        (src / f"f{i:02d}").write_bytes(rng.randbytes(100_000))
    clients = [ClientSource("c1", str(src))]
    first = snapshot_server(LocalRemote(), "app1", clients, targets, taken_at=T0)[0]
    assert all(o.ok for o in first.per_mirror.values())
    for i in range(40):
        if i % 5:
            (src / f"f{i:02d}").unlink()
    second = snapshot_server(
        LocalRemote(), "app1", clients, targets, taken_at=T0 + timedelta(hours=1)
    )[0]
    assert all(o.ok and o.new_chunks == 0 for o in second.per_mirror.values())
    for target in targets:
        pruned = prune(target, keep_last=1, keep_hourly=0, keep_daily=0, keep_weekly=0)
        assert pruned.removed_snapshots == ["c1/2026-11-30T05-00-00Z"]
    return [f"f{i:02d}" for i in range(0, 40, 5)]


def test_restore_and_client_verify_read_only_the_ranges_they_need_from_s3(
    make_s3_remote: RemoteFactory, s3_bucket: str, tmp_path: Path
) -> None:
    s3 = make_s3_remote(s3_bucket, prefix="offsite")
    offsite = MirrorTarget("offsite", s3, "/repos/app1")
    src = tmp_path / "src" / "c1"
    kept = _mostly_dead_pack(src, [offsite])
    repo = Repository.open(s3, "/repos/app1", "offsite", None)
    index = repo.load_index()
    manifest = repo.read_manifest("c1", repo.list_snapshot_ids("c1")[-1])
    data_pack = index.blobs[manifest.entries[0].chunks[0]].pack_id  # the rest: trees
    pack_size = index.packs[data_pack]
    tree_bytes = sum(size for pid, size in index.packs.items() if pid != data_pack)

    gets: list[Any] = []
    s3._client.meta.events.register(
        "provide-client-params.s3.GetObject",
        lambda params, **_: gets.append((params["Key"], params.get("Range"))),
    )
    result = restore([offsite], "c1", "latest", LocalRemote(), str(tmp_path / "out"))
    assert result.files == len(kept) and result.refused == []
    assert tree_state(tmp_path / "out") == tree_state(src)
    pack_gets = [rng for key, rng in gets if data_pack in key]
    assert pack_gets and all(rng is not None for rng in pack_gets)  # never the whole pack
    fetched = sum(int(b) - int(a) + 1 for a, b in (r[6:].split("-") for r in pack_gets))
    assert fetched < pack_size // 2

    gets.clear()
    report = verify(offsite, client_id="c1", read_data=True)
    assert report.ok, report.problems
    assert report.packs_checked == len(index.packs)  # the data pack and the live trees
    assert report.bytes_checked < pack_size // 2 + tree_bytes
    assert all(rng is not None for key, rng in gets if data_pack in key)


def test_a_damaged_blob_read_by_range_is_named_and_served_by_the_other_mirror(
    make_s3_remote: RemoteFactory, s3_bucket: str, tmp_path: Path
) -> None:
    onsite = local_target(tmp_path, "onsite")
    offsite = MirrorTarget("offsite", make_s3_remote(s3_bucket, prefix="o"), "/repos/app1")
    src = tmp_path / "src" / "c1"
    kept = _mostly_dead_pack(src, [onsite, offsite])
    repo = Repository.open(onsite.remote, onsite.repo_path, "onsite", None)
    index = repo.load_index()
    manifest = repo.read_manifest("c1", repo.list_snapshot_ids("c1")[-1])
    victim = next(e for e in manifest.entries if e.path == kept[1])
    loc = index.blobs[victim.chunks[0]]
    pack = Path(repo.pack_path(loc.pack_id))
    data = bytearray(pack.read_bytes())
    data[loc.offset + 7] ^= 0xFF
    pack.chmod(0o600)
    pack.write_bytes(bytes(data))

    report = verify(onsite, client_id="c1", read_data=True)
    assert not report.ok
    assert {(p.mirror_id, p.client_id, p.path) for p in report.problems} == {
        ("onsite", "c1", kept[1])
    }
    assert report.bytes_checked < pack.stat().st_size // 2  # by ranges

    result = restore([onsite, offsite], "c1", "latest", LocalRemote(), str(tmp_path / "out"))
    assert result.refused == [] and result.served_by["offsite"] >= 1
    assert tree_state(tmp_path / "out") == tree_state(src)
