"""One mirror repository: config, packs, index files and manifests on a Remote.

Layout under ``<repo_path>`` (docs/repository.md has the byte-level detail)::

    config.json                         format, chunker, compression, encryption descriptor
    packs/<2 hex>/<pack id>             blobs back to back, then a trailer listing them
    index/<index id>.json.zst           which blob sits where in which pack
    snapshots/<client>/<id>.json.zst    one manifest per client per snapshot
    locks/lock                          the writer's lock (see lock.py)

Version 2 (version 1 is still read, and upgraded by its next writer): a manifest names
the root of its tree objects, one blob per directory stored in packs like file chunks
(``ppo_dr.mirror.trees``), so an unchanged directory is not sent again.

Index files and manifests are zstd-compressed JSON, so they are named ``.json.zst``;
in an encrypted repository they are then sealed (AES-256-GCM) and named
``.json.zst.enc``: read the extensions right to left to open one (decrypt,
decompress, parse).

Everything but config and lock is named by the sha256 of its stored bytes (packs,
index) or by client and UTC second (manifests), written once to a temporary name and
renamed into place. Write order is packs -> index -> manifest; a crash leaves
unreferenced garbage at worst, never a reference to something missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import secrets
import struct
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from ppo_dr.errors import RemotePathError
from ppo_dr.ids import check_id, is_valid_id
from ppo_dr.mirror.codec import Codec, key_check
from ppo_dr.mirror.errors import DamagedDataError, RepositoryError
from ppo_dr.mirror.index import (
    INDEX_VERSION,
    BlobLocation,
    Index,
    parse_rows,
)
from ppo_dr.mirror.manifest import Manifest, check_snapshot_id
from ppo_dr.mirror.packs import (
    RANGE_GAP,
    RANGED_MAX_SHARE,
    TRAILER_LEN,
    FinishedPack,
    PackBuilder,
    PackSlices,
    plan_ranges,
    wants_ranges,
)
from ppo_dr.mirror.repo_config import REPO_VERSION, RepoConfig, codec_for
from ppo_dr.mirror.repo_index import IndexFiles
from ppo_dr.mirror.trees import Expanded, TreeSet, build_trees, expand_trees
from ppo_dr.transport.base import EntryType, Remote, is_temp_name

__all__ = [  # defined in .index and .packs, imported from here by their users
    "INDEX_VERSION",
    "RANGED_MAX_SHARE",
    "RANGE_GAP",
    "BlobLocation",
    "FinishedPack",
    "Index",
    "PackBuilder",
    "PackSlices",
    "Repository",
    "plan_ranges",
    "wants_ranges",
]

log = logging.getLogger(__name__)

TREE_CACHE_BYTES = 64 * 1024 * 1024  # tree plaintexts kept per Repository (prune, verify)
#: :meth:`Repository.pack_sizes` lists a pack folder instead of stat-ing more than this
#: many packs in it.
STATS_PER_LISTING = 32
PACK_TARGET_BYTES = 16 * 1024 * 1024
CDC_MIN = 64 * 1024
CDC_AVG = 256 * 1024  # FastCDC's real mean is avg + min, ~320 KiB
CDC_MAX = 2 * 1024 * 1024
SMALL_FILE_LIMIT = 256 * 1024  # files up to this size are one blob
# A chunk rewritten in place is cut again into small chunks (mean ~20 KiB), so the next
# write to the same region (a database's hot pages) costs ~20 KiB, not ~320 KiB.
REWRITE_MIN = 4 * 1024
REWRITE_AVG = 16 * 1024
REWRITE_MAX = 64 * 1024
DOCUMENT_SUFFIX = ".json.zst"  # index files and manifests: zstd-compressed JSON
SEALED_SUFFIX = ".enc"  # appended when the repository is encrypted (AES-256-GCM)
# Snapshots' trees already read, by root tree id (shared by mirrors).
ExpandedTrees = dict[str, Expanded]
CHUNKER: dict[str, Any] = {
    "algorithm": "fastcdc-2020 (pyfastcdc), normalized_chunking=1, seed=0",
    "min_size": CDC_MIN,
    "avg_size": CDC_AVG,
    "max_size": CDC_MAX,
    "small_file_limit": SMALL_FILE_LIMIT,
    "rewritten_chunks": {"min_size": REWRITE_MIN, "avg_size": REWRITE_AVG, "max_size": REWRITE_MAX},
}


class Repository(IndexFiles):
    """A repository on one mirror, opened with (or without) its key."""

    def __init__(
        self, remote: Remote, path: str, mirror_id: str, config: RepoConfig, codec: Codec
    ) -> None:
        self.remote = remote
        self.path = path.rstrip("/") or "/"
        self.mirror_id = mirror_id
        self.config = config
        self.codec = codec
        self.where = f"mirror {mirror_id} ({remote.label}:{self.path})"
        self.suffix = DOCUMENT_SUFFIX + (SEALED_SUFFIX if codec.encrypted else "")
        self._dirs: set[str] = set()
        self._init_index(mirror_id)
        self._trees: dict[str, bytes] = {}  # tree plaintexts read (bounded)
        self._trees_size = 0

    # ----- opening ---------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        remote: Remote,
        path: str,
        mirror_id: str,
        key: bytes | None,
        *,
        app_server: str | None = None,
    ) -> Repository:
        """Open an existing repository; RepositoryError if absent or not ours."""
        where = f"mirror {mirror_id} ({remote.label}:{path})"
        try:
            raw = remote.read_bytes(posixpath.join(path, "config.json"))
        except RemotePathError as exc:
            raise RepositoryError(f"{where}: no repository here ({exc})") from exc
        config = RepoConfig.from_bytes(raw, where)
        if app_server is not None and config.app_server != app_server:
            raise RepositoryError(
                f"{where}: repository belongs to app server {config.app_server!r}, "
                f"not {app_server!r}"
            )
        return cls(remote, path, mirror_id, config, codec_for(config, key, where))

    @classmethod
    def open_or_init(
        cls,
        remote: Remote,
        path: str,
        mirror_id: str,
        *,
        app_server: str,
        key: bytes | None,
        compression: str = "auto",
    ) -> Repository:
        """Open the repository, creating it first if there is none (two creators
        racing: the second one's no-clobber rename fails and it opens the first's)."""
        check_id(app_server, "app server id")
        if remote.stat(posixpath.join(path, "config.json")) is None:
            Codec(compression, key)  # validate arguments before creating anything
            encryption = None
            if key is not None:
                salt = secrets.token_bytes(16)
                encryption = {
                    "algorithm": "AES-256-GCM",
                    "kdf": "HMAC-SHA256(key, label)",
                    "salt": salt.hex(),
                    "key_check": key_check(key, salt),
                }
            config = RepoConfig(
                app_server=app_server,
                compression=compression,
                encryption=encryption,
                chunker=dict(CHUNKER),
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                pack_target_bytes=PACK_TARGET_BYTES,
            )
            for sub in ("packs", "index", "snapshots", "locks"):
                remote.mkdir_p(posixpath.join(path, sub), 0o700)
            temp = posixpath.join(path, f".ppo-tmp-{secrets.token_hex(8)}.config.json")
            remote.write_bytes(temp, config.to_bytes(), 0o600)
            try:
                remote.rename(temp, posixpath.join(path, "config.json"))
            except RemotePathError:
                remote.remove(temp)  # someone else initialised it first: use theirs
        return cls.open(remote, path, mirror_id, key, app_server=app_server)

    # ----- paths -----------------------------------------------------------------------

    def pack_path(self, pack_id: str) -> str:
        return self._p("packs", pack_id[:2], pack_id)

    def manifest_path(self, client_id: str, snapshot_id: str) -> str:
        check_id(client_id, "client id")
        check_snapshot_id(snapshot_id)
        return self._p("snapshots", client_id, f"{snapshot_id}{self.suffix}")

    def _ensure_dir(self, path: str) -> None:
        if path not in self._dirs:
            self.remote.mkdir_p(path, 0o700)
            self._dirs.add(path)

    # ----- packs -----------------------------------------------------------------------

    def write_pack(self, pack: FinishedPack) -> int:
        """Upload a finished pack (temporary name, size checked, renamed into place)."""
        path = self.pack_path(pack.pack_id)
        self._ensure_dir(posixpath.dirname(path))
        with self.remote.open_write(path, 0o600) as writer:
            for part in pack.parts:
                writer.write(part)
        return pack.size

    def read_pack(self, pack_id: str) -> bytes:
        return self.remote.read_bytes(self.pack_path(pack_id))

    def read_pack_ranges(self, pack_id: str, locs: Iterable[BlobLocation]) -> PackSlices:
        """Only the stored bytes of *locs* from pack *pack_id*, one request per range
        of :func:`plan_ranges` (an S3 Range GET, an SFTP read at an offset)."""
        path = self.pack_path(pack_id)
        return PackSlices(
            pack_id,
            tuple(
                (offset, length, self.remote.read_range(path, offset, length))
                for offset, length in plan_ranges(locs)
            ),
        )

    def remove_pack(self, pack_id: str) -> None:
        self.remote.remove(self.pack_path(pack_id))

    def list_packs(self) -> dict[str, int]:
        """Every pack file on the mirror (indexed or not) with its size."""
        found: dict[str, int] = {}
        for sub in self.remote.listdir(self._p("packs")):
            if sub.type is not EntryType.DIR:
                continue
            for st in self.remote.listdir(sub.path):
                if st.type is EntryType.FILE and not is_temp_name(st.name):
                    found[st.name] = st.size
        return found

    def pack_sizes(self, pack_ids: Iterable[str]) -> dict[str, int | None]:
        """The size on the mirror of each of *pack_ids* (None: not there): stat-ed
        together (``Remote.stat_many``: over SFTP a round trip per window of requests),
        except in a folder holding more than :data:`STATS_PER_LISTING` of them, which is
        listed instead (one S3 LIST, one SFTP listing)."""
        by_folder: dict[str, list[str]] = {}
        for pack_id in sorted(set(pack_ids)):
            by_folder.setdefault(posixpath.dirname(self.pack_path(pack_id)), []).append(pack_id)
        sizes: dict[str, int | None] = {}
        single: list[str] = []
        for folder, packs in by_folder.items():
            if len(packs) <= STATS_PER_LISTING:
                single += packs
            elif self.remote.stat(folder) is None:
                sizes.update(dict.fromkeys(packs))
            else:
                listed = {
                    st.name: st.size
                    for st in self.remote.listdir(folder)
                    if st.type is EntryType.FILE
                }
                sizes.update((p, listed.get(p)) for p in packs)
        stats = self.remote.stat_many([self.pack_path(p) for p in single])
        for pack_id, st in zip(single, stats, strict=True):
            sizes[pack_id] = st.size if st is not None and st.type is EntryType.FILE else None
        return sizes

    def extract_blob(self, pack_data: bytes | PackSlices, blob_id: str, loc: BlobLocation) -> bytes:
        """The verified plaintext of *blob_id* from a pack's bytes (whole, or the ranges
        a ranged read fetched); DamagedDataError if it is cut short, fails
        authentication, or does not hash to its id."""
        what = f"{self.where}: pack {loc.pack_id} blob {blob_id}"
        if isinstance(pack_data, PackSlices):
            stored = pack_data.stored(loc)
        else:
            stored = memoryview(pack_data)[loc.offset : loc.offset + loc.length]
        if len(stored) != loc.length:
            raise DamagedDataError(
                f"{what}: pack is truncated", pack_id=loc.pack_id, blob_id=blob_id
            )
        try:
            plain = self.codec.decode_blob(stored, loc.compressed, loc.raw_length, what)
        except DamagedDataError as exc:
            raise DamagedDataError(str(exc), pack_id=loc.pack_id, blob_id=blob_id) from None
        if len(plain) != loc.raw_length or self.codec.blob_id(plain) != blob_id:
            raise DamagedDataError(
                f"{what}: content does not match its hash (damaged)",
                pack_id=loc.pack_id,
                blob_id=blob_id,
            )
        return plain

    def pack_trailer(self, pack_data: bytes, pack_id: str) -> dict[str, BlobLocation]:
        """The blob list a pack carries at its end (for rebuilding a lost index)."""
        what = f"{self.where}: pack {pack_id} trailer"
        try:
            (n,) = TRAILER_LEN.unpack(pack_data[-TRAILER_LEN.size :])
            raw = pack_data[-TRAILER_LEN.size - n : -TRAILER_LEN.size]
            doc = json.loads(self.codec.unseal(raw, what))
            return parse_rows(pack_id, doc["blobs"])
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise DamagedDataError(f"{what}: unreadable ({exc})", pack_id=pack_id) from None

    # ----- manifests -------------------------------------------------------------------

    def list_clients(self) -> list[str]:
        """Clients with a snapshot folder (names that are not valid ids are ignored:
        nothing we write has one, and they must never reach a path or a shell)."""
        return sorted(
            s.name
            for s in self.remote.listdir(self._p("snapshots"))
            if s.type is EntryType.DIR and is_valid_id(s.name)
        )

    def sweep_temporaries(self) -> int:
        """Delete what interrupted writes left (call only while holding the lock)."""
        swept = 0
        folders = [self._p("index"), self._p("snapshots"), self._p("packs"), self.path]
        folders += [
            s.path for s in self.remote.listdir(self._p("packs")) if s.type is EntryType.DIR
        ]
        folders += [posixpath.join(self._p("snapshots"), c) for c in self.list_clients()]
        for folder in folders:
            for st in self.remote.listdir(folder):
                if st.type is EntryType.FILE and is_temp_name(st.name):
                    self.remote.remove(st.path)
                    swept += 1
        return swept

    def list_snapshot_ids(self, client_id: str) -> list[str]:
        """Snapshot ids of *client_id*, oldest first."""
        check_id(client_id, "client id")
        folder = self._p("snapshots", client_id)
        if self.remote.stat(folder) is None:
            return []
        return sorted(
            s.name.removesuffix(self.suffix)
            for s in self.remote.listdir(folder)
            if s.name.endswith(self.suffix) and not is_temp_name(s.name)
        )

    def read_manifest(
        self,
        client_id: str,
        snapshot_id: str,
        expanded: ExpandedTrees | None = None,
        *,
        trees: bool = True,
    ) -> Manifest:
        """A snapshot's manifest with its entries, from the manifest itself (version 1)
        or from its trees (version 2, each tree re-hashed as it is read). *expanded*:
        trees already read by root id (another mirror's copy of the same snapshot: the
        same id is the same content), filled in here. *trees* False: a version 2
        manifest comes back with its root tree id and no entries."""
        path = self.manifest_path(client_id, snapshot_id)
        where = f"{self.where}: snapshot {client_id}/{snapshot_id}"
        stored = self.remote.read_bytes(path)
        manifest = Manifest.from_bytes(self.codec.open_document(stored, where), where)
        root = manifest.tree
        if root is not None and trees:
            known = expanded.get(root) if expanded is not None else None
            if known is None:
                known = expand_trees(root, lambda ids: self.read_trees(ids, where), where)
                if expanded is not None:
                    expanded[root] = known
            manifest.entries, manifest.tree_ids = list(known[0]), known[1]
        return manifest

    def read_trees(self, tree_ids: list[str], where: str) -> dict[str, bytes]:
        """The verified plaintext of tree blobs, read by pack (ranges when only a small
        part of a pack is needed); RepositoryError naming the first one not indexed."""
        out = {t: self._trees[t] for t in tree_ids if t in self._trees}
        wanted = [t for t in tree_ids if t not in out]
        if any(self._locate(t) is None for t in wanted):
            self.load_index()  # packs written since we last looked
        by_pack: dict[str, dict[str, BlobLocation]] = {}
        for tree_id in wanted:
            loc = self._locate(tree_id)
            if loc is None:
                raise RepositoryError(f"{where}: tree {tree_id} is not in the index")
            by_pack.setdefault(loc.pack_id, {})[tree_id] = loc
        for pack_id, locs in by_pack.items():
            data: bytes | PackSlices = (
                self.read_pack_ranges(pack_id, locs.values())
                if wants_ranges(self._pack_size(pack_id), locs.values())
                else self.read_pack(pack_id)
            )
            for tree_id, loc in locs.items():
                out[tree_id] = plain = self.extract_blob(data, tree_id, loc)
                if self._trees_size + len(plain) <= TREE_CACHE_BYTES:
                    self._trees[tree_id] = plain
                    self._trees_size += len(plain)
        return out

    def upgrade_format(self) -> None:
        """Mark a version 1 repository as version 2 before the first version 2 manifest
        goes in (an older ppo-dr then refuses it clearly instead of misreading it).
        Call only while holding the lock; config.json is replaced atomically."""
        if self.config.version >= REPO_VERSION:
            return
        self.config = dataclasses.replace(self.config, version=REPO_VERSION)
        self.remote.write_bytes(self._p("config.json"), self.config.to_bytes(), 0o600)

    def store_trees(
        self,
        manifest: Manifest,
        known: dict[str, int] | None = None,
        trees: TreeSet | None = None,
        table: bytes | None = None,
    ) -> tuple[int, int]:
        """Store the tree objects of *manifest* the mirror lacks (one pack, then its
        index file) and set its root; returns (pack bytes, index bytes). *known*: the
        blob ids the mirror has (id -> plaintext length), updated here; None reads the
        index. *trees*: already built from the entries with this repository's key.
        *table*: the snapshot's directory table (``dir_sigs``), stored with the trees
        and named by the manifest; without it the manifest names none."""
        if known is None:
            known = self.load_known()
        if trees is None:
            trees = build_trees(manifest.entries, self.codec.blob_id)
        lacking = [t for t in trees.all_ids if t not in known and t not in trees.objects]
        if lacking:  # reused from another mirror's previous snapshot: never name it here
            raise RepositoryError(f"{self.where}: tree {lacking[0]} is neither built nor stored")
        builder = PackBuilder()
        blobs, manifest.dirs = dict(trees.objects), None
        if table is not None:
            manifest.dirs = table_id = self.codec.blob_id(table)
            blobs[table_id] = table
        for tree_id, data in blobs.items():
            if tree_id not in known:
                stored, compressed = self.codec.encode_blob(data)
                builder.add(tree_id, stored, len(data), compressed)
                known[tree_id] = len(data)
        manifest.tree, manifest.tree_ids = trees.root, trees.all_ids
        if not builder.rows:
            return 0, 0
        pack = builder.finish(self.codec)
        return self.write_pack(pack), self.write_index([pack])[1]

    def write_manifest(
        self,
        manifest: Manifest,
        known: dict[str, int] | None = None,
        trees: TreeSet | None = None,
        table: bytes | None = None,
    ) -> int:
        """Store the snapshot's missing trees (:meth:`store_trees`), then the manifest
        last, atomically; returns every byte written."""
        packed, indexed = self.store_trees(manifest, known, trees, table)
        self.upgrade_format()
        path = self.manifest_path(manifest.client_id, manifest.snapshot_id)
        self._ensure_dir(posixpath.dirname(path))
        stored = self.codec.seal_document(manifest.to_bytes())
        self.remote.write_bytes(path, stored, 0o600)
        return packed + indexed + len(stored)

    def remove_manifest(self, client_id: str, snapshot_id: str) -> None:
        self.remote.remove(self.manifest_path(client_id, snapshot_id))
