"""Checking the incident report's eight answers, and the evidence bundle, against what
the lab itself recorded: the outbox (what was delivered), the failover run and ledger,
the front door, the workload's measure of lost writes, the snapshot catalogue and the
drills. Used by the lab test that loses a server and approves its failover."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cli.main import app
from ppo_dr.inventory import load_fleet
from ppo_dr.report_answers import IncidentAnswers, answers_for_incident, last_before
from ppo_dr.reports import duration_text, report_for_incident, time_text
from ppo_dr.store import Store

UI = "http://ui.test"


def _rows(answers: IncidentAnswers, number: int) -> list[tuple[tuple[str, ...], str | None]]:
    answer = answers.answers[number - 1]
    return list(zip(answer.rows, answer.runs, strict=True))


def check_eight_answers(
    lab: Any,
    outbox: list[dict[str, Any]],
    incident_id: int,
    victims: list[str],
    plan_id: str,
    failover_run: str,
) -> None:
    """Each answer agrees with the lab's own records."""
    fleet = load_fleet(lab.fleet_file)
    with Store.open(lab.store_url) as store:
        report = report_for_incident(store, incident_id, fleet)
        answers = answers_for_incident(store, report, UI)
        timeline = store.timeline(incident_id)
        notices = {n.idempotency_key: n for n in store.notices(incident_id)}
        steps = {c: store.failover_steps(plan_id, c) for c in victims}
        results = {r.client_id: r for r in store.failover_results(plan_id)}
        fault = report.first_failure_at or report.detected_at
        expected_snapshots = {c: last_before(fault, store.snapshots(c)) for c in victims}
        drills = {c: store.drills(c) for c in victims}
    escalation = next(e.flow_run_id for e in timeline if e.kind == "escalation-started")

    # 1. the declaration, when the store opened the incident
    assert _rows(answers, 1)[1][0][:2] == ("declared", time_text(report.incident.opened_at))
    # 2. every page the outbox delivered, with its receipt, by the escalation run
    pages = [line for line in outbox if "/step:page." in line["key"]]
    paged = _rows(answers, 2)
    assert pages and len(paged) == len({line["key"] for line in pages})
    for line in pages:
        notice = notices[line["key"]]
        (cells,) = [r for r, _ in paged if r[:2] == (notice.recipient, notice.channel)
                    and r[2] == time_text(notice.created_at)]  # fmt: skip
        assert cells[4] == "sent" and line["id"] in cells[5]
    assert {run for _, run in paged} == {escalation}
    # 3. nobody acknowledged: sipho's approval of the plan counts, by the failover run
    approval = next(e for e in timeline if e.kind == "failover-approval")
    ((who, when, _, how), run) = _rows(answers, 3)[0]
    assert (who, when, run) == ("sipho", time_text(approval.at), failover_run)
    assert how.startswith(f"approved failover plan {plan_id}")
    # 4. what went public is what the outbox posted publicly
    public = {
        line["key"].split("/step:")[1].split("/")[0]
        for line in outbox
        if "/step:public-" in line["key"]
    }
    assert {cells[0] for cells, _ in _rows(answers, 4)} == public
    # 5. every victim, out until it answered through the front door again (not resolution)
    affected = _rows(answers, 5)
    assert [cells[0] for cells, _ in affected] == victims
    assert all(cells[3] != "still out" for cells, _ in affected)
    # 6. every ledger step of every victim, by the failover run, with the client's RTO
    shown = _rows(answers, 6)
    assert [(c[0], c[1]) for c, _ in shown] == [
        (s.client_id, s.step) for c in victims for s in steps[c]
    ]
    assert {run for _, run in shown} == {failover_run}
    for cells, _ in shown:
        rto = results[cells[0]].rto_seconds
        assert rto is not None and cells[5] == duration_text(timedelta(seconds=rto))
    # 7. writes lost as the lab's workload measured them (recorded on each result by
    # ppo_dr.lab.lost_writes after the run)
    for (client, lost, how), run in _rows(answers, 7):
        measured = results[client].lost_writes
        assert measured is not None, f"the lab recorded no lost writes for {client}"
        assert (lost, how, run) == (str(measured), "measured from the workload log", failover_run)
    # 8. the last snapshot verified before the fault, and drills (none in this lab)
    for (client, what, _, detail), run in _rows(answers, 8):
        if what == "last verified snapshot":
            snap = expected_snapshots[client]
            assert snap is not None and detail.startswith(f"{snap.snapshot_id} on {snap.mirror_id}")
            assert run == snap.flow_run_id
        else:
            assert (detail == "none before the fault") == (not drills[client])


def check_evidence_bundle(lab: Any, incident_id: int, directory: Path) -> None:
    """The bundle of the incident holds its runs and verifies intact against the store."""
    runner = CliRunner()
    fleet = ["--fleet", str(lab.fleet_file)]
    args = ["evidence", str(incident_id), "-o", str(directory), "--wait", "30", *fleet]
    written = runner.invoke(app, args, env={"PPO_DR_DB_URL": lab.store_url})
    assert written.exit_code == 0, written.output
    assert "waiting up to 30 s for task-run records" in written.output
    names = (directory / "flow_runs.jsonl").read_text()
    assert "escalation" in names and "failover" in names
    checked = runner.invoke(
        app, ["evidence", "verify", str(directory), *fleet], env={"PPO_DR_DB_URL": lab.store_url}
    )
    assert checked.exit_code == 0, checked.output
    assert f"matches the hash recorded for incident {incident_id}" in checked.output
