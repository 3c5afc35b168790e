"""The failover scenes: the runbook plans and waits, the on-call approves, it provisions,
restores, verifies and switches; every client answers from its new home, mirrored.
"""

from __future__ import annotations

import time
from typing import Any

from deployments.demo.lab_scenes import mirror_and_report, mirror_table
from deployments.demo.narrator import get
from deployments.demo.session import (
    APPROVAL_NOTICE_TIMEOUT_S,
    FAILOVER_TIMEOUT_S,
    OutageDemo,
    first_run_of,
    ppo,
    prefect_api,
)
from deployments.demo.waiting import wait_for
from ppo_dr.fleet_access import FleetAccess
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.lost_writes import record_lost_writes
from ppo_dr.store import FailoverResult


def start_failover(demo: OutageDemo) -> None:
    """The failover run of the incident: the one the escalation started (it does so
    for a server or DC outage, right after paging level 1), else the demo starts it,
    under the same idempotency key, so there is only ever one. The lab's policy has
    ``auto_failover: false``: the run plans, then pauses for a person's approval."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    with prefect_api(demo.api_url) as client:
        run = _failover_run_of(client, demo.incident_id)
        by_escalation = run is not None
        if by_escalation:
            who = "the escalation started it right after paging level 1"
        else:
            who = (
                "the escalation started none, so the demo starts it, as\n"
                f"`ppo-dr failover run --server {demo.victim} --incident {demo.incident_id}`"
                " would"
            )
            run = run_deployment(
                "failover/failover",
                timeout=0,
                parameters={
                    "server": demo.victim,
                    "incident_id": demo.incident_id,
                    "fleet_file": str(demo.lab.fleet_file),
                },
                idempotency_key=f"failover-{demo.incident_id}",
                tags=[f"incident:{demo.incident_id}"],
            )
            assert isinstance(run, FlowRun)  # the sync form, not a coroutine
        demo.failover_run_id = str(run.id)
        demo.step(
            f"The failover runbook for incident #{demo.incident_id}: it plans, then waits",
            f"{who};\nthe lab's policy has auto_failover off, so a person approves the plan",
        )

        def paused() -> Any:
            now = client.read_flow_run(run.id)
            if now.state is not None and now.state.is_final():
                raise SystemExit(f"demo: the failover run ended early: {now.state.message}")
            tags = [t for t in now.tags if t.startswith("plan:")]
            return now if now.state is not None and now.state.is_paused() and tags else None

        now = wait_for("the failover run to pause for approval", paused, FAILOVER_TIMEOUT_S)
    demo.plan_id = next(t for t in now.tags if t.startswith("plan:")).removeprefix("plan:")
    print(f"failover run {now.name}: planned, paused for approval of plan {demo.plan_id[:12]}")
    print(plan_text(demo))
    demo.ui(
        f"Runs -> {now.name} (Paused; 'Resume' is the approval form)", demo.run_url(str(now.id))
    )
    demo.ui(f"Artifacts -> failover-plan-{demo.plan_id} (the plan above)", "/artifacts")
    if by_escalation:  # it tells the on-call the plan waits (a bonus: not waited for long)
        deadline = time.monotonic() + APPROVAL_NOTICE_TIMEOUT_S
        while not demo.show_new(lambda s: s.startswith("failover")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)


def _failover_run_of(client: Any, incident_id: int) -> Any:
    """The failover deployment's run for *incident_id* (tag ``incident:<id>``), if any."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    tagged = FlowRunFilterTags(all_=[f"incident:{incident_id}"])
    return first_run_of(client, "failover", FlowRunFilter(tags=tagged))


def plan_text(demo: OutageDemo) -> str:
    """The plan as ``ppo-dr failover plan`` prints it, from the run's artifact."""
    with prefect_api(demo.api_url) as client:
        artifact = client.read_latest_artifacts(
            artifact_filter=_artifact_key(f"failover-plan-{demo.plan_id}")
        )
    if not artifact:
        return "(the plan artifact is not readable yet)"
    body = str(artifact[0].data or "")
    inner = body.split("```", 2)[1] if body.count("```") >= 2 else body
    return "\n".join("   " + line for line in inner.strip().splitlines())


def _artifact_key(key: str) -> Any:
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
    )

    return ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key]))


