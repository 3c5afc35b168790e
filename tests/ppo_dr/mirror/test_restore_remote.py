"""Restore into OpenSSH sshd over tar streams: exact metadata, staging, resume, refusals."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from ppo_dr.errors import DRError, TransientError
from ppo_dr.mirror.api import ClientSource, MirrorTarget, ensure_repository, restore
from ppo_dr.mirror.api import snapshot_server as snapshot
from ppo_dr.mirror.repository import Repository
from ppo_dr.mirror.restore_remote import staging_path
from ppo_dr.pids import proc_files
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
T = TypeVar("T")


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


def _client_data(tmp_path: Path, files: int = 0, size: int = 0) -> Path:
    """Client c1's data directory under *tmp_path*, holding *files* random files
    ``f0``, ``f1``, ... of *size* bytes each."""
    src = tmp_path / "app" / "c1"
    src.mkdir(parents=True)
    for i in range(files):
        (src / f"f{i}").write_bytes(os.urandom(size))
    return src


def _mirror(tmp_path: Path, src: Path, mirror_id: str = "m1") -> tuple[MirrorTarget, str]:
    target = local_target(tmp_path, mirror_id)
    ensure_repository(target, app_server="app1")
    result = snapshot(LocalRemote(), "app1", [ClientSource("c1", str(src))], [target], taken_at=T0)
    assert result[0].per_mirror[mirror_id].ok
    return target, result[0].snapshot_id


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
@pytest.mark.parametrize(("processes", "client"), [(0, "openssh"), (2, "openssh"), (0, "paramiko")])
def test_restore_into_sshd_is_exact(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path, processes: int, client: str
) -> None:
    if client == "paramiko":
        dest.endpoint = None  # how ssh would reach it unknown: streams go over paramiko
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


def test_a_big_sparse_file_lands_sparse_and_its_holes_are_not_read(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path
) -> None:
    src = _client_data(tmp_path)
    big = src / "disk.img"  # over BUFFERED_FILE_BYTES: streamed as it is read
    head, tail = os.urandom(1 << 20), os.urandom(300_000)
    with big.open("wb") as f:
        f.write(head)
        f.seek(70 << 20)
        f.write(tail)
        f.truncate(80 << 20)  # ends in a hole as well
    target, sid = _mirror(tmp_path, src)
    out = sshd.data_root / tmp_path.name / "c1"
    result = restore([target], "c1", sid, dest, str(out), processes=0)
    assert result.refused == [] and result.files == 1
    assert result.served_by["m1"] < 10  # 80 MiB in 2 MiB chunks: only the data was read
    st = (out / "disk.img").stat()
    assert st.st_size == 80 << 20 and st.st_blocks * 512 < 8 << 20
    assert itemised_differences(src, out) == []


def test_refused_file_leaves_the_destination_untouched_and_the_rerun_resumes(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path
) -> None:
    src = _client_data(tmp_path, files=5, size=50_000)
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
        ("../c1", "latest", "ROOT/x"),
        ("c1", "2026-13-99", "ROOT/x"),
        ("c1", "latest", "relative/x"),
        ("c1", "latest", "ROOT/../etc"),
        ("c1", "2020-01-01T00-00-00Z", "ROOT/x"),  # well-formed, does not exist
        ("c1", "latest", "OUT/x"),  # outside the data root
        ("c1", "latest", "ROOT"),  # the data root itself: staging would be outside
        ("c1", "latest", "ROOTx/c1"),  # a sibling sharing its prefix
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path, client: str, snapshot_id: str, dest_path: str
) -> None:
    src = _client_data(tmp_path)
    (src / "f").write_bytes(b"x")
    target, _ = _mirror(tmp_path, src)
    base = sshd.data_root / tmp_path.name  # all inside the sshd's tree, to see any write
    root = base / "root"
    root.mkdir(parents=True)
    dest_path = dest_path.replace("ROOT", str(root)).replace("OUT", str(base / "out"))
    before = sorted(sshd.data_root.rglob("*"))
    with pytest.raises(DRError) as caught:
        restore([target], client, snapshot_id, dest, dest_path, data_root=str(root))
    assert "refused" in str(caught.value) or "not readable" in str(caught.value)
    assert sorted(sshd.data_root.rglob("*")) == before


def test_a_failed_stream_switches_nothing_and_the_rerun_sends_only_what_is_missing(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path
) -> None:
    src = _client_data(tmp_path, files=6, size=20_000)
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


def _parent_of(pid: int) -> int:
    stat_line = Path(f"/proc/{pid}/stat").read_bytes()
    return int(stat_line.rsplit(b")", 1)[1].split()[1])


def _receiver(sshd: SshdServer, staging: Path) -> int | None:
    """The pid of the ``tar -x`` extracting into *staging* under this sshd, if running."""
    wanted = f"--directory={staging}".encode()
    for pid, cmdline in proc_files("cmdline"):
        argv = cmdline.split(b"\0")
        if argv[0].endswith(b"tar") and wanted in argv:
            ancestor = pid
            while ancestor > 1:
                ancestor = _parent_of(ancestor)
                if ancestor == sshd.pid:
                    return pid
    return None


def _complete(staging: Path, src: Path) -> dict[str, tuple[int, int]]:
    """Files in *staging* with their source's size and mtime: (inode, ctime) by name."""
    done = {}
    for path in staging.rglob("*"):
        st, want = path.stat(), (src / path.relative_to(staging)).stat()
        if path.is_file() and (st.st_size, st.st_mtime) == (want.st_size, want.st_mtime):
            done[str(path.relative_to(staging))] = (st.st_ino, st.st_ctime_ns)
    return done


