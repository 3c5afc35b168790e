"""The AWS provider against moto's server with the real boto3 client, on loopback only.

The SSH reachability check always targets the loopback OpenSSH sshd (tests/sshd.py),
never the fake instance address moto hands out: the loopback guard fails the test if
anything tries.
"""

from __future__ import annotations

import base64
import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ppo_dr.errors import AuthError, HostKeyError, PermanentError, TransientError, UnsafeInputError
from ppo_dr.failover.plan import ProvisionRequest
from ppo_dr.inventory import Fleet, parse_fleet
from ppo_dr.providers import ProviderError, provider_for
from ppo_dr.providers.aws import SERVER_TAG, AwsProvider
from ppo_dr.providers.aws_host_keys import (
    check_ssh_host_key,
    console_host_key,
    host_key_from_console,
)
from ppo_dr.store import Store
from tests.aws import AWS_KEY_ENV, AWS_KEY_ID, AWS_SECRET, AWS_SECRET_ENV, AwsErrorEndpoint, MotoAws
from tests.sshd import SshdServer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "fleet.yaml"
TEMPLATE = "ppo-app-server"
MIRRORS = ("mirror-jhb1-1", "mirror-cpt1-1")
REQUEST = ProvisionRequest(server_id="app-jhb1-f00d01-1", dc="jhb1", mirrors=MIRRORS)
FAST = {"wait_delay": 1, "running_timeout": 30, "boot_timeout": 3, "dns_timeout": 30}


def make_fleet(zone: str | None = "Z0123456789ABCDEFGHIJ") -> Fleet:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for dc in doc["data_centres"]:
        if dc["id"] == "jhb1":
            dc.update(
                launch_template=TEMPLATE,
                access_key_id={"env": AWS_KEY_ENV},
                secret_access_key={"env": AWS_SECRET_ENV},
            )
            if zone is None:
                dc.pop("hosted_zone_id", None)
            else:
                dc["hosted_zone_id"] = zone
    return parse_fleet(yaml.safe_dump(copy.deepcopy(doc)), "fleet.yaml")


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = Store(url)
    try:
        store.upgrade()
        store.seed_placements({c.id: c.server for c in make_fleet().clients})
    finally:
        store.close()
    return url


@pytest.fixture
def zone(moto_aws: MotoAws) -> str:
    answer = moto_aws.client("route53").create_hosted_zone(
        Name="ppo.example.", CallerReference="ppo-dr-test"
    )
    return str(answer["HostedZone"]["Id"]).rsplit("/", 1)[-1]


@pytest.fixture
def template(moto_aws: MotoAws) -> str:
    ec2 = moto_aws.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName=TEMPLATE,
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
    )
    return TEMPLATE


class LoopbackSsh:
    """The injected SSH check: records where the provider meant to connect, then runs
    the real key check against the loopback sshd instead."""

    def __init__(self, sshd: SshdServer) -> None:
        self.sshd = sshd
        self.asked: list[tuple[str, int, str]] = []

    def __call__(self, host: str, port: int, host_key: str) -> None:
        self.asked.append((host, port, host_key))
        check_ssh_host_key(self.sshd.host, self.sshd.port, host_key, timeout=5.0)


def make_provider(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str | None, **options: Any
) -> AwsProvider:
    settings: dict[str, Any] = {
        "endpoint_url": moto_aws.endpoint,
        "host_key_source": lambda _ec2, _instance: sshd.host_public_key,
        "ssh_check": LoopbackSsh(sshd),
        **FAST,
    }
    settings.update(options)
    provider = provider_for(
        make_fleet(zone), "jhb1", fleet_file=EXAMPLE, store_url=store_url, **settings
    )
    assert isinstance(provider, AwsProvider)
    return provider


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


# --------------------------------------------------------------------------- provision


