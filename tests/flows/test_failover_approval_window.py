"""A failover run can wait for approval longer than Prefect's lease renewal (issue 15).

The ``failover`` deployment is served by a subprocess against a real ``prefect server``
(as ``ppo-dr serve`` does); its run pauses for approval, nobody answers for six
minutes (the engine renews a lease every ~225 s, and a deployment concurrency slot,
released on pause, made that renewal kill the run), then the plan is approved and the
run completes. Slow by nature (marked ``slow``): the one test of it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deployments.local_server import api_is_healthy
from deployments.prefect_api import approve_plan
from ppo_dr.failover.fleet_state import fleet_state
from ppo_dr.failover.plan import Scope, Target, plan_failover
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Store
from tests.labs import own_lab_of_test
from tests.prefect_fixtures import isolated_env, using_api

pytestmark = [pytest.mark.slow, pytest.mark.lab, pytest.mark.timeout(900)]

#: Longer than the engine's lease renewal period (~225 s) with a margin.
UNANSWERED_S = 360

SERVE_FAILOVER = (
    "from prefect import serve\n"
    "from deployments.registry import failover_deployment\n"
    "deployment = failover_deployment()\n"
    "deployment.apply()\n"
    "serve(deployment, print_starting_message=False)\n"
)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    with own_lab_of_test(tmp_path, monkeypatch, clients=2, size_mb=2, settle_s=1.0) as lab:
        yield lab


def test_a_paused_failover_approved_after_six_minutes_completes(
    prefect_server: str, lab: Lab, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    fleet = load_fleet(lab.fleet_file)
    client = fleet.clients[0]
    state = fleet_state(lab.fleet_file, (), datetime.now(UTC))
    plan = plan_failover(state, Scope(clients=(client.id,)), Target(), "emergency")
    assert plan.moves, plan.render()
    env = isolated_env(
        PREFECT_API_URL=prefect_server,
        PPO_DR_FLEET=str(lab.fleet_file),
        PPO_DR_HOME=str(tmp_path / "home"),
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE_FAILOVER],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert api_is_healthy(prefect_server)
        with using_api(prefect_server), get_client(sync_client=True) as prefect:
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
            wanted = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"plan:{plan.plan_id}"]))
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                state = prefect.read_flow_run(run.id).state  # type: ignore[union-attr]
                if state is not None and state.is_paused():
                    break
                time.sleep(1)
            else:
                raise AssertionError(f"the failover run never paused: {state}")
            paused_at = time.monotonic()
            while time.monotonic() - paused_at < UNANSWERED_S:
                state = prefect.read_flow_run(run.id).state  # type: ignore[union-attr]
                assert state is not None and state.is_paused(), f"died while waiting: {state}"
                time.sleep(10)
            assert [r.id for r in prefect.read_flow_runs(flow_run_filter=wanted)] == [run.id]
            outcomes = approve_plan(
                plan.plan_id, {"approve": True, "by": "anna", "note": "late"}, wait_s=10
            )
            assert outcomes and outcomes[0][1].startswith("accept"), outcomes
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                state = prefect.read_flow_run(run.id).state  # type: ignore[union-attr]
                if state is not None and state.is_final():
                    break
                time.sleep(2)
            assert state is not None and state.is_completed(), f"{state}"
            limit = prefect.read_global_concurrency_limit_by_name("failover")
            assert limit.active_slots == 0  # the one-failover slot was taken and given back
        with Store.open(lab.store_url) as store:
            home = store.placement(client.id)
            assert home is not None and home.server_id == plan.moves[0].to_server
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        log.close()
