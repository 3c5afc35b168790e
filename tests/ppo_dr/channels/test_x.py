"""X: the real tweepy client, its HTTP layer intercepted by a requests transport adapter
that forwards ``api.twitter.com`` to a local stand-in of ``POST /2/tweets``."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from pydantic import SecretStr
from requests.adapters import HTTPAdapter

from ppo_dr.channels import (
    ChannelPermanentError,
    ChannelTransientError,
    OutboundMessage,
    XSettings,
    XStatus,
    x_length,
)
from ppo_dr.errors import is_retryable
from tests.standin import HANG, Reply, Request, StandIn, serve

from .conftest import SENTINELS, assert_no_secret

POST = OutboundMessage(
    key="incident-1/public-1/public/x",
    channel="x",
    recipient="public",
    subject="",
    body=(
        "Investigating: some customers cannot reach their service since 09:12 UTC."
        " Next update 09:45."
    ),
)


#: X's answers by name, as API v2 words them.
X_ERRORS = {
    "401": {"title": "Unauthorized", "detail": "Unauthorized", "status": 401},
    "403-duplicate": {
        "detail": "You are not allowed to create a Tweet with duplicate content.",
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
    },
}


@dataclass
class XStandIn(StandIn):
    """A local ``POST /2/tweets`` that checks the OAuth 1.0a header and the JSON body."""

    answer: str = "201"  # 201 | 401 | 403-duplicate | 429 | 500 | hang
    problems: list[str] = field(default_factory=list)

    def respond(self, request: Request) -> Reply:
        payload = request.json()
        auth = request.headers.get("Authorization", "")
        if request.path != "/2/tweets":
            self.problems.append(f"path {request.path}")
        if not auth.startswith("OAuth ") or "oauth_signature=" not in auth:
            self.problems.append("no OAuth 1.0a signature")
        if f'oauth_consumer_key="{SENTINELS["x_consumer_key"]}"' not in auth:
            self.problems.append("wrong consumer key")
        if f'oauth_token="{SENTINELS["x_access_token"]}"' not in auth:
            self.problems.append("wrong access token")
        if not isinstance(payload, dict) or set(payload) != {"text"}:
            self.problems.append("body is not {'text': ...}")
        if self.answer == "hang":
            return HANG
        if self.answer == "201":
            return Reply.json(201, {"data": {"id": "1862000000000000001", "text": payload["text"]}})
        if self.answer == "429":
            reset = str(int(time.time()) + 30)
            return Reply.json(429, {"title": "Too Many Requests"}, {"x-rate-limit-reset": reset})
        body = X_ERRORS.get(self.answer, {"title": "Internal Server Error"})
        return Reply.json(int(self.answer.split("-")[0]), body)


@pytest.fixture
def x_server() -> Iterator[XStandIn]:
    """A local ``POST /2/tweets`` that checks the OAuth 1.0a header and the JSON body."""
    with serve(XStandIn()) as stand_in:
        yield stand_in


class ForwardToStandIn(HTTPAdapter):
    """Intercepts tweepy's HTTP layer: the API host's requests go to the local stand-in."""

    def __init__(self, base: str) -> None:
        super().__init__(max_retries=0)
        self.base = base
        self.intercepted: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.intercepted.append(f"{request.method} {request.url}")
        parts = urlsplit(str(request.url))
        request.url = self.base + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().send(request, **kwargs)


def channel(x_server: XStandIn, timeout: float = 2.0) -> tuple[XStatus, ForwardToStandIn]:
    adapter = ForwardToStandIn(x_server.url)
    settings = XSettings(
        consumer_key=SecretStr(SENTINELS["x_consumer_key"]),
        consumer_secret=SecretStr(SENTINELS["x_consumer_secret"]),
        access_token=SecretStr(SENTINELS["x_access_token"]),
        access_token_secret=SecretStr(SENTINELS["x_access_token_secret"]),
        timeout=timeout,
    )
    return XStatus(settings, adapter=adapter), adapter


def test_a_status_is_posted_with_oauth1_and_the_post_id_is_the_receipt(
    x_server: XStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    x, adapter = channel(x_server)
    receipt = x.send(POST)

    assert str(receipt) == "x:1862000000000000001"
    assert adapter.intercepted == ["POST https://api.twitter.com/2/tweets"]
    assert x_server.problems == []
    assert x_server.requests[0].json() == {"text": POST.body}
    # requests-oauthlib logs the consumer key and token at DEBUG; tweepy logs bodies.
    assert_no_secret(caplog.text)


@pytest.mark.parametrize(
    ("answer", "error", "match", "retryable"),
    [
        ("401", ChannelPermanentError, "x 401: credentials refused", False),
        ("403-duplicate", ChannelPermanentError, "duplicate text refused", False),
        ("429", ChannelTransientError, "x 429: rate limited; retry after", True),
        ("500", ChannelTransientError, "x 500", True),
        ("503", ChannelTransientError, "x 503", True),
    ],
)
def test_each_status_maps_to_a_typed_error_without_secrets(
    x_server: XStandIn,
    caplog: pytest.LogCaptureFixture,
    answer: str,
    error: type[Exception],
    match: str,
    retryable: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    x_server.answer = answer
    x, _ = channel(x_server)
    with pytest.raises(error, match=match) as caught:
        x.send(POST)
    assert is_retryable(caught.value) is retryable
    if answer == "429":
        assert 25 <= caught.value.retry_after <= 31  # type: ignore[attr-defined]
    assert_no_secret("".join(traceback.format_exception(caught.value)) + caplog.text)


def test_a_hanging_api_is_a_transient_timeout(x_server: XStandIn) -> None:
    x_server.answer = "hang"
    x, _ = channel(x_server, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ChannelTransientError, match=r"no answer within 0\.3 s"):
        x.send(POST)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("a" * 280, 280),
        ("é" * 280, 280),  # Latin-1 supplement weighs 1
        ("日本" * 70, 280),  # CJK weighs 2
        ("see https://status.example.com/incidents/2026-11-30-very-long-path", 27),
    ],
)
def test_x_length_counts_as_x_does(text: str, length: int) -> None:
    assert x_length(text) == length


def test_over_280_is_refused_before_any_request(x_server: XStandIn) -> None:
    x, adapter = channel(x_server)
    for text in ("a" * 281, "日本" * 71):
        with pytest.raises(ChannelPermanentError, match="at most 280"):
            x.send(OutboundMessage(POST.key, "x", "public", "", text))
    assert adapter.intercepted == []
    assert x_server.requests == []


def test_without_the_adapter_the_real_host_would_be_contacted_and_the_guard_fails(
    loopback_only: list[str],
) -> None:
    settings = XSettings(
        consumer_key=SecretStr(SENTINELS["x_consumer_key"]),
        consumer_secret=SecretStr(SENTINELS["x_consumer_secret"]),
        access_token=SecretStr(SENTINELS["x_access_token"]),
        access_token_secret=SecretStr(SENTINELS["x_access_token_secret"]),
    )
    with pytest.raises(pytest.fail.Exception, match=r"api\.twitter\.com"):
        XStatus(settings).send(POST)
    assert loopback_only == ["name lookup 'api.twitter.com'"]
    loopback_only.clear()
