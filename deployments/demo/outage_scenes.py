"""The outage scenes: Cape Town made full, a power loss, the probe's incident, the pages,
X and the clients' e-mails; then the on-call resolves it and the report is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from deployments.demo.failover_scenes import failover_rows, print_failover_table
from deployments.demo.narrator import get
from deployments.demo.session import (
    DECLARE_TIMEOUT_S,
    NOTICE_TIMEOUT_S,
    RESOLVE_TIMEOUT_S,
    OutageDemo,
    ppo,
)
from deployments.demo.waiting import wait_for
from ppo_dr.inventory import load_fleet
from ppo_dr.store import Incident


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

    [incident] = wait_for("the outage to be declared", declared, DECLARE_TIMEOUT_S)
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


def _page_to(level: int) -> Callable[[str], bool]:
    """The outbox steps of the page to escalation level *level*."""
    return lambda step: step.startswith("page.") and step.endswith(f".l{level}")


def _show_notices(
    demo: OutageDemo, what: str, steps: Callable[[str], bool], *, settle_s: float = 0.0
) -> None:
    """Wait for the incident's first *what* in the outbox and print it; then, after
    *settle_s*, the rest (every channel of every recipient)."""
    wait_for(what, lambda: demo.show_new(steps), NOTICE_TIMEOUT_S)
    if settle_s:
        time.sleep(settle_s)
        demo.show_new(steps)


def level_one_paged(demo: OutageDemo) -> None:
    level = demo.fleet.escalation.levels[0] if demo.fleet.escalation else None
    demo.step(
        "The escalation pages level 1: SMS and e-mail at once",
        f"level 1 ({level.name if level else '?'}): {', '.join(level.notify) if level else ''}",
    )
    _show_notices(demo, "the level-1 page", _page_to(1), settle_s=2)
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
    _show_notices(demo, "the level-2 page", _page_to(2), settle_s=2)
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
    _show_notices(demo, "the X post", lambda s: s.startswith("public-"))


def emails_clients(demo: OutageDemo) -> None:
    after = demo.fleet.escalation.clients_after if demo.fleet.escalation else "?"
    demo.step(
        "The affected clients' key contacts get an e-mail",
        f"after clients_after ({after} s), only the contacts of {', '.join(demo.clients)}",
    )
    _show_notices(demo, "the client e-mails", lambda s: s == "clients")


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

    wait_for("the resolution", resolved, RESOLVE_TIMEOUT_S)

    def resolved_sent() -> bool:
        return any("resolved" in n["step"] for n in demo.notices())

    wait_for("the resolved notices", resolved_sent, NOTICE_TIMEOUT_S)
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
