"""Tasks of the DR drill: thin wrappers over :mod:`ppo_dr.failover.drill` (the decisions),
:mod:`ppo_dr.failover.steps` (restore, verify, app health: the failover's own code, so
the drill proves what a failover would do) and the providers.

Networked tasks retry transient errors only (:func:`tasks.retry_condition_fn`). The
scratch server never becomes anyone's home: no placement is read for it, none written,
and the front door is never asked, so production routing is untouched by a drill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from prefect import get_run_logger, task

from ppo_dr.errors import PermanentError
from ppo_dr.failover import checks, steps
from ppo_dr.failover.drill import (
    DRILL_FAILED_KIND,
    NO_SNAPSHOT,
    CanaryTarget,
    ScratchGroup,
    Unplaceable,
    allowed_dcs,
    canary_targets,
    drill_trends,
    failed_dedupe_key,
    histories,
    is_scratch_server,
    kinds_by_client,
    pick_canaries,
    scratch_dcs,
    scratch_groups,
    trend_markdown,
)
from ppo_dr.failover.plan import ClientMove, ProvisionRequest
from ppo_dr.fleet_access import FleetAccess, client_path
from ppo_dr.ids import check_id
from ppo_dr.inventory import Fleet, Server, load_fleet
from ppo_dr.store import Store
from tasks import io_task, secret_from_block
from tasks.failover import provision_server
from tasks.mirror import operator_key_text

#: Incident kind when the drill could not even give back its scratch server.
TEARDOWN_FAILED_KIND: Final = "drill-teardown"


@dataclass(frozen=True)
class CanaryPlan:
    """One canary, its mirror and the newest verified snapshot there (None: nothing to
    restore, which is itself a failed drill)."""

    target: CanaryTarget
    snapshot_id: str | None
    snapshot_server: str | None  # the app server whose repository holds the snapshot
    snapshot_at: datetime | None
    snapshot_bytes: int

    @property
    def client_id(self) -> str:
        return self.target.client_id

    @property
    def mirror_id(self) -> str:
        return self.target.mirror_id

    def move(self, scratch_id: str) -> ClientMove:
        """The canary as a failover step sees it: from its snapshot's repository to the
        scratch server, from this one mirror only (no fallback: the drill tests it)."""
        if self.snapshot_id is None or self.snapshot_server is None:
            raise PermanentError(f"{self.client_id}: no verified snapshot on {self.mirror_id}")
        return ClientMove(
            client_id=self.client_id,
            from_server=self.snapshot_server,
            to_server=scratch_id,
            source_mirror=self.mirror_id,
            snapshot_id=self.snapshot_id,
            snapshot_at=self.snapshot_at,
            fallback_mirrors=(),
            new_mirrors=(),
            size_bytes=self.snapshot_bytes,
        )


@dataclass(frozen=True)
class DrillPlan:
    """Today's canaries grouped by scratch data centre, and the ones no DC may hold."""

    groups: tuple[tuple[ScratchGroup, tuple[CanaryPlan, ...]], ...]
    unplaceable: tuple[Unplaceable, ...]

    @property
    def canaries(self) -> list[CanaryPlan]:
        return [c for _, plans in self.groups for c in plans]


def drill_access(fleet: Fleet) -> FleetAccess:
    """Pooled SSH to *fleet* (which must list the scratch server), key from its reference."""
    return FleetAccess(
        fleet, key_text=operator_key_text.fn(fleet), secret_resolver=secret_from_block
    )


def with_server(fleet: Fleet, server: Server) -> Fleet:
    """*fleet* listing *server* too (a provider may hand out one fleet.yaml lacks: aws)."""
    if any(s.id == server.id for s in fleet.servers):
        return fleet
    return fleet.model_copy(update={"servers": (*fleet.servers, server)})


def _scratch_access(fleet_file: Path, server: Server) -> FleetAccess:
    """SSH access to the fleet with the scratch server in it (``.fleet``)."""
    return drill_access(with_server(load_fleet(fleet_file), server))


# --------------------------------------------------------------------------- planning


