"""Tasks of the escalation runbook: thin wrappers over :mod:`ppo_dr.escalation`,
:mod:`ppo_dr.notify` and the store.

An ack given in the Prefect UI is recorded by :func:`record_ack_task` through
:func:`ppo_dr.incident_acks.record_ack`, the rule ``ppo-dr incident ack`` uses too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import task_run

from ppo_dr.channels import Channel, MessageChannel, build_channels, describe_channels
from ppo_dr.errors import PermanentError, TransientError
from ppo_dr.escalation import (
    FAILOVER_STARTED,
    FAILOVER_UNAVAILABLE,
    FailoverView,
    IncidentView,
    NoticeIntent,
    contacts_of,
    failover_view,
)
from ppo_dr.incident_acks import acknowledgements, record_ack
from ppo_dr.inventory import Fleet
from ppo_dr.notify import address_for, deliver, give_up, record_intent, retry_delay
from ppo_dr.report_answers import answers_for_incident, answers_markdown
from ppo_dr.reports import report_for_incident, report_markdown
from ppo_dr.run_links import ui_base
from ppo_dr.store import Incident, Store
from tasks import RETRY_DELAYS, io_task, secret_from_block
from tasks.runs import top_level_run

#: A notice recorded but not yet sent this recently is being sent by another run (two
#: escalation runs of one incident): a third party leaves it alone. An older pending
#: notice is a send that died half-way, and is sent again.
IN_FLIGHT_S = 60.0
#: The failover runbook's deployment (``flows/failover.py``), served by ``ppo-dr serve``.
FAILOVER_DEPLOYMENT = "failover/failover"


def failover_key(incident_id: int) -> str:
    """The idempotency key of an incident's failover run: one run per incident, ever."""
    return f"failover-{incident_id}"


# --------------------------------------------------------------------------- helpers


def incident_view(store: Store, fleet: Fleet, incident_id: int) -> tuple[Incident, IncidentView]:
    """The incident and what :func:`~ppo_dr.escalation.decide` needs to know of it."""
    incident = store.incident(incident_id)
    if incident is None:
        raise PermanentError(f"no incident with id {incident_id}")
    sent = [n.idempotency_key for n in store.notices(incident_id) if n.status != "pending"]
    view = IncidentView.from_record(
        incident,
        sent=sent,
        contacts=contacts_of(fleet.clients, (incident.scope or {}).get("clients", ())),
        acknowledgements=acknowledgements(store, incident_id),
    )
    return incident, view


# --------------------------------------------------------------------------- tasks


#: ``@task`` options of every step here: each does one piece of I/O (the store, a
#: channel) and may be rerun, so never cached; a minute at most; transient errors retried.
STORE_STEP: dict[str, Any] = io_task(60)


@task(name="open-channels", **STORE_STEP)
def open_channels(fleet: Fleet) -> dict[MessageChannel, Channel]:
    """Build the e-mail, SMS and X channels; credentials come from Prefect Secret blocks."""
    channels = build_channels(fleet, secret_from_block)
    get_run_logger().info("channels: %s", describe_channels(channels))
    return channels


@task(name="read-incident", **STORE_STEP)
def read_incident(store_url: str, fleet: Fleet, incident_id: int) -> tuple[Incident, IncidentView]:
    """The incident, its acknowledgements and the notices already sent or given up."""
    with Store.open(store_url) as store:
        return incident_view(store, fleet, incident_id)


