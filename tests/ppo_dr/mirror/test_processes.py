"""The process paths: uploads and restores by separate processes, each with its own
connection (``MirrorTarget.connect``), give the same results as the thread paths,
fall back the same way, and leave no process behind."""

from __future__ import annotations

import functools
import multiprocessing
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ppo_dr.errors import TransientError
from ppo_dr.mirror import sink as sink_module
from ppo_dr.mirror.api import ClientSource, MirrorTarget, restore, snapshot_server, verify
from ppo_dr.mirror.repository import Repository
from ppo_dr.mirror.restore import PROCESS_MIN_BYTES
from ppo_dr.transport import LocalRemote, Remote
from ppo_dr.transport.ssh import SshRemote
from tests.ppo_dr.mirror.helpers import T0, count_index_reads, tree_state
from tests.sshd import SshdServer

HOUR = timedelta(hours=1)


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


def _connect_and_note(note_dir: str, sshd: SshdServer) -> Remote:
    """A worker's destination factory: opens its own SSH connection, and leaves a
    note naming its process, so the test sees the worker processes really ran."""
    (Path(note_dir) / f"worker-{os.getpid()}").touch()
    return SshRemote.connect(
        sshd.host, sshd.port, sshd.user, sshd.client_key, sshd.known_hosts, timeout=10.0
    )


def test_a_large_restore_to_a_server_over_ssh_runs_in_two_processes(
    sshd: SshdServer, tmp_path: Path
) -> None:
    """Above PROCESS_MIN_BYTES, with ``dest_connect``, restore picks the process path on
    its own: two workers, each with its own SSH connection to the destination server."""
    src = _tree(tmp_path)
    for i in range(8):  # ~72 MB in all: big files, half of them compressible
        data = os.urandom(9_000_000) if i % 2 else (b"log line %d\n" % i) * 900_000
        (src / "d1" / f"big{i}.dat").write_bytes(data[:9_000_000])
        (src / "d1" / f"big{i}.dat").chmod(0o600 + 0o40 * (i % 2))
        os.utime(src / "d1" / f"big{i}.dat", (1_700_000_000 + i, 1_700_000_000 + i))
    assert sum(p.stat().st_size for p in src.rglob("*") if p.is_file()) > PROCESS_MIN_BYTES
    targets = [_target(tmp_path, "m1"), _target(tmp_path, "m2")]
    snapshot_server(LocalRemote(), "app1", [ClientSource("c1", str(src))], targets, taken_at=T0)

    notes = tmp_path / "notes"
    notes.mkdir()
    dest_path = sshd.data_root / "restored-c1"
    with SshRemote.connect(
        sshd.host, sshd.port, sshd.user, sshd.client_key, sshd.known_hosts, timeout=10.0
    ) as dest:
        result = restore(
            targets,
            "c1",
            "latest",
            dest,
            str(dest_path),
            dest_connect=functools.partial(_connect_and_note, str(notes), sshd),
        )
    assert result.refused == [] and result.files == 58
    assert result.served_by["m1"] > 0 and result.served_by["m2"] == 0
    workers = {p.name for p in notes.iterdir()}
    assert len(workers) == 2 and f"worker-{os.getpid()}" not in workers
    assert tree_state(dest_path) == tree_state(src)  # bytes, modes, mtimes, links, empty dir
    assert multiprocessing.active_children() == []


def test_only_a_run_that_changed_something_starts_upload_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A no-op starts no process (the 5-minute cadence's common case); a run whose walk
    shows a changed directory starts one per mirror, early, and they all end."""
    src = _tree(tmp_path)
    targets = [_target(tmp_path, "m1"), _target(tmp_path, "m2")]
    client = [ClientSource("c1", str(src))]
    snapshot_server(LocalRemote(), "app1", client, targets, taken_at=T0)
    started: list[str] = []
    real = sink_module.UploadProcess

    def counting(*args: Any) -> Any:
        started.append(args[2])
        return real(*args)

    monkeypatch.setattr(sink_module, "UploadProcess", counting)
    [noop] = snapshot_server(LocalRemote(), "app1", client, targets, taken_at=T0 + HOUR)
    assert noop.files_changed == 0 and started == []
    (src / "d2" / "f5.txt").write_bytes(b"changed " * 5000)
    [changed] = snapshot_server(LocalRemote(), "app1", client, targets, taken_at=T0 + 2 * HOUR)
    assert changed.files_changed == 1 and sorted(started) == ["m1", "m2"]
    assert all(o.ok and o.new_chunks >= 1 for o in changed.per_mirror.values())
    assert all(verify(t).ok for t in targets)
    assert multiprocessing.active_children() == []


def test_index_files_the_upload_processes_wrote_are_merged_for_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPO_DR_INDEX_CACHE", str(tmp_path / "cache"))
    src = _tree(tmp_path)
    targets = [_target(tmp_path, "m1"), _target(tmp_path, "m2")]
    snapshot_server(LocalRemote(), "app1", [ClientSource("c1", str(src))], targets, taken_at=T0)
    parsed = count_index_reads(monkeypatch)
    for target in targets:
        repo = Repository.open(target.remote, target.repo_path, target.mirror_id, None)
        index = repo.load_index()
        assert len(index.files) >= 2 and parsed == []  # packs (by the child) and trees
        monkeypatch.setenv("PPO_DR_INDEX_CACHE", "off")
        off = Repository.open(target.remote, target.repo_path, target.mirror_id, None)
        assert off.load_index() == index
        monkeypatch.setenv("PPO_DR_INDEX_CACHE", str(tmp_path / "cache"))
        parsed.clear()
