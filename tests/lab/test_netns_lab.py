"""The namespaced lab (``topology="distributed"``, as root): every server runs inside
its DC's namespace, the public side in the wan; a DC's server answers from the control
site until ``break DC --fault network`` takes its link down; ``--fault power`` kills
every process of the DC, a program (worker) started there too; ``down`` leaves no
namespace and no process behind (checked by name and by pid)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ppo_dr.errors import LabError
from ppo_dr.lab import netns
from ppo_dr.lab.netns import NetPlan
from ppo_dr.lab.supervisor import Lab
from ppo_dr.pids import alive

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        netns.unavailable_reason() is not None,
        reason=f"needs network namespaces ({netns.unavailable_reason()})",
    ),
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = Lab(tmp_path_factory.mktemp("netns-lab") / "lab")
    try:
        lab.up(clients=3, size_mb=2, fast=True, timeout=60.0, topology="distributed")
        yield lab
    finally:
        lab.down()
        assert netns.existing(netns.prefix_for(lab.directory)) == []


def _net(lab: Lab) -> NetPlan:
    net = lab.network()
    assert net is not None
    return net


def _ssh_banner(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=1.0) as sock:
        sock.settimeout(1.0)
        return sock.recv(8)


def _banner_from(namespace: str, host: str, port: int) -> bytes | str:
    """The first bytes of an SSH banner seen from *namespace*, or the error."""
    try:
        return netns.call_in(namespace, lambda: _ssh_banner(host, port))
    except OSError as exc:
        return type(exc).__name__


def test_each_process_runs_in_its_namespace(lab: Lab) -> None:
    net = _net(lab)
    rows = lab.status()
    for row in rows:
        where = net.dc(row.dc).namespace if row.kind == "server" and row.dc else net.wan
        assert row.pid in netns.pids_in(where), row.name
    assert {row.kind for row in rows} == {"netsim", "server", "frontdoor", "workload"}
    assert all(row.healthy for row in rows)


def test_a_dc_server_answers_from_the_control_site_until_its_link_is_down(lab: Lab) -> None:
    net = _net(lab)
    port = next(row.port for row in lab.status() if row.name == "app-jhb1-1")
    assert port is not None
    ctl = net.control.namespace
    assert _banner_from(ctl, net.wan_address, port) == b"SSH-2.0-"
    assert lab.break_("jhb1", "network") == [
        "app-jhb1-1",
        "app-jhb1-2",
        "mirror-jhb1-1",
        "spare-jhb1-1",
    ]
    try:
        assert not netns.link_is_up(net, "jhb1")
        assert _banner_from(ctl, net.wan_address, port) != b"SSH-2.0-"
        rows = {row.name: row for row in lab.status()}
        assert not rows["app-jhb1-1"].healthy and rows["app-jhb1-1"].state == "running"
        assert rows["app-cpt1-1"].healthy
        with pytest.raises(LabError, match="data centre jhb1's link: heal jhb1"):
            lab.heal("app-jhb1-1")
        assert not netns.link_is_up(net, "jhb1")
    finally:
        lab.heal("jhb1")
    assert netns.link_is_up(net, "jhb1")
    assert _banner_from(ctl, net.wan_address, port) == b"SSH-2.0-"


def test_a_power_loss_kills_the_dc_and_its_worker_and_heal_restarts_them(lab: Lab) -> None:
    net = _net(lab)
    worker = lab.start_program(
        "worker-like-lon1", dc="lon1", argv=[sys.executable, "-c", "import time; time.sleep(600)"]
    )
    assert worker in netns.pids_in(net.dc("lon1").namespace)
    before = set(netns.pids_in(net.dc("lon1").namespace))
    assert "worker-like-lon1" in lab.break_("lon1", "power")
    try:
        assert not any(alive(pid) for pid in before)
        assert netns.pids_in(net.dc("lon1").namespace) == []
        dead = {row.name for row in lab.status() if row.state == "dead"}
        assert dead == {"app-lon1-1", "mirror-lon1-1", "spare-lon1-1", "worker-like-lon1"}
    finally:
        healed = lab.heal("lon1")
    assert "worker-like-lon1" in healed
    assert all(row.healthy for row in lab.status())
    assert lab.recorded_pids()["worker-like-lon1"] in netns.pids_in(net.dc("lon1").namespace)


def test_a_program_needs_a_known_dc_and_a_fresh_name(lab: Lab) -> None:
    with pytest.raises(LabError, match="unknown data centre 'ams1': one of cpt1, jhb1, lon1"):
        lab.start_program("w", dc="ams1", argv=["true"])
    with pytest.raises(LabError, match="'app-jhb1-1' exists already"):
        lab.start_program("app-jhb1-1", dc="jhb1", argv=["true"])


def test_down_leaves_no_namespace_and_no_process(lab: Lab) -> None:
    """Last in this module: it takes the module's lab down (the fixture's down after
    it finds nothing left to do)."""
    lab.start_program("sleeper", dc="jhb1", argv=["sleep", "600"])
    pids = set(lab.recorded_pids().values())
    prefix = netns.prefix_for(lab.directory)
    assert len(netns.existing(prefix)) == 5
    stopped = lab.down()
    assert [s for s in stopped if s.startswith("netns ")] == [
        f"netns {prefix}-{n}" for n in ("cpt1", "ctl", "jhb1", "lon1", "wan")
    ]
    assert netns.existing(prefix) == []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert prefix not in listed.stdout
    assert not [pid for pid in pids if alive(pid)]
    assert lab.processes() == []
    assert lab.down() == []  # safe to repeat
