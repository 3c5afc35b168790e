"""The local copy of a repository's index files (``ppo_dr.mirror.index_cache``): used
while it hashes to its name, dropped when damaged or no longer listed, never used by
verify (which checks what the mirror holds). Real repositories on a local disk."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from ppo_dr.mirror.api import ClientSource, MirrorTarget, ensure_repository, snapshot_server, verify
from ppo_dr.mirror.errors import DamagedDataError
from ppo_dr.mirror.index_cache import IndexCache
from ppo_dr.mirror.repository import Repository
from ppo_dr.transport import LocalRemote
from tests.ppo_dr.mirror.helpers import T0, local_target


def _mirrored(tmp_path: Path) -> MirrorTarget:
    src = tmp_path / "src" / "c1"
    src.mkdir(parents=True)
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(50_000))
    target = local_target(tmp_path, "m1")
    ensure_repository(target, app_server="app1", compression="none")
    snapshot_server(LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], taken_at=T0)
    return target


def _open(target: MirrorTarget) -> Repository:
    return Repository.open(target.remote, target.repo_path, target.mirror_id, None)


def _on_mirror(target: MirrorTarget) -> list[Path]:
    return sorted(p for p in Path(target.repo_path, "index").iterdir() if p.is_file())


def _kept(cache_dir: Path, target: MirrorTarget) -> Path:
    return cache_dir / IndexCache.repo_key(target.mirror_id, target.repo_path)


def _kept_files(cache_dir: Path, target: MirrorTarget) -> list[Path]:
    """The kept index files (not the merged index beside them: test_index_merged.py)."""
    return sorted(p for p in _kept(cache_dir, target).iterdir() if not p.name.startswith("."))


def test_a_kept_copy_serves_and_verify_still_reads_the_mirror(
    tmp_path: Path, cache_dir: Path
) -> None:
    target = _mirrored(tmp_path)
    first = _open(target).load_index()
    files = _on_mirror(target)
    assert files and [p.name for p in _kept_files(cache_dir, target)] == [p.name for p in files]
    for path in files:  # the mirror's copies damaged after they were kept
        path.chmod(0o600)
        path.write_bytes(b"damaged")
    again = _open(target).load_index()  # a new run: served by the kept copies
    assert again.blobs == first.blobs and again.packs == first.packs
    report = verify(target)
    assert not report.ok  # verify reads what the mirror holds
    assert any("does not match its name" in p.detail for p in report.problems)


def test_a_damaged_copy_is_read_again_from_the_mirror(tmp_path: Path, cache_dir: Path) -> None:
    target = _mirrored(tmp_path)
    first = _open(target).load_index()
    for path in _kept(cache_dir, target).iterdir():
        path.write_bytes(b"bit rot on this machine")
    assert _open(target).load_index().blobs == first.blobs
    for kept, mirrored in zip(_kept_files(cache_dir, target), _on_mirror(target), strict=True):
        assert kept.read_bytes() == mirrored.read_bytes()  # put back from the mirror


def test_copies_of_files_the_mirror_no_longer_lists_are_dropped(
    tmp_path: Path, cache_dir: Path
) -> None:
    target = _mirrored(tmp_path)
    _open(target).load_index()
    folder = _kept(cache_dir, target)
    (folder / ("0" * 64 + ".json.zst")).write_bytes(b"merged away by a prune")
    _open(target).load_index()
    assert [p.name for p in _kept_files(cache_dir, target)] == [p.name for p in _on_mirror(target)]


@pytest.mark.usefixtures("index_cache_off")
def test_without_a_cache_every_load_reads_the_mirror(tmp_path: Path) -> None:
    target = _mirrored(tmp_path)
    _open(target).load_index()
    for path in _on_mirror(target):
        path.chmod(0o600)
        path.write_bytes(b"damaged")
    with pytest.raises(DamagedDataError):
        _open(target).load_index()
    assert not (tmp_path / "home" / "cache").exists()


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x\0y"])
def test_a_name_that_is_not_a_plain_file_name_is_never_kept(tmp_path: Path, name: str) -> None:
    cache = IndexCache(tmp_path / "cache")
    cache.put("repo", name, b"data")
    assert cache.get("repo", name, "0" * 64) is None
    assert not (tmp_path / "escape").exists()
    assert not any((tmp_path / "cache").rglob("*data*"))


def test_verify_beside_a_mirror_run_that_commits_meanwhile_finds_nothing_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verify takes no lock: a snapshot committed while it runs (here: just after it
    read the index, when it lists the packs) must not read as blobs "not in the index".
    The commit is a real second snapshot into the same repository."""
    target = _mirrored(tmp_path)
    src = tmp_path / "src" / "c1"
    (src / "new.bin").write_bytes(os.urandom(80_000))
    real = Repository.list_packs
    committed: list[str] = []

    def a_writer_commits_now(self: Repository) -> dict[str, int]:
        if not committed:
            committed.append("once")
            later = T0 + timedelta(hours=1)
            snapshot_server(
                LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], taken_at=later
            )
        return real(self)

    monkeypatch.setattr(Repository, "list_packs", a_writer_commits_now)
    report = verify(target)
    assert committed and report.ok, report.problems
    monkeypatch.undo()
    again = verify(target)  # the next verify sees and checks the new snapshot
    assert again.ok and len(_open(target).list_snapshot_ids("c1")) == 2
