"""The content hash of a snapshot: sha256 of the bytes a mirror's repository stores as
the snapshot's root object (its manifest, sealed as written). The catalogue keeps it, so
an evidence bundle names exactly which stored object a restore started from; whatever the
manifest's format, this one function decides which bytes are hashed."""

from __future__ import annotations

import hashlib

from ppo_dr.mirror.repository import Repository


def snapshot_root_sha256(repo: Repository, client_id: str, snapshot_id: str) -> str:
    """sha256 (hex) of *snapshot_id*'s root object of *client_id* as *repo* stores it."""
    stored = repo.remote.read_bytes(repo.manifest_path(client_id, snapshot_id))
    return hashlib.sha256(stored).hexdigest()
