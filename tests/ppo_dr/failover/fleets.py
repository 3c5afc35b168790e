"""Fleets and catalogues for the planner tests, built from compact specs.

``lab_like()`` mirrors the lab's shape (jhb1 and cpt1 in ZA, lon1 in GB, an on-site and
an off-site mirror per app server, a spare per DC) and passes every inventory rule, so
the CLI tests can write it to fleet.yaml. ``fleet_from`` skips the topology rules on
purpose: the property tests feed the planner odd fleets too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from ppo_dr.failover.model import SnapshotInfo
from ppo_dr.inventory import Fleet, parse_fleet

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAqMAs4x6rw0A/zZ6GQySsLwhOFhtvJXpcAZYwsNwBsM"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
GB = 10**9

# (id, dc, role, mirrors, max clients, disk GB)
ServerSpec = tuple[str, str, str, Sequence[str], int, float]
# (id, server, countries, size GB)
ClientSpec = tuple[str, str, Sequence[str], float]


def fleet_data(
    dcs: Mapping[str, tuple[str, str]],
    servers: Iterable[ServerSpec],
    clients: Iterable[ClientSpec],
) -> dict[str, Any]:
    """The fleet.yaml mapping for *dcs* ({id: (country, provider)}), servers and clients."""
    return {
        "version": 1,
        "name": "planner-test",
        "data_centres": [
            {"id": dc, "country": country, "provider": provider}
            for dc, (country, provider) in dcs.items()
        ],
        "servers": [
            {
                "id": sid,
                "dc": dc,
                "role": role,
                "ssh": {"host": f"{sid}.example", "port": 22, "host_key": HOST_KEY},
                **({"http": {"host": f"{sid}.example", "port": 80}} if role != "mirror" else {}),
                "capacity": {"clients": max_clients, "disk_gb": disk_gb},
                **({"mirrors": list(mirrors)} if mirrors else {}),
            }
            for sid, dc, role, mirrors, max_clients, disk_gb in servers
        ],
        "clients": [
            {
                "id": cid,
                "name": cid.replace("-", " ").title(),
                "server": server,
                "data_path": f"clients/{cid}",
                "url": f"https://{cid}.example/",
                "countries": list(countries),
                "size_gb": size_gb,
            }
            for cid, server, countries, size_gb in clients
        ],
    }


def fleet_from(data: Mapping[str, Any]) -> Fleet:
    """A fleet from *data*, field rules only (no topology rules)."""
    return Fleet.model_validate(data)


LAB_DCS = {"jhb1": ("ZA", "lab"), "cpt1": ("ZA", "static"), "lon1": ("GB", "lab")}
LAB_SERVERS: tuple[ServerSpec, ...] = (
    ("app-jhb1-1", "jhb1", "app", ("mirror-jhb1-1", "mirror-cpt1-1"), 10, 100),
    ("app-jhb1-2", "jhb1", "app", ("mirror-jhb1-1", "mirror-cpt1-1"), 10, 100),
    ("app-cpt1-1", "cpt1", "app", ("mirror-cpt1-1", "mirror-jhb1-1"), 10, 100),
    ("app-lon1-1", "lon1", "app", ("mirror-lon1-1", "mirror-jhb1-1"), 10, 100),
    ("mirror-jhb1-1", "jhb1", "mirror", (), 0, 4000),
    ("mirror-cpt1-1", "cpt1", "mirror", (), 0, 4000),
    ("mirror-lon1-1", "lon1", "mirror", (), 0, 4000),
    ("spare-jhb1-1", "jhb1", "spare", (), 10, 100),
    ("spare-cpt1-1", "cpt1", "spare", (), 10, 100),
    ("spare-lon1-1", "lon1", "spare", (), 10, 100),
)
LAB_CLIENTS: tuple[ClientSpec, ...] = (
    ("acme-mining", "app-jhb1-1", ("ZA",), 4),
    ("karoo-logistics", "app-jhb1-1", ("ZA",), 2),
    ("ubuntu-health", "app-jhb1-2", ("ZA",), 3),
    ("table-bay-fisheries", "app-cpt1-1", ("ZA",), 1),
    ("thames-advisory", "app-lon1-1", ("GB", "ZA"), 2),
)


def lab_like_data(
    servers: Iterable[ServerSpec] = LAB_SERVERS,
    clients: Iterable[ClientSpec] = LAB_CLIENTS,
    dcs: Mapping[str, tuple[str, str]] = LAB_DCS,
) -> dict[str, Any]:
    return fleet_data(dcs, servers, clients)


def lab_like(**kwargs: Any) -> Fleet:
    """The lab-shaped fleet, checked by every inventory rule."""
    return parse_fleet(yaml.safe_dump(lab_like_data(**kwargs)), "fleet.yaml")


def snap(
    client: str,
    mirror: str,
    minutes_ago: float = 30,
    *,
    verified: bool = True,
    size: int = GB,
    snapshot_id: str | None = None,
) -> SnapshotInfo:
    """One catalogue row taken *minutes_ago* before NOW."""
    taken = NOW - timedelta(minutes=minutes_ago)
    return SnapshotInfo(
        client_id=client,
        mirror_id=mirror,
        snapshot_id=snapshot_id or f"{taken:%Y-%m-%dT%H%M%SZ}",
        taken_at=taken,
        verified=verified,
        size_bytes=size,
    )


def mirrored(fleet: Fleet, minutes_ago: float = 30, size: int = GB) -> list[SnapshotInfo]:
    """Every client verified on both mirrors of its server, equally fresh."""
    return [
        snap(c.id, m, minutes_ago, size=size)
        for c in fleet.clients
        for m in fleet.server(c.server).mirrors
    ]
