"""Escalation hands a server or DC outage to the failover runbook.

Pure first: which incidents a failover answers, what the timeline says of it, and the
notices the on-call gets (refusals, approval with the command and the UI page, an
automatic failover). Then real flows on Prefect's test harness: a missing failover
deployment is a warning on the timeline while paging goes on; a registered one gets
exactly one run per incident, even across an escalation restart. Last, in a lab of its
own: an app server is power-killed, the escalation starts the failover, the on-call is
told to approve plan P, approves from the terminal, every client is healthy through the
front door on a new server, and the report gives RTO, RPO and data lost per client.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun

import flows.escalation as escalation_module
from flows.probe import probe_fleet
from ppo_dr.errors import PermanentError
from ppo_dr.escalation import (
    SMS_LIMIT,
    FailoverView,
    IncidentView,
    failover_notices,
    failover_scope,
    failover_view,
    notice_key,
)
from ppo_dr.inventory import EscalationLevel, EscalationPolicy, Person
from ppo_dr.probe.runner import OUTAGE_KIND
from ppo_dr.store import Store, TimelineEntry
from tests.flows.escalation_env import EscalationEnv, escalation_env, example_fleet, wait_for
from tests.flows.incident_answers import check_eight_answers, check_evidence_bundle
from tests.labs import front_door, own_lab

pytestmark = pytest.mark.timeout(300)

T0 = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)
PLAN = "0a1b2c3d4e5f60718293"
RUN = "4b7d2f0e-8a51-4c52-9a3e-6f1e2d3c4b5a"


# --------------------------------------------------------------------------- pure

PEOPLE = {
    "sipho": Person(id="sipho", name="Sipho", email="sipho@ppo.example", sms="+27820000001"),
    "anna": Person(id="anna", name="Anna", email="anna@ppo.example"),
    "james": Person(id="james", name="James", email="james@ppo.example", sms="+447700900003"),
}


def policy(auto: bool = False) -> EscalationPolicy:
    return EscalationPolicy(
        levels=(
            EscalationLevel(name="first", notify=("sipho", "anna"), ack_deadline=60),
            EscalationLevel(name="second", notify=("james",), ack_deadline=60),
        ),
        auto_failover=auto,
    )


def entry(i: int, kind: str, data: dict[str, Any], run: str | None = RUN) -> TimelineEntry:
    return TimelineEntry(i, 9, T0 + timedelta(seconds=i), kind, f"{kind} entry", run, data)


STARTED = entry(1, "failover-started", {"failover_run_id": RUN, "run_name": "r"}, "esc-run")
PLANNED = entry(
    2,
    "failover-planned",
    {
        "plan_id": PLAN,
        "moves": 3,
        "refusals": ["zulu"],
        "refusal_reasons": [{"client": "zulu", "reason": "no allowed target in ZA"}],
    },
)


def view(**changes: Any) -> IncidentView:
    fields: dict[str, Any] = {"id": 9, "opened_at": T0, "title": "app-jhb1-1 down"}
    fields.update(changes)
    return IncidentView(**fields)


def test_only_server_and_dc_outages_are_failed_over() -> None:
    assert OUTAGE_KIND == "outage"  # the probe's kind, which the pure module repeats
    server = {"level": "server", "subject": "app-jhb1-1", "clients": ["a"]}
    assert failover_scope("outage", server) == {"server": "app-jhb1-1"}
    assert failover_scope("outage", {"level": "dc", "subject": "jhb1"}) == {"dc": "jhb1"}
    assert failover_scope("outage", {"level": "client", "subject": "acme"}) is None
    for kind in ("probe-silent", "mirror-stale", "drill-failed", "test"):
        assert failover_scope(kind, server) is None
    assert failover_scope("outage", {"server": "app-jhb1-1"}) is None  # not the probe's
    with pytest.raises(PermanentError, match="outage subject"):
        failover_scope("outage", {"level": "server", "subject": "x; rm -rf /"})


def test_the_timeline_says_where_the_failover_is() -> None:
    assert not failover_view([]).started
    seen = failover_view([STARTED, PLANNED])
    assert seen.run_id == RUN and seen.plan_id == PLAN and seen.moves == 3
    assert seen.refusals == (("zulu", "no allowed target in ZA"),)
    assert seen.awaiting_approval(auto=False) and not seen.awaiting_approval(auto=True)
    # Entries of another failover run (an operator's, by hand) are not this one's.
    other = entry(3, "failover-approval", {"plan_id": PLAN, "approve": True}, "other-run")
    assert failover_view([STARTED, PLANNED, other]).approved is None
    approved = entry(3, "failover-approval", {"plan_id": PLAN, "approve": True, "by": "anna"})
    done = failover_view([STARTED, PLANNED, approved])
    assert done.approved is True and done.approved_by == "anna"
    assert not done.awaiting_approval(auto=False)
    missing = failover_view([entry(1, "failover-unavailable", {}, "esc-run")])
    assert missing.started and missing.run_id is None


def test_the_on_call_is_told_of_refusals_and_how_to_approve() -> None:
    fo = failover_view([STARTED, PLANNED])
    notices = failover_notices(policy(), view(), fo, PEOPLE)
    by_step: dict[str, set[tuple[str, str]]] = {}
    for n in notices:
        by_step.setdefault(n.step, set()).add((n.recipient, n.channel))
    level_1 = {("sipho", "sms"), ("sipho", "email"), ("anna", "email")}  # anna has no SMS
    assert by_step == {"failover-refused": level_1, "failover-approve": level_1}
    approve = next(n for n in notices if n.step == "failover-approve" and n.channel == "email")
    assert f"ppo-dr failover approve {PLAN} --by NAME" in approve.body
    assert "Prefect UI" in approve.body and "failover-incident-9" in approve.body
    refused = next(n for n in notices if n.step == "failover-refused" and n.channel == "email")
    assert "zulu: no allowed target in ZA" in refused.body
    assert all(len(n.body) <= SMS_LIMIT for n in notices if n.channel == "sms")
    assert approve.key == notice_key(9, "failover-approve", "anna", "email")

    # Sent already: nothing again. Level 2 paged since: james hears of the plan too.
    sent = {n.key for n in notices} | {notice_key(9, "page.e0.r0.l2", "james", "sms")}
    again = failover_notices(policy(), view(sent=frozenset(sent)), fo, PEOPLE)
    assert {(n.step, n.recipient, n.channel) for n in again} == {
        ("failover-refused", "james", "sms"),
        ("failover-approve", "james", "sms"),
    }
    # Approved, or resolved: no more approval notices.
    approved = entry(3, "failover-approval", {"plan_id": PLAN, "approve": True, "by": "anna"})
    fo_done = failover_view([STARTED, PLANNED, approved])
    assert {n.step for n in failover_notices(policy(), view(), fo_done, PEOPLE)} == {
        "failover-refused"
    }
    assert failover_notices(policy(), view(resolved_at=T0), fo, PEOPLE) == []
    assert failover_notices(policy(), view(), FailoverView(run_id=RUN), PEOPLE) == []


def test_an_automatic_failover_is_announced_not_asked_for() -> None:
    fo = failover_view([STARTED, PLANNED])
    steps = {n.step for n in failover_notices(policy(auto=True), view(), fo, PEOPLE)}
    assert steps == {"failover-refused", "failover-auto"}


# --------------------------------------------------------------------------- harness


Env = EscalationEnv  # the escalation runs, outbox and store of a test


@pytest.fixture
def env(prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """The example fleet (never contacted), its outbox and a SQLite store in tmp_path."""
    yield from escalation_env(*example_fleet(tmp_path, monkeypatch), Env)


@pytest.fixture
def registered_failover(prefect_api: str) -> Iterator[str]:
    """The failover deployment registered on the harness (not served: its runs wait).

    Its runs are deleted at the end: incident ids start at 1 in every test's store, and
    the key ``failover-<incident id>`` must find no run of another test's incident.
    """
    from prefect.client.schemas.filters import FlowRunFilterDeploymentId

    from deployments.registry import failover_deployment

    deployment_id = failover_deployment().apply()
    try:
        yield str(deployment_id)
    finally:
        with get_client(sync_client=True) as client:
            for run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
                )
            ):
                client.delete_flow_run(run.id)
            client.delete_deployment(deployment_id)


def no_failover_deployment() -> None:
    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["failover"]))
        )
    assert not found, "another test left the failover deployment registered"


def open_outage(store: Store, level: str, subject: str, clients: list[str]) -> int:
    """An outage incident as the probe opens it (kind, dedupe key and scope)."""
    servers = [subject] if level == "server" else []
    incident, _ = store.open_incident(
        "outage",
        f"outage:{level}:{subject}",
        f"{level} {subject} down ({len(clients)} clients)",
        {"level": level, "subject": subject, "clients": clients, "servers": servers, "dcs": []},
    )
    return incident.id


@dataclass
class LostServer:
    """A power-killed app server, its outage incident and the failover the escalation
    started for it, running in a worker thread."""

    name: str
    victims: list[str]
    incident_id: int
    run: FlowRun
    worker: threading.Thread
    outcome: list[Any]


def lose_server(lab: Any, env: Env, name: str = "app-jhb1-1") -> LostServer:
    """Power-kill *name*, open its outage, start the escalation; once it has started the
    failover run, run that as a served deployment's worker would."""
    victims = sorted(p.client_id for p in env.store.placements() if p.server_id == name)
    assert victims
    lab.break_(name, "power")
    incident_id = open_outage(env.store, "server", name, victims)
    env.start(incident_id=incident_id)
    wait_for("the failover started", lambda: "failover-started" in env.kinds(incident_id))
    [run] = failover_runs(incident_id)
    assert run.parameters["server"] == name and run.parameters["incident_id"] == incident_id
    assert run.parameters["fleet_file"] == str(lab.fleet_file)
    worker, outcome = run_failover_as_a_worker(run)
    return LostServer(name, victims, incident_id, run, worker, outcome)


