"""``lab up --scale APPSxCLIENTS``: the fleet's shape at any size (pure), and a 50x20
fleet.yaml that passes the inventory's own rules (residency, mirrors, ids)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ppo_dr.errors import LabError
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import keys as lab_keys
from ppo_dr.lab import topology
from ppo_dr.lab.topology import ServerPorts

COUNTRY = {dc.id: dc.country for dc in topology.DATA_CENTRES}


def test_four_app_servers_are_the_classic_lab() -> None:
    assert [s.id for s in topology.plan_servers(4)] == [
        "app-jhb1-1",
        "app-jhb1-2",
        "app-cpt1-1",
        "app-lon1-1",
        "mirror-jhb1-1",
        "mirror-cpt1-1",
        "mirror-lon1-1",
        "spare-jhb1-1",
        "spare-cpt1-1",
        "spare-lon1-1",
    ]
    assert topology.plan_servers() == topology.SERVERS


@pytest.mark.parametrize("apps", range(1, topology.MAX_APP_SERVERS + 1))
def test_every_size_has_unique_ids_mirrors_that_exist_and_keep_residency(apps: int) -> None:
    servers = topology.plan_servers(apps)
    by_id = {s.id: s for s in servers}
    assert len(by_id) == len(servers)
    app = [s for s in servers if s.role == "app"]
    assert len(app) == apps
    for dc in COUNTRY:
        assert {s.role for s in servers if s.dc == dc} >= {"mirror", "spare"}
    for server in app:
        onsite, offsite = (by_id[m] for m in server.mirrors)
        assert onsite.role == offsite.role == "mirror"
        assert onsite.dc == server.dc != offsite.dc
        if COUNTRY[server.dc] == "ZA":  # ZA-only clients: both copies stay in ZA
            assert COUNTRY[offsite.dc] == "ZA"
    per_dc = Counter(s.dc for s in app)
    if apps >= 4:
        assert max(per_dc.values()) - min(per_dc.values()) <= 2


@pytest.mark.parametrize("apps", [0, -1, topology.MAX_APP_SERVERS + 1])
def test_a_size_out_of_bounds_is_refused(apps: int) -> None:
    with pytest.raises(LabError, match=f"1 to {topology.MAX_APP_SERVERS} app servers"):
        topology.plan_servers(apps)


@pytest.mark.parametrize(("text", "expected"), [("50x20", (50, 20)), (" 4X1 ", (4, 1))])
def test_scale_is_apps_by_clients(text: str, expected: tuple[int, int]) -> None:
    assert topology.parse_scale(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("50", "APPSxCLIENTS"),
        ("x20", "APPSxCLIENTS"),
        ("50x", "APPSxCLIENTS"),
        ("-5x20", "APPSxCLIENTS"),
        ("5.0x20", "APPSxCLIENTS"),
        ("50x20x1", "APPSxCLIENTS"),
        ("0x20", "1 to 200 app servers"),
        ("500x1", "1 to 200 app servers"),
        ("50x0", "1 to 100 clients per app server"),
        ("50x101", "1 to 100 clients per app server"),
    ],
)
def test_a_bad_scale_is_refused_with_the_rule(text: str, message: str) -> None:
    with pytest.raises(LabError, match=message):
        topology.parse_scale(text)


def test_fifty_by_twenty_is_a_valid_fleet_with_twenty_clients_per_app_server(
    tmp_path: Path,
) -> None:
    servers = topology.plan_servers(50)
    clients = topology.plan_clients(50 * 20, servers)
    assert set(Counter(c.server for c in clients).values()) == {20}
    assert len({c.id for c in clients}) == 1000
    keys = lab_keys.generate_lab_keys(tmp_path / "keys", [s.id for s in servers])
    free = list(range(20000, 20000 + topology.ports_needed(servers)))
    ports: dict[str, ServerPorts] = {s.id: topology.allocate_server_ports(s, free) for s in servers}
    document = topology.fleet_document(
        lab_dir=tmp_path,
        servers=servers,
        clients=clients,
        ports=ports,
        host_keys=keys.host_public,
        frontdoor_port=19999,
        size_mb=100,
        fast=True,
    )
    topology.write_yaml(tmp_path / "fleet.yaml", document)
    fleet = load_fleet(tmp_path / "fleet.yaml")
    assert len(fleet.clients) == 1000
    assert len([s for s in fleet.servers if s.role == "app"]) == 50
    assert fleet.timing.mirror_cron == "*/10 * * * *"


@pytest.mark.parametrize(
    ("clients", "interval"), [(1, 1.0), (22, 1.0), (50, 1.0), (51, 1.0), (75, 1.5), (1000, 20.0)]
)
def test_the_workload_asks_at_most_fifty_writes_a_second(clients: int, interval: float) -> None:
    assert topology.workload_interval(clients) == interval
    assert clients / topology.workload_interval(clients) <= topology.WORKLOAD_WRITES_PER_S + 1


@pytest.mark.parametrize(
    ("apps", "cron"),
    [
        (1, "* * * * *"),
        (4, "* * * * *"),
        (5, "* * * * *"),
        (6, "*/2 * * * *"),
        (50, "*/10 * * * *"),
    ],
)
def test_fast_mirrors_start_about_five_a_minute(apps: int, cron: str) -> None:
    assert topology.fast_mirror_cron(apps) == cron
    assert topology.fast_mirror_cron(topology.MAX_APP_SERVERS) == "*/40 * * * *"