def _wait_for(what: Callable[[], T | None], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while (found := what()) is None or found is False:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


def test_a_connection_killed_mid_stream_keeps_the_verified_files_and_switches_nothing(
    sshd: SshdServer, dest: SshRemote, tmp_path: Path
) -> None:
    src = tmp_path / "app" / "c1"
    for i in range(64):
        path = src / f"d{i % 4}" / f"f{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1 << 20))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))  # whole seconds, as recorded
    target, sid = _mirror(tmp_path, src)
    out = sshd.data_root / tmp_path.name / "c1"
    out.mkdir(parents=True)
    (out / "previous").write_bytes(b"what was there")
    staging = Path(staging_path(str(out), sid))
    failed: list[BaseException] = []

    def first_run() -> None:
        try:
            restore([target], "c1", sid, dest, str(out), processes=0)
        except BaseException as exc:
            failed.append(exc)

    runner = threading.Thread(target=first_run)
    runner.start()
    tar = _wait_for(lambda: _receiver(sshd, staging))
    os.kill(tar, signal.SIGSTOP)  # hold the stream; let it on in steps until files land
    while len(_complete(staging, src)) < 5:
        os.kill(tar, signal.SIGCONT)
        time.sleep(0.005)
        os.kill(tar, signal.SIGSTOP)
    chain, pid = [], _parent_of(tar)
    while pid != sshd.pid:  # the sshd processes serving this connection, not the daemon
        chain.append(pid)
        pid = _parent_of(pid)
    for pid in [*chain, tar]:
        os.kill(pid, signal.SIGKILL)
    runner.join(60)

    assert len(failed) == 1 and isinstance(failed[0], TransientError), failed
    assert sorted(p.name for p in out.iterdir()) == ["previous"]  # nothing switched in
    verified = _complete(staging, src)
    assert 5 <= len(verified) < 64
    second = restore([target], "c1", sid, dest, str(out), processes=0)
    assert second.refused == [] and second.files == 64
    for name, (inode, ctime) in verified.items():  # neither rewritten nor touched
        st = (out / name).stat()
        assert (st.st_ino, st.st_ctime_ns) == (inode, ctime), name
    assert itemised_differences(src, out) == []
    assert not staging.exists()
