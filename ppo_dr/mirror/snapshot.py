"""Taking a snapshot: read each changed file once, store its blobs on every mirror.

The pipeline, and why:

- One thread walks the client's directory on the app server; a directory whose
  listing's signature is the one the previous snapshot's table holds on every mirror,
  as are its subdirectories', keeps its tree unread (``ppo_dr.mirror.dir_sigs``). In
  the other directories it quick-checks each file (type, size, mtime) against the
  previous snapshot on every mirror, and reads the files that changed, once,
  cutting large ones with FastCDC and hashing every chunk. Blob ids do not depend
  on the mirror, so each blob is encoded (compressed, encrypted) once and handed to
  every mirror that lacks it.
- A changed file is first cut where its previous version was cut (the old chunks'
  lengths), reusing every chunk whose hash still matches, because the commonest
  changes are appends and in-place writes: an append then costs the new bytes, not
  the old tail chunk again, and an in-place write costs the chunks it touched. At
  the first chunk that differs in a file whose size changed, FastCDC takes over, so
  an insertion still resynchronises at the next content-defined cut. (Measured on
  the bench's 1 % change: -0.33 MB of 3.5 MB per mirror; see :func:`reuse_plan`.)
  A chunk rewritten in place next to unchanged ones is stored cut small (FastCDC
  4-64 KiB): the first write there costs the old chunk's size as before, but pages
  written every hour then cost ~20 KiB each time instead of ~320 KiB.
- Each mirror has a :class:`MirrorSink`: the pack it is filling and an uploader that
  writes finished packs, and an index file per pack, while the reader goes on: a
  thread, or (when the target can open its own connection) a separate process, which
  is what lets two mirrors upload in parallel (PERF-NOTES; ppo_dr.mirror.uploader).
  A crash therefore loses at most the packs in flight; the next run sees everything
  before them in the index and skips it.
- The manifest goes last, after the snapshot's tree objects (one per directory) that
  the mirror lacks: an unchanged directory's tree is already there, so a run that
  changed nothing sends the small manifest and the lock, not the client's file list.
- A mirror that fails (its Remote raises) is dropped for the rest of the run and
  reports ok=False; the other goes on. Its previous manifests are untouched because
  a manifest is only written after all its blobs are stored and indexed.
"""

from __future__ import annotations

import logging
import posixpath
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from pyfastcdc import FastCDC

from ppo_dr.errors import DRError, RemotePathError, UnsafeInputError
from ppo_dr.ids import absolute_path_problem, check_id
from ppo_dr.mirror.codec import Codec
from ppo_dr.mirror.dir_sigs import (
    DirTable,
    Listing,
    Walked,
    listed_rows,
    listings,
    row_stat,
    signature,
    stat_row,
    unlisted_rows,
)
from ppo_dr.mirror.hard_links import hard_link_groups, mark_hard_links
from ppo_dr.mirror.manifest import Entry, Manifest, same_file_stat, snapshot_id_for
from ppo_dr.mirror.repository import (
    CDC_AVG,
    CDC_MAX,
    CDC_MIN,
    REWRITE_AVG,
    REWRITE_MAX,
    REWRITE_MIN,
    SMALL_FILE_LIMIT,
    ExpandedTrees,
)
from ppo_dr.mirror.results import ClientSnapshotResult, ClientSource, MirrorOutcome, MirrorTarget
from ppo_dr.mirror.sink import MirrorSink, describe, open_sink
from ppo_dr.mirror.trees import TreeSet, canonical_order
from ppo_dr.transport.base import EntryType, Remote, RemoteReader, RemoteStat
from ppo_dr.transport.local import LocalRemote

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_ATTEMPTS = 3  # the first read and up to 2 re-reads of a file that changed under us


def reuse_plan(
    previous: Sequence[tuple[str, int]], previous_size: int, size: int
) -> list[tuple[str, int]]:
    """Which of a file's previous chunks (id, length) to try at their old offsets.

    All of them when the size is unchanged (in-place writes keep every boundary); when
    the file grew, all but a last chunk shorter than the chunker's minimum, which is
    cut again together with the appended bytes, so a log that grows a little every run
    does not splinter into tiny chunks (its chunks stay within FastCDC's 64 KiB-2 MiB
    but for the last); when it shrank, the chunks that still fit.
    """
    plan = list(previous)
    if size == previous_size:
        return plan
    if size > previous_size:
        if plan and plan[-1][1] < CDC_MIN:
            plan.pop()
        return plan
    out: list[tuple[str, int]] = []
    end = 0
    for blob_id, length in plan:
        end += length
        if end > size:
            break
        out.append((blob_id, length))
    return out