def test_provision_launches_from_the_template_and_pins_the_host_key(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str, template: str
) -> None:
    provider = make_provider(moto_aws, store_url, sshd, zone)
    seen_before = sshd.connections_seen()

    got = provider.provision(REQUEST)

    assert got.created and got.provider == "aws"
    instance_id = got.detail["instance_id"]
    ec2 = moto_aws.client("ec2")
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] == "running"
    assert tags_of(instance)[SERVER_TAG] == REQUEST.server_id
    assert tags_of(instance)["Name"] == REQUEST.server_id
    assert tags_of(instance)["ppo-dr:dc"] == "jhb1"
    server = got.server
    assert (server.id, server.dc, server.role, server.mirrors) == (
        REQUEST.server_id,
        "jhb1",
        "app",
        MIRRORS,
    )
    assert server.ssh is not None and server.http is not None
    assert server.ssh.host == instance["PublicIpAddress"] == got.detail["address"]
    assert server.ssh.host_key == sshd.host_public_key
    assert server.http.host == server.ssh.host
    check = provider.ssh_check
    assert isinstance(check, LoopbackSsh)
    assert check.asked == [(instance["PublicIpAddress"], 22, sshd.host_public_key)]
    assert sshd.connections_seen() > seen_before  # the key exchange really happened


def test_a_rerun_finds_the_same_instance(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str, template: str
) -> None:
    provider = make_provider(moto_aws, store_url, sshd, zone)
    first = provider.provision(REQUEST)
    again = make_provider(moto_aws, store_url, sshd, zone).provision(REQUEST)

    assert not again.created
    assert again.detail["instance_id"] == first.detail["instance_id"]
    assert again.server == first.server
    assert len(provider.instances(REQUEST.server_id)) == 1


def test_release_terminates_and_a_new_provision_gets_a_new_instance(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str, template: str
) -> None:
    provider = make_provider(moto_aws, store_url, sshd, zone)
    first = provider.provision(REQUEST)

    provider.release(REQUEST.server_id)
    provider.release(REQUEST.server_id)  # gone already: fine

    ec2 = moto_aws.client("ec2")
    old = ec2.describe_instances(InstanceIds=[first.detail["instance_id"]])
    assert old["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    assert provider.instances(REQUEST.server_id) == []
    again = provider.provision(REQUEST)
    assert again.created and again.detail["instance_id"] != first.detail["instance_id"]


def test_release_is_refused_while_a_client_is_placed_there(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str, template: str
) -> None:
    provider = make_provider(moto_aws, store_url, sshd, zone)
    provider.provision(REQUEST)
    store = Store(store_url)
    try:
        placement = store.placement("acme-mining")
        assert placement is not None
        store.move_client("acme-mining", REQUEST.server_id, placement.version)
    finally:
        store.close()

    with pytest.raises(ProviderError, match="still hosts clients \\(acme-mining\\)"):
        provider.release(REQUEST.server_id)
    assert len(provider.instances(REQUEST.server_id, ("running",))) == 1


def test_a_host_key_other_than_the_console_one_is_refused(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str, template: str
) -> None:
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBc8S/DgXEKaFYyc7BR+I4z9Ipxyu6sNZ0TNLfJxZUnT"
    provider = make_provider(
        moto_aws, store_url, sshd, zone, host_key_source=lambda _ec2, _instance: other
    )
    with pytest.raises(HostKeyError, match="not the one its console output printed"):
        provider.provision(REQUEST)


def test_console_output_without_host_keys_means_still_booting(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str, template: str
) -> None:
    """The default key source asks EC2 for the console output (moto's has no keys)."""
    provider = make_provider(moto_aws, store_url, sshd, zone, host_key_source=console_host_key)
    with pytest.raises(TransientError, match="has not printed its SSH host keys"):
        provider.provision(REQUEST)
    check = provider.ssh_check
    assert isinstance(check, LoopbackSsh) and check.asked == []  # never connected


def test_an_unknown_launch_template_is_permanent(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str
) -> None:
    provider = make_provider(moto_aws, store_url, sshd, zone)
    with pytest.raises(PermanentError, match="run_instances") as caught:
        provider.provision(REQUEST)
    assert not isinstance(caught.value, TransientError)


@dataclass
class FailingAws:
    """A provider whose EC2 and Route53 are the error stand-in."""

    endpoint: AwsErrorEndpoint
    provider: AwsProvider

    def answering(self, status: int, code: str) -> AwsProvider:
        """The provider, every AWS call now answered with *status* / *code*."""
        self.endpoint.status, self.endpoint.code = status, code
        return self.provider


@pytest.fixture
def failing_aws(
    aws_error_endpoint: AwsErrorEndpoint, store_url: str, sshd: SshdServer
) -> FailingAws:
    endpoint = MotoAws(aws_error_endpoint.url, "af-south-1")
    provider = make_provider(endpoint, store_url, sshd, "Z0123456789ABCDEFGHIJ", max_attempts=1)
    return FailingAws(aws_error_endpoint, provider)


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (ProvisionRequest("app;rm -rf /", "jhb1"), UnsafeInputError),
        (ProvisionRequest("app-lon1-x", "lon1"), ProviderError),
        (ProvisionRequest("app-jhb1-x", "jhb1", template="db"), ProviderError),
        (ProvisionRequest("app-jhb1-x", "jhb1", mirrors=("mirror-jhb1-1",)), ProviderError),
        (
            ProvisionRequest("app-jhb1-x", "jhb1", mirrors=("app-jhb1-2", "mirror-cpt1-1")),
            ProviderError,
        ),
    ],
)
def test_bad_requests_are_refused_before_any_call(
    failing_aws: FailingAws, request_: ProvisionRequest, error: type[Exception]
) -> None:
    with pytest.raises(error):
        failing_aws.provider.provision(request_)
    assert failing_aws.endpoint.requests == []


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (503, "RequestLimitExceeded", TransientError),
        (500, "InternalError", TransientError),
        (400, "InsufficientInstanceCapacity", TransientError),
        (401, "AuthFailure", AuthError),
        (403, "UnauthorizedOperation", AuthError),
        (400, "InvalidLaunchTemplateName.NotFoundException", PermanentError),
    ],
)
def test_ec2_errors_are_classified(
    failing_aws: FailingAws, status: int, code: str, error: type[Exception]
) -> None:
    provider = failing_aws.answering(status, code)
    with pytest.raises(error) as caught:
        provider.provision(REQUEST)
    if error is PermanentError:
        assert not isinstance(caught.value, TransientError | AuthError)
    assert code in str(caught.value)
    assert AWS_KEY_ID not in str(caught.value) and AWS_SECRET not in str(caught.value)
    assert failing_aws.endpoint.requests  # it did ask (through the stand-in)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(400, "Throttling", TransientError), (403, "AccessDenied", AuthError)],
)
def test_route53_errors_are_classified(
    failing_aws: FailingAws, status: int, code: str, error: type[Exception]
) -> None:
    provider = failing_aws.answering(status, code)
    with pytest.raises(error, match=code):
        provider.route("acme-mining", "app-jhb1-2")
    # A fleet server's address needs no EC2 call: only Route53 was asked.
    assert failing_aws.endpoint.requests
    assert all(seen.path.startswith("/2013-04-01/") for seen in failing_aws.endpoint.requests)


