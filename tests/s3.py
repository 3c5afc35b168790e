"""pytest plugin: S3 for transport and mirror tests, on 127.0.0.1 only.

Register it with ``pytest_plugins = [..., "tests.s3"]`` in the top-level conftest.

- ``s3_loopback_only``: any name lookup or connection to a host that is not loopback
  fails the test at once with ``pytest.fail`` (a BaseException, so neither botocore's
  retry loop nor an ``except Exception`` in our translation can swallow it), and again
  at teardown if something swallowed it anyway. Not autouse: a plugin's autouse
  fixture would apply to the whole suite; every S3 fixture below requests it.
- ``moto_s3_endpoint``: moto's standalone server (threaded, 127.0.0.1, a free port),
  one per session, for the real boto3 client.
- ``s3_bucket`` / ``make_s3_remote``: a fresh bucket per test and a factory of
  :class:`~ppo_dr.transport.s3.S3Remote` on it, with dummy credentials passed as
  arguments. The developer's AWS environment and config files are hidden, so nothing
  from ``~/.aws`` (a profile, a real endpoint, real keys) can leak into a test.
- ``s3_error_endpoint``: a :mod:`tests.standin` S3 endpoint answering every request with the AWS
  error XML (or status) a test sets: 403 InvalidAccessKeyId, 503 SlowDown, a hang.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ppo_dr.transport.s3 import S3Remote
from tests.netguard import loopback_guard
from tests.standin import Reply, Request, StandIn, serve

#: Dummy credentials: moto accepts any; these must never appear in a message or log.
S3_KEY_ID = "AKIAS3SENTINELKEY7Q2X"
S3_SECRET = "s3/sentinel/secret+key/7Q2x9KQmZZ"
S3_REGION = "eu-west-1"

# --------------------------------------------------------------------------- loopback guard


@pytest.fixture
def s3_loopback_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """Refuse, loudly, any lookup or connection beyond 127.0.0.1 / ::1; hide ~/.aws."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with loopback_guard(monkeypatch) as attempts:
        yield attempts


# --------------------------------------------------------------------------- moto S3


@pytest.fixture(scope="session")
def moto_s3_endpoint() -> Iterator[str]:
    """moto's standalone server on 127.0.0.1 and a free port; its endpoint URL.

    One per session; it serves every AWS service the tests use (S3, EC2, Route53, SNS).
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    """Empty every moto backend (buckets, instances, zones, sent SMS)."""
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(reset, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200


RemoteFactory = Callable[..., S3Remote]


@pytest.fixture
def make_s3_remote(s3_loopback_only: list[str], moto_s3_endpoint: str) -> Iterator[RemoteFactory]:
    """``make_s3_remote(bucket, **overrides)``: an S3Remote on moto, closed at teardown."""
    made: list[S3Remote] = []

    def make(bucket: str, **overrides: Any) -> S3Remote:
        args: dict[str, Any] = {
            "region": S3_REGION,
            "endpoint_url": moto_s3_endpoint,
            "access_key_id": S3_KEY_ID,
            "secret_access_key": S3_SECRET,
            "connect_timeout": 2.0,
            "read_timeout": 10.0,
        }
        args.update(overrides)
        remote = S3Remote(bucket, **args)
        made.append(remote)
        return remote

    yield make
    for remote in made:
        remote.close()


@pytest.fixture
def s3_bucket(make_s3_remote: RemoteFactory, moto_s3_endpoint: str) -> Iterator[str]:
    """A fresh, empty bucket on moto (unique name); moto is reset at teardown."""
    name = f"ppo-dr-test-{uuid.uuid4().hex[:12]}"
    remote = make_s3_remote(name)
    remote._client.create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": S3_REGION}
    )
    yield name
    # Frees moto's memory; every bucket name is unique, so no test sees another's data.
    reset_moto(moto_s3_endpoint)


# --------------------------------------------------------------------------- error stand-in


@dataclass
class AwsErrors(StandIn):
    """Answers every request with one AWS error, ``status`` and ``code`` (and ``headers``),
    in the service's own XML; this base speaks S3's REST-XML."""

    status: int = 503
    code: str = "SlowDown"
    headers: dict[str, str] = field(default_factory=dict)

    def respond(self, request: Request) -> Reply:
        body = b"" if request.method == "HEAD" else self.error_xml(request).encode()
        return Reply(self.status, body, {"Content-Type": "text/xml", **self.headers})

    def error_xml(self, request: Request) -> str:
        """The error document; a HEAD error has no body to say why."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>stand-in says {self.code}</Message>"
            "<RequestId>4442587FB7D0A2F9</RequestId><HostId>stand-in</HostId></Error>"
        )


@pytest.fixture
def s3_error_endpoint(s3_loopback_only: list[str]) -> Iterator[AwsErrors]:
    """An S3 endpoint on 127.0.0.1 that only ever answers with an AWS error."""
    with serve(AwsErrors()) as endpoint:
        yield endpoint
