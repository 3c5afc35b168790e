"""Restoring a client's snapshot onto any server and path.

Blobs come from the first source (mirror) that has them intact: every blob is
re-hashed on the way, and a damaged or unreachable copy is fetched from the next
source; a file no source can serve intact is not written and is reported as
refused. Before anything is written the whole manifest is checked
(:func:`~ppo_dr.mirror.manifest.check_restorable`): an absolute path, a ``..`` or a
path through anything but a directory of the snapshot refuses the restore.

Two ways to write (same checks, same results):

- **Into a server over SSH**: tar streams into a staging directory beside the
  destination, renamed onto it once complete, resumable
  (:mod:`ppo_dr.mirror.restore_remote`); per-file SFTP round trips made this 5.8x
  slower than rsync on many small files.
- **In place** (a local disk, or a server that cannot run ``tar``): directories
  (owner-only while we fill them), files (each written to a temporary name and
  renamed into place, then its mtime set), symlinks (targets verbatim, created last so
  nothing is written through one), then directory modes and mtimes deepest first.

Several files are in flight at once; packs are kept in a small per-worker cache
(:mod:`ppo_dr.mirror.restore_sources`), since files restored in manifest order mostly
use the packs the snapshot wrote them into. A pack is read whole, or — when the
worker's files need at most half of it — only the ranges holding the blobs they need.

Two ways to pull the files, with the same results (``served_by``, ``refused``, the
fallback to the next source):

- **Processes** (PERF-NOTES: paramiko is bound by Python and the GIL; two processes
  with one connection each about double one connection's throughput): when every
  source carries a picklable ``connect`` factory and the destination can be reopened
  in another process (a :class:`LocalRemote`, or a *dest_connect* factory), the files
  are cut into ``processes`` contiguous runs of about equal stored bytes (contiguous in
  manifest order, so each pack is read by one process rather than by all) and each
  run is restored by a worker process started from the forkserver, with its own
  connections to every source and to the destination, and one thread (on the SSH
  path: one tar stream). Files a worker refused, and all files of a worker that
  failed as a whole (could not connect, died), are then tried again in the caller,
  so a source the caller could open is never skipped.
- **Threads** on the caller's connections otherwise, and for small restores.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import posixpath
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

from ppo_dr.errors import DRError, TransientError, UnsafeInputError
from ppo_dr.ids import absolute_path_problem, check_id
from ppo_dr.mirror.errors import DamagedDataError, RepositoryError
from ppo_dr.mirror.manifest import Entry, Manifest, check_restorable, check_snapshot_id
from ppo_dr.mirror.repository import BlobLocation, Index, Repository
from ppo_dr.mirror.restore_remote import (
    ReceiverMissing,
    can_stream_to,
    files_already_restored,
    finish_tree,
    hard_links_of,
    staging_path,
    stream_files,
    switch_into_place,
)
from ppo_dr.mirror.restore_sources import (
    BlobFetcher,
    OpenSource,
    Tally,
    load_manifest,
    open_sources,
    split_runs,
)
from ppo_dr.mirror.results import MirrorTarget, RestoreResult
from ppo_dr.mirror.uploader import process_context
from ppo_dr.transport.base import EntryType, Remote
from ppo_dr.transport.local import LocalRemote

log = logging.getLogger(__name__)

RESTORE_PROCESSES = 2  # PERF-NOTES: 2 processes on 2 cores doubled throughput; 4 were worse
# One thread per worker process: measured on 1 GB, 2 processes x 1 thread restored in
# 3.4 s, 2 x 2 threads in 5-7 s (GIL contention inside a worker), 4 threads alone 5.2 s.
THREADS_PER_PROCESS = 1
PROCESS_MIN_BYTES = 64 * 1024 * 1024  # smaller restores: starting workers costs more than it saves


def _restore_files(
    opened: list[OpenSource],
    files: list[Entry],
    dest: Remote,
    dest_path: str,
    threads: int,
    tally: Tally,
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
        for future in [pool.submit(restore_run, run) for run in split_runs(files, threads)]:
            future.result()


# How a set of files is written: (sources, files, dest, dest_path, threads, tally).
# Module-level functions only, since worker processes receive it pickled.
WriteFiles = Callable[[list[OpenSource], list[Entry], Remote, str, int, Tally], None]


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
    write_files: WriteFiles,
) -> tuple[int, int, dict[str, int], list[str]]:
    """In a worker process: restore *files* with *write_files* over connections of
    its own.

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
        tally = Tally(served={s.repo.mirror_id: 0 for s in opened})
        write_files(opened, files, dest, dest_path, threads, tally)
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
    tally: Tally,
    write_files: WriteFiles,
) -> list[Entry]:
    """Restore *files* with *processes* worker processes, each writing its run with
    *write_files*; returns the files still to do (those refused by a worker, and every
    file of a worker that failed)."""

    def stored_size(entry: Entry) -> int:
        total = 0
        for blob_id in entry.chunks:
            loc = next((s.index.blobs[blob_id] for s in opened if blob_id in s.index), None)
            total += loc.length if loc is not None else 0
        return total or entry.size

    runs = split_runs(files, processes, stored_size)
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
            future = pool.submit(
                _worker, specs, key, dest_connect, dest_path, run, threads, write_files
            )
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


