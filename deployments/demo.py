"""`make demo`: the embedded lab fleet, walked through step by step, narrated.

What it shows today (the foundation): a fleet of 3 data centres in 2 countries comes up
on 127.0.0.1; its inventory passes the checks; a client is served through the front
door while the workload writes to every client; an app server loses power and its
clients go dark; it is healed and they come back; every app server is mirrored to
its on-site and off-site mirrors, the workload writes, an incremental mirror sends
only the changes (per-client table: bytes, time, RPO on each mirror) and one
snapshot is verified by re-reading its data.

Then the outage story, the probe and escalation runbooks for real (:data:`OUTAGE_STEPS`,
one function per step): ``ppo-dr serve`` starts a local Prefect server and serves every
deployment; an app server loses power; the probe flow declares ONE incident naming its
clients; the escalation flow pages level 1 (SMS and e-mail, from the outbox), escalates
to level 2, posts the public status on X and e-mails the clients' contacts; the server
is healed, the probe sees it recover, the escalation resolves the incident and sends
the resolved notices; the incident report is written (Markdown and HTML) and its path
printed. Each step names the Prefect UI page to open. Finally ``serve`` (and the server
it started) and the lab are stopped, with no process left behind.
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
from ppo_dr.reports import build_report, report_html, report_markdown
from ppo_dr.store import Incident, Store


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


# --------------------------------------------------------------------------- the outage

#: Steps shown before the outage story (1-9); the story's steps number on from here.
_STEPS_BEFORE_OUTAGE = 9
_step_counter = [_STEPS_BEFORE_OUTAGE]
#: Limits for what the story waits for: generous, a shared 2-core machine is slow.
SERVE_TIMEOUT_S = 180.0
DECLARE_TIMEOUT_S = 120.0
NOTICE_TIMEOUT_S = 120.0
RESOLVE_TIMEOUT_S = 180.0


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
            [sys.executable, "-m", "deployments.cli", "serve", "--fleet", str(demo.lab.fleet_file)],
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


def power_kill(demo: OutageDemo) -> None:
    demo.step(
        f"Power loss on {demo.victim} (kill -9)",
        f"its clients: {', '.join(demo.clients)}; the outage threshold is "
        f"{demo.fleet.timing.outage_threshold} s of continuous failure",
    )
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


def heal(demo: OutageDemo) -> None:
    demo.step(f"Heal {demo.victim} (power restored, same disk)")
    demo.lab.heal(demo.victim)

    def recovered() -> bool:
        now = demo.store.incident(demo.incident_id)
        return now is not None and now.recovered_at is not None

    started = time.monotonic()
    _await("the recovery", recovered, NOTICE_TIMEOUT_S)
    print(
        f"{time.monotonic() - started:.0f} s later the probe has seen "
        f"{demo.fleet.timing.recovery_successes} successes in a row: incident "
        f"#{demo.incident_id} recovered (paging stops; the public status says 'monitoring')"
    )


def resolved_notices(demo: OutageDemo) -> None:
    demo.step(
        "The escalation resolves the incident and tells everyone",
        "after a settle period without a relapse; paging stopped at the recovery",
    )

    def resolved() -> bool:
        now = demo.store.incident(demo.incident_id)
        return now is not None and now.state == "resolved"

    _await("the resolution", resolved, RESOLVE_TIMEOUT_S)

    def resolved_sent() -> bool:
        return any("resolved" in n["step"] for n in demo.notices())

    _await("the resolved notices", resolved_sent, NOTICE_TIMEOUT_S)
    time.sleep(3)  # every recipient's
    demo.show_new(lambda s: True)  # the public updates since, then the resolved ones


def write_report(demo: OutageDemo) -> None:
    demo.step("The incident report", "timeline, detection/ack/resolution times, notices")
    inc = demo.store.incident(demo.incident_id)
    assert inc is not None
    report = build_report(
        inc,
        demo.store.timeline(inc.id),
        demo.store.notices(inc.id),
        client_names={c.id: c.name for c in demo.fleet.clients},
        client_contacts={c.id: [k.email for k in c.contacts] for c in demo.fleet.clients},
    )
    out = demo.lab.directory / "reports"
    out.mkdir(parents=True, exist_ok=True)
    markdown, html = out / f"incident-{inc.id}.md", out / f"incident-{inc.id}.html"
    markdown.write_text(report_markdown(report), encoding="utf-8")
    html.write_text(report_html(report), encoding="utf-8")
    print(f"report written: {markdown}\n                {html}")
    demo.ui(
        f"Artifacts -> incident-{inc.id}-report (published by the escalation run)", "/artifacts"
    )


#: The outage story, in order. A step is a function of the shared :class:`OutageDemo`;
#: insert new ones where they belong (a failover goes between ``escalates`` and ``heal``).
OUTAGE_STEPS: list[Callable[[OutageDemo], None]] = [
    start_serve,
    power_kill,
    probe_declares,
    level_one_paged,
    escalates,
    posts_to_x,
    emails_clients,
    heal,
    resolved_notices,
    write_report,
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
