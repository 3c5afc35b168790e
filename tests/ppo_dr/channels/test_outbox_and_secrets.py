"""The outbox file, secret references, the redacting log filter, and build_channels."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

import pytest
from pydantic import SecretStr

from ppo_dr.channels import (
    REDACTOR,
    ChannelPermanentError,
    Endpoints,
    OutboundMessage,
    Outbox,
    SendGridEmail,
    SnsSms,
    XStatus,
    build_channels,
    describe_channels,
    read_outbox,
    resolve_secret,
)
from ppo_dr.errors import PermanentError
from ppo_dr.inventory import Channels, Fleet, SecretRef
from tests.threads import run_in_threads

from .conftest import SENTINELS, SendGridStandIn, assert_no_secret

# --------------------------------------------------------------------------- outbox


def test_outbox_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "lab" / "outbox.jsonl"
    outbox = Outbox(path)
    messages = [
        OutboundMessage("k/email", "email", "alice@example.org", "[P1] down", "Körper ✓"),
        OutboundMessage("k/sms", "sms", "+27821234567", "", "short"),
        OutboundMessage("k/x", "x", "public", "", "Investigating"),
    ]
    receipts = [outbox.send(m) for m in messages]

    lines = read_outbox(path)
    assert [line["id"] for line in lines] == [r.message_id for r in receipts]
    assert all(r.provider == "outbox" for r in receipts)
    for line, message in zip(lines, messages, strict=True):
        assert {k: line[k] for k in ("channel", "recipient", "subject", "body", "key")} == {
            "channel": message.channel,
            "recipient": message.recipient,
            "subject": message.subject,
            "body": message.body,
            "key": message.key,
        }
        assert line["at"].endswith("+00:00")
    assert path.read_text(encoding="utf-8").count("\n") == 3


def test_outbox_appends_from_many_threads_stay_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    body = "x" * 5000  # longer than a pipe buffer: only the lock keeps lines whole

    def writer(n: int) -> None:
        outbox = Outbox(path)  # one instance per "process"
        for i in range(20):
            outbox.send(OutboundMessage(f"t{n}/{i}", "sms", "+27821234567", "", body))

    run_in_threads(writer, 6)
    lines = read_outbox(path)
    assert len(lines) == 120
    assert {line["key"] for line in lines} == {f"t{n}/{i}" for n in range(6) for i in range(20)}


def test_outbox_on_a_directory_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ChannelPermanentError, match="not a file"):
        Outbox(tmp_path)


def test_reading_a_missing_outbox_is_empty(tmp_path: Path) -> None:
    assert read_outbox(tmp_path / "none.jsonl") == []


# --------------------------------------------------------------------------- secrets


def test_env_secret_resolves_to_a_masked_secretstr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPO_TEST_SG_KEY", SENTINELS["sendgrid"])
    value = resolve_secret(SecretRef(env="PPO_TEST_SG_KEY"))
    assert value.get_secret_value() == SENTINELS["sendgrid"]
    assert_no_secret(str(value) + repr(value))


@pytest.mark.parametrize("value", [None, ""])
def test_missing_env_secret_names_the_reference(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("PPO_TEST_MISSING", raising=False)
    else:
        monkeypatch.setenv("PPO_TEST_MISSING", value)
    with pytest.raises(PermanentError, match="secret env:PPO_TEST_MISSING is not set"):
        resolve_secret(SecretRef(env="PPO_TEST_MISSING"))


def test_block_secrets_go_through_the_injected_resolver() -> None:
    asked: list[str] = []

    def resolver(name: str) -> str | SecretStr | None:
        asked.append(name)
        known: dict[str, str | SecretStr] = {
            "x-key": SecretStr(SENTINELS["x_consumer_key"]),
            "plain": "p" * 12,
        }
        return known.get(name)

    assert (
        resolve_secret(SecretRef(block="x-key"), resolver).get_secret_value()
        == (SENTINELS["x_consumer_key"])
    )
    assert resolve_secret(SecretRef(block="plain"), resolver).get_secret_value() == "p" * 12
    with pytest.raises(PermanentError, match="block:absent is not set"):
        resolve_secret(SecretRef(block="absent"), resolver)
    assert asked == ["x-key", "plain", "absent"]


def test_block_without_resolver_and_a_failing_resolver_are_permanent_and_quiet() -> None:
    with pytest.raises(PermanentError, match="no block resolver"):
        resolve_secret(SecretRef(block="sendgrid"))

    def broken(name: str) -> str:
        raise RuntimeError(f"server said: {SENTINELS['aws_secret']}")

    def missing(name: str) -> str:
        raise KeyError(name)

    with pytest.raises(
        PermanentError, match=r"block:sendgrid could not be loaded \(RuntimeError\)"
    ) as caught:
        resolve_secret(SecretRef(block="sendgrid"), broken)
    assert_no_secret("".join(traceback.format_exception(caught.value)))
    with pytest.raises(PermanentError, match="is not set"):
        resolve_secret(SecretRef(block="sendgrid"), missing)


def test_vendor_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    REDACTOR.protect(SENTINELS["aws_secret"])
    REDACTOR.install()
    logging.getLogger("botocore.credentials").warning("found key %s", SENTINELS["aws_secret"])
    logging.getLogger("requests_oauthlib").debug("signing with %s", SENTINELS["aws_secret"])
    assert_no_secret(caplog.text)
    assert caplog.text.count("***") == 2


# --------------------------------------------------------------------------- build_channels


def fleet_with(channels: dict[str, object]) -> Fleet:
    """build_channels reads only ``fleet.channels``: skip the topology for these tests."""
    return Fleet.model_construct(
        name="t", data_centres=(), servers=(), channels=Channels.model_validate(channels)
    )


def test_outbox_by_default_one_file_for_all(tmp_path: Path) -> None:
    built = build_channels(fleet_with({"outbox": str(tmp_path / "o.jsonl")}))
    assert set(built) == {"email", "sms", "x"}
    assert all(isinstance(c, Outbox) for c in built.values())
    assert len({id(c) for c in built.values()}) == 1
    assert describe_channels(built) == "email=outbox sms=outbox x=outbox"


def test_outbox_without_a_path_lives_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    built = build_channels(fleet_with({}))
    assert isinstance(built["email"], Outbox)
    assert built["email"].path == tmp_path / "home" / "outbox.jsonl"


def test_real_providers_from_fleet_references(
    monkeypatch: pytest.MonkeyPatch, sendgrid_server: SendGridStandIn, moto_sns: str
) -> None:
    monkeypatch.setenv("PPO_TEST_SG", SENTINELS["sendgrid"])
    monkeypatch.setenv("PPO_TEST_AWS_ID", SENTINELS["aws_key_id"])
    monkeypatch.setenv("PPO_TEST_AWS_SECRET", SENTINELS["aws_secret"])
    blocks = {
        "x-ck": SENTINELS["x_consumer_key"],
        "x-cs": SENTINELS["x_consumer_secret"],
        "x-at": SENTINELS["x_access_token"],
        "x-ats": SENTINELS["x_access_token_secret"],
    }
    fleet = fleet_with(
        {
            "email": {
                "provider": "sendgrid",
                "sender": "noc@example.com",
                "api_key": {"env": "PPO_TEST_SG"},
            },
            "sms": {
                "provider": "sns",
                "region": "eu-west-1",
                "access_key_id": {"env": "PPO_TEST_AWS_ID"},
                "secret_access_key": {"env": "PPO_TEST_AWS_SECRET"},
            },
            "x": {
                "provider": "x",
                "consumer_key": {"block": "x-ck"},
                "consumer_secret": {"block": "x-cs"},
                "access_token": {"block": "x-at"},
                "access_token_secret": {"block": "x-ats"},
            },
        }
    )
    built = build_channels(
        fleet,
        blocks.get,
        endpoints=Endpoints(sendgrid_host=sendgrid_server.url, sns_endpoint_url=moto_sns),
    )
    assert isinstance(built["email"], SendGridEmail)
    assert isinstance(built["sms"], SnsSms)
    assert isinstance(built["x"], XStatus)
    assert describe_channels(built) == "email=sendgrid sms=sns x=x"
    # The resolved key reaches the stand-in (which checks the Authorization header).
    built["email"].send(OutboundMessage("k", "email", "a@example.org", "s", "b"))
    built["sms"].send(OutboundMessage("k", "sms", "+27821234567", "", "b"))
    assert sendgrid_server.problems == []


def test_a_missing_secret_fails_the_build_naming_the_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PPO_TEST_NO_SUCH_KEY", raising=False)
    fleet = fleet_with(
        {"email": {"provider": "sendgrid", "api_key": {"env": "PPO_TEST_NO_SUCH_KEY"}}}
    )
    with pytest.raises(PermanentError, match="env:PPO_TEST_NO_SUCH_KEY"):
        build_channels(fleet)


def test_outbox_lines_are_json(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    Outbox(path).send(OutboundMessage("k", "x", "public", "", 'quote " and \n newline'))
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["body"] == 'quote " and \n newline'
