"""The lab's tar receiver on its own: what it writes, and every way out it refuses."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ppo_dr.errors import UnsafeInputError
from ppo_dr.lab.tar_receiver import StdinReader, extract
from ppo_dr.mirror.manifest import Entry
from ppo_dr.mirror.tar_stream import END_OF_ARCHIVE, file_member, metadata_member
from ppo_dr.transport.base import EntryType


def _reader(data: bytes) -> StdinReader:
    stream = io.BytesIO(data)
    return StdinReader(lambda size: stream.read(min(size, 1000)))  # short reads, as SSH gives


def _member(name: str, kind: str = "file", link: str = "", data: bytes = b"x") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}[kind]
    info.linkname = link
    info.size = len(data) if kind == "file" else 0
    body = data + b"\0" * (-len(data) % 512) if kind == "file" else b""
    return info.tobuf(tarfile.PAX_FORMAT) + body


def test_what_a_restore_sends_lands_with_its_metadata(tmp_path: Path) -> None:
    data = os.urandom(5000) + bytes(3 * 4096) + b"end"
    stream = b"".join(
        [
            *file_member(Entry("d/f\udcff", EntryType.FILE, 0o2755, -100, len(data)), [data]),
            metadata_member(Entry("d/ln", EntryType.SYMLINK, 0o777, 1_600_000_000, target="..")),
            metadata_member(Entry("d/empty", EntryType.DIR, 0o1777, 1_500_000_000)),
            metadata_member(Entry("d", EntryType.DIR, 0o555, 1_400_000_000)),
            metadata_member(Entry("", EntryType.DIR, 0o750, 1_300_000_000)),
            END_OF_ARCHIVE,
        ]
    )
    assert extract(_reader(stream), tmp_path) == 5
    f = tmp_path / os.fsdecode(b"d/f\xff")
    assert f.read_bytes() == data and f.stat().st_mtime == -100
    assert oct(f.stat().st_mode & 0o7777) == oct(0o2755)
    assert os.lstat(tmp_path / "d/ln").st_mtime == 1_600_000_000
    assert (tmp_path / "d/empty").stat().st_mode & 0o7777 == 0o1777
    assert (tmp_path / "d").stat().st_mtime == 1_400_000_000
    assert tmp_path.stat().st_mtime == 1_300_000_000 and tmp_path.stat().st_mode & 0o777 == 0o750
    (tmp_path / "d").chmod(0o755)


@pytest.mark.parametrize(
    "make_stream",
    [
        lambda: _member("../escaped"),
        lambda: _member("/abs/escaped"),
        lambda: _member("a/../../escaped"),
        lambda: _member("out", "sym", "..") + _member("out/escaped"),
        lambda: _member("pw", "hard", "../outside/victim"),
        lambda: _member("ln", "sym", "../outside/victim") + _member("hl", "hard", "ln"),
    ],
    ids=["dotdot", "absolute", "inner-dotdot", "through-symlink", "hard-out", "hard-to-link"],
)
def test_every_way_out_is_refused(tmp_path: Path, make_stream: Callable[[], bytes]) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim").write_bytes(b"untouched")
    with pytest.raises(UnsafeInputError, match="refused"):
        extract(_reader(make_stream() + END_OF_ARCHIVE), root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "root"]
    assert [p.name for p in outside.iterdir()] == ["victim"]
    assert (outside / "victim").read_bytes() == b"untouched"
    assert (outside / "victim").stat().st_nlink == 1


def test_an_existing_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    root, victim = tmp_path / "root", tmp_path / "victim"
    root.mkdir()
    victim.write_bytes(b"untouched")
    (root / "f").symlink_to(victim)
    extract(_reader(_member("f", data=b"new") + END_OF_ARCHIVE), root)
    assert victim.read_bytes() == b"untouched"
    assert not (root / "f").is_symlink() and (root / "f").read_bytes() == b"new"