def _read_exact(reader: RemoteReader, n: int) -> bytes:
    """Up to *n* bytes, fewer only at the end of the file."""
    parts: list[bytes] = []
    while n > 0:
        data = reader.read(n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


class _Prepended:
    """A stream that yields *head* first, then the rest of *reader* (for FastCDC)."""

    def __init__(self, head: bytes, reader: RemoteReader) -> None:
        self._head = memoryview(head)
        self._reader = reader

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            head, self._head = bytes(self._head), memoryview(b"")
            return head + self._reader.read(-1)
        if self._head:
            out, self._head = self._head[:n], self._head[n:]
            return bytes(out)
        return self._reader.read(n)


@dataclass
class FileRead:
    """The outcome of reading one file: its chunk ids and whether it held still."""

    chunks: list[str] = field(default_factory=list)
    bytes_read: int = 0
    stat: RemoteStat | None = None
    stable: bool = True


class ClientReader:
    """Reads files of the app server and feeds each new blob to the sinks lacking it."""

    def __init__(self, source: Remote, sinks: list[MirrorSink]) -> None:
        self.source = source
        self.sinks = sinks
        self.cdc = FastCDC(CDC_AVG, min_size=CDC_MIN, max_size=CDC_MAX)
        self.fine_cdc = FastCDC(REWRITE_AVG, min_size=REWRITE_MIN, max_size=REWRITE_MAX)

    def _blob_id(self, data: bytes | memoryview) -> str:
        live = [s for s in self.sinks if s.error is None]
        return live[0].codec.blob_id(data) if live else ""

    def _store(self, data: bytes | memoryview, blob_id: str | None = None) -> str:
        live = [s for s in self.sinks if s.error is None]
        if blob_id is None:
            blob_id = live[0].codec.blob_id(data) if live else ""
        encoded: dict[Codec, tuple[bytes, bool]] = {}
        for sink in live:
            if blob_id in sink.known:
                continue
            if sink.codec not in encoded:
                encoded[sink.codec] = sink.codec.encode_blob(data)
            stored, compressed = encoded[sink.codec]
            sink.add(blob_id, stored, len(data), compressed)
        return blob_id

    def _read_once(
        self, path: str, st: RemoteStat, previous: tuple[list[tuple[str, int]], int] | None
    ) -> FileRead:
        out = FileRead()
        with self.source.open_read(path) as reader:
            head = b""
            if previous is not None:
                head = self._reuse(reader, out, previous[0], previous[1], st.size)
            # FastCDC reads the file itself (readinto, no copy) unless bytes wait ahead.
            rest: RemoteReader | _Prepended = _Prepended(head, reader) if head else reader
            if st.size - out.bytes_read <= SMALL_FILE_LIMIT:  # the rest is one blob
                data = rest.read(-1)
                out.bytes_read += len(data)
                if len(data) > SMALL_FILE_LIMIT:  # grew since the walk
                    out.chunks += [self._store(c.data) for c in self.cdc.cut_buf(data)]
                elif data:
                    out.chunks.append(self._store(data))
            else:
                for chunk in self.cdc.cut_stream(rest):
                    out.chunks.append(self._store(chunk.data))
                    out.bytes_read += chunk.length
        return out

    def _reuse(
        self,
        reader: RemoteReader,
        out: FileRead,
        previous: list[tuple[str, int]],
        previous_size: int,
        size: int,
    ) -> bytes:
        """Read the file at the previous version's cuts (see :func:`reuse_plan`),
        appending chunk ids and bytes read to *out*; returns the bytes read but not
        chunked (from the first chunk that differs), which are cut with the rest.

        In a file of unchanged size a chunk that differs is kept at its cuts, and cut
        small if a neighbour still matches (a local rewrite: a page written again next
        hour then costs a small chunk); a run of rewritten chunks keeps its large ones
        inside, and a file rewritten whole keeps its cuts, so it does not splinter.
        """
        keep_cuts = size == previous_size
        left_matched = False
        pending: tuple[bytes, str, bool] | None = None  # (data, id, left neighbour matched)
        for old_id, length in reuse_plan(previous, previous_size, size):
            data = _read_exact(reader, length)
            blob_id = self._blob_id(data) if len(data) == length else ""
            matched = blob_id == old_id
            if len(data) < length or (not matched and not keep_cuts):
                self._put_rewritten(out, pending, right_matched=False)
                return data  # FastCDC cuts it with the rest (a short read: re-read decides)
            self._put_rewritten(out, pending, right_matched=matched)
            pending = None
            if matched:
                out.chunks.append(self._store(data, old_id))
                out.bytes_read += length
            else:
                pending = (data, blob_id, left_matched)
            left_matched = matched
        self._put_rewritten(out, pending, right_matched=False)
        return b""

    def _put_rewritten(
        self, out: FileRead, pending: tuple[bytes, str, bool] | None, *, right_matched: bool
    ) -> None:
        """Store a chunk rewritten in place: cut small next to an unchanged neighbour."""
        if pending is None:
            return
        data, blob_id, left_matched = pending
        if (left_matched or right_matched) and len(data) > REWRITE_MAX:
            out.chunks += [self._store(c.data) for c in self.fine_cdc.cut_buf(data)]
        else:
            out.chunks.append(self._store(data, blob_id))
        out.bytes_read += len(data)

    def read(
        self,
        path: str,
        st: RemoteStat,
        previous: tuple[list[tuple[str, int]], int] | None = None,
    ) -> FileRead | None:
        """Read *path* until two stats around a read agree (at most READ_ATTEMPTS).
        *previous*: the file's last stored version as (chunk id, length) pairs and its
        size, whose cuts are tried first."""
        total = 0
        for _attempt in range(READ_ATTEMPTS):
            try:
                result = self._read_once(path, st, previous)
            except RemotePathError:
                if self.source.stat(path) is None:
                    return None  # deleted since the walk
                raise
            total += result.bytes_read
            after = self.source.stat(path)
            if after is None:
                return None
            if (
                after.type is EntryType.FILE
                and same_file_stat(after, st)
                and result.bytes_read == after.size
            ):
                result.stat, result.bytes_read = after, total
                return result
            st = after
        # Still moving: keep the last read, but record the stat from BEFORE it, so the
        # next run's quick check sees a difference and reads the file again.
        result.stat, result.bytes_read, result.stable = st, total, False
        return result


def _walk(source: Remote, root: str) -> Walked:
    """The client's entries by directory, as rows (``dir_sigs``): from the disk
    without a stat object per entry when the source is local (the common case: the
    worker on the app server), else from the source's walk."""
    if isinstance(source, LocalRemote):
        return source.walk_rows(root)
    return listings(source.walk(root))


def _in_background(fn: Callable[[], T]) -> Callable[[], T]:
    """Start *fn* on a thread; the function returned waits for its result (or raises
    its exception)."""
    out: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # handed to the caller, who decides
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True, name="ppo-dr-background")
    thread.start()

    def result() -> T:
        thread.join()
        if failed:
            raise failed[0]
        return out[0]

    return result


