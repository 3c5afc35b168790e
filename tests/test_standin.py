"""The stand-in server itself: it records, answers as scripted, delays and hangs."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

from tests.standin import HANG, Reply, Request, StandIn, serve


@dataclass
class Scripted(StandIn):
    """Answers with the script's replies in order."""

    script: list[Reply] = field(default_factory=list)

    def respond(self, request: Request) -> Reply:
        return self.script.pop(0)


def call(url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, body, timeout=timeout) as answer:  # noqa: S310
            return answer.status, answer.read(), answer.headers.get("Retry-After", "")
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read(), refused.headers.get("Retry-After", "")


def test_requests_are_recorded_and_replies_sent_in_order() -> None:
    script = [Reply.json(429, {"e": 1}, {"Retry-After": "7"}), Reply(202)]
    with serve(Scripted(script=script)) as stand_in:
        assert call(f"{stand_in.url}/v3/mail/send", b'{"to": "a"}') == (429, b'{"e": 1}', "7")
        assert call(f"{stand_in.url}/again") == (202, b"", "")
    first, second = stand_in.requests
    assert (first.method, first.path, first.json()) == ("POST", "/v3/mail/send", {"to": "a"})
    assert (second.method, second.path, second.body) == ("GET", "/again", b"")


def test_a_delay_answers_late_and_a_hang_never_answers() -> None:
    with serve(Scripted(script=[Reply(200, b"late", delay=0.4), HANG])) as stand_in:
        started = time.monotonic()
        assert call(stand_in.url)[:2] == (200, b"late")
        assert time.monotonic() - started >= 0.4
        with pytest.raises(TimeoutError):
            call(stand_in.url, timeout=0.3)
    assert len(stand_in.requests) == 2
