"""Local stand-ins for the providers, and a guard that keeps every test on 127.0.0.1.

- ``loopback_only`` (autouse): any name lookup or connection to a host that is not
  loopback fails the test at once with ``pytest.fail`` (a BaseException, so no
  ``except Exception`` in a client library or in our mapping can swallow it), and
  again at teardown if something swallowed it anyway. The real SaaS hosts are never
  contacted; a client that forgot its stand-in host fails loudly.
- ``sendgrid_server``: an ``http.server`` in a thread that checks the v3 mail/send
  payload and answers as told (202, 400, 401, 429 with Retry-After, 500, hang).
- ``moto_sns``: moto's standalone server (threaded, 127.0.0.1, a free port) for the
  real boto3 client.
- ``SENTINELS``: secret values that must never appear in a log or an error.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from ppo_dr.store import Store
from tests.netguard import loopback_guard

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


@dataclass
class SendGridStandIn:
    """What the stand-in saw, and how it answers the next requests."""

    url: str
    answer: str = "202"  # 202 | 400 | 401 | 429 | 500 | hang
    answers: list[str] = field(default_factory=list)  # consumed first, one per request
    requests: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def next_answer(self) -> str:
        return self.answers.pop(0) if self.answers else self.answer


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
    state: SendGridStandIn

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = None
            problems = _check_mail_send(self.path, self.headers, payload)
            state.requests.append(
                {"path": self.path, "headers": dict(self.headers), "json": payload}
            )
            answer = state.next_answer()
            if problems:
                state.problems.extend(problems)
                self._reply(400, {"errors": [{"message": "; ".join(problems)}]})
                return
            if answer == "hang":
                state.release.wait(10)
                return
            if answer == "202":
                self._reply(202, None, {"X-Message-Id": f"sg-{len(state.requests)}"})
            elif answer == "400":
                self._reply(
                    400,
                    {"errors": [{"message": "Does not contain a valid address.", "field": "to"}]},
                )
            elif answer == "401":
                self._reply(
                    401, {"errors": [{"message": "The provided authorization grant is invalid."}]}
                )
            elif answer == "429":
                self._reply(
                    429, {"errors": [{"message": "too many requests"}]}, {"Retry-After": "7"}
                )
            else:
                self._reply(int(answer), {"errors": [{"message": "internal error"}]})

        def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = SendGridStandIn(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------- moto SNS


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's standalone server on 127.0.0.1 and a free port; its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto_sns(moto_server: str) -> Iterator[str]:
    """The moto endpoint, reset before each test so the SMS list starts empty."""
    reset = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")  # noqa: S310
    with urllib.request.urlopen(reset, timeout=10) as answer:  # noqa: S310  (moto: all empty)
        assert answer.status == 200
    yield moto_server


# --------------------------------------------------------------------------- store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real SQLite store at schema head."""
    with Store(f"sqlite:///{tmp_path / 'state' / 'store.db'}") as store:
        store.upgrade()
        yield store
