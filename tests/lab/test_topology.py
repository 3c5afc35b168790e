"""The lab's generated fleet, ports and keys, without starting any process."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
from collections import Counter
from pathlib import Path

import paramiko
import pytest

from ppo_dr.errors import LabError
from ppo_dr.ids import is_valid_id
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab import keys, topology


def make_fleet(tmp_path: Path, clients: int = 20, *, fast: bool = False) -> Fleet:
    servers = list(topology.SERVERS)
    free = list(range(20000, 20000 + topology.ports_needed(servers)))
    ports = {s.id: topology.allocate_server_ports(s, free) for s in servers}
    lab_keys = keys.generate_lab_keys(tmp_path / "keys", [s.id for s in servers])
    doc = topology.fleet_document(
        lab_dir=tmp_path,
        servers=servers,
        clients=topology.plan_clients(clients),
        ports=ports,
        host_keys=lab_keys.host_public,
        frontdoor_port=19999,
        size_mb=200,
        fast=fast,
    )
    path = tmp_path / "fleet.yaml"
    topology.write_yaml(path, doc, topology.FLEET_HEADER)
    return load_fleet(path)


@pytest.mark.parametrize("clients", [1, 6, 20, 45])
def test_generated_fleet_passes_the_inventory_check(tmp_path: Path, clients: int) -> None:
    fleet = make_fleet(tmp_path, clients)
    assert len(fleet.clients) == clients
    assert {dc.id: dc.country for dc in fleet.data_centres} == {
        "jhb1": "ZA",
        "cpt1": "ZA",
        "lon1": "GB",
    }


def test_topology_roles_mirrors_and_residency(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    assert [s.id for s in fleet.servers_by_role("app")] == [
        "app-jhb1-1",
        "app-jhb1-2",
        "app-cpt1-1",
        "app-lon1-1",
    ]
    assert {s.id for s in fleet.servers_by_role("spare")} == {
        "spare-jhb1-1",
        "spare-cpt1-1",
        "spare-lon1-1",
    }
    assert fleet.onsite_mirror("app-jhb1-1").id == "mirror-jhb1-1"
    assert [m.id for m in fleet.offsite_mirrors("app-jhb1-2")] == ["mirror-cpt1-1"]
    assert [m.id for m in fleet.offsite_mirrors("app-cpt1-1")] == ["mirror-jhb1-1"]
    assert [m.id for m in fleet.offsite_mirrors("app-lon1-1")] == ["mirror-jhb1-1"]
    for client in fleet.clients:
        expected = ("GB", "ZA") if client.server == "app-lon1-1" else ("ZA",)
        assert client.countries == expected
        assert client.data_path == f"clients/{client.id}"
        assert client.url == f"http://127.0.0.1:19999/c/{client.id}/"
        assert client.contacts
    for server in fleet.servers:
        assert server.ssh.host == "127.0.0.1"
        assert (server.http is None) == (server.role == "mirror")
        assert server.data_root == ("/srv/ppo-mirror" if server.role == "mirror" else "/srv/ppo")
    assert fleet.escalation is not None and len(fleet.escalation.levels) == 2
    assert all(p.email and p.sms for p in fleet.people)
    assert fleet.channels.email.provider == fleet.channels.sms.provider == "outbox"
    assert fleet.channels.outbox == str(tmp_path / "outbox.jsonl")
    assert fleet.store.url == f"sqlite:///{tmp_path / 'state.db'}"


def test_fast_timings_are_compressed(tmp_path: Path) -> None:
    fast = make_fleet(tmp_path / "fast", fast=True)
    slow = make_fleet(tmp_path / "slow")
    assert fast.timing.mirror_cron == "* * * * *"
    assert (fast.timing.outage_threshold, fast.timing.probe_interval) == (20, 2)
    assert fast.timing.probe_timeout == 1 and fast.timing.recovery_successes == 2
    assert slow.timing.mirror_cron == "0 * * * *"
    assert (slow.timing.outage_threshold, slow.timing.probe_interval) == (180, 10)
    assert fast.escalation and slow.escalation
    assert fast.escalation.levels[0].ack_deadline == 20
    assert (fast.escalation.public_after, fast.escalation.clients_after) == (30, 45)
    assert slow.escalation.levels[0].ack_deadline == 300


def test_clients_are_unique_valid_and_spread_evenly() -> None:
    clients = topology.plan_clients(60)
    ids = [c.id for c in clients]
    assert len(set(ids)) == 60
    assert all(is_valid_id(i) for i in ids)
    per_server = Counter(c.server for c in clients)
    assert set(per_server) == {"app-jhb1-1", "app-jhb1-2", "app-cpt1-1", "app-lon1-1"}
    assert max(per_server.values()) - min(per_server.values()) <= 1
    assert topology.plan_clients(20) == topology.plan_clients(20)
    with pytest.raises(LabError):
        topology.plan_clients(-1)


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(topology.PORTS_VARIABLE, raising=False)
    ports = topology.free_ports(40)
    assert len(set(ports)) == 40
    low, high = topology._ephemeral_range()
    assert all(not low <= p <= high for p in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
    # Ports of a powered-off server are free to bind but not free to give away.
    assert not set(topology.free_ports(200, exclude=ports)) & set(ports)


def test_a_port_range_set_in_the_environment_bounds_every_pick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(topology.PORTS_VARIABLE, "21000-21099")
    assert topology.lab_port_range() == (21000, 21099)
    assert all(21000 <= port <= 21099 for port in topology.free_ports(60))
    for bad in ("21000", "x-21099", "21099-21000", "80-2000", "21000-70000"):
        monkeypatch.setenv(topology.PORTS_VARIABLE, bad)
        with pytest.raises(LabError, match=topology.PORTS_VARIABLE):
            topology.free_ports(1)


def test_new_app_server_gets_an_onsite_and_a_same_country_offsite_mirror() -> None:
    assert topology.mirrors_for_new_app("jhb1", topology.SERVERS) == (
        "mirror-jhb1-1",
        "mirror-cpt1-1",
    )
    assert topology.mirrors_for_new_app("lon1", topology.SERVERS)[0] == "mirror-lon1-1"
    with pytest.raises(LabError):
        topology.mirrors_for_new_app("nowhere", topology.SERVERS)


# --------------------------------------------------------------------------- keys


def test_keys_are_private_ed25519_and_readable_by_paramiko(tmp_path: Path) -> None:
    lab_keys = keys.generate_lab_keys(tmp_path / "keys", ["app-jhb1-1", "mirror-jhb1-1"])
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for path in (lab_keys.operator_key, lab_keys.host_key("app-jhb1-1"), lab_keys.authorized_keys):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = paramiko.Ed25519Key.from_private_key_file(str(lab_keys.operator_key))
    assert f"{loaded.get_name()} {loaded.get_base64()}" == lab_keys.operator_public
    assert lab_keys.operator_public.startswith("ssh-ed25519 AAAA")
    assert (
        keys.read_public_key(lab_keys.host_key("app-jhb1-1")) == lab_keys.host_public["app-jhb1-1"]
    )
    assert lab_keys.authorized_keys.read_text().split()[:2] == lab_keys.operator_public.split()
    if shutil.which("ssh-keygen"):
        derived = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(lab_keys.host_key("mirror-jhb1-1"))],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert " ".join(derived[:2]) == lab_keys.host_public["mirror-jhb1-1"]


def test_known_hosts_lines_are_what_openssh_and_paramiko_read(tmp_path: Path) -> None:
    lab_keys = keys.generate_lab_keys(tmp_path / "keys", ["a", "b"])
    path = tmp_path / "known_hosts"
    keys.write_known_hosts(path, [(40001, lab_keys.host_public["a"])])
    keys.add_known_host(path, 40002, lab_keys.host_public["b"])
    keys.add_known_host(path, 40001, lab_keys.host_public["b"])  # replaced, not duplicated
    lines = path.read_text().splitlines()
    assert lines == [
        f"[127.0.0.1]:40002 {lab_keys.host_public['b']}",
        f"[127.0.0.1]:40001 {lab_keys.host_public['b']}",
    ]
    host_keys = paramiko.HostKeys(str(path))
    assert host_keys.lookup("[127.0.0.1]:40002") is not None
    if shutil.which("ssh-keygen"):
        found = subprocess.run(
            ["ssh-keygen", "-F", "[127.0.0.1]:40002", "-f", str(path)],
            capture_output=True,
            text=True,
        )
        assert found.returncode == 0 and "40002" in found.stdout
