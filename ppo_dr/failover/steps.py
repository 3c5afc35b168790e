"""The steps of a failover for one client, without Prefect (the flow wraps each in a task).

Every step is safe to run again: the ledger (:mod:`ppo_dr.store.failovers`) skips the
ones that finished, and each step copes with what a crashed attempt left behind.

=================  =====================================================================
step               what it does, and why it is safe to repeat
=================  =====================================================================
freeze/unfreeze    ``freeze CLIENT`` on an app server: the app answers writes with 503
                   (planned mode), so the final sync holds every acknowledged write
final_sync         a mirror run of just that client on its current home, while frozen
restore_client     the snapshot from the planned mirror (falling back to the others)
                   into ``<data_root>/.ppo-staging/<client>`` on the target, then renamed
                   to ``<data_root>/<data_path>``: the app never serves a half-restored
                   client, and a rerun starts from an empty staging directory
verify, health     in :mod:`ppo_dr.failover.checks` (read-only, so always safe)
switch             the placement compare-and-set with the version read when the failover
                   began; someone else's move fails this client (never retried), our own
                   earlier move (crash before the ledger noted it) counts as done
rollback           placement back if we switched it, staging and restored data removed
                   from the target, source unfrozen in planned mode
seed_new_home      the restored snapshot copied into the new home's repositories
                   (:mod:`ppo_dr.mirror.copy`), so its first mirror run is incremental
=================  =====================================================================
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from ppo_dr.errors import (
    DRError,
    PermanentError,
    PlacementConflict,
    TransientError,
)
from ppo_dr.failover.model import ClientMove
from ppo_dr.fleet_access import FleetAccess, client_path, mirror_plan, repo_path
from ppo_dr.ids import check_id
from ppo_dr.mirror.errors import DamagedDataError
from ppo_dr.mirror.manifest import SNAPSHOT_ID_RE, check_snapshot_id, snapshot_time
from ppo_dr.mirror.restore_remote import ASIDE_MARKER, STAGING_MARKER
from ppo_dr.transport.base import EntryType, Remote

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet
    from ppo_dr.mirror.copy import CopyResult
    from ppo_dr.mirror.results import MirrorTarget
    from ppo_dr.mirror.runbook import ServerSnapshot
    from ppo_dr.store import Placement, Store

log = logging.getLogger(__name__)

STAGING_DIR: Final = ".ppo-staging"
EXEC_TIMEOUT_S: Final = 30.0
JOURNAL: Final = "journal/journal.log"


def switch_reason(plan_id: str) -> str:
    """The placement reason a failover writes: how a rerun recognises its own move."""
    return f"failover {plan_id}"


# --------------------------------------------------------------------------- paths


def staging_path(fleet: Fleet, server_id: str, client_id: str) -> str:
    """``<data_root>/.ppo-staging/<client>`` on *server_id*: where a restore is filled."""
    server = fleet.server(check_id(server_id, "server id"))
    return posixpath.join(server.data_root, STAGING_DIR, check_id(client_id, "client id"))


def remove_restore_leftovers(remote: Remote, dest_path: str) -> int:
    """Delete what unfinished restores into *dest_path* kept beside it for a later run
    (``.ppo-restore-<name>-<snapshot>`` staging, ``.ppo-replaced-<name>-<snapshot>``
    copies); entries removed. Only names of exactly that form, so client ``acme`` never
    matches ``acme-mining``'s leftovers."""
    parent, name = posixpath.split(dest_path.rstrip("/"))
    if remote.stat(parent) is None:
        return 0
    removed = 0
    for entry in remote.listdir(parent):
        base = posixpath.basename(entry.path)
        for marker in (STAGING_MARKER, ASIDE_MARKER):
            prefix = f"{marker}{name}-"
            if base.startswith(prefix) and SNAPSHOT_ID_RE.fullmatch(base[len(prefix) :]):
                removed += remove_tree(remote, entry.path)
    return removed


def remove_tree(remote: Remote, path: str) -> int:
    """Delete *path* and everything under it on *remote*; returns entries removed.

    Directories are made writable first (a restore sets their snapshot modes, which
    may forbid deleting their children). Symlinks are removed, never followed.
    """
    top = remote.stat(path)
    if top is None:
        return 0
    if top.type is not EntryType.DIR:
        remote.remove(path)
        return 1
    remote.chmod(path, 0o700)
    entries = list(remote.walk(path))
    for entry in entries:
        if entry.type is EntryType.DIR:
            remote.chmod(posixpath.join(path, entry.path), 0o700)
    removed = 0
    for entry in reversed(entries):  # children before parents
        full = posixpath.join(path, entry.path)
        if entry.type is EntryType.DIR:
            remote.rmdir(full)
        else:
            remote.remove(full)
        removed += 1
    remote.rmdir(path)
    return removed + 1