def test_unset_credentials_are_named_not_guessed(
    moto_aws: MotoAws,
    store_url: str,
    sshd: SshdServer,
    zone: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(AWS_SECRET_ENV)
    provider = make_provider(moto_aws, store_url, sshd, zone)
    with pytest.raises(PermanentError, match=f"env:{AWS_SECRET_ENV} is not set"):
        provider.provision(REQUEST)


# --------------------------------------------------------------------------- route


def record(moto_aws: MotoAws, zone: str, name: str) -> dict[str, Any]:
    """The one record set of *name* (a name never holds both a CNAME and an A)."""
    sets = moto_aws.client("route53").list_resource_record_sets(HostedZoneId=zone)
    (found,) = [r for r in sets["ResourceRecordSets"] if r["Name"] == name]
    return dict(found)


def test_route_upserts_the_clients_record_to_the_instance(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str, template: str
) -> None:
    provider = make_provider(moto_aws, store_url, sshd, zone)
    got = provider.provision(REQUEST)

    receipt = provider.route("acme-mining", REQUEST.server_id)

    address = got.detail["address"]
    assert f"acme-mining.ppo.example A {address}" in receipt and "INSYNC" in receipt
    rec = record(moto_aws, zone, "acme-mining.ppo.example.")
    assert rec["Type"] == "A" and rec["TTL"] == 60
    assert rec["ResourceRecords"] == [{"Value": address}]

    # To a fleet server named by DNS: the A record is replaced by a CNAME, atomically.
    receipt = provider.route("acme-mining", "app-jhb1-2")
    assert "CNAME app2.jhb1.ppo.example" in receipt
    rec = record(moto_aws, zone, "acme-mining.ppo.example.")
    assert rec["Type"] == "CNAME"
    assert rec["ResourceRecords"] == [{"Value": "app2.jhb1.ppo.example"}]

    # And back: a rerun of the same route is a plain UPSERT of the same value.
    for _ in range(2):
        provider.route("acme-mining", REQUEST.server_id)
    rec = record(moto_aws, zone, "acme-mining.ppo.example.")
    assert (rec["Type"], rec["ResourceRecords"]) == ("A", [{"Value": address}])


def test_route_without_a_hosted_zone_says_so(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer
) -> None:
    provider = make_provider(moto_aws, store_url, sshd, zone=None)
    with pytest.raises(ProviderError, match="names no hosted_zone_id"):
        provider.route("acme-mining", "app-jhb1-2")


def test_route_to_an_unknown_server_is_permanent(
    moto_aws: MotoAws, store_url: str, sshd: SshdServer, zone: str
) -> None:
    provider = make_provider(moto_aws, store_url, sshd, zone)
    with pytest.raises(
        PermanentError, match="neither a fleet server with HTTP nor a running instance"
    ):
        provider.route("acme-mining", "app-jhb1-nowhere")


# --------------------------------------------------------------------------- host keys


def _key(key_type: str) -> str:
    name = key_type.encode()
    return base64.b64encode(len(name).to_bytes(4, "big") + name + b"\x00" * 36).decode()


ED25519, ECDSA = _key("ssh-ed25519"), _key("ecdsa-sha2-nistp256")

CONSOLE = f"""\
[   12.3] cloud-init[812]: Cloud-init v. 23.4 finished
-----BEGIN SSH HOST KEY FINGERPRINTS-----
256 SHA256:abc root@ip-10-0-0-1 (ECDSA)
256 SHA256:def root@ip-10-0-0-1 (ED25519)
-----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
ecdsa-sha2-nistp256 {ECDSA} root@ip-10-0-0-1
ssh-ed25519 {ED25519} root@ip-10-0-0-1
-----END SSH HOST KEY KEYS-----
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CONSOLE, f"ssh-ed25519 {ED25519}"),
        (CONSOLE.replace(f"ssh-ed25519 {ED25519}", ""), f"ecdsa-sha2-nistp256 {ECDSA}"),
        # Amazon Linux prefixes each line.
        (CONSOLE.replace("ssh-ed25519", "ec2: ssh-ed25519"), f"ssh-ed25519 {ED25519}"),
        # A reboot prints the block again: the last one wins.
        (
            CONSOLE.replace(ED25519, _key("ssh-ed25519").replace("A", "B", 1)) + CONSOLE,
            f"ssh-ed25519 {ED25519}",
        ),
        # A blob that does not name its own type is not a key.
        (
            CONSOLE.replace(f"ssh-ed25519 {ED25519}", f"ssh-ed25519 {ECDSA}"),
            f"ecdsa-sha2-nistp256 {ECDSA}",
        ),
        ("booting...\n", None),
        ("-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAA", None),  # not finished yet
        (
            "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 not!base64\n"
            "-----END SSH HOST KEY KEYS-----",
            None,
        ),
    ],
)
def test_host_key_from_console(text: str, expected: str | None) -> None:
    assert host_key_from_console(text) == expected


def test_check_ssh_host_key_against_a_real_sshd(
    sshd: SshdServer, s3_loopback_only: list[str]
) -> None:
    check_ssh_host_key(sshd.host, sshd.port, sshd.host_public_key)
    logins = sshd.accepted_logins()
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBc8S/DgXEKaFYyc7BR+I4z9Ipxyu6sNZ0TNLfJxZUnT"
    with pytest.raises(HostKeyError):
        check_ssh_host_key(sshd.host, sshd.port, other)
    assert sshd.accepted_logins() == logins  # nothing of ours was offered
    with pytest.raises(TransientError, match="not reachable"):
        check_ssh_host_key("127.0.0.1", 1, sshd.host_public_key, timeout=2.0)


def test_credentials_never_reach_the_logs(
    moto_aws: MotoAws,
    store_url: str,
    sshd: SshdServer,
    zone: str,
    template: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """botocore logs requests (signed headers) at DEBUG: the references' values are masked."""
    from ppo_dr.secret_refs import REDACTOR

    REDACTOR.install()
    caplog.set_level(logging.DEBUG)
    provider = make_provider(moto_aws, store_url, sshd, zone)
    got = provider.provision(REQUEST)
    provider.route("acme-mining", got.server.id)
    provider.release(got.server.id)

    assert "RunInstances" in caplog.text  # botocore did log the calls, at DEBUG
    assert AWS_KEY_ID not in caplog.text and AWS_SECRET not in caplog.text
