"""The lab supervisor with real processes on 127.0.0.1: up, status, faults, heal, down."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest
from conftest import paramiko_client
from typer.testing import CliRunner

from cli.lab import lab_app
from ppo_dr.errors import LabError
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import controlplane_record, store_database
from ppo_dr.lab.controlplane_postgres import PG_ROOT
from ppo_dr.lab.supervisor import ComponentStatus, Lab
from ppo_dr.store import Store
from tests.cli.entry import PPO_DR
from tests.topology.conftest import reachable_tempdir

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def front_door_status(
    lab: Lab, client: str, path: str = "health", timeout: float = 2.0
) -> int | None:
    """HTTP status of a client's URL through the front door; None on timeout or reset."""
    state = json.loads((lab.directory / "lab.json").read_text())
    conn = http.client.HTTPConnection("127.0.0.1", state["frontdoor_port"], timeout=timeout)
    try:
        conn.request("GET", f"/c/{client}/{path}")
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def by_name(lab: Lab) -> dict[str, ComponentStatus]:
    return {row.name: row for row in lab.status()}


def client_on(lab: Lab, server: str) -> str:
    return next(c for c, home in lab.client_homes().items() if home == server)


def ssh(lab: Lab, port: int, command: str) -> subprocess.CompletedProcess[str]:
    """The OpenSSH client with strict host key checking against the lab's known_hosts."""
    return subprocess.run(
        [
            "ssh", "-F", "/dev/null",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={lab.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=5",
            "-i", str(lab.operator_key),
            "-p", str(port),
            "ppo@127.0.0.1", command,
        ],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def live_pids(pids: dict[str, int]) -> dict[str, int]:
    """The pids that still exist and are not zombies."""
    alive = {}
    for name, pid in pids.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
            alive[name] = pid
    return alive


# --------------------------------------------------------------------------- up and status


def test_up_brings_every_component_up_healthy(lab: Lab) -> None:
    rows = lab.status()
    assert [r.name for r in rows if not r.healthy] == []
    assert {r.state for r in rows} == {"running"}
    kinds = sorted(r.kind for r in rows)
    assert kinds.count("server") >= 10
    assert {"netsim", "frontdoor", "workload"} <= set(kinds)
    # Every live lab process is a current component, and every one is recorded (the
    # recorded set also keeps pids retired by earlier power faults in this session).
    live = {pid for pid, _module in lab.processes()}
    assert live == {r.pid for r in rows if r.pid}
    assert live <= set(lab.recorded_pids().values())
    healthy_after = json.loads((lab.directory / "lab.json").read_text())["healthy_after_s"]
    assert healthy_after < 15


def test_fleet_passes_the_inventory_check_and_known_hosts_works(lab: Lab) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("OpenSSH client not installed")
    fleet = load_fleet(lab.fleet_file)
    assert len(fleet.clients) == 6
    for server_id in ("app-jhb1-1", "mirror-lon1-1"):
        port = fleet.server(server_id).ssh.port
        done = ssh(lab, port, "health")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["server"] == server_id
    # paramiko, as the runbooks use it: known_hosts and RejectPolicy, the operator key.
    server = fleet.server("app-cpt1-1")
    known = paramiko.HostKeys(str(lab.known_hosts))
    with paramiko_client(server.ssh.port, lab.operator_key, known) as client:
        _stdin, stdout, _stderr = client.exec_command("health", timeout=5)
        assert json.loads(stdout.read())["server"] == "app-cpt1-1"


def test_every_client_is_served_through_the_front_door(lab: Lab) -> None:
    for client in lab.client_homes():
        assert front_door_status(lab, client) == 200, client
        assert front_door_status(lab, client, "") == 200, client
    acks = lab.directory / "workload" / "acks.jsonl"
    wait_until(lambda: acks.exists() and acks.stat().st_size > 0, 10, "the workload's first ack")


def test_up_on_a_running_lab_is_refused(lab: Lab) -> None:
    with pytest.raises(LabError, match="already up"):
        Lab(lab.directory).up(clients=2, size_mb=1)


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "server"),
    [
        ("power", "app-jhb1-1"),
        ("hang", "app-jhb1-2"),
        ("disk", "app-cpt1-1"),
        ("network", "app-lon1-1"),
    ],
)
def test_fault_on_an_app_server_fails_its_client_through_the_front_door(
    healed_lab: Lab, fault: str, server: str
) -> None:
    lab = healed_lab
    client = client_on(lab, server)
    assert front_door_status(lab, client) == 200

    assert lab.break_(server, fault) == [server]
    wait_until(lambda: front_door_status(lab, client) != 200, 8, f"{client} failing after {fault}")
    row = by_name(lab)[server]
    assert not row.healthy and fault in row.faults
    assert row.state == {"power": "dead", "hang": "hung"}.get(fault, "running")
    others = [r.name for r in lab.status() if not r.healthy and r.name != server]
    assert others == []

    assert lab.heal(server) == [server]
    wait_until(lambda: front_door_status(lab, client) == 200, 15, f"{client} back after heal")
    row = by_name(lab)[server]
    assert row.healthy and row.faults == () and row.state == "running"
    assert lab.heal(server) == []  # healing a healthy server changes nothing


