"""The failover runbook: move a scope of clients to other servers, from the mirrors.

**failover(scope..., target..., mode="emergency", incident_id=None, plan_json=None,
approve=False)** — as an operator would do it at 3 a.m.:

1. read the fleet; see which servers answer SSH (the others are *down* for the plan);
2. plan (residency, capacity, freshest verified snapshot on a reachable mirror), or take
   the approved ``plan_json``; the plan is an artifact; refused clients are reported;
3. unless ``approve`` or the policy's ``auto_failover``: **pause for approval**
   (:class:`Approval`: approve yes/no, by, note) from the UI or
   ``ppo-dr failover approve``;
4. provision the planned servers (provider of their DC; idempotent by server id);
5. per target server, mapped (task ``clients-into-<server>``), one ``fail-over-clients``
   run for the clients moving onto it (:mod:`flows.failover_client`; here, or on the
   target DC's pool when ``client_runs="target-pool"``), its clients threads of that
   run (task ``client-<client>``), at most :data:`flows.failover_client.TARGET_SLOTS`
   at once, each step a task of its own (``restore-<client>``, ...):
   [planned: freeze, final sync] → restore → verify → [planned: lift the freeze on the
   target] → app health on the target → switch (placement compare-and-set) → route →
   health through the front door. A failing client is rolled back (routing back,
   restored data removed, source unfrozen) and reported; the others go on. After a
   planned move the source copy stays frozen: it is stale, and the freeze keeps anyone
   reaching that server directly from writing to it;
6. re-establish mirroring: each new home's repositories are seeded with the restored
   snapshot, then the new home is mirrored (the ``mirror-server`` flow, incremental);
   where the fleet is deployed per server (``ppo-dr deploy``), a new home without a
   scheduled mirror deployment (a server just provisioned) gets one on its DC's pool
   (:func:`flows.mirror_schedule.schedule_mirrors`), so its clients are mirrored on
   schedule from now on;
7. provisioned servers no client ended up on are released;
8. RTO/RPO per client in the ledger, the incident's timeline (with this run's id), a
   table and a Markdown summary as artifacts; the run ends Failed when any client was
   not moved (refused, failed, rolled back) or its mirroring was not re-established.

Acknowledged writes lost are the lab's measure, not the runbook's: the lab's callers
count them from their workload log after the run and record them on the plan's results
(:func:`ppo_dr.lab.lost_writes.record_lost_writes`).

Every step goes through the store's ledger, keyed by the plan id: rerunning the same
plan after a crash skips what was done (no client is restored twice, no placement flips
back) and finishes the rest.

``failover(mode="planned")`` is the planned migration: the same runbook inside a
maintenance window on the scope, frozen and finally synced first (no loss). There is no
separate ``migrate`` flow: its signature was this one's copied, and it was never deployed.

One failover at a time is the global concurrency limit :data:`FAILOVER_LIMIT` (one
slot), taken only around the acting part, after approval: a run waiting for approval
holds nothing, so it can wait its whole approval window (a deployment concurrency
limit is released by Prefect when the run pauses, and the engine's next lease renewal
then kills the run, 410 Gone). The slot's lease is short (:data:`FAILOVER_LEASE_S`)
and renewed while the run acts, and recorded in the store (``tasks.slots``): the rerun
that finishes a crashed plan (the same flow run, scheduled again) gives back its killed
attempt's slot at once; a dead holder's slot nobody asks for frees a lease later.

Any death of a run (failed, crashed, timed out, cancelled) of an incident's failover is
an entry on the incident's timeline and a page to the on-call (the flow's state hooks,
:func:`tasks.failover.report_run_death`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final, Literal

from prefect import Flow, flow, get_run_logger, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from pydantic import Field

from flows.decision_fields import DeciderName, DecisionNote
from flows.failover_artifacts import client_table, summary_markdown
from flows.failover_client import run_batch
from flows.mirror import mirror_server
from flows.mirror_schedule import schedule_mirrors
from flows.outcome import failed_with
from ppo_dr import config
from ppo_dr.errors import PermanentError
from ppo_dr.failover.plan import Plan, Scope, Target
from ppo_dr.failover.plan_checks import checked_plan
from ppo_dr.failover.runs import ClientRuns, client_batches, failover_run_name
from ppo_dr.ids import check_id
from ppo_dr.mirror.runbook import store_url
from tasks import label_flow_run
from tasks.failover import (
    SEED_LOCK_WAITS_S,
    ClientOutcome,
    begin_failover,
    close_maintenance,
    finish_failover,
    make_plan,
    note_timeline,
    observe_reachability,
    open_maintenance,
    plan_begun_by_run,
    provision,
    release,
    report_run_death,
    seed_new_home,
)
from tasks.inventory import load_fleet_task
from tasks.mirror import ensure_mirror_limits
from tasks.slots import leased_slot

#: How long a run waits for an operator's approval before it gives up (nothing done).
APPROVAL_TIMEOUT_S: Final = 3600
#: How often the paused run asks whether it was resumed (PREFECT-NOTES: default 10 s).
APPROVAL_POLL_S: Final = 2
#: The global concurrency limit that lets one failover act at a time.
FAILOVER_LIMIT: Final = "failover"
FAILOVER_SLOTS: Final = 1
#: The slot's lease (the server's minimum): a killed run's slot nobody gives back is
#: freed this long after its last renewal, plus the repossessor's loop (15 s by default).
FAILOVER_LEASE_S: Final = 60.0


class Approval(RunInput):
    """Approve or refuse the failover plan shown in this run's artifacts (the UI shows
    this form; ``ppo-dr failover approve`` fills the same fields)."""

    approve: bool = Field(
        default=False,
        title="Approve the plan",
        description="On: carry out the plan now (the clients move). "
        "Off: refuse it; the run ends and nothing moves",
    )
    by: DeciderName = Field(description="Who decides (recorded with the plan, e.g. anna)")
    note: DecisionNote = Field(
        default="", description="Why, or anything to add (kept with the decision)"
    )

    @classmethod
    def for_plan(cls, plan: Plan) -> type[Approval]:
        """This form with *plan* shown above it in the UI: what is being approved."""
        table = "\n".join(f"    {line}" for line in plan.render().splitlines())
        prompt = f"**Approve failover plan `{plan.plan_id}`?**\n\n{table}\n"
        return cls.with_initial_data(description=prompt)


def _run_name() -> str:
    """One name for the whole run (:func:`ppo_dr.failover.runs.failover_run_name`)."""
    return failover_run_name(flow_run.parameters, flow_run.id, planned=False)


# --------------------------------------------------------------------------- approval


def wait_for_approval(plan: Plan) -> Approval:
    """Pause until an operator approves or refuses; PermanentError on timeout."""
    from prefect.exceptions import FlowPauseTimeout

    try:
        answer = pause_flow_run(
            wait_for_input=Approval.for_plan(plan),
            timeout=APPROVAL_TIMEOUT_S,
            poll_interval=APPROVAL_POLL_S,
            key=f"approve-{plan.plan_id}",
        )
    except FlowPauseTimeout:
        raise PermanentError(
            f"plan {plan.plan_id} was not approved within {APPROVAL_TIMEOUT_S} s: nothing done"
        ) from None
    assert isinstance(answer, Approval)
    return answer


# --------------------------------------------------------------------------- deaths


def report_death(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """State hook: a failover run of an incident that ended badly is put on the
    incident's timeline and paged (see :mod:`ppo_dr.failover.death`)."""
    import logging

    run = flow_run  # the hook protocol names it so; the module has runtime.flow_run

    log = logging.getLogger("ppo_dr.failover")
    incident_id = run.parameters.get("incident_id")
    what = f"{state.name} ({state.type.value.lower()})"
    if not incident_id:
        log.warning("failover run %s ended %s: %s", run.name, what, state.message)
        return
    fleet_file = Path(run.parameters.get("fleet_file") or config.fleet_file())
    try:
        sent = report_run_death(
            fleet_file, int(incident_id), str(run.id), run.name, what, state.message or "-"
        )
    except Exception:  # a hook must not hide the run's own state; log why it failed
        log.exception("failover run %s ended %s; could not page about it", run.name, what)
        return
    log.warning("failover run %s ended %s: incident #%s paged (%d notice(s))",
                run.name, what, incident_id, sent)  # fmt: skip


