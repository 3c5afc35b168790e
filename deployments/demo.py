"""`make demo`: the embedded lab fleet, walked through step by step, narrated.

What it shows today (the foundation): a fleet of 3 data centres in 2 countries comes up
on 127.0.0.1; its inventory passes the checks; a client is served through the front
door while the workload writes to every client; an app server loses power and its
clients go dark; it is healed and they come back; the lab is torn down with no
process left behind. The runbooks (mirror, probe, escalation, failover) join this
script as they land.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ppo_dr import config
from ppo_dr.inventory import load_fleet, summary
from ppo_dr.lab.supervisor import Lab


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
        say("6. Tear the lab down", "every process it started is stopped, by pid")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
