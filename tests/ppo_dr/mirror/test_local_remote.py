"""LocalRemote keeps the Remote contract (lives here: the mirror is its first user)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ppo_dr.errors import RemotePathError, TransientError, UnsafeInputError
from ppo_dr.transport import EntryType, LocalRemote, is_temp_name


def test_stat_and_walk_never_follow_symlinks(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "name with\nnewline").write_bytes(b"abc")
    (tmp_path / "link").symlink_to("/etc")
    remote = LocalRemote()
    st = remote.stat(str(tmp_path / "link"))
    assert st is not None and st.type is EntryType.SYMLINK and st.link_target == "/etc"
    walked = {s.path: s.type for s in remote.walk(str(tmp_path))}
    assert walked == {
        "d": EntryType.DIR,
        "d/name with\nnewline": EntryType.FILE,
        "link": EntryType.SYMLINK,
    }
    assert remote.stat(str(tmp_path / "missing")) is None


def test_writes_are_atomic_and_rename_never_clobbers(tmp_path: Path) -> None:
    remote = LocalRemote()
    target = str(tmp_path / "f")
    remote.write_bytes(target, b"old")
    with pytest.raises(RuntimeError), remote.open_write(target, 0o600) as writer:
        writer.write(b"half")
        raise RuntimeError("interrupted")
    assert Path(target).read_bytes() == b"old"
    assert not [p for p in tmp_path.iterdir() if is_temp_name(p.name)]
    remote.write_bytes(target, b"new", 0o640)
    assert Path(target).read_bytes() == b"new" and Path(target).stat().st_mode & 0o777 == 0o640
    remote.write_bytes(str(tmp_path / "g"), b"g")
    with pytest.raises(RemotePathError):
        remote.rename(str(tmp_path / "g"), target)
    assert Path(target).read_bytes() == b"new"


def test_root_confines_paths(tmp_path: Path) -> None:
    remote = LocalRemote(str(tmp_path))
    remote.mkdir_p("/repos/app1")
    remote.write_bytes("/repos/app1/x", b"x")
    assert (tmp_path / "repos" / "app1" / "x").read_bytes() == b"x"
    remote.write_bytes("/../../escape", b"e")  # '..' cannot climb above the root
    assert (tmp_path / "escape").exists()
    with pytest.raises(UnsafeInputError):
        remote.stat("/a\x00b")


def test_exec_runs_argv_without_a_shell_and_times_out(tmp_path: Path) -> None:
    remote = LocalRemote()
    result = remote.exec(["echo", "a; touch x"], timeout=5)
    assert result.ok and result.stdout == b"a; touch x\n"
    with pytest.raises(UnsafeInputError):
        remote.exec("echo hi", timeout=5)  # type: ignore[arg-type]
    with pytest.raises(TransientError):
        remote.exec(["sleep", "5"], timeout=0.2)


def test_read_range_and_whole_file_helpers(tmp_path: Path) -> None:
    remote = LocalRemote(str(tmp_path))
    data = os.urandom(100_000)
    remote.write_bytes("/f", data, 0o600)
    assert remote.read_bytes("/f") == data
    assert remote.read_range("/f", 10, 20) == data[10:30]
    assert remote.read_range("/f", 99_990, 100) == data[99_990:]
    assert remote.read_range("/f", 200_000, 1) == b""
    with pytest.raises(UnsafeInputError):
        remote.read_range("/f", 0, -1)
    with pytest.raises(RemotePathError):
        remote.read_range("/missing", 0, 1)