@dataclass(frozen=True)
class _Job:
    """One restore: what is read, where it goes, and :func:`restore`'s knobs."""

    opened: list[OpenSource]
    manifest: Manifest
    dest: Remote
    dest_path: str
    key: bytes | None
    parallel: int
    processes: int | None
    dest_connect: Callable[[], Remote] | None


def _run_files(
    job: _Job,
    files: list[Entry],
    dest_path: str,
    write_files: WriteFiles,
    tally: Tally,
    still_to_write: Callable[[list[Entry]], list[Entry]] | None = None,
) -> None:
    """Write *files* under *dest_path* with *write_files*: in worker processes when
    that pays (see :func:`restore`), then whatever is left in the caller (less what
    *still_to_write* finds a failed worker completed before it failed)."""
    opened, dest = job.opened, job.dest
    worker_dest = _dest_factory(dest, job.dest_connect)
    processes = job.processes
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
            opened,
            files,
            job.key,
            worker_dest,
            dest_path,
            processes,
            THREADS_PER_PROCESS,
            tally,
            write_files,
        )
        if files and still_to_write is not None:
            files = still_to_write(files)
    if files:
        write_files(opened, files, dest, dest_path, job.parallel, tally)


def _restore_in_place(job: _Job) -> Tally:
    """File by file into the destination itself (a local disk, a server without tar)."""
    opened, manifest, dest, dest_path = job.opened, job.manifest, job.dest, job.dest_path

    def full(entry: Entry) -> str:
        return posixpath.join(dest_path, entry.path)

    dest.mkdir_p(dest_path)
    dirs = [e for e in manifest.entries if e.type is EntryType.DIR]
    files = [e for e in manifest.entries if e.type is EntryType.FILE]
    links = [e for e in manifest.entries if e.type is EntryType.SYMLINK]
    for entry in dirs:
        dest.mkdir_p(full(entry), 0o700)
    tally = Tally(served={s.repo.mirror_id: 0 for s in opened})
    _run_files(job, files, dest_path, _restore_files, tally)
    for entry in links:
        path = full(entry)
        if dest.stat(path) is not None:
            dest.remove(path)
        dest.symlink(entry.target or "", path)
    for entry in reversed(dirs):
        dest.chmod(full(entry), entry.mode)
        dest.utime(full(entry), entry.mtime)
    if manifest.top is not None:
        dest.chmod(dest_path, manifest.top.mode)
        dest.utime(dest_path, manifest.top.mtime)
    return tally


