"""Which blob is where: a repository's index files, parsed, merged, and kept parsed.

An index file (docs/repository.md, "Index files") is zstd-compressed JSON listing
packs and the blobs inside them; the repository's index is the union of all of them
(:class:`Index`). Since every run adds an index file, a run used to decompress and
parse every earlier one (~27 files, ~47,000 rows per mirror on a 42,000-file client,
about a tenth of an incremental run), and to build an object per blob, although a
snapshot only needs to know which blobs a mirror has and the plaintext length of
each (:meth:`IndexColumns.known`).

:class:`IndexColumns` holds parsed index files column by column (ids as raw bytes,
numbers in arrays), one segment per file, so it is stored and loaded with a few
``bytes`` copies and no JSON: the **merged cache**, one file per repository beside
the kept index files (``ppo_dr.mirror.index_cache``). Why it is safe: an index file
never changes (its name is the hash of its bytes), so the segment of a file name is
right for as long as the mirror lists that name; a load keeps the segments of the
files listed, parses only the files it lacks (new since the last run), drops the
others (a prune merged them), and stores the result again. The cache file carries a
BLAKE2b digest of its content and is sealed like an index file when the repository
is encrypted (AES-256-GCM, so it holds nothing readable without the key and cannot
be altered unnoticed); anything that does not open, check and parse is ignored and
rebuilt from the index files. Pure: no I/O here.
"""

from __future__ import annotations

import array
import bisect
import hashlib
import json
import struct
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ppo_dr.mirror.codec import Codec
from ppo_dr.mirror.errors import DamagedDataError

INDEX_VERSION = 1
MERGED_MAGIC = b"ppo-dr merged index 1\n"
_DIGEST = 32  # BLAKE2b-256 of the rest of the merged cache file
_HEADER_LEN = struct.Struct("<I")
_ID = 32  # a pack or blob id, as bytes (64 hex digits)

# One index file's content: pack id -> (pack size, blob id -> location).
PackRows = dict[str, tuple[int, dict[str, "BlobLocation"]]]


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """Where a blob's stored bytes are, and how to turn them back into plaintext."""

    pack_id: str
    offset: int
    length: int
    raw_length: int
    compressed: bool


def blob_row(blob_id: str, loc: BlobLocation) -> list[Any]:
    """A blob's row in an index file or a pack trailer."""
    return [blob_id, loc.offset, loc.length, loc.raw_length, "zstd" if loc.compressed else "none"]


def parse_rows(pack_id: str, rows: list[list[Any]]) -> dict[str, BlobLocation]:
    """The blobs of pack *pack_id* from its rows (index file or trailer)."""
    return {
        str(r[0]): BlobLocation(pack_id, int(r[1]), int(r[2]), int(r[3]), r[4] == "zstd")
        for r in rows
    }


def index_document(packs: Mapping[str, tuple[int, Any]]) -> dict[str, Any]:
    """The JSON document of an index file of *packs*: pack id -> (size, its blobs as
    locations by id, or as the rows of the ``PackBuilder`` that filled it)."""
    out = []
    for pack_id, (size, blobs) in packs.items():
        if isinstance(blobs, dict):
            rows = [blob_row(b, loc) for b, loc in blobs.items()]
        else:
            rows = [[b, o, n, r, "zstd" if c else "none"] for b, o, n, r, c in blobs.rows]
        out.append({"id": pack_id, "size": size, "blobs": rows})
    return {"version": INDEX_VERSION, "packs": out}


def packs_of(doc: Any) -> PackRows:
    """An index file's packs from its JSON document; ValueError, KeyError or
    TypeError if it is not one."""
    return {
        str(p["id"]): (int(p["size"]), parse_rows(str(p["id"]), p["blobs"])) for p in doc["packs"]
    }


def parse_index_document(text: bytes) -> PackRows:
    """An index file's JSON; ValueError, KeyError or TypeError if it is not one."""
    return packs_of(json.loads(text))


