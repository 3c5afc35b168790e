"""Copying a client's snapshot between repositories (the new home's seed), on local disk."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from ppo_dr.errors import UnsafeInputError
from ppo_dr.mirror import api
from ppo_dr.mirror.copy import copy_snapshot
from ppo_dr.mirror.errors import DamagedDataError, WrongKeyError
from ppo_dr.mirror.repository import Repository
from ppo_dr.transport import LocalRemote
from tests.ppo_dr.mirror.helpers import T0, tree_state

KEY = bytes(range(32))


def _tree(root: Path) -> None:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "small.txt").write_bytes(b"hello " * 100)
    (root / "big.bin").write_bytes(os.urandom(1_500_000))
    (root / "same.bin").write_bytes(b"z" * 400_000)
    (root / "link").symlink_to("docs/small.txt")
    os.utime(root / "big.bin", (1_700_000_000, 1_700_000_000))


def _target(base: Path, mirror: str, server: str) -> api.MirrorTarget:
    return api.MirrorTarget(mirror, LocalRemote(), str(base / mirror / "repos" / server))


def _snapshot(src: Path, target: api.MirrorTarget, key: bytes | None, offset_s: int = 0) -> str:
    api.ensure_repository(target, app_server="app-old", key=key)
    results = api.snapshot_server(
        LocalRemote(),
        "app-old",
        [api.ClientSource("c1", str(src))],
        [target],
        key=key,
        taken_at=T0 + timedelta(seconds=offset_s),
        hook=None,
    )
    assert results[0].per_mirror[target.mirror_id].ok
    return results[0].snapshot_id


def _pack_bytes(target: api.MirrorTarget, key: bytes | None) -> int:
    repo = Repository.open(target.remote, target.repo_path, target.mirror_id, key)
    return sum(repo.list_packs().values())


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_copy_sends_only_missing_blobs_and_restores_identically(
    tmp_path: Path, key: bytes | None
) -> None:
    src_tree = tmp_path / "client"
    _tree(src_tree)
    old = _target(tmp_path, "m-old", "app-old")
    new = _target(tmp_path, "m-new", "app-new")
    first = _snapshot(src_tree, old, key)

    copied = copy_snapshot(old, new, "c1", first, dest_app_server="app-new", key=key)
    assert copied.manifest_written and copied.blobs_copied == copied.blobs_needed > 0
    assert copied.bytes_sent == _pack_bytes(new, key) > 1_000_000
    report = api.verify(new, key=key, read_data=True)
    assert report.ok, report.problems
    out = tmp_path / "restored"
    result = api.restore([new], "c1", first, LocalRemote(), str(out), key=key)
    assert result.refused == [] and tree_state(out) == tree_state(src_tree)
    config = Repository.open(new.remote, new.repo_path, "m-new", key).config
    assert config.app_server == "app-new"

    # Idempotent: the same snapshot again sends nothing.
    again = copy_snapshot(old, new, "c1", first, dest_app_server="app-new", key=key)
    assert not again.manifest_written and again.bytes_sent == 0

    # A later snapshot with one small change: only its new blobs travel.
    (src_tree / "docs" / "small.txt").write_bytes(b"changed " * 10)
    second = _snapshot(src_tree, old, key, offset_s=60)
    delta = copy_snapshot(old, new, "c1", second, dest_app_server="app-new", key=key)
    assert delta.manifest_written and delta.blobs_copied == 1
    assert delta.bytes_sent < 10_000
    out2 = tmp_path / "restored2"
    api.restore([new], "c1", second, LocalRemote(), str(out2), key=key)
    assert tree_state(out2) == tree_state(src_tree)


def test_a_damaged_source_blob_is_refused_not_propagated(tmp_path: Path) -> None:
    src_tree = tmp_path / "client"
    _tree(src_tree)
    old = _target(tmp_path, "m-old", "app-old")
    new = _target(tmp_path, "m-new", "app-new")
    sid = _snapshot(src_tree, old, None)
    repo = Repository.open(old.remote, old.repo_path, "m-old", None)
    pack_id = max(repo.list_packs(), key=lambda p: repo.list_packs()[p])
    path = Path(repo.pack_path(pack_id))
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedDataError):
        copy_snapshot(old, new, "c1", sid, dest_app_server="app-new")
    # Nothing half-copied became a snapshot of the destination.
    dest = Repository.open(new.remote, new.repo_path, "m-new", None)
    assert dest.list_snapshot_ids("c1") == []


def test_keys_and_ids_are_checked(tmp_path: Path) -> None:
    src_tree = tmp_path / "client"
    _tree(src_tree)
    old = _target(tmp_path, "m-old", "app-old")
    sid = _snapshot(src_tree, old, KEY)
    new = _target(tmp_path, "m-new", "app-new")
    api.ensure_repository(new, app_server="app-new", key=None)
    with pytest.raises(WrongKeyError):
        copy_snapshot(old, new, "c1", sid, dest_app_server="app-new", key=KEY)
    with pytest.raises(UnsafeInputError, match="client id"):
        copy_snapshot(old, new, "../c1", sid, dest_app_server="app-new", key=KEY)
    with pytest.raises(UnsafeInputError, match="snapshot id"):
        copy_snapshot(old, new, "c1", "../../x", dest_app_server="app-new", key=KEY)
