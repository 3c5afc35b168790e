"""A failover run that died: the incident's timeline entry and the page (pure + delivery).

A failover run can end without doing what it was asked in ways its own code never
sees: crashed (the process died), timed out, cancelled from the UI, or failed with an
exception. Its flow hooks (``flows/failover.py``) call :func:`record_failover_death`,
so the people on call hear of it at once instead of finding a dead run in the UI
while the clients stay down. One notice per person and channel per run (the run id is
in the step, so a later run that dies pages again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ppo_dr.channels.base import Channel, MessageChannel
from ppo_dr.escalation import IncidentView, NoticeIntent, notice_key, on_call
from ppo_dr.inventory import Fleet, Person
from ppo_dr.notify import DeliveryResult, address_for, deliver_or_fall_back
from ppo_dr.store import Store

#: Timeline kind of a failover run's death (the report shows it like any entry).
DEATH_KIND: Final = "failover-run-died"
#: SMS bodies are cut to this many characters (one segment and a bit).
_SMS_LIMIT: Final = 300


def death_notices(
    fleet: Fleet,
    incident: IncidentView,
    *,
    run_name: str,
    run_id: str,
    state: str,
    message: str,
) -> list[NoticeIntent]:
    """The page about a dead failover run: to everyone on call for the incident."""
    if fleet.escalation is None or incident.resolved_at is not None:
        return []
    people: Mapping[str, Person] = {p.id: p for p in fleet.people}
    step = f"failover-died-{run_id}"
    subject = f"[ppo-dr] incident {incident.id}: failover run {run_name} {state}"
    sms = (
        f"ppo-dr #{incident.id}: failover run {run_name} ended {state}: {message}. "
        f"Clients may still be down: ppo-dr incident show {incident.id}"
    )
    email = (
        f"Incident {incident.id}: {incident.title}\n\n"
        f"The failover run {run_name} (id {run_id}) ended {state}:\n  {message}\n\n"
        f"What it did is in the incident's timeline (ppo-dr incident show {incident.id}); "
        f"rerunning the same plan finishes it without restoring any client twice.\n"
    )
    out: list[NoticeIntent] = []
    for person_id, channel in on_call(fleet.escalation, incident, people):
        body = sms[: _SMS_LIMIT - 1] + "…" if channel == "sms" and len(sms) > _SMS_LIMIT else sms
        out.append(
            NoticeIntent(
                notice_key(incident.id, step, person_id, channel),
                step,
                channel,
                person_id,
                subject,
                body if channel == "sms" else email,
            )
        )
    return out


def record_failover_death(
    store: Store,
    fleet: Fleet,
    incident: IncidentView,
    channels: Mapping[MessageChannel, Channel],
    *,
    run_name: str,
    run_id: str,
    state: str,
    message: str,
) -> list[DeliveryResult]:
    """The timeline entry (always) and the page (while the incident is open)."""
    store.add_timeline(
        incident.id,
        DEATH_KIND,
        f"failover run {run_name} ended {state}: {message}",
        flow_run_id=run_id,
        data={"run": run_name, "state": state, "message": message},
    )
    people = {p.id: p for p in fleet.people}
    return [
        deliver_or_fall_back(
            store,
            intent,
            channels,
            incident_id=incident.id,
            address=address_for(intent, people),
        )
        for intent in death_notices(
            fleet, incident, run_name=run_name, run_id=run_id, state=state, message=message
        )
    ]
