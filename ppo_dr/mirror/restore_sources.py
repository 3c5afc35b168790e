"""Where a restore's content comes from: the sources (mirrors) opened for reading, and
the verified blobs fetched from them.

Every blob is re-hashed on the way (:meth:`Repository.extract_blob`), and a damaged or
unreachable copy is fetched from the next source. Shared by every way a restore
writes (SFTP files, tar streams), in the caller and in worker processes alike.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ppo_dr.errors import DRError
from ppo_dr.ids import check_id
from ppo_dr.mirror.errors import DamagedDataError, RepositoryError, WrongKeyError
from ppo_dr.mirror.manifest import Entry, Manifest, check_snapshot_id
from ppo_dr.mirror.repository import (
    CDC_MAX,
    PACK_TARGET_BYTES,
    BlobLocation,
    Index,
    PackSlices,
    Repository,
    wants_ranges,
)
from ppo_dr.mirror.results import MirrorTarget

log = logging.getLogger(__name__)

PACKS_CACHED_PER_WORKER = 3
# The pack cache is bounded by bytes (3 whole packs' worth: a pack overshoots its target
# by at most one chunk), so the ranges read of many packs stay cached together instead of
# being read again request by request.
PACK_CACHE_BYTES = PACKS_CACHED_PER_WORKER * (PACK_TARGET_BYTES + CDC_MAX)
REUSED_BLOBS_BYTES = 64 * 1024 * 1024  # per worker thread: plaintext of blobs needed again


@dataclass
class OpenSource:
    """A mirror opened for reading, with its index."""

    repo: Repository
    index: Index
    target: MirrorTarget | None = None  # None in a worker process


def open_sources(sources: Sequence[MirrorTarget], key: bytes | None) -> list[OpenSource]:
    """Every source that opens; a wrong key is the caller's error and is raised."""
    opened: list[OpenSource] = []
    errors: list[str] = []
    for target in sources:
        check_id(target.mirror_id, "mirror id")
        try:
            repo = Repository.open(target.remote, target.repo_path, target.mirror_id, key)
            opened.append(OpenSource(repo, repo.load_index(), target))
        except WrongKeyError:
            raise
        except DRError as exc:
            log.warning("restore: source %s unusable: %s", target.mirror_id, exc)
            errors.append(f"{target.mirror_id}: {exc}")
    if not opened:
        raise RepositoryError("no source repository could be opened: " + "; ".join(errors))
    return opened


def load_manifest(opened: list[OpenSource], client_id: str, snapshot_id: str) -> Manifest:
    """The manifest from the first source that has it ("latest": the newest anywhere)."""
    if snapshot_id == "latest":
        newest = [ids[-1] for s in opened if (ids := s.repo.list_snapshot_ids(client_id))]
        if not newest:
            raise RepositoryError(f"no snapshot of client {client_id!r} on any source")
        snapshot_id = max(newest)
    check_snapshot_id(snapshot_id)
    problems: list[str] = []
    damaged_only = True
    for source in opened:
        if snapshot_id not in source.repo.list_snapshot_ids(client_id):
            continue
        try:
            return source.repo.read_manifest(client_id, snapshot_id)
        except RepositoryError as exc:
            problems.append(str(exc))
            damaged_only = damaged_only and isinstance(exc, DamagedDataError)
    if problems and damaged_only:  # its manifest or tree objects fail their hashes
        raise DamagedDataError(
            f"snapshot {client_id}/{snapshot_id} damaged on every source that has it: {problems}"
        )
    raise RepositoryError(
        f"snapshot {client_id}/{snapshot_id} not readable on any source {problems or ''}"
    )


def _cached_size(data: bytes | PackSlices) -> int:
    return data.size if isinstance(data, PackSlices) else len(data)


