"""Prefect tasks, grouped by concern: thin wrappers over :mod:`ppo_dr`.

Shared here, for every task module:

- :func:`retry_condition_fn` — the one retry condition. It retries only what
  :func:`ppo_dr.errors.is_retryable` calls transient (timeouts, resets, throttling);
  a :class:`~ppo_dr.errors.PermanentError` (bad inventory, auth, missing path) fails
  at once, so the page goes out now instead of after the back-off.
- :data:`RETRY_DELAYS` and :data:`RETRY_JITTER` — the back-off for tasks that do I/O
  (defined in :mod:`ppo_dr.retry_policy`, where the chaos verdict reads them too);
  :data:`IO_RETRIES` — both with the retry condition, as ``@task(**IO_RETRIES)`` takes them;
  :func:`io_task` — the whole option set of a task that does I/O (never cached, a time
  limit, those retries), so each task states only its name and its time limit.
- :func:`label_flow_run` — rename and tag the current flow run once a runbook knows
  what it acts on (so the UI filters by fleet, DC, server, client, incident).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import TaskRun
from prefect.context import FlowRunContext
from prefect.states import State

from ppo_dr.errors import ApiUnreachable, PermanentError, is_retryable
from ppo_dr.retry_policy import API_RETRY_DELAYS, RETRY_DELAYS, RETRY_JITTER

__all__ = [
    "API_RETRIES",
    "IO_RETRIES",
    "RETRY_DELAYS",
    "RETRY_JITTER",
    "api_down_condition_fn",
    "io_task",
    "label_flow_run",
    "retry_condition_fn",
    "secret_from_block",
]


_log = logging.getLogger(__name__)


def retry_condition_fn(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed task run only if its exception is transient.

    Prefect passes a ``Failed`` state carrying the exception; ``state.result()``
    re-raises it, which is how we get at it (see PREFECT-NOTES: Retries). A state
    that does not raise has nothing we can classify, so it is not retried.
    """
    try:
        state.result()
    except Exception as exc:
        retry = is_retryable(exc)
        _log.debug(
            "task %s attempt %s failed with %s: %s",
            task.name,
            task_run.run_count,
            type(exc).__name__,
            "retrying" if retry else "permanent, not retrying",
        )
        return retry
    return False


def api_down_condition_fn(_task: Task[Any, Any], _task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed task run only if the Prefect API did not answer (ApiUnreachable):
    its other failures (a pool run that timed out, say) are not made longer."""
    try:
        state.result()
    except ApiUnreachable:
        return True
    except Exception:
        return False
    return False


#: ``@task`` keyword arguments of a task that does I/O: back-off, jitter, the condition.
IO_RETRIES: dict[str, Any] = {
    "retries": len(RETRY_DELAYS),
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_condition_fn,
}

#: ``@task`` keyword arguments of a task that needs the Prefect API to go on: tried again
#: over a server restart when the API does not answer, and for nothing else.
API_RETRIES: dict[str, Any] = {
    "retries": len(API_RETRY_DELAYS),
    "retry_delay_seconds": API_RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": api_down_condition_fn,
}


def io_task(timeout_s: float) -> dict[str, Any]:
    """``@task`` keyword arguments of a task that does I/O: never cached (each run acts
    on the world as it is now, and a rerun must act again), at most *timeout_s* seconds,
    and :data:`IO_RETRIES`."""
    return {"cache_policy": NO_CACHE, "timeout_seconds": timeout_s, **IO_RETRIES}


def label_flow_run(name: str | None = None, tags: Iterable[str] = ()) -> None:
    """Rename the current flow run and add *tags* to it; a no-op outside a flow run.

    Runbooks call this as soon as they know what they act on (a fleet file is only
    read inside the run), so the run history reads like an incident record.
    """
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    run = context.flow_run
    merged = list(dict.fromkeys([*(run.tags or []), *tags]))
    with get_client(sync_client=True) as client:
        client.update_flow_run(run.id, name=name, tags=merged)
    run.tags = merged
    if name is not None:
        run.name = name


def secret_from_block(name: str) -> str:
    """A Prefect Secret block's value, the resolver :mod:`ppo_dr.secret_refs` is given.

    Never log what it returns: Prefect does not mask secrets in logs.
    """
    from prefect.blocks.system import Secret

    try:
        block: Any = Secret.load(name)  # the sync form here; typed as either
        return str(block.get())
    except ValueError as exc:
        raise PermanentError(f"Secret block {name!r} not found") from exc
