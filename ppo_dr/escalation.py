"""The escalation decision: given the policy, what is known of an incident and the time,
which notices are due now and when to look again. Pure: no clock, no I/O, no store.

The escalation flow calls :func:`decide` in a loop (wake, decide, record each notice
under its key, send, sleep until ``next_wake`` or an ack/resolve arrives). Because the
decision depends only on its inputs, a restarted flow decides the same thing again,
and the idempotency keys make sure nothing already recorded is sent twice.

Rules (PagerDuty's escalation and Statuspage's vocabulary):

* **Paging.** An *epoch* starts when the incident opens. Level 1 is paged at once on
  every channel of the level each person has (SMS and e-mail); if nobody acknowledges
  within the level's ``ack_deadline`` the next level is paged, and so on. After the
  last level the whole ladder runs again, ``repeat`` more times, then paging stops
  (public updates go on). An acknowledgement stops paging for the epoch. If the
  incident is acknowledged but not resolved within ``ack_timeout`` (counted from the
  latest acknowledgement), a new epoch starts: level 1 is paged again and a new
  acknowledgement is needed. Recovery (the probe sees service back) stops paging.
  When the flow wakes late, everyone due in the current round is paged (catch-up);
  earlier rounds and epochs are not replayed.
* **Public status** (X): the first post ``public_after`` the opening, then one every
  ``public_every`` while unresolved; a post when the state changes (identified on
  acknowledgement, monitoring on recovery) if posting has begun; and a resolved post
  if anything was posted. Words: investigating → identified → monitoring → resolved.
  At most 280 characters, generic wording only: never a client, person or host name.
  If service recovered before the first post was due, nothing is posted.
* **Client contacts**: one e-mail to each key contact of the affected clients
  ``clients_after`` the opening, if the outage is still on (not recovered, not
  resolved); a resolved e-mail to those who were e-mailed.
* **Resolved**: everyone who was paged gets a resolved notice on each channel they
  were paged on. ``done`` is True once the incident is resolved: the notices
  returned with it are the last.

* **Failover** (server and DC outages, :func:`failover_scope`): the flow starts the
  failover runbook; :func:`failover_notices` tells the on-call what its plan refused,
  that it waits for approval (and how to give it), or that it runs automatically.

Every notice has the key ``incident:<id>/step:<step>/to:<recipient>/via:<channel>``,
made only of the incident id, the step, the recipient and the channel -- never the
time of the decision -- so a retried or restarted flow produces the same keys.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from ppo_dr.ids import check_id
from ppo_dr.inventory import Contact, EscalationPolicy, Person

NoticeChannel = Literal["sms", "email", "x"]
PUBLIC: Final = "public"
X_LIMIT: Final = 280
_KEY = re.compile(r"^incident:(\d+)/step:([^/]+)/to:(.+)/via:(sms|email|x)$")

#: Statuspage's words for the public updates, in the order an incident moves through them.
PUBLIC_STATES: Final = ("investigating", "identified", "monitoring", "resolved")


def notice_key(incident_id: int, step: str, recipient: str, channel: str) -> str:
    """The idempotency key of one notice (stable across retries and restarts)."""
    return f"incident:{incident_id}/step:{step}/to:{recipient}/via:{channel}"


@dataclass(frozen=True, slots=True)
class NoticeKey:
    incident_id: int
    step: str
    recipient: str
    channel: NoticeChannel


def parse_key(key: str) -> NoticeKey | None:
    """The parts of a key made by :func:`notice_key`, or None for anything else."""
    match = _KEY.match(key)
    if match is None:
        return None
    channel: NoticeChannel = match.group(4)  # type: ignore[assignment]
    return NoticeKey(int(match.group(1)), match.group(2), match.group(3), channel)


@dataclass(frozen=True, slots=True)
class NoticeIntent:
    """A notice the flow should record (under ``key``) and then send."""

    key: str
    step: str
    channel: NoticeChannel
    recipient: str  # a person id, a contact's e-mail address, or "public"
    subject: str
    body: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to send now, when to decide again (None: only an ack/resolve will change
    anything), and whether the escalation is over."""

    notices: list[NoticeIntent]
    next_wake: datetime | None
    done: bool


@dataclass(frozen=True, slots=True)
class IncidentView:
    """What the decision needs to know about an incident (from the store).

    ``title`` is internal wording for the people paged (it may name servers and
    clients); it never reaches the public posts. ``acknowledgements`` lists every
    acknowledgement time (re-acks after a re-trigger); ``acknowledged_at`` is
    included automatically. ``sent`` holds the keys of notices already recorded.
    """

    id: int
    opened_at: datetime
    title: str = "service outage"
    clients: tuple[str, ...] = ()
    contacts: tuple[Contact, ...] = ()
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledgements: tuple[datetime, ...] = ()
    recovered_at: datetime | None = None
    resolved_at: datetime | None = None
    sent: frozenset[str] = frozenset()

    @classmethod
    def from_record(
        cls,
        incident: Any,
        *,
        sent: Iterable[str] = (),
        contacts: Iterable[Contact] = (),
        acknowledgements: Iterable[datetime] = (),
    ) -> IncidentView:
        """A view of a store :class:`~ppo_dr.store.records.Incident` (clients from its scope)."""
        scope = incident.scope or {}
        return cls(
            id=incident.id,
            opened_at=incident.opened_at,
            title=incident.title,
            clients=tuple(scope.get("clients", ())),
            contacts=tuple(contacts),
            acknowledged_at=incident.acknowledged_at,
            acknowledged_by=incident.acknowledged_by,
            acknowledgements=tuple(acknowledgements),
            recovered_at=incident.recovered_at,
            resolved_at=incident.resolved_at,
            sent=frozenset(sent),
        )


