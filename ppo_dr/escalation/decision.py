"""The escalation decision (:func:`decide`): paging epochs and ladders, public posts,
client e-mails and resolved notices, and the fallback to a person's other channel.

The rules are written out in :mod:`ppo_dr.escalation`'s docstring. Pure: no clock,
no I/O, no store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from ppo_dr.escalation.model import (
    PUBLIC,
    X_LIMIT,
    Decision,
    IncidentView,
    NoticeChannel,
    NoticeIntent,
    notice_key,
    parse_key,
)
from ppo_dr.inventory import EscalationPolicy, Person


@dataclass(frozen=True, slots=True)
class _Epoch:
    number: int
    start: datetime
    acked_at: datetime | None


def _epochs(
    policy: EscalationPolicy, view: IncidentView, now: datetime
) -> tuple[list[_Epoch], datetime | None]:
    """Paging epochs begun by *now*, and when the next one would begin (re-trigger)."""
    timeout = timedelta(seconds=policy.ack_timeout)
    acks = sorted(
        {a for a in (*view.acknowledgements, view.acknowledged_at) if a is not None and a <= now}
    )
    stop = _paging_stops(view)
    epochs: list[_Epoch] = []
    start = view.opened_at
    i = 0
    while True:
        while i < len(acks) and acks[i] < start:
            i += 1
        if i == len(acks):
            epochs.append(_Epoch(len(epochs), start, None))
            return epochs, None
        last = acks[i]
        epochs.append(_Epoch(len(epochs), start, last))
        i += 1
        while i < len(acks) and acks[i] < last + timeout:  # a re-ack restarts the timer
            last = acks[i]
            i += 1
        retrigger = last + timeout
        if stop is not None and stop <= retrigger:
            return epochs, None
        if retrigger > now:
            return epochs, retrigger
        start = retrigger


def _paging_stops(view: IncidentView) -> datetime | None:
    times = [t for t in (view.recovered_at, view.resolved_at) if t is not None]
    return min(times) if times else None


def _ladder(policy: EscalationPolicy, start: datetime) -> list[tuple[int, int, datetime]]:
    """(round, level index, start time) of every position of an epoch's ladder."""
    out = []
    at = start
    for round_ in range(policy.repeat + 1):
        for index, level in enumerate(policy.levels):
            out.append((round_, index, at))
            at += timedelta(seconds=level.ack_deadline)
    return out


def _page_step(epoch: int, round_: int, index: int) -> str:
    return f"page.e{epoch}.r{round_}.l{index + 1}"


def decide(
    policy: EscalationPolicy,
    incident: IncidentView,
    now: datetime,
    people: Mapping[str, Person],
) -> Decision:
    """The notices due at *now* (not yet in ``incident.sent``) and the next wake-up.

    *people* maps person ids to :class:`Person` (``{p.id: p for p in fleet.people}``).
    """
    view = incident
    if view.resolved_at is not None and view.resolved_at <= now:
        return Decision(_resolved_notices(view), None, True)

    notices: list[NoticeIntent] = []
    wakes: list[datetime] = []

    # ---- paging
    epochs, retrigger = _epochs(policy, view, now)
    if retrigger is not None:
        wakes.append(retrigger)
    current = epochs[-1]
    stop = _paging_stops(view)
    if current.acked_at is None and (stop is None or stop > now):
        ladder = _ladder(policy, current.start)
        due = [p for p in ladder if p[2] <= now]
        later = [p for p in ladder if p[2] > now]
        if later:
            wakes.append(later[0][2])
        if due:
            round_now, index_now, _ = due[-1]
            for round_, index, _at in due:
                if round_ != round_now or index > index_now:
                    continue
                notices.extend(_page(policy, view, people, current.number, round_, index))

    # ---- client contacts
    clients_at = view.opened_at + timedelta(seconds=policy.clients_after)
    recovered_first = view.recovered_at is not None and view.recovered_at <= clients_at
    if view.contacts and not recovered_first:
        if now >= clients_at:
            notices.extend(_client_notices(view))
        else:
            wakes.append(clients_at)

    # ---- public status
    public, public_wake = _public(policy, view, now)
    notices.extend(public)
    if public_wake is not None:
        wakes.append(public_wake)

    fresh = [n for n in notices if n.key not in view.sent]
    future = [w for w in wakes if w > now]
    return Decision(fresh, min(future) if future else None, False)