def test_disk_heal_keeps_the_real_data_when_the_server_made_a_new_root(healed_lab: Lab) -> None:
    lab = healed_lab
    root = lab.data_root("app-jhb1-2", "/srv/ppo")
    client = client_on(lab, "app-jhb1-2")
    before = sorted(p.name for p in (root / "clients" / client).iterdir())
    lab.break_("app-jhb1-2", "disk")
    root.mkdir(parents=True)  # as if the app had re-created an empty data root
    (root / "stray.txt").write_text("written while the disk was gone\n")
    lab.heal("app-jhb1-2")
    assert sorted(p.name for p in (root / "clients" / client).iterdir()) == before
    assert not (root / "stray.txt").exists()
    kept = list((lab.directory / "quarantine").glob("app-jhb1-2-*-recreated/stray.txt"))
    assert len(kept) == 1


def test_disk_fault_on_a_mirror_shows_in_status(healed_lab: Lab) -> None:
    lab = healed_lab
    assert lab.break_("mirror-lon1-1", "disk") == ["mirror-lon1-1"]
    row = by_name(lab)["mirror-lon1-1"]
    assert not row.healthy and "data root /srv/ppo-mirror missing" in row.detail
    assert lab.heal("lon1") == ["mirror-lon1-1"]
    assert by_name(lab)["mirror-lon1-1"].healthy


def test_a_whole_data_centre_goes_down_and_comes_back(healed_lab: Lab) -> None:
    lab = healed_lab
    in_jhb1 = sorted(r.name for r in lab.status() if r.kind == "server" and r.dc == "jhb1")
    assert len(in_jhb1) >= 4
    assert sorted(lab.break_("jhb1", "power")) == in_jhb1
    rows = by_name(lab)
    for name in in_jhb1:
        assert rows[name].state == "dead" and not rows[name].healthy, name
    assert all(r.healthy for r in rows.values() if r.dc != "jhb1")
    for client, home in lab.client_homes().items():
        if home.startswith("app-jhb1"):
            assert front_door_status(lab, client) != 200
    assert sorted(lab.heal("jhb1")) == in_jhb1
    assert all(r.healthy for r in lab.status())


def test_bad_targets_and_faults_say_what_is_valid(lab: Lab) -> None:
    with pytest.raises(LabError, match=r"unknown target 'nowhere'.*jhb1.*app-jhb1-1"):
        lab.break_("nowhere", "power")
    with pytest.raises(LabError, match=r"unknown fault 'flood'.*power, hang, disk, network"):
        lab.break_("jhb1", "flood")
    with pytest.raises(LabError, match="unknown target"):
        lab.heal("lon2")