def _entry(st: RemoteStat, chunks: Sequence[str] = (), path: str | None = None) -> Entry:
    is_file = st.type is EntryType.FILE
    return Entry(
        path=st.path if path is None else path,
        type=st.type,
        mode=st.mode,
        mtime=st.mtime,
        size=st.size if is_file else 0,
        target=st.link_target,
        chunks=tuple(chunks),
        mtime_ns=st.mtime_ns if is_file else None,
        inode=st.inode if is_file else None,
    )


def _kept_entry(st: RemoteStat, previous: Entry | None) -> Entry:
    """The entry of a file that passed the quick check: the previous one itself when
    nothing it records changed (so comparing directories is an identity check and
    nothing is built), else a new one with the previous chunks."""
    assert previous is not None
    if (
        previous.link is None  # hard links are marked again on every run
        and previous.mode == st.mode
        and previous.mtime_ns == st.mtime_ns
        and previous.inode == st.inode
    ):
        return previous
    return _entry(st, previous.chunks)


def _table_rows(
    walked: Walked,
    sigs: Mapping[str, str],
    unlisted: dict[str, Listing],
    listed: list[str],
    entries: list[Entry],
    deviated: set[str],
    links: dict[str, str],
) -> dict[str, Listing]:
    """Every directory's row of the new table (``dir_sigs``): the reused ones' and
    the listed ones' whose entries are recorded as walked, from the walk; the others
    (*deviated*, or holding a hard link: never reused) from their recorded entries."""
    redo = deviated | {posixpath.dirname(p) for p in links}
    same = [d for d in listed if d not in redo]
    rows = {**unlisted, **unlisted_rows(walked, sigs, same)}
    redo &= set(listed)
    if redo:
        mine = [e for e in entries if posixpath.dirname(e.path) in redo]
        rows.update(listed_rows(mine, redo))
    return rows


