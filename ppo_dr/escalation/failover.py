"""The escalation's hand-over to the failover runbook (pure).

:func:`failover_scope` says whether an outage is one a failover answers (a whole server
or data centre); :func:`failover_view` reads the hand-over from the incident timeline;
:func:`failover_notices` tells the on-call what the plan refused, that it waits for
approval (and how to give it), or that it runs automatically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from ppo_dr.escalation.model import (
    IncidentView,
    NoticeChannel,
    NoticeIntent,
    notice_key,
    parse_key,
)
from ppo_dr.ids import check_id
from ppo_dr.inventory import EscalationPolicy, Person

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
    # The failover flow names an incident's run so from its start (flows/failover.py).
    run = f"failover-incident-{incident.id}"
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
