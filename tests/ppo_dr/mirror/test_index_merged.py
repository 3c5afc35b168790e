"""The parsed, merged index kept on this machine (``ppo_dr.mirror.index``): used when
it checks, ignored and rebuilt when damaged, sealed with another key, or when the
mirror's index files changed; it never changes what a load returns. Real
repositories on a local disk; the cache under a per-test directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ppo_dr.mirror.api import ClientSource, MirrorTarget, ensure_repository, snapshot_server
from ppo_dr.mirror.codec import Codec
from ppo_dr.mirror.index import BlobLocation, Index, IndexColumns, packs_of
from ppo_dr.mirror.index_cache import MERGED_NAME, IndexCache
from ppo_dr.mirror.repository import Repository
from ppo_dr.transport import LocalRemote
from tests.ppo_dr.mirror.helpers import T0, count_index_reads, local_target

KEY = b"k" * 32
_HOUR = 3600


def _mirrored(tmp_path: Path, key: bytes | None = None, runs: int = 2) -> MirrorTarget:
    """A repository of *runs* snapshots (one index file per pack, and per run's trees)."""
    src = tmp_path / "src" / "c1"
    src.mkdir(parents=True)
    target = local_target(tmp_path, "m1")
    ensure_repository(target, app_server="app1", key=key, compression="none")
    for run in range(runs):
        _snapshot(src, target, key, run)
    return target


def _snapshot(src: Path, target: MirrorTarget, key: bytes | None, run: int) -> None:
    for i in range(3):
        (src / f"r{run}-f{i}.bin").write_bytes(os.urandom(30_000))
    when = T0.replace(hour=run % 24, day=1 + run // 24)
    results = snapshot_server(
        LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], key=key, taken_at=when
    )
    assert all(o.ok for r in results for o in r.per_mirror.values())


def _open(target: MirrorTarget, key: bytes | None = None) -> Repository:
    return Repository.open(target.remote, target.repo_path, target.mirror_id, key)


def _merged(cache_dir: Path, target: MirrorTarget) -> Path:
    return cache_dir / IndexCache.repo_key(target.mirror_id, target.repo_path) / MERGED_NAME


def _uncached(target: MirrorTarget, key: bytes | None, monkeypatch: pytest.MonkeyPatch) -> Index:
    with monkeypatch.context() as patch:
        patch.setenv("PPO_DR_INDEX_CACHE", "off")
        return _open(target, key).load_index()


def _same(a: Index, b: Index) -> None:
    assert a.blobs == b.blobs
    assert a.packs == b.packs
    assert a.pack_blobs == b.pack_blobs
    assert a.files == b.files


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_it_serves_the_next_load_and_changes_nothing(
    tmp_path: Path, cache_dir: Path, key: bytes | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _mirrored(tmp_path, key)
    expected = _uncached(target, key, monkeypatch)
    assert len(expected.files) >= 2
    _same(_open(target, key).load_index(), expected)  # this load (re)builds it
    assert _merged(cache_dir, target).is_file()
    parsed = count_index_reads(monkeypatch)
    _same(_open(target, key).load_index(), expected)
    known = _open(target, key).load_known()
    assert parsed == []  # no index file read or parsed: all came from the merged cache
    assert known == {b: loc.raw_length for b, loc in expected.blobs.items()}


def test_a_snapshot_leaves_its_own_index_files_merged_for_the_next_run(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _mirrored(tmp_path)
    before = _open(target).load_index().files
    _snapshot(tmp_path / "src" / "c1", target, None, 2)  # thread path: no connect
    parsed = count_index_reads(monkeypatch)
    index = _open(target).load_index()
    assert [f for f in index.files if f not in before] and parsed == []
    monkeypatch.undo()
    _same(index, _uncached(target, None, monkeypatch))


def test_only_index_files_new_to_the_merged_cache_are_parsed(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files another machine wrote (here: a writer without the cache) are read and
    parsed, and only they."""
    target = _mirrored(tmp_path)
    before = _open(target).load_index().files
    with monkeypatch.context() as patch:
        patch.setenv("PPO_DR_INDEX_CACHE", "off")
        _snapshot(tmp_path / "src" / "c1", target, None, 2)
    parsed = count_index_reads(monkeypatch)
    index = _open(target).load_index()
    new = [f for f in index.files if f not in before]
    assert new and sorted(parsed) == sorted(new)
    monkeypatch.undo()
    _same(index, _uncached(target, None, monkeypatch))


def test_files_no_longer_listed_are_not_trusted(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the mirror stopped listing (a prune merged it away) takes its blobs out
    of the next load, although the merged cache still holds them."""
    target = _mirrored(tmp_path)
    full = _open(target).load_index()
    gone = full.files[0]
    Path(target.repo_path, "index", gone).unlink()
    index = _open(target).load_index()
    assert gone not in index.files
    assert any(b not in index.blobs for b in full.blobs)
    _same(index, _uncached(target, None, monkeypatch))
    assert IndexColumns.from_bytes(_merged(cache_dir, target).read_bytes(), Codec()).names == (
        index.files
    )


@pytest.mark.parametrize(
    "damage",
    ["flip a byte", "cut short", "empty", "garbage", "another key"],
)
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_a_damaged_merged_cache_is_ignored_and_rebuilt(
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
    key: bytes | None,
) -> None:
    target = _mirrored(tmp_path, key)
    expected = _uncached(target, key, monkeypatch)
    _open(target, key).load_index()
    merged = _merged(cache_dir, target)
    good = merged.read_bytes()
    columns = IndexColumns.from_bytes(good, Codec(key=key))
    bad = {
        "flip a byte": good[: len(good) // 2]
        + bytes([good[len(good) // 2] ^ 1])
        + good[len(good) // 2 + 1 :],
        "cut short": good[:-9],
        "empty": b"",
        "garbage": os.urandom(len(good)),
        "another key": columns.to_bytes(Codec(key=b"x" * 32 if key else None))[:-1] + b"!",
    }[damage]
    merged.write_bytes(bad)
    with pytest.raises(ValueError):
        IndexColumns.from_bytes(bad, Codec(key=key))
    _same(_open(target, key).load_index(), expected)
    assert IndexColumns.from_bytes(merged.read_bytes(), Codec(key=key)) == columns  # rebuilt


def test_the_encrypted_repository_s_merged_cache_shows_no_id(
    tmp_path: Path, cache_dir: Path
) -> None:
    target = _mirrored(tmp_path, KEY)
    index = _open(target, KEY).load_index()
    stored = _merged(cache_dir, target).read_bytes()
    for blob_id in list(index.blobs)[:20] + list(index.packs):
        assert bytes.fromhex(blob_id) not in stored and blob_id.encode() not in stored


@pytest.mark.usefixtures("index_cache_off")
def test_turned_off_no_merged_cache_is_kept(tmp_path: Path) -> None:
    target = _mirrored(tmp_path)
    repo = _open(target)
    assert repo.load_known() == {b: loc.raw_length for b, loc in repo.load_index().blobs.items()}
    assert not list(tmp_path.rglob(MERGED_NAME))


# ----- the columns themselves --------------------------------------------------------


def _loc(pack: str, offset: int, compressed: bool = False) -> BlobLocation:
    return BlobLocation(pack, offset, 10 + offset, 20 + offset, compressed)


def test_a_blob_stored_twice_is_located_in_the_first_pack_named() -> None:
    p1, p2, b1, b2 = "1" * 64, "2" * 64, "a" * 64, "b" * 64
    files = {
        "f1": {p1: (100, {b1: _loc(p1, 0), b2: _loc(p1, 10, True)})},
        "f2": {p2: (200, {b2: _loc(p2, 0)})},
    }
    columns = IndexColumns()
    for name in ("f2", "f1"):
        columns.add_file(name, files[name])
    for order in (["f1", "f2"], ["f2", "f1"]):
        index = Index()
        for name in order:
            for pack_id, (size, blobs) in files[name].items():
                index.add_pack(pack_id, size, blobs)
            index.files.append(name)
        chosen = columns.select(order, lambda name: pytest.fail(f"{name} parsed"))
        again = IndexColumns.from_bytes(chosen.to_bytes(Codec()), Codec())
        for got in (chosen, again):
            assert got.to_index() == index
            assert {b: got.location(b) for b in (b1, b2)} == index.blobs
            assert got.location("c" * 64) is None
            assert got.pack_sizes_by_id() == index.packs


def _document(packs: dict[str, tuple[int, list[list[object]]]]) -> dict[str, object]:
    return {
        "version": 1,
        "packs": [{"id": p, "size": size, "blobs": rows} for p, (size, rows) in packs.items()],
    }


@pytest.mark.parametrize(
    "odd",
    [
        None,
        "a blob listed twice in a pack",
        "an offset that is not an integer",
        "a negative length",
    ],
)
def test_a_document_adds_what_its_parsed_packs_add(odd: str | None) -> None:
    """The fast path (columns straight from the JSON rows) and the slow one (through
    a location object per blob) give the same columns; odd rows take the slow one."""
    p1, p2 = "1" * 64, "2" * 64
    rows1: list[list[object]] = [["a" * 64, 0, 10, 20, "zstd"], ["b" * 64, 10, 5, 5, "none"]]
    rows2: list[list[object]] = [["c" * 64, 0, 7, 9, "none"]]
    if odd == "a blob listed twice in a pack":
        rows1.append(["a" * 64, 15, 3, 3, "none"])
    elif odd == "an offset that is not an integer":
        rows2[0][1] = 0.0
    elif odd == "a negative length":
        rows2[0][2] = -7
    doc = _document({p1: (100, rows1), p2: (50, rows2)})
    fast, slow = IndexColumns(), IndexColumns()
    if odd == "a negative length":  # neither takes it: the index is then read unmerged
        with pytest.raises(ValueError):
            fast.add_document("f", doc)
        with pytest.raises(ValueError):
            slow.add_file("f", packs_of(doc))
        return
    fast.add_document("f", doc)
    slow.add_file("f", packs_of(doc))
    assert fast == slow
    assert fast.to_index().blobs == {
        b: loc for _, (_, blobs) in packs_of(doc).items() for b, loc in blobs.items()
    }


@pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "g" * 64, "a b" + "c" * 61])
def test_an_id_that_is_not_lower_case_hex_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        IndexColumns().add_file("f", {bad: (1, {})})
    with pytest.raises(ValueError):
        IndexColumns().add_file("f", {"1" * 64: (1, {bad: _loc("1" * 64, 0)})})


def test_an_index_file_columns_cannot_hold_is_read_unmerged(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index file no writer of ours makes (a negative offset) leaves the load as
    it was without the merged cache, which is dropped rather than kept stale."""
    target = _mirrored(tmp_path)
    _open(target).load_index()
    assert _merged(cache_dir, target).is_file()
    odd = "e" * 64
    _open(target).write_index({odd: (10, {"f" * 64: BlobLocation(odd, -1, 5, 5, False)})})
    expected = _uncached(target, None, monkeypatch)
    assert expected.blobs["f" * 64].offset == -1
    _same(_open(target).load_index(), expected)
    assert _open(target).load_known() == {b: loc.raw_length for b, loc in expected.blobs.items()}
    assert not _merged(cache_dir, target).exists()
