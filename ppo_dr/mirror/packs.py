"""Packs: blobs back to back, then a trailer listing them (docs/repository.md,
"Packs"); building one, and reading parts of one by byte ranges.

Ranged reads (restore, a client's verify): a pack is read by ranges only when at most
RANGED_MAX_SHARE of it is needed, and blobs closer than RANGE_GAP share one request (a
request's latency costs more than reading the gap). Figures: docs/repository.md.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ppo_dr.mirror.codec import Codec
from ppo_dr.mirror.index import BlobLocation, parse_rows

TRAILER_LEN = struct.Struct(">I")  # the last 4 bytes of a pack: trailer length
RANGED_MAX_SHARE = 0.5
RANGE_GAP = 256 * 1024


def plan_ranges(locs: Iterable[BlobLocation], gap: int = RANGE_GAP) -> list[tuple[int, int]]:
    """(offset, length) byte ranges of one pack covering *locs*, in order, neighbours
    less than *gap* apart merged into one range."""
    ranges: list[list[int]] = []
    for loc in sorted(locs, key=lambda x: x.offset):
        end = loc.offset + loc.length
        if ranges and loc.offset - ranges[-1][1] < gap:
            ranges[-1][1] = max(ranges[-1][1], end)
        else:
            ranges.append([loc.offset, end])
    return [(start, end - start) for start, end in ranges]


def wants_ranges(pack_size: int, needed: Iterable[BlobLocation]) -> bool:
    """True if reading only *needed* (by ranges) beats reading the whole pack."""
    return sum(loc.length for loc in needed) <= pack_size * RANGED_MAX_SHARE


@dataclass(frozen=True)
class PackSlices:
    """Ranges of one pack as a ranged read fetched them: (offset, asked, bytes); the
    bytes are shorter than asked only where the pack ended early (damage)."""

    pack_id: str
    parts: tuple[tuple[int, int, bytes], ...]

    @property
    def size(self) -> int:
        return sum(len(data) for _, _, data in self.parts)

    def covers(self, loc: BlobLocation) -> bool:
        return any(o <= loc.offset and loc.offset + loc.length <= o + n for o, n, _ in self.parts)

    def stored(self, loc: BlobLocation) -> memoryview:
        """The stored bytes of *loc* (cut short if the pack was); KeyError if no range
        covers it."""
        for offset, asked, data in self.parts:
            if offset <= loc.offset and loc.offset + loc.length <= offset + asked:
                start = loc.offset - offset
                return memoryview(data)[start : start + loc.length]
        raise KeyError(f"pack {self.pack_id}: bytes {loc.offset}+{loc.length} were not read")


@dataclass
class FinishedPack:
    """A pack ready to upload: its id, its bytes (as parts, to avoid copying 16 MiB
    around) and the blobs inside."""

    pack_id: str
    parts: list[bytes]
    blobs: dict[str, BlobLocation]

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)


@dataclass
class PackBuilder:
    """Collects encoded blobs until the pack reaches its target size."""

    parts: list[bytes] = field(default_factory=list)
    rows: list[tuple[str, int, int, int, bool]] = field(default_factory=list)
    size: int = 0

    def add(self, blob_id: str, stored: bytes, raw_length: int, compressed: bool) -> None:
        self.rows.append((blob_id, self.size, len(stored), raw_length, compressed))
        self.parts.append(stored)
        self.size += len(stored)

    def finish(self, codec: Codec) -> FinishedPack:
        """Append the trailer (so a pack describes itself) and name the pack."""
        rows = [[b, o, n, r, "zstd" if c else "none"] for b, o, n, r, c in self.rows]
        trailer = codec.seal(json.dumps({"version": 1, "blobs": rows}).encode())
        parts = [*self.parts, trailer, TRAILER_LEN.pack(len(trailer))]
        digest = hashlib.sha256()
        for part in parts:
            digest.update(part)
        pack_id = digest.hexdigest()
        return FinishedPack(pack_id, parts, parse_rows(pack_id, rows))