def failover_runs(incident_id: int) -> list[FlowRun]:
    """The deployment runs of the failover for *incident_id* (incident ids restart at 1 in
    every test's store: other tests' direct failover runs carry the same tag)."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"incident:{incident_id}"]))
        )
    return [r for r in runs if r.deployment_id is not None and not r.name.startswith("escalation-")]


def test_a_missing_failover_deployment_is_a_warning_and_paging_goes_on(env: Env) -> None:
    no_failover_deployment()
    server_down = open_outage(env.store, "server", "app-jhb1-1", ["acme-mining"])
    client_down = open_outage(env.store, "client", "karoo-logistics", ["karoo-logistics"])
    hostile = open_outage(env.store, "server", "app-1; rm -rf /", ["acme-mining"])
    for incident_id in (server_down, client_down, hostile):
        env.start(incident_id=incident_id)
    wait_for("the warning", lambda: "failover-unavailable" in env.kinds(server_down))
    warning = next(e for e in env.store.timeline(server_down) if e.kind == "failover-unavailable")
    assert "'failover/failover' not found" in warning.message
    assert f"ppo-dr failover run --server app-jhb1-1 --incident {server_down}" in warning.message
    pages = {
        f"incident:{i}/step:page.e0.r0.l1/to:sipho/via:sms"
        for i in (server_down, client_down, hostile)
    }
    wait_for("level-1 pages of all three", lambda: pages <= set(env.notice_keys()))
    time.sleep(4)  # another wake-up of each run: still one warning, never a failover
    assert env.kinds(server_down).count("failover-unavailable") == 1
    assert not [k for k in env.kinds(client_down) if k.startswith("failover")]
    refused = [e for e in env.store.timeline(hostile) if e.kind.startswith("failover")]
    assert [e.kind for e in refused] == ["failover-unavailable"]
    assert "no failover: outage subject (server)" in refused[0].message
    assert not [k for k in env.notice_keys() if "/step:failover" in k]
    assert all(t.is_alive() for t in env.threads)  # still paging, not crashed


def test_one_failover_run_per_incident_even_when_escalation_restarts(
    env: Env, registered_failover: str
) -> None:
    incident_id = open_outage(env.store, "dc", "jhb1", ["acme-mining", "karoo-logistics"])
    env.start(incident_id=incident_id)
    wait_for("the failover started", lambda: "failover-started" in env.kinds(incident_id))
    env.start(incident_id=incident_id)  # a restarted escalation of the same incident
    wait_for("the second run", lambda: env.kinds(incident_id).count("escalation-started") == 2)
    time.sleep(4)
    [run] = failover_runs(incident_id)
    assert str(run.deployment_id) == registered_failover
    assert run.parameters["dc"] == "jhb1" and run.parameters["incident_id"] == incident_id
    assert run.idempotency_key == f"failover-{incident_id}"
    started = [e for e in env.store.timeline(incident_id) if e.kind == "failover-started"]
    assert len(started) == 1 and started[0].data["failover_run_id"] == str(run.id)
    assert str(run.id) in started[0].message
    # The page went out first, and nobody is told to approve a plan that does not exist.
    assert f"incident:{incident_id}/step:page.e0.r0.l1/to:sipho/via:sms" in env.notice_keys()
    assert not [k for k in env.notice_keys() if "/step:failover" in k]


# --------------------------------------------------------------------------- the lab


@pytest.fixture(params=["mirrored"])
def lab_env(
    prefect_api: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Any, Env]]:
    """A lab of this test's own (it kills a server), mirrored once unless the test asks
    for ``never-mirrored`` (indirect parametrization), and its store."""
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PPO_DR_DB_URL", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)  # for the CLI's approve
    monkeypatch.setattr(escalation_module, "RECHECK_S", 3)
    mirrored = request.param == "mirrored"
    with own_lab(tmp_path / "lab", clients=6, size_mb=6, settle_s=2.0, mirrored=mirrored) as lab:
        outbox = lab.directory / "outbox.jsonl"
        yield from ((lab, e) for e in escalation_env(lab.fleet_file, outbox, lab.store_url, Env))


def run_failover_as_a_worker(run: FlowRun) -> tuple[threading.Thread, list[Any]]:
    """Execute the flow run the escalation created, as a served deployment's worker would."""
    from prefect.flow_engine import run_flow_sync

    from flows.failover import failover

    outcome: list[Any] = []
    context = contextvars.copy_context()
    parameters = {**run.parameters, "fleet_file": Path(run.parameters["fleet_file"])}
    worker = threading.Thread(
        target=lambda: outcome.append(
            context.run(
                run_flow_sync, failover, flow_run=run, parameters=parameters, return_type="state"
            )
        ),
        daemon=True,
    )
    worker.start()
    return worker, outcome