def test_cli_status_break_heal_and_errors(healed_lab: Lab) -> None:
    lab = healed_lab
    runner = CliRunner()
    d = ["--dir", str(lab.directory)]
    result = runner.invoke(lab_app, ["status", *d])
    assert result.exit_code == 0, result.output
    assert "app-lon1-1" in result.output and "all healthy" in result.output
    result = runner.invoke(lab_app, ["break", "mirror-cpt1-1", "--fault", "network", *d])
    assert result.exit_code == 0 and "network fault on: mirror-cpt1-1" in result.output
    result = runner.invoke(lab_app, ["status", *d])
    assert "unhealthy: mirror-cpt1-1" in result.output
    result = runner.invoke(lab_app, ["heal", "cpt1", *d])
    assert result.exit_code == 0 and "healed: mirror-cpt1-1" in result.output
    result = runner.invoke(lab_app, ["break", "nowhere", "--fault", "power", *d])
    assert result.exit_code == 2
    assert "unknown target" in result.output and "Traceback" not in result.output


def test_start_server_provisions_a_reachable_server_and_remove_releases_it(lab: Lab) -> None:
    server = lab.start_server("spare-cpt1-2", "cpt1", "spare")
    assert server.id == "spare-cpt1-2" and server.http is not None
    fleet = load_fleet(lab.fleet_file)
    assert fleet.server("spare-cpt1-2").ssh.host_key == server.ssh.host_key
    assert by_name(lab)["spare-cpt1-2"].healthy
    if shutil.which("ssh"):
        done = ssh(lab, server.ssh.port, "health")
        assert done.returncode == 0, done.stderr
    with pytest.raises(LabError, match="exists already"):
        lab.start_server("spare-cpt1-2", "cpt1", "spare")

    pid = by_name(lab)["spare-cpt1-2"].pid
    lab.remove_server("spare-cpt1-2")
    assert "spare-cpt1-2" not in {s.id for s in load_fleet(lab.fleet_file).servers}
    assert "spare-cpt1-2" not in by_name(lab)
    assert f":{server.ssh.port} " not in lab.known_hosts.read_text()
    assert pid is not None and live_pids({"spare": pid}) == {}
    with pytest.raises(LabError, match="fixed topology"):
        lab.remove_server("spare-cpt1-1")


# --------------------------------------------------------------------------- down


