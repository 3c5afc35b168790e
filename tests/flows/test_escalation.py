"""The escalation runbook, run for real on Prefect's test harness with a SQLite store and
the outbox: page level 1, escalate, post to X, e-mail clients, ack (CLI and UI input),
resolve, report -- and a second run of the same incident sends nothing twice.

Durations are seconds (level deadlines 5 s, public post after 6 s, clients after 7 s);
flows run in threads of this process (with this context, so they see the harness) and
their pauses poll every 2 s.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun
from typer.testing import CliRunner

import flows.escalation as escalation_module
from cli.main import app
from flows.escalation import escalation
from ppo_dr.channels import read_outbox
from ppo_dr.store import Store

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
AFFECTED = ["acme-mining", "karoo-logistics"]
CONTACTS = {"it@acme-mining.example", "pieter@karoo.example"}
LEVEL_1 = {"+27820000001", "+27820000002", "sipho@ppo.example", "anna@ppo.example"}
LEVEL_2 = {"+447700900003", "james@ppo.example"}


@dataclass
class Env:
    fleet_file: Path
    outbox: Path
    url: str
    store: Store
    threads: list[threading.Thread] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def outbox_lines(self) -> list[dict[str, Any]]:
        return read_outbox(self.outbox)

    def keys(self) -> list[str]:
        return [line["key"] for line in self.outbox_lines()]

    def start(self, **params: Any) -> threading.Thread:
        """Run the escalation flow in a thread that sees this context (the harness)."""
        context = contextvars.copy_context()

        def run() -> None:
            try:
                context.run(escalation, fleet_file=self.fleet_file, **params)
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def open(self) -> int:
        incident, _ = self.store.open_incident(
            "outage",
            "server/app-jhb1-1",
            "app server app-jhb1-1 down (2 clients)",
            {"server": "app-jhb1-1", "dc": "jhb1", "clients": AFFECTED},
        )
        return incident.id


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture
def env(prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    doc = yaml.safe_load((ROOT / "examples" / "fleet.yaml").read_text(encoding="utf-8"))
    outbox = tmp_path / "outbox.jsonl"
    doc["channels"] = {"outbox": str(outbox)}
    doc["escalation"] = {
        "levels": [
            {"name": "first line", "notify": ["sipho", "anna"], "ack_deadline": 5},
            {"name": "second line", "notify": ["james"], "ack_deadline": 5},
        ],
        "repeat": 1,
        "ack_timeout": 300,
        "public_after": 6,
        "public_every": 60,
        "clients_after": 7,
    }
    doc.pop("store", None)
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("PPO_DR_DB_URL", url)
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)  # for the CLI's ack
    monkeypatch.setattr(escalation_module, "RECHECK_S", 3)
    with Store(url) as store:
        store.upgrade()
        env = Env(fleet_file, outbox, url, store)
        yield env
        for left in store.incidents(("open", "acknowledged", "recovered")):
            store.resolve(left.id, "test teardown")  # so a failed test's runs end too
        for thread in env.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in env.threads), "an escalation run did not end"
        assert not env.errors, env.errors


def runs_of(incident_id: int) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"incident:{incident_id}"]))
        )


def paused_runs(incident_id: int) -> list[FlowRun]:
    return [r for r in runs_of(incident_id) if r.state is not None and r.state.is_paused()]


def sent_to(env: Env) -> set[str]:
    return {line["recipient"] for line in env.outbox_lines()}


def test_pages_escalates_informs_and_stops_on_ack_then_resolves(env: Env) -> None:
    incident_id = env.open()
    cli = CliRunner()
    env.start(incident_id=incident_id)

    # Level 1 at once: SMS and e-mail to both people of the first line.
    wait_for("level-1 SMS and e-mail", lambda: sent_to(env) >= LEVEL_1, timeout=20)
    assert not LEVEL_2 & sent_to(env)
    wait_for("a paused run", lambda: bool(paused_runs(incident_id)))
    [first] = runs_of(incident_id)
    assert first.name == f"escalation-incident-{incident_id}"
    assert f"incident:{incident_id}" in first.tags

    # A second run of the same incident ("restart mid-incident"): it sends nothing again.
    before = env.keys()
    env.start(incident_id=incident_id)
    wait_for("two paused runs", lambda: len(paused_runs(incident_id)) == 2)
    assert env.keys() == before

    # No ack within 5 s: level 2.
    wait_for("level 2", lambda: sent_to(env) >= LEVEL_2, timeout=15)

    # Ack from the terminal: recorded in the store and both paused runs resumed.
    result = cli.invoke(
        app, ["incident", "ack", str(incident_id), "--by", "anna", "--note", "on it"]
    )
    assert result.exit_code == 0, result.output
    assert "acknowledged by anna" in result.output
    assert "resume accept" in result.output
    acked = env.store.incident(incident_id)
    assert acked is not None and acked.acknowledged_by == "anna"

    # X post and client e-mails come on their own clocks.
    wait_for("the first X post", lambda: "public" in sent_to(env), timeout=15)
    wait_for("client e-mails", lambda: sent_to(env) >= CONTACTS, timeout=15)
    # The ladder would have repeated 10 s after opening: the ack stopped it.
    time.sleep(max(0.0, 11 - (time.time() - acked.opened_at.timestamp())))
    assert not any(".r1." in k or ".e1." in k for k in env.keys()), env.keys()  # noqa: SIM118

    # Resolve from the terminal: the runs send the resolved notices and end.
    result = cli.invoke(app, ["incident", "resolve", str(incident_id), "--by", "anna"])
    assert result.exit_code == 0, result.output
    for thread in env.threads:
        thread.join(timeout=30)
    keys = env.keys()
    assert len(keys) == len(set(keys)), "a notice was sent twice"
    resolved = {line["recipient"] for line in env.outbox_lines() if "resolved" in line["key"]}
    assert LEVEL_1 | LEVEL_2 | CONTACTS | {"public"} <= resolved
    posts = [line for line in env.outbox_lines() if line["channel"] == "x"]
    assert all(len(p["body"]) <= 280 and "acme" not in p["body"].lower() for p in posts)
    assert [n for n in env.store.notices(incident_id) if n.status != "sent"] == []

    # A run after the end finds everything sent: nothing new, the report again.
    env.start(incident_id=incident_id).join(timeout=30)
    assert env.keys() == keys

    # The report: an artifact of the run, and the CLI's Markdown and HTML.
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"incident-{incident_id}-report"])
            )
        )
    assert artifacts and "## Timeline" in str(artifacts[0].data)
    shown = cli.invoke(app, ["incident", "show", str(incident_id)])
    assert shown.exit_code == 0, shown.output
    assert "acknowledged" in shown.output and f"[run {first.id}]" in shown.output
    html = env.fleet_file.parent / "report.html"
    out = cli.invoke(app, ["incident", "report", str(incident_id), "-o", str(html)])
    assert out.exit_code == 0, out.output
    assert "<h2>Timeline</h2>" in html.read_text(encoding="utf-8")


def test_test_page_pages_level_one_and_ack_from_the_ui_input(env: Env) -> None:
    env.start(test=True)
    wait_for("level-1 test page", lambda: sent_to(env) >= LEVEL_1, timeout=20)
    [incident] = env.store.incidents(kind="test")
    wait_for("a paused run", lambda: bool(paused_runs(incident.id)))
    [run] = paused_runs(incident.id)
    assert run.name == f"escalation-incident-{incident.id}" and "test" in run.tags

    with get_client(sync_client=True) as client:
        refused = client.resume_flow_run(run.id, run_input={"note": "no name"})
        assert refused.status.value == "REJECT"
        accepted = client.resume_flow_run(run.id, run_input={"by": "sipho", "note": "testing"})
        assert accepted.status.value == "ACCEPT"
    env.threads[0].join(timeout=30)

    done = env.store.incident(incident.id)
    assert done is not None and done.acknowledged_by == "sipho" and done.state == "resolved"
    acked = [e for e in env.store.timeline(incident.id) if e.kind == "acknowledged"]
    assert acked and acked[0].flow_run_id == str(run.id)
    assert not (LEVEL_2 | CONTACTS | {"public"}) & sent_to(env)


def test_recovery_stops_paging_and_resolves_after_the_settle(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(escalation_module, "MAX_SETTLE_S", 2)
    incident_id = env.open()
    env.start(incident_id=incident_id)
    wait_for("level-1 page", lambda: sent_to(env) >= LEVEL_1, timeout=20)
    env.store.mark_recovered(incident_id)
    env.threads[0].join(timeout=30)
    done = env.store.incident(incident_id)
    assert done is not None and done.state == "resolved"
    assert not LEVEL_2 & sent_to(env)
    resolved = {line["recipient"] for line in env.outbox_lines() if "resolved" in line["key"]}
    assert resolved == LEVEL_1
    ended = [e for e in env.store.timeline(incident_id) if e.kind == "resolved"]
    assert ended and "auto-resolved after recovery" in ended[0].message
