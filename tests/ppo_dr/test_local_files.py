"""The local atomic writers: old content or new, never half, and no temporary file left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ppo_dr.local_files import replace_with, write_atomically


def test_replaces_the_file_with_the_mode_asked(tmp_path: Path) -> None:
    final = tmp_path / "known_hosts"
    final.write_bytes(b"old\n")
    replace_with(final, tmp_path / ".known_hosts.tmp", b"new\n", mode=0o600)
    assert final.read_bytes() == b"new\n"
    assert stat.S_IMODE(final.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["known_hosts"]


def test_exclusive_refuses_a_temporary_name_in_use_and_keeps_the_old_file(
    tmp_path: Path,
) -> None:
    final = tmp_path / "key"
    final.write_bytes(b"old")
    temp = tmp_path / ".key.tmp"
    temp.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        replace_with(final, temp, b"new")
    assert final.read_bytes() == b"old"
    assert temp.read_bytes() == b"someone else's"


def test_not_exclusive_truncates_a_stale_temporary_file(tmp_path: Path) -> None:
    final = tmp_path / "journal.dump"
    temp = tmp_path / ".journal.dump.tmp"
    temp.write_bytes(b"a longer stale dump from a run that died\n")
    replace_with(final, temp, b"1\n", exclusive=False)
    assert final.read_bytes() == b"1\n"
    assert not temp.exists()


def test_a_failed_rename_removes_the_temporary_file(tmp_path: Path) -> None:
    final = tmp_path / "taken"
    final.mkdir()
    (final / "inside").write_bytes(b"x")  # a non-empty directory cannot be replaced
    temp = tmp_path / ".taken.tmp"
    with pytest.raises(OSError):
        replace_with(final, temp, b"data")
    assert not temp.exists()
    assert (final / "inside").read_bytes() == b"x"


@pytest.mark.parametrize("mode", [0o600, 0o644])
@pytest.mark.parametrize("fsync", [False, True])
def test_write_atomically_gives_exactly_the_mode_asked_whatever_the_umask(
    tmp_path: Path, mode: int, fsync: bool
) -> None:
    final = tmp_path / "fleet.yaml"
    final.write_bytes(b"old\n")
    previous = os.umask(0o077)  # would strip 0o644 to 0o600 if the mode came from the umask
    try:
        write_atomically(final, b"new\n", mode=mode, fsync=fsync)
    finally:
        os.umask(previous)
    assert final.read_bytes() == b"new\n"
    assert stat.S_IMODE(final.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.yaml"]


def test_write_atomically_leaves_the_old_content_and_no_temporary_file_on_failure(
    tmp_path: Path,
) -> None:
    final = tmp_path / "taken"
    final.mkdir()
    (final / "inside").write_bytes(b"x")  # a non-empty directory cannot be replaced
    with pytest.raises(OSError):
        write_atomically(final, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert (final / "inside").read_bytes() == b"x"