def check_moved_and_reported(lab: Any, env: Env, incident_id: int, victims: list[str]) -> None:
    """Every victim healthy through the front door on a new server; the report's rows."""
    from ppo_dr.inventory import load_fleet
    from ppo_dr.lab.lost_writes import record_lost_writes
    from ppo_dr.reports import report_for_incident, report_markdown

    fleet = load_fleet(lab.fleet_file)  # may list a provisioned server now
    with Store.open(lab.store_url) as store:
        plans = [f.plan_id for f in store.failovers(incident_id=incident_id)]
    for plan_id in plans:  # the lab counts its lost writes after the run, as the demo does
        record_lost_writes(lab.fleet_file, plan_id)
    with Store.open(lab.store_url) as store:
        for client in victims:
            home = store.placement(client).server_id  # type: ignore[union-attr]
            assert home != "app-jhb1-1" and front_door(fleet, client) == (200, home)
        report = report_for_incident(store, incident_id, fleet)
    kinds = env.kinds(incident_id)
    for kind in ("failover-started", "failover-planned", "failover-client", "failover-mirrored",
                 "failover-finished"):  # fmt: skip
        assert kind in kinds, kinds
    assert {r.client_id for r in report.recoveries} == set(victims)
    # Still open, the dead server still down: each client's outage ended when it answered
    # through the front door again (the failover's health check), and the service is back.
    assert all(i.outage is not None for i in report.impact), report.impact
    assert report.incident.recovered_at is None and report.service_back_at is not None
    for r in report.recoveries:
        assert r.moved and r.rto is not None and r.rpo is not None and r.lost_writes is not None
        assert r.data_lost().startswith(("nothing", f"{r.lost_writes} acknowledged"))
    text = report_markdown(report)
    assert "## Recovery per client (failover)" in text and "## Data lost" in text
    assert report.failover_steps and all(s.flow_run_id for s in report.failover_steps)


