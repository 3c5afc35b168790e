"""Restore into OpenSSH sshd over tar streams: exact metadata, staging, resume, refusals."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ppo_dr.errors import DRError
from ppo_dr.mirror.api import ClientSource, MirrorTarget, ensure_repository, restore
from ppo_dr.mirror.api import snapshot_server as snapshot
from ppo_dr.mirror.repository import Repository
from ppo_dr.mirror.restore_remote import staging_path
from ppo_dr.transport import LocalRemote
from ppo_dr.transport.ssh import SshRemote
from tests.ppo_dr.mirror.helpers import (
    T0,
    TOP_MTIME,
    inode_groups,
    itemised_differences,
    local_target,
    odd_tree,
)
from tests.sshd import SshdServer

pytestmark = pytest.mark.timeout(120)


def _connect(sshd: SshdServer) -> functools.partial[SshRemote]:
    return functools.partial(
        SshRemote.connect, sshd.host, sshd.port, sshd.user, sshd.client_key, sshd.known_hosts
    )


@pytest.fixture
def dest(sshd: SshdServer) -> Iterator[SshRemote]:
    with _connect(sshd)() as remote:
        yield remote


def _make_writable(path: Path) -> None:
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = Path(dirpath, name)
            if not full.is_symlink():
                full.chmod(0o755)
    shutil.rmtree(path, ignore_errors=True)


def _mirror(tmp_path: Path, src: Path, mirror_id: str = "m1") -> tuple[MirrorTarget, str]:
    target = local_target(tmp_path, mirror_id)
    ensure_repository(target, app_server="app1")
    result = snapshot(LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], taken_at=T0)
    assert result[0].per_mirror[mirror_id].ok
    return target, result[0].snapshot_id


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
@pytest.mark.parametrize("processes", [0, 2])
def test_restore_into_sshd_is_exact(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path, processes: int
) -> None:
    src = tmp_path / "app" / "c1"
    odd_tree(src)
    target, sid = _mirror(tmp_path, src)
    target = MirrorTarget(target.mirror_id, target.remote, target.repo_path, LocalRemote)
    out = sshd.data_root / tmp_path.name / "restored" / "c1"
    out.parent.mkdir(parents=True)
    try:
        result = restore(
            [target], "c1", sid, dest, str(out), processes=processes, dest_connect=_connect(sshd)
        )
        assert result.refused == [] and result.files == sum(
            1 for p in src.rglob("*") if p.is_file() and not p.is_symlink()
        )
        assert itemised_differences(src, out) == []
        assert inode_groups(out) == inode_groups(src) and len(inode_groups(src)) == 2
        assert os.lstat(out).st_mtime == TOP_MTIME  # the client's top directory too
        sparse = (out / "sparse.img").stat()
        assert sparse.st_blocks * 512 < 1 << 20 < sparse.st_size  # holes stayed holes
        assert stat.S_IMODE((out / "setgid").stat().st_mode) == 0o2775
        assert stat.S_IMODE((out / "sticky").stat().st_mode) == 0o1777
        assert not any(p.name.startswith(".ppo-") for p in out.parent.iterdir())
    finally:
        _make_writable(out.parent)


def test_refused_file_leaves_the_destination_untouched_and_the_rerun_resumes(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path
) -> None:
    src = tmp_path / "app" / "c1"
    src.mkdir(parents=True)
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(50_000))
    m1, _ = _mirror(tmp_path, src, "m1")
    m2, _ = _mirror(tmp_path, src, "m2")
    (src / "late").write_bytes(b"written after the first snapshot" * 100)
    later = T0 + timedelta(hours=1)
    results = snapshot(
        LocalRemote(), "app1", [ClientSource("c1", str(src))], [m1, m2], taken_at=later
    )
    sid = results[0].snapshot_id
    repo = Repository.open(m1.remote, m1.repo_path, "m1", None)
    late = repo.load_index().blobs[hashlib.sha256((src / "late").read_bytes()).hexdigest()]
    pack = Path(repo.pack_path(late.pack_id))
    pack.write_bytes(b"\0" * pack.stat().st_size)  # the pack holding "late", on m1 only

    out = sshd.data_root / tmp_path.name / "c1"
    out.mkdir(parents=True)
    (out / "previous").write_bytes(b"what was there")
    first = restore([m1], "c1", sid, dest, str(out))
    assert first.refused == ["late"] and first.damaged == ["late"]
    assert sorted(p.name for p in out.iterdir()) == ["previous"]  # untouched
    staged = Path(staging_path(str(out), sid))
    inode = (staged / "f3").stat().st_ino

    second = restore([m1, m2], "c1", sid, dest, str(out))
    assert second.refused == [] and second.files == 6
    assert second.served_by["m2"] == 1  # only the missing file was fetched again
    assert (out / "f3").stat().st_ino == inode  # not rewritten
    assert (out / "late").read_bytes() == (src / "late").read_bytes()
    assert not staged.exists()
    aside = [p for p in out.parent.iterdir() if p.name.startswith(".ppo-replaced-c1-")]
    assert [p.name for p in aside[0].iterdir()] == ["previous"]  # moved aside, not deleted


@pytest.mark.parametrize(
    ("client", "snapshot_id", "dest_path"),
    [
        ("../c1", "latest", "/srv/x"),
        ("c1", "2026-13-99", "/srv/x"),
        ("c1", "latest", "relative/x"),
        ("c1", "latest", "/srv/../etc"),
        ("c1", "2020-01-01T00-00-00Z", "/srv/x"),  # well-formed, does not exist
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path, client: str, snapshot_id: str, dest_path: str
) -> None:
    src = tmp_path / "app" / "c1"
    src.mkdir(parents=True)
    (src / "f").write_bytes(b"x")
    target, _ = _mirror(tmp_path, src)
    before = sorted(sshd.data_root.rglob("*"))
    with pytest.raises(DRError) as caught:
        restore([target], client, snapshot_id, dest, dest_path)
    assert "refused" in str(caught.value) or "not readable" in str(caught.value)
    assert sorted(sshd.data_root.rglob("*")) == before


def test_a_failed_stream_switches_nothing_and_the_rerun_sends_only_what_is_missing(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path
) -> None:
    src = tmp_path / "app" / "c1"
    src.mkdir(parents=True)
    for i in range(6):
        (src / f"f{i}").write_bytes(os.urandom(20_000))
    target, sid = _mirror(tmp_path, src)
    out = sshd.data_root / tmp_path.name / "c1"
    staged = Path(staging_path(str(out), sid))
    (staged / "f4" / "in-the-way").mkdir(parents=True)  # tar -x cannot write f4

    with pytest.raises(DRError, match="tar -x"):
        restore([target], "c1", sid, dest, str(out))
    assert not out.exists()  # nothing half-written in place
    inodes = {p.name: p.stat().st_ino for p in staged.iterdir() if p.is_file()}
    assert sorted(inodes) == ["f0", "f1", "f2", "f3", "f5"]

    (staged / "f4" / "in-the-way").rmdir()
    (staged / "f4").rmdir()
    again = restore([target], "c1", sid, dest, str(out))
    assert again.refused == [] and again.served_by["m1"] == 1  # only f4's blob was read
    assert {p.name: p.stat().st_ino for p in out.iterdir() if p.name != "f4"} == inodes
    assert itemised_differences(src, out) == []
