"""The escalation runbook: page people until someone takes the incident, keep users and
key clients informed while it lasts, tell everyone when it is over.

**escalation(incident_id)** -- one incident, as the on-call lead would run it:

1. read the fleet and the escalation policy; name the run ``escalation-incident-<id>``
   and tag it ``incident:<id>``;
2. loop: read the incident, its acknowledgements and the notices already sent from
   the store; :func:`ppo_dr.escalation.decide` says which notices are due now and when
   to look again; each notice is sent by a ``send-notice`` task (recorded under its
   key first, so a retried task or a restarted flow never sends twice; transient
   errors retried with back-off, then the person's other channel);
3. between decisions the run **pauses for input** (:class:`Ack`: who, note; see
   :func:`wait_for_ack`) until the
   next wake-up, at most :data:`RECHECK_S` seconds: acknowledge in the Prefect UI
   ("Resume" on the paused run) or with ``ppo-dr incident ack ID --by NAME``, which
   records the ack and resumes this run. A pause that times out simply loops: the
   decision escalates if the deadline passed. An ack, a resolve or a recovery recorded
   in the store by anyone is seen at the next wake-up. Once acknowledged the run does
   not pause again: its state is Running named **Acknowledged** (with who took it), its
   log says so, and it watches the store until the incident is resolved -- unless the
   ack is older than ``ack_timeout`` without a resolution: then paging starts again
   (a new epoch, :mod:`ppo_dr.escalation`) and the run pauses for a new ack;
4. **recovery**: once the probe marks the incident recovered, paging stops and the
   public status says "monitoring" (the pure decision); after a settle period of
   ``min(public_every, 300 s)`` without anyone resolving it, this flow resolves it
   ("auto-resolved after recovery"), which sends the resolved notices;
5. when the incident is resolved (``ppo-dr incident resolve``, auto-resolution) the
   last notices go out, the incident report is published as a markdown artifact
   (``incident-<id>-report``) and the run ends.

**Failover** (an outage of a whole server or DC: :func:`ppo_dr.escalation.failover_scope`):
right after level 1 has been paged, in the same wake-up, the run starts the ``failover``
deployment for the incident's server or DC, exactly once (idempotency key
``failover-<id>``), and records it on the timeline. After the page, not before it: the
page is what gets a person moving and must not wait on another API call; but in the
same wake-up, so the plan (which needs a few seconds of SSH checks) is ready by the time
someone reads the page, and no minute of RTO is spent waiting for an ack. Not once the
service is back (recovered) or resolved. The failover run plans, then runs at once
(``auto_failover``) or pauses for approval; the escalation reads its timeline entries
and tells the on-call (:func:`ppo_dr.escalation.failover_notices`): clients the plan
refused and why, the plan waiting for approval with the command and the UI page, or the
automatic failover under way. A missing failover deployment is a warning on the
timeline, not a crash.

**A test page**: ``escalation(test=True)`` (the deployment from the UI, no incident id)
opens an incident of kind ``test`` and pages **level 1 only**, no public post and no
client e-mail; it waits for an ack until the level's deadline, then resolves the test
incident (the people paged get the resolved notice, which shows the loop works).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.ack_pause import show_acknowledged, wait_for_ack
from ppo_dr import config
from ppo_dr.errors import DRError, PermanentError
from ppo_dr.escalation import (
    Decision,
    FailoverView,
    IncidentView,
    NoticeIntent,
    decide,
    failover_notices,
    failover_scope,
    fallback,
)
from ppo_dr.inventory import EscalationPolicy, Fleet
from ppo_dr.mirror.runbook import store_url
from tasks import label_flow_run
from tasks.escalation import (
    address_of,
    give_up_notice,
    note_timeline,
    open_channels,
    open_test_incident,
    read_failover,
    read_incident,
    record_ack_task,
    render_report,
    resolve_incident,
    send_notice,
    start_failover,
)
from tasks.inventory import load_fleet_task
from tasks.runs import escalation_run_name, run_stamp

#: Longest pause between two looks at the store: a resolve, a recovery or an ack
#: recorded without resuming this run (API down) is noticed within this time.
RECHECK_S: int = 30
#: Longest settle after recovery before the flow resolves the incident itself.
MAX_SETTLE_S: Final = 300
#: How soon to look again while a started failover has not planned yet: its plan (and
#: the approval notice) should reach the on-call seconds after it exists.
FAILOVER_RECHECK_S: Final = 5
#: "Far away" for a test page's public and client notices (never reached).
_NEVER_S: Final = 10 * 365 * 86400


def _run_name() -> str:
    incident_id = flow_run.parameters.get("incident_id")
    if isinstance(incident_id, int) and incident_id > 0:
        return escalation_run_name(incident_id)
    return f"escalation-test-page-{run_stamp()}"  # renamed once its incident exists


def settle_seconds(policy: EscalationPolicy) -> int:
    """How long a recovered incident stays ``monitoring`` before the flow resolves it."""
    return min(policy.public_every, MAX_SETTLE_S)


def test_policy(policy: EscalationPolicy) -> EscalationPolicy:
    """Level 1 only, once, with no public post and no client e-mail."""
    return policy.model_copy(
        update={
            "levels": policy.levels[:1],
            "repeat": 0,
            "public_after": _NEVER_S,
            "clients_after": _NEVER_S,
        }
    )


def _send(url: str, fleet: Fleet, channels: Any, intent: NoticeIntent, incident_id: int) -> str:
    """Send one notice, falling back to the person's other channel once; its status."""
    people = {p.id: p for p in fleet.people}
    current: NoticeIntent | None = intent
    hops = 0
    status = "failed"
    while current is not None:
        try:
            address = address_of(current, fleet)
        except PermanentError as exc:
            state_error: str = str(exc)
        else:
            state = send_notice(url, current, channels, address, incident_id, return_state=True)
            if state.is_completed():
                return str(state.result().status)
            error = state.result(raise_on_failure=False)
            state_error = str(error) if isinstance(error, BaseException) else str(state.message)
        person = people.get(current.recipient)
        other = fallback(current, current.channel, person) if person and hops == 0 else None
        current = give_up_notice(url, current, state_error, incident_id, other)
        hops += 1
    return status