@task(name="open-test-incident", **STORE_STEP)
def open_test_incident(store_url: str, flow_run_id: str | None) -> int:
    """Open an incident of kind ``test`` (a test page: level 1 only, nobody else)."""
    now = datetime.now(UTC)
    with Store.open(store_url) as store:
        incident, _ = store.open_incident(
            "test",
            f"test-page/{flow_run_id or now.isoformat()}",
            "TEST page from the escalation deployment: please acknowledge",
            {"test": True},
            severity="minor",
            flow_run_id=flow_run_id,
            at=now,
        )
    get_run_logger().info("test incident %s opened", incident.id)
    return incident.id


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one notice: ``sent`` (now), ``already`` (earlier) or the error."""

    key: str
    status: str
    error: str | None = None


@task(
    name="send-notice",
    task_run_name="send-{intent.step}-{intent.channel}-{intent.recipient}",
    **STORE_STEP,
)
def send_notice(
    store_url: str,
    intent: NoticeIntent,
    channels: Mapping[MessageChannel, Channel],
    address: str,
    incident_id: int,
) -> Outcome:
    """Record the notice under its key, send it once, store the receipt.

    Already sent: success, nothing sent. A transient error is retried by Prefect with
    back-off; when the provider asked for a longer wait (Retry-After) the task waits
    the difference before failing, and a wait longer than we accept fails permanently
    (the flow falls back to the person's other channel instead of paging late).
    """
    log = get_run_logger()
    with Store.open(store_url) as store:
        notice, created = record_intent(store, intent, incident_id)
        first_try = (task_run.run_count or 1) <= 1
        age = (datetime.now(UTC) - notice.created_at).total_seconds()
        if not created and notice.status == "pending" and first_try and age < IN_FLIGHT_S:
            # Recorded moments ago by another run of this incident, which is sending it:
            # leave it to that run (the next decision sees it sent, or pending and old).
            log.info("%s is being sent by another run; not sending", intent.key)
            return Outcome(intent.key, "in-flight")
        try:
            result = deliver(store, intent, channels, incident_id=incident_id, address=address)
        except TransientError as exc:
            attempt = max(0, (task_run.run_count or 1) - 1)
            planned = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
            wait = retry_delay(exc, planned)
            if wait is None:
                raise PermanentError(
                    f"notice {intent.key}: provider asks to wait too long; falling back"
                ) from exc
            if wait > planned:
                time.sleep(wait - planned)
            raise
    if result.sent_now:
        log.info("sent %s via %s: %s", intent.key, intent.channel, result.receipt)
        return Outcome(intent.key, "sent")
    log.info("%s already %s", intent.key, result.notice.status)
    return Outcome(intent.key, "already")


@task(name="give-up-notice", **STORE_STEP)
def give_up_notice(
    store_url: str,
    intent: NoticeIntent,
    error: str,
    incident_id: int,
    fallback: NoticeIntent | None,
) -> NoticeIntent | None:
    """Mark the notice failed (shown on the incident); the fallback if still worth sending."""
    with Store.open(store_url) as store:
        chosen = give_up(store, intent, error, incident_id=incident_id, fallback=fallback)
    get_run_logger().warning(
        "notice %s failed; %s",
        intent.key,
        f"falling back to {chosen.channel}" if chosen else "no fallback",
    )
    return chosen


def address_of(intent: NoticeIntent, fleet: Fleet) -> str:
    """Where the notice goes (a person's e-mail or phone, else the recipient as is)."""
    return address_for(intent, {p.id: p for p in fleet.people})


@task(name="record-ack", **STORE_STEP)
def record_ack_task(
    store_url: str,
    incident_id: int,
    by: str,
    note: str,
    flow_run_id: str | None,
    since: datetime,
) -> bool:
    """Record the acknowledgement given to the paused run (unless the CLI already did)."""
    with Store.open(store_url) as store:
        recorded = record_ack(store, incident_id, by, note, flow_run_id=flow_run_id, since=since)
    get_run_logger().info(
        "incident %s acknowledged by %s%s", incident_id, by, "" if recorded else " (recorded)"
    )
    return recorded


@task(name="resolve-incident", **STORE_STEP)
def resolve_incident(
    store_url: str, incident_id: int, by: str, note: str, flow_run_id: str | None
) -> Incident:
    """Resolve the incident (idempotent)."""
    with Store.open(store_url) as store:
        return store.resolve(incident_id, by, note, flow_run_id)


@task(name="note-timeline", **STORE_STEP)
def note_timeline(
    store_url: str, incident_id: int, kind: str, message: str, flow_run_id: str | None
) -> None:
    """Add an entry to the incident's timeline, with this flow run's id."""
    with Store.open(store_url) as store:
        store.add_timeline(incident_id, kind, message, flow_run_id=flow_run_id)


@task(name="render-report", **STORE_STEP)
def render_report(store_url: str, fleet: Fleet, incident_id: int) -> str:
    """The incident report in Markdown (cause, measures, timeline, times, notices,
    RTO/RPO and data lost per client of its failovers, the eight questions answered
    with links to this API's UI)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() or ui_base(PREFECT_API_URL.value())
    with Store.open(store_url) as store:
        report = report_for_incident(store, incident_id, fleet)
        answers = answers_for_incident(store, report, ui)
    return report_markdown(report) + answers_markdown(answers)


# --------------------------------------------------------------------------- failover


@task(name="read-failover", **STORE_STEP)
def read_failover(store_url: str, incident_id: int) -> FailoverView:
    """What the incident's timeline says of the failover this escalation started."""
    with Store.open(store_url) as store:
        return failover_view(store.timeline(incident_id))


@task(
    name="start-failover",
    task_run_name="start-failover-{incident_id}",
    **STORE_STEP,
)
def start_failover(
    store_url: str,
    incident_id: int,
    scope: Mapping[str, str],
    fleet_file: str | None,
    flow_run_id: str | None,
) -> FailoverView:
    """Start the failover run of the incident (once: idempotency key), record it.

    The run plans at once and then runs or pauses for approval, as the policy says. It
    is a top-level run (not a subflow of the escalation) and is quoted by its id here:
    the failover flow names it after its plan (``failover-<plan>``), the name the
    notices use, which does not exist yet.
    A restarted escalation gets the same run back (same key) and records nothing twice.
    A missing deployment is a warning on the timeline, not a failure: paging goes on,
    and the on-call can start it by hand (``ppo-dr failover run``).
    """
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    log = get_run_logger()
    (level, subject), *_ = scope.items()
    parameters: dict[str, Any] = {level: subject, "incident_id": incident_id}
    if fleet_file is not None:
        parameters["fleet_file"] = fleet_file
    with Store.open(store_url) as store:
        try:
            run = run_deployment(
                FAILOVER_DEPLOYMENT,
                parameters=parameters,
                **top_level_run(failover_key(incident_id), [f"incident:{incident_id}"]),
            )
        except ObjectNotFound:
            why = (
                f"deployment {FAILOVER_DEPLOYMENT!r} not found: no failover for {level} "
                f"{subject} until it is served (ppo-dr serve), or start one by hand: "
                f"ppo-dr failover run --{level} {subject} --incident {incident_id}"
            )
            log.warning(why)
            if not any(e.kind == FAILOVER_UNAVAILABLE for e in store.timeline(incident_id)):
                store.add_timeline(
                    incident_id, FAILOVER_UNAVAILABLE, why, flow_run_id=flow_run_id,
                    data={"scope": dict(scope)},
                )  # fmt: skip
            return failover_view(store.timeline(incident_id))
        assert isinstance(run, FlowRun)  # the sync form, not a coroutine
        log.info("failover of incident %s: flow run %s", incident_id, run.id)
        if not any(
            e.kind == FAILOVER_STARTED and e.data.get("failover_run_id") == str(run.id)
            for e in store.timeline(incident_id)
        ):
            store.add_timeline(
                incident_id,
                FAILOVER_STARTED,
                f"failover of {level} {subject} started: flow run {run.id}",
                flow_run_id=flow_run_id,
                data={"failover_run_id": str(run.id), "scope": dict(scope)},
            )
        return failover_view(store.timeline(incident_id))