def notices_of(env: Env, step: str) -> list[dict[str, Any]]:
    return [n for n in env.outbox_lines() if f"/step:{step}/" in n["key"]]


@pytest.mark.lab
def test_power_loss_escalates_to_an_approved_failover_and_a_report_with_rto(
    lab_env: tuple[Any, Env], registered_failover: str
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    lab, env = lab_env
    # The escalation starts the failover run; a worker (this test) runs it.
    lost = lose_server(lab, env)
    incident_id, run, victims = lost.incident_id, lost.run, lost.victims
    worker, outcome = lost.worker, lost.outcome

    # The on-call is told the plan waits, with the command: they approve from a terminal.
    wait_for("the approval notice", lambda: bool(notices_of(env, "failover-approve")), 120)
    planned = next(e for e in env.store.timeline(incident_id) if e.kind == "failover-planned")
    plan_id = planned.data["plan_id"]
    assert planned.flow_run_id == str(run.id)
    notice = next(n for n in notices_of(env, "failover-approve") if n["channel"] == "email")
    assert f"ppo-dr failover approve {plan_id} --by NAME" in notice["body"]
    assert "Prefect UI" in notice["body"]
    approved = CliRunner().invoke(app, ["failover", "approve", plan_id, "--by", "sipho"])
    assert approved.exit_code == 0, approved.output
    worker.join(timeout=240)
    assert outcome and outcome[0].is_completed(), outcome

    check_moved_and_reported(lab, env, incident_id, victims)
    approval = next(e for e in env.store.timeline(incident_id) if e.kind == "failover-approval")
    assert approval.data == {"plan_id": plan_id, "approve": True, "by": "sipho"}
    # Once approved, nobody is asked again; nothing was sent twice.
    time.sleep(4)
    keys = env.notice_keys()
    assert len(keys) == len(set(keys))
    asked = [datetime.fromisoformat(n["at"]) for n in notices_of(env, "failover-approve")]
    assert max(asked) <= approval.at + timedelta(seconds=RECHECK_GRACE_S)
    assert not notices_of(env, "failover-auto") and not notices_of(env, "failover-refused")

    # Resolved: the escalation ends and publishes the report, RTO/RPO per client in it.
    [ours] = [
        e.flow_run_id for e in env.store.timeline(incident_id) if e.kind == "escalation-started"
    ]
    env.store.resolve(incident_id, "sipho", "all clients serving from new servers")
    for thread in env.threads:
        thread.join(timeout=60)
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"incident-{incident_id}-report"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(ours)]),
            )
        )
    published = str(artifact.data)
    assert "## Recovery per client (failover)" in published and "## Data lost" in published
    assert all(f"| {client} |" in published for client in victims)
    assert "## The eight questions" in published and f"/runs/flow-run/{run.id})" in published
    # The report's eight answers agree with the lab's records; the evidence bundle verifies.
    check_eight_answers(lab, env.outbox_lines(), incident_id, victims, plan_id, str(run.id))
    check_evidence_bundle(lab, incident_id, lab.directory.parent / "evidence")