# --------------------------------------------------------------------------- sources


def wanted_mirrors(fleet: Fleet, move: ClientMove, mirrors: Sequence[str] | None) -> list[str]:
    """The mirrors to restore *move*'s client from, best first, reachable or not."""
    wanted = list(mirrors or [])
    if not wanted:
        wanted = [m for m in (move.source_mirror, *move.fallback_mirrors) if m]
    if not wanted:
        wanted = [
            m.id
            for m, _ in mirror_plan(fleet, move.from_server, {move.client_id: move.from_server})
        ]
    return list(dict.fromkeys(wanted))


def source_targets(
    access: FleetAccess, move: ClientMove, mirrors: Sequence[str] | None = None
) -> list[MirrorTarget]:
    """The mirrors to restore *move*'s client from, best first: *mirrors* if given, else
    the planned source then its fallbacks (else every mirror of the old home). Each is
    the old home's repository. Unreachable ones are left out; none reachable is
    transient."""
    from ppo_dr.mirror.results import MirrorTarget

    targets: list[MirrorTarget] = []
    problems: list[str] = []
    for mirror_id in wanted_mirrors(access.fleet, move, mirrors):
        mirror = access.server(mirror_id)
        try:
            remote = access.remote(mirror.id)
        except TransientError as exc:
            problems.append(f"{mirror.id}: {exc}")
            continue
        targets.append(
            MirrorTarget(
                mirror_id=mirror.id,
                remote=remote,
                repo_path=repo_path(mirror, move.from_server),
                connect=access.connector(mirror.id),
            )
        )
    if not targets:
        raise TransientError(
            f"no mirror holding {move.client_id} is reachable: {'; '.join(problems)}"
        )
    return targets


# --------------------------------------------------------------------------- freeze


def _exec(access: FleetAccess, server_id: str, command: list[str], timeout: float) -> str:
    remote = access.remote(server_id)
    result = remote.exec(command, timeout=timeout)
    if not result.ok:
        detail = (result.stderr or result.stdout).decode("utf-8", "replace").strip()
        raise PermanentError(
            f"{server_id}: {' '.join(command)} exited {result.exit_status}: "
            f"{detail.splitlines()[0] if detail else 'no output'}"
        )
    return result.stdout.decode("utf-8", "replace")


def freeze(
    access: FleetAccess, client_id: str, server_id: str, timeout: float = EXEC_TIMEOUT_S
) -> None:
    """Make *server_id*'s app refuse writes for *client_id* (503); idempotent. Once it
    returns, every write the app acknowledged is in the client's journal."""
    _exec(access, server_id, ["freeze", check_id(client_id, "client id")], timeout)


def unfreeze(
    access: FleetAccess, client_id: str, server_id: str, timeout: float = EXEC_TIMEOUT_S
) -> None:
    """Let *server_id*'s app accept writes for *client_id* again; idempotent."""
    _exec(access, server_id, ["unfreeze", check_id(client_id, "client id")], timeout)


def final_sync(
    access: FleetAccess,
    client_id: str,
    server_id: str,
    placements: Mapping[str, str] | None = None,
) -> tuple[str, list[str], ServerSnapshot]:
    """Snapshot just *client_id* on its current home while it is frozen.

    Returns (snapshot id, mirrors holding it complete, the run). TransientError if no
    mirror took it (the task retries; the client stays frozen meanwhile).
    """
    from ppo_dr.mirror.runbook import snapshot_app_server

    run = snapshot_app_server(
        access, server_id, [check_id(client_id, "client id")], placements=placements
    )
    complete = [m for m in run.mirror_ids if run.outcome(client_id, m)[0] == "complete"]
    if not complete:
        why = "; ".join(f"{m}: {run.outcome(client_id, m)[1]}" for m in run.mirror_ids)
        raise TransientError(f"final sync of {client_id} on {server_id} reached no mirror: {why}")
    return run.snapshot_id(client_id), complete, run


# --------------------------------------------------------------------------- restore


@dataclass(frozen=True)
class Restored:
    """One client's restore on its new home."""

    client_id: str
    server_id: str
    path: str
    snapshot_id: str
    files: int
    bytes: int
    duration_s: float
    served_by: dict[str, int] = field(default_factory=dict)  # mirror -> files served

    @property
    def source_mirror(self) -> str | None:
        """The mirror that served the most files."""
        busy = [(n, m) for m, n in self.served_by.items() if n]
        return max(busy)[1] if busy else None

    def evidence(self) -> dict[str, Any]:
        """What the ledger and the run record of this restore (JSON)."""
        return {
            "snapshot_id": self.snapshot_id,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.duration_s, 3),
            "source_mirror": self.source_mirror,
            "served_by": self.served_by,
        }


