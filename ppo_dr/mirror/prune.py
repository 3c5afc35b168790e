"""Retention: which snapshots to keep, and removing what nothing references any more.

The policy is restic's: keep the newest ``keep_last`` snapshots, plus the newest
snapshot of each of the ``keep_hourly`` most recent hours that have one, likewise
days and ISO weeks; a snapshot kept by any rule is kept. Applied per client.

Under the repository lock, in an order that is safe to interrupt anywhere:
1. delete the manifests of snapshots not kept (a snapshot stops existing first);
2. write one new index describing the packs that still hold a referenced blob;
3. delete the old index files; 4. delete the packs nothing references (including
packs a crashed run left without an index). A pack holding both live and dead blobs
is kept whole (no repacking yet), so freed space lags by up to one pack per run.
A kept snapshot references its files' chunks and its tree objects (version 2), so the
trees of live snapshots are never pruned.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from ppo_dr.ids import check_id
from ppo_dr.mirror.errors import RepositoryError
from ppo_dr.mirror.lock import RepositoryLock
from ppo_dr.mirror.manifest import snapshot_time
from ppo_dr.mirror.repository import BlobLocation, Repository
from ppo_dr.mirror.results import MirrorTarget, PruneResult

BUCKETS = (("hourly", "%Y-%m-%dT%H"), ("daily", "%Y-%m-%d"), ("weekly", "%G-W%V"))


def select_kept(
    snapshot_ids: Iterable[str],
    *,
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    now: datetime,
) -> set[str]:
    """The snapshot ids the policy keeps (pure; snapshots from the future are kept)."""
    newest_first = sorted(set(snapshot_ids), reverse=True)
    kept = set(newest_first[: max(0, keep_last)])
    kept.update(s for s in newest_first if snapshot_time(s) > now)
    counts = {"hourly": keep_hourly, "daily": keep_daily, "weekly": keep_weekly}
    for name, fmt in BUCKETS:
        seen: set[str] = set()
        for sid in newest_first:
            bucket = snapshot_time(sid).strftime(fmt)
            if bucket in seen:
                continue
            if len(seen) >= counts[name]:
                break
            seen.add(bucket)
            kept.add(sid)
    return kept


def prune(
    target: MirrorTarget,
    *,
    key: bytes | None = None,
    keep_last: int = 1,
    keep_hourly: int = 24,
    keep_daily: int = 7,
    keep_weekly: int = 4,
    now: datetime | None = None,
) -> PruneResult:
    """Apply the retention policy to *target*; see the module docstring."""
    mid = check_id(target.mirror_id, "mirror id")
    now = now or datetime.now(UTC)
    repo = Repository.open(target.remote, target.repo_path, mid, key)
    removed: list[str] = []
    kept_ids: list[str] = []
    with RepositoryLock(target.remote, target.repo_path, "prune", owner="prune"):
        index = repo.load_index()
        referenced: set[str] = set()
        doomed: list[tuple[str, str]] = []
        for client in repo.list_clients():
            ids = repo.list_snapshot_ids(client)
            keep = select_kept(
                ids,
                keep_last=keep_last,
                keep_hourly=keep_hourly,
                keep_daily=keep_daily,
                keep_weekly=keep_weekly,
                now=now,
            )
            for sid in ids:
                if sid in keep:
                    # Unreadable kept manifest: raise, never delete what it may use.
                    manifest = repo.read_manifest(client, sid)
                    referenced.update(manifest.blob_ids())  # its trees too
                    kept_ids.append(f"{client}/{sid}")
                else:
                    doomed.append((client, sid))
        missing = referenced - set(index.blobs)
        if missing:
            raise RepositoryError(
                f"{repo.where}: {len(missing)} referenced blobs are not indexed; "
                "run verify, nothing was pruned"
            )
        for client, sid in doomed:
            repo.remove_manifest(client, sid)
            removed.append(f"{client}/{sid}")

        live: dict[str, tuple[int, dict[str, BlobLocation]]] = {
            pid: (index.packs[pid], blobs)
            for pid, blobs in index.pack_blobs.items()
            if any(b in referenced for b in blobs)
        }
        on_disk = repo.list_packs()
        dead = {pid: size for pid, size in on_disk.items() if pid not in live}
        freed = 0
        if dead or len(index.files) > 1:
            new_name = repo.write_index(live)[0] if live else ""
            for name in index.files:
                if name != new_name:
                    repo.remove_index_file(name)
            for pid, size in dead.items():
                repo.remove_pack(pid)
                freed += size
        repo.sweep_temporaries()
    return PruneResult(
        removed_snapshots=removed, removed_packs=len(dead), freed_bytes=freed, kept=kept_ids
    )
