"""Data centres as network namespaces: the address plan (pure), and real namespaces
(as root, like CI): made and removed without leftovers, a link taken down for real,
every process of a DC killed by a power loss."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppo_dr.errors import LabError, PermanentError
from ppo_dr.lab import netns
from ppo_dr.lab.netns import NetPlan
from ppo_dr.lab.supervisor import Lab
from ppo_dr.pids import alive
from ppo_dr.transport.dial import NETNS_ENV, dial
from ppo_dr.transport.openssh_client import SshEndpoint, client_argv

DCS = ("jhb1", "cpt1", "lon1")
needs_root = pytest.mark.skipif(
    netns.unavailable_reason() is not None,
    reason=f"needs network namespaces ({netns.unavailable_reason()})",
)


# ---- the plan (pure)


def test_plan_names_every_namespace_after_the_lab_and_addresses_only_private_ones() -> None:
    plan = netns.plan_for(Path("/labs/a"), DCS)
    assert plan.prefix == netns.prefix_for(Path("/labs/a"))
    assert plan.prefix.startswith("ppo") and len(plan.prefix) == 9
    assert plan.namespaces == tuple(f"{plan.prefix}-{n}" for n in ("ctl", *DCS, "wan"))
    assert plan.wan_address == f"10.{plan.octet}.0.1"
    assert [m.address for m in plan.members] == [
        f"10.{plan.octet}.200.1",
        f"10.{plan.octet}.1.1",
        f"10.{plan.octet}.2.1",
        f"10.{plan.octet}.3.1",
    ]
    assert [m.bridge_port for m in plan.members] == ["vctl", "v1", "v2", "v3"]
    assert 16 <= plan.octet < 216
    assert NetPlan.from_dict(plan.as_dict()) == plan


def test_two_labs_get_two_prefixes_and_one_lab_always_the_same() -> None:
    prefixes = {netns.prefix_for(Path(f"/labs/{i}")) for i in range(200)}
    assert len(prefixes) == 200
    assert netns.plan_for(Path("/labs/x/../a"), DCS) == netns.plan_for(Path("/labs/a"), DCS)


@pytest.mark.parametrize(
    ("dcs", "message"),
    [
        ((), "at least one data centre"),
        (("a", "b", "a"), "data centre ids repeat: a, b, a"),
        (tuple(f"d{i}" for i in range(200)), "at most 199 data centres"),
    ],
)
def test_a_plan_refuses_bad_data_centres(dcs: tuple[str, ...], message: str) -> None:
    with pytest.raises(LabError, match=message):
        netns.plan_for(Path("/labs/a"), dcs)


def test_an_unknown_dc_names_the_known_ones() -> None:
    plan = netns.plan_for(Path("/labs/a"), DCS)
    with pytest.raises(LabError, match="unknown data centre 'ams1'; known: jhb1, cpt1, lon1"):
        plan.dc("ams1")


def test_without_root_there_are_no_namespaces_and_it_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert netns.unavailable_reason() == "not running as root"
    assert netns.exec_prefix(None) == []
    assert netns.public_host(None) == "127.0.0.1"


# ---- real namespaces


@pytest.fixture
def made(tmp_path: Path) -> Iterator[NetPlan]:
    """The namespaces of a lab in tmp_path; deleted whatever the test did."""
    plan = netns.plan_for(tmp_path, DCS)
    netns.create(plan)
    try:
        yield plan
    finally:
        netns.destroy(plan.prefix)
        assert netns.existing(plan.prefix) == []


def _listen_in(plan: NetPlan, dc: str) -> tuple[subprocess.Popen[bytes], int]:
    """A TCP server inside *dc*'s namespace on its address; (process, port)."""
    code = (
        "import socket,sys\n"
        "s=socket.socket();s.bind((sys.argv[1],0));s.listen()\n"
        "print(s.getsockname()[1],flush=True)\n"
        "while True:\n c,_=s.accept();c.sendall(b'hello');c.close()\n"
    )
    proc = subprocess.Popen(
        [
            *netns.exec_prefix(plan.dc(dc).namespace),
            sys.executable,
            "-c",
            code,
            plan.dc(dc).address,
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _greeting(address: str, port: int) -> bytes:
    with socket.create_connection((address, port), timeout=1.0) as sock:
        return sock.recv(16)


@needs_root
def test_namespaces_come_and_go_without_leftovers(tmp_path: Path) -> None:
    plan = netns.plan_for(tmp_path, DCS)
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    netns.create(plan)
    try:
        assert netns.existing(plan.prefix) == sorted(plan.namespaces)
        with pytest.raises(LabError, match="exist already"):
            netns.create(plan)
        proc, _port = _listen_in(plan, "jhb1")
        assert netns.pids_in(plan.dc("jhb1").namespace) == [proc.pid]
    finally:
        deleted = netns.destroy(plan.prefix)
    assert deleted == sorted(plan.namespaces)
    proc.wait(5)
    assert not alive(proc.pid)  # killed with its namespace
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert plan.prefix not in listed
    after = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert after.count("\n") == host_links.count("\n")  # nothing added to the host
    assert netns.destroy(plan.prefix) == []  # safe to repeat


@needs_root
def test_a_dc_is_reachable_from_the_control_site_until_its_link_goes_down(
    made: NetPlan,
) -> None:
    proc, port = _listen_in(made, "cpt1")
    address = made.dc("cpt1").address
    try:
        assert netns.call_in(made.control.namespace, lambda: _greeting(address, port)) == b"hello"
        # Nothing of the lab is on the host: no address of its /16 (checked, not dialled:
        # a SYN from here would leave through the host's default route).
        host_addresses = subprocess.run(
            ["ip", "-o", "addr"], capture_output=True, text=True, check=True
        ).stdout
        assert f" 10.{made.octet}." not in host_addresses
        netns.set_link(made, "cpt1", up=False)
        assert not netns.link_is_up(made, "cpt1")
        with pytest.raises(OSError):
            netns.call_in(made.control.namespace, lambda: _greeting(address, port))
        # ... while the DC itself still runs: the link is down, not the power.
        assert netns.call_in(made.dc("cpt1").namespace, lambda: _greeting(address, port))
        netns.set_link(made, "cpt1", up=True)
        assert netns.link_is_up(made, "cpt1")
        deadline = time.monotonic() + 10
        while True:
            try:
                netns.call_in(made.control.namespace, lambda: _greeting(address, port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait(5)


@needs_root
def test_a_power_loss_kills_every_process_of_the_dc_and_only_those(made: NetPlan) -> None:
    in_jhb1 = [_listen_in(made, "jhb1")[0] for _ in range(2)]
    in_lon1, _port = _listen_in(made, "lon1")
    try:
        killed = netns.kill_all_in(made.dc("jhb1").namespace)
        assert sorted(killed) == sorted(p.pid for p in in_jhb1)
        assert not any(alive(p.pid) for p in in_jhb1)
        assert in_lon1.poll() is None
        assert netns.pids_in(made.dc("jhb1").namespace) == []
    finally:
        in_lon1.kill()
        in_lon1.wait(5)


def test_without_namespaces_a_distributed_lab_runs_on_loopback_and_a_dc_loss_kills_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)  # as a user would run it
    said: list[str] = []
    lab = Lab(tmp_path / "lab")
    try:
        lab.up(
            clients=2,
            size_mb=1,
            fast=True,
            timeout=60.0,
            topology="distributed",
            progress=said.append,
        )
        assert (
            "no network namespaces (not running as root): the distributed lab runs on 127.0.0.1"
            in said
        )
        assert lab.network() is None
        assert netns.existing(netns.prefix_for(lab.directory)) == []
        worker = lab.start_program("sleeper", dc="jhb1", argv=["sleep", "600"])
        assert "sleeper" in lab.break_("jhb1", "power")
        assert not alive(worker)
        assert "sleeper" in lab.heal("jhb1")
        assert alive(lab.recorded_pids()["sleeper"])
    finally:
        lab.down()
    assert lab.processes() == []


# ---- dialling from a namespace (PPO_DR_NETNS), how the chaos run reaches the servers


@needs_root
def test_a_connection_dialled_with_ppo_dr_netns_starts_inside_that_namespace(
    made: NetPlan, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, port = _listen_in(made, "cpt1")
    address = made.dc("cpt1").address
    try:
        monkeypatch.setenv(NETNS_ENV, made.wan)
        with dial(address, port, timeout=2.0) as sock:  # used here, made in the wan
            assert sock.recv(16) == b"hello"
        monkeypatch.setenv(NETNS_ENV, f"{made.prefix}-nowhere")
        with pytest.raises(FileNotFoundError):
            dial(address, port, timeout=2.0)
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.parametrize("name", ["../etc", "a/b", ".", ".."])
def test_ppo_dr_netns_must_name_a_namespace(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NETNS_ENV, name)
    with pytest.raises(PermanentError, match="is not a network namespace's name"):
        dial("127.0.0.1", 9, timeout=0.5)


def test_without_ppo_dr_netns_dial_and_the_ssh_client_stay_where_they_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(NETNS_ENV, raising=False)
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        dial("127.0.0.1", server.getsockname()[1], timeout=2.0) as sock,
    ):
        assert sock.getpeername() == server.getsockname()
    endpoint = SshEndpoint("127.0.0.1", 22, "ppo", "/k", "/kh")
    assert client_argv("/usr/bin/ssh", endpoint, "true")[0] == "/usr/bin/ssh"
    monkeypatch.setenv(NETNS_ENV, "lab-wan")
    argv = client_argv("/usr/bin/ssh", endpoint, "true")
    assert argv[:5] == ["ip", "netns", "exec", "lab-wan", "/usr/bin/ssh"]
