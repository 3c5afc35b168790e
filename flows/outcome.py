"""How a runbook that did not do all it was asked ends: Failed, its results kept.

One rule for every runbook: a run that did part of its work ends ``Failed`` (so the UI,
automations and a parent run see it failed) and still hands over what it did. The
results ride in a :class:`~ppo_dr.errors.RunbookFailed`, the only kind of data a
Failed state may carry without breaking the engine's end of run.
"""

from __future__ import annotations

from typing import Any

from prefect.states import Failed, State

from ppo_dr.errors import RunbookFailed


def failed_with(message: str, result: Any) -> State[Any]:
    """A Failed state saying *message* that still carries *result*."""
    return Failed(message=message, data=RunbookFailed(message, result))


def run_result(state: State[Any]) -> Any:
    """What a finished run handed over: its return value, or the results its failure
    carries; any other failure's exception as it is."""
    value = state.result(raise_on_failure=False)
    return value.result if isinstance(value, RunbookFailed) else value
