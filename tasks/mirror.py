"""Tasks of the mirror runbook: thin wrappers over :mod:`ppo_dr.mirror.runbook`.

Each networked task has a timeout and retries with back-off, and only a transient
error is retried (the shared :func:`tasks.retry_condition_fn`): a changed host key,
a refused key or a hostile id fails at once. Every task is safe to rerun: a retried
snapshot reuses the chunks the failed attempt stored, and re-recording a snapshot
updates its catalogue row.

A task run costs the engine some 0.4-0.6 s on a loaded 2-core machine
(bench/mirror_fleet.py), so a task boundary here is a retry unit or a step an
operator looks for: the scope, the server's slot, the key, the snapshot, the
catalogue and its check, the RPO. Reads of the engine's own API (limits, the
heartbeat event) are plain calls in the flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.events import emit_event

from ppo_dr.errors import AuthError, HostKeyError, PermanentError
from ppo_dr.fleet_access import FleetAccess, client_ids_on, home_server, mirror_plan
from ppo_dr.inventory import Fleet, Server
from ppo_dr.mirror.runbook import (
    ServerSnapshot,
    VerifyOutcome,
    human_bytes,
    record_in_catalogue,
    snapshot_app_server,
    store_url,
    total_sent,
    verify_new_snapshots,
)
from ppo_dr.mirror.status import (
    HOST_KEY_KIND,
    STALE_KIND,
    ClientStatus,
    client_statuses,
    fresh_note,
    host_key_alert,
    stale_after,
    stale_dedupe_key,
    stale_title,
)
from ppo_dr.store import Store
from tasks import io_task, secret_from_block
from tasks.inventory import load_fleet_task
from tasks.slots import ORPHAN_SEEN_S, RECLAIM_EVERY_S, free_slots

#: Event every mirror run emits, whatever its outcome; a Proactive automation on it
#: notices a mirror job that silently stopped running.
HEARTBEAT_EVENT = "ppo-dr.mirror.heartbeat"


def heartbeat_resource(name: str) -> str:
    """``ppo-dr.mirror.<server id>`` (or ``fleet``): what the heartbeat is about."""
    return f"ppo-dr.mirror.{name}"


def create_missing_limits(limits: Mapping[str, int]) -> list[str]:
    """Create the global concurrency limits of *limits* that do not exist yet; the names
    created.

    ``ppo-dr serve`` and ``ppo-dr deploy`` create them for the fleet they know; a fleet
    that gained a server or DC since (or a run outside both) gets them here, because
    our flows take slots with ``strict=True``. Existing limits are never resized. The
    mirror calls this in its flow, not as a task: two reads of the engine's own API,
    where a task run of their own cost more than the reads (bench/mirror_fleet.py).
    """
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    created: list[str] = []
    with get_client(sync_client=True) as client:
        for name, slots in limits.items():
            try:
                client.read_global_concurrency_limit_by_name(name)
                continue
            except ObjectNotFound:
                pass
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=slots)
                )
                created.append(name)
            except ObjectAlreadyExists:
                pass  # another run created it between our read and create
    return created


@task(name="ensure-mirror-limits", **io_task(60))
def ensure_mirror_limits(limits: Mapping[str, int]) -> list[str]:
    """:func:`create_missing_limits` as a task (the failover's and the drill's step)."""
    created = create_missing_limits(limits)
    if created:
        get_run_logger().info("created concurrency limits: %s", ", ".join(created))
    return created


@task(name="mirror-slot-free", **io_task(ORPHAN_SEEN_S + 3 * RECLAIM_EVERY_S))
def slot_free(limit_name: str, store_url: str) -> bool:
    """The skip-if-taken check of the mirror and the drill, a task so the run shows it:
    whether a slot of *limit_name* is free once the slots nobody holds are given back
    (:func:`tasks.slots.free_slots`)."""
    return free_slots(limit_name, store_url)


@task(name="operator-key", **io_task(60))
def operator_key_text(fleet: Fleet) -> str | None:
    """The operator key from a Prefect Secret block, if the fleet names one (else None)."""
    ref = fleet.access.key_secret
    if ref is None or ref.block is None:
        return None
    try:
        return secret_from_block(ref.block)
    except PermanentError as exc:
        raise AuthError(f"access.key_secret: {exc}") from exc


def placements_in(store_url: str) -> dict[str, str]:
    """client -> server from the store's placements (the truth once a client moved)."""
    with Store.open(store_url) as store:
        return {p.client_id: p.server_id for p in store.placements()}


@task(name="current-placements", **io_task(60))
def current_placements(store_url: str) -> dict[str, str]:
    """client -> server from the store's placements (the truth once a client moved)."""
    return placements_in(store_url)


@dataclass(frozen=True)
class MirrorScope:
    """What one mirror run acts on, as the fleet file and the store say now."""

    fleet: Fleet
    store_url: str
    placements: dict[str, str]
    app: Server
    clients: list[str]


@task(name="mirror-scope", task_run_name="mirror-scope-{server_id}", **io_task(120))
def mirror_scope(path: Path, server_id: str, clients: list[str] | None) -> MirrorScope:
    """The fleet, the store's placements, the app server and which of its clients to
    mirror: one step (a bad fleet file or id fails it at once, unretried), where each
    was a task run of its own that cost the engine more than the reads."""
    fleet = load_fleet_task.fn(path)
    url = store_url(fleet)
    placed = placements_in(url)
    app = home_server(fleet, server_id, placed)
    chosen = client_ids_on(fleet, server_id, clients, placed)
    return MirrorScope(fleet, url, placed, app, chosen)