# --------------------------------------------------------------------------- the flow


@flow(
    name="failover",
    flow_run_name=_run_name,
    timeout_seconds=6 * 3600,
    on_failure=[report_death],
    on_crashed=[report_death],
    on_cancellation=[report_death],
)
def failover(
    clients: list[str] | None = None,
    server: str | None = None,
    dc: str | None = None,
    to_server: str | None = None,
    to_dc: str | None = None,
    to_country: str | None = None,
    mode: Literal["emergency", "planned"] = "emergency",
    incident_id: int | None = None,
    plan_json: str | None = None,
    approve: bool = False,
    fleet_file: Path | None = None,
    client_runs: ClientRuns = "in-process",
) -> dict[str, Any] | State[Any]:
    """Move a scope of clients to other servers, restoring from the mirrors.

    Args:
        clients: move these clients (or name server or dc instead).
        server: move every client on this server.
        dc: move every client in this data centre.
        to_server: only to this server (or to_dc / to_country; none = automatic).
        to_dc: only to servers in this data centre.
        to_country: only to this country (two letters, e.g. GB).
        mode: emergency (restore from the mirrors) or planned (freeze, final sync, no loss).
        incident_id: the incident this failover answers (timeline entries, RTO from its
            declaration).
        plan_json: an approved plan (``ppo-dr failover plan -o``) to carry out as is;
            the scope, target and mode parameters are then ignored.
        approve: run without pausing for approval (the plan is already approved).
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's.
        client_runs: where each target server's ``fail-over-clients`` run executes: in
            this run's process, or on the target DC's pool (the distributed deployment's
            default; :mod:`ppo_dr.failover.runs`).
    """
    log = get_run_logger()
    path = Path(fleet_file or config.fleet_file())
    fleet = load_fleet_task(path)
    url = store_url(fleet)
    run_id = str(flow_run.id) if flow_run.id else None
    begun = plan_begun_by_run(url, run_id, incident_id) if run_id and not plan_json else None
    if plan_json:
        plan = checked_plan(fleet, Plan.from_json(plan_json))
    elif begun is not None:  # this run crashed and was scheduled again: finish its plan
        plan = begun
        log.info("rerun of this run after a crash: carrying out its plan %s", plan.plan_id)
    else:
        scope = Scope(
            clients=tuple(check_id(c, "client id") for c in clients or ()), server=server, dc=dc
        )
        target = Target(server=to_server, dc=to_dc, country=to_country)
        down = observe_reachability(fleet)
        plan = make_plan(path, scope, target, mode, sorted(down))
    kind = "migration" if plan.mode == "planned" else "failover"
    label_flow_run(  # tags only: the run keeps the one name it started with
        tags=[f"fleet:{fleet.name}", f"plan:{plan.plan_id}", f"mode:{plan.mode}"]
        + ([f"incident:{incident_id}"] if incident_id else [])
        + [f"client:{m.client_id}" for m in plan.moves]
        + sorted({f"server:{s}" for m in plan.moves for s in (m.from_server, m.to_server)}),
    )
    create_markdown_artifact(
        key=f"failover-plan-{plan.plan_id}",
        markdown=f"# Plan {plan.plan_id}\n\n```\n{plan.render()}\n```\n",
        description=f"The {kind} plan: per client from, to, mirror, snapshot",
    )
    if incident_id:
        note_timeline(
            url,
            incident_id,
            f"{kind}-planned",
            f"{kind} plan {plan.plan_id}: {len(plan.moves)} client(s) to move, "
            f"{len(plan.refusals)} refused"
            + "".join(f"; REFUSED {r.client_id}: {r.reason}" for r in plan.refusals),
            run_id,
            {
                "plan_id": plan.plan_id,
                "moves": len(plan.moves),
                "refusals": [r.client_id for r in plan.refusals],
                "refusal_reasons": [
                    {"client": r.client_id, "reason": r.reason} for r in plan.refusals
                ],
            },
        )
    if not plan.moves:
        detail = "; ".join(f"{r.client_id}: {r.reason}" for r in plan.refusals) or "no client"
        return Failed(message=f"{kind} plan {plan.plan_id} moves nobody: {detail}")

    auto = fleet.escalation is not None and fleet.escalation.auto_failover
    if not approve and not auto:
        log.info("plan %s waits for approval (UI or `ppo-dr failover approve`)", plan.plan_id)
        answer = wait_for_approval(plan)
        if incident_id:
            note_timeline(
                url,
                incident_id,
                f"{kind}-approval",
                f"plan {plan.plan_id} {'approved' if answer.approve else 'refused'} by "
                f"{answer.by}" + (f": {answer.note}" if answer.note else ""),
                run_id,
                {"plan_id": plan.plan_id, "approve": answer.approve, "by": answer.by},
            )
        if not answer.approve:
            return Completed(message=f"plan {plan.plan_id} refused by {answer.by}: nothing done")

    ensure_mirror_limits({FAILOVER_LIMIT: FAILOVER_SLOTS})
    log.info("plan %s waits for the failover slot (one failover acts at a time)", plan.plan_id)
    # A slot whose lease renewal fails (server restarted, lease reaped under load) must
    # not cancel a failover half done: the run goes on (the ledger and the placements'
    # compare-and-set keep every client safe even if two runs overlapped) and the lost
    # lease is logged (tasks.slots). The limit must exist; the slot of this same run's
    # killed attempt is given back at once (the lease recorded in the store).
    with leased_slot(FAILOVER_LIMIT, timeout_s=None, lease_s=FAILOVER_LEASE_S, store_url=url):
        return _carry_out(path, url, plan, incident_id, run_id, kind, client_runs)


