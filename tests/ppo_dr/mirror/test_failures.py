"""Crash, corruption, hostile input, keys, retention and the lock, on real disks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from ppo_dr.errors import PermanentError, UnsafeInputError
from ppo_dr.mirror.api import (
    ClientSource,
    ensure_repository,
    list_snapshots,
    prune,
    restore,
    snapshot_server,
    verify,
)
from ppo_dr.mirror.errors import RepositoryLocked, WrongKeyError
from ppo_dr.mirror.lock import RepositoryLock
from ppo_dr.mirror.manifest import Entry, Manifest
from ppo_dr.mirror.repository import Repository
from ppo_dr.transport import EntryType, LocalRemote
from tests.ppo_dr.mirror.helpers import T0, local_target, tree_state, write_v1_manifest

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]


def _client(tmp_path: Path, name: str = "c1", files: int = 5, size: int = 100_000) -> Path:
    src = tmp_path / "src" / name
    (src / "sub").mkdir(parents=True)
    for i in range(files):
        (src / "sub" / f"f{i}.bin").write_bytes(os.urandom(size))
    (src / "notes.txt").write_text("the one file the corruption test damages\n" * 200)
    return src


def _flip_byte_in(path: Path, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(needle) + 5
    data[at] ^= 0xFF
    path.chmod(0o600)
    path.write_bytes(bytes(data))


def _packs(repo_path: str) -> list[Path]:
    return sorted(p for p in Path(repo_path, "packs").rglob("*") if p.is_file())


CRASH_SCRIPT = """
import sys, time
from datetime import datetime, UTC
from ppo_dr.mirror.api import ClientSource, MirrorTarget, snapshot_server
from ppo_dr.transport import LocalRemote
src, repo = sys.argv[1], sys.argv[2]
clients = [ClientSource(f"c{i}", f"{src}/c{i}") for i in range(4)]
snapshot_server(LocalRemote(), "app1", clients, [MirrorTarget("m1", LocalRemote(), repo)],
                taken_at=datetime(2026, 11, 30, 6, tzinfo=UTC), hook=lambda c: time.sleep(0.4))