def test_down_stops_every_process_and_is_idempotent(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab")
    try:
        lab.up(clients=2, size_mb=2, fast=True, timeout=30)
        recorded = lab.recorded_pids()
        assert len(recorded) == 13
        lab.break_("app-cpt1-1", "hang")  # a stopped process must go too
        stopped = lab.down()
        assert len(stopped) == 13
        assert live_pids(recorded) == {}
        assert lab.processes() == []
        assert {r.state for r in lab.status()} == {"stopped"}
        assert (lab.directory / "fleet.yaml").exists()  # left for a post-mortem
    finally:
        assert lab.down() == []


def test_down_after_up_was_killed_leaves_no_process(tmp_path: Path) -> None:
    directory = tmp_path / "lab"
    up = subprocess.Popen(
        [*PPO_DR, "lab", "up", "--dir", str(directory),
         "--clients", "2", "--size", "2", "--fast"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    lab = Lab(directory)
    try:
        wait_until(lambda: len(lab.recorded_pids()) >= 5, 20, "`lab up` to start processes")
        up.send_signal(signal.SIGKILL)
        up.wait(5)
        # A lab process spawned but never recorded (as if `up` died right after fork).
        stray = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "-m", "ppo_dr.lab.netsim",
             "--config", str(directory / "net" / "routes.json")],
            start_new_session=True,
        )  # fmt: skip
        assert len(lab.processes()) >= 6
        stopped = lab.down()
        assert f"stray netsim (pid {stray.pid})" in stopped
        stray.wait(5)  # killed (down reaps it, so its exit status is gone)
        assert lab.processes() == []
        assert live_pids(lab.recorded_pids()) == {}
    finally:
        if up.poll() is None:
            up.kill()
        lab.down()


def test_a_pid_that_is_not_ours_is_never_killed(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab")
    try:
        lab.up(clients=1, size_mb=1, fast=True, timeout=30)
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        state = json.loads((lab.directory / "lab.json").read_text())
        real = state["components"]["workload"]["pid"]
        state["components"]["workload"]["pid"] = bystander.pid  # as if the pid was recycled
        (lab.directory / "lab.json").write_text(json.dumps(state))
        lab.down()
        assert bystander.poll() is None
        bystander.kill()
        bystander.wait()
        assert live_pids({"workload": real}) == {}  # the sweep found the real one
    finally:
        lab.down()
        assert lab.directory.is_dir()


def test_a_directory_that_is_not_a_lab_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(LabError, match="not empty and holds no lab"):
        Lab(tmp_path).up(clients=1, size_mb=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(LabError, match="no lab in"):
        Lab(tmp_path).status()
    with pytest.raises(LabError, match="no lab in"):
        Lab(tmp_path / "missing").break_("jhb1", "power")
    assert Lab(tmp_path / "missing").down() == []
    assert not (tmp_path / "missing").exists()


def _store_row(lab: Lab) -> ComponentStatus:
    (row,) = [r for r in lab.status() if r.kind == "store"]
    return row


@pytest.mark.skipif(not any(PG_ROOT.glob("*/bin/postgres")), reason="needs Debian's postgresql")
def test_a_lab_with_its_store_in_postgres_comes_up_on_it_and_down_without_it() -> None:
    directory = reachable_tempdir() / "lab"
    runner = CliRunner()
    try:
        bad = runner.invoke(lab_app, ["up", "--dir", str(directory), "--store", "mysql"])
        assert bad.exit_code == 2 and "--store 'mysql': one of sqlite, postgres" in bad.output
        assert not store_database.recorded(directory)
        up = runner.invoke(
            lab_app,
            ["up", "--dir", str(directory), "--store", "postgres", "--clients", "2",
             "--size", "1", "--timeout", "60"],
        )  # fmt: skip
        assert up.exit_code == 0, up.output
        url = Lab(directory).store_url
        assert url.startswith("postgresql://ppo@127.0.0.1:") and "passfile=" in url
        assert f"State store: {url}" in up.output
        with Store.open(url) as store:  # the lab seeded its placements there
            assert {p.client_id for p in store.placements()} == {
                c.id for c in load_fleet(directory / "fleet.yaml").clients
            }
        again = runner.invoke(lab_app, ["up", "--dir", str(directory), "--store", "postgres"])
        assert again.exit_code == 2 and "already up" in again.output
        plane = controlplane_record.load(store_database.store_db_dir(directory))
        assert plane.state == "up" and plane.component("postgres").is_running()  # left alone
        row = _store_row(Lab(directory))
        assert (row.state, row.healthy) == ("running", True), row
        assert (row.pid, row.port) == (plane.component("postgres").pid, plane.pg_port)
        status = runner.invoke(lab_app, ["status", "--dir", str(directory)])
        assert "store-db" in status.output
        os.kill(plane.component("postgres").pid, signal.SIGKILL)  # the store's power cut
        wait_until(lambda: _store_row(Lab(directory)).state == "dead", 10, "the store dead")
        assert not _store_row(Lab(directory)).healthy
        down = runner.invoke(lab_app, ["down", "--dir", str(directory)])
        assert down.exit_code == 0 and "store postgres" in down.output, down.output
        assert not plane.component("postgres").is_running()
        assert _store_row(Lab(directory)).state == "stopped"
    finally:
        Lab(directory).down()
        shutil.rmtree(directory.parent, ignore_errors=True)
