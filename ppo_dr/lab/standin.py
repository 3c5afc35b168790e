"""The lab's stand-in for SendGrid, Amazon SNS and the X API: one scriptable process.

The lab pages through the outbox; a chaos fault that must see the real client
libraries (sendgrid, boto3, tweepy) fail and recover points a copy of the fleet's
channels at this process instead (``channels.<kind>.endpoint_url``). It speaks just
enough of each API for those clients: SNS ``Publish`` (query protocol, XML),
SendGrid ``POST /v3/mail/send`` (202, ``X-Message-Id``) and X ``POST /2/tweets``
(201, ``data.id``). Every request is appended to ``requests.jsonl`` in its directory
(vendor, recipient, what it answered, when it came and when it was answered), and
the answer is scripted per vendor through ``POST /_script``: a list of steps taken
one per request, then ``ok`` for the rest:

``ok``       accepted, with a new message id
``500``      the provider's internal error
``429``      throttled, with ``Retry-After`` (and X's ``x-rate-limit-reset``)
``timeout``  no answer for longer than any client waits, then the connection closed

``python -m ppo_dr.lab.standin --dir DIR [--host ADDRESS]`` listens on 127.0.0.1 (or,
for the distributed lab, its ``wan`` address, run inside that namespace) and a free port and
writes ``standin.json`` (port, pid) once it answers. Nothing it receives is logged
except the recipient: bodies are what people were told.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs

Vendor = Literal["sns", "sendgrid", "x"]
VENDORS: Final[tuple[Vendor, ...]] = ("sns", "sendgrid", "x")
STEPS: Final = ("ok", "500", "429", "timeout")
#: Seconds a throttled client is asked to wait (``Retry-After``).
RETRY_AFTER_S: Final = 2
#: How long a ``timeout`` step holds the request: past every channel's read time-out.
HOLD_S: Final = 15.0
LOG_NAME: Final = "requests.jsonl"
STATE_NAME: Final = "standin.json"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request as the stand-in saw and answered it (a line of ``requests.jsonl``)."""

    vendor: str
    recipient: str
    step: str
    at: float  # epoch seconds it arrived
    answered_at: float  # epoch seconds it was answered (or given up, for a timeout)
    message_id: str | None = None  # set when accepted

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeenRequest:
        return cls(
            str(data["vendor"]),
            str(data["recipient"]),
            str(data["step"]),
            float(data["at"]),
            float(data["answered_at"]),
            data.get("message_id"),
        )


def read_requests(directory: Path) -> list[SeenRequest]:
    """Every request the stand-in in *directory* recorded, oldest first."""
    path = directory / LOG_NAME
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [SeenRequest.from_json(json.loads(line)) for line in lines if line.strip()]


def check_script(script: Mapping[str, Any]) -> dict[Vendor, list[str]]:
    """A script as ``POST /_script`` takes it, checked: vendors and steps by name."""
    out: dict[Vendor, list[str]] = {}
    for vendor, steps in script.items():
        if vendor not in VENDORS:
            raise ValueError(f"unknown vendor {vendor!r}: one of {', '.join(VENDORS)}")
        if not isinstance(steps, list) or any(s not in STEPS for s in steps):
            raise ValueError(f"{vendor}: a list of steps, each one of {', '.join(STEPS)}")
        out[next(v for v in VENDORS if v == vendor)] = [str(s) for s in steps]
    return out


def vendor_of(method: str, path: str, body: bytes) -> tuple[Vendor, str] | None:
    """Which API a request is for, and its recipient; None for anything else."""
    if method != "POST":
        return None
    if path.startswith("/v3/mail/send"):
        try:
            to = json.loads(body)["personalizations"][0]["to"][0]["email"]
        except (ValueError, KeyError, IndexError, TypeError):
            to = "?"
        return "sendgrid", str(to)
    if path.startswith("/2/tweets"):
        return "x", "public"
    form = parse_qs(body.decode("utf-8", errors="replace"))
    if form.get("Action") == ["Publish"]:
        return "sns", form.get("PhoneNumber", ["?"])[0]
    return None


