"""Runs an earlier ``serve`` left Running or Pending, marked Crashed when serve starts.

A serve that was SIGKILLed (or whose host died) leaves its in-flight runs Running in
the Prefect database. Serve's own server keeps that database, and the next serve on
it finds them still there: a singleton deployment's one slot (``CANCEL_NEW``) stays
taken, so every new run of it is cancelled, e.g. no probe runs at all. The engine's
zombie detection would crash them eventually, but only after missed heartbeats that
the new server never saw beating. A serve holding its server's lock is the only
runner of its deployments on that database, so any live-looking run of them is an
orphan: it is marked Crashed (which frees its slot), and nothing else is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from deployments.console import Echo, print_flushed

if TYPE_CHECKING:
    from uuid import UUID

#: States a run is in only while a runner works on it.
LIVE_STATES = ("PENDING", "RUNNING", "CANCELLING")
ORPHAN_MESSAGE = "crashed: its serve is gone (a new serve on the same database started)"


def crash_orphaned_runs(deployment_ids: Sequence[UUID], echo: Echo = print_flushed) -> list[UUID]:
    """Mark Crashed every Pending, Running or Cancelling run of *deployment_ids*; their ids.

    Call it only where no other runner serves these deployments on this API (serve with
    its own server, holding the server's lock, before its runner starts).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    if not deployment_ids:
        return []
    live = FlowRunFilterStateType(any_=[StateType(s) for s in LIVE_STATES])
    crashed: list[UUID] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=live)),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(deployment_ids))),
        )
        for run in runs:
            # forced: the minimal policy, which still releases the deployment's slot
            client.set_flow_run_state(run.id, Crashed(message=ORPHAN_MESSAGE), force=True)
            crashed.append(run.id)
            echo(f"orphaned run {run.name} ({run.id}) of an earlier serve: marked Crashed")
    return crashed