#: A run that read the timeline just before the approval may still send one notice.
RECHECK_GRACE_S = 5
#: How long before the declaration the (recorded) failures began: the lab's threshold.
PROBE_LEAD = timedelta(seconds=20)


@pytest.mark.lab
@pytest.mark.timeout(420)  # and one probe period after the failover
def test_with_auto_failover_the_failover_runs_at_once_and_the_on_call_is_told(
    lab_env: tuple[Any, Env], registered_failover: str
) -> None:
    lab, env = lab_env
    text = lab.fleet_file.read_text(encoding="utf-8")
    assert text.count("auto_failover: false") == 1
    lab.fleet_file.write_text(text.replace("auto_failover: false", "auto_failover: true"))
    lost = lose_server(lab, env)
    incident_id, victims = lost.incident_id, lost.victims
    lost.worker.join(timeout=240)  # no approval asked: it runs to the end by itself
    assert lost.outcome and lost.outcome[0].is_completed(), lost.outcome
    check_moved_and_reported(lab, env, incident_id, victims)
    assert "failover-approval" not in env.kinds(incident_id)
    wait_for("the on-call told", lambda: bool(notices_of(env, "failover-auto")), 30)
    told = {n["recipient"] for n in notices_of(env, "failover-auto")}
    assert {"+27820000001", "sipho@ppo.example"} <= told
    assert not notices_of(env, "failover-approve")

    # The next probe run (the real flow, one short period): the dead server still down,
    # its clients answering again from their new home. What the probe had recorded
    # during the outage: the server and its clients down since the incident opened.
    opened = env.store.incident(incident_id).opened_at  # type: ignore[union-attr]
    for target in [f"server:{lost.name}", *(f"client:{c}" for c in victims)]:
        env.store.record_probe_transition(target, "up", "pending", at=opened - PROBE_LEAD)
        env.store.record_probe_transition(target, "pending", "down", at=opened)
    asyncio.run(probe_fleet(run_for_s=30.0, fleet_file=lab.fleet_file))
    # No "client down" for the moved clients: they are the server's incident, still open.
    outages = env.store.incidents(kind="outage")
    assert [(i.id, i.state) for i in outages] == [(incident_id, "open")], outages
    for client in victims:
        [back] = [t for t in env.store.probe_transitions(f"client:{client}") if t.to_state == "up"]
        assert back.at > opened


