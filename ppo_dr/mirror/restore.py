"""Restoring a client's snapshot onto any server and path.

Blobs come from the first source (mirror) that has them intact: every blob is
re-hashed on the way, and a damaged or unreachable copy is fetched from the next
source; a file no source can serve intact is not written and is reported as
refused. Before anything is written the whole manifest is checked
(:func:`~ppo_dr.mirror.manifest.check_restorable`): an absolute path, a ``..`` or a
path through anything but a directory of the snapshot refuses the restore.

Order: directories (owner-only while we fill them), files in parallel (each written
to a temporary name and renamed into place, then its mtime set), symlinks (targets
verbatim, created last so nothing is written through one), then directory modes and
mtimes deepest first. Several files are in flight at once; packs are kept in a small
per-worker cache, since files restored in manifest order mostly use the packs the
snapshot wrote them into. A pack is read whole, or — when the worker's files need at
most half of it (an old pack after many incrementals, a restore of one client or of
part of the files) — only the ranges holding the blobs they need.

Two ways to pull the files, with the same results (``served_by``, ``refused``, the
fallback to the next source):

- **Processes** (PERF-NOTES: paramiko is bound by Python and the GIL; two processes
  with one connection each about double one connection's throughput): when every
  source carries a picklable ``connect`` factory and the destination can be reopened
  in another process (a :class:`LocalRemote`, or a *dest_connect* factory), the files
  are cut into ``processes`` contiguous runs of about equal stored bytes (contiguous in
  manifest order, so each pack is read by one process rather than by all) and each
  run is restored by a worker process started from the forkserver, with its own
  connections to every source and to the destination, and one thread. Files a
  worker refused, and all files of a worker that failed as a whole (could not
  connect, died), are then tried again by the thread path in the caller, so a source
  the caller could open is never skipped.
- **Threads** on the caller's connections otherwise, and for small restores.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import posixpath
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

from ppo_dr.errors import DRError, UnsafeInputError
from ppo_dr.ids import absolute_path_problem, check_id
from ppo_dr.mirror.errors import DamagedDataError, RepositoryError, WrongKeyError
from ppo_dr.mirror.manifest import Entry, Manifest, check_restorable, check_snapshot_id
from ppo_dr.mirror.repository import (
    CDC_MAX,
    PACK_TARGET_BYTES,
    BlobLocation,
    Index,
    PackSlices,
    Repository,
    wants_ranges,
)
from ppo_dr.mirror.results import MirrorTarget, RestoreResult
from ppo_dr.mirror.uploader import process_context
from ppo_dr.transport.base import EntryType, Remote
from ppo_dr.transport.local import LocalRemote

log = logging.getLogger(__name__)

PACKS_CACHED_PER_WORKER = 3
# The pack cache is bounded by bytes (3 whole packs' worth: a pack overshoots its target
# by at most one chunk), so the ranges read of many packs stay cached together instead of
# being read again request by request.
PACK_CACHE_BYTES = PACKS_CACHED_PER_WORKER * (PACK_TARGET_BYTES + CDC_MAX)
REUSED_BLOBS_BYTES = 64 * 1024 * 1024  # per worker thread: plaintext of blobs needed again
RESTORE_PROCESSES = 2  # PERF-NOTES: 2 processes on 2 cores doubled throughput; 4 were worse
# One thread per worker process: measured on 1 GB, 2 processes x 1 thread restored in
# 3.4 s, 2 x 2 threads in 5-7 s (GIL contention inside a worker), 4 threads alone 5.2 s.
THREADS_PER_PROCESS = 1
PROCESS_MIN_BYTES = 64 * 1024 * 1024  # smaller restores: starting workers costs more than it saves


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
    for source in opened:
        if snapshot_id not in source.repo.list_snapshot_ids(client_id):
            continue
        try:
            return source.repo.read_manifest(client_id, snapshot_id)
        except RepositoryError as exc:
            problems.append(str(exc))
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


def _split(
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
class _Tally:
    """What a set of restore threads did (shared by them, under *lock*)."""

    served: dict[str, int]
    files: int = 0
    bytes: int = 0
    refused: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)  # refused for damage alone
    lock: threading.Lock = field(default_factory=threading.Lock)


def _restore_files(
    opened: list[OpenSource],
    files: list[Entry],
    dest: Remote,
    dest_path: str,
    threads: int,
    tally: _Tally,
) -> None:
    """Write *files* under *dest_path* with *threads* threads (the thread path)."""

    def restore_run(run: list[Entry]) -> None:
        uses = Counter(blob_id for entry in run for blob_id in entry.chunks)
        fetcher = BlobFetcher(opened, tally.served, tally.lock, uses)
        for entry in run:
            path = posixpath.join(dest_path, entry.path)
            intact = True
            with dest.open_write(path, entry.mode) as writer:
                for blob_id in entry.chunks:
                    data = fetcher.fetch(blob_id)
                    if data is None:
                        intact = False
                        writer.abort()  # the final name is never written
                        break
                    writer.write(data)
            if not intact:
                with tally.lock:
                    tally.refused.append(entry.path)
                    if fetcher.last_miss_damaged:
                        tally.damaged.append(entry.path)
                continue
            dest.utime(path, entry.mtime)
            with tally.lock:
                tally.files += 1
                tally.bytes += entry.size

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for future in [pool.submit(restore_run, run) for run in _split(files, threads)]:
            future.result()


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class _SourceSpec:
    """What a worker process needs to read one source: how to connect, where the
    repository is, and where the blobs of its files are (so it reads no index)."""

    mirror_id: str
    repo_path: str
    connect: Callable[[], Remote]
    blobs: dict[str, BlobLocation]
    pack_sizes: dict[str, int]  # of the packs holding *blobs*: to choose ranged reads

    def index(self) -> Index:
        """The part of the source's index this worker needs."""
        index = Index(blobs=self.blobs, packs=self.pack_sizes)
        for blob_id, loc in self.blobs.items():
            index.pack_blobs.setdefault(loc.pack_id, {})[blob_id] = loc
        return index


