"""The fleet report runbook, run for real on Prefect's test harness.

Evidence is read back through the Prefect client, as an operator would see it in the
UI: run name and tags, the markdown and table artifacts, task run states.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import TaskRun
from prefect.states import Completed, Failed

from flows.report import fleet_report
from ppo_dr.errors import InventoryError, PermanentError, TransientError
from ppo_dr.inventory import load_fleet
from ppo_dr.store import Store
from tasks import retry_condition_fn
from tests.flows.runs import artifacts_of, eventually, flow_run_id, task_runs_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fleet.yaml"
STAMP = r"\d{4}-\d{2}-\d{2}T\d{6}Z"


@pytest.fixture
def sla_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A migrated store (with one failed drill) for the SLA half; its home for the HTML."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("PPO_DR_DB_URL", url)
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    with Store(url) as store:
        store.upgrade()
        now = datetime.now(UTC)
        store.record_drill(
            client_id="acme-mining", mirror_id="mirror-cpt1-1", snapshot_id="s",
            started_at=now - timedelta(days=1), finished_at=now - timedelta(days=1),
            ok=False, restore_seconds=40.0, snapshot_age_seconds=900.0, detail="",
        )  # fmt: skip
    return tmp_path / "home" / "reports"


def test_fleet_report_names_tags_and_publishes_artifacts(prefect_api: str, sla_store: Path) -> None:
    state = fleet_report(EXAMPLE, return_state=True)

    assert state.is_completed(), state.message
    fleet = load_fleet(EXAMPLE)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id(state))
        assert re.fullmatch(rf"fleet-report-ppo-prod-{STAMP}", run.name), run.name
        assert "fleet:ppo-prod" in run.tags

        artifacts = artifacts_of(client, run.id)
        assert set(artifacts) == {
            "fleet-report-ppo-prod",
            "fleet-app-servers-ppo-prod",
            "fleet-sla-ppo-prod",
        }
        sla = str(artifacts["fleet-sla-ppo-prod"].data)
        assert "## Availability per client" in sla and "| acme-mining |" in sla
        assert "![Drill RTO trend](data:image/png;base64," in sla  # the failed drill, charted
        (page,) = sla_store.glob("fleet-sla-*.html")
        assert page.read_text().count('<img class="chart"') == sla.count("data:image/png")

        report = artifacts["fleet-report-ppo-prod"]
        assert report.type == "markdown"
        assert isinstance(report.data, str)
        assert "fleet ppo-prod: 3 data centres, 9 servers, 5 clients" in report.data
        assert run.name in report.data

        table = artifacts["fleet-app-servers-ppo-prod"]
        assert table.type == "table"
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert isinstance(rows, list)
        assert [r["server"] for r in rows] == [s.id for s in fleet.servers_by_role("app")]
        assert rows[0] == {
            "server": "app-jhb1-1",
            "dc": "jhb1",
            "country": "ZA",
            "clients": len(fleet.clients_on("app-jhb1-1")),
            "capacity": 40,
            "on_site_mirror": "mirror-jhb1-1",
            "off_site_mirrors": "mirror-cpt1-1",
        }


def test_a_store_that_cannot_be_read_is_said_and_the_fleet_part_completes(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPO_DR_DB_URL", f"sqlite:///{tmp_path / 'never-upgraded.db'}")
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))

    state = fleet_report(EXAMPLE, return_state=True)

    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        artifacts = artifacts_of(client, flow_run_id(state))
    assert "fleet-report-ppo-prod" in artifacts
    assert "SLA part unavailable" in str(artifacts["fleet-sla-ppo-prod"].data)


def test_a_broken_fleet_fails_the_run_at_once_without_retries(
    prefect_api: str, tmp_path: Path
) -> None:
    broken = tmp_path / "fleet.yaml"
    broken.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace("port: 22,", "port: 70000,", 1),
        encoding="utf-8",
    )

    state = fleet_report(broken, return_state=True)

    assert state.is_failed()
    with pytest.raises(InventoryError, match="port range"):
        state.result()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id(state))
        assert re.fullmatch(rf"fleet-report-{STAMP}", run.name), run.name  # never labelled
        assert not any(t.startswith("fleet:") for t in run.tags)

        def failed_load() -> TaskRun | None:
            runs = task_runs_of(client, run.id)
            done = [r for r in runs if r.state is not None and r.state.is_final()]
            return done[0] if done and len(runs) == 1 else None

        load = eventually(failed_load)
        assert load.name == "load-fleet-fleet.yaml"
        assert load.run_count == 1
        states = eventually(lambda: client.read_task_run_states(load.id))
        assert [s.name for s in states] == ["Pending", "Running", "Failed"]
        # Prefect stores the failed run's exception as a keyless result artifact.
        assert [a.key for a in artifacts_of(client, run.id).values() if a.key] == []


def test_the_default_fleet_file_is_chosen_when_the_run_starts(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sla_store: Path
) -> None:
    staging = tmp_path / "staging.yaml"
    staging.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace("name: ppo-prod", "name: ppo-staging", 1),
        encoding="utf-8",
    )
    monkeypatch.setenv("PPO_DR_FLEET", str(staging))  # set after flows.report was imported

    state = fleet_report(return_state=True)

    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id(state))
    assert "fleet:ppo-staging" in run.tags
    assert run.parameters == {"fleet_file": None, "sla_days": 30, "html_dir": None}


# --------------------------------------------------------------------------- retry condition


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TransientError("connection reset"), True),
        (TimeoutError("read timed out"), True),
        (ConnectionResetError("reset by peer"), True),
        (PermanentError("auth failed"), False),
        (InventoryError("fleet.yaml", []), False),
        (ValueError("a bug"), False),
    ],
)
def test_retry_condition_retries_only_transient_errors(error: Exception, retried: bool) -> None:
    assert retry_condition_fn(_task, _task_run(), Failed(data=error)) is retried


def test_retry_condition_does_not_retry_a_state_without_an_error() -> None:
    assert retry_condition_fn(_task, _task_run(), Completed(data=1)) is False


def test_prefect_applies_the_retry_condition(prefect_api: str) -> None:
    attempts: list[str] = []

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_condition_fn)
    def flaky(kind: str) -> str:
        attempts.append(kind)
        if len(attempts) == 1 or kind == "permanent":
            raise (TransientError if kind == "transient" else PermanentError)(kind)
        return "ok"

    @flow
    def runbook(kind: str) -> str:
        return flaky(kind)

    assert runbook("transient") == "ok"
    assert attempts == ["transient", "transient"]

    attempts.clear()
    with pytest.raises(PermanentError):
        runbook("permanent")
    assert attempts == ["permanent"]


@task
def _task() -> None:
    """A stand-in task for calling the retry condition directly."""


def _task_run() -> TaskRun:
    return TaskRun(name="stand-in", task_key="stand-in", dynamic_key="0", run_count=1)
