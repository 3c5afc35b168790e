"""A failover run can wait for approval longer than Prefect's lease renewal (issue 15).

The ``failover`` deployment is served by a subprocess against a real ``prefect server``
(as ``ppo-dr serve`` does); its run pauses for approval and nobody answers until the
engine's first lease renewal is well past (it renews a run's lease when the run starts
and every 225 s after, and a deployment concurrency slot, released on pause, made that
renewal kill the run after 3 m 48 s); then the plan is approved and the run completes.
While it waits, the test checks what the renewal would lose: the run holds no deployment
lease and no failover slot, and its pause lasts the whole approval window, so a
regression fails within a minute instead of after the wait. Slow by nature (marked
``slow``): the one test of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pytest

from deployments.prefect_api import approve_plan
from flows.failover import APPROVAL_TIMEOUT_S
from ppo_dr.failover.fleet_state import fleet_state
from ppo_dr.failover.plan import Scope, Target, plan_failover
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Store
from tests.flows.serving import served
from tests.labs import own_lab_of_test
from tests.prefect_fixtures import isolated_env, using_api

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.states import State

pytestmark = [pytest.mark.slow, pytest.mark.lab, pytest.mark.timeout(900)]

#: Seconds after the run started when the plan is approved: past the engine's renewal at
#: 225 s (0.75 of its 300 s lease) and that renewal's retries (3 attempts, ~15 s).
UNANSWERED_S = 270


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    with own_lab_of_test(tmp_path, monkeypatch, clients=2, size_mb=2, settle_s=1.0) as lab:
        yield lab


def test_a_paused_failover_approved_after_the_lease_renewal_completes(
    prefect_server: str, lab: Lab, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    fleet = load_fleet(lab.fleet_file)
    client = fleet.clients[0]
    fleet_now = fleet_state(lab.fleet_file, (), datetime.now(UTC))
    plan = plan_failover(fleet_now, Scope(clients=(client.id,)), Target(), "emergency")
    assert plan.moves, plan.render()
    env = isolated_env(
        PREFECT_API_URL=prefect_server,
        PPO_DR_FLEET=str(lab.fleet_file),
        PPO_DR_HOME=str(tmp_path / "home"),
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    with (
        served("failover_deployment", env, tmp_path / "serve.log"),
        using_api(prefect_server),
        get_client(sync_client=True) as prefect,
    ):
        deadline = time.monotonic() + 120
        while True:  # the serve subprocess applies the deployment first
            try:
                prefect.read_deployment_by_name("failover/failover")
                break
            except ObjectNotFound:
                assert time.monotonic() < deadline, "failover deployment never applied"
                time.sleep(1)
        run = run_deployment(
            "failover/failover",
            parameters={"plan_json": plan.to_json(), "fleet_file": str(lab.fleet_file)},
            timeout=0,
        )
        assert isinstance(run, FlowRun), run
        wanted = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"plan:{plan.plan_id}"]))
        state = state_once(prefect, run.id, lambda s: s.is_paused(), timeout=120, every=1)
        # Nothing a lease renewal could lose: no deployment lease in any of the run's
        # states, the one-failover slot free (its limit is created after approval, so on
        # a fresh server it does not exist yet); and the pause lasts the approval window.
        leases = [
            s.state_details.deployment_concurrency_lease_id
            for s in prefect.read_flow_run_states(run.id)
        ]
        assert leases == [None] * len(leases), leases
        slots = {
            limit.name: limit.active_slots
            for limit in prefect.read_global_concurrency_limits(limit=200)
        }
        assert slots.get("failover", 0) == 0, slots
        pause_ends = state.state_details.pause_timeout
        assert pause_ends is not None
        assert pause_ends - datetime.now(UTC) > timedelta(seconds=APPROVAL_TIMEOUT_S - 600)
        started = prefect.read_flow_run(run.id).start_time
        assert started is not None
        while (datetime.now(UTC) - started).total_seconds() < UNANSWERED_S:
            waiting = prefect.read_flow_run(run.id).state
            assert waiting is not None and waiting.is_paused(), f"died while waiting: {waiting}"
            time.sleep(10)
        assert [r.id for r in prefect.read_flow_runs(flow_run_filter=wanted)] == [run.id]
        outcomes = approve_plan(
            plan.plan_id, {"approve": True, "by": "anna", "note": "late"}, wait_s=10
        )
        assert outcomes and outcomes[0][1].startswith("accept"), outcomes
        state = state_once(prefect, run.id, lambda s: s.is_final(), timeout=300, every=2)
        assert state.is_completed(), f"{state}"
        limit = prefect.read_global_concurrency_limit_by_name("failover")
        assert limit.active_slots == 0  # the one-failover slot was taken and given back
    with Store.open(lab.store_url) as store:
        home = store.placement(client.id)
        assert home is not None and home.server_id == plan.moves[0].to_server


def state_once(
    prefect: SyncPrefectClient,
    run_id: UUID,
    reached: Callable[[State[Any]], bool],
    timeout: float,
    every: float,
) -> State[Any]:
    """The run's state once it has *reached* what the test waits for (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        state = prefect.read_flow_run(run_id).state
        if state is not None and reached(state):
            return state
        assert time.monotonic() < deadline, f"not reached after {timeout} s: {state}"
        time.sleep(every)