@pytest.mark.lab
@pytest.mark.parametrize("lab_env", ["never-mirrored"], indirect=True)
def test_a_plan_that_refuses_clients_is_escalated_with_the_reasons(
    lab_env: tuple[Any, Env], registered_failover: str
) -> None:
    lab, env = lab_env
    lost = lose_server(lab, env)
    incident_id, victims, outcome = lost.incident_id, lost.victims, lost.outcome
    lost.worker.join(timeout=240)
    # Nothing was ever mirrored: no snapshot to restore anyone from. The run says so.
    assert outcome and outcome[0].is_failed() and "moves nobody" in str(outcome[0].message)
    planned = next(e for e in env.store.timeline(incident_id) if e.kind == "failover-planned")
    assert planned.data["moves"] == 0 and sorted(planned.data["refusals"]) == victims
    for client in victims:
        assert f"REFUSED {client}: " in planned.message

    # The on-call hears which clients stay down and why, once each, and is asked nothing.
    wait_for("the refusal notices", lambda: len(notices_of(env, "failover-refused")) == 4, 30)
    refused = notices_of(env, "failover-refused")
    assert {n["recipient"] for n in refused} == {
        "+27820000001", "sipho@ppo.example", "+27820000002", "anna@ppo.example",
    }  # fmt: skip
    email = next(n for n in refused if n["recipient"] == "sipho@ppo.example")
    for reason in planned.data["refusal_reasons"]:
        assert f"{reason['client']}: {reason['reason']}" in email["body"]
    assert all(len(n["body"]) <= SMS_LIMIT for n in refused if n["channel"] == "sms")
    time.sleep(4)  # more wake-ups of the escalation: nothing sent twice
    assert len(notices_of(env, "failover-refused")) == 4
    assert not notices_of(env, "failover-approve") and not notices_of(env, "failover-auto")