def _carry_out(
    path: Path,
    url: str,
    plan: Plan,
    incident_id: int | None,
    run_id: str | None,
    kind: str,
    client_runs: ClientRuns,
) -> dict[str, Any] | State[Any]:
    log = get_run_logger()
    fleet = load_fleet_task(path)
    record = begin_failover(url, fleet, plan, incident_id, run_id)
    declared_at = record.declared_at
    windows = [
        open_maintenance(url, scope_kind, scope_id, f"{kind} {plan.plan_id}")
        for scope_kind, scope_id in (_maintenance_scopes(plan) if plan.mode == "planned" else [])
    ]

    for request in plan.provisions:
        made = provision(path, url, request)
        if incident_id:
            note_timeline(url, incident_id, f"{kind}-provisioned",
                          f"server {made['server']} in {request.dc} "
                          f"{'provisioned' if made['created'] else 'found'} ({made['provider']})",
                          run_id, made)  # fmt: skip
    versions = record.placement_versions
    batches = client_batches(plan, load_fleet_task(path))  # again: provisioning added servers
    futures = run_batch.map(
        unmapped(path),
        unmapped(url),
        unmapped(plan.plan_id),
        batches,
        unmapped(plan.mode),
        unmapped({m.client_id: int(versions[m.client_id]) for m in plan.moves}),
        unmapped(declared_at),
        unmapped(run_id),
        unmapped(client_runs),
    )
    by_client: dict[str, ClientOutcome] = {}
    for batch, future in zip(batches, futures, strict=True):
        future.wait()
        if future.state.is_completed():
            by_client.update((o.client_id, o) for o in future.result())
        else:
            why = str(future.state.message)
            by_client.update((m.client_id, ClientOutcome.not_moved(m, why)) for m in batch.moves)
    outcomes = [
        by_client.get(m.client_id) or ClientOutcome.not_moved(m, "its batch reported nothing")
        for m in plan.moves
    ]
    ok = [o for o in outcomes if o.outcome == "ok"]

    # Re-establish mirroring for each new home: seed, then a mirror run (incremental).
    moved = {m.client_id: m for m in plan.moves}
    mirrored: dict[str, str] = {}
    unseeded: dict[str, str] = {}
    for o in ok:
        seed = seed_new_home(path, url, plan.plan_id, moved[o.client_id], run_id, return_state=True)
        if not seed.is_completed():
            unseeded[o.client_id] = str(seed.message)
            log.error("seed of %s failed: %s (its first mirror run is a full one)",
                      o.client_id, seed.message)  # fmt: skip
    for home in sorted({o.to_server for o in ok}):
        mirrored[home] = _mirror_new_home(home, path)
    scheduled = _schedule_new_homes(path, plan, ok)

    released: list[str] = []
    used = {o.to_server for o in ok}
    for request in plan.provisions:
        if request.server_id not in used:
            done = release(path, url, request.server_id, request.dc, return_state=True)
            if done.is_completed():
                released.append(request.server_id)
    for window in windows:
        close_maintenance(url, window)
    created = sorted(h for h, done in scheduled.items() if done == "created")
    if incident_id and (mirrored or released):
        note_timeline(url, incident_id, f"{kind}-mirrored",
                      "mirroring of the new homes: "
                      + (", ".join(f"{h} {o}" for h, o in mirrored.items()) or "none")
                      + (f"; scheduled mirror created for {', '.join(created)}" if created else "")
                      + (f"; released unused: {', '.join(released)}" if released else ""),
                      run_id, {"mirrored": mirrored, "released": released,
                               "scheduled": scheduled})  # fmt: skip

    if incident_id:
        for o in outcomes:
            note_timeline(
                url,
                incident_id,
                f"{kind}-client",
                (
                    f"{o.client_id} serving from {o.to_server} (RTO {o.rto_seconds:.0f} s, "
                    f"snapshot age {o.rpo_seconds or 0:.0f} s)"
                    if o.outcome == "ok" and o.rto_seconds is not None
                    else f"{o.client_id} NOT moved to {o.to_server}: {o.detail}"
                ),
                run_id,
                {"client": o.client_id, "to": o.to_server, "outcome": o.outcome,
                 "rto_s": o.rto_seconds, "rpo_s": o.rpo_seconds},
            )  # fmt: skip
    create_table_artifact(
        key=f"failover-clients-{plan.plan_id}",
        table=client_table(plan, outcomes),
        description=f"{kind} {plan.plan_id}: per client from, to, mirror, RTO, RPO, result",
    )
    create_markdown_artifact(
        key=f"failover-summary-{plan.plan_id}",
        markdown=summary_markdown(plan, outcomes, released, mirrored),
        description=f"{kind} {plan.plan_id}: what moved, what failed, mirroring",
    )
    failed = [o for o in outcomes if o.outcome != "ok"]
    state = "done" if not failed and not plan.refusals else ("partial" if ok else "failed")
    detail = "; ".join(f"{o.client_id}: {o.detail}" for o in failed)
    finish_failover(url, plan.plan_id, state, detail)
    if incident_id:
        note_timeline(url, incident_id, f"{kind}-finished",
                      f"{kind} {plan.plan_id} {state}: {len(ok)} of {len(plan.moves)} moved",
                      run_id)  # fmt: skip
    summary: dict[str, Any] = {
        "plan_id": plan.plan_id,
        "state": state,
        "moved": {o.client_id: o.to_server for o in ok},
        "failed": {o.client_id: o.detail for o in failed},
        "refused": {r.client_id: r.reason for r in plan.refusals},
        "rto_s": {o.client_id: o.rto_seconds for o in ok},
        "released": released,
        "mirrored": mirrored,
    }
    summary["unseeded"] = unseeded
    summary["scheduled"] = scheduled
    if not ok:
        return failed_with(f"{kind} {plan.plan_id} moved no client: {detail}", summary)
    # One rule for every runbook: a run that did not do all it was asked ends Failed,
    # its per-client results in the artifacts and in the state's data.
    short = [f"{len(failed)} failed"] if failed else []
    short += [f"{len(plan.refusals)} refused"] if plan.refusals else []
    short += [f"seed failed for {', '.join(sorted(unseeded))}"] if unseeded else []
    short += [f"mirror of {h} failed ({o})" for h, o in mirrored.items() if o != "ok"]
    short += [f"no scheduled mirror for {h} ({o})" for h, o in scheduled.items() if o == "failed"]
    if short:
        head = f"{kind} {plan.plan_id}: {len(ok)} of {len(plan.moves)} moved; "
        return failed_with(head + "; ".join(short), summary)
    return summary


