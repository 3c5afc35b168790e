"""The operator's path in the Prefect UI: open the paused escalation run of an incident,
press Resume, fill the form (the :class:`flows.ack_pause.Ack` model) and submit it;
the incident is acknowledged and paging stops. Runs against a real ``prefect server
start`` (the test harness serves no UI), the escalation flow in a thread of this
process, the store and outbox in the test's directory (``examples/fleet.yaml``, never
contacted)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prefect.client.orchestration import get_client

from tests.flows.escalation_env import escalation_env, example_fleet, wait_for
from tests.flows.test_escalation import LEVEL_1, POLICY, Env, paused_runs
from tests.prefect_fixtures import using_api
from tests.ui.prefect_ui import resume_in_ui

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

pytestmark = pytest.mark.timeout(480)

#: Pages every 10 s until acknowledged (two levels, twice round); nothing else is sent.
DEADLINE_S = 10
UI_POLICY = POLICY | {
    "levels": [{**level, "ack_deadline": DEADLINE_S} for level in POLICY["levels"]],
    "public_after": 3600,
    "clients_after": 3600,
}


@pytest.fixture
def env(prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    fleet_file, outbox, url = example_fleet(tmp_path, monkeypatch, UI_POLICY)
    with using_api(prefect_server):
        yield from escalation_env(fleet_file, outbox, url, Env)


def test_the_resume_form_acknowledges_and_paging_stops(
    env: Env, browser: WebDriver, prefect_server: str
) -> None:
    incident_id = env.open()
    env.start(incident_id=incident_id)
    wait_for("a paused escalation run", lambda: bool(paused_runs(env, incident_id)), timeout=60)
    assert {line["recipient"] for line in env.outbox_lines()} >= LEVEL_1
    [run] = paused_runs(env, incident_id)

    ui = prefect_server.removesuffix("/api")
    resume_in_ui(browser, f"{ui}/runs/flow-run/{run.id}", {"Your name": "anna", "Note": "on it"})

    def acknowledged_by() -> str | None:
        incident = env.store.incident(incident_id)
        return incident.acknowledged_by if incident else None

    wait_for("the ack in the store", lambda: acknowledged_by() is not None)
    assert acknowledged_by() == "anna"

    def state_name() -> str | None:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        return state.name if state else None

    wait_for("the run Acknowledged", lambda: state_name() == "Acknowledged", timeout=30)
    # Unacknowledged, the next page would go out within DEADLINE_S.
    sent = env.outbox_lines()
    time.sleep(DEADLINE_S + 3)
    assert env.outbox_lines() == sent