"""


def test_killed_snapshot_leaves_old_ones_intact_and_next_run_resumes(tmp_path: Path) -> None:
    for i in range(4):
        _client(tmp_path, f"c{i}", files=3, size=7_000_000)  # ~21 MB: two packs per client
    target = local_target(tmp_path, "m1")
    first = snapshot_server(
        LocalRemote(),
        "app1",
        [ClientSource("c0", str(tmp_path / "src" / "c0"))],
        [target],
        taken_at=T0,
    )
    full_c0 = first[0].per_mirror["m1"].bytes_sent
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path / "src"), target.repo_path], env=env
    )
    index_dir = Path(target.repo_path, "index")
    deadline = time.monotonic() + 60
    while len(list(index_dir.iterdir())) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(index_dir.iterdir())) >= 4  # some packs of the killed run are indexed
    # The snapshot from before the crash still verifies, data included.
    report = verify(target, read_data=True)
    assert report.ok, report.problems
    assert list_snapshots(target, "c0")[0].snapshot_id == "2026-11-30T05-00-00Z"
    # The next run takes over the dead run's lock and sends only what is missing.
    clients = [ClientSource(f"c{i}", str(tmp_path / "src" / f"c{i}")) for i in range(4)]
    again = snapshot_server(
        LocalRemote(), "app1", clients, [target], taken_at=T0 + timedelta(hours=2)
    )
    assert all(r.per_mirror["m1"].ok for r in again)
    sent = sum(r.per_mirror["m1"].bytes_sent for r in again)
    assert sent < 3.3 * full_c0  # a full run of 4 clients sends ~4x; the killed run's packs count
    assert verify(target, read_data=True).ok


def test_flipped_byte_is_named_by_verify_and_served_by_the_other_mirror(tmp_path: Path) -> None:
    src = _client(tmp_path)
    targets = [local_target(tmp_path, "m1"), local_target(tmp_path, "m2")]
    for t in targets:
        ensure_repository(t, app_server="app1", compression="none")
    snapshot_server(LocalRemote(), "app1", [ClientSource("c1", str(src))], targets, taken_at=T0)
    pack = next(p for p in _packs(targets[0].repo_path) if b"the one file" in p.read_bytes())
    _flip_byte_in(pack, b"the one file")

    assert verify(targets[0]).ok  # structure is fine; only reading the data shows it
    report = verify(targets[0], read_data=True)
    assert not report.ok
    assert [(p.mirror_id, p.client_id, p.path) for p in report.problems] == [
        ("m1", "c1", "notes.txt")
    ]
    assert "does not match its hash" in report.problems[0].detail
    assert verify(targets[1], read_data=True).ok

    alone = restore(targets[:1], "c1", "latest", LocalRemote(), str(tmp_path / "r1"))
    assert alone.refused == ["notes.txt"]
    assert not (tmp_path / "r1" / "notes.txt").exists()
    both = restore(targets, "c1", "latest", LocalRemote(), str(tmp_path / "r2"))
    assert both.refused == [] and both.served_by["m2"] >= 1
    assert tree_state(tmp_path / "r2") == tree_state(src)


@pytest.mark.parametrize("evil", ["../../etc/passwd", "/etc/passwd", "a/../../x", "sub/./x"])
def test_restore_refuses_a_manifest_path_that_escapes(tmp_path: Path, evil: str) -> None:
    target = local_target(tmp_path, "m1")
    ensure_repository(target, app_server="app1")
    repo = Repository.open(target.remote, target.repo_path, "m1", None)
    entries = [
        Entry("sub", EntryType.DIR, 0o755, 0),
        Entry(evil, EntryType.FILE, 0o644, 0, 0, None, ()),
    ]
    write_v1_manifest(repo, Manifest("c1", "2026-11-30T05-00-00Z", "app1", entries))
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeInputError, match="restore refused"):
        restore([target], "c1", "latest", LocalRemote(), str(dest))
    assert not dest.exists() or not any(dest.rglob("*"))


def test_restore_refuses_writing_through_a_symlink_it_made(tmp_path: Path) -> None:
    target = local_target(tmp_path, "m1")
    ensure_repository(target, app_server="app1")
    repo = Repository.open(target.remote, target.repo_path, "m1", None)
    entries = [
        Entry("etc", EntryType.SYMLINK, 0o777, 0, target="/etc"),
        Entry("etc/passwd", EntryType.FILE, 0o644, 0),
    ]
    write_v1_manifest(repo, Manifest("c1", "2026-11-30T05-00-00Z", "app1", entries))
    with pytest.raises(UnsafeInputError, match="parent is not a directory"):
        restore([target], "c1", "latest", LocalRemote(), str(tmp_path / "dest"))


@pytest.mark.parametrize("client_id", ["../x", "a/b", "x; rm -rf /", "", "A", ".."])
def test_hostile_client_ids_are_refused_before_any_path(tmp_path: Path, client_id: str) -> None:
    target = local_target(tmp_path, "m1")
    with pytest.raises(UnsafeInputError):
        snapshot_server(
            LocalRemote(), "app1", [ClientSource(client_id, str(tmp_path))], [target], taken_at=T0
        )
    with pytest.raises(UnsafeInputError):
        restore([target], client_id, "latest", LocalRemote(), str(tmp_path / "d"))
    with pytest.raises(UnsafeInputError):
        list_snapshots(target, client_id)
    assert not (tmp_path / "m1").exists()


def test_encrypted_repository_needs_its_key(tmp_path: Path) -> None:
    src = _client(tmp_path, files=1)
    target = local_target(tmp_path, "m1")
    key = os.urandom(32)
    snapshot_server(
        LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], key=key, taken_at=T0
    )
    config = json.loads(Path(target.repo_path, "config.json").read_text())
    assert config["encryption"]["algorithm"] == "AES-256-GCM" and key.hex() not in str(config)
    manifest = next(Path(target.repo_path, "snapshots").rglob("*.json.zst.enc")).read_bytes()
    assert b"notes.txt" not in manifest and not manifest.startswith(b"\x28\xb5\x2f\xfd")
    for wrong in (None, os.urandom(32)):
        with pytest.raises(WrongKeyError) as err:
            restore([target], "c1", "latest", LocalRemote(), str(tmp_path / "d"), key=wrong)
        assert isinstance(err.value, PermanentError)
        with pytest.raises(WrongKeyError):
            verify(target, key=wrong)
    with pytest.raises(WrongKeyError):
        ensure_repository(local_target(tmp_path, "m1"), app_server="app1")
    plain = local_target(tmp_path, "m2")
    ensure_repository(plain, app_server="app1")
    with pytest.raises(WrongKeyError, match="not encrypted"):
        list_snapshots(plain, key=key)


def test_prune_keeps_what_the_policy_says_and_verify_passes(tmp_path: Path) -> None:
    src = _client(tmp_path, files=2)
    target = local_target(tmp_path, "m1")
    taken = [T0 + timedelta(minutes=20 * i) for i in range(9)]  # 05:00 .. 07:40
    for i, at in enumerate(taken):
        (src / f"new{i}.bin").write_bytes(os.urandom(50_000))
        snapshot_server(
            LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], taken_at=at
        )
        (src / f"new{i}.bin").unlink()
    result = prune(target, keep_last=2, keep_hourly=2, keep_daily=0, keep_weekly=0, now=taken[-1])
    left = [s.snapshot_id for s in list_snapshots(target, "c1")]
    # last 2 (07:20, 07:40) plus the newest of the 2 newest hours (07:40, 06:40)
    assert left == ["2026-11-30T06-40-00Z", "2026-11-30T07-20-00Z", "2026-11-30T07-40-00Z"]
    assert len(result.removed_snapshots) == 6 and result.removed_packs >= 1
    assert result.freed_bytes > 0
    assert verify(target, read_data=True).ok
    out = restore([target], "c1", "2026-11-30T06-40-00Z", LocalRemote(), str(tmp_path / "r"))
    assert out.refused == [] and (tmp_path / "r" / "new5.bin").stat().st_size == 50_000


def test_lock_blocks_a_second_writer_and_stale_locks_are_taken_over(tmp_path: Path) -> None:
    src = _client(tmp_path, files=1)
    target = local_target(tmp_path, "m1")
    ensure_repository(target, app_server="app1")
    with RepositoryLock(target.remote, target.repo_path, "snapshot"):
        with pytest.raises(RepositoryLocked):
            RepositoryLock(target.remote, target.repo_path, "prune").acquire()
        result = snapshot_server(
            LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], taken_at=T0
        )
        assert not result[0].per_mirror["m1"].ok
        assert "locked by" in (result[0].per_mirror["m1"].error or "")
    # A lock left by a process on another host, not refreshed for an hour: stale.
    lock_file = Path(target.repo_path, "locks", "lock")
    lock_file.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": time.time() - 3600}))
    assert (
        snapshot_server(
            LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], taken_at=T0
        )[0]
        .per_mirror["m1"]
        .ok
    )
    # A fresh lock of a live process elsewhere is respected.
    lock_file.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": time.time()}))
    with pytest.raises(RepositoryLocked):
        prune(target)


def test_one_failing_mirror_does_not_stop_the_other(tmp_path: Path) -> None:
    src = _client(tmp_path, files=2)
    good = local_target(tmp_path, "m1")
    bad = local_target(tmp_path, "m2")
    snapshot_server(LocalRemote(), "app1", [ClientSource("c1", str(src))], [good, bad], taken_at=T0)
    (src / "more.bin").write_bytes(os.urandom(300_000))
    packs = Path(bad.repo_path, "packs")
    packs.rename(packs.with_name("packs.away"))
    packs.write_text("not a directory: every pack upload fails")  # works as root too
    try:
        res = snapshot_server(
            LocalRemote(),
            "app1",
            [ClientSource("c1", str(src))],
            [good, bad],
            taken_at=T0 + timedelta(hours=1),
        )[0]
    finally:
        packs.unlink()
        packs.with_name("packs.away").rename(packs)
    assert res.per_mirror["m1"].ok and res.per_mirror["m1"].snapshot_written
    assert not res.per_mirror["m2"].ok and res.per_mirror["m2"].error
    assert [s.snapshot_id for s in list_snapshots(bad, "c1")] == ["2026-11-30T05-00-00Z"]
    assert verify(bad, read_data=True).ok