def _reused_unlisted(
    walked: Walked, sigs: Mapping[str, str], sinks: list[MirrorSink], links: dict[str, str]
) -> dict[str, Listing]:
    """The directories every live mirror keeps by signature (``dir_sigs``), whose
    entries are then neither listed nor checked; each mirror's own reusable ones are
    left in its ``kept``. Directories holding hard links are never reused."""
    live = [s for s in sinks if s.error is None]
    if not live or any(s.table is None for s in live):
        return {}  # a mirror without a table lists every directory
    never = {posixpath.dirname(p) for p in links}
    for sink in live:
        sink.reuse(walked, sigs, never)
    common = set.intersection(*(set(s.kept) for s in live))
    return unlisted_rows(walked, sigs, common)


def snapshot_client(
    source: Remote,
    app_server: str,
    client: ClientSource,
    sinks: list[MirrorSink],
    snapshot_id: str,
    hook: Callable[[str], None] | None,
    progress: Callable[[str], None] | None,
    read_all: bool = False,
) -> ClientSnapshotResult:
    """One client to every live mirror; see the module docstring. *read_all*: no
    quick check, every file is read and hashed (its unchanged chunks still not sent)."""
    started = time.monotonic()
    errors: dict[str, str] = {}
    live = [s for s in sinks if s.error is None]
    for sink in sinks:
        if sink.error is not None:
            errors[sink.target.mirror_id] = sink.error
    if hook is not None:
        try:
            hook(client.client_id)
        except Exception as exc:  # a failed pre-snapshot command skips this client only
            for sink in live:
                errors[sink.target.mirror_id] = f"pre-snapshot hook failed: {describe(exc)}"
            live = []
    tables: dict[str, DirTable] = {}  # directory tables read, by blob id
    for sink in live:
        sink.begin_client(client.client_id, tables)
    reader = ClientReader(source, live)
    top: RemoteStat | None = None
    entries: list[Entry] = []
    changed_during_read: list[str] = []
    unreadable: list[str] = []
    unlisted: dict[str, Listing] = {}
    listed: list[str] = []
    # Listed directories whose entries are not recorded as walked (a file unreadable,
    # gone, or changed by the time it was read): their table rows come from the
    # entries; the others' from the walk (the same rows, already hashed).
    deviated: set[str] = set()
    walked: Walked = {}
    sigs: dict[str, str] = {}
    groups: dict[str, str] = {}
    scanned = changed = bytes_read = 0
    try:

        def find() -> dict[str, str]:
            return hard_link_groups(source, client.path) if live else {}

        # find (hard links) runs beside the walk only on a local source: over SSH an
        # exec that fails retires the connection the walk reads through (seen: a
        # listing cut with "Socket is closed"), so there it runs after the walk.
        beside = isinstance(source, LocalRemote)
        finding = _in_background(find) if beside else find
        walked = _walk(source, client.path) if live else listings(())
        groups = finding()
        sigs = {d: signature(rows) for d, rows in walked.items()}  # each listing's
        unlisted = {} if read_all else _reused_unlisted(walked, sigs, live, groups)
        listed = [d for d in walked if d not in unlisted]  # the others' trees are kept
        for sink in live:  # changed since this mirror's snapshot: blobs likely to store
            if sink.table is not None and any(d not in sink.kept for d in listed):
                sink.expect_blobs()  # its uploader connects while we read
        expanded: ExpandedTrees = {}
        parsed: dict[tuple[str, str], list[Entry]] = {}
        for sink in live:
            sink.load_previous(listed, expanded, parsed)
        for directory, row in ((d, row) for d in listed for row in walked[d]):
            st = row_stat(directory, row)
            if st.type is not EntryType.FILE:
                entries.append(_entry(st))
                continue
            scanned += 1
            kept = [] if read_all else [s.unchanged(st) for s in live if s.error is None]
            if (
                kept
                and all(e is not None for e in kept)
                and len({e.chunks for e in kept if e}) == 1
            ):
                entries.append(_kept_entry(st, kept[0]))
                continue
            changed += 1
            layouts = (s.layout(st.path) for s in live if s.error is None)
            previous = next((lay for lay in layouts if lay is not None), None)
            try:
                result = reader.read(posixpath.join(client.path, st.path), st, previous)
            except RemotePathError as exc:
                log.warning("%s: %s unreadable: %s", client.client_id, st.path, exc)
                unreadable.append(st.path)
                deviated.add(directory)
                continue
            if result is None or result.stat is None:
                deviated.add(directory)  # gone since the walk
                continue
            if stat_row(result.stat)[1:] != row[1:]:  # recorded as it was after the read
                deviated.add(directory)
            bytes_read += result.bytes_read
            if not result.stable:
                changed_during_read.append(st.path)
            entries.append(_entry(result.stat, result.chunks, path=st.path))
        top = source.stat(client.path) if live else None  # after the walk: its final mtime
        if groups:  # in the order trees give back, so a link's "first name" is stable
            entries = mark_hard_links(canonical_order(entries), groups)
    except DRError as exc:  # the app server failed us: no manifest for this client
        for sink in live:
            errors[sink.target.mirror_id] = f"reading {source.label}: {describe(exc)}"
        live = []
    for sink in sinks:  # packs already read are stored either way; the next run reuses them
        if sink.error is None and sink in live:
            sink.ship()  # its write_manifest builds the trees, then waits for the uploads
        elif sink.error is None:
            sink.flush()
    kept_files = sum(n for _, n, _ in unlisted.values())
    kept_bytes = sum(size for _, _, size in unlisted.values())
    scanned += kept_files
    run_stats = {
        "files_scanned": scanned,
        "files_changed": changed,
        "bytes_read": bytes_read,
        "changed_during_read": changed_during_read,
        "unreadable": unreadable,
        "dirs_kept": len(unlisted),
        "duration_s": round(time.monotonic() - started, 3),
    }
    manifest = Manifest(
        client.client_id,
        snapshot_id,
        app_server,
        entries,
        run_stats,
        None if top is None else _entry(top, path=""),
        unlisted=(kept_files, kept_bytes),
    )
    rows = _table_rows(walked, sigs, unlisted, listed, entries, deviated, groups) if live else {}
    outcomes: dict[str, MirrorOutcome] = {}
    trees: dict[bytes | None, TreeSet] = {}
    table_bytes: dict[str, bytes] = {}  # the new table by root tree id, made once
    for sink in sinks:
        mid = sink.target.mirror_id
        if sink in live and sink.write_manifest(manifest, trees, rows, table_bytes):
            outcomes[mid] = MirrorOutcome(True, None, sink.bytes_sent, sink.new_chunks, True)
        else:
            error = errors.get(mid) or sink.error or "mirror failed"
            outcomes[mid] = MirrorOutcome(False, error, sink.bytes_sent, sink.new_chunks, False)
    if progress is not None:
        progress(f"{client.client_id}: {scanned} files, {changed} read, {bytes_read} bytes")
    return ClientSnapshotResult(
        client_id=client.client_id,
        snapshot_id=snapshot_id,
        per_mirror=outcomes,
        files_scanned=scanned,
        files_changed=changed,
        bytes_read=bytes_read,
        duration_s=time.monotonic() - started,
        changed_during_read=changed_during_read,
    )