@task(name="plan-drill", **io_task(120))
def plan_drill(
    fleet_file: Path,
    url: str,
    clients: list[str] | None,
    per_day: int | None,
    today: date,
    dc: str | None = None,
) -> DrillPlan:
    """Pick today's canaries from the drill history, their mirrors and snapshots, and
    the scratch data centres residency allows (only *dc* if given)."""
    log = get_run_logger()
    fleet = load_fleet(fleet_file)
    known = {c.id for c in fleet.clients}
    chosen = [check_id(c, "client id") for c in clients] if clients else sorted(known)
    unknown = sorted(set(chosen) - known)
    if unknown:
        raise PermanentError(f"no such client(s) in fleet {fleet.name}: {', '.join(unknown)}")
    with Store.open(url) as store:
        placements = {p.client_id: p.server_id for p in store.placements()}
        history = histories(store.drills(), kinds_by_client(fleet, placements))
        canaries = pick_canaries(chosen, history, today, per_day)
        targets = canary_targets(fleet, placements, canaries)
        plans: dict[str, CanaryPlan] = {}
        for target in targets:
            snap = store.latest_verified_snapshot(target.client_id, target.mirror_id)
            plans[target.client_id] = CanaryPlan(
                target,
                snap.snapshot_id if snap else None,
                snap.server_id if snap else None,
                snap.taken_at if snap else None,
                snap.bytes if snap else 0,
            )
    candidates = scratch_dcs(fleet)
    if dc is not None:
        wanted = check_id(dc, "data centre id")
        if wanted not in candidates:
            raise PermanentError(
                f"data centre {wanted} cannot lend a scratch server "
                f"(these can: {', '.join(candidates) or 'none'})"
            )
        candidates = [wanted]
    allowed = {c.client_id: allowed_dcs(fleet, c.client_id, candidates) for c in canaries}
    groups, unplaceable = scratch_groups(canaries, allowed, candidates)
    for canary in canaries:
        log.info(
            "canary %s from its %s mirror %s (last drilled %s)",
            canary.client_id,
            canary.mirror,
            plans[canary.client_id].mirror_id,
            f"{canary.days_since} day(s) ago" if canary.days_since is not None else "never",
        )
    return DrillPlan(
        tuple((g, tuple(plans[c.client_id] for c in g.canaries)) for g in groups), unplaceable
    )


# --------------------------------------------------------------------------- scratch


@task(
    name="provision-scratch",
    task_run_name="provision-{server_id}",
    **io_task(900),
)
def provision_scratch(fleet_file: Path, url: str, server_id: str, dc: str) -> Server:
    """A scratch app server in *dc* from its provider (idempotent by *server_id*: a
    retry gets the same one); its fleet entry."""
    return provision_server(fleet_file, url, ProvisionRequest(server_id=server_id, dc=dc)).server


def _refuse_if_placed(url: str, server_id: str, client_id: str) -> None:
    with Store.open(url) as store:
        placement = store.placement(client_id)
    if placement is not None and placement.server_id == server_id:
        raise PermanentError(
            f"{client_id} is placed on {server_id}: its data there is live, not a drill's"
        )


@task(
    name="clean-scratch",
    task_run_name="clean-{server.id}",
    **io_task(600),
)
def clean_scratch(fleet_file: Path, url: str, server: Server, client_ids: list[str]) -> int:
    """Remove each drilled client's restored data, staging directory and what an unfinished
    restore kept for a later run from the scratch server (never data of a client placed
    there); entries removed."""
    removed = 0
    with _scratch_access(fleet_file, server) as access:
        fleet = access.fleet
        remote = access.remote(server.id)
        for client in client_ids:
            _refuse_if_placed(url, server.id, client)
            for path in (
                steps.staging_path(fleet, server.id, client),
                client_path(fleet, client, server_id=server.id),
            ):
                removed += steps.remove_tree(remote, path)
                removed += steps.remove_restore_leftovers(remote, path)
    get_run_logger().info("scratch %s: %d restored entries removed", server.id, removed)
    return removed


@task(name="sweep-stale-scratch", **io_task(900))
def sweep_stale_scratch(fleet_file: Path, url: str, keep: list[str]) -> list[str]:
    """Release scratch servers an earlier drill left behind (its process died before its
    teardown): drill-* servers in fleet.yaml and drill-* claims on static spares,
    except *keep* (this run's own). What was released, as ids."""
    from ppo_dr.providers import provider_for
    from ppo_dr.providers.static import StaticProvider

    log = get_run_logger()
    fleet = load_fleet(fleet_file)
    released: list[str] = []
    for dc in fleet.data_centres:
        provider = provider_for(fleet, dc.id, fleet_file=fleet_file, store_url=url)
        if isinstance(provider, StaticProvider):
            stale = [
                (c.request, fleet.server(c.spare))
                for c in provider.claims().values()
                if is_scratch_server(c.request) and c.request not in keep
            ]
        else:
            stale = [
                (s.id, s)
                for s in fleet.servers_in(dc.id)
                if is_scratch_server(s.id) and s.id not in keep
            ]
        for request, server in stale:
            log.warning("releasing scratch %s (%s) left by an earlier drill", request, server.id)
            with Store.open(url) as store:
                live = {p.client_id for p in store.placements() if p.server_id == server.id}
            drilled = [c.id for c in fleet.clients if c.id not in live]
            clean_scratch.fn(fleet_file, url, server, drilled)
            provider.release(request)
            released.append(request)
    return released


@task(name="scratch-maintenance", **io_task(60))
def open_scratch_maintenance(url: str, server_id: str, reason: str) -> int:
    """A maintenance window on the scratch server, so a probe that listed it while it
    existed does not page when it goes away; its id."""
    with Store.open(url) as store:
        return store.start_maintenance("server", server_id, reason=reason, created_by="dr-drill").id


@task(name="end-scratch-maintenance", **io_task(60))
def end_scratch_maintenance(url: str, window_id: int, at: datetime) -> None:
    """Let the scratch server's window end at *at* (after any probe period that may still
    list the released server)."""
    with Store.open(url) as store:
        store.end_maintenance(window_id, at=at)


