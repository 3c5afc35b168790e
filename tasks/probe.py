"""Tasks of the probe: the rare, visible steps (start an escalation, watch the probe).

The check cycles themselves are NOT tasks: a cycle every few seconds for a whole period
would be hundreds of task runs per flow run (PREFECT-NOTES: a 5 s schedule grew the
Prefect DB to ~100 MB in 20 minutes). They run inside the flow; what they find is in
the store (transitions, per-minute counts, incidents) and in the run's logs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.deployments.flow_runs import arun_deployment
from prefect.events import emit_event
from prefect.exceptions import ObjectNotFound

from ppo_dr.probe.pools import PoolWorkers, record_pool_attendance
from ppo_dr.probe.watchdog import check_probe_silence
from ppo_dr.store import Store
from tasks import io_task
from tasks.runs import escalation_run_name, top_level_run

#: The escalation runbook's deployment (``flows/escalation.py``, parameter incident_id).
ESCALATION_DEPLOYMENT: Final = "escalation/escalation"
#: Event the probe emits after every cycle.
HEARTBEAT_EVENT: Final = "ppo-dr.probe.heartbeat"


def escalation_key(incident_id: int) -> str:
    """The idempotency key of an incident's escalation run: one run per incident, ever."""
    return f"escalation-{incident_id}"


def heartbeat_resource(fleet_name: str) -> str:
    """``ppo-dr.probe.<fleet>``: the resource the probe's heartbeat is about."""
    return f"ppo-dr.probe.{fleet_name}"


@task(
    name="start-escalation",
    task_run_name="start-escalation-{incident_id}",
    **io_task(60),
)
async def start_escalation(incident_id: int) -> tuple[str | None, str]:
    """Start the escalation flow run of *incident_id* (exactly once: idempotency key).

    A top-level run named :func:`~tasks.runs.escalation_run_name` from its creation,
    not a subflow of the probe: the UI's "Hide subflows" must not hide a page.

    Returns ``(flow run id, "")``, or ``(None, why)`` when the escalation deployment
    does not exist (yet): the probe records that on the incident and carries on.
    """
    log = get_run_logger()
    try:
        run = await arun_deployment(
            ESCALATION_DEPLOYMENT,
            parameters={"incident_id": incident_id},
            **top_level_run(
                escalation_key(incident_id),
                [f"incident:{incident_id}"],
                name=escalation_run_name(incident_id),
            ),
        )
    except ObjectNotFound:
        why = (
            f"deployment {ESCALATION_DEPLOYMENT!r} not found: nobody is paged for "
            f"incident {incident_id} until it is served (ppo-dr serve)"
        )
        log.warning(why)
        return None, why
    log.info("escalation of incident %s: flow run %s (%s)", incident_id, run.id, run.name)
    return str(run.id), ""


def emit_probe_heartbeat(fleet_name: str, payload: dict[str, Any]) -> None:
    """Emit :data:`HEARTBEAT_EVENT` (what a Proactive automation would watch)."""
    emit_event(
        HEARTBEAT_EVENT,
        resource={"prefect.resource.id": heartbeat_resource(fleet_name)},
        payload=payload,
    )


@task(name="probe-silence-check", **io_task(60))
def probe_silence_check(
    store_url: str, silent_after_s: float, flow_run_id: str | None
) -> tuple[int | None, bool]:
    """Open (or find) the ``probe-silent`` incident if the probe stopped heartbeating.

    Returns ``(incident id or None, created)``.
    """
    with Store(store_url) as store:
        incident, created = check_probe_silence(
            store, timedelta(seconds=silent_after_s), flow_run_id=flow_run_id
        )
    return (incident.id if incident else None), created


async def read_pool_workers() -> list[PoolWorkers]:
    """Every work pool of the API with its workers' status and heartbeats (none on the
    one-machine ``serve``, which runs without pools)."""
    async with get_client() as client:
        pools = await client.read_work_pools()
        found = []
        for pool in pools:
            workers = await client.read_workers_for_work_pool(pool.name)
            found.append(
                PoolWorkers(
                    pool.name,
                    pool.created or datetime.now(UTC),
                    paused=pool.is_paused,
                    online=sum(1 for w in workers if str(w.status.value) == "ONLINE"),
                    last_heartbeats=tuple(
                        w.last_heartbeat_time for w in workers if w.last_heartbeat_time
                    ),
                )
            )
    return found


@task(name="check-work-pools", **io_task(60))
async def check_work_pools(
    store_url: str, threshold_s: float, flow_run_id: str | None
) -> tuple[list[int], list[int]]:
    """Open a non-paging incident per pool without an online worker for longer than
    *threshold_s* (nobody runs its mirrors); recover those served again.

    Returns the incident ids (opened now, recovered now).
    """
    log = get_run_logger()
    pools = await read_pool_workers()
    with Store(store_url) as store:
        opened, recovered = record_pool_attendance(
            store,
            pools,
            datetime.now(UTC),
            timedelta(seconds=threshold_s),
            flow_run_id=flow_run_id,
        )
    for incident in opened:
        log.warning("incident #%s (not paging): %s", incident.id, incident.title)
    for incident in recovered:
        log.info("incident #%s recovered: %s", incident.id, incident.title)
    return [i.id for i in opened], [i.id for i in recovered]
