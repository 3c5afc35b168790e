"""The automations ``ppo-dr serve`` and ``deploy`` keep in place on the Prefect server.

A Proactive trigger runs ``probe-watchdog`` when the probe's heartbeat events stop for
two periods (:func:`probe_heartbeat_automation`), so the silence is noticed even when
the probe and the watchdog's schedule are both gone. It is enabled while something
serves the watchdog and disabled again on the way out.

``deploy`` adds the two that finish a failover whose orchestrator died with its host
(:func:`ensure_run_recovery_automations`): the engine's own zombie detection (a flow
run whose heartbeats stop is marked Crashed) and the rerun of a crashed ``failover``
run (the same run, scheduled again, which a live ``control`` worker picks up).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployments.console import Echo, print_flushed
from deployments.local_server import signals_ignored

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.automations import AutomationCore


#: Prefect's shortest window for a Proactive trigger.
MIN_PROACTIVE_WITHIN_S = 10.0
#: Flow runs on our workers beat this often (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``,
#: set by :func:`deployments.workers.worker_env`; the engine's minimum is 30 s).
FLOW_HEARTBEAT_S = 30
#: Missed beats before a Running flow run is a zombie (the engine's guide: 90 s at 30 s).
ZOMBIE_AFTER_BEATS = 3
ZOMBIE_AUTOMATION = "ppo-dr: crash zombie flow runs"
FAILOVER_RERUN_AUTOMATION = "ppo-dr: rerun a crashed failover"


def probe_automation_name(fleet_name: str) -> str:
    return f"ppo-dr probe heartbeat: {fleet_name}"


def probe_heartbeat_automation(
    fleet_name: str, period_s: float, watchdog_deployment_id: UUID, *, enabled: bool = True
) -> AutomationCore:
    """The probe's liveness, watched by the Prefect server itself (a Proactive trigger).

    If no ``ppo-dr.probe.heartbeat`` event about ``ppo-dr.probe.<fleet>`` arrives for
    two probe periods, the server runs the ``probe-watchdog`` deployment. This path
    does not depend on the probe or on the watchdog's own schedule; the watchdog then
    checks the store and pages (the ``probe-silent`` incident). Its parameter
    ``silent_after_s`` is ONE period: the events already showed two periods of silence,
    and the store's heartbeat is kept per minute, so it may look up to a minute newer.
    The server fires again after every further empty window; the watchdog's incident
    is idempotent, so that pages once.
    """
    from prefect.automations import AutomationCore, EventTrigger, Posture, RunDeployment

    from tasks.probe import HEARTBEAT_EVENT, heartbeat_resource

    within = max(MIN_PROACTIVE_WITHIN_S, 2.0 * period_s)
    return AutomationCore(
        name=probe_automation_name(fleet_name),
        description=(
            f"No probe heartbeat for {within:.0f} s (two probe periods): run probe-watchdog, "
            "which pages the on-call with a probe-silent incident."
        ),
        enabled=enabled,
        tags=["ppo-dr", "probe"],
        trigger=EventTrigger(
            expect={HEARTBEAT_EVENT},
            match={"prefect.resource.id": heartbeat_resource(fleet_name)},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within),
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=watchdog_deployment_id,
                parameters={"silent_after_s": float(period_s)},
            )
        ],
    )


def definition(automation: Any) -> dict[str, Any]:
    """What an automation does, comparable across a round trip through the API.

    Python mode, not JSON: a trigger's ``expect`` and ``after`` are sets, and JSON
    mode lists them in iteration order, which for equal sets built in a different
    order can differ (a hash-seed-dependent "updated" on an unchanged automation).
    """
    fields = {"description", "enabled", "tags", "trigger", "actions"}
    out: dict[str, Any] = automation.model_dump(include=fields)
    out["trigger"].pop("id", None)  # minted per object, not part of the definition
    return out


def ensure_automation(automation: AutomationCore, *, keep_enabled: bool = False) -> str:
    """Create *automation*, or bring the one of the same name in line; what was done.

    Idempotent: an identical automation is left alone; duplicates of the name (two
    serves racing) are deleted. With *keep_enabled*, an existing automation keeps its
    enabled flag (``serve --check`` must not switch on or off what a running serve
    owns).
    """
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(automation.name)
        if not existing:
            client.create_automation(automation)
            return "created"
        keep, *extra = sorted(existing, key=lambda a: str(a.id))
        for duplicate in extra:
            client.delete_automation(duplicate.id)
        if keep_enabled:
            automation = automation.model_copy(update={"enabled": keep.enabled})
        if definition(keep) == definition(automation) and not extra:
            return "unchanged"
        client.update_automation(keep.id, automation)
        return "updated"


def zombie_flow_runs_automation(heartbeat_s: float = FLOW_HEARTBEAT_S) -> AutomationCore:
    """A Running flow run silent for :data:`ZOMBIE_AFTER_BEATS` heartbeats is Crashed.

    The engine's answer to a run whose host died with it ("How to detect and respond
    to zombie flows"): nothing is left to report such a run, and the OSS server has no
    service that does. A paused run (waiting for an approval) ends the window like a
    final state does: it waits for a person, not for its host.
    """
    from prefect.automations import AutomationCore, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState

    within = ZOMBIE_AFTER_BEATS * heartbeat_s
    ends = {"Completed", "Failed", "Cancelled", "Crashed", "Paused"}
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=f"A flow run without a heartbeat for {within:.0f} s is marked Crashed.",
        tags=["ppo-dr", "zombie"],
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in ends)},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {within:.0f} s: its host is gone (zombie)",
            )
        ],
    )


def rerun_crashed_failover_automation(failover_deployment_id: UUID) -> AutomationCore:
    """A crashed run of the ``failover`` deployment is scheduled again, the same run.

    The same flow run id matters: the run's client runs were started with idempotency
    keys that contain it, so the rerun gets the same client runs back (finished, or
    still going on their DC's pool) instead of starting a second move of a client;
    and the plan it began is found again by that id (``flows/failover.py``). The
    ledger then skips every step already done. A failover that crashes the same way
    every time is rerun every time: its timeline shows each attempt.
    """
    from prefect.automations import AutomationCore, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState

    return AutomationCore(
        name=FAILOVER_RERUN_AUTOMATION,
        description="A crashed failover run is scheduled again (its ledger skips what is done).",
        tags=["ppo-dr", "failover"],
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match={"prefect.resource.id": ["prefect.flow-run.*"]},
            match_related={
                "prefect.resource.role": "deployment",
                "prefect.resource.id": f"prefect.deployment.{failover_deployment_id}",
            },
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message="rerun after a crash (automation): the ledger skips what is done",
                force=True,
            )
        ],
    )


def ensure_run_recovery_automations(echo: Echo = print_flushed) -> list[str]:
    """Create or update the zombie and the failover-rerun automations (after the
    ``failover`` deployment is registered: the second names it); what was done."""
    from prefect.client.orchestration import get_client

    from tasks.escalation import FAILOVER_DEPLOYMENT

    with get_client(sync_client=True) as client:
        failover = client.read_deployment_by_name(FAILOVER_DEPLOYMENT)
    done: list[str] = []
    for automation in (
        zombie_flow_runs_automation(),
        rerun_crashed_failover_automation(failover.id),
    ):
        what = ensure_automation(automation)
        echo(f"automation: {automation.name} ({what})")
        done.append(what)
    return done


def ensure_probe_automation(
    fleet_file: Path, *, enabled: bool, keep_enabled: bool = False, echo: Echo = print_flushed
) -> str | None:
    """Create or update the fleet's probe heartbeat automation (after the deployments
    are registered: it names the ``probe-watchdog`` one). None, with a warning, when
    there is no valid fleet file or no watchdog deployment to run."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows.probe import probe_period_s
    from ppo_dr.errors import DRError
    from ppo_dr.inventory import load_fleet

    try:
        fleet = load_fleet(fleet_file)
    except (DRError, OSError) as exc:
        echo(f"warning: no probe heartbeat automation (fleet file: {exc})")
        return None
    try:
        with get_client(sync_client=True) as client:
            watchdog = client.read_deployment_by_name("probe-watchdog/probe-watchdog")
    except ObjectNotFound:
        echo("warning: no probe heartbeat automation: probe-watchdog is not registered")
        return None
    automation = probe_heartbeat_automation(
        fleet.name, probe_period_s(fleet.timing), watchdog.id, enabled=enabled
    )
    try:
        what = ensure_automation(automation, keep_enabled=keep_enabled)
    except Exception as exc:  # the schedule-driven watchdog still watches: say so, go on
        echo(f"warning: probe heartbeat automation not set up: {type(exc).__name__}: {exc}")
        return None
    echo(f"automation: {automation.name} ({what})")
    return what


def pause_probe_automation(fleet_file: Path, echo: Echo = print_flushed) -> None:
    """Disable the heartbeat automation as serve stops (best effort, like the
    deployments): with nobody serving probe-watchdog, its runs would never start."""
    from prefect.client.orchestration import get_client

    from ppo_dr.inventory import load_fleet

    with signals_ignored():
        try:
            name = probe_automation_name(load_fleet(fleet_file).name)
            with get_client(sync_client=True) as client:
                for automation in client.read_automations_by_name(name):
                    if automation.enabled:
                        client.pause_automation(automation.id)
        except Exception as exc:  # the API may be gone; say so and go on stopping
            echo(f"warning: could not pause the probe heartbeat automation: {exc}")