def contacts_of(clients: Iterable[Any], affected: Iterable[str]) -> tuple[Contact, ...]:
    """The key contacts of the *affected* client ids, one per e-mail address."""
    wanted = set(affected)
    seen: dict[str, Contact] = {}
    for client in clients:
        if client.id in wanted:
            for contact in client.contacts:
                seen.setdefault(contact.email.lower(), contact)
    return tuple(seen[k] for k in sorted(seen))


# --------------------------------------------------------------------------- decide


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


# --------------------------------------------------------------------------- failover

#: The incident kind the probe opens for an outage (``ppo_dr.probe.runner.OUTAGE_KIND``).
OUTAGE_KIND: Final = "outage"
#: Outage levels a failover answers: a whole server or data centre is down. A single
#: client's app (``client``) is not a hosting failure, and probe-silent, mirror-stale,
#: drill-failed and test incidents are not outages at all.
FAILOVER_LEVELS: Final = ("server", "dc")
#: Timeline kinds of the hand-over to the failover runbook. The escalation writes the
#: first two; the failover flow writes the others (with its own flow run id).
FAILOVER_STARTED: Final = "failover-started"
FAILOVER_UNAVAILABLE: Final = "failover-unavailable"
FAILOVER_PLANNED: Final = "failover-planned"
FAILOVER_APPROVAL: Final = "failover-approval"
FAILOVER_FINISHED: Final = "failover-finished"
#: Longest SMS we send about a failover (longer texts are cut; the e-mail has it all).
SMS_LIMIT: Final = 320


def failover_scope(kind: str, scope: Mapping[str, Any]) -> dict[str, str] | None:
    """The failover deployment's scope for an incident: ``{"server": id}`` or
    ``{"dc": id}``, or None when a failover is not the answer to it.

    Only an outage the probe declared at the server or DC level qualifies (its scope has
    ``level`` and ``subject``). A subject that is not a valid id is refused here, before
    it can reach a flow parameter, a shell or a path.
    """
    if kind != OUTAGE_KIND:
        return None
    level, subject = scope.get("level"), scope.get("subject")
    if level not in FAILOVER_LEVELS:
        return None
    return {str(level): check_id(subject, f"outage subject ({level})")}


@dataclass(frozen=True, slots=True)
class FailoverView:
    """What an incident's timeline says of the failover its escalation started.

    Only entries of the run the escalation started count (``run_id``): a failover an
    operator runs by hand for the same incident is theirs to watch.
    """

    run_id: str | None = None
    run_name: str = ""
    plan_id: str | None = None
    moves: int = 0
    refusals: tuple[tuple[str, str], ...] = ()  # (client id, reason)
    approved: bool | None = None  # None: no answer yet
    approved_by: str = ""
    finished: bool = False
    unavailable: str = ""  # why the failover could not be started

    @property
    def started(self) -> bool:
        """True once the escalation started (or failed to start) the failover."""
        return self.run_id is not None or bool(self.unavailable)

    def awaiting_approval(self, auto: bool) -> bool:
        """True while the plan waits for an operator (not automatic, not answered)."""
        return (
            self.plan_id is not None
            and self.moves > 0
            and not auto
            and self.approved is None
            and not self.finished
        )


def failover_view(entries: Iterable[Any]) -> FailoverView:
    """Read the failover hand-over from timeline entries (``kind``, ``data``,
    ``flow_run_id``), oldest first."""
    view = FailoverView()
    for entry in entries:
        data = entry.data or {}
        if entry.kind == FAILOVER_STARTED and view.run_id is None:
            run_id = data.get("failover_run_id")
            if isinstance(run_id, str) and run_id:
                view = replace(view, run_id=run_id, run_name=str(data.get("run_name", "")))
        elif entry.kind == FAILOVER_UNAVAILABLE and view.run_id is None:
            view = replace(view, unavailable=entry.message or "failover unavailable")
        elif view.run_id is None or entry.flow_run_id != view.run_id:
            continue
        elif entry.kind == FAILOVER_PLANNED:
            refusals = tuple(
                (str(r.get("client", "?")), str(r.get("reason", "")))
                for r in data.get("refusal_reasons", ())
                if isinstance(r, Mapping)
            )
            view = replace(
                view,
                plan_id=str(data.get("plan_id")) if data.get("plan_id") else None,
                moves=int(data.get("moves", 0) or 0),
                refusals=refusals,
            )
        elif entry.kind == FAILOVER_APPROVAL:
            view = replace(
                view, approved=bool(data.get("approve")), approved_by=str(data.get("by", ""))
            )
        elif entry.kind == FAILOVER_FINISHED:
            view = replace(view, finished=True)
    return view


