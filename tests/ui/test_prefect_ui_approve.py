"""The operator approves a failover plan in the Prefect UI: open the paused failover run,
press Resume, read the plan shown above the form (:meth:`flows.failover.Approval.for_plan`),
turn "Approve the plan" on, give a name and a note, submit; the run goes on and the
client answers from its new home through the front door. Runs against a real ``prefect
server start`` (the test harness serves no UI), a lab of the test's own and the failover
flow in a thread of this process."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from flows.failover import failover
from ppo_dr.failover.fleet_state import fleet_state
from ppo_dr.failover.plan import Scope, Target, plan_failover
from ppo_dr.fleet_access import client_ids_on
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Store
from tests.labs import front_door, own_lab_of_test
from tests.prefect_fixtures import using_api
from tests.ui.prefect_ui import resume_in_ui

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

#: A lab, a real Prefect server and a browser: about a minute idle, minutes under load.
pytestmark = [pytest.mark.timeout(600), pytest.mark.lab]

SOURCE, SPARE = "app-jhb1-2", "spare-cpt1-1"


@pytest.fixture
def lab(prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A small lab of this test's own, mirrored once, with the real server as the API."""
    with (
        own_lab_of_test(tmp_path, monkeypatch, clients=4, size_mb=2, settle_s=1.0) as lab,
        using_api(prefect_server),
    ):
        yield lab


def paused_run_of(tag: str, timeout: float = 120.0) -> Any:
    """The flow run tagged *tag* once it is paused (one client, polled each second)."""
    wanted = FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=wanted)
            paused = [r for r in runs if r.state is not None and r.state.is_paused()]
            if paused:
                return paused[0]
            time.sleep(1.0)
    raise AssertionError(f"no run tagged {tag} paused within {timeout:.0f} s")


def test_a_plan_approved_in_the_ui_is_carried_out(
    lab: Lab, browser: WebDriver, prefect_server: str
) -> None:
    fleet = load_fleet(lab.fleet_file)
    client = client_ids_on(fleet, SOURCE)[0]
    state = fleet_state(lab.fleet_file, (), datetime.now(UTC))
    plan = plan_failover(state, Scope(clients=(client,)), Target(server=SPARE), "emergency")
    with Store.open(lab.store_url) as store:
        incident, _ = store.open_incident(
            "outage", f"server:{SOURCE}", f"{SOURCE} down", {"server": SOURCE}
        )
    carry_out = partial(failover, plan_json=plan.to_json(), incident_id=incident.id,
                        fleet_file=lab.fleet_file, return_state=True)  # fmt: skip
    outcome: Future[Any] = Future()
    context = contextvars.copy_context()
    threading.Thread(target=lambda: outcome.set_result(context.run(carry_out)), daemon=True).start()
    run = paused_run_of(f"plan:{plan.plan_id}")

    ui = prefect_server.removesuffix("/api")
    shown = resume_in_ui(
        browser,
        f"{ui}/runs/flow-run/{run.id}",
        {"Your name": "anna", "Note": "go ahead"},
        switch_on=("Approve the plan",),
    )
    assert "Approve failover plan" in shown and "Approve the plan" in shown
    assert plan.plan_id in shown and client in shown and SPARE in shown  # the plan itself

    final = outcome.result(timeout=240)
    assert final.is_completed(), final
    assert front_door(load_fleet(lab.fleet_file), client) == (200, SPARE)
    with Store.open(lab.store_url) as store:
        said = [entry.message for entry in store.timeline(incident.id)]
    assert f"plan {plan.plan_id} approved by anna: go ahead" in said