def _damaged_or_transient(why: str, damaged_everywhere: bool) -> DRError:
    """Damage on every mirror is permanent (again gives the same bytes); otherwise a
    mirror that could not be read now may come back, so a retry may succeed."""
    if damaged_everywhere:
        return DamagedDataError(why + " (damaged on every mirror)")
    return TransientError(why)


def restore_client(
    access: FleetAccess,
    move: ClientMove,
    snapshot_id: str | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    processes: int | None = None,
) -> Restored:
    """Restore *move*'s client onto its target: staging directory first, then a rename.

    *snapshot_id* defaults to the planned one. Whatever a crashed attempt left in the
    staging directory is removed first. If the final directory exists (an earlier
    attempt of this step that crashed after its rename, or stale data of a former
    home), it is moved aside and removed after the swap; the client is not placed on
    the target yet, so no write can have landed there.

    Blobs damaged on one mirror come from the next one given. A file that no mirror
    could serve raises DamagedDataError (permanent: do not retry) when every mirror
    was read and had it damaged, else TransientError (a mirror could not be read for
    now, so a retry may find it).
    """
    from ppo_dr.mirror.restore import restore

    sid = snapshot_id or move.snapshot_id
    if not sid:
        raise PermanentError(f"no snapshot to restore {move.client_id} from: plan names none")
    check_snapshot_id(sid)
    client = check_id(move.client_id, "client id")
    fleet = access.fleet
    target = access.server(move.to_server)
    if target.id == move.from_server:
        raise PermanentError(f"{client}: target {target.id} is its current home")
    sources = source_targets(access, move, mirrors)
    dest = access.remote(target.id)
    staging = staging_path(fleet, target.id, client)
    final = client_path(fleet, client, server_id=target.id)
    started = time.monotonic()
    if dest.stat(target.data_root) is None:  # never recreate a vanished disk's root
        raise TransientError(f"{target.id}: data root {target.data_root} is missing")
    remove_tree(dest, staging)
    dest.mkdir_p(posixpath.dirname(staging), 0o700)
    why = f"restore of {client} onto {target.id} from {', '.join(t.mirror_id for t in sources)}"
    wanted = set(wanted_mirrors(fleet, move, mirrors))  # pure: which mirrors must be read
    try:
        result = restore(
            sources,
            client,
            sid,
            dest,
            staging,
            key=access.mirror_key,
            processes=processes,
            dest_connect=access.connector(target.id),
        )
    except DamagedDataError as exc:  # the snapshot's own manifest or trees
        raise _damaged_or_transient(
            f"{why}: {exc}", {t.mirror_id for t in sources} >= wanted
        ) from exc
    if result.refused:
        raise _damaged_or_transient(
            f"{why}: {len(result.refused)} file(s) no mirror could serve intact, "
            f"first {result.refused[0]!r}",
            # every copy damaged, and every wanted mirror read (served_by: those opened)
            len(result.damaged) == len(result.refused) and set(result.served_by) >= wanted,
        )
    dest.mkdir_p(posixpath.dirname(final))
    aside = None
    if dest.stat(final) is not None:
        aside = f"{staging}.old-{int(time.time())}"
        dest.rename(final, aside)
    dest.rename(staging, final)
    if aside is not None:
        remove_tree(dest, aside)
    return Restored(
        client_id=client,
        server_id=target.id,
        path=final,
        snapshot_id=sid,
        files=result.files,
        bytes=result.bytes,
        duration_s=time.monotonic() - started,
        served_by=dict(result.served_by),
    )


# --------------------------------------------------------------------------- switch


def switch(
    store: Store,
    move: ClientMove,
    expected_version: int,
    *,
    plan_id: str,
    flow_run_id: str | None = None,
) -> Placement:
    """Move the client's placement to the target if it is still at *expected_version*.

    Someone else's move in between is a :class:`PlacementConflict` (fail the client; do
    not retry). If the placement is already on the target by this plan's own earlier
    move (a crash between the move and the ledger), that placement is returned.
    """
    reason = switch_reason(plan_id)
    try:
        return store.move_client(
            move.client_id,
            move.to_server,
            expected_version,
            flow_run_id=flow_run_id,
            reason=reason,
        )
    except PlacementConflict:
        now = store.placement(move.client_id)
        if (
            now is not None
            and now.server_id == move.to_server
            and now.reason == reason
            and now.version == expected_version + 1
        ):
            return now
        raise


# --------------------------------------------------------------------------- rollback


