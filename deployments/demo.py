"""`make demo`: the embedded lab fleet, walked through step by step, narrated.

What it shows today (the foundation): a fleet of 3 data centres in 2 countries comes up
on 127.0.0.1; its inventory passes the checks; a client is served through the front
door while the workload writes to every client; an app server loses power and its
clients go dark; it is healed and they come back; every app server is mirrored to
its on-site and off-site mirrors, the workload writes, an incremental mirror sends
only the changes (per-client table: bytes, time, RPO on each mirror) and one
snapshot is verified by re-reading its data; the lab is torn down with no process
left behind. The other runbooks (probe, escalation, failover) join as they land.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from ppo_dr import config
from ppo_dr.fleet_access import FleetAccess, mirror_targets
from ppo_dr.inventory import Fleet, load_fleet, summary
from ppo_dr.lab.supervisor import Lab
from ppo_dr.mirror.api import verify
from ppo_dr.mirror.runbook import (
    ServerSnapshot,
    client_rows,
    human_bytes,
    record_in_catalogue,
    snapshot_app_server,
    store_url,
    total_sent,
    verify_new_snapshots,
)
from ppo_dr.mirror.status import client_statuses, format_age, stale_after
from ppo_dr.store import Store


def say(step: str, text: str = "") -> None:
    """Narrate one step, so the output reads like the runbook it demonstrates."""
    print(f"\n== {step}", flush=True)
    if text:
        print(text, flush=True)


def get(url: str, timeout: float = 3.0) -> tuple[int | str, str]:
    """GET *url* on loopback; the status code (or the error) and the serving server."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - lab loopback URL
            return response.status, response.headers.get("X-PPO-Server", "?")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-PPO-Server", "-")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no answer ({reason})", "-"


def workload_counts(lab_dir: Path) -> dict[str, dict[str, int]]:
    """Per client: writes the app acknowledged and writes that failed (never acknowledged)."""
    status = lab_dir / "workload" / "status.json"
    if not status.exists():
        return {}
    clients = json.loads(status.read_text(encoding="utf-8")).get("clients", {})
    return {
        client: {"acked": int(row.get("acked", 0)), "failures": int(row.get("failures", 0))}
        for client, row in clients.items()
    }


def total(counts: dict[str, dict[str, int]], key: str, clients: list[str] | None = None) -> int:
    return sum(row[key] for client, row in counts.items() if clients is None or client in clients)


def print_status(lab: Lab) -> None:
    """The lab's status table: every process, where it listens, whether it answers."""
    print(f"{'name':16} {'dc':5} {'role':9} {'pid':>7} {'port':>6}  {'state':8} healthy")
    for row in lab.status():
        print(
            f"{row.name:16} {row.dc or '-':5} {row.role or row.kind:9} {row.pid or '-':>7} "
            f"{row.port or '-':>6}  {row.state:8} {'yes' if row.healthy else 'NO'}"
        )


def wait_for(check: object, timeout: float, what: str) -> float:
    """Poll *check* (a callable returning bool) until true; seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.25)
    raise SystemExit(f"demo: {what} did not happen within {timeout:.0f} s")


def main() -> int:
    lab_dir = Path(os.environ.get("PPO_DR_DEMO_LAB", config.home() / "demo-lab"))
    lab = Lab(lab_dir)
    lab.down()  # a demo interrupted earlier must not leave its processes running
    if lab_dir.exists():
        shutil.rmtree(lab_dir)

    say(
        "1. Bring up the lab fleet",
        f"3 data centres (jhb1, cpt1 in ZA; lon1 in GB), app, mirror and spare servers,\n"
        f"each an SSH/SFTP server process on 127.0.0.1; a front door; a workload writer.\n"
        f"Directory: {lab_dir}",
    )
    started = time.monotonic()
    lab.up(clients=20, size_mb=200, fast=True)
    print(f"healthy after {time.monotonic() - started:.1f} s")
    try:
        return walk_through(lab, lab_dir)
    finally:
        say("10. Tear the lab down", "every process it started is stopped, by pid")
        stopped = lab.down()
        print(f"stopped {len(stopped)} processes; nothing of the lab is running")


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
    took = wait_for(lambda: get(url)[0] == 200, 15, f"{client.id} healthy again")
    before = total(workload_counts(lab_dir), "acked", hit)
    time.sleep(2.5)
    after = total(workload_counts(lab_dir), "acked", hit)
    print(
        f"GET {url} -> 200 again after {took:.1f} s; its clients take writes again "
        f"({after - before} acknowledged in 2.5 s)"
    )
    return mirror_walk_through(lab, fleet)


def mirror_table(runs: list[ServerSnapshot], store: Store, fleet: Fleet) -> None:
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
        for row, status in zip(client_rows(run), statuses, strict=True):
            onsite, offsite = run.mirror_ids[0], run.mirror_ids[1]
            rpo = " / ".join(format_age(status.per_mirror[m].rpo) for m in (onsite, offsite))
            print(
                f"{row['client']:22} {run.server_id:11} {human_bytes(row['bytes_read']):>9} "
                f"{_sent(row[f'sent_{onsite}']):>10} {_sent(row[f'sent_{offsite}']):>11} "
                f"{row['duration_s']:>5.2f}s  {rpo}" + ("  STALE" if status.stale else "")
            )


def _sent(value: object) -> str:
    return human_bytes(value) if isinstance(value, int) else str(value)


def mirror_every_app_server(
    access: FleetAccess, store: Store, fleet: Fleet
) -> list[ServerSnapshot]:
    """One mirror run per app server (what the mirror-fleet flow does each hour)."""
    runs = []
    for app in fleet.servers_by_role("app"):
        run = snapshot_app_server(access, app.id)
        record_in_catalogue(store, run)
        checks = verify_new_snapshots(access, store, run)
        sent = total_sent(run)
        print(
            f"  {app.id}: {len(run.clients)} client(s) in {run.duration_s:.1f} s; "
            + ", ".join(f"{m} {human_bytes(b)}" for m, b in sent.items())
            + "; verified "
            + ", ".join(f"{c.mirror_id} {'ok' if c.ok else 'PROBLEMS'}" for c in checks)
        )
        runs.append(run)
    return runs


def mirror_walk_through(lab: Lab, fleet: Fleet) -> int:
    """Steps 6-9: first mirror, workload writes, incremental mirror, verify a snapshot."""
    with FleetAccess(fleet) as access, Store.open(store_url(fleet)) as store:
        say(
            "6. First mirror of every app server",
            "each client to its on-site mirror (same DC) and its off-site mirror, over SSH\n"
            "(host keys pinned in fleet.yaml); each changed file read once, chunks sent to both",
        )
        started = time.monotonic()
        first = mirror_every_app_server(access, store, fleet)
        took_first = time.monotonic() - started
        sent_first = sum(sum(total_sent(r).values()) for r in first)
        print(f"first mirror: {took_first:.1f} s, {human_bytes(sent_first)} sent")

        say("7. Let the workload write", "it appends to every client's journal each second")
        time.sleep(5)

        say("8. Incremental mirror", "only what changed since the first run is read and sent")
        started = time.monotonic()
        second = mirror_every_app_server(access, store, fleet)
        took_second = time.monotonic() - started
        sent_second = sum(sum(total_sent(r).values()) for r in second)
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


if __name__ == "__main__":
    sys.exit(main())