def approve_failover(demo: OutageDemo) -> None:
    demo.step(
        "The on-call approves the plan from the terminal",
        "the same answer as the UI's Resume form: approve, by whom, a note; the run goes on\n"
        "while the escalation keeps users and clients informed",
    )
    ppo(
        demo,
        "failover",
        "approve",
        demo.plan_id,
        "--by",
        "sipho",
        "--note",
        f"{demo.victim} lost power; restore its clients in Cape Town",
    )


def failover_done(demo: OutageDemo) -> None:
    demo.step(
        "The failover runs: provision, restore, verify, switch, re-mirror",
        "a new app server in cpt1 from the lab provider; each client restored from its\n"
        "freshest verified snapshot, verified against the manifest, checked on the new\n"
        "server, switched (placement compare-and-set), checked through the front door",
    )
    with prefect_api(demo.api_url) as client:

        def finished() -> Any:
            now = client.read_flow_run(demo.failover_run_id)
            return now if now.state is not None and now.state.is_final() else None

        run = wait_for("the failover", finished, FAILOVER_TIMEOUT_S)
    record = demo.store.failover(demo.plan_id)
    if record is None or record.state != "done" or record.finished_at is None:
        detail = record.detail if record else run.state.message
        raise SystemExit(f"demo: the failover did not complete: {detail}")
    approved = [e for e in demo.store.timeline(demo.incident_id) if e.kind == "failover-approval"]
    since = approved[0].at if approved else record.started_at
    print(
        f"failover run {run.name}: {run.state.name}, "
        f"{(record.finished_at - since).total_seconds():.0f} s after the approval"
    )
    record_lost_writes(demo.lab.fleet_file, demo.plan_id)  # the lab's measure, not the runbook's
    rows = failover_rows(demo)
    demo.new_home = rows[0].to_server
    print_failover_table(rows)
    demo.ui(
        f"Runs -> {run.name}: its task runs and subflows (mirror-server)",
        demo.run_url(demo.failover_run_id),
    )
    demo.ui(f"Artifacts -> failover-clients-{demo.plan_id} / failover-summary-...", "/artifacts")


def failover_rows(demo: OutageDemo) -> list[FailoverResult]:
    """Per client moved by the incident's failover: the ledger's result row."""
    return [r for r in demo.store.failover_results(demo.plan_id) if r.outcome == "ok"]


def print_failover_table(rows: list[FailoverResult]) -> None:
    """RTO (declaration to healthy through the front door), age of the restored
    snapshot at the declaration, and the acknowledged writes lost (the lab's workload
    log against the restored journal)."""
    print(
        f"   {'client':22} {'now on':24} {'restored from':14} {'RTO':>6} "
        f"{'snapshot age':>12} {'acked writes lost':>17}"
    )
    for r in rows:
        rto = f"{r.rto_seconds:.0f}s" if r.rto_seconds is not None else "-"
        rpo = f"{r.rpo_seconds:.0f}s" if r.rpo_seconds is not None else "-"
        print(
            f"   {r.client_id:22} {r.to_server:24} {r.source_mirror or '-':14} {rto:>6} "
            f"{rpo:>12} {r.lost_writes if r.lost_writes is not None else '-':>17}"
        )


def clients_healthy(demo: OutageDemo) -> None:
    demo.step(
        "Every client is healthy again, through the front door",
        "the X-PPO-Server header names the server that answered",
    )
    fleet = load_fleet(demo.lab.fleet_file)
    for client_id in demo.clients:
        url = fleet.client(client_id).url.rstrip("/") + "/health"
        status, server = get(url)
        print(
            f"   {client_id:22} before: {demo.served_by.get(client_id, '?'):12} "
            f"now: {status} from {server}"
        )
        if status != 200 or server != demo.new_home:
            raise SystemExit(f"demo: {client_id} is not served by {demo.new_home}: {status}")


def mirror_new_home(demo: OutageDemo) -> None:
    demo.step(
        f"Mirroring follows the placements: {demo.new_home} is mirrored",
        "its repositories were seeded from the restored snapshots, so this hourly run is\n"
        "incremental (the failover's mirror-server subflow made the first one)",
    )
    fleet = load_fleet(demo.lab.fleet_file)
    with FleetAccess(fleet) as access:
        runs = mirror_and_report(access, demo.store, only=[demo.new_home])
        mirror_table(runs, demo.store, fleet)
