"""The values the mirror API takes and returns (the flows, CLI and catalogue use them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from ppo_dr.transport.base import Remote


@dataclass(frozen=True)
class MirrorTarget:
    """One app server's repository on one mirror server.

    *connect*, if given, is a picklable factory opening a NEW connection to the same
    mirror (e.g. ``functools.partial(SshRemote.connect, host, port, user, key_file,
    known_hosts)``); snapshots then upload this mirror's packs from a separate process
    (see :mod:`ppo_dr.mirror.uploader`). Without it uploads run on a thread.
    """

    mirror_id: str
    remote: Remote
    repo_path: str
    connect: Callable[[], Remote] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ClientSource:
    """A client's data directory on the app server (absolute path)."""

    client_id: str
    path: str


@dataclass
class MirrorOutcome:
    """What one client's snapshot did on one mirror."""

    ok: bool
    error: str | None
    bytes_sent: int
    new_chunks: int
    snapshot_written: bool


@dataclass
class ClientSnapshotResult:
    """One client's snapshot across all mirrors."""

    client_id: str
    snapshot_id: str
    per_mirror: dict[str, MirrorOutcome]
    files_scanned: int
    files_changed: int
    bytes_read: int
    duration_s: float
    changed_during_read: list[str]


@dataclass(frozen=True)
class SnapshotInfo:
    """A snapshot as listed: who, when, how much."""

    client_id: str
    snapshot_id: str
    taken_at: datetime
    files: int
    bytes: int


@dataclass(frozen=True)
class Problem:
    """One thing verify found wrong; *path* is "" when no single file is concerned."""

    mirror_id: str
    client_id: str
    snapshot_id: str
    path: str
    detail: str


@dataclass
class VerifyReport:
    """What verify checked and found."""

    ok: bool
    problems: list[Problem] = field(default_factory=list)
    packs_checked: int = 0
    bytes_checked: int = 0


@dataclass
class RestoreResult:
    """What restore wrote, and which mirror served how many blobs.

    ``refused``: files no source could serve intact (not written). ``damaged``: those of
    them every source holding them had damaged or lost (permanent, unlike a source that
    could not be read for now).
    """

    files: int
    bytes: int
    duration_s: float
    served_by: dict[str, int]
    refused: list[str]
    damaged: list[str] = field(default_factory=list)


@dataclass
class PruneResult:
    """What prune removed and kept (kept: "client/snapshot" ids)."""

    removed_snapshots: list[str]
    removed_packs: int
    freed_bytes: int
    kept: list[str]
