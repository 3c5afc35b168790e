"""Copy one client's snapshot from one repository to another (restic ``copy`` semantics).

Why: after a failover the client's new home gets a new repository on each of its
mirrors. Seeding that repository with the snapshot the client was restored from makes
the new home's first mirror run incremental (the quick check finds every restored file
unchanged: same size and mtime) instead of a full upload of every client.

Only blobs the destination lacks are sent. Each needed blob is cut out of its source
pack and checked against its id (a damaged source copy is refused, never propagated);
its stored bytes are then written verbatim into new packs of the destination, which is
valid because both repositories are opened with the same key (or none), so blob ids
and their encoding are the same. The snapshot's tree objects are built again from its
entries (a version 1 source has none; a version 2 one gives the same ids) and only
those the destination lacks are stored. Order as in a snapshot: packs, then an index
file after each pack, then the manifest last; the destination's writer lock is held
throughout, so a concurrent mirror run of the new home cannot interleave. A copy that
is interrupted leaves at worst packs the next copy (or snapshot) finds in the index;
copying a snapshot the destination already has does nothing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from ppo_dr.errors import PermanentError
from ppo_dr.ids import check_id
from ppo_dr.mirror.errors import RepositoryError
from ppo_dr.mirror.lock import RepositoryLock
from ppo_dr.mirror.manifest import check_snapshot_id
from ppo_dr.mirror.repository import (
    PACK_TARGET_BYTES,
    BlobLocation,
    PackBuilder,
    Repository,
)
from ppo_dr.mirror.results import MirrorTarget
from ppo_dr.transport.base import EntryType


@dataclass(frozen=True)
class CopyResult:
    """What one copy did: blobs and bytes sent, and whether the manifest was written."""

    client_id: str
    snapshot_id: str
    source_mirror: str
    dest_mirror: str
    blobs_needed: int
    blobs_copied: int
    bytes_sent: int  # pack bytes written to the destination (its trees' pack included)
    packs_written: int
    manifest_written: bool  # False: the destination had the snapshot already
    duration_s: float


def copy_snapshot(
    source: MirrorTarget,
    dest: MirrorTarget,
    client_id: str,
    snapshot_id: str,
    *,
    dest_app_server: str,
    key: bytes | None = None,
    compression: str = "auto",
) -> CopyResult:
    """Copy *client_id*'s snapshot *snapshot_id* from *source* to *dest*.

    *dest* is created (as the repository of *dest_app_server*) if it does not exist.
    Raises RepositoryError/DamagedDataError when the source cannot supply the snapshot
    intact, WrongKeyError when *key* does not open both, RepositoryLocked (transient)
    when another writer holds the destination.
    """
    started = time.monotonic()
    client = check_id(client_id, "client id")
    sid = check_snapshot_id(snapshot_id)
    check_id(dest_app_server, "app server id")
    src = Repository.open(
        source.remote, source.repo_path, check_id(source.mirror_id, "mirror id"), key
    )
    dst = Repository.open_or_init(
        dest.remote,
        dest.repo_path,
        check_id(dest.mirror_id, "mirror id"),
        app_server=dest_app_server,
        key=key,
        compression=compression,
    )
    if src.codec.encrypted != dst.codec.encrypted:
        raise PermanentError(
            f"cannot copy between {src.where} and {dst.where}: one is encrypted, the other not"
        )

    def result(needed: int, copied: int, sent: int, packs: int, written: bool) -> CopyResult:
        return CopyResult(
            client, sid, src.mirror_id, dst.mirror_id, needed, copied, sent, packs, written,
            time.monotonic() - started,
        )  # fmt: skip

    if sid in dst.list_snapshot_ids(client):
        return result(0, 0, 0, 0, False)
    manifest = src.read_manifest(client, sid)
    needed = list(
        dict.fromkeys(c for e in manifest.entries if e.type is EntryType.FILE for c in e.chunks)
    )
    with RepositoryLock(dest.remote, dest.repo_path, "copy", owner=dest_app_server):
        have = dst.load_index()
        missing = [b for b in needed if b not in have]
        src_index = src.load_index() if missing else None
        by_pack: dict[str, list[tuple[str, BlobLocation]]] = defaultdict(list)
        for blob_id in missing:
            assert src_index is not None
            loc = src_index.blobs.get(blob_id)
            if loc is None:
                raise RepositoryError(
                    f"{src.where}: snapshot {client}/{sid} names blob {blob_id}, "
                    "which no index lists: verify the source, or copy from another mirror"
                )
            by_pack[loc.pack_id].append((blob_id, loc))
        builder = PackBuilder()
        sent = packs = 0

        def ship() -> None:
            nonlocal builder, sent, packs
            pack = builder.finish(dst.codec)
            sent += dst.write_pack(pack)
            dst.write_index([pack])  # after every pack, so a crash never resends it
            packs += 1
            builder = PackBuilder()

        for pack_id in sorted(by_pack):
            data = src.read_pack(pack_id)
            for blob_id, loc in sorted(by_pack[pack_id], key=lambda item: item[1].offset):
                src.extract_blob(data, blob_id, loc)  # refuses a damaged copy
                stored = bytes(memoryview(data)[loc.offset : loc.offset + loc.length])
                builder.add(blob_id, stored, loc.raw_length, loc.compressed)
                if builder.size >= PACK_TARGET_BYTES:
                    ship()
        if builder.rows:
            ship()
        known = {b: loc.raw_length for b, loc in dst.load_index().blobs.items()}
        sent += dst.store_trees(manifest, known)[0]  # built here: a version 1 source has none
        dst.write_manifest(manifest, known)
    return result(len(needed), len(missing), sent, packs, True)


__all__ = ["CopyResult", "copy_snapshot"]