def _page(
    policy: EscalationPolicy,
    view: IncidentView,
    people: Mapping[str, Person],
    epoch: int,
    round_: int,
    index: int,
) -> list[NoticeIntent]:
    level = policy.levels[index]
    step = _page_step(epoch, round_, index)
    why = []
    if epoch:
        why.append("re-triggered: acknowledged but not resolved")
    if round_:
        why.append(f"repeat {round_} of {policy.repeat}")
    note = f" ({'; '.join(why)})" if why else ""
    out = []
    for person_id in level.notify:
        person = people.get(person_id)
        if person is None:
            continue
        for channel in level.channels:
            if getattr(person, channel) is None:
                continue
            subject = f"[ppo-dr] incident {view.id}: {view.title}"
            ack = f"ppo-dr incident ack {view.id} --by {person_id}"
            if channel == "sms":
                body = (
                    f"ppo-dr #{view.id}: {view.title}. Since {view.opened_at:%H:%M}Z. "
                    f"Level {index + 1} ({level.name}){note}. Ack: {ack}"
                )
            else:
                affected = ", ".join(view.clients) or "see the incident"
                body = (
                    f"Incident {view.id}: {view.title}\n"
                    f"Opened: {view.opened_at:%Y-%m-%d %H:%M:%S} UTC\n"
                    f"Affected clients: {affected}\n"
                    f"You are paged as level {index + 1}, {level.name}{note}.\n"
                    f"If nobody acknowledges within {_minutes(level.ack_deadline)} min, "
                    f"the next level is paged.\n\n"
                    f"Acknowledge from the Prefect UI (the escalation flow run waits for "
                    f"input) or: {ack} --note '...'\n"
                )
            out.append(
                NoticeIntent(
                    notice_key(view.id, step, person_id, channel),
                    step,
                    channel,
                    person_id,
                    subject,
                    body,
                )
            )
    return out


def _client_notices(view: IncidentView) -> list[NoticeIntent]:
    out = []
    for contact in view.contacts:
        subject = f"Service disruption (incident {view.id})"
        body = (
            f"Dear {contact.name},\n\n"
            f"Since {view.opened_at:%Y-%m-%d %H:%M} UTC the service we run for you has "
            f"not been responding. Our engineers are working on it and we will e-mail you "
            f"again when it is resolved.\n\n"
            f"Reference: incident {view.id}\n"
        )
        out.append(
            NoticeIntent(
                notice_key(view.id, "clients", contact.email, "email"),
                "clients",
                "email",
                contact.email,
                subject,
                body,
            )
        )
    return out


def _public_state(view: IncidentView, at: datetime) -> str:
    if view.resolved_at is not None and view.resolved_at <= at:
        return "resolved"
    if view.recovered_at is not None and view.recovered_at <= at:
        return "monitoring"
    acks = [a for a in (*view.acknowledgements, view.acknowledged_at) if a is not None]
    if any(a <= at for a in acks):
        return "identified"
    return "investigating"


def public_text(state: str, incident_id: int, at: datetime, every_s: int) -> str:
    """A public post: generic wording only (no client, person or host names), ≤ 280 chars.

    The time makes each post unique (X refuses a duplicate of a recent post).
    """
    every = _minutes(every_s)
    texts = {
        "investigating": (
            "Investigating: some customers cannot reach our service. We are looking into "
            f"it and will post an update within {every} min."
        ),
        "identified": (
            "Identified: our engineers have found the problem affecting access to our "
            f"service and are working on a fix. Next update within {every} min."
        ),
        "monitoring": (
            "Monitoring: access to our service has been restored and we are watching it "
            f"closely. Next update within {every} min."
        ),
        "resolved": (
            "Resolved: the problem affecting access to our service is over. "
            "We are sorry for the disruption."
        ),
    }
    text = f"{texts[state]} ({at:%H:%M} UTC, ref {incident_id})"
    assert len(text) <= X_LIMIT
    return text


def _public_notice(
    view: IncidentView, step: str, state: str, at: datetime, every: int
) -> NoticeIntent:
    body = public_text(state, view.id, at, every)
    return NoticeIntent(
        notice_key(view.id, step, PUBLIC, "x"), step, "x", PUBLIC, state.capitalize(), body
    )


