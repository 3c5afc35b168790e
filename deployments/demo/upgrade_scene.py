"""The hardware-upgrade scenes: a planned migration approved by a person and checked
against the workload log (0 acknowledged writes lost), used by the drain of the
stop-gap server and by the upgrade of a second server: drained, returned, and refilled
by the rebalance plan, which weighs each client's requests per minute.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from deployments.demo.migration_scenes import journal_losses
from deployments.demo.narrator import get, total, workload_counts
from deployments.demo.session import FAILOVER_TIMEOUT_S, OutageDemo, ppo, prefect_api
from deployments.demo.waiting import wait_for
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.workload import acked_seqs


def migrated(demo: OutageDemo, start: Callable[[], object]) -> dict[str, tuple[str, str]]:
    """Run *start* (it starts one planned migration), wait for it, and check every client
    it moved against the workload log: served by its new home, 0 acknowledged writes
    lost. The moves, client -> (from, to)."""
    acks = demo.lab.directory / "workload" / "acks.jsonl"
    fleet = load_fleet(demo.lab.fleet_file)
    before = {p.client_id: p.server_id for p in demo.store.placements()}
    lost_before = {c: set(journal_losses(demo, fleet, acks, c, s)) for c, s in before.items()}
    acked_before = {c: len(acked_seqs(acks, c)) for c in before}
    refused_before = workload_counts(demo.lab.directory)
    known = {r.plan_id for r in demo.store.failovers()}
    start()
    started = time.monotonic()

    def finished() -> Any:
        fresh = [r for r in demo.store.failovers() if r.plan_id not in known]
        return fresh[0] if fresh and fresh[0].finished_at is not None else None

    record = wait_for("the migration", finished, FAILOVER_TIMEOUT_S)
    print(
        f"migration {record.plan_id[:12]}: {record.state} after {time.monotonic() - started:.0f} s"
    )
    if record.state != "done":
        raise SystemExit(f"demo: the migration did not complete: {record.detail}")
    after = {p.client_id: p.server_id for p in demo.store.placements()}
    moves = {c: (before[c], after[c]) for c in sorted(after) if after[c] != before.get(c)}
    fleet = load_fleet(demo.lab.fleet_file)
    refused_after = workload_counts(demo.lab.directory)
    print(
        f"\n   {'client':22} {'from':12} {'served by':12} {'acked during':>12} "
        f"{'refused (frozen)':>16} {'lost by the move':>16}"
    )
    new_losses = 0
    for client_id, (old, new) in moves.items():
        status, server = get(fleet.client(client_id).url.rstrip("/") + "/health")
        lost = set(journal_losses(demo, fleet, acks, client_id, new)) - lost_before[client_id]
        new_losses += len(lost)
        acked = len(acked_seqs(acks, client_id)) - acked_before[client_id]
        refused = total(refused_after, "failures", [client_id]) - total(
            refused_before, "failures", [client_id]
        )
        print(f"   {client_id:22} {old:12} {server:12} {acked:>12} {refused:>16} {len(lost):>16}")
        if status != 200 or server != new:
            raise SystemExit(f"demo: {client_id} is not served by {new}: {status} {server}")
    print(
        f"checked against the workload log: {new_losses} acknowledged write(s) lost by the "
        f"migration of {len(moves)} client(s) (every write the app acknowledged is in the "
        "journal on its new home)"
    )
    if new_losses:
        raise SystemExit("demo: the planned migration lost acknowledged writes")
    demo.ui(
        f"Runs -> migrate-{record.plan_id[:12]} (the planned run; tag mode:planned)",
        demo.run_url(record.flow_run_id) if record.flow_run_id else "",
    )
    return moves


def approve_when_paused(demo: OutageDemo, shown: str, what: str, note: str) -> None:
    """Approve the plan *shown* (a command's output) once its *what* run pauses for it."""
    found = re.search(r"failover plan ([0-9a-f]{16})", shown)
    if found is None:
        raise SystemExit(f"demo: the {what} printed no plan")
    plan_id = found.group(1)
    with prefect_api(demo.api_url) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"plan:{plan_id}"]))

        def paused() -> Any:
            runs = client.read_flow_runs(flow_run_filter=tagged)
            return next((r for r in runs if r.state is not None and r.state.is_paused()), None)

        run = wait_for(f"the {what} run to pause for approval", paused, FAILOVER_TIMEOUT_S)
    print(f"{what} run {run.name}: paused for approval of plan {plan_id[:12]}")
    demo.ui(
        f"Runs -> {run.name} (Paused; 'Resume' is the approval form)", demo.run_url(str(run.id))
    )
    ppo(demo, "failover", "approve", plan_id, "--by", "sipho", "--note", note)


def upgrade_and_refill(demo: OutageDemo) -> None:
    """A second server of the dead one's DC is drained for an upgrade, returned, and the
    rebalance plan moves clients back onto it (the servers it filled are over target
    in requests per minute)."""
    fleet = load_fleet(demo.lab.fleet_file)
    dc = fleet.server(demo.victim).dc
    server = next(s.id for s in fleet.servers_by_role("app") if s.dc == dc and s.id != demo.victim)
    demo.step(
        f"Upgrade {server}: drain it, return it, let the rebalance fill it again",
        "the drain moves every client off (fewest bytes, same DC first, capacity including\n"
        "requests per minute: each client's busiest minute of the last hour, counted from\n"
        "the workload), approved; the server stays drained and under maintenance until\n"
        "returned, and no plan targets it meanwhile",
    )
    drained = migrated(
        demo,
        lambda: approve_when_paused(
            demo,
            ppo(demo, "server", "drain", server, "--by", "sipho", "--reason", "new disks"),
            "drain",
            "upgrade window agreed",
        ),
    )
    if any(old != server for old, _ in drained.values()) or not drained:
        raise SystemExit(f"demo: the drain of {server} moved other clients: {drained}")
    ppo(demo, "server", "ls")
    demo.step(
        f"{server} is back from its upgrade: `server return`, then the rebalance plan",
        "return ends the drain and its maintenance window and prints the rebalance plan for\n"
        "the fleet as it is now: the server that took the drained clients is over 80 % of\n"
        "its requests per minute, so the plan moves the cheapest clients back, approved",
    )
    plan_file = demo.home / f"rebalance-{server}.json"
    returned = ppo(demo, "server", "return", server, "-o", str(plan_file))
    refilled = migrated(
        demo,
        lambda: approve_when_paused(
            demo,
            returned + ppo(demo, "rebalance", "run", "--plan", str(plan_file)),
            "rebalance",
            "refill after the upgrade",
        ),
    )
    if not refilled or any(new != server for _, new in refilled.values()):
        raise SystemExit(f"demo: the rebalance did not refill {server}: {refilled}")
    print(f"{server}: {len(refilled)} client(s) back, not drained, no maintenance window open")
