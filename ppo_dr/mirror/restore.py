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
mtimes deepest first. Several files are in flight at once; packs are read whole and
kept in a small per-worker cache, since files restored in manifest order mostly use
the packs the snapshot wrote them into.
"""

from __future__ import annotations

import logging
import posixpath
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ppo_dr.errors import DRError, UnsafeInputError
from ppo_dr.ids import absolute_path_problem, check_id
from ppo_dr.mirror.errors import DamagedDataError, RepositoryError, WrongKeyError
from ppo_dr.mirror.manifest import Entry, Manifest, check_restorable, check_snapshot_id
from ppo_dr.mirror.repository import Index, Repository
from ppo_dr.mirror.results import MirrorTarget, RestoreResult
from ppo_dr.transport.base import EntryType, Remote

log = logging.getLogger(__name__)

PACKS_CACHED_PER_WORKER = 3


@dataclass
class OpenSource:
    """A mirror opened for reading, with its index."""

    repo: Repository
    index: Index


def open_sources(sources: Sequence[MirrorTarget], key: bytes | None) -> list[OpenSource]:
    """Every source that opens; a wrong key is the caller's error and is raised."""
    opened: list[OpenSource] = []
    errors: list[str] = []
    for target in sources:
        check_id(target.mirror_id, "mirror id")
        try:
            repo = Repository.open(target.remote, target.repo_path, target.mirror_id, key)
            opened.append(OpenSource(repo, repo.load_index()))
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


class BlobFetcher:
    """Fetches verified blobs for one worker, with a small cache of whole packs."""

    def __init__(self, opened: list[OpenSource], served: dict[str, int], lock: threading.Lock):
        self._opened = opened
        self._served = served
        self._lock = lock
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def _pack(self, source: OpenSource, pack_id: str) -> bytes:
        key = (source.repo.mirror_id, pack_id)
        data = self._cache.get(key)
        if data is None:
            data = source.repo.read_pack(pack_id)
            self._cache[key] = data
            while len(self._cache) > PACKS_CACHED_PER_WORKER:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return data

    def fetch(self, blob_id: str) -> bytes | None:
        """The blob's plaintext from the first source with an intact copy, or None."""
        for source in self._opened:
            loc = source.index.blobs.get(blob_id)
            if loc is None:
                continue
            try:
                data = source.repo.extract_blob(self._pack(source, loc.pack_id), blob_id, loc)
            except DamagedDataError as exc:
                log.warning("restore: %s; trying the next source", exc)
                continue
            except DRError as exc:
                log.warning(
                    "restore: %s unreachable (%s); trying the next source",
                    source.repo.mirror_id,
                    exc,
                )
                continue
            with self._lock:
                self._served[source.repo.mirror_id] += 1
            return data
        return None


def _split(files: list[Entry], parts: int) -> list[list[Entry]]:
    """Contiguous runs of about equal bytes (contiguous keeps pack reads local)."""
    total = sum(f.size for f in files) or 1
    runs: list[list[Entry]] = [[]]
    acc = 0
    for entry in files:
        if acc >= total * len(runs) / parts and len(runs) < parts:
            runs.append([])
        runs[-1].append(entry)
        acc += entry.size
    return [r for r in runs if r]


def restore(
    sources: Sequence[MirrorTarget],
    client_id: str,
    snapshot_id: str,
    dest: Remote,
    dest_path: str,
    *,
    key: bytes | None = None,
    parallel: int = 4,
) -> RestoreResult:
    """Materialise *client_id*'s snapshot under *dest_path* on *dest*."""
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

    served = {s.repo.mirror_id: 0 for s in opened}
    lock = threading.Lock()
    refused: list[str] = []
    written = [0, 0]  # files, bytes

    def restore_run(run: list[Entry]) -> None:
        fetcher = BlobFetcher(opened, served, lock)
        for entry in run:
            path = full(entry)
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
                with lock:
                    refused.append(entry.path)
                continue
            dest.utime(path, entry.mtime)
            with lock:
                written[0] += 1
                written[1] += entry.size

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for future in [pool.submit(restore_run, run) for run in _split(files, parallel)]:
            future.result()
    for entry in links:
        path = full(entry)
        if dest.stat(path) is not None:
            dest.remove(path)
        dest.symlink(entry.target or "", path)
    for entry in reversed(dirs):
        dest.chmod(full(entry), entry.mode)
        dest.utime(full(entry), entry.mtime)
    return RestoreResult(
        files=written[0],
        bytes=written[1],
        duration_s=time.monotonic() - started,
        served_by=served,
        refused=sorted(refused),
    )
