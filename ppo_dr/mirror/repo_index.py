"""The index side of a repository (``Repository`` inherits it): listing, reading,
merging and writing index files, through the local copies and the merged cache
(``ppo_dr.mirror.index_cache``, ``ppo_dr.mirror.index``). Split from repository.py
to keep each module readable; the attributes below are set by ``Repository``."""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import struct
from typing import Any

from ppo_dr.mirror.codec import Codec
from ppo_dr.mirror.errors import DamagedDataError, RepositoryError
from ppo_dr.mirror.index import (
    BlobLocation,
    Index,
    IndexColumns,
    PackRows,
    index_document,
    packs_of,
)
from ppo_dr.mirror.index_cache import IndexCache
from ppo_dr.mirror.packs import FinishedPack
from ppo_dr.transport.base import EntryType, Remote, is_temp_name

log = logging.getLogger("ppo_dr.mirror.repository")


class IndexFiles:
    """Index files of one repository: which blob is where."""

    remote: Remote
    path: str
    codec: Codec
    where: str
    suffix: str
    _index: Index | None  # the last index loaded: where trees are
    _cache: IndexCache | None
    _cache_key: str
    _parsed: dict[str, PackRows]  # index files parsed (without columns)
    _columns: IndexColumns | None  # the last index loaded, in columns
    _pack_sizes: dict[str, int] | None
    _noted: list[tuple[str, Any]]  # index files written since the load

    def _init_index(self, mirror_id: str) -> None:
        self._index = None
        self._cache = IndexCache.default()
        self._cache_key = IndexCache.repo_key(mirror_id, self.path)
        self._parsed = {}
        self._columns = None
        self._pack_sizes = None
        self._noted = []

    def _p(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    # ----- index -----------------------------------------------------------------------

    def index_files(self) -> list[str]:
        """Names of the index files (temporary leftovers excluded)."""
        return [
            s.name
            for s in self.remote.listdir(self._p("index"))
            if s.type is EntryType.FILE
            and not is_temp_name(s.name)
            and s.name.endswith(self.suffix)
        ]

    def read_index_file(self, name: str, *, cached: bool = True) -> PackRows:
        """One index file: pack id -> (pack size, blobs). With *cached*, a copy kept on
        this machine serves (:mod:`ppo_dr.mirror.index_cache`); verify reads the mirror's."""
        try:
            return packs_of(self._index_document(name, cached))
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryError(f"{self.where}: index/{name}: unreadable ({exc})") from None

    def _index_document(self, name: str, cached: bool = True) -> Any:
        """An index file's JSON document, read (or its kept copy) and checked against
        its name; RepositoryError if it is not JSON."""
        where = f"{self.where}: index/{name}"
        digest = name.removesuffix(self.suffix)
        cache = self._cache if cached else None
        stored = cache.get(self._cache_key, name, digest) if cache is not None else None
        if stored is None:  # a kept copy was checked against its name by the cache
            stored = self.remote.read_bytes(self._p("index", name))
            if hashlib.sha256(stored).hexdigest() != digest:
                raise DamagedDataError(f"{where}: content does not match its name (damaged)")
            if cache is not None:
                cache.put(self._cache_key, name, stored)
        try:
            return json.loads(self.codec.open_document(stored, where))
        except ValueError as exc:
            raise RepositoryError(f"{where}: unreadable ({exc})") from None

    def _columns_for(self, names: list[str]) -> IndexColumns | None:
        """The files *names* as columns, from the merged cache (``ppo_dr.mirror.index``)
        plus the files it lacks, parsed; the cache is stored again when that changed
        it. None when there is no cache (``PPO_DR_INDEX_CACHE=off``) or a file cannot
        be held in columns (then the caller merges the files one by one)."""
        cache = self._cache
        if cache is None:
            return None
        base = self._columns
        if base is None:
            stored = cache.get_merged(self._cache_key)
            if stored is not None:
                try:
                    base = IndexColumns.from_bytes(stored, self.codec)
                except (ValueError, KeyError, TypeError, struct.error) as exc:
                    log.info("%s: merged index cache ignored, rebuilt (%s)", self.where, exc)
        base = base or IndexColumns()

        def add(columns: IndexColumns, name: str) -> None:
            packs = self._parsed.get(name)  # written by this object
            if packs is not None:
                columns.add_file(name, packs)
                return
            doc = self._index_document(name)
            try:
                columns.add_document(name, doc)
            except (KeyError, TypeError) as exc:
                raise RepositoryError(f"{self.where}: index/{name}: unreadable ({exc})") from None

        try:
            columns = base.select(names, add)
        except ValueError as exc:  # an id that is not hex: never in a file we write
            log.info("%s: index kept unmerged (%s)", self.where, exc)
            cache.drop_merged(self._cache_key)
            return None
        if columns.files != base.files:
            cache.put_merged(self._cache_key, columns.to_bytes(self.codec))
        self._columns, self._noted = columns, []
        return columns

    def load_index(self) -> Index:
        """Every index file merged: which blob is in which pack. The listing is read
        each time; a file parsed before by this object, or kept on this machine (as
        a file, or merged with the others, parsed), is not read again (each is named
        by its content's hash)."""
        names = self.index_files()
        columns = self._columns_for(names)
        if columns is not None:
            index = columns.to_index()
        else:
            index = Index()
            parsed = {}
            for name in names:
                packs = self._parsed.get(name)
                if packs is None:
                    packs = self.read_index_file(name)
                parsed[name] = packs
                for pack_id, (size, blobs) in packs.items():
                    index.add_pack(pack_id, size, blobs)
                index.files.append(name)
            self._parsed = parsed  # files a prune removed are forgotten
        if self._cache is not None:
            self._cache.keep_only(self._cache_key, names)
        self._index = index
        return index

    def load_known(self) -> dict[str, int]:
        """blob id -> plaintext length of every blob the mirror stores: what a
        snapshot needs of the index, served by the merged cache without building a
        location per blob (:meth:`read_trees` still finds the trees it reads)."""
        names = self.index_files()
        columns = self._columns_for(names)
        if columns is None:
            return {b: loc.raw_length for b, loc in self.load_index().blobs.items()}
        if self._cache is not None:
            self._cache.keep_only(self._cache_key, names)
        self._index = None  # located through the columns
        return columns.known()

    def _locate(self, blob_id: str) -> BlobLocation | None:
        """Where the index last loaded puts *blob_id* (None: not in it, or none loaded)."""
        if self._index is not None:
            return self._index.blobs.get(blob_id)
        return self._columns.location(blob_id) if self._columns is not None else None

    def _pack_size(self, pack_id: str) -> int:
        if self._index is not None:
            return self._index.packs[pack_id]
        assert self._columns is not None  # a blob was located: an index is loaded
        if self._pack_sizes is None or pack_id not in self._pack_sizes:
            self._pack_sizes = self._columns.pack_sizes_by_id()
        return self._pack_sizes[pack_id]

    def write_index(self, packs: list[FinishedPack] | PackRows) -> tuple[str, int]:
        """Write one index file describing *packs*; returns its name and size."""
        if isinstance(packs, list):
            packs = {p.pack_id: (p.size, p.blobs) for p in packs}
        doc = index_document(packs)
        stored = self.codec.seal_document(json.dumps(doc, separators=(",", ":")).encode())
        name = hashlib.sha256(stored).hexdigest() + self.suffix
        self.remote.write_bytes(self._p("index", name), stored, 0o600)
        # Kept parsed and on this machine: neither this run's next load nor the next
        # run's reads it back.
        self._parsed[name] = dict(packs)
        if self._cache is not None:
            self._cache.put(self._cache_key, name, stored)
        self.note_index_file(name, doc)
        return name, len(stored)

    def note_index_file(self, name: str, doc: Any) -> None:
        """An index file written during this run (here, or by an upload process) and
        its document: added to the merged cache by :meth:`save_index_cache`, so the
        next run parses none of this run's files. Thread-safe (a list append)."""
        self._noted.append((name, doc))

    def save_index_cache(self) -> None:
        """Store the merged cache with the files noted since the last load (call when
        no upload is in flight). Nothing if no index was loaded through it; a file
        it cannot hold leaves it to the next load to rebuild."""
        noted, self._noted = self._noted, []
        columns = self._columns
        if self._cache is None or columns is None or not noted:
            return
        held = set(columns.names)
        try:
            for name, doc in noted:
                if name not in held:
                    columns.add_document(name, doc)
                    held.add(name)
        except (ValueError, KeyError, TypeError):
            self._columns = None  # perhaps half added: the next load starts again
            return
        self._cache.put_merged(self._cache_key, columns.to_bytes(self.codec))

    def remove_index_file(self, name: str) -> None:
        self.remote.remove(self._p("index", name))
