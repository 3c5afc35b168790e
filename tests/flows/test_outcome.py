"""A runbook that did part of its work ends Failed and still hands over its results.

Found in the chaos matrix: a drill that failed a canary ended Failed, but the process
running it logged "Engine execution exited with unexpected exception ... TypeError:
Unexpected result for failed state", because the Failed state carried a dict. These
runs go through the real engine on the harness's API, as a worker runs them.
"""

from __future__ import annotations

from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client

from flows.outcome import failed_with, run_result
from ppo_dr.errors import PermanentError, RunbookFailed

SUMMARY: dict[str, Any] = {"drilled": {"acme-mining": "restore failed"}, "failed": ["acme-mining"]}


@flow(name="half-done", persist_result=True)
def half_done() -> Any:
    return failed_with("drill failed: acme-mining", SUMMARY)


@flow(name="all-done")
def all_done() -> dict[str, Any]:
    return SUMMARY


pytestmark = pytest.mark.usefixtures("prefect_api")


def test_a_failed_run_raises_its_failure_with_the_results() -> None:
    """Called as the engine calls it at the end of a worker's run: the failure raised is
    ours, with the results, not a TypeError about the state's data."""
    with pytest.raises(RunbookFailed) as raised:
        half_done()
    assert str(raised.value) == "drill failed: acme-mining"
    assert raised.value.result == SUMMARY
    assert isinstance(raised.value, PermanentError)


def test_run_result_reads_the_results_of_a_failed_or_completed_run() -> None:
    failed = half_done(return_state=True)
    assert failed.is_failed() and failed.message == "drill failed: acme-mining"
    assert run_result(failed) == SUMMARY
    done = all_done(return_state=True)
    assert done.is_completed() and run_result(done) == SUMMARY


def test_the_results_survive_the_api() -> None:
    """A parent that reads the run back from the API (as ``run_deployment`` does) gets
    the failure with its results: the persisted data unpickles whole (an exception
    with an extra argument does not, unless it says how: ``RunbookFailed.__reduce__``)."""
    state = half_done(return_state=True)
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(state.state_details.flow_run_id).state  # type: ignore[arg-type]
    assert stored is not None and stored.is_failed()
    assert run_result(stored) == SUMMARY
