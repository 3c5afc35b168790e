"""The mirror runbook's API: what the flows, the CLI and the catalogue call.

Each function takes :class:`MirrorTarget` values (a mirror's Remote and the path of
this app server's repository on it) and an optional encryption key (bytes from a
Secret block). Everything else lives in the modules named in each docstring.
"""

from __future__ import annotations

from ppo_dr.ids import check_id
from ppo_dr.mirror.manifest import snapshot_time
from ppo_dr.mirror.prune import prune
from ppo_dr.mirror.repository import Repository
from ppo_dr.mirror.restore import restore
from ppo_dr.mirror.results import (
    ClientSnapshotResult,
    ClientSource,
    MirrorOutcome,
    MirrorTarget,
    Problem,
    PruneResult,
    RestoreResult,
    SnapshotInfo,
    VerifyReport,
)
from ppo_dr.mirror.snapshot import snapshot_server
from ppo_dr.mirror.verify import verify, verify_written

__all__ = [
    "ClientSnapshotResult",
    "ClientSource",
    "MirrorOutcome",
    "MirrorTarget",
    "Problem",
    "PruneResult",
    "RestoreResult",
    "SnapshotInfo",
    "VerifyReport",
    "ensure_repository",
    "list_snapshots",
    "prune",
    "restore",
    "snapshot_server",
    "verify",
    "verify_written",
]


def ensure_repository(
    target: MirrorTarget,
    *,
    app_server: str,
    key: bytes | None = None,
    compression: str = "auto",
) -> None:
    """Create the repository if absent; if present, check it is *app_server*'s and
    that *key* opens it (WrongKeyError / RepositoryError otherwise). *compression*
    ("auto", "zstd", "none") applies at creation only; config.json holds it after."""
    check_id(target.mirror_id, "mirror id")
    Repository.open_or_init(
        target.remote,
        target.repo_path,
        target.mirror_id,
        app_server=app_server,
        key=key,
        compression=compression,
    )


def list_snapshots(
    target: MirrorTarget, client_id: str | None = None, *, key: bytes | None = None
) -> list[SnapshotInfo]:
    """Snapshots on *target* (one client's or all), oldest first per client."""
    check_id(target.mirror_id, "mirror id")
    if client_id is not None:
        check_id(client_id, "client id")
    repo = Repository.open(target.remote, target.repo_path, target.mirror_id, key)
    clients = [client_id] if client_id is not None else repo.list_clients()
    found: list[SnapshotInfo] = []
    for client in clients:
        for sid in repo.list_snapshot_ids(client):
            manifest = repo.read_manifest(client, sid)
            found.append(
                SnapshotInfo(client, sid, snapshot_time(sid), manifest.files, manifest.total_bytes)
            )
    return found
