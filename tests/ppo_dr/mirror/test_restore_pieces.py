"""The pure parts of a restore into a server: holes, tar members, hard-link groups."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from ppo_dr.mirror.hard_links import find_command, mark_hard_links, parse_find_output
from ppo_dr.mirror.manifest import Entry
from ppo_dr.mirror.restore_remote import streamed_member
from ppo_dr.mirror.tar_stream import (
    END_OF_ARCHIVE,
    HOLE_MIN,
    batched,
    chunk_regions,
    data_regions,
    dense_header,
    file_member,
)
from ppo_dr.transport.base import EntryType

Z = bytes(HOLE_MIN)


@pytest.mark.parametrize(
    ("data", "regions"),
    [
        (b"", [(0, 0)]),
        (b"abc", [(0, 3)]),
        (b"a" * 10_000, [(0, 10_000)]),
        (Z, [(HOLE_MIN, 0)]),  # all hole: one empty region at the end
        (Z + b"x", [(HOLE_MIN, 1)]),
        (b"x" + Z, [(0, 1 + HOLE_MIN)]),  # the zero run is not block-aligned: data
        (b"x" * HOLE_MIN + Z * 3 + b"y", [(0, HOLE_MIN), (4 * HOLE_MIN, 1)]),
        (b"x" * HOLE_MIN + Z * 2, [(0, HOLE_MIN), (3 * HOLE_MIN, 0)]),
        (Z + b"x" * HOLE_MIN + Z, [(HOLE_MIN, HOLE_MIN), (3 * HOLE_MIN, 0)]),
    ],
)
def test_holes_are_whole_zero_blocks(data: bytes, regions: list[tuple[int, int]]) -> None:
    assert data_regions(data) == regions


K = HOLE_MIN


@pytest.mark.parametrize(
    ("lengths", "holes", "regions"),
    [
        ([], [], [(0, 0)]),
        ([5], [False], [(0, 5)]),
        ([K], [True], [(K, 0)]),
        ([5], [True], [(0, 5)]),  # zeros, but no whole block: data
        ([3 * K, 4 * K, 5], [False, False, False], [(0, 7 * K + 5)]),
        ([3 * K, 4 * K, 5], [False, True, False], [(0, 3 * K), (7 * K, 5)]),
        ([3 * K, 4 * K, 5], [True, True, False], [(7 * K, 5)]),
        ([3 * K, 4 * K, 5], [False, True, True], [(0, 3 * K), (7 * K, 5)]),
        ([3 * K, 4 * K], [False, True], [(0, 3 * K), (7 * K, 0)]),  # ends in a hole
        # a hole chunk off the block grid: only its whole blocks are left out
        ([100, 3 * K, K - 100, 7], [False, True, False, False], [(0, K), (3 * K, K + 7)]),
        ([100, 2 * K - 100, 5], [False, True, False], [(0, K), (2 * K, 5)]),
    ],
)
def test_chunk_regions_merge_data_chunks_and_end_the_file(
    lengths: list[int], holes: list[bool], regions: list[tuple[int, int]]
) -> None:
    assert chunk_regions(lengths, holes) == regions


@pytest.mark.parametrize(
    "chunks",
    [
        [b"a" * 100, bytes(3 * K), b"b" * (K - 100), b"c" * 7],
        [bytes(2 * K), b"x" * 10, bytes(K + 5)],
        [b"d" * K, bytes(5 * K)],
    ],
)
def test_a_streamed_sparse_member_reads_back_as_the_same_bytes(chunks: list[bytes]) -> None:
    blobs = {f"id{i}": chunk for i, chunk in enumerate(chunks)}
    data = b"".join(chunks)
    entry = Entry("big", EntryType.FILE, 0o600, 1_700_000_000, len(data), chunks=tuple(blobs))
    plan = ([len(c) for c in chunks], [not any(c) for c in chunks])
    member, pieces = streamed_member(entry, blobs.get, plan), []
    with pytest.raises(StopIteration) as end:
        while True:
            pieces.append(next(member))
    assert end.value.value is True  # every chunk was served
    stream = b"".join([*pieces, END_OF_ARCHIVE])
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        (info,) = archive.getmembers()
        assert info.sparse is not None  # the lab's receiver (tarfile) writes the holes
        extracted = archive.extractfile(info)
        assert extracted is not None and extracted.read() == data


@pytest.mark.parametrize(
    "pieces",
    [[b""], [b"abc"], [Z, b"x" * 5000, Z + Z], [b"q" * 100, Z * 3], [os.urandom(9000)]],
)
def test_file_members_read_back_as_the_same_bytes(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    entry = Entry("dir/ä \udcff", EntryType.FILE, 0o640, 1_700_000_000, len(data))
    stream = b"".join(batched(iter([*file_member(entry, pieces), END_OF_ARCHIVE]), 1000))
    with tarfile.open(fileobj=io.BytesIO(stream), errors="surrogateescape") as archive:
        (member,) = archive.getmembers()
        assert (member.name, member.size, member.mode) == (entry.path, len(data), 0o640)
        assert member.sparse is None or len(member.sparse) > 1 or not data
        extracted = archive.extractfile(member)
        assert extracted is not None and extracted.read() == data


def test_find_output_names_are_raw_bytes_and_odd_records_are_skipped() -> None:
    out = b"2049 17 a/b\x002049 17 c\nd\x002049 18 \xff\xfe\x00garbage\x002049 x y\x00"
    assert parse_find_output(out) == {
        "a/b": "2049:17",
        "c\nd": "2049:17",
        os.fsdecode(b"\xff\xfe"): "2049:18",
    }
    assert find_command("/srv/c 1")[1] == "/srv/c 1"


def test_later_names_of_an_inode_link_to_the_first() -> None:
    entries = [
        Entry("a", EntryType.FILE, 0o644, 1, 3, chunks=("c1",)),
        Entry("d", EntryType.DIR, 0o755, 1),
        Entry("d/b", EntryType.FILE, 0o644, 1, 3, chunks=("c1",)),
        Entry("d/c", EntryType.FILE, 0o644, 1, 3, chunks=("c1",)),
        Entry("e", EntryType.FILE, 0o644, 1, 3, chunks=("c2",)),
    ]
    groups = {"a": "1:5", "d/b": "1:5", "d/c": "1:5", "e": "1:6"}
    marked = mark_hard_links(entries, groups)
    assert [e.link for e in marked] == [None, None, "a", "a", None]
    assert [e.chunks for e in marked] == [e.chunks for e in entries]  # copies stay possible
    assert mark_hard_links(entries, {}) == entries


@pytest.mark.parametrize(
    ("name", "mode", "size", "mtime"),
    [
        ("a", 0o644, 0, 0),
        ("dir/file with space\nand newline", 0o2755, 12345, 1_700_000_000),
        ("x" * 100, 0o4000, 8**11 - 1, 8**11 - 1),
        ("x" * 101, 0o644, 1, 1),  # too long for ustar: pax
        ("ünï", 0o644, 1, 1),  # not ASCII: pax
        ("old", 0o644, 1, -5),  # before 1970: pax
        ("huge", 0o644, 8**11, 1),  # 8 GiB: pax
    ],
)
def test_file_headers_are_what_tarfile_writes(name: str, mode: int, size: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.size, info.mtime = mode, size, mtime
    info.uname = info.gname = ""
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert dense_header(Entry(name, EntryType.FILE, mode, mtime, size), size) == expected
