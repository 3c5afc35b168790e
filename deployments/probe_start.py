"""A ``probe-fleet`` run started now, by ``ppo-dr deploy`` and ``ppo-dr serve`` alike.

The probe's interval schedule counts from the deployment's registration, so its first
run comes a whole period (10 minutes) after a fresh deploy or serve, with nobody
watching the fleet meanwhile. Both start one at once unless one is already live or due.
"""

from __future__ import annotations

from collections.abc import Coroutine

from deployments.console import Echo

PROBE_DEPLOYMENT = "probe-fleet/probe-fleet"
#: A scheduled probe run this close (or late) counts as due: no extra run is started.
PROBE_DUE_S = 60.0


def start_probe_now(echo: Echo) -> str:
    """Start a ``probe-fleet`` run now unless one is running, pending, or scheduled to
    start within :data:`PROBE_DUE_S` (late ones included); the run's name. A run started
    beside a live one is harmless: the two hand over as at every period's end
    (``deployments.registry.PROBE_HANDOVER``)."""
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    due = datetime.now(UTC) + timedelta(seconds=PROBE_DUE_S)
    live = [StateType.RUNNING, StateType.PENDING]
    with get_client(sync_client=True) as client:
        probe_runs = DeploymentFilter(name=DeploymentFilterName(any_=["probe-fleet"]))
        for states, expected in ((live, None), ([StateType.SCHEDULED], due)):
            found = client.read_flow_runs(
                deployment_filter=probe_runs,
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
                    expected_start_time=FlowRunFilterExpectedStartTime(before_=expected)
                    if expected
                    else None,
                ),
                limit=1,
            )
            if found:
                echo(f"probe: run {found[0].name} is {found[0].state_name}, none started")
                return found[0].name
    run = run_deployment(PROBE_DEPLOYMENT, timeout=0)
    assert not isinstance(run, Coroutine)  # the sync form
    echo(f"probe: run {run.name} started now (the schedule's first run is a period away)")
    return run.name