# --------------------------------------------------------------------------- one canary


def _canary_task(step: str, timeout_s: float) -> Any:
    """The task decorator of one step of a canary: its time limit, transient retries."""
    return task(
        name=f"drill-{step}",
        task_run_name=f"{step}-{{plan.target.canary.client_id}}",
        **io_task(timeout_s),
    )


@_canary_task("restore", 3600)
def restore_canary(fleet_file: Path, plan: CanaryPlan, server: Server) -> dict[str, Any]:
    """Restore the canary's snapshot from its one mirror into the scratch server (the
    failover's restore: staging directory, then a rename).

    Damaged data on that mirror raises DamagedDataError, which is permanent: the drill
    fails at once instead of re-reading the same bad bytes through the retries (finding
    that damage is the drill's point; the failover would fall back to the other mirror).
    """
    with _scratch_access(fleet_file, server) as access:
        done = steps.restore_client(
            access, plan.move(server.id), plan.snapshot_id, mirrors=[plan.mirror_id]
        )
    get_run_logger().info(
        "%s: %d file(s), %d byte(s) restored from %s in %.2f s",
        plan.client_id, done.files, done.bytes, plan.mirror_id, done.duration_s,
    )  # fmt: skip
    return done.evidence()


@_canary_task("verify", 3600)
def verify_canary(fleet_file: Path, plan: CanaryPlan, server: Server) -> dict[str, Any]:
    """Re-read the restored canary on the scratch server and compare it with the manifest
    byte by byte (the failover's verify)."""
    with _scratch_access(fleet_file, server) as access:
        checked = checks.verify_restored(
            access, plan.move(server.id), plan.snapshot_id or NO_SNAPSHOT, mirrors=[plan.mirror_id]
        )
    return checked.evidence()


@_canary_task("health", 120)
def health_canary(fleet_file: Path, plan: CanaryPlan, server: Server) -> dict[str, Any]:
    """The app's health of the canary on the scratch server itself (never the front door)."""
    fleet = with_server(load_fleet(fleet_file), server)
    return checks.app_health(fleet, plan.client_id, server.id).evidence()


# --------------------------------------------------------------------------- evidence


@task(name="record-drill", **io_task(60))
def record_drill(
    url: str,
    plan: CanaryPlan,
    started_at: datetime,
    finished_at: datetime,
    ok: bool,
    restore_seconds: float,
    detail: str,
    flow_run_id: str | None,
) -> int:
    """The canary's drill row: mirror, snapshot, restore time, snapshot age (RPO), result."""
    age = (
        max(0.0, (started_at - plan.snapshot_at).total_seconds())
        if plan.snapshot_at is not None
        else 0.0
    )
    with Store.open(url) as store:
        row = store.record_drill(
            client_id=plan.client_id,
            mirror_id=plan.mirror_id,
            snapshot_id=plan.snapshot_id or NO_SNAPSHOT,
            started_at=started_at,
            finished_at=finished_at,
            ok=ok,
            restore_seconds=restore_seconds,
            snapshot_age_seconds=age,
            detail=detail,
            flow_run_id=flow_run_id,
        )
    return row.id


@task(name="drill-incident", **io_task(60))
def open_drill_incident(
    url: str,
    kind: str,
    dedupe_key: str,
    title: str,
    scope: dict[str, Any],
    flow_run_id: str | None,
) -> int:
    """Open (or find the open) non-paging incident for a failed drill; note this run on
    its timeline either way, so repeated failures are visible on one incident."""
    with Store.open(url) as store:
        incident, created = store.open_incident(
            kind,
            dedupe_key,
            title,
            scope,
            severity="minor",
            paging=False,
            flow_run_id=flow_run_id,
        )
        if not created:
            store.add_timeline(incident.id, kind, title, flow_run_id=flow_run_id, data=scope)
    get_run_logger().warning(
        "incident %s %s: %s", incident.id, "opened" if created else "still open", title
    )
    return incident.id


@task(name="resolve-drill-incident", **io_task(60))
def resolve_drill_incident(url: str, client_id: str, flow_run_id: str | None) -> int | None:
    """A passing drill resolves the client's open drill-failed incident, if there is one."""
    key = failed_dedupe_key(client_id)
    with Store.open(url) as store:
        for incident in store.incidents(kind=DRILL_FAILED_KIND):
            if incident.dedupe_key == key and incident.state != "resolved":
                store.resolve(
                    incident.id,
                    by="dr-drill",
                    note=f"the drill of {client_id} passed again",
                    flow_run_id=flow_run_id,
                )
                return incident.id
    return None


@task(name="drill-trend", **io_task(60))
def drill_trend(url: str, now: datetime | None = None) -> str:
    """The trend of the last 30 days as Markdown (sparklines per client)."""
    with Store.open(url) as store:
        drills = store.drills()
    return trend_markdown(drill_trends(drills, now or datetime.now(UTC)))
