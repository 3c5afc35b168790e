"""The lab's HTTP front door, a real process on 127.0.0.1, against hostile requests:
path tricks reach no file and no server, a huge header is refused, and a request that
never finishes does not keep anyone else waiting. Its store has no placements, so no
request can be proxied anywhere."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ppo_dr.store import Store
from tests.cli.entry import ROOT

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ask(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send *raw* as is (no client library normalises it); return the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(raw)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: door", "Connection: close", *headers, "", ""]
    return "\r\n".join(lines).encode()


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("hostile-door")
    url = f"sqlite:///{root / 'state.db'}"
    with Store(url) as store:
        store.upgrade()
    door_port = _free_port()
    config = root / "frontdoor.json"
    fleet = str(ROOT / "examples" / "fleet.yaml")
    config.write_text(json.dumps({"port": door_port, "fleet": fleet, "store_url": url}))
    log = (root / "frontdoor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppo_dr.lab.frontdoor", "--config", str(config)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (root / "frontdoor.log").read_text(errors="replace")
            try:
                if b" 200 " in _ask(door_port, _get("/health"), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the front door never answered"
                time.sleep(0.1)
        yield door_port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.mark.parametrize(
    "path",
    ["/c/../../etc/passwd", "/c/%2e%2e/%2e%2e/etc/passwd", "/c/..%2f..%2fetc/passwd",
     "/c/a;rm%20-rf%20/", "/c/" + "a" * 10_240, "/../../etc/passwd"],
)  # fmt: skip
def test_path_tricks_reach_no_file_and_no_server(port: int, path: str) -> None:
    answer = _ask(port, _get(path))
    status = answer.split(b" ", 2)[1]
    assert status in {b"400", b"404", b"414"}, answer[:200]
    assert b"root:" not in answer


def test_a_huge_header_is_refused_and_the_door_stays_up(port: int) -> None:
    answer = _ask(port, _get("/health", "X-Big: " + "a" * 100_000))
    assert answer.split(b" ", 2)[1] in {b"400", b"431"}, answer[:200]
    assert b" 200 " in _ask(port, _get("/health"))


def test_a_request_that_never_finishes_keeps_no_one_waiting(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as stuck:
        stuck.sendall(b"GET /health HTTP/1.1\r\nHost: door\r\nX-Slow: ")
        started = time.monotonic()
        assert b" 200 " in _ask(port, _get("/health"))
        assert time.monotonic() - started < 2