@task(
    name="snapshot-server",
    task_run_name="snapshot-{server_id}",
    **io_task(4 * 3600),
)
def take_snapshots(
    access: FleetAccess,
    server_id: str,
    clients: list[str],
    hook: bool = True,
    placements: Mapping[str, str] | None = None,
) -> ServerSnapshot:
    """Snapshot the clients of an app server to each of its reachable mirrors."""
    log = get_run_logger()
    run = snapshot_app_server(
        access, server_id, clients, hook=hook, progress=None, placements=placements
    )
    sent = total_sent(run)
    log.info(
        "%s: %d client(s) in %.1f s; sent %s",
        server_id,
        len(run.clients),
        run.duration_s,
        ", ".join(f"{m} {human_bytes(b)}" for m, b in sent.items()),
    )
    for mirror_id, why in run.unreachable.items():
        log.warning(
            "%s: mirror %s unreachable, its snapshots are missing: %s", server_id, mirror_id, why
        )
    return run


@task(name="record-and-verify", **io_task(3600))
def record_and_verify(
    access: FleetAccess, store_url: str, run: ServerSnapshot, flow_run_id: str | None
) -> list[VerifyOutcome]:
    """Record each (client, mirror) of the run in the catalogue (complete or missing),
    then quick-verify the mirrors that took snapshots and mark those verified. One
    retry unit: recording again updates the same rows."""
    log = get_run_logger()
    with Store.open(store_url) as store:
        rows = record_in_catalogue(store, run, flow_run_id=flow_run_id)
        counts = {"complete": 0, "missing": 0}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        log.info("catalogue: %s", counts)
        outcomes = verify_new_snapshots(access, store, run)
    for outcome in outcomes:
        if outcome.error:
            log.warning("verify %s not done: %s", outcome.mirror_id, outcome.error)
        for problem in outcome.problems:
            log.error("verify: %s", problem)
    return outcomes


@task(name="assess-rpo", **io_task(120))
def assess_rpo(
    store_url: str,
    fleet: Fleet,
    server_id: str,
    dc: str,
    flow_run_id: str | None,
    placements: Mapping[str, str] | None = None,
) -> list[ClientStatus]:
    """RPO of each client of the server on each of its mirrors, and who is stale; the
    stale clients' incidents opened and the fresh ones' resolved
    (:func:`update_stale_alerts`, in the same step: both are reads and writes of the
    store, safe to repeat)."""
    clients = client_ids_on(fleet, server_id, placements=placements)
    mirrors = [m.id for m, _ in mirror_plan(fleet, server_id, placements)]
    with Store.open(store_url) as store:
        snapshots = [s for c in clients for s in store.snapshots(client_id=c)]
        statuses = client_statuses(
            snapshots,
            clients,
            mirrors,
            now=datetime.now(UTC),
            threshold=stale_after(fleet.timing.mirror_cron),
        )
        update_stale_alerts(store, statuses, server_id, dc, flow_run_id)
    return statuses


def update_stale_alerts(
    store: Store,
    statuses: list[ClientStatus],
    server_id: str,
    dc: str,
    flow_run_id: str | None,
) -> list[int]:
    """Open a non-paging ``mirror-stale`` incident per stale client (once per client),
    and resolve the open one of each client that is fresh again -- whichever server it
    was stale on (a client failed over is mirrored from its new home). The ids opened
    or still open."""
    log = get_run_logger()
    opened: list[int] = []
    still_open = {
        i.dedupe_key: i for i in store.incidents(states=("open", "acknowledged"), kind=STALE_KIND)
    }
    for status in statuses:
        if not status.stale:
            stale = still_open.get(stale_dedupe_key(status.client_id))
            if stale is not None:
                store.resolve(stale.id, "mirror", fresh_note(status, server_id), flow_run_id)
                log.info("incident %s resolved: %s", stale.id, fresh_note(status, server_id))
            continue
        incident, created = store.open_incident(
            STALE_KIND,
            stale_dedupe_key(status.client_id),
            stale_title(status),
            {
                "client": status.client_id,
                "server": server_id,
                "dc": dc,
                "newest_verified": (
                    status.newest_verified.isoformat() if status.newest_verified else None
                ),
                "threshold_s": int(status.threshold.total_seconds()),
            },
            severity="minor",
            paging=False,
            flow_run_id=flow_run_id,
        )
        if created:
            log.warning("incident %s opened: %s", incident.id, incident.title)
        opened.append(incident.id)
    return opened


@task(name="host-key-alert", **io_task(120))
def open_host_key_alert(
    store_url: str, error: HostKeyError, server_id: str, dc: str, flow_run_id: str | None
) -> int:
    """Open (once per server) the non-paging incident for a mirror whose host key changed."""
    changed = error.server_id or server_id
    key, title = host_key_alert(changed, error.offered, error.pinned)
    with Store.open(store_url) as store:
        incident, created = store.open_incident(
            HOST_KEY_KIND,
            key,
            title,
            {
                "server": changed,
                "app_server": server_id,
                "dc": dc,
                "offered": error.offered,
                "pinned": error.pinned,
            },
            severity="major",
            paging=False,
            flow_run_id=flow_run_id,
        )
    if created:
        get_run_logger().warning("incident %s opened: %s", incident.id, title)
    return incident.id


def emit_heartbeat(name: str, payload: dict[str, Any]) -> None:
    """Emit the heartbeat event of the mirror of *name* (a server id, or ``fleet``).

    Not a task: the events client sends in the background, and an event emitted in a
    flow run names that run already."""
    emit_event(
        HEARTBEAT_EVENT,
        resource={"prefect.resource.id": heartbeat_resource(name)},
        payload=payload,
    )
