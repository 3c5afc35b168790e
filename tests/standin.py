"""One stand-in HTTP server for the third-party APIs in tests (SendGrid, SNS, X, S3, AWS).

A test describes a vendor as a :class:`StandIn` (what it saw, how it answers) with a
``respond(request) -> Reply`` method; :func:`serve` runs it on 127.0.0.1 and a free
port in a thread, records every request on ``requests`` and sends the scripted
reply: a status with body and headers, after a ``delay``, or never (``HANG``, so the
client's own time-out fires). Hung and delayed handlers are released when the test
ends, so no thread outlives it. moto still plays AWS for real behaviour; a stand-in
only scripts what moto cannot (throttling, refused keys, a server that hangs).
"""

from __future__ import annotations

import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


@dataclass(frozen=True)
class Request:
    """One request as the stand-in saw it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass(frozen=True)
class Reply:
    """What to answer: ``status``, ``body`` and ``headers``, ``delay`` seconds late,
    or nothing at all when ``hang`` (the client times out)."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False

    @classmethod
    def json(cls, status: int, body: Any, headers: Mapping[str, str] | None = None) -> Reply:
        """A JSON answer (``None`` for an empty body)."""
        data = b"" if body is None else json.dumps(body).encode()
        kind = {"Content-Type": "application/json"} if data else {}
        return cls(status, data, {**kind, **(headers or {})})

    @classmethod
    def xml(cls, status: int, body: str, headers: Mapping[str, str] | None = None) -> Reply:
        """An XML answer, as AWS's query and REST-XML protocols send errors."""
        return cls(status, body.encode(), {"Content-Type": "text/xml", **(headers or {})})


#: No answer until the test ends: the client's read time-out is what the test sees.
HANG = Reply(hang=True)


@dataclass
class StandIn(ABC):
    """A vendor's stand-in: where it listens, what it saw, how it answers."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    hang: bool = False  # answer nothing at all, whatever ``respond`` would say

    @abstractmethod
    def respond(self, request: Request) -> Reply:
        """The answer to *request* (already recorded on ``requests``)."""


V = TypeVar("V", bound=StandIn)


@contextlib.contextmanager
def serve(vendor: V) -> Iterator[V]:
    """Serve *vendor* on 127.0.0.1 and a free port until the block ends; sets its url."""
    with http_server(vendor):
        yield vendor


@contextlib.contextmanager
def http_server(vendor: StandIn) -> Iterator[ThreadingHTTPServer]:
    """:func:`serve`, yielding the running server: a caller with connections of its own
    (a TLS tunnel: :mod:`tests.hostile.saas_proxy`) hands each to ``finish_request``."""
    released = threading.Event()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore and requests expect

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(self.command, self.path, dict(self.headers), self.rfile.read(length))
            with lock:
                vendor.requests.append(request)
            reply = HANG if vendor.hang else vendor.respond(request)
            if reply.hang or (reply.delay and released.wait(reply.delay)):
                released.wait(30)
                self.close_connection = True
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = answer  # noqa: N815

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    vendor.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
