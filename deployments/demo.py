"""`make demo`: the embedded lab fleet, walked through step by step, narrated.

What it shows today (the foundation): a fleet of 3 data centres in 2 countries comes up
on 127.0.0.1; its inventory passes the checks; a client is served through the front
door while the workload writes to every client; an app server loses power and its
clients go dark; it is healed and they come back; every app server is mirrored to
its on-site and off-site mirrors, the workload writes, an incremental mirror sends
only the changes (per-client table: bytes, time, RPO on each mirror) and one
snapshot is verified by re-reading its data.

Then the outage story, the runbooks for real (:data:`OUTAGE_STEPS`, one function per
step, each naming the Prefect UI page to open): ``ppo-dr serve`` starts a local Prefect
server and serves every deployment; in this story Cape Town's servers are full, so a
failover there needs a new server; an app server in Johannesburg loses power; the probe
declares ONE incident naming its clients; the escalation pages level 1 (SMS and e-mail,
from the outbox) and starts the failover runbook (else the demo starts it, under the
same idempotency key), escalates to level 2, posts on X and e-mails the clients'
contacts; the failover plans and pauses; the on-call approves with
``ppo-dr failover approve``; the run provisions a new app server in Cape Town through
the lab provider, restores every client from its freshest verified snapshot, verifies,
switches and re-mirrors; each client answers through the front door from its new home
(``X-PPO-Server`` before and after); an incremental mirror of the new home follows the
placements. The dead server never comes back by itself, so the probe cannot call the
incident recovered: the on-call puts the server under maintenance and resolves the
incident; the escalation sends the resolved notices; the report is written (RTO,
snapshot age and acknowledged writes lost per client, printed). Then the server is
repaired and the clients go home by a planned migration, checked against the
workload log for zero lost acknowledged writes, and the stop-gap server is released.
Finally ``serve`` (and the server it started) and the lab are stopped, with no process
left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ppo_dr import config
from ppo_dr.channels import read_outbox
from ppo_dr.escalation import parse_key
from ppo_dr.failover.steps import JOURNAL
from ppo_dr.fleet_access import FleetAccess, client_path, mirror_targets
from ppo_dr.inventory import Fleet, load_fleet, summary
from ppo_dr.lab.supervisor import Lab
from ppo_dr.lab.workload import acked_seqs, lost_writes
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
from ppo_dr.providers.lab import LabProvider
from ppo_dr.store import FailoverResult, Incident, Store


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
        mirrored = walk_through(lab, lab_dir)
        return outage_walk_through(lab, lab_dir) or mirrored
    finally:
        say(f"{_next_step()}. Tear the lab down", "every process it started is stopped, by pid")
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
    access: FleetAccess, store: Store, fleet: Fleet, only: list[str] | None = None
) -> list[ServerSnapshot]:
    """One mirror run per server that hosts clients (what the mirror-fleet flow does each
    hour), or of the servers in *only*. Where a client lives is the store's placement
    (a failover moves clients), not fleet.yaml's first home."""
    placements = {p.client_id: p.server_id for p in store.placements()}
    homes = {c.id: placements.get(c.id, c.server) for c in fleet.clients}
    hosting = [s.id for s in fleet.servers if s.id in set(homes.values())]
    runs = []
    for server_id in only if only is not None else hosting:
        run = snapshot_app_server(access, server_id, placements=placements)
        record_in_catalogue(store, run)
        checks = verify_new_snapshots(access, store, run)
        sent = total_sent(run)
        print(
            f"  {server_id}: {len(run.clients)} client(s) in {run.duration_s:.1f} s; "
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


# --------------------------------------------------------------------------- the outage

#: Steps shown before the outage story (1-9); the story's steps number on from here.
_STEPS_BEFORE_OUTAGE = 9
_step_counter = [_STEPS_BEFORE_OUTAGE]
#: Limits for what the story waits for: generous, a shared 2-core machine is slow.
SERVE_TIMEOUT_S = 180.0
DECLARE_TIMEOUT_S = 120.0
NOTICE_TIMEOUT_S = 120.0
RESOLVE_TIMEOUT_S = 180.0
FAILOVER_TIMEOUT_S = 300.0
APPROVAL_NOTICE_TIMEOUT_S = 30.0


def _next_step() -> int:
    _step_counter[0] += 1
    return _step_counter[0]


@dataclass
class OutageDemo:
    """What the outage steps share: the lab, the served Prefect API, the incident."""

    lab: Lab
    fleet: Fleet
    store: Store
    home: Path
    victim: str
    clients: list[str]
    serve: subprocess.Popen[bytes] | None = None
    serve_log: Path | None = None
    api_url: str = ""
    server_pid: int | None = None
    incident: Incident | None = None
    fault_at: datetime | None = None
    escalation_run_id: str = ""
    shown: set[str] = field(default_factory=set)
    served_by: dict[str, str] = field(default_factory=dict)  # before the power cut
    failover_run_id: str = ""
    plan_id: str = ""
    new_home: str = ""
    window_id: str = ""  # the maintenance window of the dead server's repair

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def outbox(self) -> Path:
        return Path(self.fleet.channels.outbox or self.lab.directory / "outbox.jsonl")

    @property
    def incident_id(self) -> int:
        assert self.incident is not None, "the probe has not declared the incident yet"
        return self.incident.id

    def step(self, title: str, text: str = "") -> None:
        say(f"{_next_step()}. {title}", text)

    def ui(self, page: str, path: str = "") -> None:
        print(f"   Prefect UI: {page}  ->  {self.ui_url}{path}")

    def notices(self) -> list[dict[str, Any]]:
        """The outbox lines of this incident, oldest first."""
        if self.incident is None:
            return []
        out = []
        for line in read_outbox(self.outbox):
            key = parse_key(line.get("key", ""))
            if key is not None and key.incident_id == self.incident.id:
                out.append({**line, "step": key.step})
        return out

    def show_new(self, steps: Callable[[str], bool]) -> list[dict[str, Any]]:
        """Print (once) the incident's messages whose step passes *steps*."""
        fresh = [n for n in self.notices() if steps(n["step"]) and n["key"] not in self.shown]
        for n in fresh:
            self.shown.add(n["key"])
            text = n.get("body") if n["channel"] == "x" else n.get("subject") or n.get("body")
            first = (str(text or "").splitlines() or [""])[0][:100]
            print(f"   outbox: {n['channel']:5} to {n['recipient']:28} {first}")
        return fresh

    def run_url(self, flow_run_id: str) -> str:
        return f"/runs/flow-run/{flow_run_id}"


@contextlib.contextmanager
def _api(api_url: str) -> Iterator[Any]:
    """A Prefect client for the served API (this process has no PREFECT_API_URL)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _await(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {what} did not happen within {timeout:.0f} s")
        time.sleep(0.5)


def _running_probe_run(client: Any) -> Any:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["probe-fleet"])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
        ),
    )
    return runs[0] if runs else None


def start_serve(demo: OutageDemo) -> None:
    """``ppo-dr serve`` in a subprocess: a local Prefect server and every deployment."""
    demo.step(
        "Start ppo-dr serve: a local Prefect server and every runbook's deployment",
        "the same command an operator runs; its own Prefect database under the demo lab",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PPO_DR_"))}
    env |= {"PPO_DR_HOME": str(demo.home), "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    demo.serve_log = demo.home / "logs" / "serve.log"
    demo.serve_log.parent.mkdir(parents=True, exist_ok=True)
    with demo.serve_log.open("wb") as log:
        demo.serve = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--fleet", str(demo.lab.fleet_file)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state_file = demo.home / "prefect" / "serve.json"

    def serving() -> bool:
        if demo.serve is not None and demo.serve.poll() is not None:
            raise SystemExit(f"demo: ppo-dr serve exited; see {demo.serve_log}")
        text = demo.serve_log.read_text(encoding="utf-8", errors="replace")  # type: ignore[union-attr]
        return "serving; Ctrl-C stops" in text and state_file.exists()

    started = time.monotonic()
    _await("ppo-dr serve", serving, SERVE_TIMEOUT_S)
    state = json.loads(state_file.read_text(encoding="utf-8"))
    demo.api_url, demo.server_pid = state["api_url"], state.get("server_pid")
    print(
        f"serving after {time.monotonic() - started:.0f} s: Prefect server pid "
        f"{demo.server_pid}, API {demo.api_url}; serve's log {demo.serve_log}"
    )
    with _api(demo.api_url) as client:
        # The mirror was shown above: pause the scheduled runbooks other than the
        # probe's (with fast timings the mirror runs every minute), so the outage story
        # has this machine to itself. The UI shows them paused; on-demand ones stay.
        paused = []
        for deployment in client.read_deployments():
            if deployment.schedules and deployment.name not in ("probe-fleet", "probe-watchdog"):
                client.pause_deployment(deployment.id)
                paused.append(deployment.name)
        print(f"paused for the story: {', '.join(sorted(paused)) or 'nothing'}")
        from prefect.deployments import run_deployment

        with contextlib.suppress(Exception):  # a scheduled run may have started it already
            run_deployment("probe-fleet/probe-fleet", timeout=0, parameters={"period_s": 900})
        run = _await("a running probe-fleet run", lambda: _running_probe_run(client), 120)
    print(
        f"the probe runs: flow run {run.name} checks every server and client every "
        f"{demo.fleet.timing.probe_interval} s"
    )
    demo.ui("Deployments (probe-fleet, escalation, probe-watchdog, ...)", "/deployments")
    demo.ui(f"Runs -> probe-fleet / {run.name}", demo.run_url(str(run.id)))


def set_scene(demo: OutageDemo) -> None:
    """Make Cape Town full, so the failover shows provisioning, not just a spare."""
    full = make_cape_town_full(demo)
    demo.step(
        "The scene: Cape Town has no room left",
        f"the demo sets capacity.clients in fleet.yaml to what each server holds ({full}),\n"
        "so a failover to Cape Town must provision a new server (the planner takes existing\n"
        "servers with room first)",
    )


def power_kill(demo: OutageDemo) -> None:
    demo.step(
        f"Power loss on {demo.victim} (kill -9)",
        f"its clients: {', '.join(demo.clients)}; the outage threshold is "
        f"{demo.fleet.timing.outage_threshold} s of continuous failure",
    )
    for client_id in demo.clients:
        demo.served_by[client_id] = get(demo.fleet.client(client_id).url.rstrip("/") + "/health")[1]
    demo.fault_at = datetime.now(UTC)
    demo.lab.break_(demo.victim, "power")
    print(f"killed at {demo.fault_at:%H:%M:%S} UTC")


def probe_declares(demo: OutageDemo) -> None:
    key = f"outage:server:{demo.victim}"

    def declared() -> list[Incident]:
        return [i for i in demo.store.incidents(kind="outage") if i.dedupe_key == key]

    [incident] = _await("the outage to be declared", declared, DECLARE_TIMEOUT_S)
    demo.incident = incident
    after = (incident.opened_at - demo.fault_at).total_seconds() if demo.fault_at else 0.0
    demo.step(
        f"The probe declares ONE incident: #{incident.id}",
        f"{incident.title}\nclients named: {', '.join(incident.scope.get('clients', []))} "
        f"(one incident for the server, not one per client); declared {after:.1f} s "
        f"after the power cut (threshold {demo.fleet.timing.outage_threshold} s)",
    )
    probe_run = next((e.flow_run_id for e in demo.store.timeline(incident.id) if e.flow_run_id), "")
    demo.ui("Runs -> probe-fleet (its logs show up -> pending -> down)", demo.run_url(probe_run))
    print(f"   or: ppo-dr incident show {incident.id}")


def level_one_paged(demo: OutageDemo) -> None:
    level = demo.fleet.escalation.levels[0] if demo.fleet.escalation else None
    demo.step(
        "The escalation pages level 1: SMS and e-mail at once",
        f"level 1 ({level.name if level else '?'}): {', '.join(level.notify) if level else ''}",
    )
    _await(
        "the level-1 page",
        lambda: demo.show_new(lambda s: s.startswith("page.") and s.endswith(".l1")),
        NOTICE_TIMEOUT_S,
    )
    time.sleep(2)  # both channels of every person
    demo.show_new(lambda s: s.startswith("page.") and s.endswith(".l1"))
    started = [
        e for e in demo.store.timeline(demo.incident_id) if "escalation_flow_run_id" in e.data
    ]
    if started:
        demo.escalation_run_id = started[0].data["escalation_flow_run_id"]
        demo.ui(
            f"Runs -> escalation-incident-{demo.incident_id} (Paused: waiting for an ack;"
            " 'Resume' is the ack form)",
            demo.run_url(demo.escalation_run_id),
        )


def escalates(demo: OutageDemo) -> None:
    level = demo.fleet.escalation.levels[0] if demo.fleet.escalation else None
    demo.step(
        "Nobody acknowledges: the escalation pages level 2",
        f"level 1's deadline is {level.ack_deadline if level else '?'} s "
        f"(ack with: ppo-dr incident ack {demo.incident_id} --by NAME, or Resume in the UI)",
    )
    _await(
        "the level-2 page",
        lambda: demo.show_new(lambda s: s.startswith("page.") and s.endswith(".l2")),
        NOTICE_TIMEOUT_S,
    )
    time.sleep(2)
    demo.show_new(lambda s: s.startswith("page.") and s.endswith(".l2"))
    demo.ui(
        f"Runs -> escalation-incident-{demo.incident_id}: its send-notice task runs",
        demo.run_url(demo.escalation_run_id) if demo.escalation_run_id else "/runs",
    )


def posts_to_x(demo: OutageDemo) -> None:
    after = demo.fleet.escalation.public_after if demo.fleet.escalation else "?"
    demo.step(
        "Users are told on X",
        f"after public_after ({after} s): Statuspage words, no client or host names",
    )
    _await("the X post", lambda: demo.show_new(lambda s: s.startswith("public-")), NOTICE_TIMEOUT_S)


def emails_clients(demo: OutageDemo) -> None:
    after = demo.fleet.escalation.clients_after if demo.fleet.escalation else "?"
    demo.step(
        "The affected clients' key contacts get an e-mail",
        f"after clients_after ({after} s), only the contacts of {', '.join(demo.clients)}",
    )
    _await(
        "the client e-mails",
        lambda: demo.show_new(lambda s: s == "clients"),
        NOTICE_TIMEOUT_S,
    )


def start_failover(demo: OutageDemo) -> None:
    """The failover run of the incident: the one the escalation started (it does so
    for a server or DC outage, right after paging level 1), else the demo starts it,
    under the same idempotency key, so there is only ever one. The lab's policy has
    ``auto_failover: false``: the run plans, then pauses for a person's approval."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    with _api(demo.api_url) as client:
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

        now = _await("the failover run to pause for approval", paused, FAILOVER_TIMEOUT_S)
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
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterTags,
    )

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["failover"])),
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"incident:{incident_id}"])),
    )
    return runs[0] if runs else None


