"""The Prefect API as the CLI commands reach it, and resuming runs that wait on a pause.

``ppo-dr incident ack`` and ``ppo-dr failover approve`` both answer a paused run with
typed input; they find the API the same way and resume the same way, here.

The API is the one ``PREFECT_API_URL`` names, else the one ``ppo-dr serve`` wrote to
``<home>/prefect/serve.json`` while serving.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ppo_dr import config

if TYPE_CHECKING:
    from prefect.client.schemas.filters import FlowRunFilter
    from prefect.client.schemas.objects import StateType


def api_url() -> str | None:
    """``PREFECT_API_URL``, else the API ``ppo-dr serve`` is serving on, else None."""
    named = os.environ.get("PREFECT_API_URL")
    if named:
        return named
    state = config.home() / "prefect" / "serve.json"
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = data.get("api_url") if isinstance(data, dict) else None
    return str(url) if url else None


@contextlib.contextmanager
def use_api(url: str | None) -> Iterator[None]:
    """Point the Prefect client at *url* for the block (unless PREFECT_API_URL is set)."""
    if url is None or os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def resume_paused(
    tag: str,
    run_input: dict[str, Any],
    *,
    wait_s: float,
    every_run: bool,
    settled_state: str | None = None,
) -> list[tuple[str, str]]:
    """Resume the paused runs tagged *tag* with *run_input*: ``(run name, outcome)`` pairs.

    A run of the tag that is running, not paused (still planning, or between two
    pauses), is waited for up to *wait_s*: with *every_run* until each such run has
    been resumed once, else until the first paused run is found. A run that left its
    pause between our read and our resume (its wait timed out) is tried again when it
    pauses next, not reported as refused; a running run whose state is named
    *settled_state* (e.g. an escalation that saw the acknowledgement in the store by
    itself) needs no resume and is reported as such. None found: [].
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    wanted = _runs_of(tag, [StateType.PAUSED, StateType.RUNNING])
    outcomes: list[tuple[str, str]] = []
    deadline = time.monotonic() + wait_s
    done: set[str] = set()
    with get_client(sync_client=True) as client:
        while True:
            runs = [
                r for r in client.read_flow_runs(flow_run_filter=wanted) if str(r.id) not in done
            ]
            for run in runs:
                if settled_state and run.state is not None and run.state.name == settled_state:
                    outcomes.append((run.name, f"not needed (already {settled_state.lower()})"))
                    done.add(str(run.id))
            paused = [r for r in runs if r.state is not None and r.state.is_paused()]
            for run in paused:
                result = client.resume_flow_run(run.id, run_input=run_input)
                reason = getattr(result.details, "reason", None)
                status = result.status.value.lower()
                if status == "abort" and not _still_paused(client, run.id):
                    continue  # it left the pause as we came: resume it at its next one
                outcomes.append((run.name, f"{status}: {reason}" if reason else status))
                done.add(str(run.id))
            waiting = [r for r in runs if str(r.id) not in done]
            finished = not waiting if every_run else bool(paused)
            if finished or time.monotonic() > deadline:
                return outcomes
            time.sleep(0.5)


def _runs_of(tag: str, states: list[StateType]) -> FlowRunFilter:
    """The filter for flow runs tagged *tag* in any of *states*."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )

    return FlowRunFilter(
        tags=FlowRunFilterTags(all_=[tag]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
    )


def _still_paused(client: Any, run_id: Any) -> bool:
    state = client.read_flow_run(run_id).state
    return state is not None and state.is_paused()


def ended_runs(tag: str) -> list[tuple[str, str]]:
    """The runs tagged *tag* that ended without completing: ``(run name, state)``, newest
    first; the state reads e.g. ``Crashed: Flow run infrastructure exited ...``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    ended = _runs_of(tag, [StateType.FAILED, StateType.CRASHED, StateType.CANCELLED])
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=ended, sort=FlowRunSort.START_TIME_DESC)
    out: list[tuple[str, str]] = []
    for run in runs:
        state = run.state
        name = (state.name if state is not None else None) or "unknown"
        message = state.message if state is not None and state.message else ""
        out.append((run.name, f"{name}: {message}" if message else name))
    return out


def approve_plan(
    plan_id: str, run_input: dict[str, Any], *, wait_s: float
) -> list[tuple[str, str]]:
    """Resume the failover run waiting for approval of *plan_id*: ``(run, outcome)``.

    No run waits: :class:`~ppo_dr.errors.PermanentError` saying why, with the state of
    the plan's run that ended (crashed, failed, timed out, cancelled), or that no run
    of the plan exists, instead of resuming nothing.
    """
    from ppo_dr.errors import PermanentError

    tag = f"plan:{plan_id}"
    outcomes = resume_paused(tag, run_input, wait_s=wait_s, every_run=False)
    if outcomes:
        return outcomes
    ended = ended_runs(tag)
    if ended:
        name, state = ended[0]
        raise PermanentError(
            f"no failover run is waiting for approval of plan {plan_id}: its run {name} "
            f"ended {state}; start a new run of the plan (`ppo-dr failover run`)"
        )
    raise PermanentError(f"no failover run is waiting for approval of plan {plan_id}")
