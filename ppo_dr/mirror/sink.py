"""One mirror's side of a snapshot run: what it stores, the pack being filled, and the
uploader that writes finished packs while the reader goes on.

Why a sink per mirror: blob ids do not depend on the mirror, so the reader
(``ppo_dr.mirror.snapshot``) reads and encodes each blob once and hands it to every
sink lacking it; each sink keeps its own index view, previous snapshot (for the quick
check and for reusing unchanged directories' trees) and failure, so one mirror failing
never stops the other.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence

from ppo_dr.errors import DRError
from ppo_dr.mirror.codec import Codec
from ppo_dr.mirror.dir_sigs import DirRow, DirTable, Listing, Walked, reusable, table_for
from ppo_dr.mirror.errors import RepositoryError
from ppo_dr.mirror.index import index_document
from ppo_dr.mirror.lock import RepositoryLock
from ppo_dr.mirror.manifest import Entry, Manifest, same_file_stat
from ppo_dr.mirror.repository import (
    PACK_TARGET_BYTES,
    ExpandedTrees,
    FinishedPack,
    PackBuilder,
    Repository,
)
from ppo_dr.mirror.results import MirrorTarget
from ppo_dr.mirror.trees import DirTrees, TreeSet, build_trees, dir_entries
from ppo_dr.mirror.uploader import UploadProcess
from ppo_dr.transport.base import EntryType, RemoteStat

log = logging.getLogger(__name__)

UPLOAD_QUEUE_PACKS = 2  # finished packs waiting per mirror (memory bound ~3 x 16 MiB)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _TableDirs(Mapping[str, tuple[str, Sequence[Entry]]]):
    """The previous snapshot's directories as ``build_trees`` reads them: those listed
    this run with their entries, the others by their table row (tree id, no entries:
    only their ids are compared). Not a dict of every directory: building one per
    mirror was ~0.05 s a run on a 5,900-directory client."""

    def __init__(self, rows: Mapping[str, DirRow], listed: dict[str, tuple[str, list[Entry]]]):
        self._rows = rows
        self._listed = listed

    def __getitem__(self, directory: str) -> tuple[str, Sequence[Entry]]:
        got = self._listed.get(directory)
        return got if got is not None else (self._rows[directory].tree, ())

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class MirrorSink:
    """One mirror's side of a run: the blobs it has, the pack being filled, an uploader."""

    def __init__(self, target: MirrorTarget, repo: Repository, lock: RepositoryLock) -> None:
        self.target = target
        self.repo = repo
        self.lock = lock
        # blob id -> plaintext length: what this mirror stores, and where the previous
        # version of a file was cut (see reuse_plan)
        self.known: dict[str, int] = repo.load_known()
        self.error: str | None = None
        self.previous: dict[str, Entry] = {}
        self.previous_dirs: DirTrees = {}  # its trees, whose ids unchanged directories keep
        self.head: Manifest | None = None  # the newest manifest, before its trees are read
        self.table: DirTable | None = None  # its directory table, if it has one
        self.kept: dict[str, str] = {}  # directories reused by signature -> their tree ids
        self.bytes_sent = 0
        self.new_chunks = 0
        self._builder = PackBuilder()
        # Started with the first blob this mirror lacks, so it connects while the reader
        # goes on; a run that stores nothing (the 5-minute cadence's common case) then
        # costs no process and no connection.
        self._child: UploadProcess | None = None
        self._starter: threading.Thread | None = None  # starts the child
        self._tables: dict[str, bytes] = {}
        self._queue: queue.Queue[PackBuilder | None] = queue.Queue(UPLOAD_QUEUE_PACKS)
        self._thread = threading.Thread(
            target=self._upload_loop, daemon=True, name=f"upload-{target.mirror_id}"
        )
        self._thread.start()

    @property
    def codec(self) -> Codec:
        return self.repo.codec

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = describe(exc)
            log.error("mirror %s failed: %s", self.target.mirror_id, self.error)

    def begin_client(self, client_id: str, tables: dict[str, DirTable] | None = None) -> None:
        """Reset the per-client counters and read the client's newest manifest (not
        its trees) and its directory table (*tables*: those already read, by blob id:
        the same id is the same table, so another mirror's is not parsed again)."""
        self.bytes_sent = 0
        self.new_chunks = 0
        self.previous, self.previous_dirs, self.head, self.table, self.kept = {}, {}, None, None, {}
        if self.error is not None:
            return
        try:
            ids = self.repo.list_snapshot_ids(client_id)
            if ids:
                self.head = self.repo.read_manifest(client_id, ids[-1], trees=False)
            if self.head is not None and self.head.dirs is not None:
                where = f"{self.repo.where}: snapshot {client_id}/{ids[-1]}"
                table_id = self.head.dirs
                table = tables.get(table_id) if tables is not None else None
                if table is None or table_id not in self.known:
                    data = self.repo.read_trees([table_id], where)[table_id]
                    table = DirTable.from_bytes(data, where)
                    if tables is not None:
                        tables[table_id] = table
                self.table = table if table.root == self.head.tree else None
        except RepositoryError as exc:  # damaged or foreign: read every tree (or file)
            log.warning("mirror %s: previous snapshot: %s", self.target.mirror_id, exc)
        except DRError as exc:
            self.fail(exc)

    def reuse(self, walked: Walked, sigs: Mapping[str, str], never: Collection[str]) -> None:
        """Find the directories whose trees this mirror can keep by signature."""
        if self.table is not None and self.error is None:
            self.kept = reusable(walked, sigs, self.table, self.known, never)

    def load_previous(
        self,
        listed: Collection[str],
        expanded: ExpandedTrees,
        parsed: dict[tuple[str, str], list[Entry]],
    ) -> None:
        """The previous entries of the directories *listed* this run (for the quick
        check and for reusing their trees): only their trees when the previous
        snapshot has a table (*parsed*: by tree id and directory, read once for all
        mirrors sharing them), else all its trees (*expanded*: the same by root)."""
        head = self.head
        if head is None or self.error is not None:
            return
        where = f"{self.repo.where}: snapshot {head.client_id}/{head.snapshot_id}"
        try:
            if self.table is None:
                manifest = self.repo.read_manifest(head.client_id, head.snapshot_id, expanded)
                self.previous = {e.path: e for e in manifest.entries}
                if manifest.tree in expanded:
                    self.previous_dirs = expanded[manifest.tree].dirs
                return
            rows = self.table.dirs
            wanted = {d: rows[d].tree for d in listed if d in rows}
            fetch = {t for d, t in wanted.items() if (t, d) not in parsed}
            got = self.repo.read_trees(sorted(fetch), where) if fetch else {}
            dirs: dict[str, tuple[str, list[Entry]]] = {}
            for directory, tree_id in wanted.items():
                entries = parsed.get((tree_id, directory))
                if entries is None:  # the same id is the same content: parsed once
                    entries = dir_entries(got[tree_id], directory, where, tree_id)
                    parsed[(tree_id, directory)] = entries
                dirs[directory] = (tree_id, entries)
                self.previous.update((e.path, e) for e in entries)
            self.previous_dirs = _TableDirs(rows, dirs)
        except RepositoryError as exc:  # damaged: read everything listed
            log.warning("mirror %s: previous manifest unusable: %s", self.target.mirror_id, exc)
            self.previous, self.previous_dirs = {}, {}
        except DRError as exc:
            self.fail(exc)

    def unchanged(self, st: RemoteStat) -> Entry | None:
        """The previous entry of *st*'s path if *st* passes the quick check here and
        this mirror has all its chunks, else None."""
        prev = self.previous.get(st.path)
        if prev is None or prev.type is not EntryType.FILE or not same_file_stat(prev, st):
            return None
        known, chunks = self.known, prev.chunks
        if len(chunks) == 1:  # most files: one chunk (no generator for them)
            return prev if chunks[0] in known else None
        return prev if all(c in known for c in chunks) else None

    def layout(self, path: str) -> tuple[list[tuple[str, int]], int] | None:
        """The previous version of *path* as (chunk id, length) pairs and its size, if
        this mirror has it whole; None otherwise."""
        prev = self.previous.get(path)
        if prev is None or prev.type is not EntryType.FILE:
            return None
        lengths = [self.known.get(c) for c in prev.chunks]
        if any(n is None for n in lengths) or sum(n or 0 for n in lengths) != prev.size:
            return None
        return [(c, n or 0) for c, n in zip(prev.chunks, lengths, strict=True)], prev.size

    def add(self, blob_id: str, stored: bytes, raw_length: int, compressed: bool) -> None:
        """Queue a blob for this mirror (the caller checked it is not known here)."""
        self.expect_blobs()
        self.known[blob_id] = raw_length
        self.new_chunks += 1
        self._builder.add(blob_id, stored, raw_length, compressed)
        if self._builder.size >= PACK_TARGET_BYTES:
            self._ship()

    def expect_blobs(self) -> None:
        """Start the upload process (if the target has ``connect``), on a thread: it
        connects while the reader goes on, and the upload thread waits for it before
        the first pack. Called with the first blob this mirror lacks, or earlier when
        the walk shows directories changed since the snapshot this mirror has
        (``snapshot_client``); a run that changed nothing starts none."""
        if self._starter is None and self.target.connect is not None and self.error is None:
            self._starter = threading.Thread(
                target=self._start_child, daemon=True, name=f"start-{self.target.mirror_id}"
            )
            self._starter.start()

    def _start_child(self) -> None:
        target, connect = self.target, self.target.connect
        assert connect is not None
        try:
            self._child = UploadProcess(connect, target.repo_path, target.mirror_id, self.codec.key)
        except Exception as exc:  # no uploader: this mirror fails, never the run
            self.fail(exc)

    def _ship(self) -> None:
        builder, self._builder = self._builder, PackBuilder()
        if self.error is None:
            self._queue.put(builder)

    def ship(self) -> None:
        """Ship the partial pack (the uploads go on: :meth:`write_manifest` waits)."""
        if self._builder.rows:
            self._ship()

    def flush(self) -> None:
        """Ship the partial pack and wait until every pack is stored and indexed."""
        self.ship()
        self._queue.join()

    def _upload_loop(self) -> None:
        while True:
            builder = self._queue.get()
            try:
                if builder is None:
                    return
                if self._starter is not None:
                    self._starter.join()  # the child, once it has started (or failed to)
                if self.error is None and self._child is not None:
                    sent, pack_id, size, name = self._child.upload(builder)
                    self.bytes_sent += sent
                    self.repo.note_index_file(name, index_document({pack_id: (size, builder)}))
                elif self.error is None:
                    pack: FinishedPack = builder.finish(self.codec)
                    self.bytes_sent += self.repo.write_pack(pack)
                    self.bytes_sent += self.repo.write_index([pack])[1]
            except Exception as exc:  # any failure drops this mirror, never the run
                self.fail(exc)
            finally:
                self._queue.task_done()

    def write_manifest(
        self,
        manifest: Manifest,
        trees: dict[bytes | None, TreeSet],
        rows: Mapping[str, Listing],
        tables: dict[str, bytes] | None = None,
    ) -> bool:
        """Trees the mirror lacks and the directory table, then the manifest; *trees*:
        built once per key, again for a mirror lacking a tree another mirror's previous
        snapshot let it reuse. *rows*: every directory's row of the table; *tables*:
        the table's bytes already made, by the root tree id they were made for.

        The trees and the table are built while the last packs upload (a run's last
        pack ships only when reading ends), then it waits for every pack and index
        file: the manifest still goes last."""
        if self.error is not None:
            self._queue.join()
            return False
        self._tables = tables if tables is not None else {}
        try:
            key, built = self.codec.key, trees.get(self.codec.key)
            if built is None or any(
                t not in self.known and t not in built.objects for t in built.all_ids
            ):
                built = trees[key] = build_trees(
                    manifest.entries, self.codec.blob_id, self.previous_dirs, self.known, self.kept
                )
            # the same root (a Merkle tree) is the same tree ids, hence the same table
            table = self._tables.get(built.root)
            if table is None:
                table = self._tables[built.root] = table_for(rows, built.by_path).to_bytes()
            self._queue.join()
            if self.error is not None:  # an upload failed: no manifest here
                return False
            self.bytes_sent += self.repo.write_manifest(manifest, self.known, built, table)
            return True
        except DRError as exc:
            self.fail(exc)
            self._queue.join()
            return False

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=600)
        if self._starter is not None:
            self._starter.join()
        self.repo.save_index_cache()  # with this run's index files: the next run parses none
        if self._child is not None:
            self._child.close()
        self.lock.release()


def open_sink(target: MirrorTarget, app_server: str, key: bytes | None) -> MirrorSink | str:
    """A locked, index-loaded sink for *target*, or the error text if it cannot be."""
    try:
        repo = Repository.open_or_init(
            target.remote, target.repo_path, target.mirror_id, app_server=app_server, key=key
        )
        lock = RepositoryLock(target.remote, target.repo_path, "snapshot", owner=app_server)
        lock.acquire()
    except DRError as exc:
        return describe(exc)
    try:
        return MirrorSink(target, repo, lock)
    except DRError as exc:
        lock.release()
        return describe(exc)