def _worker(
    specs: list[_SourceSpec],
    key: bytes | None,
    dest_connect: Callable[[], Remote],
    dest_path: str,
    files: list[Entry],
    threads: int,
) -> tuple[int, int, dict[str, int], list[str]]:
    """In a worker process: restore *files* over connections of its own.

    Returns (files written, bytes written, blobs served per source, refused paths).
    A source that does not open here is skipped (the caller retries what is refused).
    """
    remotes: list[Remote] = []
    try:
        opened: list[OpenSource] = []
        for spec in specs:
            try:
                remote = spec.connect()
                remotes.append(remote)
                repo = Repository.open(remote, spec.repo_path, spec.mirror_id, key)
            except DRError as exc:
                log.warning("restore worker: source %s unusable: %s", spec.mirror_id, exc)
                continue
            opened.append(OpenSource(repo, spec.index()))
        if not opened:
            raise RepositoryError("restore worker: no source could be opened")
        dest = dest_connect()
        remotes.append(dest)
        tally = _Tally(served={s.repo.mirror_id: 0 for s in opened})
        _restore_files(opened, files, dest, dest_path, threads, tally)
        return tally.files, tally.bytes, tally.served, tally.refused
    finally:
        for remote in remotes:
            with contextlib.suppress(Exception):
                remote.close()


def _dest_factory(
    dest: Remote, dest_connect: Callable[[], Remote] | None
) -> Callable[[], Remote] | None:
    """How a worker process reaches the destination, or None if it cannot."""
    if dest_connect is not None:
        return dest_connect
    if isinstance(dest, LocalRemote):
        return functools.partial(LocalRemote, dest.root, fsync=dest.fsync)
    return None