def _public(
    policy: EscalationPolicy, view: IncidentView, now: datetime
) -> tuple[list[NoticeIntent], datetime | None]:
    first = view.opened_at + timedelta(seconds=policy.public_after)
    every = timedelta(seconds=policy.public_every)
    if view.recovered_at is not None and view.recovered_at <= first:
        return [], None  # over before anything was said: say nothing
    if now < first:
        return [], first
    slot = (now - first) // every
    slot_at = first + slot * every
    out = [
        _public_notice(view, f"public-{slot}", _public_state(view, now), now, policy.public_every)
    ]
    acks = [a for a in (*view.acknowledgements, view.acknowledged_at) if a is not None]
    changes = [("identified", min(acks) if acks else None), ("monitoring", view.recovered_at)]
    for state, changed_at in changes:
        if changed_at is None or not (first < changed_at <= now):
            continue
        if slot_at >= changed_at:
            continue  # the latest regular post already says so
        if _public_state(view, now) != state and state == "identified":
            continue  # moved on already (recovered): the monitoring post says it
        out.append(_public_notice(view, f"public-{state}", state, now, policy.public_every))
    return out, slot_at + every


def _resolved_notices(view: IncidentView) -> list[NoticeIntent]:
    """Resolved notices to whoever heard about the incident, on the channels they heard it."""
    at = view.resolved_at
    assert at is not None
    parts = [p for p in map(parse_key, sorted(view.sent)) if p and p.incident_id == view.id]
    out: list[NoticeIntent] = []
    paged = sorted({(p.recipient, p.channel) for p in parts if p.step.startswith("page.")})
    for person_id, channel in paged:
        subject = f"[ppo-dr] resolved: incident {view.id}: {view.title}"
        body = (
            f"ppo-dr #{view.id} resolved at {at:%H:%M}Z: {view.title}. No action needed."
            if channel == "sms"
            else f"Incident {view.id} ({view.title}) was resolved at "
            f"{at:%Y-%m-%d %H:%M:%S} UTC. No further action is needed.\n"
        )
        out.append(
            NoticeIntent(
                notice_key(view.id, "resolved", person_id, channel),
                "resolved",
                channel,
                person_id,
                subject,
                body,
            )
        )
    emailed = sorted({p.recipient for p in parts if p.step == "clients"})
    names = {c.email: c.name for c in view.contacts}
    for email in emailed:
        greeting = f"Dear {names[email]},\n\n" if email in names else ""
        body = (
            f"{greeting}The service disruption that began at {view.opened_at:%Y-%m-%d %H:%M} "
            f"UTC was resolved at {at:%Y-%m-%d %H:%M} UTC. We are sorry for the disruption; "
            f"a report will follow.\n\nReference: incident {view.id}\n"
        )
        out.append(
            NoticeIntent(
                notice_key(view.id, "clients-resolved", email, "email"),
                "clients-resolved",
                "email",
                email,
                f"Resolved: service disruption (incident {view.id})",
                body,
            )
        )
    if any(p.recipient == PUBLIC and p.step.startswith("public-") for p in parts):
        out.append(_public_notice(view, "public-resolved", "resolved", at, 60))
    return [n for n in out if n.key not in view.sent]


def fallback(notice: NoticeIntent, failed_channel: str, person: Person) -> NoticeIntent | None:
    """The same notice on the person's other channel (SMS ↔ e-mail), or None if none.

    The key differs only in the channel: if that notice was already sent as part of
    the same step (a level paging on both channels), recording it finds the key and
    nothing is sent twice.
    """
    other: NoticeChannel
    if failed_channel == "sms":
        other = "email"
    elif failed_channel == "email":
        other = "sms"
    else:
        return None
    if getattr(person, other) is None:
        return None
    parts = parse_key(notice.key)
    incident_id = parts.incident_id if parts else 0
    body = notice.body if other == "email" else notice.subject
    return NoticeIntent(
        notice_key(incident_id, notice.step, notice.recipient, other),
        notice.step,
        other,
        notice.recipient,
        notice.subject,
        body,
    )


def _minutes(seconds: int) -> int:
    return max(1, math.ceil(seconds / 60))