def answer(vendor: Vendor, step: str, message_id: str) -> Answer:
    """The reply of *vendor* for *step* (not ``timeout``), as its real API words it."""
    throttle = {"Retry-After": str(RETRY_AFTER_S)}
    if vendor == "sns":
        xml = {"Content-Type": "text/xml"}
        if step == "ok":
            body = (
                '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
                f"<PublishResult><MessageId>{message_id}</MessageId></PublishResult>"
                "<ResponseMetadata><RequestId>standin</RequestId></ResponseMetadata>"
                "</PublishResponse>"
            )
            return Answer(200, body.encode(), xml)
        code = "Throttling" if step == "429" else "InternalError"
        error = (
            f"<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code>"
            f"<Message>stand-in {step}</Message></Error>"
            "<RequestId>standin</RequestId></ErrorResponse>"
        )
        return Answer(int(step), error.encode(), {**xml, **(throttle if step == "429" else {})})
    json_type = {"Content-Type": "application/json"}
    if step == "ok" and vendor == "sendgrid":
        return Answer(202, b"", {"X-Message-Id": message_id})
    if step == "ok":
        body_json = {"data": {"id": message_id, "text": "accepted"}}
        return Answer(201, json.dumps(body_json).encode(), json_type)
    problem = json.dumps({"errors": [{"message": f"stand-in {step}"}], "title": step})
    headers = dict(json_type)
    if step == "429":
        reset = str(int(time.time()) + RETRY_AFTER_S + 1)
        headers |= throttle | {"x-rate-limit-reset": reset, "X-RateLimit-Reset": reset}
    return Answer(int(step), problem.encode(), headers)


class StandIn:
    """The scripted vendors: the queue of steps per vendor and the request log."""

    def __init__(self, directory: Path, hold_s: float = HOLD_S) -> None:
        self.log = directory / LOG_NAME
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.script: dict[Vendor, list[str]] = {v: [] for v in VENDORS}

    def next_step(self, vendor: Vendor) -> str:
        with self.lock:
            queue = self.script[vendor]
            return queue.pop(0) if queue else "ok"

    def record(self, seen: SeenRequest) -> None:
        line = json.dumps(
            {
                "vendor": seen.vendor,
                "recipient": seen.recipient,
                "step": seen.step,
                "at": seen.at,
                "answered_at": seen.answered_at,
                "message_id": seen.message_id,
            }
        )
        with self.lock, self.log.open("a", encoding="utf-8") as out:
            out.write(line + "\n")


def make_server(
    vendors: StandIn, stop: threading.Event, host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """An HTTP server on *host* (loopback, or an address of a namespace the lab made) and
    a free port, answering as *vendors* scripts."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore and requests expect

        def log_message(self, format: str, *args: Any) -> None:  # the log is ours
            pass

        def reply(self, reply: Answer) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def do_POST(self) -> None:
            arrived = time.time()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/_script":
                try:
                    script = check_script(json.loads(body))
                except (ValueError, AttributeError) as exc:
                    self.reply(Answer(400, str(exc).encode(), {}))
                    return
                with vendors.lock:
                    vendors.script.update(script)
                self.reply(Answer(204, b"", {}))
                return
            found = vendor_of(self.command, self.path, body)
            if found is None:
                self.reply(Answer(404, b"not an API this stand-in plays", {}))
                return
            vendor, recipient = found
            step = vendors.next_step(vendor)
            message_id = uuid.uuid4().hex if step == "ok" else None
            if step == "timeout":
                stop.wait(vendors.hold_s)
                self.close_connection = True
            seen = SeenRequest(vendor, recipient, step, arrived, time.time(), message_id)
            vendors.record(seen)  # before the answer: whoever got it finds it in the log
            if step != "timeout":
                self.reply(answer(vendor, step, message_id or ""))

        def do_GET(self) -> None:
            self.reply(Answer(200, b"stand-in for sendgrid, sns and x\n", {}))

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; ``standin.json`` says where."""
    parser = argparse.ArgumentParser(prog="python -m ppo_dr.lab.standin")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    args = parser.parse_args(argv)
    directory = args.dir
    directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    server = make_server(StandIn(directory), stop, args.host)

    def finish(_sig: int, _frame: Any) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    state = {"port": server.server_address[1], "pid": os.getpid()}
    temporary = directory / (STATE_NAME + ".tmp")
    temporary.write_text(json.dumps(state), encoding="utf-8")
    temporary.replace(directory / STATE_NAME)
    server.serve_forever(0.2)
    server.server_close()


if __name__ == "__main__":
    main()