def _restore_streamed(job: _Job) -> Tally:
    """Tar streams into a staging directory, switched onto the destination when
    complete (see :mod:`ppo_dr.mirror.restore_remote`); a refusal leaves the staging
    directory for the next run to resume, and the destination untouched."""
    opened, manifest, dest, dest_path = job.opened, job.manifest, job.dest, job.dest_path
    staging = staging_path(dest_path, manifest.snapshot_id)
    hard = hard_links_of(manifest)  # made in the last streams, from their first names
    files = [e for e in manifest.entries if e.type is EntryType.FILE and e.path not in hard]
    tally = Tally(served={s.repo.mirror_id: 0 for s in opened})

    def still_to_write(wanted: list[Entry]) -> list[Entry]:
        """*wanted* less the files already complete in staging (counted as restored)."""
        done = files_already_restored(dest, staging, wanted)
        if done:
            log.info(
                "restore: resuming in %s: %d of %d files already there",
                staging,
                len(done),
                len(wanted),
            )
            tally.files += len(done)
            tally.bytes += sum(e.size for e in wanted if e.path in done)
        return [e for e in wanted if e.path not in done]

    todo = still_to_write(files)
    dest.mkdir_p(staging, 0o700)
    _run_files(job, todo, staging, stream_files, tally, still_to_write)
    if tally.refused:
        log.warning(
            "restore: %d file(s) refused; %s kept for a later run, %s untouched",
            len(tally.refused),
            staging,
            dest_path,
        )
        return tally
    finish_tree(dest, staging, manifest)
    tally.files += len(hard)
    switch_into_place(dest, staging, dest_path, manifest.snapshot_id)
    return tally


def _outside_problem(dest_path: str, data_root: str) -> str | None:
    """Why *dest_path* is not strictly inside *data_root*, or None if it is."""
    root = posixpath.normpath(data_root)
    if absolute_path_problem(data_root) is not None:
        return f"the data root {data_root!r} is not a clean absolute path"
    if posixpath.commonpath([root, posixpath.normpath(dest_path)]) != root or (
        posixpath.normpath(dest_path) == root
    ):
        return f"not inside the server's data root {data_root}"
    return None


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
    data_root: str | None = None,
) -> RestoreResult:
    """Materialise *client_id*'s snapshot under *dest_path* on *dest*.

    Into a server over SSH, the files travel as tar streams into a staging directory
    beside *dest_path*, renamed onto it once complete (:mod:`ppo_dr.mirror.restore_remote`;
    a refused file leaves *dest_path* untouched and the staging directory for the
    next run to resume); a server that cannot run ``tar`` gets the SFTP path. Onto a
    local disk, files are written in place one by one.

    *parallel* threads pull the files on the thread path; on the process path (see
    the module doc) *processes* worker processes of one thread each do. None picks
    :data:`RESTORE_PROCESSES` for a restore of at least :data:`PROCESS_MIN_BYTES` when
    every source has ``connect`` and the destination is local or *dest_connect* (a
    picklable factory opening a new connection to *dest*) is given; 0 or 1 forces
    the thread path. With *data_root* (the server's), a *dest_path* not strictly inside
    it is refused before anything is read or written (its staging sibling must be
    inside too).
    """
    started = time.monotonic()
    check_id(client_id, "client id")
    if snapshot_id != "latest":
        check_snapshot_id(snapshot_id)
    problem = absolute_path_problem(dest_path)
    if problem is None and data_root is not None:
        problem = _outside_problem(dest_path, data_root)
    if problem is not None:
        raise UnsafeInputError(f"restore destination {dest_path!r} refused: {problem}")
    opened = open_sources(sources, key)
    try:
        manifest = load_manifest(opened, client_id, snapshot_id)
    except DamagedDataError as exc:
        if len(opened) < len(sources):  # one it could not open now may hold it intact
            raise TransientError(
                f"{exc}; {len(sources) - len(opened)} source(s) could not be read now"
            ) from exc
        raise
    check_restorable(manifest.entries)
    job = _Job(opened, manifest, dest, dest_path, key, parallel, processes, dest_connect)
    tally = None
    if can_stream_to(dest):
        try:
            tally = _restore_streamed(job)
        except ReceiverMissing as exc:
            log.warning("restore: %s; writing file by file over SFTP instead", exc)
    if tally is None:
        tally = _restore_in_place(job)
    return RestoreResult(
        files=tally.files,
        bytes=tally.bytes,
        duration_s=time.monotonic() - started,
        served_by=tally.served,
        refused=sorted(tally.refused),
        damaged=sorted(tally.damaged),
    )
