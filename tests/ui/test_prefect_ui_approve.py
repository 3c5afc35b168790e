"""The operator approves a failover plan in the Prefect UI: open the paused failover run,
press Resume, read the plan shown above the form (:meth:`flows.failover.Approval.for_plan`),
turn "Approve the plan" on, give a name and a note, submit; the run goes on and the
client answers from its new home through the front door. Runs against a real ``prefect
server start`` (the test harness serves no UI), a lab of the test's own and the failover
flow in a thread of this process."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
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
from tests.flows.escalation_env import wait_for
from tests.labs import front_door, own_lab_of_test
from tests.prefect_fixtures import using_api
from tests.ui.prefect_ui import resume_in_ui

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = [pytest.mark.timeout(300), pytest.mark.lab]

SOURCE, SPARE = "app-jhb1-2", "spare-cpt1-1"


@pytest.fixture
def lab(prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A small lab of this test's own, mirrored once, with the real server as the API."""
    with (
        own_lab_of_test(tmp_path, monkeypatch, clients=4, size_mb=2, settle_s=1.0) as lab,
        using_api(prefect_server),
    ):
        yield lab


def paused_run_of(tag: str) -> Any:
    """The paused flow run tagged *tag*, or None."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]))
        )
    return next((r for r in runs if r.state is not None and r.state.is_paused()), None)


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
    outcome: list[Any] = []
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=lambda: outcome.append(
            context.run(
                failover,
                plan_json=plan.to_json(),
                incident_id=incident.id,
                fleet_file=lab.fleet_file,
                return_state=True,
            )
        ),
        daemon=True,
    )
    thread.start()
    tag = f"plan:{plan.plan_id}"
    wait_for("the failover paused for approval", lambda: paused_run_of(tag) is not None)
    run = paused_run_of(tag)

    ui = prefect_server.removesuffix("/api")
    shown = resume_in_ui(
        browser,
        f"{ui}/runs/flow-run/{run.id}",
        {"Your name": "anna", "Note": "go ahead"},
        switch_on=("Approve the plan",),
    )
    assert f"Approve failover plan {plan.plan_id}?" in shown  # the plan is on the form
    assert client in shown and SPARE in shown

    thread.join(timeout=240)
    assert outcome and outcome[0].is_completed(), outcome
    assert front_door(load_fleet(lab.fleet_file), client) == (200, SPARE)
    with Store.open(lab.store_url) as store:
        said = [entry.message for entry in store.timeline(incident.id)]
    assert f"plan {plan.plan_id} approved by anna: go ahead" in said
