"""A changed file is cut where its previous version was cut: appends and in-place
writes cost the bytes they changed, insertions still resynchronise (FastCDC)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from ppo_dr.mirror.api import ClientSource, MirrorTarget, restore, snapshot_server
from ppo_dr.mirror.repository import CDC_MAX, CDC_MIN, REWRITE_MAX, Repository
from ppo_dr.mirror.results import ClientSnapshotResult
from ppo_dr.mirror.snapshot import reuse_plan
from ppo_dr.transport import LocalRemote
from tests.ppo_dr.mirror.helpers import T0, local_target, tree_state

pytestmark = pytest.mark.timeout(120)

A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.mark.parametrize(
    ("previous", "old_size", "size", "expected"),
    [
        # same size (in-place writes): every old cut is kept
        ([(A, 100_000), (B, 10)], 100_010, 100_010, [(A, 100_000), (B, 10)]),
        # grew, last chunk >= the chunker's minimum: kept, the appended bytes come after
        ([(A, 100_000), (B, CDC_MIN)], 100_000 + CDC_MIN, 10**6, [(A, 100_000), (B, CDC_MIN)]),
        # grew, last chunk shorter than the minimum: cut again with the new bytes
        ([(A, 100_000), (B, CDC_MIN - 1)], 100_000 + CDC_MIN - 1, 10**6, [(A, 100_000)]),
        ([(A, 1000)], 1000, 2000, []),
        # shrank: only the chunks that still fit whole
        ([(A, 100), (B, 100), (C, 100)], 300, 250, [(A, 100), (B, 100)]),
        ([(A, 100), (B, 100)], 200, 200 - 1, [(A, 100)]),
        ([(A, 100)], 100, 0, []),
        # no previous content
        ([], 0, 5000, []),
        ([], 0, 0, []),
    ],
)
def test_reuse_plan(
    previous: list[tuple[str, int]], old_size: int, size: int, expected: list[tuple[str, int]]
) -> None:
    assert reuse_plan(previous, old_size, size) == expected


@dataclass
class Mirrored:
    """Client c1's source tree on app1, snapshot hour by hour to local mirrors."""

    tmp_path: Path
    targets: list[MirrorTarget]

    @property
    def src(self) -> Path:
        return self.tmp_path / "src" / "c1"

    def snapshot(self, hours: int) -> ClientSnapshotResult:
        """The snapshot taken *hours* after T0, every mirror written."""
        result = snapshot_server(
            LocalRemote(),
            "app1",
            [ClientSource("c1", str(self.src))],
            self.targets,
            taken_at=T0 + timedelta(hours=hours),
        )[0]
        assert all(o.ok for o in result.per_mirror.values()), result.per_mirror
        return result

    def first_snapshot(self, path: Path, data: bytes) -> list[tuple[str, int]]:
        """Write *data* to *path*, take the first snapshot; the file's chunks."""
        path.write_bytes(data)
        self.snapshot(0)
        return self.chunks(path.name)

    def chunks(self, path: str) -> list[tuple[str, int]]:
        """(blob id, plaintext length) of *path* in the newest snapshot on the first mirror."""
        target = self.targets[0]
        repo = Repository.open(target.remote, target.repo_path, target.mirror_id, None)
        index = repo.load_index()
        manifest = repo.read_manifest("c1", repo.list_snapshot_ids("c1")[-1])
        entry = next(e for e in manifest.entries if e.path == path)
        return [(c, index.blobs[c].raw_length) for c in entry.chunks]

    def assert_restores(self) -> None:
        """Every mirror's latest snapshot restores to the source tree, byte for byte."""
        for target in self.targets:
            out = self.tmp_path / f"restored-{target.mirror_id}"
            restore([target], "c1", "latest", LocalRemote(), str(out))
            assert tree_state(out) == tree_state(self.src)


@pytest.fixture
def mirrored(tmp_path: Path) -> Mirrored:
    """An empty source tree for c1, mirrored to one local mirror, m1."""
    (tmp_path / "src" / "c1").mkdir(parents=True)
    return Mirrored(tmp_path, [local_target(tmp_path, "m1")])


