"""A run an earlier serve left Running holds its singleton deployment's slot, so every
new run is cancelled (``CANCEL_NEW``) until the next serve marks it Crashed: on the
test harness, a real Prefect API with Prefect's own deployment concurrency rules."""

from __future__ import annotations

import uuid

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import (
    ConcurrencyLimitStrategy,
    ConcurrencyOptions,
    State,
    StateType,
)
from prefect.states import Pending, Running

from deployments.orphaned_runs import ORPHAN_MESSAGE, crash_orphaned_runs


def _singleton(client: SyncPrefectClient, flow_id: uuid.UUID, name: str) -> uuid.UUID:
    """A deployment of one slot whose new runs are cancelled while it is taken."""
    options = ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    return client.create_deployment(flow_id, name, concurrency_limit=1, concurrency_options=options)


def _started(client: SyncPrefectClient, deployment_id: uuid.UUID) -> str:
    """A new run of *deployment_id* taken to Pending then Running as a runner would
    (unforced, so Prefect's rules take the slot); the type of the state it reached."""
    run = client.create_flow_run_from_deployment(deployment_id)
    state: State[object] | None = client.set_flow_run_state(run.id, Pending()).state
    if state is not None and state.type.value == "PENDING":
        state = client.set_flow_run_state(run.id, Running()).state
    assert state is not None
    return state.type.value


def _state(client: SyncPrefectClient, run_id: uuid.UUID) -> str:
    state = client.read_flow_run(run_id).state
    assert state is not None
    return state.type.value


def test_orphans_of_our_deployments_are_crashed_and_free_the_slot(prefect_api: str) -> None:
    tag = uuid.uuid4().hex[:12]
    said: list[str] = []
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(f"orphan-test-{tag}")
        ours = _singleton(client, flow_id, f"ours-{tag}")
        theirs = _singleton(client, flow_id, f"theirs-{tag}")
        assert _started(client, ours) == "RUNNING"  # the earlier serve's run, now orphaned
        assert _started(client, theirs) == "RUNNING"
        # the bug: the orphan holds the slot, so a new run is cancelled
        assert _started(client, ours) == "CANCELLED"
        waiting = client.create_flow_run_from_deployment(ours).id
        runs = client.read_flow_runs()
        orphan = next(
            r.id for r in runs if r.deployment_id == ours and r.state_type == StateType.RUNNING
        )
        other = next(r.id for r in runs if r.deployment_id == theirs)

        assert crash_orphaned_runs([ours], echo=said.append) == [orphan]

        crashed = client.read_flow_run(orphan).state
        assert crashed is not None and crashed.type.value == "CRASHED"
        assert crashed.message == ORPHAN_MESSAGE
        assert _state(client, other) == "RUNNING"  # not our deployment: untouched
        assert _state(client, waiting) == "SCHEDULED"  # not live: untouched
        assert _started(client, ours) == "RUNNING"  # the slot is free again
        assert len(said) == 1 and str(orphan) in said[0]


def test_no_deployments_ask_nothing_of_the_api() -> None:
    assert crash_orphaned_runs([], echo=lambda line: None) == []
