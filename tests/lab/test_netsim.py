"""netsim: forwarding, cuts that time out instead of failing, heal, and routes changed at run time.

netsim runs as the supervisor starts it (``python -m ppo_dr.lab.netsim``); behind it
sit small threaded TCP servers that greet with a banner and echo lines, like an SSH
server greets with its version string.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import MiniLab, Procs, free_port, wait_for_port

from ppo_dr.lab.netsim import MIN_RTO_S, Impairment

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]


class _BannerHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(f"HELLO {self.server.name}\n".encode())  # type: ignore[attr-defined]
        for line in self.rfile:
            self.wfile.write(line)


class _BannerServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        super().__init__(("127.0.0.1", port), _BannerHandler)


class _CountingHandler(socketserver.BaseRequestHandler):
    """Reads everything, answers with the byte count (8 bytes): a throughput sink."""

    def handle(self) -> None:
        buf = bytearray(1 << 20)
        total = 0
        while n := self.request.recv_into(buf):
            total += n
        self.request.sendall(total.to_bytes(8, "big"))


@pytest.fixture
def backends() -> Iterator[dict[str, int]]:
    """Two banner servers and a counting sink on free ports: name -> port."""
    servers = {
        "s1": _BannerServer("s1", free_port()),
        "s2": _BannerServer("s2", free_port()),
    }
    sink = socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), _CountingHandler)
    sink.daemon_threads = True
    all_servers = [*servers.values(), sink]
    for srv in all_servers:
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    ports = {name: srv.server_address[1] for name, srv in servers.items()}
    ports["sink"] = sink.server_address[1]
    try:
        yield ports
    finally:
        for srv in all_servers:
            srv.shutdown()
            srv.server_close()


@dataclass
class Net:
    """A running netsim and the files that steer it."""

    dir: Path
    procs: Procs
    proc: object
    routes: list[dict[str, object]]

    @property
    def routes_path(self) -> Path:
        return self.dir / "routes.json"

    @property
    def cut_path(self) -> Path:
        return self.dir / "cut.json"

    def write_routes(self) -> None:
        tmp = self.routes_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cut_file": str(self.cut_path), "routes": self.routes}))
        tmp.replace(self.routes_path)

    def set_cut(self, servers: list[str], wait_for: str | None = None) -> None:
        before = self.log().count(wait_for) if wait_for else 0
        tmp = self.cut_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"servers": servers}))
        tmp.replace(self.cut_path)
        if wait_for:
            self.wait_log(wait_for, before + 1)

    def log(self) -> str:
        return self.procs.log_of("netsim")

    def wait_log(self, text: str, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"netsim did not log {text!r} within {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def port(self, server: str) -> int:
        return int(next(r["listen"] for r in self.routes if r["server"] == server))  # type: ignore[call-overload]


@pytest.fixture
def net(tmp_path: Path, rt_procs: Procs, backends: dict[str, int]) -> Net:
    routes: list[dict[str, object]] = [
        {"server": name, "dc": "jhb1", "kind": "ssh", "listen": free_port(), "target": port}
        for name, port in backends.items()
    ]
    netdir = tmp_path / "net"
    netdir.mkdir()
    net = Net(netdir, rt_procs, None, routes)
    net.write_routes()
    net.set_cut([])
    net.proc = rt_procs.start("netsim", net.routes_path)
    for route in routes:
        wait_for_port(int(route["listen"]), net.proc, rt_procs.logs / "netsim.log")  # type: ignore[call-overload,arg-type]
    return net


def _connect(port: int, timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_forwards_both_directions(net: Net) -> None:
    with _connect(net.port("s1")) as sock:
        assert _read_line(sock) == b"HELLO s1\n"
        sock.sendall(b"ping\n")
        assert _read_line(sock) == b"ping\n"
    with _connect(net.port("s2")) as sock:
        assert _read_line(sock) == b"HELLO s2\n"


def test_cut_times_out_new_and_existing_connections_and_heal_resumes_them(net: Net) -> None:
    existing = _connect(net.port("s1"))
    other = _connect(net.port("s2"))
    assert _read_line(existing) == b"HELLO s1\n"
    assert _read_line(other) == b"HELLO s2\n"

    net.set_cut(["s1"], wait_for="network of s1 CUT")

    # A new connection is accepted (connect succeeds) but no banner comes: a timeout.
    held = _connect(net.port("s1"))
    with pytest.raises(TimeoutError):
        held.recv(100)
    # The existing connection is frozen, not reset: the echo does not come back.
    existing.sendall(b"during the cut\n")
    existing.settimeout(0.5)
    with pytest.raises(TimeoutError):
        existing.recv(100)
    # Other servers are not affected.
    other.sendall(b"still here\n")
    assert _read_line(other) == b"still here\n"
    # A client that gives up on a held connection is noticed and its connection freed.
    quitter = _connect(net.port("s1"))
    quitter.close()
    net.wait_log("client left a held connection", timeout=4)

    net.set_cut([], wait_for="network of s1 healed")

    # Data sent during the cut is delivered late, not dropped; held connections go on.
    existing.settimeout(3)
    assert _read_line(existing) == b"during the cut\n"
    held.settimeout(3)
    assert _read_line(held) == b"HELLO s1\n"
    held.sendall(b"after\n")
    assert _read_line(held) == b"after\n"
    for sock in (existing, other, held):
        sock.close()


def test_a_lost_chunk_arrives_one_retransmission_timeout_later() -> None:
    link = Impairment(rtt_ms=300, loss=0.02)
    rng = random.Random(7)
    delays = [link.delay_s(rng) for _ in range(10_000)]
    assert sorted(set(delays)) == pytest.approx([0.15, 0.15 + 0.3 + MIN_RTO_S])
    lost = sum(d > 0.15 for d in delays) / len(delays)
    assert 0.015 < lost < 0.025
    assert Impairment(rtt_ms=0, loss=0).delay_s(rng) == 0.0


def _echo_rtt(sock: socket.socket) -> float:
    started = time.monotonic()
    sock.sendall(b"x\n")
    assert _read_line(sock) == b"x\n"
    return time.monotonic() - started


def test_a_slow_link_delays_every_byte_in_order_and_heals(
    net: Net, backends: dict[str, int]
) -> None:
    fast = _connect(net.port("s1"), timeout=5)
    assert _read_line(fast) == b"HELLO s1\n"
    baseline = statistics.median(_echo_rtt(fast) for _ in range(5))
    slow_file = net.dir / "slow.json"
    slow_file.write_text(json.dumps({"servers": {"s1": {"rtt_ms": 300, "loss": 0.2}}}))
    net.wait_log("link of s1 SLOW")
    # The connection already open is slowed too; the other server is not.
    rtts = [_echo_rtt(fast) for _ in range(8)]
    assert min(rtts) >= 0.29, rtts
    with _connect(net.port("s2")) as other:
        assert _read_line(other) == b"HELLO s2\n"
        assert _echo_rtt(other) < 0.25
    # Lost chunks hold up those behind them: 200 lines come back whole and in order.
    lines = b"".join(b"line %03d\n" % i for i in range(200))
    fast.sendall(lines)
    got = b""
    while got.count(b"\n") < 200:
        got += fast.recv(65536)
    assert got == lines
    slow_file.write_text(json.dumps({"servers": {}}))
    net.wait_log("link of s1 fast again")
    assert statistics.median(_echo_rtt(fast) for _ in range(5)) < baseline + 0.1
    fast.close()


def test_routes_added_and_removed_at_run_time(net: Net, backends: dict[str, int]) -> None:
    new_port = free_port()
    net.routes.append(
        {"server": "s3", "dc": "cpt1", "kind": "http", "listen": new_port, "target": backends["s2"]}
    )
    net.write_routes()
    wait_for_port(new_port, timeout=3)
    with _connect(new_port) as sock:
        assert _read_line(sock) == b"HELLO s2\n"

    net.routes = [r for r in net.routes if r["server"] != "s3"]
    net.write_routes()
    deadline = time.monotonic() + 3
    while True:
        try:
            socket.create_connection(("127.0.0.1", new_port), timeout=0.5).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "removed route still listening"
        time.sleep(0.1)


def test_sighup_rereads_files_even_when_the_change_is_invisible_to_polling(net: Net) -> None:
    net.set_cut(["s1"], wait_for="network of s1 CUT")
    stat = net.cut_path.stat()
    # Same size, same inode, same mtime: only SIGHUP can tell netsim to look again.
    with net.cut_path.open("r+") as handle:
        handle.write(json.dumps({"servers": ["s2"]}))
    os.utime(net.cut_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert net.cut_path.stat().st_size == stat.st_size
    time.sleep(0.8)  # more than a poll
    assert "network of s2 CUT" not in net.log()
    os.kill(net.proc.pid, signal.SIGHUP)  # type: ignore[attr-defined]
    net.wait_log("network of s2 CUT")
    net.wait_log("network of s1 healed")


def test_a_dead_server_behind_a_live_network_closes_the_connection(net: Net) -> None:
    dead = free_port()  # nothing listens there: the server process was killed
    net.routes.append({"server": "s4", "listen": free_port(), "target": dead})
    net.write_routes()
    wait_for_port(net.port("s4"), timeout=3)
    with _connect(net.port("s4")) as sock:
        assert sock.recv(100) == b""  # closed at once: no hang, no banner


def test_throughput_of_200_mb_through_netsim(net: Net, backends: dict[str, int]) -> None:
    """Not a benchmark gate: a floor that catches a broken fast path, and a number to read."""
    total = 200 << 20
    chunk = os.urandom(1 << 20)

    def send(port: int) -> float:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start = time.perf_counter()
            for _ in range(total // len(chunk)):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            received = int.from_bytes(sock.recv(8), "big")
            elapsed = time.perf_counter() - start
        assert received == total
        return total / elapsed / 1e6

    direct = statistics.median(send(backends["sink"]) for _ in range(3))
    through = statistics.median(send(net.port("sink")) for _ in range(3))
    print(f"\n200 MB: direct {direct:.0f} MB/s, through netsim {through:.0f} MB/s")
    assert through > 100


def test_ssh_through_netsim_and_what_a_cut_looks_like_to_the_openssh_client(
    rt_fresh_minilab: MiniLab, tmp_path: Path
) -> None:
    """The runbooks' view: a real lab server behind netsim; a cut is a banner timeout."""
    lab = rt_fresh_minilab
    server = "mirror-jhb1-1"
    lab.start_server(server)
    public = free_port()
    netdir = tmp_path / "net"
    netdir.mkdir()
    net = Net(netdir, lab.procs, None, [
        {"server": server, "dc": "jhb1", "kind": "ssh", "listen": public,
         "target": lab.ports[server]["ssh"]},
    ])  # fmt: skip
    net.write_routes()
    net.set_cut([])
    net.proc = lab.procs.start("netsim", net.routes_path)
    wait_for_port(public, net.proc, lab.procs.logs / "netsim.log")
    host_key = (lab.dir / "keys" / f"{server}_host_ed25519.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{public} {' '.join(host_key)}\n")
    lab.ports[server]["ssh"] = public  # talk to the public port from now on

    assert lab.ssh(server, "health", known_hosts=known).returncode == 0
    net.set_cut([server], wait_for=f"network of {server} CUT")
    started = time.monotonic()
    cut = lab.ssh(server, "health", "-o", "ConnectTimeout=2", "-o", "LogLevel=INFO",
                  known_hosts=known)  # fmt: skip
    assert cut.returncode == 255
    assert "timed out" in cut.stderr  # "Connection timed out during banner exchange"
    assert 1.5 < time.monotonic() - started < 4
    net.set_cut([], wait_for=f"network of {server} healed")
    assert lab.ssh(server, "health", known_hosts=known).returncode == 0
