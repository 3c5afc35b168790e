"""A task that needs the Prefect API is tried again when the API does not answer, and
for nothing else: the failover's batch task (``run_batch``) met a restarting Prefect
server in the chaos suite's ``prefect-server-kill`` and a client was left unmoved."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import Completed, Failed

from flows.failover_client import run_batch
from ppo_dr.errors import ApiUnreachable, TransientError
from ppo_dr.failover.model import ClientMove
from ppo_dr.failover.runs import ClientBatch
from ppo_dr.retry_policy import API_RETRY_DELAYS
from tasks import API_RETRIES, api_down_condition_fn
from tests.prefect_fixtures import using_api


@task
def _task() -> None:
    """A stand-in task for calling the retry condition directly."""


def _run() -> TaskRun:
    return TaskRun(name="stand-in", task_key="stand-in", dynamic_key="0", run_count=1)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ApiUnreachable("ConnectError"), True),
        (TransientError("ssh reset"), False),  # the batch's own steps retry themselves
        (TimeoutError("the pool run did not finish"), False),  # not made longer
        (ValueError("a bug"), False),
    ],
)
def test_only_an_unreachable_api_is_tried_again(error: Exception, retried: bool) -> None:
    assert api_down_condition_fn(_task, _run(), Failed(data=error)) is retried
    assert api_down_condition_fn(_task, _run(), Completed(data=1)) is False


def test_the_batch_task_waits_out_a_server_restart() -> None:
    assert run_batch.retries == len(API_RETRY_DELAYS)
    assert run_batch.retry_condition_fn is api_down_condition_fn
    assert sum(API_RETRY_DELAYS) >= 60  # a restart of a loaded server, not one call


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: refused


def test_a_batch_that_cannot_reach_the_api_says_so(tmp_path: Path) -> None:
    """The real Prefect client against a refused loopback port: the batch's subflow run
    cannot be created, and that is an ApiUnreachable, not a failed client."""
    move = ClientMove("acme", "app-a", "app-b", "mirror-a", "s1", None, (), (), 0)
    batch = ClientBatch("app-b", "dc-b", (move,))
    with using_api(f"http://127.0.0.1:{_closed_port()}/api"), pytest.raises(ApiUnreachable):
        run_batch.fn(tmp_path / "fleet.yaml", f"sqlite:///{tmp_path / 'state.db'}", "plan-1",
                     batch, "emergency", {"acme": 1}, datetime.now(UTC), None,
                     "in-process")  # fmt: skip


def test_prefect_tries_again_only_while_the_api_is_away(prefect_api: str) -> None:
    attempts: list[str] = []

    @task(**{**API_RETRIES, "retry_delay_seconds": 0})
    def needs_api(kind: str) -> str:
        attempts.append(kind)
        if len(attempts) == 1 or kind == "timeout":
            raise ApiUnreachable("ConnectError") if kind == "api" else TimeoutError(kind)
        return "ok"

    @flow
    def runbook(kind: str) -> str:
        return needs_api(kind)

    assert runbook("api") == "ok"
    assert attempts == ["api", "api"]
    attempts.clear()
    with pytest.raises(TimeoutError):
        runbook("timeout")
    assert attempts == ["timeout"]
