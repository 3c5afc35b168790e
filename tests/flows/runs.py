"""Reading a run's evidence back through the Prefect client, as an operator sees it in
the UI: the flow run of a returned state, its artifacts and task runs, and a poll for
what Prefect records a moment late."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import Artifact, TaskRun
from prefect.states import State

from deployments.demo.waiting import wait_for

T = TypeVar("T")


def flow_run_id(state: State[Any]) -> UUID:
    """The id of the flow run that ended in *state*."""
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


def artifacts_of(client: SyncPrefectClient, run_id: UUID) -> dict[str, Artifact]:
    """The run's artifacts by key (by id for those without one)."""
    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    )
    return {a.key or str(a.id): a for a in found}


def task_runs_of(client: SyncPrefectClient, run_id: UUID) -> list[TaskRun]:
    """The run's task runs."""
    return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))


def eventually(probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Poll *probe* until it returns something truthy (Prefect records task runs late)."""
    value = wait_for(str(probe), probe, timeout, every=0.2)
    assert value is not None  # wait_for returns only what is true
    return value