def rollback(
    access: FleetAccess,
    store: Store,
    move: ClientMove,
    *,
    plan_id: str,
    planned: bool,
    flow_run_id: str | None = None,
) -> list[str]:
    """Undo what this plan did for *move*'s client; returns what was undone, in words.

    Routing first (only a placement this plan made is moved back, with a
    compare-and-set), then the target's staging and restored directories (only while
    the client is not placed there), then, in planned mode, the source is unfrozen so
    the client takes writes again where it always lived. If routing had been switched,
    the target may have acknowledged writes since: its copy is then kept (renamed into
    the staging area, where the app does not serve it) for an operator to reconcile,
    never deleted. A step that cannot be done now (the target is gone) is reported, not
    raised: the rest still happens.
    """
    done: list[str] = []
    client = check_id(move.client_id, "client id")
    now = store.placement(client)
    switched = (
        now is not None and now.server_id == move.to_server and now.reason == switch_reason(plan_id)
    )
    if switched:
        assert now is not None
        store.move_client(
            client,
            move.from_server,
            now.version,
            flow_run_id=flow_run_id,
            reason=f"rollback of failover {plan_id}",
        )
        done.append(f"placement back to {move.from_server}")
        now = store.placement(client)
    if now is None or now.server_id != move.to_server:
        try:
            dest = access.remote(move.to_server)
            staging = staging_path(access.fleet, move.to_server, client)
            final = client_path(access.fleet, client, server_id=move.to_server)
            removed = remove_tree(dest, staging)
            if switched and dest.stat(final) is not None:
                kept = f"{staging}.kept-{int(time.time())}"
                dest.rename(final, kept)
                done.append(f"{move.to_server}'s copy kept at {kept} (it served after the switch)")
            else:
                removed += remove_tree(dest, final)
            if removed:
                done.append(f"restored data removed from {move.to_server}")
        except DRError as exc:
            done.append(f"could not clean {move.to_server}: {exc}")
    if planned:
        try:
            unfreeze(access, client, move.from_server)
            done.append(f"unfrozen on {move.from_server}")
        except DRError as exc:
            done.append(f"could not unfreeze on {move.from_server}: {exc}")
    return done


# --------------------------------------------------------------------------- new home


def seed_new_home(
    access: FleetAccess,
    move: ClientMove,
    snapshot_id: str,
    *,
    source_mirrors: Sequence[str] | None = None,
    new_mirrors: Sequence[str] | None = None,
) -> list[CopyResult]:
    """Copy the restored snapshot into the new home's repository on each of its mirrors
    (planned pair, else what :func:`mirror_plan` says), from the first source mirror
    that works. A new mirror that cannot be reached is skipped (its first mirror run
    is then a full one); the copies that happened are returned."""
    from ppo_dr.mirror.copy import copy_snapshot
    from ppo_dr.mirror.errors import RepositoryLocked
    from ppo_dr.mirror.results import MirrorTarget

    fleet = access.fleet
    sources = source_targets(access, move, source_mirrors)
    placed = {move.client_id: move.to_server}
    wanted = list(new_mirrors or move.new_mirrors) or [
        m.id for m, _ in mirror_plan(fleet, move.to_server, placed)
    ]
    results: list[CopyResult] = []
    for mirror_id in wanted:
        mirror = access.server(mirror_id)
        try:
            dest = MirrorTarget(
                mirror.id, access.remote(mirror.id), repo_path(mirror, move.to_server)
            )
        except TransientError as exc:
            log.warning("seed of %s on %s skipped: %s", move.client_id, mirror.id, exc)
            continue
        problems: list[str] = []
        for source in sources:
            try:
                results.append(
                    copy_snapshot(
                        source,
                        dest,
                        move.client_id,
                        snapshot_id,
                        dest_app_server=move.to_server,
                        key=access.mirror_key,
                        compression=fleet.mirror.compression,
                    )
                )
                break
            except RepositoryLocked:
                raise  # the new home's mirror run holds it: the task retries later
            except DRError as exc:
                problems.append(f"{source.mirror_id}: {exc}")
        else:
            log.warning("seed of %s on %s failed: %s", move.client_id, mirror.id, problems)
    return results


# --------------------------------------------------------------------------- evidence


def rpo_seconds(snapshot_id: str, declared_at: datetime) -> float:
    """Age of snapshot *snapshot_id* at *declared_at* (0 for one taken after it)."""
    return max(0.0, (declared_at - snapshot_time(check_snapshot_id(snapshot_id))).total_seconds())


__all__ = [
    "STAGING_DIR",
    "Restored",
    "final_sync",
    "freeze",
    "remove_tree",
    "restore_client",
    "rollback",
    "rpo_seconds",
    "seed_new_home",
    "source_targets",
    "staging_path",
    "switch",
    "switch_reason",
    "unfreeze",
    "wanted_mirrors",
]