def test_append_costs_the_appended_bytes_and_keeps_the_old_chunks(mirrored: Mirrored) -> None:
    rng = random.Random(3)  # its last FastCDC chunk is ~450 kB: above CDC_MIN, so kept
    mirrored.targets.append(local_target(mirrored.tmp_path, "m2"))
    big = mirrored.src / "big.db"
    before = mirrored.first_snapshot(big, rng.randbytes(6_000_000))
    assert len(before) >= 3 and before[-1][1] >= CDC_MIN

    with big.open("ab") as f:
        f.write(rng.randbytes(100_000))
    second = mirrored.snapshot(1)
    after = mirrored.chunks("big.db")
    assert after[: len(before)] == before  # every old chunk reused, at its old offset
    assert sum(n for _, n in after[len(before) :]) == 100_000
    for outcome in second.per_mirror.values():
        # the appended 100 kB plus pack trailer, index file and manifest; cut from
        # scratch, the old last chunk (~450 kB) would go again
        assert outcome.bytes_sent < 100_000 + 10_000, outcome
    mirrored.assert_restores()


def test_in_place_write_costs_the_chunk_it_touches_then_a_small_one(mirrored: Mirrored) -> None:
    rng = random.Random(2)
    db = mirrored.src / "pages.db"
    before = mirrored.first_snapshot(db, rng.randbytes(8_000_000))
    assert before[3][1] > REWRITE_MAX

    def write_page(at: int, hour: int) -> None:
        with db.open("r+b") as f:
            f.seek(at)
            f.write(rng.randbytes(4096))
        os.utime(db, (T0.timestamp() + hour * 3600, T0.timestamp() + hour * 3600))

    page = sum(n for _, n in before[:3]) + 1000  # inside the 4th chunk
    write_page(page, 1)
    second = mirrored.snapshot(1)
    after = mirrored.chunks("pages.db")
    # Every other chunk reused at its offset; the rewritten one stored cut small.
    assert after[:3] == before[:3]
    k = len(after) - len(before[4:])
    assert after[k:] == before[4:]
    fine = after[3:k]
    assert len(fine) >= 2 and sum(n for _, n in fine) == before[3][1]
    assert all(n <= REWRITE_MAX for _, n in fine)
    first_cost = second.per_mirror["m1"].bytes_sent
    assert first_cost < before[3][1] + 15_000  # the old chunk's size, as before

    write_page(page + 100, 2)  # the same page again, an hour later
    third = mirrored.snapshot(2)
    outcome = third.per_mirror["m1"]
    assert outcome.new_chunks <= 2
    assert outcome.bytes_sent < 2 * REWRITE_MAX + 10_000 < first_cost
    mirrored.assert_restores()


def test_insertion_resynchronises_and_a_small_tail_is_cut_again(mirrored: Mirrored) -> None:
    rng = random.Random(3)
    body = rng.randbytes(6_000_000)
    log = mirrored.src / "log"
    log.write_bytes(rng.randbytes(10_000))  # one chunk, under CDC_MIN
    before = mirrored.first_snapshot(mirrored.src / "doc", body)

    (mirrored.src / "doc").write_bytes(body[:50] + b"inserted!" + body[50:])  # size changes
    with log.open("ab") as f:
        f.write(rng.randbytes(10_000))
    second = mirrored.snapshot(1)
    after = mirrored.chunks("doc")
    assert len(set(after) - set(before)) <= 2  # FastCDC found the old cuts again
    assert set(after[2:]) <= set(before)
    # the log's small tail was cut again with its new bytes: still one chunk, not two
    assert [n for _, n in mirrored.chunks("log")] == [20_000]
    assert second.per_mirror["m1"].bytes_sent < 2 * CDC_MAX + 20_000 + 10_000
    mirrored.assert_restores()


def test_a_rewritten_file_of_the_same_size_keeps_its_cuts_and_restores(mirrored: Mirrored) -> None:
    rng = random.Random(4)
    f = mirrored.src / "scratch"
    before = mirrored.first_snapshot(f, rng.randbytes(3_000_000))
    f.write_bytes(rng.randbytes(3_000_000))  # every byte new, same size
    os.utime(f, (T0.timestamp() + 9, T0.timestamp() + 9))
    second = mirrored.snapshot(1)
    after = mirrored.chunks("scratch")
    assert [n for _, n in after] == [n for _, n in before]
    assert not set(after) & set(before)
    assert second.per_mirror["m1"].new_chunks == len(before)
    mirrored.assert_restores()
