"""pytest plugin: EC2 and Route53 for the AWS provider tests, on 127.0.0.1 only.

Register it with ``pytest_plugins = [..., "tests.aws"]`` in the top-level conftest.
Builds on :mod:`tests.s3`: the same loopback guard (``s3_loopback_only``, which also
hides ``~/.aws`` and the AWS environment) and the same session moto server, which
serves EC2 and Route53 as well as S3.

- ``moto_aws``: the moto endpoint, dummy credentials in the environment variables the
  test fleet's secret references name, and boto3 clients for the test's own set-up;
  moto is reset at teardown so no test sees another's instances or zones.
- ``aws_error_endpoint``: a :mod:`tests.standin` server answering every EC2 or
  Route53 request with the AWS error (status and code) a test sets, in each
  service's own XML shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from tests.s3 import AwsErrors, reset_moto
from tests.standin import Request, serve

#: Dummy credentials: moto accepts any; these must never appear in a message or log.
AWS_KEY_ID = "AKIAEC2SENTINELKEY9Z"
AWS_SECRET = "ec2/sentinel/secret+key/9Zq8"
AWS_KEY_ENV = "PPO_TEST_AWS_KEY_ID"
AWS_SECRET_ENV = "PPO_TEST_AWS_SECRET"


@dataclass
class MotoAws:
    """moto's endpoint and set-up clients in *region* (the test's data centre)."""

    endpoint: str
    region: str

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint,
            aws_access_key_id=AWS_KEY_ID,
            aws_secret_access_key=AWS_SECRET,
        )


@pytest.fixture
def moto_aws(
    s3_loopback_only: list[str], moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MotoAws]:
    """moto for EC2/Route53 in af-south-1; credentials only behind secret references."""
    monkeypatch.setenv(AWS_KEY_ENV, AWS_KEY_ID)
    monkeypatch.setenv(AWS_SECRET_ENV, AWS_SECRET)
    yield MotoAws(moto_s3_endpoint, "af-south-1")
    reset_moto(moto_s3_endpoint)


@dataclass
class AwsErrorEndpoint(AwsErrors):
    """EC2 and Route53 answering every request with ``status``/``code``."""

    code: str = "RequestLimitExceeded"

    def error_xml(self, request: Request) -> str:
        code = self.code
        if request.path.startswith("/2013-04-01/"):  # Route53 (REST-XML)
            return (
                '<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/'
                f'doc/2013-04-01/"><Error><Type>Sender</Type><Code>{code}</Code>'
                f"<Message>stand-in says {code}</Message></Error>"
                "<RequestId>5f1c2d3e</RequestId></ErrorResponse>"
            )
        return (  # EC2 (query protocol)
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
            f"<Message>stand-in says {code}</Message></Error></Errors>"
            "<RequestID>5f1c2d3e</RequestID></Response>"
        )


@pytest.fixture
def aws_error_endpoint(
    s3_loopback_only: list[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[AwsErrorEndpoint]:
    """An EC2/Route53 endpoint on 127.0.0.1 that only ever answers with an AWS error."""
    monkeypatch.setenv(AWS_KEY_ENV, AWS_KEY_ID)
    monkeypatch.setenv(AWS_SECRET_ENV, AWS_SECRET)
    with serve(AwsErrorEndpoint()) as endpoint:
        yield endpoint