def _pause_seconds(decision: Decision, now: datetime, extra: list[datetime]) -> int:
    wakes = [w for w in (decision.next_wake, *extra) if w is not None]
    until = min(wakes) if wakes else now + timedelta(seconds=RECHECK_S)
    seconds = math.ceil((until - now).total_seconds())
    return max(1, min(seconds, RECHECK_S))


def ack_in_force(view: IncidentView, policy: EscalationPolicy, now: datetime) -> bool:
    """True while an acknowledgement holds paging off (the latest is under ``ack_timeout``
    old; after that the pure decision re-triggers paging and a new ack is needed)."""
    acks = [a for a in (*view.acknowledgements, view.acknowledged_at) if a is not None]
    return any(now - timedelta(seconds=policy.ack_timeout) < a <= now for a in acks)


@flow(name="escalation", flow_run_name=_run_name)
def escalation(
    incident_id: int = 0, test: bool = False, fleet_file: Path | None = None
) -> dict[str, Any]:
    """Page, escalate, inform users and clients until the incident is resolved.

    Args:
        incident_id: the incident to escalate (the probe starts one run per incident).
        test: open a ``test`` incident and page level 1 only (leave incident_id at 0).
        fleet_file: the fleet file; default ``$PPO_DR_FLEET`` or the lab's.
    """
    log = get_run_logger()
    fleet = load_fleet_task(fleet_file or config.fleet_file())
    if fleet.escalation is None:
        raise PermanentError(f"fleet {fleet.name} has no escalation policy")
    url = store_url(fleet)
    run_id = str(flow_run.id) if flow_run.id else None
    policy = fleet.escalation
    if test:
        if incident_id:
            raise PermanentError("a test page opens its own incident: leave incident_id at 0")
        incident_id = open_test_incident(url, run_id)
        policy = test_policy(policy)
    elif incident_id <= 0:
        raise PermanentError("incident_id is required (or test=true for a test page)")
    label_flow_run(
        escalation_run_name(incident_id),
        tags=[f"incident:{incident_id}", f"fleet:{fleet.name}"] + (["test"] if test else []),
    )
    people = {p.id: p for p in fleet.people}
    channels = open_channels(fleet)
    note_timeline(url, incident_id, "escalation-started", "escalation flow started", run_id)

    sent: dict[str, int] = {}
    pauses = 0
    shown_ack: datetime | None = None  # the ack the run's state and log announce
    first, _ = read_incident(url, fleet, incident_id)
    failover = FailoverView()
    try:
        scope = None if test else failover_scope(first.kind, first.scope or {})
    except DRError as exc:  # a hostile or broken scope: page anyway, say why not failover
        scope = None
        if not read_failover(url, incident_id).unavailable:
            note_timeline(url, incident_id, "failover-unavailable", f"no failover: {exc}", run_id)
    if scope:
        failover = read_failover(url, incident_id)  # a restarted run: started already?
    while True:
        incident, view = read_incident(url, fleet, incident_id)
        now = datetime.now(UTC)
        decision = decide(policy, view, now, people)
        for intent in decision.notices:
            status = _send(url, fleet, channels, intent, incident_id)
            sent[status] = sent.get(status, 0) + 1
        if scope and not failover.started and incident.recovered_at is None and not decision.done:
            started = start_failover(
                url, incident_id, scope, str(fleet_file) if fleet_file else None, run_id,
                return_state=True,
            )  # fmt: skip
            if started.is_completed():
                failover = started.result()
            else:  # the API failed through every retry: page on, try again next wake-up
                log.warning("failover not started (next wake-up tries again): %s",
                            started.message)  # fmt: skip
        if scope and failover.run_id:
            failover = read_failover(url, incident_id)
            incident, view = read_incident(url, fleet, incident_id)  # what was sent just now
            for intent in failover_notices(policy, view, failover, people):
                status = _send(url, fleet, channels, intent, incident_id)
                sent[status] = sent.get(status, 0) + 1
        if decision.done:
            break
        extra: list[datetime] = []
        if incident.recovered_at is not None:
            settle_at = incident.recovered_at + timedelta(seconds=settle_seconds(policy))
            if now >= settle_at:
                resolve_incident(url, incident_id, "", "auto-resolved after recovery", run_id)
                continue
            extra.append(settle_at)
        if scope and failover.run_id and failover.plan_id is None:
            extra.append(now + timedelta(seconds=FAILOVER_RECHECK_S))
        if test:
            deadline = incident.opened_at + timedelta(seconds=policy.levels[0].ack_deadline)
            if incident.acknowledged_at is not None or now >= deadline:
                resolve_incident(url, incident_id, "", "test page ended", run_id)
                continue
            extra.append(deadline)
        timeout = _pause_seconds(decision, now, extra)
        if ack_in_force(view, policy, now):
            # Taken: no Resume form to fill in again, the state and the log say so.
            latest = max(a for a in (*view.acknowledgements, view.acknowledged_at) if a)
            if latest != shown_ack:
                by = incident.acknowledged_by or "someone"
                show_acknowledged(by)
                log.info("acknowledged by %s: paging stopped; watching the incident until "
                         "it is resolved (paging starts again if it is not resolved within "
                         "%d s of the ack)", by, policy.ack_timeout)  # fmt: skip
                shown_ack = latest
            time.sleep(timeout)
            continue
        if shown_ack is not None:
            log.info("the acknowledgement expired (ack_timeout): paging again")
            shown_ack = None
        pauses += 1
        paused_at = datetime.now(UTC)
        log.info("waiting up to %d s for an acknowledgement (Resume in the UI)", timeout)
        ack = wait_for_ack(timeout, key=f"wait-{pauses}")
        if ack is None:
            continue
        if incident.resolved_at is None:
            try:
                # The CLI records the ack before it resumes us: count any ack this recent.
                since = paused_at - timedelta(seconds=RECHECK_S)
                record_ack_task(url, incident_id, ack.by, ack.note, run_id, since)
            except Exception as exc:  # a late ack on a resolved incident: nothing to stop
                log.warning("ack not recorded: %s", exc)

    markdown = render_report(url, fleet, incident_id)
    create_markdown_artifact(
        key=f"incident-{incident_id}-report",
        markdown=markdown,
        description=f"Incident {incident_id}: timeline, times, impact, notices",
    )
    note_timeline(url, incident_id, "escalation-ended", "escalation flow ended", run_id)
    log.info("incident %s resolved; notices this run: %s", incident_id, sent)
    return {"incident_id": incident_id, "notices": sent, "pauses": pauses}
