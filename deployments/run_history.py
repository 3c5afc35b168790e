"""An incident's run history from the Prefect API, for its evidence bundle.

Which runs: every flow run tagged ``incident:<id>``, every run the store's records name
(the probe run that declared it, the escalation, the failovers), and their child runs.
For each: the run (states with timestamps, parameters, tags, work pool, queue and
process that ran it), its task runs with every state (so each retry is there), its
logs and its artifacts, as plain JSON records.

Task-run records can lag behind their flow run by up to a minute; the export reads
them until :func:`ppo_dr.evidence.settle.lagging_runs` finds none lagging or *wait_s*
runs out, and says which it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from ppo_dr.errors import TransientError
from ppo_dr.evidence.export import RunsRead
from ppo_dr.evidence.settle import TaskRunRead, lagging_runs

Record = dict[str, Any]
PAGE = 200
POLL_S = 1.0


def _dump(model: Any) -> Record:
    return dict(model.model_dump(mode="json"))


def _paged(read: Callable[[int], list[Any]]) -> list[Any]:
    out: list[Any] = []
    while True:
        page = read(len(out))
        out += page
        if len(page) < PAGE:
            return out


def _flow_runs(client: Any, tag: str, run_ids: Iterable[str]) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        FlowRunFilterTags,
    )

    def read(flt: FlowRunFilter) -> list[Any]:
        return _paged(lambda at: client.read_flow_runs(flow_run_filter=flt, limit=PAGE, offset=at))

    found = {str(r.id): r for r in read(FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))}
    named = [UUID(r) for r in run_ids if r not in found]
    if named:
        found.update({str(r.id): r for r in read(FlowRunFilter(id=FlowRunFilterId(any_=named)))})
    parents = [r.id for r in found.values()]
    if parents:
        children = FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents))
        found.update({str(r.id): r for r in read(children)})
    return sorted(found.values(), key=lambda r: (r.created, str(r.id)))


def _task_runs(client: Any, flow_run_ids: list[UUID]) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flt = FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids))
    return _paged(lambda at: client.read_task_runs(flow_run_filter=flt, limit=PAGE, offset=at))


def _logs(client: Any, flow_run_ids: list[UUID]) -> list[Any]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
    return _paged(
        lambda at: client.read_logs(
            log_filter=flt, limit=PAGE, offset=at, sort=LogSort.TIMESTAMP_ASC
        )
    )


def _artifacts(client: Any, flow_run_ids: list[UUID]) -> list[Any]:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
    return _paged(lambda at: client.read_artifacts(artifact_filter=flt, limit=PAGE, offset=at))


def _read(runs: list[Any], task_runs: list[Any], named: dict[str, set[str]]) -> TaskRunRead:
    """Counts, unfinished task runs of ended flow runs, and task runs named but not read."""
    ended = {str(r.id) for r in runs if r.state is not None and r.state.is_final()}
    counts = {str(r.id): 0 for r in runs}
    unfinished: dict[str, int] = {}
    seen: set[str] = set()
    for task in task_runs:
        run = str(task.flow_run_id)
        seen.add(str(task.id))
        counts[run] = counts.get(run, 0) + 1
        if run in ended and (task.state is None or not task.state.is_final()):
            unfinished[run] = unfinished.get(run, 0) + 1
    missing = {run: ids - seen for run, ids in named.items()}
    return TaskRunRead(counts=counts, unfinished=unfinished, missing=missing)


def _named_task_runs(records: Iterable[Any]) -> dict[str, set[str]]:
    named: dict[str, set[str]] = {}
    for item in records:
        if item.task_run_id is not None and item.flow_run_id is not None:
            named.setdefault(str(item.flow_run_id), set()).add(str(item.task_run_id))
    return named


def incident_run_history(
    tag: str,
    run_ids: Iterable[str],
    *,
    wait_s: float,
    poll_s: float = POLL_S,
) -> RunsRead:
    """The runs of the incident (tag *tag*, or named by *run_ids*) with their task runs,
    states, logs and artifacts, waiting up to *wait_s* for lagging task-run records."""
    import httpx

    try:
        return _read_history(tag, run_ids, wait_s=wait_s, poll_s=poll_s)
    except (httpx.HTTPError, OSError) as exc:
        raise TransientError(
            f"could not read the run history from the Prefect API: {type(exc).__name__}: {exc}"
        ) from exc


def _read_history(tag: str, run_ids: Iterable[str], *, wait_s: float, poll_s: float) -> RunsRead:
    from prefect.client.orchestration import get_client

    started = time.monotonic()
    with get_client(sync_client=True) as client:
        runs = _flow_runs(client, tag, run_ids)
        ids = [r.id for r in runs]
        logs = _logs(client, ids) if ids else []
        artifacts = _artifacts(client, ids) if ids else []
        named = _named_task_runs([*logs, *artifacts])
        previous: dict[str, int] | None = None
        while True:
            task_runs = _task_runs(client, ids) if ids else []
            read = _read(runs, task_runs, named)
            lagging = lagging_runs(previous, read)
            if not lagging or time.monotonic() - started >= wait_s:
                break
            previous = dict(read.counts)
            time.sleep(poll_s)
            runs = _flow_runs(client, tag, [str(i) for i in ids])
            ids = [r.id for r in runs]
        logs = _logs(client, ids) if ids else []
        sections: dict[str, list[Record]] = {
            "flow_runs": [
                {**_dump(r), "states": [_dump(s) for s in client.read_flow_run_states(r.id)]}
                for r in runs
            ],
            "task_runs": [
                {**_dump(t), "states": [_dump(s) for s in client.read_task_run_states(t.id)]}
                for t in task_runs
            ],
            "logs": [_dump(entry) for entry in logs],
            "artifacts": [_dump(a) for a in artifacts],
        }
    return RunsRead(sections, time.monotonic() - started, tuple(sorted(lagging)))
