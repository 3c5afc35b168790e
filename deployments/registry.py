"""Every deployment ``ppo-dr serve`` serves, and the global concurrency limits they use.

A runbook issue adds its deployments here: a function that builds the
:class:`~prefect.deployments.runner.RunnerDeployment` (built when serving, not at
import, so importing this module touches no API) appended to :data:`DEPLOYMENTS`,
and each global concurrency limit its flows or tasks take slots of added to
:data:`CONCURRENCY_LIMITS`. ``serve`` creates or updates those limits before it
registers anything: a missing limit would let ``concurrency(name)`` run unthrottled
(PREFECT-NOTES), so our flows pass ``strict=True`` and fail instead.

Entry points are module paths (``flows.report.fleet_report``), not file paths, so
served runs load the installed package whatever directory ``serve`` started in.

The distributed topology (``ppo-dr deploy`` and workers, docs/deploy.md) registers
the same deployments on work pools, by :func:`distributed_deployments`: each app
server's and each spare's mirror on its data centre's pool (``dc-<id>``: it reads the
server over the DC's LAN and pushes off-site), everything else (probe, watchdog, escalation, the
failover's orchestration, drill, reports) on :data:`CONTROL_POOL`, off-site; and each
batch of clients a failover moves onto one server (the ``fail-over-clients`` flow) on
the pool of the DC it moves *into* (``fail-over-clients/into-<dc>``), the ``failover``
deployment's ``client_runs="target-pool"`` telling the orchestrator to start it there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prefect import Flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment

from flows.drill import DRILL_LIMIT, DRILL_SLOTS, dr_drill
from flows.escalation import escalation
from flows.failover import FAILOVER_LIMIT, FAILOVER_SLOTS
from flows.mirror import MIRROR_DC_SLOTS, mirror_fleet, mirror_limits, mirror_server
from flows.mirror_schedule import (
    MIRROR_QUEUE,
    ONE_AT_A_TIME,
    QueueLimit,
    dc_pool,
    mirror_of_server_deployment,
    tagged_deployment,
)
from flows.probe import probe_fleet, probe_period_s, probe_watchdog, watchdog_interval_s
from flows.report import REPORTS_LIMIT, REPORTS_SLOTS, fleet_report
from ppo_dr import config
from ppo_dr.errors import DRError
from ppo_dr.failover.runs import client_deployment_name
from ppo_dr.inventory import Fleet, Timing, load_fleet

T = TypeVar("T")


def _on_cron(
    flow: Flow[..., Any], name: str, cron: str, tag: str, description: str
) -> RunnerDeployment:
    """*flow* on *cron*, one run at a time: a run due while one still runs is cancelled,
    not queued, so a slow run never piles up a queue of stale ones behind it."""
    return tagged_deployment(
        flow, name, cron=cron, tags=[tag], concurrency_limit=ONE_AT_A_TIME, description=description
    )


def fleet_report_deployment() -> RunnerDeployment:
    """Daily fleet report at 06:00 UTC, for the fleet file the run's environment names."""
    return _on_cron(
        fleet_report,
        "fleet-report",
        "0 6 * * *",
        "report",
        "Validate the fleet file; publish its summary, app-server table and the "
        "fleet/SLA report of the last 30 days (charts; HTML under <home>/reports).",
    )


#: The mirror's schedule when no fleet file can be read: hourly at minute 0.
DEFAULT_MIRROR_CRON = "0 * * * *"


def _current_fleet() -> Fleet | None:
    """The fleet of ``$PPO_DR_FLEET`` (or the lab's), if it exists and is valid."""
    path = config.fleet_file()
    if not path.exists():
        return None
    try:
        return load_fleet(path)
    except DRError:
        return None


def _timing(pick: Callable[[Timing], T], default: T) -> T:
    """A schedule setting of the current fleet's timing, or *default* without a fleet
    (serve still starts, on the built-in schedules)."""
    fleet = _current_fleet()
    return pick(fleet.timing) if fleet else default


def mirror_fleet_deployment() -> RunnerDeployment:
    """Every app server mirrored on ``fleet.timing.mirror_cron``; a run due while one
    still runs is cancelled, not queued."""
    cron = _timing(lambda t: t.mirror_cron, DEFAULT_MIRROR_CRON)
    return _on_cron(
        mirror_fleet,
        "mirror-fleet",
        cron,
        "mirror",
        (
            "Snapshot every app server's clients to its on-site and off-site mirrors, "
            "verify, record the catalogue, raise mirror-stale."
        ),
    )


def mirror_server_deployment() -> RunnerDeployment:
    """One app server (optionally some of its clients), on demand from the UI or CLI.

    No schedule. One run per server at a time: the flow takes the server's
    ``mirror-server-<id>`` slot and a run that finds it taken is cancelled (skipped).
    """
    return tagged_deployment(
        mirror_server,
        "mirror-server",
        tags=["mirror"],
        description="Mirror one app server now: parameters server_id and (optional) clients.",
    )


