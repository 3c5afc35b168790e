"""The front door: routing by the store's placements, switching on a move, and its errors.

The front door runs as the supervisor starts it (``python -m ppo_dr.lab.frontdoor``)
against a real store (SQLite, migrated by ``Store.upgrade``). Behind it sit small
threaded HTTP servers that echo what they received, a port nobody listens on (a
powered-off server) and a socket that accepts but never answers (a hung one).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import MiniLab, Procs, build_minilab, free_port, wait_for_port

from ppo_dr.store import Store

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]

BIG = bytes(range(256)) * 4096  # 1 MiB


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is for failures."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        name = self.server.name  # type: ignore[attr-defined]
        if self.path.endswith("/big"):
            payload, kind = BIG, "application/octet-stream"
        else:
            payload = json.dumps(
                {
                    "server": name,
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body.decode(),
                }
            ).encode()
            kind = "application/json"
        self.send_response(201 if self.command == "POST" else 200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-PPO-Server", name)
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()


@dataclass
class Door:
    lab: MiniLab
    port: int
    store: Store

    def get(
        self, path: str, method: str = "GET", body: bytes | None = None, **headers: str
    ) -> tuple[int, Any, bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http://127.0.0.1 only
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def point(self, server: str, port: int) -> None:
        """Change *server*'s public HTTP port in fleet.yaml (the front door reloads it)."""
        self.lab.ports[server]["http"] = port
        time.sleep(0.01)
        self.lab.write_fleet()

    def place(self, client: str, server: str) -> None:
        """Move *client* to *server* the way a failover does (compare-and-set)."""
        current = self.store.placement(client)
        assert current is not None
        if current.server_id != server:
            self.store.move_client(client, server, current.version, reason="test")

    def wait_routed(self, client: str, server: str) -> None:
        deadline = time.monotonic() + 1.5
        while json.loads(self.get("/routes")[2]).get(client) != server:
            assert time.monotonic() < deadline, f"{client} not routed to {server}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def door_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    """One front door for the module, with two echo servers behind it."""
    root = tmp_path_factory.mktemp("door")
    procs = Procs(root / "logs")
    lab = build_minilab(root / "lab", procs)
    upstreams = []
    for server in ("app-jhb1-1", "spare-cpt1-1"):
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        httpd.daemon_threads = True
        httpd.name = server  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        upstreams.append(httpd)
        lab.ports[server]["http"] = httpd.server_address[1]
    lab.write_fleet()
    store = Store(f"sqlite:///{lab.dir / 'state.db'}")
    store.upgrade()
    store.seed_placements({"acme": "app-jhb1-1", "globex": "app-jhb1-1"})
    port = free_port()
    config = lab.dir / "frontdoor.json"
    config.write_text(
        json.dumps(
            {
                "lab_dir": str(lab.dir),
                "port": port,
                "fleet": str(lab.fleet_path),
                "store_url": f"sqlite:///{lab.dir / 'state.db'}",
            }
        )
    )
    proc = lab.procs.start("frontdoor", config)
    wait_for_port(port, proc, lab.procs.logs / "frontdoor.log", timeout=45)  # slow when loaded
    try:
        yield Door(lab, port, store)
    finally:
        procs.stop_all()
        for httpd in upstreams:
            httpd.shutdown()
            httpd.server_close()
        store.close()


@pytest.fixture
def door(door_service: Door) -> Iterator[Door]:
    """The module's front door, put back as the seed left it after each test."""
    ports = {s: dict(p) for s, p in door_service.lab.ports.items()}
    yield door_service
    if ports != door_service.lab.ports:
        door_service.lab.ports = ports
        door_service.lab.write_fleet()
    for client in ("acme", "globex"):
        door_service.place(client, "app-jhb1-1")
        door_service.wait_routed(client, "app-jhb1-1")


def test_health_routes_and_unknown_clients(door: Door) -> None:
    status, _h, body = door.get("/health")
    assert status == 200 and json.loads(body)["ok"] is True
    status, _h, body = door.get("/routes")
    assert json.loads(body) == {"acme": "app-jhb1-1", "globex": "app-jhb1-1"}
    for path in ("/c/initech/", "/c/initech/journal", "/c/NOT..valid/x"):
        status, headers, body = door.get(path)
        assert status == 404, path
        assert "X-PPO-Route" not in headers


def test_routes_by_placement_and_follows_a_move_within_a_second(door: Door) -> None:
    status, headers, body = door.get("/c/acme/page?x=1&y=%2F")
    assert status == 200
    assert headers["X-PPO-Route"] == "acme -> app-jhb1-1"
    assert headers["X-PPO-Server"] == "app-jhb1-1"
    assert json.loads(body)["path"] == "/c/acme/page?x=1&y=%2F"

    door.place("acme", "spare-cpt1-1")
    moved_at = time.monotonic()
    while door.get("/c/acme/page")[1]["X-PPO-Server"] != "spare-cpt1-1":
        assert time.monotonic() - moved_at < 1.5, "front door still routes to the old server"
        time.sleep(0.05)
    status, headers, _b = door.get("/c/acme/page")
    assert headers["X-PPO-Route"] == "acme -> spare-cpt1-1"
    assert door.get("/c/globex/page")[1]["X-PPO-Server"] == "app-jhb1-1"  # others stay
    assert json.loads(door.get("/routes")[2])["acme"] == "spare-cpt1-1"


def test_proxies_method_body_headers_and_streams_large_answers(door: Door) -> None:
    status, headers, body = door.get(
        "/c/globex/journal?after=3",
        method="POST",
        body=b'{"seq": 4}',
        **{"Content-Type": "application/json", "X-Request-Id": "abc"},
    )
    assert status == 201
    echoed = json.loads(body)
    assert echoed["method"] == "POST" and echoed["body"] == '{"seq": 4}'
    assert echoed["path"] == "/c/globex/journal?after=3"
    sent = {name.lower(): value for name, value in echoed["headers"].items()}
    assert sent["x-request-id"] == "abc"
    assert sent["x-ppo-route"] == "globex -> app-jhb1-1"
    assert sent["content-type"] == "application/json"
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    status, headers, body = door.get("/c/globex/files/big")
    assert status == 200 and body == BIG
    assert headers["Content-Length"] == str(len(BIG))


def test_a_server_that_refuses_is_a_502_naming_client_and_server(door: Door) -> None:
    door.point("spare-cpt1-1", free_port())  # nothing listens there: powered off
    door.place("globex", "spare-cpt1-1")
    door.wait_routed("globex", "spare-cpt1-1")
    status, headers, body = door.get("/c/globex/journal")
    assert status == 502
    assert headers["X-PPO-Route"] == "globex -> spare-cpt1-1"
    answer = json.loads(body)
    assert (answer["client"], answer["server"]) == ("globex", "spare-cpt1-1")

    door.place("globex", "mirror-jhb1-1")  # a server without HTTP
    door.wait_routed("globex", "mirror-jhb1-1")
    assert door.get("/c/globex/journal")[0] == 502


def test_a_server_that_hangs_is_a_504_after_five_seconds(door: Door) -> None:
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # the kernel accepts; nobody ever reads or answers
    try:
        door.point("app-jhb1-1", hung.getsockname()[1])
        started = time.monotonic()
        status, headers, body = door.get("/c/acme/health")
        elapsed = time.monotonic() - started
    finally:
        hung.close()
    assert status == 504
    assert 4.5 < elapsed < 15  # the 5 s upstream timeout, not an early or a missing one
    assert headers["X-PPO-Route"] == "acme -> app-jhb1-1"
    assert json.loads(body)["server"] == "app-jhb1-1"