def _mirror_new_home(home: str, path: Path) -> str:
    """A ``mirror-server`` run of *home*: "ok", or the last run's name and message.

    A mirror run finding another one of *home* running (its schedule, on the DC's pool)
    is skipped (Cancelled), and that other run may have read the placements before the
    clients switched; so a skipped run is tried again after a wait (about 3 minutes in
    all), and only then reported. A skip once ended the failover Failed with every
    client healthy (bench/dc_loss.py, 7x8: "mirror of app-cpt1-2 failed")."""
    run = mirror_server(home, fleet_file=path, return_state=True)
    for wait_s in SEED_LOCK_WAITS_S:
        if not run.is_cancelled():
            break
        get_run_logger().info("mirror of %s skipped (%s); again in %.0f s",
                              home, run.message, wait_s)  # fmt: skip
        time.sleep(wait_s)
        run = mirror_server(home, fleet_file=path, return_state=True)
    return "ok" if run.is_completed() else f"{run.name}: {run.message}"


def _schedule_new_homes(path: Path, plan: Plan, ok: list[ClientOutcome]) -> dict[str, str]:
    """Each new home's scheduled mirror (:func:`flows.mirror_schedule.schedule_mirrors`):
    "created", "present", or "failed" for every home when it could not be done (the
    run then ends Failed: those clients would go unmirrored, and nothing else alerts)."""
    homes = sorted({o.to_server for o in ok})
    if not homes:
        return {}
    left = sorted({m.from_server for m in plan.moves})
    done = schedule_mirrors(path, homes, left, return_state=True)
    if done.is_completed():
        return dict(done.result())
    log = get_run_logger()
    log.error("scheduled mirrors of %s not checked: %s", ", ".join(homes), done.message)
    return dict.fromkeys(homes, "failed")


def _maintenance_scopes(plan: Plan) -> list[tuple[str, str]]:
    """The maintenance windows a planned migration opens: its DC, else each source server."""
    if plan.scope.dc:
        return [("dc", plan.scope.dc)]
    return [("server", s) for s in sorted({m.from_server for m in plan.moves})]


__all__ = [
    "FAILOVER_LIMIT",
    "FAILOVER_SLOTS",
    "Approval",
    "client_table",
    "failover",
    "summary_markdown",
]