def on_call(
    policy: EscalationPolicy, incident: IncidentView, people: Mapping[str, Person]
) -> list[tuple[str, NoticeChannel]]:
    """Who hears about the failover, and how: everyone paged for the incident so far, on
    the channels they were paged on, and level 1 on its channels (the people who will
    act on a plan), in a stable order."""
    out: set[tuple[str, NoticeChannel]] = set()
    for part in map(parse_key, incident.sent):
        if (
            part
            and part.incident_id == incident.id
            and part.step.startswith("page.")
            and part.recipient in people
            and part.channel != "x"
        ):
            out.add((part.recipient, part.channel))
    first = policy.levels[0]
    for person_id in first.notify:
        person = people.get(person_id)
        for channel in first.channels:
            if person is not None and getattr(person, channel) is not None:
                out.add((person_id, channel))
    return sorted(out)


def failover_notices(
    policy: EscalationPolicy,
    incident: IncidentView,
    failover: FailoverView,
    people: Mapping[str, Person],
) -> list[NoticeIntent]:
    """Notices about the incident's failover due now (not in ``incident.sent``).

    * ``failover-refused``: the plan refused clients (no allowed target): the reasons,
      to the on-call, once -- those clients stay down until someone acts;
    * ``failover-approve``: the plan waits for approval (the policy does not say
      ``auto_failover``): the plan id, the command and the UI page, to the on-call,
      including anyone paged later while it still waits;
    * ``failover-auto``: with ``auto_failover`` the plan runs at once: the on-call is
      told what is moving.
    Nothing once the incident is resolved.
    """
    if failover.plan_id is None or incident.resolved_at is not None:
        return []
    plan = failover.plan_id
    # The failover flow names its run after the plan (flows/failover.py: label_flow_run).
    run = f"failover-{plan[:12]}"
    texts: list[tuple[str, str, str, str]] = []  # step, subject, sms, email
    if failover.refusals:
        reasons = "; ".join(f"{c}: {r}" for c, r in failover.refusals)
        texts.append(
            (
                "failover-refused",
                f"[ppo-dr] incident {incident.id}: failover REFUSED "
                f"{len(failover.refusals)} client(s)",
                f"ppo-dr #{incident.id}: failover plan {plan[:12]} cannot move "
                f"{len(failover.refusals)} client(s): {reasons}. They stay down: act by hand.",
                f"Incident {incident.id}: {incident.title}\n\n"
                f"The failover plan {plan} cannot move these clients, which stay down "
                f"until someone acts:\n"
                + "".join(f"  - {c}: {r}\n" for c, r in failover.refusals)
                + f"\nSee: ppo-dr incident show {incident.id}\n",
            )
        )
    if failover.awaiting_approval(policy.auto_failover):
        command = f"ppo-dr failover approve {plan} --by NAME"
        texts.append(
            (
                "failover-approve",
                f"[ppo-dr] incident {incident.id}: failover plan waits for your approval",
                f"ppo-dr #{incident.id}: failover of {failover.moves} client(s) waits for "
                f"approval. {command} (or Resume {run} in the Prefect UI)",
                f"Incident {incident.id}: {incident.title}\n\n"
                f"Failover plan {plan} moves {failover.moves} client(s) to other servers "
                f"and waits for approval (the policy does not fail over automatically).\n\n"
                f"Approve in a terminal:\n  {command} [--note '...']\n"
                f"(--refuse instead to do nothing), or in the Prefect UI: Runs -> flow run "
                f"{run} (id {failover.run_id}, tag incident:{incident.id}) -> Resume, "
                f"approve = true.\n"
                f"The plan is the run's artifact failover-plan-{plan}.\n",
            )
        )
    if policy.auto_failover and failover.moves > 0:
        texts.append(
            (
                "failover-auto",
                f"[ppo-dr] incident {incident.id}: automatic failover under way",
                f"ppo-dr #{incident.id}: automatic failover of {failover.moves} client(s) "
                f"under way (plan {plan[:12]}, run {run}).",
                f"Incident {incident.id}: {incident.title}\n\n"
                f"The policy fails over automatically: plan {plan} is moving "
                f"{failover.moves} client(s) now. Follow the flow run {run} in the Prefect "
                f"UI (tag incident:{incident.id}) or: ppo-dr incident show {incident.id}\n",
            )
        )
    out: list[NoticeIntent] = []
    for step, subject, sms, email in texts:
        for person_id, channel in on_call(policy, incident, people):
            key = notice_key(incident.id, step, person_id, channel)
            if key in incident.sent:
                continue
            body = _cut(sms, SMS_LIMIT) if channel == "sms" else email
            out.append(NoticeIntent(key, step, channel, person_id, subject, body))
    return out


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
