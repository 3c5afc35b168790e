"""The lab's stand-in for SNS, SendGrid and X, driven by the real client libraries.

The channels are built from fleet settings whose ``endpoint_url`` names the stand-in
(boto3, sendgrid and tweepy each sending to it), and the stand-in is scripted to
answer 500, 429 and nothing before it accepts: each channel must turn those into the
right typed errors, and the stand-in must log every request with what it answered.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.channels import (
    ChannelTransientError,
    OutboundMessage,
    SendGridEmail,
    SnsSms,
    XStatus,
    build_channels,
)
from ppo_dr.lab.standin import RETRY_AFTER_S, StandIn, check_script, make_server, read_requests
from tests.ppo_dr.channels.test_outbox_and_secrets import fleet_with
from tests.threads import serving

ADDRESS = {"sms": "+27821234567", "email": "anna@example.org", "x": "public"}
VENDOR = {"sms": "sns", "email": "sendgrid", "x": "x"}


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[str]:
    stop = threading.Event()
    server = make_server(StandIn(tmp_path, hold_s=1.0), stop)
    with serving(server, 0.05):
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            stop.set()  # held requests let go before the server stops


def _post(url: str, path: str, body: object) -> int:
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    status = connection.getresponse().status
    connection.close()
    return status


def test_each_real_client_sees_500_429_and_silence_then_gets_a_receipt(
    standin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPO_TEST_STANDIN", "any-key")
    ref = {"env": "PPO_TEST_STANDIN"}
    keys = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")
    fleet = fleet_with(
        {
            "email": {"provider": "sendgrid", "api_key": ref, "endpoint_url": standin},
            "sms": {
                "provider": "sns",
                "region": "us-east-1",
                "access_key_id": ref,
                "secret_access_key": ref,
                "endpoint_url": standin,
            },
            "x": {"provider": "x", **{k: ref for k in keys}, "endpoint_url": standin},
        }
    )
    channels = build_channels(fleet)
    assert isinstance(channels["email"], SendGridEmail)
    assert isinstance(channels["sms"], SnsSms)
    assert isinstance(channels["x"], XStatus)
    steps = ["500", "429", "timeout"]
    assert _post(standin, "/_script", {v: steps for v in VENDOR.values()}) == 204
    for kind, channel in channels.items():
        message = OutboundMessage(f"k-{kind}", kind, ADDRESS[kind], "subject", f"body {kind}")
        errors = []
        for _ in steps:
            with pytest.raises(ChannelTransientError) as caught:
                channel.send(message)
            errors.append(caught.value)
        assert [e.status for e in errors[:2]] == [500, 429]
        assert errors[1].retry_after is not None
        assert errors[1].retry_after == pytest.approx(RETRY_AFTER_S, abs=1.5)
        receipt = channel.send(message)
        seen = [r for r in read_requests(tmp_path) if r.vendor == VENDOR[kind]]
        assert [(r.recipient, r.step) for r in seen] == [(ADDRESS[kind], s) for s in steps] + [
            (ADDRESS[kind], "ok")
        ]
        assert receipt.message_id == seen[-1].message_id


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ({"pigeon": ["ok"]}, "unknown vendor"),
        ({"sns": ["503"]}, "each one of"),
        ({"sns": "500"}, "a list of steps"),
    ],
)
def test_a_bad_script_is_refused_and_changes_nothing(
    standin: str, tmp_path: Path, script: dict[str, object], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        check_script(script)
    assert _post(standin, "/_script", script) == 400
    assert _post(standin, "/_script", ["not", "a", "mapping"]) == 400
    mail = {"personalizations": [{"to": [{"email": "anna@example.org"}]}]}
    assert _post(standin, "/v3/mail/send", mail) == 202  # still unscripted: accepted
    assert [(r.vendor, r.step) for r in read_requests(tmp_path)] == [("sendgrid", "ok")]
