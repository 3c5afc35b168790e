"""The lab scenes (steps 2-9): the inventory, a client served, a power loss healed, the
first and an incremental mirror of every app server, one snapshot verified.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from deployments.demo.narrator import get, print_status, say, total, workload_counts
from deployments.demo.waiting import wait_for
from ppo_dr.fleet_access import FleetAccess
from ppo_dr.inventory import Fleet, load_fleet, summary
from ppo_dr.lab.supervisor import Lab
from ppo_dr.mirror import runbook
from ppo_dr.mirror.api import verify
from ppo_dr.mirror.fleet_targets import mirror_targets
from ppo_dr.mirror.runbook import human_bytes
from ppo_dr.mirror.status import client_statuses, format_age, stale_after
from ppo_dr.store import Store


def walk_through(lab: Lab, lab_dir: Path) -> int:
    fleet = load_fleet(lab.fleet_file)
    say("2. The inventory it generated passes every rule", summary(fleet))
    print_status(lab)

    victim = fleet.servers_by_role("app")[0]
    client = fleet.clients_on(victim.id)[0]
    url = client.url.rstrip("/") + "/health"
    time.sleep(3)  # let the workload write a few records to every client
    status, server = get(url)
    say(
        f"3. Client {client.id} is served through the front door",
        f"GET {url} -> {status} from {server}\n"
        f"the workload writes to every client each second: "
        f"{total(workload_counts(lab_dir), 'acked')} writes acknowledged so far",
    )

    say(
        f"4. Power loss on {victim.id} (kill -9)",
        f"its clients: {', '.join(c.id for c in fleet.clients_on(victim.id))}",
    )
    lab.break_(victim.id, "power")
    hit = [c.id for c in fleet.clients_on(victim.id)]
    failed_before = total(workload_counts(lab_dir), "failures", hit)
    time.sleep(3)
    status, server = get(url)
    print(f"GET {url} -> {status} (the front door cannot reach {victim.id})")
    failed = total(workload_counts(lab_dir), "failures", hit) - failed_before
    print(f"writes to its clients refused in 3 s, never acknowledged: {failed}")
    print_status(lab)

    say(f"5. Heal {victim.id} (power restored, same disk)")
    lab.heal(victim.id)
    started = time.monotonic()
    wait_for(f"{client.id} healthy again", lambda: get(url)[0] == 200, 15, every=0.25)
    took = time.monotonic() - started
    before = total(workload_counts(lab_dir), "acked", hit)
    time.sleep(2.5)
    after = total(workload_counts(lab_dir), "acked", hit)
    print(
        f"GET {url} -> 200 again after {took:.1f} s; its clients take writes again "
        f"({after - before} acknowledged in 2.5 s)"
    )
    return mirror_walk_through(lab, fleet)


def mirror_table(runs: list[runbook.ServerSnapshot], store: Store, fleet: Fleet) -> None:
    """Per client: bytes read, bytes sent to each mirror, time, RPO on each mirror."""
    threshold = stale_after(fleet.timing.mirror_cron)
    print(
        f"{'client':22} {'server':11} {'read':>9} {'to on-site':>10} {'to off-site':>11} "
        f"{'time':>6}  RPO on-site / off-site"
    )
    for run in runs:
        statuses = client_statuses(
            [s for c in run.clients for s in store.snapshots(client_id=c)],
            run.clients,
            run.mirror_ids,
            now=datetime.now(UTC),
            threshold=threshold,
        )
        for row, status in zip(runbook.client_rows(run), statuses, strict=True):
            onsite, offsite = run.mirror_ids[0], run.mirror_ids[1]
            rpo = " / ".join(format_age(status.per_mirror[m].rpo) for m in (onsite, offsite))
            print(
                f"{row['client']:22} {run.server_id:11} {human_bytes(row['bytes_read']):>9} "
                f"{_sent(row[f'sent_{onsite}']):>10} {_sent(row[f'sent_{offsite}']):>11} "
                f"{row['duration_s']:>5.2f}s  {rpo}" + ("  STALE" if status.stale else "")
            )


def _sent(value: object) -> str:
    return human_bytes(value) if isinstance(value, int) else str(value)


def mirror_and_report(
    access: FleetAccess, store: Store, only: list[str] | None = None
) -> list[runbook.ServerSnapshot]:
    """The hourly mirror of every server to mirror (or of the servers in *only*),
    recorded and verified, one line per server: clients, time, bytes sent, verify."""
    runs = []
    for done in runbook.mirror_every_home(access, store, only):
        run = done.run
        print(
            f"  {run.server_id}: {len(run.clients)} client(s) in {run.duration_s:.1f} s; "
            + ", ".join(f"{m} {human_bytes(b)}" for m, b in runbook.total_sent(run).items())
            + "; verified "
            + ", ".join(f"{c.mirror_id} {'ok' if c.ok else 'PROBLEMS'}" for c in done.checks)
        )
        runs.append(run)
    return runs


def mirror_walk_through(lab: Lab, fleet: Fleet) -> int:
    """Steps 6-9: first mirror, workload writes, incremental mirror, verify a snapshot."""
    with FleetAccess(fleet) as access, Store.open(runbook.store_url(fleet)) as store:
        say(
            "6. First mirror of every app server",
            "each client to its on-site mirror (same DC) and its off-site mirror, over SSH\n"
            "(host keys pinned in fleet.yaml); each changed file read once, chunks sent to both",
        )
        started = time.monotonic()
        first = mirror_and_report(access, store)
        took_first = time.monotonic() - started
        sent_first = sum(sum(runbook.total_sent(r).values()) for r in first)
        print(f"first mirror: {took_first:.1f} s, {human_bytes(sent_first)} sent")

        say("7. Let the workload write", "it appends to every client's journal each second")
        time.sleep(5)

        say("8. Incremental mirror", "only what changed since the first run is read and sent")
        started = time.monotonic()
        second = mirror_and_report(access, store)
        took_second = time.monotonic() - started
        sent_second = sum(sum(runbook.total_sent(r).values()) for r in second)
        print(
            f"incremental mirror: {took_second:.1f} s, {human_bytes(sent_second)} sent "
            f"({100 * sent_second / max(sent_first, 1):.1f} % of the first)\n"
        )
        mirror_table(second, store, fleet)

        run = second[0]
        client = run.clients[0]
        mirror_id = run.mirror_ids[1]
        say(
            f"9. Verify one snapshot: {client} on {mirror_id} (off-site)",
            "re-read and re-hash every pack it uses",
        )
        target = mirror_targets(fleet, run.server_id, access, mirrors=[mirror_id]).targets[0]
        report = verify(target, key=access.mirror_key, client_id=client, read_data=True)
        print(
            f"snapshot {run.snapshot_id(client)}: {'OK' if report.ok else 'PROBLEMS'}; "
            f"{report.packs_checked} pack(s), {human_bytes(report.bytes_checked)} re-hashed"
        )
        for problem in report.problems:
            print(f"  {problem}")
    return 0 if report.ok else 1
