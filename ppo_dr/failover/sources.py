"""Where each client is restored from, for the failover planner (pure).

Emergency mode: the freshest *verified* snapshot on a mirror that is not down; equally
fresh ones rank on-site (the client's current data centre) first, then same country,
then by mirror id; the other reachable mirrors holding the client follow as
fallbacks. Planned mode: the source server is up and a final sync makes the snapshot,
so the source is its current mirror pair and the snapshot fields stay None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime

from ppo_dr.failover.model import ClientMove, SnapshotInfo
from ppo_dr.inventory import Fleet
from ppo_dr.placement import server_or_none


def restore_candidates(
    fleet: Fleet, down: frozenset[str], snapshots: Iterable[SnapshotInfo], source: str
) -> tuple[list[SnapshotInfo], str]:
    """Reachable verified snapshots (newest per mirror, best first), or why there are none.

    *snapshots* are the catalogue rows of one client, whose server is *source*.
    """
    src = server_or_none(fleet, source)
    src_country = fleet.dc(src.dc).country if src else None
    newest: dict[str, SnapshotInfo] = {}
    unverified: set[str] = set()
    unreachable: set[str] = set()
    for snap in snapshots:
        mirror = server_or_none(fleet, snap.mirror_id)
        if mirror is None or mirror.role != "mirror":
            continue
        if snap.mirror_id in down:
            unreachable.add(snap.mirror_id)
        elif not snap.verified:
            unverified.add(snap.mirror_id)
        else:
            best = newest.get(snap.mirror_id)
            if best is None or (snap.taken_at, snap.snapshot_id) > (
                best.taken_at,
                best.snapshot_id,
            ):
                newest[snap.mirror_id] = snap

    def rank(snap: SnapshotInfo) -> tuple[float, bool, bool, str]:
        mirror = fleet.server(snap.mirror_id)
        return (
            -snap.taken_at.timestamp(),
            src is None or mirror.dc != src.dc,
            fleet.dc(mirror.dc).country != src_country,
            mirror.id,
        )

    ranked = sorted(newest.values(), key=rank)
    if ranked:
        return ranked, ""
    details = [f"{m} is down" for m in sorted(unreachable)]
    details += [f"{m} holds only unverified snapshots" for m in sorted(unverified - set(newest))]
    if not details:
        details.append("no mirror has a snapshot of it catalogued")
    return [], "no verified snapshot on a reachable mirror (" + "; ".join(details) + ")"


def emergency_source(
    fleet: Fleet,
    down: frozenset[str],
    snapshots: Iterable[SnapshotInfo],
    client_id: str,
    source: str,
) -> tuple[ClientMove | None, str]:
    """The move's restore fields from the freshest reachable verified snapshot."""
    ranked, why = restore_candidates(fleet, down, snapshots, source)
    if not ranked:
        return None, why
    best = ranked[0]
    return partial_move(
        client_id,
        source,
        best.mirror_id,
        best.snapshot_id,
        best.taken_at,
        tuple(s.mirror_id for s in ranked[1:]),
        best.size_bytes,
    ), ""


def planned_source(
    fleet: Fleet,
    down: frozenset[str],
    client_id: str,
    source: str,
    size: int,
    pair_of: Callable[[str], tuple[str, ...]],
) -> tuple[ClientMove | None, str]:
    """Planned mode: the source is up; its reachable mirrors (*pair_of* it) take the final sync."""
    if source in down:
        return None, (
            f"planned mode needs its server {source} up for the final sync, and it is "
            "down: plan an emergency failover instead"
        )
    if server_or_none(fleet, source) is None:
        return None, f"its server {source} is not in the fleet file, so it cannot be synced"
    pair = [m for m in pair_of(source) if m not in down]
    if not pair:
        return None, f"planned mode needs a reachable mirror of {source} for the final sync"
    return partial_move(client_id, source, pair[0], None, None, tuple(pair[1:]), size), ""


def partial_move(
    client_id: str,
    source: str,
    mirror: str,
    snapshot_id: str | None,
    snapshot_at: datetime | None,
    fallbacks: tuple[str, ...],
    size: int,
) -> ClientMove:
    """A move with its restore fields set; the target fields are filled in later."""
    return ClientMove(client_id, source, "", mirror, snapshot_id, snapshot_at, fallbacks, (), size)


def with_target(move: ClientMove, to_server: str, new_mirrors: tuple[str, ...]) -> ClientMove:
    """*move* (from :func:`partial_move`) with the target the planner chose for it."""
    return replace(move, to_server=to_server, new_mirrors=new_mirrors)
