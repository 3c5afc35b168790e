"""Paging through failing providers (``channel-errors``): the script, the fleet copy, the verdict.

The fault pages one incident through the real client libraries (boto3 SNS, sendgrid,
tweepy) to the lab's stand-in (:mod:`ppo_dr.lab.standin`), scripted to answer each
provider's first requests with 500, then 429 (``Retry-After``), then nothing (the
client times out); SMS fails once more, so its first notice is given up and the
person must be reached by e-mail (the fault's copy of the policy pages by SMS only:
an e-mail at a page step can only be the fallback). The I/O is
:mod:`ppo_dr.lab.chaos.channel_errors_run`; this module is pure.

What must hold (:func:`judge_channel_errors`), from the stand-in's request log and the
store's notices:

- every scripted failure was served (else the fault was not in force);
- every attempt recorded: per provider and address, the requests the stand-in saw
  equal the attempts counted on the notices;
- retried with back-off: each failed request followed by another for the same address
  (until the notice is given up), no sooner than the shortest back-off after an
  answer, than ``Retry-After`` after a 429, or than the client's time-out after a
  request left unanswered;
- fallback used: every SMS notice given up has the e-mail of the same step and person
  sent, and at least one was given up;
- no duplicate page: every accepted request is the receipt of exactly one notice, and
  no notice is left pending; the escalation run completed.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from ppo_dr.channels.email_sendgrid import SendGridSettings
from ppo_dr.channels.sms_sns import SnsSettings
from ppo_dr.channels.x_tweepy import XSettings
from ppo_dr.lab.chaos.catalogue import FaultSpec
from ppo_dr.lab.chaos.verdict import ChaosResult
from ppo_dr.lab.standin import RETRY_AFTER_S, SeenRequest
from ppo_dr.retry_policy import MAX_ATTEMPTS, MIN_BACKOFF_S

#: Each provider's first answers; then it accepts. SMS fails all four attempts of the
#: send task (three retries), so that notice falls back to e-mail.
SCRIPT: Final[dict[str, list[str]]] = {
    "sns": ["500", "429", "timeout", "500"],
    "sendgrid": ["500", "429", "timeout"],
    "x": ["500", "429", "timeout"],
}
#: The notice channel each provider carries.
CHANNEL_OF: Final = {"sns": "sms", "sendgrid": "email", "x": "x"}
#: The environment variable every stand-in credential reference names (not a secret:
#: the stand-in takes any key; ``ppo-dr lab chaos`` gives serve this value).
CREDENTIAL_ENV: Final = "LAB_STANDIN_CREDENTIAL"
CREDENTIAL_VALUE: Final = "stand-in-credential"
#: How long the channels wait for an answer: the longest of their default read time-outs.
CLIENT_TIMEOUT_S: Final = max(
    SendGridSettings.model_fields["timeout"].default,
    SnsSettings.model_fields["read_timeout"].default,
    XSettings.model_fields["timeout"].default,
)
#: Seconds to allow for clocks: the stand-in and the client time the same events.
SLACK_S: Final = 0.05


def standin_fleet(document: Mapping[str, Any], standin_url: str) -> dict[str, Any]:
    """The lab's fleet document with every channel on the stand-in and pages by SMS only.

    Credentials are references to :data:`CREDENTIAL_ENV`; the store, servers and people
    stay the lab's, so the incident and its notices are the lab's own records.
    """
    doc = copy.deepcopy(dict(document))

    def ref() -> dict[str, str]:  # a new mapping each time: YAML aliases are refused
        return {"env": CREDENTIAL_ENV}

    keys = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")
    doc["channels"] = {
        "email": {
            "provider": "sendgrid",
            "sender": doc.get("channels", {}).get("email", {}).get("sender", "noc@ppo.example"),
            "api_key": ref(),
            "endpoint_url": standin_url,
        },
        "sms": {
            "provider": "sns",
            "region": "us-east-1",
            "access_key_id": ref(),
            "secret_access_key": ref(),
            "endpoint_url": standin_url,
        },
        "x": {"provider": "x", **{k: ref() for k in keys}, "endpoint_url": standin_url},
    }
    for level in doc.get("escalation", {}).get("levels", []):
        level["channels"] = ["sms"]
    return doc


@dataclass(frozen=True, slots=True)
class SentNotice:
    """A notice of the fault's incident, with the address the provider saw."""

    key: str
    step: str
    channel: str  # sms | email | x
    person: str  # the store's recipient (a person id, or public)
    address: str  # phone, e-mail address, or public
    status: str
    attempts: int
    receipt: str | None


@dataclass(frozen=True, slots=True)
class ChannelObservation:
    """What the runner saw: the stand-in's log, the notices, the escalation's end."""

    fault: str
    incident_id: int | None
    opened_at: datetime | None
    requests: tuple[SeenRequest, ...] = ()
    notices: tuple[SentNotice, ...] = ()
    escalation_state: str | None = None
    resolved_at: datetime | None = None
    problems: tuple[str, ...] = ()


def _scripted(obs: ChannelObservation) -> list[str]:
    notes = []
    for vendor, steps in SCRIPT.items():
        served = [r.step for r in obs.requests if r.vendor == vendor][: len(steps)]
        if served != steps:
            notes.append(
                f"{vendor}: the stand-in served {served}, not the scripted {steps}: "
                "the fault was not in force"
            )
    return notes


def _attempts(obs: ChannelObservation) -> list[str]:
    seen = Counter((CHANNEL_OF.get(r.vendor, r.vendor), r.recipient) for r in obs.requests)
    counted: Counter[tuple[str, str]] = Counter()
    for n in obs.notices:
        counted[(n.channel, n.address)] += n.attempts
    return [
        f"{channel} to {address}: the provider saw {seen[(channel, address)]} request(s), "
        f"the notices count {counted[(channel, address)]} attempt(s)"
        for channel, address in sorted(set(seen) | set(counted))
        if seen[(channel, address)] != counted[(channel, address)]
    ]


