"""``channel-errors`` on a running lab: page one incident through failing stand-ins.

Starts the lab's stand-in (:mod:`ppo_dr.lab.standin`) in ``<lab>/chaos/standin``,
scripts it (:data:`~ppo_dr.lab.chaos.channel_errors.SCRIPT`), writes the fault's copy
of the fleet (``<lab>/chaos/fleet-standin.yaml``: the lab's, with every channel on the
stand-in and pages by SMS only), opens a ``test`` incident in the lab's store and runs
the served ``escalation`` deployment for it with that fleet file, so the runbook
pages exactly as in production, through boto3, sendgrid and tweepy. Once every notice
has settled and X has been posted to, the on-call resolves the incident; the run
sends the resolved notices and ends. Then the stand-in's log and the store's notices
are judged by :func:`~ppo_dr.lab.chaos.channel_errors.judge_channel_errors`.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import yaml

from ppo_dr.errors import DRError, LabError
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.chaos.catalogue import FaultSpec
from ppo_dr.lab.chaos.channel_errors import (
    SCRIPT,
    ChannelObservation,
    SentNotice,
    judge_channel_errors,
    standin_fleet,
)
from ppo_dr.lab.chaos.fleets import ChaosFleet
from ppo_dr.lab.chaos.verdict import ChaosResult
from ppo_dr.lab.processes import spawn_detached
from ppo_dr.lab.standin import STATE_NAME, read_requests
from ppo_dr.waiting import poll

if TYPE_CHECKING:
    from ppo_dr.lab.chaos.runner import ChaosRun

ESCALATION_DEPLOYMENT = "escalation/escalation"
STANDIN_STARTS_S = 30.0
#: Incident opened to every notice settled and X posted (three providers, each through
#: 1 + 4 + 15 s of back-off and one 10 s time-out, one after the other, plus level 2).
SETTLE_S = 300.0
#: Resolved to the escalation run's end (it wakes at its next deadline, at most 40 s).
ENDS_S = 240.0


def _start_standin(directory: Path, fleet: ChaosFleet) -> tuple[subprocess.Popen[bytes], str]:
    """The stand-in process and its URL, once it answers; its old log cleared. It listens
    where the lab's public addresses are: the runbooks reach it as they would the
    vendors' APIs (on the distributed lab, from the workers in the DCs)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in (STATE_NAME, "requests.jsonl"):
        (directory / name).unlink(missing_ok=True)
    with (directory / "standin.log").open("ab") as log:
        host = fleet.front_door_host
        argv = [sys.executable, "-m", "ppo_dr.lab.standin", "--dir", str(directory)]
        process = spawn_detached(fleet.public_argv([*argv, "--host", host]), dict(os.environ), log)
    state = directory / STATE_NAME
    if not poll(state.exists, STANDIN_STARTS_S, every=0.2):
        process.kill()
        raise LabError(f"the stand-in did not start within {STANDIN_STARTS_S:.0f} s")
    port = int(json.loads(state.read_text(encoding="utf-8"))["port"])
    return process, f"http://{host}:{port}"


def _script(url: str, fleet: ChaosFleet) -> None:
    """Give the stand-in the fault's script (``POST /_script``)."""

    def post() -> int:
        connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
        try:
            connection.request(
                "POST", "/_script", json.dumps(SCRIPT), {"Content-Type": "application/json"}
            )
            return connection.getresponse().status
        finally:
            connection.close()

    try:
        status = fleet.reach_front_door(post)
    except (OSError, http.client.HTTPException) as exc:
        raise LabError(f"the stand-in at {url} cannot be scripted: {exc}") from exc
    if status != 204:
        raise LabError(f"the stand-in refused the script ({status})")


def _notices(run: ChaosRun, incident_id: int) -> tuple[SentNotice, ...]:
    """The incident's notices, each with the address its provider was given."""
    people = {p.id: p for p in load_fleet(run.fleet.fleet_file).people}
    out = []
    for n in run.store.notices(incident_id):
        person = people.get(n.recipient)
        address = {"email": person.email, "sms": person.sms}.get(n.channel) if person else None
        out.append(
            SentNotice(
                n.idempotency_key, n.step, n.channel, n.recipient, address or n.recipient,
                n.status, n.attempts, n.receipt,
            )
        )  # fmt: skip
    return tuple(out)


def _page_through_standin(
    run: ChaosRun, obs: ChannelObservation, fleet_copy: Path
) -> ChannelObservation:
    """Open the incident, run its escalation with *fleet_copy*, resolve once settled."""
    incident, _ = run.store.open_incident(
        "test",
        f"chaos/channel-errors/{datetime.now(UTC).isoformat()}",
        "chaos: channel-errors (SMS, e-mail and X providers failing)",
        {},
        severity="minor",
    )
    run.side_incidents.add(incident.id)  # not a fault's beside it to judge or resolve
    obs = replace(obs, incident_id=incident.id, opened_at=incident.opened_at)
    run.say(f"  incident #{incident.id} opened; escalation through the stand-in")
    ended: list[str] = []
    parameters = {"incident_id": incident.id, "fleet_file": str(fleet_copy)}
    runner = threading.Thread(
        target=lambda: ended.append(run.operator.run_to_end(ESCALATION_DEPLOYMENT, parameters)),
        daemon=True,
    )
    runner.start()

    def settled() -> bool:
        notices = run.store.notices(incident.id)
        posted = any(n.channel == "x" and n.status == "sent" for n in notices)
        return posted and all(n.status != "pending" for n in notices)

    if not poll(settled, SETTLE_S, every=2.0):
        obs = replace(obs, problems=(*obs.problems, f"notices not settled in {SETTLE_S:.0f} s"))
    resolved = run.store.resolve(incident.id, by="chaos", note="chaos run: channel-errors over")
    run.say("  incident resolved; waiting for the escalation run to end")
    runner.join(ENDS_S)
    return replace(
        obs, resolved_at=resolved.resolved_at, escalation_state=ended[0] if ended else None
    )


def exercise_channel_errors(run: ChaosRun, spec: FaultSpec) -> ChaosResult:
    """Page through the scripted stand-in, then judge its log against the notices."""
    lab = run.fleet.fleet_file.parent
    directory = lab / "chaos" / "standin"
    obs = ChannelObservation(fault=spec.name, incident_id=None, opened_at=None)
    standin = None
    try:
        standin, url = _start_standin(directory, run.fleet)
        _script(url, run.fleet)
        document = yaml.safe_load(run.fleet.fleet_file.read_text(encoding="utf-8"))
        fleet_copy = lab / "chaos" / "fleet-standin.yaml"
        fleet_copy.write_text(yaml.safe_dump(standin_fleet(document, url)), encoding="utf-8")
        load_fleet(fleet_copy)  # refused here, before anything pages, if it is not valid
        run.say(f"{spec.name}: stand-in at {url} scripted: {json.dumps(SCRIPT)}")
        obs = _page_through_standin(run, obs, fleet_copy)
    except DRError as exc:
        obs = replace(obs, problems=(*obs.problems, f"{type(exc).__name__}: {exc}"))
    finally:
        if standin is not None:
            standin.send_signal(signal.SIGTERM)
            standin.wait(STANDIN_STARTS_S)
    if obs.incident_id is not None:
        obs = replace(obs, notices=_notices(run, obs.incident_id))
    return judge_channel_errors(spec, replace(obs, requests=tuple(read_requests(directory))))
