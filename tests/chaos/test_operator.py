"""The chaos runner's operator over a real Prefect API: a run started without waiting."""

from __future__ import annotations

import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from uuid import UUID

import pytest
from prefect import flow

from cli.chaos import PrefectOperator
from ppo_dr.errors import LabError

pytestmark = pytest.mark.prefect


@flow(name="chaos-operator-check")
def _idle(note: str = "") -> str:
    return note


def test_start_run_returns_at_once_with_a_scheduled_run_of_that_deployment(
    prefect_api: str,
) -> None:
    from prefect.client.orchestration import get_client

    deployment = _idle.to_deployment("start-run")
    assert not isinstance(deployment, Coroutine)
    deployment_id = deployment.apply()
    operator = PrefectOperator(prefect_api)
    began = time.monotonic()
    run_id = operator.start_run("chaos-operator-check/start-run", {"note": "x"})
    assert time.monotonic() - began < 30  # nothing serves it: a waiting call would hang
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    assert run.deployment_id == deployment_id and run.parameters == {"note": "x"}
    assert operator.run_state(run_id) == "SCHEDULED"
    assert operator.running_run("chaos-operator-check/start-run") is None
    # The run's state history, oldest first (how a crash the deploy automation
    # rescheduled at once is still seen).
    history = operator.run_history(run_id)
    assert [name for name, _ in history] == ["SCHEDULED"]
    assert history[0][1] <= datetime.now(UTC)


def test_a_deployment_the_api_does_not_have_fails_the_fault_not_the_run(prefect_api: str) -> None:
    operator = PrefectOperator(prefect_api)
    for start in (operator.start_run, operator.run_to_end):
        with pytest.raises(LabError, match="the Prefect API has no deployment mirror-server/nope"):
            start("mirror-server/nope", {})