@dataclass
class Index:
    """The merged index of a repository (blob id -> location, pack id -> size)."""

    blobs: dict[str, BlobLocation] = field(default_factory=dict)
    packs: dict[str, int] = field(default_factory=dict)
    pack_blobs: dict[str, dict[str, BlobLocation]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def add_pack(self, pack_id: str, size: int, blobs: dict[str, BlobLocation]) -> None:
        self.packs[pack_id] = size
        self.pack_blobs[pack_id] = blobs
        if self.blobs.keys().isdisjoint(blobs):  # the rule: a blob is stored once
            self.blobs.update(blobs)
            return
        for blob_id, loc in blobs.items():  # else the first pack named keeps it
            self.blobs.setdefault(blob_id, loc)

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self.blobs


def _numbers(values: Iterable[int] = ()) -> array.array[int]:
    return array.array("Q", values)


@dataclass
class IndexColumns:
    """Parsed index files column by column, one segment per file, in listing order.

    File *i* holds packs ``files[i][1]:files[i][2]``; pack *p* holds blobs
    ``pack_ends[p-1]:pack_ends[p]`` (from 0 for the first). Ids are stored as their
    32 bytes. Duplicates are kept as the files list them: a blob stored twice (a run
    that crashed between pack and index) is located in the first pack named, as
    :meth:`Index.add_pack` does.
    """

    files: list[tuple[str, int, int]] = field(default_factory=list)
    pack_ids: bytearray = field(default_factory=bytearray)
    pack_sizes: array.array[int] = field(default_factory=_numbers)
    pack_ends: array.array[int] = field(default_factory=_numbers)
    blob_ids: bytearray = field(default_factory=bytearray)
    offsets: array.array[int] = field(default_factory=_numbers)
    lengths: array.array[int] = field(default_factory=_numbers)
    raw_lengths: array.array[int] = field(default_factory=_numbers)
    compressed: bytearray = field(default_factory=bytearray)
    _hex: list[str] | None = field(default=None, repr=False, compare=False)
    _first: dict[str, int] | None = field(default=None, repr=False, compare=False)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.files]

    def __len__(self) -> int:
        return len(self.compressed)

    # ----- building --------------------------------------------------------------------

    def add_file(self, name: str, packs: PackRows) -> None:
        """Append one index file's packs; ValueError if an id is not 64 hex digits or
        a number is negative (such a file cannot be kept in columns: the caller then
        reads the index without them, and drops these columns)."""
        first = len(self.pack_sizes)
        try:
            for pack_id, (size, blobs) in packs.items():
                self.pack_ids += _raw_id(pack_id)
                self.pack_sizes.append(size)
                for blob_id, loc in blobs.items():
                    self.blob_ids += _raw_id(blob_id)
                    self.offsets.append(loc.offset)
                    self.lengths.append(loc.length)
                    self.raw_lengths.append(loc.raw_length)
                    self.compressed.append(1 if loc.compressed else 0)
                self.pack_ends.append(len(self.compressed))
        except OverflowError as exc:  # a negative number (the caller drops these columns)
            raise ValueError(f"index file {name}: {exc}") from None
        self.files.append((name, first, len(self.pack_sizes)))
        self._hex = self._first = None

    def add_document(self, name: str, doc: Any) -> None:
        """Append one index file from its JSON document, column by column (no object
        per blob: a run after a full one adds ~25 files of ~2,000 rows each). A file
        the fast path cannot take as it is (a blob listed twice in a pack, a number
        that is not an unsigned integer) goes through :func:`packs_of` instead;
        errors as :meth:`add_file`, and as :func:`packs_of` for a document that is
        not an index file."""
        try:
            packs = [(str(p["id"]), int(p["size"]), p["blobs"]) for p in doc["packs"]]
            pack_ids = b"".join(_raw_id(pack_id) for pack_id, _, _ in packs)
            ids: list[str] = []
            for _, _, rows in packs:
                ids += [r[0] for r in rows]
            text = "".join(ids)
            blob_ids = bytes.fromhex(text)
            if (
                len(blob_ids) != _ID * len(ids)
                or len(set(ids)) != len(ids)  # parse_rows keeps a pack's last row of a blob
                or any(len(b) != 2 * _ID for b in ids)
                or blob_ids.hex() != text
            ):
                raise ValueError("not the fast path's")
            all_rows = [r for _, _, rows in packs for r in rows]
            offsets = _numbers([r[1] for r in all_rows])
            lengths = _numbers([r[2] for r in all_rows])
            raw_lengths = _numbers([r[3] for r in all_rows])
            compressed = bytearray(1 if r[4] == "zstd" else 0 for r in all_rows)
            sizes = _numbers([size for _, size, _ in packs])
        except (ValueError, TypeError, KeyError, IndexError, OverflowError):
            self.add_file(name, packs_of(doc))
            return
        first, start = len(self.pack_sizes), len(self.compressed)
        self.pack_ids += pack_ids
        self.pack_sizes += sizes
        for _, _, rows in packs:
            start += len(rows)
            self.pack_ends.append(start)
        self.blob_ids += blob_ids
        self.offsets += offsets
        self.lengths += lengths
        self.raw_lengths += raw_lengths
        self.compressed += compressed
        self.files.append((name, first, len(self.pack_sizes)))
        self._hex = self._first = None

    def _add_segment(self, other: IndexColumns, file_no: int) -> None:
        """Append file *file_no* of *other* (slices copied, nothing parsed)."""
        name, p0, p1 = other.files[file_no]
        b0 = other.pack_ends[p0 - 1] if p0 else 0
        b1 = other.pack_ends[p1 - 1] if p1 > p0 else b0
        first, shift = len(self.pack_sizes), len(self.compressed) - b0
        self.pack_ids += other.pack_ids[p0 * _ID : p1 * _ID]
        self.pack_sizes += other.pack_sizes[p0:p1]
        self.pack_ends.extend(end + shift for end in other.pack_ends[p0:p1])
        self.blob_ids += other.blob_ids[b0 * _ID : b1 * _ID]
        self.offsets += other.offsets[b0:b1]
        self.lengths += other.lengths[b0:b1]
        self.raw_lengths += other.raw_lengths[b0:b1]
        self.compressed += other.compressed[b0:b1]
        self.files.append((name, first, len(self.pack_sizes)))
        self._hex = self._first = None

    def select(
        self, names: Iterable[str], add: Callable[[IndexColumns, str], None]
    ) -> IndexColumns:
        """The files *names* in that order: the segments held here copied, the others
        read and added by *add* (with :meth:`add_document` or :meth:`add_file`)."""
        held = {name: i for i, (name, _, _) in enumerate(self.files)}
        out = IndexColumns()
        for name in names:
            if name in held:
                out._add_segment(self, held[name])
            else:
                add(out, name)
        return out

    # ----- reading ---------------------------------------------------------------------

    def _blob_hex(self) -> list[str]:
        if self._hex is None:
            text = self.blob_ids.hex()
            self._hex = [text[i : i + 2 * _ID] for i in range(0, len(text), 2 * _ID)]
        return self._hex

    def known(self) -> dict[str, int]:
        """blob id -> plaintext length of every blob listed (what a snapshot needs:
        which blobs the mirror has, and where a file's previous version was cut)."""
        return dict(zip(self._blob_hex(), self.raw_lengths, strict=True))

    def _pack_hex(self, pack_no: int) -> str:
        return self.pack_ids[pack_no * _ID : (pack_no + 1) * _ID].hex()

    def location(self, blob_id: str) -> BlobLocation | None:
        """Where *blob_id* is (the first pack listing it), or None."""
        if self._first is None:
            ids = self._blob_hex()  # reversed: the first occurrence is set last and kept
            self._first = dict(zip(reversed(ids), range(len(ids) - 1, -1, -1), strict=True))
        row = self._first.get(blob_id)
        if row is None:
            return None
        pack_no = bisect.bisect_right(self.pack_ends, row)
        return BlobLocation(
            self._pack_hex(pack_no),
            self.offsets[row],
            self.lengths[row],
            self.raw_lengths[row],
            bool(self.compressed[row]),
        )

    def pack_sizes_by_id(self) -> dict[str, int]:
        return {self._pack_hex(p): size for p, size in enumerate(self.pack_sizes)}

    def _file_packs(self, file_no: int) -> Iterator[tuple[str, int, dict[str, BlobLocation]]]:
        _, p0, p1 = self.files[file_no]
        ids = self._blob_hex()
        start = self.pack_ends[p0 - 1] if p0 else 0
        for p in range(p0, p1):
            pack_id, end = self._pack_hex(p), self.pack_ends[p]
            rows = range(start, end)
            yield (
                pack_id,
                self.pack_sizes[p],
                {
                    ids[r]: BlobLocation(
                        pack_id,
                        self.offsets[r],
                        self.lengths[r],
                        self.raw_lengths[r],
                        bool(self.compressed[r]),
                    )
                    for r in rows
                },
            )
            start = end

    def to_index(self) -> Index:
        """The full :class:`Index` (a location object per blob), as merging the
        files themselves gives it."""
        index = Index()
        for file_no, (name, _, _) in enumerate(self.files):
            for pack_id, size, blobs in self._file_packs(file_no):
                index.add_pack(pack_id, size, blobs)
            index.files.append(name)
        return index

    # ----- the merged cache file -------------------------------------------------------

    def to_bytes(self, codec: Codec) -> bytes:
        """The merged cache file: magic, header, columns; digest first; sealed when
        *codec* encrypts."""
        header = json.dumps(
            {
                "byteorder": sys.byteorder,
                "files": self.files,
                "packs": len(self.pack_sizes),
                "blobs": len(self.compressed),
            },
            separators=(",", ":"),
        ).encode()
        body = b"".join(
            [
                MERGED_MAGIC,
                _HEADER_LEN.pack(len(header)),
                header,
                bytes(self.pack_ids),
                self.pack_sizes.tobytes(),
                self.pack_ends.tobytes(),
                bytes(self.blob_ids),
                self.offsets.tobytes(),
                self.lengths.tobytes(),
                self.raw_lengths.tobytes(),
                bytes(self.compressed),
            ]
        )
        return codec.seal(hashlib.blake2b(body, digest_size=_DIGEST).digest() + body)

    @classmethod
    def from_bytes(cls, stored: bytes, codec: Codec) -> IndexColumns:
        """Inverse of :meth:`to_bytes`; ValueError if it does not open, check or parse
        (damaged, another key, another format): the caller then rebuilds it."""
        try:
            data = memoryview(codec.unseal(stored, "merged index cache"))
        except DamagedDataError as exc:
            raise ValueError(str(exc)) from None
        digest, body = data[:_DIGEST], data[_DIGEST:]
        if hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
            raise ValueError("merged index cache: digest does not match (damaged)")
        if bytes(body[: len(MERGED_MAGIC)]) != MERGED_MAGIC:
            raise ValueError("merged index cache: not this format")
        at = len(MERGED_MAGIC)
        (n,) = _HEADER_LEN.unpack_from(body, at)
        at += _HEADER_LEN.size
        header = json.loads(bytes(body[at : at + n]))
        at += n
        if header["byteorder"] != sys.byteorder:
            raise ValueError("merged index cache: written on a machine of another byte order")
        packs, blobs = int(header["packs"]), int(header["blobs"])

        def take(size: int) -> memoryview:
            nonlocal at
            part = body[at : at + size]
            if len(part) != size:
                raise ValueError("merged index cache: cut short")
            at += size
            return part

        out = cls(files=[(str(f), int(p0), int(p1)) for f, p0, p1 in header["files"]])
        out.pack_ids = bytearray(take(packs * _ID))
        out.pack_sizes.frombytes(take(packs * 8))
        out.pack_ends.frombytes(take(packs * 8))
        out.blob_ids = bytearray(take(blobs * _ID))
        for column in (out.offsets, out.lengths, out.raw_lengths):
            column.frombytes(take(blobs * 8))
        out.compressed = bytearray(take(blobs))
        if at != len(body):
            raise ValueError("merged index cache: trailing bytes")
        out._check()
        return out

    def _check(self) -> None:
        """ValueError unless the segments tile the packs and the packs the blobs."""
        previous = 0
        for end in self.pack_ends:
            if end < previous:
                raise ValueError("merged index cache: pack ranges out of order")
            previous = end
        if previous != len(self.compressed):
            raise ValueError("merged index cache: blobs outside every pack")
        expected = 0
        for _, p0, p1 in self.files:
            if p0 != expected or p1 < p0:
                raise ValueError("merged index cache: file ranges do not tile the packs")
            expected = p1
        if expected != len(self.pack_sizes):
            raise ValueError("merged index cache: packs outside every file")
        if len(set(self.names)) != len(self.files):
            raise ValueError("merged index cache: a file listed twice")


def _raw_id(hex_id: str) -> bytes:
    """The 32 bytes of a 64-hex-digit id; ValueError for anything else (upper case
    included: it would not come back as the same text)."""
    raw = bytes.fromhex(hex_id) if len(hex_id) == 2 * _ID else b""
    if len(raw) != _ID or raw.hex() != hex_id:
        raise ValueError(f"id {hex_id!r} is not 64 lower-case hex digits")
    return raw
