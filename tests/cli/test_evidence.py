"""``ppo-dr evidence`` end to end on Prefect's test harness and a real SQLite store: a
runbook of an incident runs (a task retried once, a log line, an artifact), the bundle
is exported with its runs, task-run states, logs and artifacts, its hash is on the
timeline, and ``evidence verify`` finds it intact, then finds every edit."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run
from typer.testing import CliRunner

from cli.main import app
from deployments.local_server import free_port
from ppo_dr.evidence import BUNDLE_ENTRY
from ppo_dr.store import Store
from tests.cli.entry import PPO_DR
from tests.prefect_fixtures import isolated_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)
ATTEMPTS: dict[str, int] = {}


@task(retries=1, retry_delay_seconds=0)
def page_on_call(key: str) -> str:
    """Fails its first attempt, like a throttled SMS gateway."""
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] == 1:
        raise RuntimeError("SNS throttled")
    get_run_logger().info("paged %s", key)
    return "receipt-1"


@flow(name="evidence-test-runbook")
def runbook(db_url: str, incident_id: int, key: str) -> None:
    """Stands in for an escalation: records its run on the timeline, pages, publishes."""
    with Store(db_url) as store:
        store.add_timeline(incident_id, "escalation-started", "test", flow_run_id=flow_run.id)
    page_on_call(key)
    create_markdown_artifact(key=f"evidence-test-{incident_id}", markdown="# paged")


@pytest.fixture
def env(tmp_path: Path, prefect_api: str) -> Iterator[dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store(url) as store:
        store.upgrade()
    yield {
        "PPO_DR_DB_URL": url,
        "PPO_DR_HOME": str(tmp_path / "home"),
        "PPO_DR_FLEET": str(ROOT / "examples" / "fleet.yaml"),
        "PREFECT_API_URL": prefect_api,
    }


def ppo_dr(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.output


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_then_verify_finds_every_change(env: dict[str, str], tmp_path: Path) -> None:
    with Store(env["PPO_DR_DB_URL"]) as store:
        incident, _ = store.open_incident(
            "outage", "outage:server:app-jhb1-1", "app-jhb1-1 down", {"clients": ["acme"]}
        )
    with tags(f"incident:{incident.id}"):
        state = runbook(env["PPO_DR_DB_URL"], incident.id, str(tmp_path), return_state=True)
    assert state.is_completed(), state
    ours = str(state.state_details.flow_run_id)
    # Sent now, as the runbook's process sends them when it exits: Prefect ships logs in
    # the background, and once the export began before the page's line had gone out.
    APILogHandler().flush()

    out = tmp_path / "bundle"
    said = ppo_dr(env, "evidence", str(incident.id), "-o", str(out), "--wait", "30", "--zip")
    assert "waiting up to 30 s for task-run records" in said
    assert "task-run records complete after" in said
    assert (tmp_path / "bundle.zip").is_file()

    # The session's harness is shared: other tests' runs tagged with the same incident id
    # (each test's store numbers from 1) are exported too, as they would be for one store.
    runs = lines(out / "flow_runs.jsonl")
    assert all(f"incident:{incident.id}" in r["tags"] for r in runs)
    (run,) = [r for r in runs if r["id"] == ours]
    assert run["name"] and [s["type"] for s in run["states"]][-1] == "COMPLETED"
    task_runs = [t for t in lines(out / "task_runs.jsonl") if t["flow_run_id"] == ours]
    (page,) = [t for t in task_runs if t["name"].startswith("page_on_call")]
    assert "Retrying" in [s["name"] for s in page["states"]]  # the failed attempt is there
    assert any(f"paged {tmp_path}" in entry["message"] for entry in lines(out / "logs.jsonl"))
    artifacts = [a for a in lines(out / "artifacts.jsonl") if a["flow_run_id"] == ours]
    assert [a["key"] for a in artifacts] == [f"evidence-test-{incident.id}"]
    (fleet,) = lines(out / "fleet.jsonl")
    assert fleet["fleet"]["name"] == "ppo-prod"

    digest = said.split("bundle sha256 ")[1].split()[0]
    with Store(env["PPO_DR_DB_URL"]) as store:
        entry = store.timeline(incident.id)[-1]
    assert entry.kind == BUNDLE_ENTRY and entry.data["bundle_sha256"] == digest

    checked = ppo_dr(env, "evidence", "verify", str(out))
    assert "every file matches MANIFEST.sha256" in checked
    assert f"matches the hash recorded for incident {incident.id}" in checked

    (out / "incident.jsonl").write_text("{}\n")
    (out / "extra.txt").write_text("x")
    (out / "logs.jsonl").unlink()
    failed = ppo_dr(env, "evidence", "verify", str(out), code=1)
    assert "added: extra.txt" in failed
    assert "removed: logs.jsonl" in failed
    assert "edited: incident.jsonl" in failed

    refused = ppo_dr(env, "evidence", str(incident.id), "-o", str(out), code=2)
    assert "exists and is not empty" in refused
    unknown = ppo_dr(env, "evidence", "99", "-o", str(tmp_path / "x"), code=2)
    assert f"no incident with id 99: the store holds incidents {incident.id}-" in unknown
    assert not (tmp_path / "x").exists()
    (tmp_path / "plain").mkdir()
    no_manifest = ppo_dr(env, "evidence", "verify", str(tmp_path / "plain"), code=2)
    assert "has no MANIFEST.sha256" in no_manifest


def test_an_unreachable_api_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store(url) as store:
        store.upgrade()
        incident, _ = store.open_incident("outage", "k", "down", {})
    env = isolated_env(
        PPO_DR_DB_URL=url,
        PPO_DR_HOME=str(tmp_path / "home"),
        PPO_DR_FLEET=str(ROOT / "examples" / "fleet.yaml"),
        PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api",  # nobody listens
    )
    args = [*PPO_DR, "evidence", str(incident.id), "-o", str(tmp_path / "bundle")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "error: could not read the run history from the Prefect API" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bundle").exists()
    with Store(url) as store:
        assert BUNDLE_ENTRY not in [e.kind for e in store.timeline(incident.id)]