def make_cape_town_full(demo: OutageDemo) -> str:
    """Set capacity.clients of cpt1's app and spare servers to what they hold now, so
    the planner (existing servers before new ones) has to provision a new server there."""
    import yaml

    from ppo_dr.lab.topology import FLEET_HEADER, write_yaml

    path = demo.lab.fleet_file
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    placed = {p.client_id: p.server_id for p in demo.store.placements()}
    homes = {c.id: placed.get(c.id, c.server) for c in demo.fleet.clients}
    full = []
    for entry in data["servers"]:
        if entry["dc"] == "cpt1" and entry["role"] in ("app", "spare"):
            held = sum(1 for home in homes.values() if home == entry["id"])
            entry["capacity"]["clients"] = held
            full.append(f"{entry['id']} {held}/{held}")
    tmp = path.with_name(".fleet.demo.yaml")
    write_yaml(tmp, data, FLEET_HEADER)
    load_fleet(tmp)  # still a valid fleet
    tmp.replace(path)
    return ", ".join(full)


def plan_text(demo: OutageDemo) -> str:
    """The plan as ``ppo-dr failover plan`` prints it, from the run's artifact."""
    with _api(demo.api_url) as client:
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


def ppo(demo: OutageDemo, *args: str) -> str:
    """Run one ``ppo-dr`` command as an operator would, print it and its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PPO_DR_"))}
    env |= {"PPO_DR_HOME": str(demo.home), "PPO_DR_FLEET": str(demo.lab.fleet_file)}
    print(f"   $ ppo-dr {' '.join(_quote(a) for a in args)}")
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = (done.stdout + done.stderr).strip()
    for line in out.splitlines():
        print(f"     {line}")
    if done.returncode != 0:
        raise SystemExit(f"demo: `ppo-dr {' '.join(args)}` failed (exit {done.returncode})")
    return out


def _quote(arg: str) -> str:
    return f"'{arg}'" if " " in arg else arg


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
    with _api(demo.api_url) as client:

        def finished() -> Any:
            now = client.read_flow_run(demo.failover_run_id)
            return now if now.state is not None and now.state.is_final() else None

        run = _await("the failover", finished, FAILOVER_TIMEOUT_S)
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
        runs = mirror_every_app_server(access, demo.store, fleet, only=[demo.new_home])
        mirror_table(runs, demo.store, fleet)


def operator_resolves(demo: OutageDemo) -> None:
    demo.step(
        f"The on-call resolves incident #{demo.incident_id}; {demo.victim} goes to repair",
        f"the probe cannot call it recovered: it watches {demo.victim} too, and that stays\n"
        "dead until someone fixes it. The service is back (every client answers from its\n"
        "new home), so a person resolves the incident, and puts the dead server under\n"
        "maintenance so its repair pages nobody",
    )
    opened = ppo(
        demo,
        "maintenance",
        "start",
        "--server",
        demo.victim,
        "--for",
        "2h",
        "--reason",
        "power supply repair after the outage",
        "--by",
        "sipho",
    )
    demo.window_id = opened.split(":", 1)[0].rsplit(" ", 1)[-1]
    ppo(
        demo,
        "incident",
        "annotate",
        str(demo.incident_id),
        "--cause",
        f"power loss of {demo.victim}",
        "--measures",
        f"clients failed over to {demo.new_home} (cpt1) from the mirrors",
        "--prevention",
        "dual power feeds for the jhb1 app servers",
    )
    ppo(
        demo,
        "incident",
        "resolve",
        str(demo.incident_id),
        "--by",
        "sipho",
        "--note",
        f"every client serving from {demo.new_home}",
    )


def resolved_notices(demo: OutageDemo) -> None:
    demo.step(
        "The escalation ends and tells everyone it is over",
        "it sees the resolution at its next wake-up: the resolved notices, the report artifact",
    )

    def resolved() -> bool:
        now = demo.store.incident(demo.incident_id)
        return now is not None and now.state == "resolved"

    _await("the resolution", resolved, RESOLVE_TIMEOUT_S)

    def resolved_sent() -> bool:
        return any("resolved" in n["step"] for n in demo.notices())

    _await("the resolved notices", resolved_sent, NOTICE_TIMEOUT_S)
    time.sleep(3)  # every recipient's
    demo.show_new(lambda s: "resolved" in s)


def write_report(demo: OutageDemo) -> None:
    demo.step(
        "The incident report, as the on-call writes it",
        "cause, measures, prevention, timeline, detection/ack/resolution times, notices and,\n"
        "per client, where it went, RTO, snapshot age and the acknowledged writes lost",
    )
    out = demo.lab.directory / "reports"
    out.mkdir(parents=True, exist_ok=True)
    markdown, html = (
        out / f"incident-{demo.incident_id}.md",
        out / f"incident-{demo.incident_id}.html",
    )
    for path in (markdown, html):
        ppo(demo, "incident", "report", str(demo.incident_id), "-o", str(path))
    print(f"report written: {markdown}\n                {html}")
    print("\nper client (the failover ledger the report reads):")
    print_failover_table(failover_rows(demo))
    record = demo.store.failover(demo.plan_id)
    approved = [e for e in demo.store.timeline(demo.incident_id) if e.kind == "failover-approval"]
    if record is not None and approved:
        waited = (approved[0].at - record.declared_at).total_seconds()
        print(f"   (each RTO includes the {waited:.0f} s from the declaration to the approval)")
    demo.ui(
        f"Artifacts -> incident-{demo.incident_id}-report (published by the escalation run)",
        "/artifacts",
    )


def heal_for_migration(demo: OutageDemo) -> None:
    demo.step(
        f"{demo.victim} is repaired (power restored, same disk)",
        f"the operator's choice: move the clients back to {demo.victim} rather than keep them\n"
        "on the stop-gap server. Johannesburg is where they were placed (near their users,\n"
        "next to their on-site mirror), and the stop-gap server can then be released",
    )
    started = time.monotonic()
    demo.lab.heal(demo.victim)
    url = f"http://127.0.0.1:{demo.fleet.server(demo.victim).http.port}/health"  # type: ignore[union-attr]
    wait_for(lambda: get(url)[0] == 200, 30, f"{demo.victim} answering")
    took = time.monotonic() - started
    print(f"{demo.victim} answers again after {took:.1f} s; it serves no client yet")
    ppo(demo, "maintenance", "end", demo.window_id)


def migrate_back(demo: OutageDemo) -> None:
    demo.step(
        f"Planned migration back: {demo.new_home} -> {demo.victim}, no acknowledged write lost",
        "maintenance window on, each client frozen (its app refuses writes with a clear 503),\n"
        "final incremental sync, restore, verify, switch, unfreeze; pre-approved (--approve)",
    )
    acks = demo.lab.directory / "workload" / "acks.jsonl"
    fleet = load_fleet(demo.lab.fleet_file)
    lost_before = {
        c: set(journal_losses(demo, fleet, acks, c, demo.new_home)) for c in demo.clients
    }
    acked_before = {c: len(acked_seqs(acks, c)) for c in demo.clients}
    refused_before = workload_counts(demo.lab.directory)
    known = {r.plan_id for r in demo.store.failovers()}
    ppo(
        demo,
        "failover",
        "run",
        "--mode",
        "planned",
        "--server",
        demo.new_home,
        "--to-server",
        demo.victim,
        "--approve",
    )
    started = time.monotonic()

    def finished() -> Any:
        fresh = [r for r in demo.store.failovers() if r.plan_id not in known]
        return fresh[0] if fresh and fresh[0].finished_at is not None else None

    record = _await("the migration", finished, FAILOVER_TIMEOUT_S)
    print(
        f"migration {record.plan_id[:12]}: {record.state} after {time.monotonic() - started:.0f} s"
    )
    if record.state != "done":
        raise SystemExit(f"demo: the migration did not complete: {record.detail}")
    fleet = load_fleet(demo.lab.fleet_file)
    refused_after = workload_counts(demo.lab.directory)
    print(
        f"\n   {'client':22} {'served by':12} {'acked during':>12} {'refused (frozen)':>16} "
        f"{'lost by the move':>16}"
    )
    new_losses = 0
    for client_id in demo.clients:
        status, server = get(fleet.client(client_id).url.rstrip("/") + "/health")
        lost = (
            set(journal_losses(demo, fleet, acks, client_id, demo.victim)) - lost_before[client_id]
        )
        new_losses += len(lost)
        acked = len(acked_seqs(acks, client_id)) - acked_before[client_id]
        refused = total(refused_after, "failures", [client_id]) - total(
            refused_before, "failures", [client_id]
        )
        print(f"   {client_id:22} {server:12} {acked:>12} {refused:>16} {len(lost):>16}")
        if status != 200 or server != demo.victim:
            raise SystemExit(f"demo: {client_id} is not served by {demo.victim}: {status}")
    print(
        f"checked against the workload log: {new_losses} acknowledged write(s) lost by the "
        "migration (every write the app acknowledged is in the journal on "
        f"{demo.victim})"
    )
    if new_losses:
        raise SystemExit("demo: the planned migration lost acknowledged writes")
    runs = [r for r in demo.store.failovers() if r.plan_id == record.plan_id]
    if runs and runs[0].flow_run_id:
        demo.ui(
            f"Runs -> migrate-{record.plan_id[:12]} (the planned run; tag mode:planned)",
            demo.run_url(runs[0].flow_run_id),
        )


def journal_losses(
    demo: OutageDemo, fleet: Fleet, acks: Path, client_id: str, server_id: str
) -> list[int]:
    """The client's acknowledged writes missing from its journal on *server_id*'s disk."""
    path = client_path(fleet, client_id, server_id=server_id).lstrip("/")
    journal = demo.lab.server_dir(server_id) / "fs" / path / JOURNAL
    return lost_writes(acks, client_id, journal.read_bytes().splitlines())


def release_temporary_server(demo: OutageDemo) -> None:
    demo.step(
        f"Release {demo.new_home}: no client lives there any more",
        "the lab provider stops it and forgets it (front door route, known_hosts, fleet.yaml)",
    )
    dc = load_fleet(demo.lab.fleet_file).server(demo.new_home).dc
    LabProvider(dc, lab_dir=demo.lab.directory).release(demo.new_home)
    left = [s.id for s in load_fleet(demo.lab.fleet_file).servers if s.id == demo.new_home]
    print(f"{demo.new_home} {'STILL LISTED' if left else 'released'}")


#: The outage story, in order. A step is a function of the shared :class:`OutageDemo`.
OUTAGE_STEPS: list[Callable[[OutageDemo], None]] = [
    start_serve,
    set_scene,
    power_kill,
    probe_declares,
    level_one_paged,
    escalates,
    start_failover,
    approve_failover,
    posts_to_x,
    emails_clients,
    failover_done,
    clients_healthy,
    mirror_new_home,
    operator_resolves,
    resolved_notices,
    write_report,
    heal_for_migration,
    migrate_back,
    release_temporary_server,
]


def stop_serve(demo: OutageDemo) -> None:
    """Ctrl-C to serve (it pauses the deployments and stops its server); then check."""
    if demo.serve is None:
        return
    if demo.serve.poll() is None:
        demo.serve.send_signal(signal.SIGINT)
        try:
            demo.serve.wait(timeout=90)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.serve.pid, signal.SIGKILL)
            demo.serve.wait(timeout=30)
    left = [p for p in (demo.serve.pid, demo.server_pid) if p and _alive(p)]
    print(
        f"ppo-dr serve stopped (exit {demo.serve.returncode}); the Prefect server "
        f"{'is stopped too' if not left else f'STILL RUNNING: {left}'}"
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def outage_walk_through(lab: Lab, lab_dir: Path) -> int:
    """The outage story (:data:`OUTAGE_STEPS`); serve is always stopped at the end."""
    fleet = load_fleet(lab.fleet_file)
    victim = fleet.servers_by_role("app")[0].id
    with Store.open(store_url(fleet)) as store:
        demo = OutageDemo(
            lab, fleet, store, lab_dir / "serve", victim, [c.id for c in fleet.clients_on(victim)]
        )
        try:
            for run_step in OUTAGE_STEPS:
                run_step(demo)
        finally:
            lab.heal(victim)
            demo.step("Stop ppo-dr serve", "Ctrl-C: it pauses the deployments, stops its server")
            stop_serve(demo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
