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
server's mirror on its data centre's pool (``dc-<id>``: it reads the server over the
DC's LAN and pushes off-site), everything else (probe, watchdog, escalation, the
failover's orchestration, drill, reports) on :data:`CONTROL_POOL`, off-site; and each
client's move of a failover (the ``fail-over-client`` flow) on the pool of the DC it
moves *into* (``fail-over-client/into-<dc>``), the ``failover`` deployment's
``client_runs="target-pool"`` telling the orchestrator to start it there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.drill import DRILL_LIMIT, DRILL_SLOTS, dr_drill
from flows.escalation import escalation
from flows.failover import FAILOVER_LIMIT, FAILOVER_SLOTS
from flows.mirror import mirror_fleet, mirror_limits, mirror_server
from flows.probe import probe_fleet, probe_period_s, probe_watchdog, watchdog_interval_s
from flows.report import REPORTS_LIMIT, REPORTS_SLOTS, fleet_report
from ppo_dr import config
from ppo_dr.errors import DRError
from ppo_dr.failover.runs import client_deployment_name
from ppo_dr.inventory import Fleet, load_fleet

#: Tag on every deployment (and so every run) of ppo-dr, for filtering in the UI.
TAG = "ppo-dr"

#: At most one run of a singleton runbook at a time; a run due while one is still
#: going is cancelled (its evidence says why) instead of queueing up behind it.
ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


def fleet_report_deployment() -> RunnerDeployment:
    """Daily fleet report at 06:00 UTC, for the fleet file the run's environment names."""
    deployment = fleet_report.to_deployment(
        "fleet-report",
        cron="0 6 * * *",
        tags=[TAG, "report"],
        concurrency_limit=ONE_AT_A_TIME,
        description="Validate the fleet file; publish its summary and app-server table.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)  # the sync form, not a coroutine
    return deployment


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


def mirror_fleet_deployment() -> RunnerDeployment:
    """Every app server mirrored on ``fleet.timing.mirror_cron``; a run due while one
    still runs is cancelled, not queued."""
    fleet = _current_fleet()
    cron = fleet.timing.mirror_cron if fleet else DEFAULT_MIRROR_CRON
    deployment = mirror_fleet.to_deployment(
        "mirror-fleet",
        cron=cron,
        tags=[TAG, "mirror"],
        concurrency_limit=ONE_AT_A_TIME,
        description=(
            "Snapshot every app server's clients to its on-site and off-site mirrors, "
            "verify, record the catalogue, raise mirror-stale."
        ),
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def mirror_server_deployment() -> RunnerDeployment:
    """One app server (optionally some of its clients), on demand from the UI or CLI.

    No schedule. One run per server at a time: the flow takes the server's
    ``mirror-server-<id>`` slot and a run that finds it taken is cancelled (skipped).
    """
    deployment = mirror_server.to_deployment(
        "mirror-server",
        tags=[TAG, "mirror"],
        description="Mirror one app server now: parameters server_id and (optional) clients.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def escalation_deployment() -> RunnerDeployment:
    """One incident's escalation, started by the probe (``escalation/escalation`` with
    ``incident_id``, idempotency key ``escalation-<id>``) or by hand from the UI with
    ``test=true`` for a test page (level 1 only). No schedule, no concurrency limit:
    incidents are escalated in parallel."""
    deployment = escalation.to_deployment(
        "escalation",
        tags=[TAG, "escalation"],
        description=(
            "Page, escalate, post status and e-mail clients until the incident is resolved; "
            "start the failover of a lost server or DC; acknowledge by resuming the paused "
            "run. test=true pages level 1 as a test."
        ),
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def _mirror_limits() -> dict[str, int]:
    """The mirror's limits for the fleet in use at import (the flows create any missing
    ones too, so a fleet that changed since still runs throttled)."""
    fleet = _current_fleet()
    return mirror_limits(fleet) if fleet else {}


def probe_fleet_deployment() -> RunnerDeployment:
    """The probe: one long-running run per period (10 min, or 2 min with fast timings),
    started by an interval schedule; a run due while one still runs is cancelled."""
    fleet = _current_fleet()
    period = probe_period_s(fleet.timing) if fleet else 600.0
    deployment = probe_fleet.to_deployment(
        "probe-fleet",
        interval=period,
        parameters={"period_s": period},
        tags=[TAG, "probe"],
        concurrency_limit=ONE_AT_A_TIME,
        description=(
            "Check every app server and client every probe interval for one period; "
            "record transitions, declare outages, start their escalation."
        ),
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def probe_watchdog_deployment() -> RunnerDeployment:
    """Pages (probe-silent incident) when the probe has not heartbeated for two periods."""
    fleet = _current_fleet()
    every = watchdog_interval_s(fleet.timing) if fleet else 120.0
    deployment = probe_watchdog.to_deployment(
        "probe-watchdog",
        interval=every,
        tags=[TAG, "probe"],
        concurrency_limit=ONE_AT_A_TIME,
        description="Open a paging probe-silent incident if the probe stopped heartbeating.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)
    return deployment


#: The drill's schedule when no fleet file can be read: daily at 03:30 UTC.
DEFAULT_DRILL_CRON = "30 3 * * *"


def dr_drill_deployment() -> RunnerDeployment:
    """The DR drill on ``fleet.timing.drill_cron`` (daily; every few minutes in the fast
    lab); a run due while one still runs is cancelled, not queued."""
    fleet = _current_fleet()
    cron = fleet.timing.drill_cron if fleet else DEFAULT_DRILL_CRON
    deployment = dr_drill.to_deployment(
        "dr-drill",
        cron=cron,
        tags=[TAG, "drill"],
        concurrency_limit=ONE_AT_A_TIME,
        description=(
            "Restore today's canary clients from the on-site/off-site mirror (alternately) "
            "to a scratch server, verify bytes and app health, record RTO/RPO, tear down."
        ),
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def failover_deployment() -> RunnerDeployment:
    """Failover or planned migration of a scope of clients, on demand (UI, ``ppo-dr
    failover run``, or the escalation runbook). One run at a time: a second one waits
    for the slot of :data:`flows.failover.FAILOVER_LIMIT`, which a run takes only after
    approval (no deployment concurrency limit: Prefect releases it when a run pauses
    for approval, and the paused run then dies at its next lease renewal)."""
    from flows.failover import failover

    deployment = failover.to_deployment(
        "failover",
        tags=[TAG, "failover"],
        description=(
            "Plan, approve, provision, restore, verify, switch and re-mirror a scope of "
            "clients (emergency, or planned with freeze and final sync); rerun finishes a plan."
        ),
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)
    return deployment


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


def dc_pool(dc_id: str) -> str:
    """The process work pool of data centre *dc_id*: its workers run its mirrors."""
    return f"dc-{dc_id}"


def mirror_of_server_deployment(fleet: Fleet, server_id: str) -> RunnerDeployment:
    """The scheduled mirror of one app server, on its data centre's pool (its name is
    ``mirror-server/mirror-<server>``); a run due while one still runs is cancelled."""
    server = fleet.server(server_id)
    deployment = mirror_server.to_deployment(
        f"mirror-{server.id}",
        cron=fleet.timing.mirror_cron,
        parameters={"server_id": server.id},
        tags=[TAG, "mirror", f"dc:{server.dc}", f"server:{server.id}"],
        concurrency_limit=ONE_AT_A_TIME,
        work_pool_name=dc_pool(server.dc),
        description=f"Mirror {server.id} from inside {server.dc} to its on-site and off-site "
        "mirrors, verify, record the catalogue.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def fail_over_client_deployment(dc_id: str) -> RunnerDeployment:
    """One client's move into data centre *dc_id*, on its pool: the restore reads the
    mirror and writes the new home from inside the DC that will serve the client. No
    schedule: the failover's orchestration starts it and waits."""
    from flows.failover_client import fail_over_client

    deployment = fail_over_client.to_deployment(
        client_deployment_name(dc_id),
        tags=[TAG, "failover", f"dc:{dc_id}"],
        work_pool_name=dc_pool(dc_id),
        description=f"Restore, verify, switch and route one client of a failover into {dc_id} "
        "(started by the failover run on the control pool).",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)
    return deployment


@dataclass(frozen=True)
class Routed:
    """A deployment of the distributed topology and the work pool it runs on."""

    deployment: RunnerDeployment
    pool: str


#: Deployments of :data:`DEPLOYMENTS` replaced in the distributed topology: the
#: fleet-wide mirror runs every server's mirror in one process, where the run is, and
#: the on-demand one would run any server's mirror on one pool; each app server gets
#: its own mirror deployment on its DC's pool instead (scheduled, and run on demand).
NOT_DISTRIBUTED = frozenset({"mirror-fleet", "mirror-server"})


def distributed_deployments(fleet: Fleet) -> list[Routed]:
    """Every deployment of the distributed topology with its pool, in a stable order:
    the control pool's, then one mirror per app server (by id), then one client move
    per data centre (by id)."""
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
        if server.role == "app":
            routed.append(Routed(mirror_of_server_deployment(fleet, server.id), dc_pool(server.dc)))
    for dc in sorted(fleet.data_centres, key=lambda d: d.id):
        routed.append(Routed(fail_over_client_deployment(dc.id), dc_pool(dc.id)))
    return routed


def work_pools(fleet: Fleet) -> list[str]:
    """Every pool of the distributed topology: ``control`` and one per data centre."""
    return [CONTROL_POOL, *(dc_pool(dc.id) for dc in fleet.data_centres)]