class BlobFetcher:
    """Fetches verified blobs for one worker, with a small cache of whole packs.

    Given *uses* (how often each blob is still needed by this worker's files), it also
    keeps the verified plaintext of a blob that will be needed again (up to
    :data:`REUSED_BLOBS_BYTES`): a deduplicated chunk shared by many files sits in one
    pack written long before, and without this every later use re-read that 16 MiB pack.
    """

    def __init__(
        self,
        opened: list[OpenSource],
        served: dict[str, int],
        lock: threading.Lock,
        uses: Counter[str] | None = None,
    ):
        self._opened = opened
        self._served = served
        self._lock = lock
        self._cache: OrderedDict[tuple[str, str], bytes | PackSlices] = OrderedDict()
        self._cache_bytes = 0
        self._uses = uses if uses is not None else Counter()
        self._reused: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._reused_bytes = 0
        # Why the last fetch came back empty: True if every source failed it for the
        # data itself (damaged, or missing from the repository), False if a source
        # could not be read, so trying again later might get it.
        self.last_miss_damaged = False

    def _remember(self, blob_id: str, mirror_id: str, data: bytes) -> None:
        """Keep *data* if the blob is needed again (oldest dropped beyond the budget)."""
        self._uses[blob_id] -= 1
        if self._uses[blob_id] <= 0:
            self._uses.pop(blob_id, None)
            old = self._reused.pop(blob_id, None)
            if old is not None:
                self._reused_bytes -= len(old[1])
            return
        if blob_id in self._reused or len(data) > REUSED_BLOBS_BYTES // 4:
            return
        self._reused[blob_id] = (mirror_id, data)
        self._reused_bytes += len(data)
        while self._reused_bytes > REUSED_BLOBS_BYTES:
            _, (_, dropped) = self._reused.popitem(last=False)
            self._reused_bytes -= len(dropped)

    def _pack(self, source: OpenSource, blob_id: str, loc: BlobLocation) -> bytes | PackSlices:
        """The pack holding *loc*: cached, else read whole, or only the ranges holding
        the blobs this worker still needs from it when those are at most half of it
        (the rest of an old pack is mostly blobs of files since changed or deleted, or
        of another worker's files)."""
        key = (source.repo.mirror_id, loc.pack_id)
        data = self._cache.get(key)
        if data is not None and (not isinstance(data, PackSlices) or data.covers(loc)):
            self._cache.move_to_end(key)
            return data
        in_pack = source.index.pack_blobs.get(loc.pack_id, {})
        needed = [x for b, x in in_pack.items() if b in self._uses or b == blob_id] or [loc]
        size = source.index.packs.get(loc.pack_id, 0)
        if self._uses and wants_ranges(size, needed):
            data = source.repo.read_pack_ranges(loc.pack_id, needed)
        else:
            data = source.repo.read_pack(loc.pack_id)
        old = self._cache.pop(key, None)
        if old is not None:
            self._cache_bytes -= _cached_size(old)
        self._cache[key] = data
        self._cache_bytes += _cached_size(data)
        while self._cache_bytes > PACK_CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= _cached_size(dropped)
        return data

    def fetch(self, blob_id: str) -> bytes | None:
        """The blob's plaintext from the first source with an intact copy, or None
        (then :attr:`last_miss_damaged` says whether only damage was found)."""
        kept = self._reused.get(blob_id)
        if kept is not None:
            self._remember(blob_id, kept[0], kept[1])
            with self._lock:
                self._served[kept[0]] += 1
            return kept[1]
        unreachable = False
        for source in self._opened:
            loc = source.index.blobs.get(blob_id)
            if loc is None:
                continue
            try:
                pack = self._pack(source, blob_id, loc)
                data = source.repo.extract_blob(pack, blob_id, loc)
            except DamagedDataError as exc:
                log.warning("restore: %s; trying the next source", exc)
                continue
            except DRError as exc:
                log.warning(
                    "restore: %s unreachable (%s); trying the next source",
                    source.repo.mirror_id,
                    exc,
                )
                unreachable = True
                continue
            if blob_id in self._uses:
                self._remember(blob_id, source.repo.mirror_id, data)
            with self._lock:
                self._served[source.repo.mirror_id] += 1
            return data
        self.last_miss_damaged = not unreachable
        return None


def split_runs(
    files: list[Entry], parts: int, weight: Callable[[Entry], int] = lambda e: e.size
) -> list[list[Entry]]:
    """Contiguous runs of about equal weight (contiguous keeps pack reads local)."""
    total = sum(weight(f) for f in files) or 1
    runs: list[list[Entry]] = [[]]
    acc = 0
    for entry in files:
        if acc >= total * len(runs) / parts and len(runs) < parts:
            runs.append([])
        runs[-1].append(entry)
        acc += weight(entry)
    return [r for r in runs if r]


@dataclass
class Tally:
    """What a set of restore threads did (shared by them, under *lock*)."""

    served: dict[str, int]
    files: int = 0
    bytes: int = 0
    refused: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # refused for damage alone
    lock: threading.Lock = field(default_factory=threading.Lock)