def _restore_in_processes(
    opened: list[OpenSource],
    files: list[Entry],
    key: bytes | None,
    dest_connect: Callable[[], Remote],
    dest_path: str,
    processes: int,
    threads: int,
    tally: _Tally,
) -> list[Entry]:
    """Restore *files* with *processes* worker processes; returns the files still to
    do (those refused by a worker, and every file of a worker that failed)."""

    def stored_size(entry: Entry) -> int:
        total = 0
        for blob_id in entry.chunks:
            loc = next((s.index.blobs[blob_id] for s in opened if blob_id in s.index), None)
            total += loc.length if loc is not None else 0
        return total or entry.size

    runs = _split(files, processes, stored_size)
    retry: list[Entry] = []
    with ProcessPoolExecutor(max_workers=len(runs), mp_context=process_context()) as pool:
        futures: list[tuple[list[Entry], Future[tuple[int, int, dict[str, int], list[str]]]]] = []
        for run in runs:
            wanted = {b for e in run for b in e.chunks}
            specs = []
            for source in opened:
                assert source.target is not None and source.target.connect is not None
                blobs = {b: loc for b in wanted if (loc := source.index.blobs.get(b)) is not None}
                sizes = {
                    loc.pack_id: source.index.packs.get(loc.pack_id, 0) for loc in blobs.values()
                }
                specs.append(
                    _SourceSpec(
                        source.repo.mirror_id,
                        source.target.repo_path,
                        source.target.connect,
                        blobs,
                        sizes,
                    )
                )
            future = pool.submit(_worker, specs, key, dest_connect, dest_path, run, threads)
            futures.append((run, future))
        for run, future in futures:
            try:
                done, written, served, refused = future.result()
            except Exception as exc:  # the worker failed as a whole: its files go again
                log.warning("restore: a worker process failed (%s: %s)", type(exc).__name__, exc)
                retry.extend(run)
                continue
            tally.files += done
            tally.bytes += written
            for mirror_id, n in served.items():
                tally.served[mirror_id] = tally.served.get(mirror_id, 0) + n
            again = set(refused)
            retry.extend(e for e in run if e.path in again)
    return retry


# --------------------------------------------------------------------------- restore


def restore(
    sources: Sequence[MirrorTarget],
    client_id: str,
    snapshot_id: str,
    dest: Remote,
    dest_path: str,
    *,
    key: bytes | None = None,
    parallel: int = 4,
    processes: int | None = None,
    dest_connect: Callable[[], Remote] | None = None,
) -> RestoreResult:
    """Materialise *client_id*'s snapshot under *dest_path* on *dest*.

    *parallel* threads pull the files on the thread path; on the process path (see
    the module doc) *processes* worker processes of one thread each do. None picks
    :data:`RESTORE_PROCESSES` for a restore of at least :data:`PROCESS_MIN_BYTES` when
    every source has ``connect`` and the destination is local or *dest_connect* (a
    picklable factory opening a new connection to *dest*) is given; 0 or 1 forces
    the thread path.
    """
    started = time.monotonic()
    check_id(client_id, "client id")
    if snapshot_id != "latest":
        check_snapshot_id(snapshot_id)
    problem = absolute_path_problem(dest_path)
    if problem is not None:
        raise UnsafeInputError(f"restore destination {dest_path!r} refused: {problem}")
    opened = open_sources(sources, key)
    manifest = load_manifest(opened, client_id, snapshot_id)
    check_restorable(manifest.entries)

    def full(entry: Entry) -> str:
        return posixpath.join(dest_path, entry.path)

    dest.mkdir_p(dest_path)
    dirs = [e for e in manifest.entries if e.type is EntryType.DIR]
    files = [e for e in manifest.entries if e.type is EntryType.FILE]
    links = [e for e in manifest.entries if e.type is EntryType.SYMLINK]
    for entry in dirs:
        dest.mkdir_p(full(entry), 0o700)

    tally = _Tally(served={s.repo.mirror_id: 0 for s in opened})
    worker_dest = _dest_factory(dest, dest_connect)
    if processes is None:
        big = sum(e.size for e in files) >= PROCESS_MIN_BYTES
        processes = RESTORE_PROCESSES if big else 0
    if (
        processes > 1
        and len(files) > 1
        and worker_dest is not None
        and all(s.target is not None and s.target.connect is not None for s in opened)
    ):
        files = _restore_in_processes(
            opened, files, key, worker_dest, dest_path, processes, THREADS_PER_PROCESS, tally
        )
    if files:
        _restore_files(opened, files, dest, dest_path, parallel, tally)
    for entry in links:
        path = full(entry)
        if dest.stat(path) is not None:
            dest.remove(path)
        dest.symlink(entry.target or "", path)
    for entry in reversed(dirs):
        dest.chmod(full(entry), entry.mode)
        dest.utime(full(entry), entry.mtime)
    return RestoreResult(
        files=tally.files,
        bytes=tally.bytes,
        duration_s=time.monotonic() - started,
        served_by=tally.served,
        refused=sorted(tally.refused),
        damaged=sorted(tally.damaged),
    )
