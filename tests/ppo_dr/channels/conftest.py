"""Local stand-ins for the providers, and a guard that keeps every test on 127.0.0.1.

- ``loopback_only`` (autouse): any name lookup or connection to a host that is not
  loopback fails the test at once with ``pytest.fail`` (a BaseException, so no
  ``except Exception`` in a client library or in our mapping can swallow it), and
  again at teardown if something swallowed it anyway. The real SaaS hosts are never
  contacted; a client that forgot its stand-in host fails loudly.
- ``sendgrid_server``: a :mod:`tests.standin` server that checks the v3 mail/send
  payload and answers as told (202, 400, 401, 429 with Retry-After, 500, hang).
- ``moto_sns``: the session's moto server (``tests.s3``) for the real boto3 client.
- ``SENTINELS``: secret values that must never appear in a log or an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ppo_dr.channels import MessageChannel, OutboundMessage
from ppo_dr.store import Store
from tests.netguard import loopback_guard
from tests.s3 import reset_moto
from tests.standin import HANG, Reply, Request, StandIn, serve

#: Secret values the tests hand to the channels; none may ever be printed.
SENTINELS = {
    "sendgrid": "SG.sentinel-sendgrid-key-7Q2x9",
    "aws_key_id": "AKIASENTINELKEYID7Q2X",
    "aws_secret": "sentinel/aws/secret+key/7Q2x9KQm",
    "x_consumer_key": "sentinel-x-consumer-key-7Q2x9",
    "x_consumer_secret": "sentinel-x-consumer-secret-7Q2x9",
    "x_access_token": "sentinel-x-access-token-7Q2x9",
    "x_access_token_secret": "sentinel-x-token-secret-7Q2x9",
}


def page_to_alice(
    channel: MessageChannel, recipient: str, body: str, subject: str = ""
) -> OutboundMessage:
    """Incident 1's level-1 page to alice on *channel*, keyed as the escalation keys it."""
    return OutboundMessage(f"incident-1/level-1/alice/{channel}", channel, recipient, subject, body)


def assert_no_secret(text: str) -> None:
    """Fail naming which sentinel leaked (not its value: pytest would print it anyway)."""
    leaked = [name for name, value in SENTINELS.items() if value in text]
    assert not leaked, f"secret(s) leaked: {leaked}"


# --------------------------------------------------------------------------- loopback guard


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse, loudly, any lookup or connection beyond 127.0.0.1 / ::1."""
    with loopback_guard(monkeypatch) as attempts:
        yield attempts


# --------------------------------------------------------------------------- SendGrid stand-in


#: SendGrid's answers by name, as the v3 API words them.
SENDGRID_ERRORS = {
    "400": Reply.json(
        400, {"errors": [{"message": "Does not contain a valid address.", "field": "to"}]}
    ),
    "401": Reply.json(
        401, {"errors": [{"message": "The provided authorization grant is invalid."}]}
    ),
    "429": Reply.json(429, {"errors": [{"message": "too many requests"}]}, {"Retry-After": "7"}),
}


@dataclass
class SendGridStandIn(StandIn):
    """What the stand-in saw, and how it answers the next requests."""

    answer: str = "202"  # 202 | 400 | 401 | 429 | 500 | hang (any other status: a 5xx body)
    answers: list[str] = field(default_factory=list)  # consumed first, one per request
    problems: list[str] = field(default_factory=list)

    def respond(self, request: Request) -> Reply:
        """Check the mail/send contract, then answer as scripted."""
        answer = self.answers.pop(0) if self.answers else self.answer
        problems = _check_mail_send(request.path, request.headers, request.json())
        if problems:
            self.problems.extend(problems)
            return Reply.json(400, {"errors": [{"message": "; ".join(problems)}]})
        if answer == "hang":
            return HANG
        if answer == "202":
            return Reply(202, headers={"X-Message-Id": f"sg-{len(self.requests)}"})
        return SENDGRID_ERRORS.get(
            answer, Reply.json(int(answer), {"errors": [{"message": "internal error"}]})
        )


def _check_mail_send(path: str, headers: Any, payload: Any) -> list[str]:
    """The v3 mail/send contract the real API enforces, as far as our messages use it."""
    problems = []
    if path != "/v3/mail/send":
        problems.append(f"path {path}")
    if headers.get("Authorization") != f"Bearer {SENTINELS['sendgrid']}":
        problems.append("Authorization header missing or wrong")
    if headers.get("Content-Type") != "application/json":
        problems.append("Content-Type")
    try:
        if not payload["from"]["email"]:
            problems.append("from")
        if not payload["personalizations"][0]["to"][0]["email"]:
            problems.append("to")
        if not payload["subject"]:
            problems.append("subject")
        content = payload["content"][0]
        if content["type"] != "text/plain" or not content["value"]:
            problems.append("content")
    except (KeyError, IndexError, TypeError):
        problems.append("payload shape")
    return problems


@pytest.fixture
def sendgrid_server() -> Iterator[SendGridStandIn]:
    """A local v3 API: checks each mail/send and answers as ``stand_in.answer`` says."""
    with serve(SendGridStandIn()) as stand_in:
        yield stand_in


# --------------------------------------------------------------------------- moto SNS


@pytest.fixture
def moto_sns(moto_s3_endpoint: str) -> Iterator[str]:
    """The session moto endpoint (it serves SNS too), reset so the SMS list starts empty."""
    reset_moto(moto_s3_endpoint)
    yield moto_s3_endpoint


# --------------------------------------------------------------------------- store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real SQLite store at schema head."""
    with Store(f"sqlite:///{tmp_path / 'state' / 'store.db'}") as store:
        store.upgrade()
        yield store