def escalation_deployment() -> RunnerDeployment:
    """One incident's escalation, started by the probe (``escalation/escalation`` with
    ``incident_id``, idempotency key ``escalation-<id>``) or by hand from the UI with
    ``test=true`` for a test page (level 1 only). No schedule, no concurrency limit:
    incidents are escalated in parallel."""
    return tagged_deployment(
        escalation,
        "escalation",
        tags=["escalation"],
        description=(
            "Page, escalate, post status and e-mail clients until the incident is resolved; "
            "start the failover of a lost server or DC; acknowledge by resuming the paused "
            "run. test=true pages level 1 as a test."
        ),
    )


def _mirror_limits() -> dict[str, int]:
    """The mirror's limits for the fleet in use at import (the flows create any missing
    ones too, so a fleet that changed since still runs throttled)."""
    fleet = _current_fleet()
    return mirror_limits(fleet) if fleet else {}


#: The probe's runs overlap at each hand-over: the old run probes until its successor
#: has started (however late) and taken the probe lease. Two at once, so the successor
#: is never cancelled while the old run still probes; a third (a schedule that fell
#: behind, a manual run) is cancelled, not queued.
PROBE_HANDOVER = ConcurrencyLimitConfig(
    limit=2, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


def probe_fleet_deployment() -> RunnerDeployment:
    """The probe: one long-running run per period (10 min, or 2 min with fast timings),
    started by an interval schedule; each run probes until the next one takes over
    (:data:`PROBE_HANDOVER`)."""
    period = _timing(probe_period_s, 600.0)
    return tagged_deployment(
        probe_fleet,
        "probe-fleet",
        interval=period,
        parameters={"period_s": period},
        tags=["probe"],
        concurrency_limit=PROBE_HANDOVER,
        description=(
            "Check every app server and client every probe interval until the next "
            "period's run takes over; "
            "record transitions, declare outages, start their escalation."
        ),
    )


def probe_watchdog_deployment() -> RunnerDeployment:
    """Pages (probe-silent incident) when the probe has not heartbeated for two periods."""
    every = _timing(watchdog_interval_s, 120.0)
    return tagged_deployment(
        probe_watchdog,
        "probe-watchdog",
        interval=every,
        tags=["probe"],
        concurrency_limit=ONE_AT_A_TIME,
        description="Open a paging probe-silent incident if the probe stopped heartbeating.",
    )


#: The drill's schedule when no fleet file can be read: daily at 03:30 UTC.
DEFAULT_DRILL_CRON = "30 3 * * *"


def dr_drill_deployment() -> RunnerDeployment:
    """The DR drill on ``fleet.timing.drill_cron`` (daily; every few minutes in the fast
    lab); a run due while one still runs is cancelled, not queued."""
    cron = _timing(lambda t: t.drill_cron, DEFAULT_DRILL_CRON)
    return _on_cron(
        dr_drill,
        "dr-drill",
        cron,
        "drill",
        (
            "Restore today's canary clients from the on-site/off-site mirror (alternately) "
            "to a scratch server, verify bytes and app health, record RTO/RPO, tear down."
        ),
    )


def failover_deployment() -> RunnerDeployment:
    """Failover or planned migration of a scope of clients, on demand (UI, ``ppo-dr
    failover run``, or the escalation runbook). One run at a time: a second one waits
    for the slot of :data:`flows.failover.FAILOVER_LIMIT`, which a run takes only after
    approval (no deployment concurrency limit: Prefect releases it when a run pauses
    for approval, and the paused run then dies at its next lease renewal)."""
    from flows.failover import failover

    return tagged_deployment(
        failover,
        "failover",
        tags=["failover"],
        description=(
            "Plan, approve, provision, restore, verify, switch and re-mirror a scope of "
            "clients (emergency, or planned with freeze and final sync); rerun finishes a plan."
        ),
    )


#: When the weekly rebalance plans: Mondays 05:00 UTC, before the working week.
REBALANCE_CRON = "0 5 * * 1"


def rebalance_deployment() -> RunnerDeployment:
    """Weekly load distribution: plans, publishes the plan, pauses for approval (nothing
    moves without it), then migrates through the failover runbook (whose one slot keeps
    it behind any running failover). No deployment concurrency limit, for the same
    reason as the failover's: a paused run would lose its slot and be killed."""
    from flows.rebalance import rebalance

    return tagged_deployment(
        rebalance,
        "rebalance",
        cron=REBALANCE_CRON,
        tags=["rebalance"],
        description=(
            "Plan the planned migrations that bring every app server under target_util "
            "(default 80 %) of each capacity, moving the fewest bytes; approve; migrate."
        ),
    )


def drain_deployment() -> RunnerDeployment:
    """Drain one server for a hardware upgrade, on demand from the UI (typed parameters:
    server, to_dc or to_server, by, reason) or ``ppo-dr server drain``."""
    from flows.drain import drain

    return tagged_deployment(
        drain,
        "drain",
        tags=["drain"],
        description=(
            "Move every client off a server by planned migrations (refused, before anything "
            "moves, if a client would be stranded); keep it drained until `server return`."
        ),
    )


#: Builders of every deployment ``ppo-dr serve`` serves, in the order shown.
DEPLOYMENTS: list[Callable[[], RunnerDeployment]] = [
    fleet_report_deployment,
    mirror_fleet_deployment,
    mirror_server_deployment,
    escalation_deployment,
    probe_fleet_deployment,
    probe_watchdog_deployment,
    dr_drill_deployment,
    failover_deployment,
    rebalance_deployment,
    drain_deployment,
]

#: Global concurrency limits (name -> slots) the runbooks take slots of.
CONCURRENCY_LIMITS: dict[str, int] = {
    REPORTS_LIMIT: REPORTS_SLOTS,
    DRILL_LIMIT: DRILL_SLOTS,
    FAILOVER_LIMIT: FAILOVER_SLOTS,
    **_mirror_limits(),  # mirror-server-<id>: 1, mirror-dc-<dc>: 2
}


#: The work pool of the off-site orchestration: probe, escalation, failover, reports.
CONTROL_POOL = "control"


#: Roles of the servers that hold clients, or will once a failover moves clients onto
#: them: each gets a scheduled mirror deployment of its own. A spare's runs end at once
#: ("nothing to mirror") until then, so clients moved onto a spare are mirrored on
#: schedule from the failover on, as ``mirror-fleet`` does on one machine.
HOME_ROLES = ("app", "spare")


def mirror_queues(fleet: Fleet) -> list[QueueLimit]:
    """The mirror queue of each DC pool that has servers of :data:`HOME_ROLES`, with its
    limit."""
    dcs = sorted({s.dc for s in fleet.servers if s.role in HOME_ROLES})
    return [QueueLimit(dc_pool(dc), MIRROR_QUEUE, MIRROR_DC_SLOTS) for dc in dcs]


def fail_over_clients_deployment(dc_id: str) -> RunnerDeployment:
    """A failover's batch of clients onto one server in data centre *dc_id*, on its
    pool: the restores read the mirror and write the new home from inside the DC that
    will serve the clients. No schedule: the failover's orchestration starts it and waits."""
    from flows.failover_client import fail_over_clients

    return tagged_deployment(
        fail_over_clients,
        client_deployment_name(dc_id),
        tags=["failover", f"dc:{dc_id}"],
        work_pool_name=dc_pool(dc_id),
        description=f"Restore, verify, switch and route a failover's clients onto one server "
        f"in {dc_id} (started by the failover run on the control pool).",
    )


@dataclass(frozen=True)
class Routed:
    """A deployment of the distributed topology and the work pool it runs on."""

    deployment: RunnerDeployment
    pool: str


#: Deployments of :data:`DEPLOYMENTS` replaced in the distributed topology: the
#: fleet-wide mirror runs every server's mirror in one process, where the run is, and
#: the on-demand one would run any server's mirror on one pool; each app server and
#: spare gets its own mirror deployment on its DC's pool instead (scheduled, and run on
#: demand).
NOT_DISTRIBUTED = frozenset({"mirror-fleet", "mirror-server"})


def distributed_deployments(fleet: Fleet) -> list[Routed]:
    """Every deployment of the distributed topology with its pool, in a stable order:
    the control pool's, then one mirror per app server and spare (by id), then one batch of client
    moves per data centre (by id)."""
    routed: list[Routed] = []
    for build in DEPLOYMENTS:
        deployment = build()
        if deployment.name in NOT_DISTRIBUTED:
            continue
        deployment.work_pool_name = CONTROL_POOL
        if deployment.name == "failover":  # each client on its target DC's pool
            deployment.parameters = {**deployment.parameters, "client_runs": "target-pool"}
        routed.append(Routed(deployment, CONTROL_POOL))
    for server in sorted(fleet.servers, key=lambda s: s.id):
        if server.role in HOME_ROLES:
            routed.append(Routed(mirror_of_server_deployment(fleet, server.id), dc_pool(server.dc)))
    for dc in sorted(fleet.data_centres, key=lambda d: d.id):
        routed.append(Routed(fail_over_clients_deployment(dc.id), dc_pool(dc.id)))
    return routed


def work_pools(fleet: Fleet) -> list[str]:
    """Every pool of the distributed topology: ``control`` and one per data centre."""
    return [CONTROL_POOL, *(dc_pool(dc.id) for dc in fleet.data_centres)]