def earliest_retry(failed: SeenRequest) -> float:
    """The earliest a retry of *failed* may come (epoch seconds), by what it answered."""
    if failed.step == "timeout":
        return failed.at + CLIENT_TIMEOUT_S + MIN_BACKOFF_S
    if failed.step == "429":
        return failed.answered_at + RETRY_AFTER_S
    return failed.answered_at + MIN_BACKOFF_S


def _backoff(obs: ChannelObservation) -> tuple[list[str], list[float]]:
    """Broken back-off rules, and the gaps (seconds) between retries seen.

    :data:`MAX_ATTEMPTS` failures in a row to one address are one notice given up: the
    request after them is another notice (a fallback, a later step), not a retry.
    """
    notes: list[str] = []
    gaps: list[float] = []
    by_address: dict[tuple[str, str], list[SeenRequest]] = {}
    for r in sorted(obs.requests, key=lambda r: r.at):
        by_address.setdefault((r.vendor, r.recipient), []).append(r)
    for (vendor, address), seen in by_address.items():
        failures = 0
        for failed, after in zip(seen, [*seen[1:], None], strict=True):
            failures = 0 if failed.step == "ok" else failures + 1
            if failures in (0, MAX_ATTEMPTS):
                failures = 0
                continue
            if after is None:
                notes.append(f"{vendor} to {address}: a {failed.step} was not retried")
                continue
            gaps.append(round(after.at - failed.at, 1))
            if after.at + SLACK_S < earliest_retry(failed):
                notes.append(
                    f"{vendor} to {address}: retried {after.at - failed.at:.1f} s after a "
                    f"{failed.step}, sooner than its back-off allows"
                )
    return notes, gaps


def _fallback(obs: ChannelObservation) -> tuple[list[str], list[str]]:
    """Broken fallback rules, and the people reached by the fallback."""
    notes = []
    reached = []
    sent_email = {
        (n.step, n.person) for n in obs.notices if n.channel == "email" and n.status == "sent"
    }
    failed_sms = [n for n in obs.notices if n.channel == "sms" and n.status == "failed"]
    for n in failed_sms:
        if (n.step, n.person) in sent_email:
            reached.append(n.person)
        else:
            notes.append(f"{n.person}: SMS {n.step} given up and no e-mail fallback sent")
    if not failed_sms:
        notes.append("no SMS notice was given up: the fallback was not exercised")
    return notes, reached


def duplicate_sends(obs: ChannelObservation) -> tuple[int, list[str]]:
    """Accepted requests beyond one per notice, and what is wrong about the receipts."""
    accepted = [r.message_id for r in obs.requests if r.message_id]
    receipts = Counter(n.receipt.split(":", 1)[-1] for n in obs.notices if n.receipt)
    notes = [f"{n.key} left {n.status}" for n in obs.notices if n.status not in ("sent", "failed")]
    unrecorded = [m for m in accepted if m not in receipts]
    if unrecorded:
        notes.append(f"{len(unrecorded)} accepted request(s) are no notice's receipt (sent twice)")
    twice = [m for m, count in receipts.items() if count > 1]
    if twice:
        notes.append(f"{len(twice)} receipt(s) on more than one notice")
    return len(unrecorded) + len(twice), notes


def judge_channel_errors(spec: FaultSpec, obs: ChannelObservation) -> ChaosResult:
    """Apply the rules of the module docstring to *obs*; each broken one is a note."""
    notes = list(obs.problems)
    if obs.incident_id is None or obs.opened_at is None:
        notes.append("no incident was opened to page for")
    notes += _scripted(obs) + _attempts(obs)
    backoff_notes, gaps = _backoff(obs)
    fallback_notes, reached = _fallback(obs)
    dupes, dupe_notes = duplicate_sends(obs)
    notes += backoff_notes + fallback_notes + dupe_notes
    if obs.escalation_state != "COMPLETED":
        notes.append(f"the escalation run ended {obs.escalation_state or 'not at all'}")
    passed = not notes
    pages = [n for n in obs.notices if n.step.startswith("page") and n.status == "sent"]
    failures = [r for r in obs.requests if r.step != "ok"]
    if passed:
        notes.append(
            f"{len(obs.requests)} request(s) to the stand-in, {len(failures)} failed as "
            f"scripted, every one on the notices' attempts; each retry {min(gaps):g}-"
            f"{max(gaps):g} s after the failed request began; fallback e-mail reached "
            f"{', '.join(reached)}"
        )
    start = obs.opened_at.timestamp() if obs.opened_at else None
    events: list[tuple[str, float]] = []
    if start is not None:
        events.append(("incident opened", 0.0))
        events += [(f"{r.vendor} {r.step}", round(r.at - start, 1)) for r in failures]
        events += [
            (f"{r.vendor} accepted", round(r.at - start, 1)) for r in obs.requests if r.message_id
        ][:6]
        if obs.resolved_at is not None:
            events.append(("resolved", round(obs.resolved_at.timestamp() - start, 1)))
    first_failure = min((r.at for r in failures), default=None)
    return ChaosResult(
        fault=spec.name,
        target="sns, sendgrid, x",
        passed=passed,
        detected_after_s=None
        if start is None or first_failure is None
        else round(first_failure - start, 1),
        incidents_opened=0 if obs.incident_id is None else 1,
        pages_sent=len(pages),
        duplicate_notices=dupes,
        rto_s=None,
        acked_writes_lost=None,
        lost_beyond_rpo=None,
        snapshots_intact=None,
        notes=notes,
        events=sorted(events, key=lambda e: e[1]),
    )