def snapshot_server(
    source: Remote,
    app_server: str,
    clients: Sequence[ClientSource],
    targets: Sequence[MirrorTarget],
    *,
    key: bytes | None = None,
    taken_at: datetime,
    hook: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
    read_all: bool = False,
) -> list[ClientSnapshotResult]:
    """Snapshot every client of *app_server* to every target; see the module doc.
    *read_all*: read and hash every file instead of trusting the quick check (rsync's
    ``--checksum``; for a periodic full run)."""
    check_id(app_server, "app server id")
    for client in clients:
        check_id(client.client_id, "client id")
        problem = absolute_path_problem(client.path)
        if problem is not None:
            raise UnsafeInputError(f"client {client.client_id} path {client.path!r}: {problem}")
    for target in targets:
        check_id(target.mirror_id, "mirror id")
    snapshot_id = snapshot_id_for(taken_at)
    opened = {t.mirror_id: open_sink(t, app_server, key) for t in targets}
    sinks = [s for s in opened.values() if isinstance(s, MirrorSink)]
    down = {mid: s for mid, s in opened.items() if isinstance(s, str)}
    results: list[ClientSnapshotResult] = []
    try:
        for client in clients:
            result = snapshot_client(
                source, app_server, client, sinks, snapshot_id, hook, progress, read_all
            )
            for mid, error in down.items():
                result.per_mirror[mid] = MirrorOutcome(False, error, 0, 0, False)
            results.append(result)
    finally:
        for sink in sinks:
            sink.close()
    return results
