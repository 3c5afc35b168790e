"""The shape of the lab fleet: data centres, servers, clients, people, ports, fleet.yaml.

Three data centres in two hosting countries (``jhb1`` and ``cpt1`` in ZA, ``lon1`` in
GB). Every app server mirrors to an on-site mirror in its own data centre and to an
off-site mirror in a data centre its clients allow: the South African app servers to
the other South African data centre, the London app server to Johannesburg (its
clients allow GB and ZA). Each data centre also has a spare server that runs the app,
ready for a failover.

Everything here is pure except :func:`free_ports` (which asks the kernel) and
:func:`write_yaml` (which writes a file atomically); the supervisor puts them together.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from ppo_dr.errors import LabError
from ppo_dr.local_files import write_atomically

Role = Literal["app", "mirror", "spare"]

FLEET_NAME = "ppo-lab"
APP_DATA_ROOT = "/srv/ppo"
MIRROR_DATA_ROOT = "/srv/ppo-mirror"
SSH_USER = "ppo"


@dataclass(frozen=True)
class DataCentrePlan:
    id: str
    name: str
    country: str


DATA_CENTRES: tuple[DataCentrePlan, ...] = (
    DataCentrePlan("jhb1", "Johannesburg (lab)", "ZA"),
    DataCentrePlan("cpt1", "Cape Town (lab)", "ZA"),
    DataCentrePlan("lon1", "London (lab)", "GB"),
)


@dataclass(frozen=True)
class ServerPlan:
    """One lab server: its place, its role and (for app servers) its mirrors."""

    id: str
    dc: str
    role: Role
    mirrors: tuple[str, ...] = ()

    @property
    def data_root(self) -> str:
        return MIRROR_DATA_ROOT if self.role == "mirror" else APP_DATA_ROOT

    @property
    def serves_http(self) -> bool:
        """App and spare servers run the HTTP app; mirrors only speak SSH."""
        return self.role != "mirror"


#: Where the first app servers go (the classic lab); the rest go round the three DCs.
_FIRST_APP_DCS: tuple[str, ...] = ("jhb1", "jhb1", "cpt1", "lon1")
#: The (on-site, off-site) mirrors of an app server in each data centre (see above).
_MIRRORS_BY_DC: dict[str, tuple[str, str]] = {
    "jhb1": ("mirror-jhb1-1", "mirror-cpt1-1"),
    "cpt1": ("mirror-cpt1-1", "mirror-jhb1-1"),
    "lon1": ("mirror-lon1-1", "mirror-jhb1-1"),
}
DEFAULT_APP_SERVERS = 4
#: Requests per minute a lab app server takes (capacity.rpm): ten clients at the
#: workload's 60 a minute fit (the demo drains one server's five onto its neighbour,
#: the only other ZA server with room), and ten are over 80 % of it, so the rebalance
#: after the drained server's return moves some back.
APP_RPM = 660
#: ``--scale``'s bounds: a few hundred lab processes are the most one machine holds.
MAX_APP_SERVERS = 200
MAX_CLIENTS_PER_SERVER = 100


def plan_servers(apps: int = DEFAULT_APP_SERVERS) -> tuple[ServerPlan, ...]:
    """*apps* app servers spread over the data centres, then one mirror and one spare
    per data centre.

    The first four make the classic lab (two in Johannesburg, the largest DC, one each
    in Cape Town and London); the rest go round the three in turn. Every app server
    mirrors as the module docstring says, so residency holds at any scale.
    """
    if not 1 <= apps <= MAX_APP_SERVERS:
        raise LabError(f"the lab takes 1 to {MAX_APP_SERVERS} app servers (got {apps})")
    count = dict.fromkeys(_MIRRORS_BY_DC, 0)
    servers: list[ServerPlan] = []
    dcs = [dc.id for dc in DATA_CENTRES]
    for k in range(apps):
        dc = _FIRST_APP_DCS[k] if k < len(_FIRST_APP_DCS) else dcs[k % len(dcs)]
        count[dc] += 1
        servers.append(ServerPlan(f"app-{dc}-{count[dc]}", dc, "app", _MIRRORS_BY_DC[dc]))
    servers.sort(key=lambda s: (list(_MIRRORS_BY_DC).index(s.dc), int(s.id.rsplit("-", 1)[1])))
    servers += [ServerPlan(f"mirror-{dc.id}-1", dc.id, "mirror") for dc in DATA_CENTRES]
    servers += [ServerPlan(f"spare-{dc.id}-1", dc.id, "spare") for dc in DATA_CENTRES]
    return tuple(servers)


#: What the workload may ask of the fleet: writes per second, all clients together
#: (each is a request through the front door and an fsync on an app server).
WORKLOAD_WRITES_PER_S = 50.0


FRONTDOOR_CLIENTS_PER_PROCESS = 250
FRONTDOOR_MAX_PROCESSES = 4


def workload_interval(clients: int) -> float:
    """Seconds between two writes to one client: 1 s up to 50 clients, then longer, so
    that a 1,000-client lab asks 50 writes/s of one 2-core machine, not 1,000."""
    return max(1.0, round(clients / WORKLOAD_WRITES_PER_S, 1))


def frontdoor_processes(clients: int) -> int:
    """Front door processes sharing its port: one per 250 clients, two to four past 250.

    At 1,000 clients one process, starved of CPU among the lab's ~60 others, let most of
    the probe's checks time out (bench/frontdoor_load.py).
    """
    return max(1, min(FRONTDOOR_MAX_PROCESSES, -(-clients // FRONTDOOR_CLIENTS_PER_PROCESS)))


def parse_scale(text: str) -> tuple[int, int]:
    """``"50x20"`` -> 50 app servers with 20 clients each; a clear error otherwise."""
    apps, sep, per = text.strip().lower().partition("x")
    if not (sep and apps.isdigit() and per.isdigit()):
        raise LabError(f"--scale takes APPSxCLIENTS, e.g. 50x20 (got {text!r})")
    if not 1 <= int(per) <= MAX_CLIENTS_PER_SERVER:
        raise LabError(
            f"--scale: 1 to {MAX_CLIENTS_PER_SERVER} clients per app server (got {int(per)})"
        )
    plan_servers(int(apps))  # checks the bound
    return int(apps), int(per)


SERVERS: tuple[ServerPlan, ...] = plan_servers()

# Clients each app server's residency allows: ZA-only for the South African servers
# (both of their mirrors are in ZA); GB and ZA for London (its off-site mirror is jhb1).
_COUNTRIES_BY_DC: dict[str, tuple[str, ...]] = {
    "jhb1": ("ZA",),
    "cpt1": ("ZA",),
    "lon1": ("GB", "ZA"),
}

# (id, display name, key contact) for clients hosted in South Africa ...
_ZA_CLIENTS: tuple[tuple[str, str, str], ...] = (
    ("acme-mining", "Acme Mining", "Thandi Mokoena"),
    ("karoo-logistics", "Karoo Logistics", "Pieter van Wyk"),
    ("ubuntu-health", "Ubuntu Health", "Naledi Dlamini"),
    ("table-bay-fisheries", "Table Bay Fisheries", "Ayesha Jacobs"),
    ("highveld-motors", "Highveld Motors", "Johan Pretorius"),
    ("drakensberg-lodges", "Drakensberg Lodges", "Zanele Mthembu"),
    ("kalahari-solar", "Kalahari Solar", "Riaan Coetzee"),
    ("garden-route-wines", "Garden Route Wines", "Marelize du Toit"),
    ("limpopo-citrus", "Limpopo Citrus Co-op", "Tshilidzi Nemakonde"),
    ("namaqua-freight", "Namaqua Freight", "Fatima Adams"),
    ("stellenbosch-analytics", "Stellenbosch Analytics", "Hendrik Louw"),
    ("jozi-legal", "Jozi Legal Inc.", "Lerato Molefe"),
    ("cape-point-insurance", "Cape Point Insurance", "Grant Williams"),
    ("vaal-engineering", "Vaal Engineering", "Bongani Zulu"),
    ("soweto-bakeries", "Soweto Bakeries", "Nomsa Khoza"),
    ("umhlanga-dental", "Umhlanga Dental Group", "Priya Naidoo"),
)
# ... and in London.
_GB_CLIENTS: tuple[tuple[str, str, str], ...] = (
    ("thames-advisory", "Thames Advisory LLP", "Oliver Hughes"),
    ("camden-architects", "Camden Architects", "Sophie Turner"),
    ("pennine-textiles", "Pennine Textiles", "Harry Whitworth"),
    ("bristol-cycleworks", "Bristol Cycleworks", "Amelia Clarke"),
    ("mersey-shipping", "Mersey Shipping", "Liam O'Connor"),
    ("cotswold-estates", "Cotswold Estates", "Charlotte Evans"),
)


@dataclass(frozen=True)
class ClientPlan:
    id: str
    name: str
    server: str
    countries: tuple[str, ...]
    contact_name: str
    contact_email: str

    @property
    def data_path(self) -> str:
        return f"clients/{self.id}"


@dataclass(frozen=True)
class PersonPlan:
    id: str
    name: str
    email: str
    sms: str


PEOPLE: tuple[PersonPlan, ...] = (
    PersonPlan("sipho", "Sipho Ndlovu", "sipho@ppo.example", "+27820000001"),
    PersonPlan("anna", "Anna Botha", "anna@ppo.example", "+27820000002"),
    PersonPlan("james", "James Carter", "james@ppo.example", "+447700900003"),
)


@dataclass(frozen=True)
class ServerPorts:
    """A server's ports: public ones (netsim listens) and internal ones (the server)."""

    ssh: int
    ssh_internal: int
    http: int | None = None
    http_internal: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {
            "ssh": self.ssh,
            "ssh_internal": self.ssh_internal,
            "http": self.http,
            "http_internal": self.http_internal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerPorts:
        return cls(data["ssh"], data["ssh_internal"], data.get("http"), data.get("http_internal"))


def app_servers(servers: Iterable[ServerPlan] = SERVERS) -> list[ServerPlan]:
    return [s for s in servers if s.role == "app"]


def plan_clients(count: int, servers: Sequence[ServerPlan] = SERVERS) -> list[ClientPlan]:
    """*count* clients spread round-robin over the app servers, residency by data centre.

    Names come from a fixed list per country; past its end a number is appended
    (``acme-mining-2``), so any count yields unique, valid ids.
    """
    if count < 0:
        raise LabError(f"the number of clients must not be negative (got {count})")
    apps = app_servers(servers)
    pools = {"GB": list(_GB_CLIENTS), "ZA": list(_ZA_CLIENTS)}
    used = {"GB": 0, "ZA": 0}
    clients: list[ClientPlan] = []
    for i in range(count):
        home = apps[i % len(apps)]
        countries = _COUNTRIES_BY_DC[home.dc]
        pool_name = countries[0]
        pool = pools[pool_name]
        n = used[pool_name]
        used[pool_name] += 1
        base_id, base_name, contact = pool[n % len(pool)]
        lap = n // len(pool)
        client_id = base_id if lap == 0 else f"{base_id}-{lap + 1}"
        name = base_name if lap == 0 else f"{base_name} {lap + 1}"
        clients.append(
            ClientPlan(
                id=client_id,
                name=name,
                server=home.id,
                countries=countries,
                contact_name=contact,
                contact_email=f"it@{client_id}.example",
            )
        )
    return clients


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


#: ``LOW-HIGH``: the ports labs on this machine pick from, when two sets of labs must
#: never pick the same port (the test suite gives each of its workers a slice: a port
#: of a powered-off server is free to anyone else until the power comes back).
PORTS_VARIABLE = "PPO_DR_LAB_PORTS"


def lab_port_range() -> tuple[int, int]:
    """The ports a lab picks from: ``$PPO_DR_LAB_PORTS`` when set, else those below the
    kernel's ephemeral range, so an outgoing connection can never take one of them
    while its server is down. :class:`LabError` names a malformed setting."""
    setting = os.environ.get(PORTS_VARIABLE, "").strip()
    if setting:
        low_text, _, high_text = setting.partition("-")
        try:
            low, high = int(low_text), int(high_text)
        except ValueError:
            low, high = 0, 0
        if not 1024 <= low < high <= 65535:
            raise LabError(
                f"{PORTS_VARIABLE}={setting!r}: expected LOW-HIGH with 1024 <= LOW < HIGH <= 65535"
            )
        return low, high
    low_ephemeral, high_ephemeral = _ephemeral_range()
    if low_ephemeral > 20000:
        return 15000, low_ephemeral - 1
    return high_ephemeral + 1, 65535  # unusual kernel setting: above the ephemeral range


def free_ports(
    count: int, *, exclude: Iterable[int] = (), rng: random.Random | None = None
) -> list[int]:
    """*count* distinct TCP ports on 127.0.0.1 that nothing is bound to right now.

    The ports come from :func:`lab_port_range` (a power fault restarts a server on the
    same ports). Each candidate is test-bound, so ports in use by anyone else are
    skipped; *exclude* names ports that are taken though nothing listens now
    (those of a server that is powered off).
    """
    rng = rng or random.SystemRandom()
    low, high = lab_port_range()
    held: list[socket.socket] = []
    ports: list[int] = []
    taken = set(exclude)
    try:
        tries = 0
        while len(ports) < count:
            tries += 1
            if tries > count * 50 + 1000:
                raise LabError(f"could not find {count} free TCP ports on 127.0.0.1")
            port = rng.randint(low, high)
            if port in ports or port in taken:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def allocate_server_ports(server: ServerPlan, ports: list[int]) -> ServerPorts:
    """Take the ports *server* needs off the front of *ports* (consumed in place)."""
    ssh, ssh_internal = ports.pop(0), ports.pop(0)
    if not server.serves_http:
        return ServerPorts(ssh, ssh_internal)
    http, http_internal = ports.pop(0), ports.pop(0)
    return ServerPorts(ssh, ssh_internal, http, http_internal)


def ports_needed(servers: Iterable[ServerPlan]) -> int:
    return sum(4 if s.serves_http else 2 for s in servers)


#: With fast timings, how many mirror runs a minute the lab's machine is asked for.
FAST_MIRRORS_PER_MINUTE = 5


def fast_mirror_cron(apps: int) -> str:
    """Every minute for the classic lab; for a bigger one, every N minutes so that about
    five app servers' mirrors start a minute (each mirror run is a process of its own:
    at 50x20, fifty a minute kept two cores and the API so busy that most runs were
    cancelled as overlapping and the probe could not even be started)."""
    minutes = -(-apps // FAST_MIRRORS_PER_MINUTE)
    return "* * * * *" if minutes <= 1 else f"*/{minutes} * * * *"


def _timing(fast: bool, apps: int = DEFAULT_APP_SERVERS) -> dict[str, Any]:
    if fast:
        return {
            "mirror_cron": fast_mirror_cron(apps),
            "drill_cron": "*/5 * * * *",
            "probe_interval": "2s",
            "probe_timeout": "1s",
            "outage_threshold": "20s",
            "recovery_successes": 2,
        }
    return {
        "mirror_cron": "0 * * * *",
        "drill_cron": "30 3 * * *",
        "probe_interval": "10s",
        "probe_timeout": "5s",
        "outage_threshold": "3m",
        "recovery_successes": 3,
    }


def _escalation(fast: bool) -> dict[str, Any]:
    first, second = ("20s", "40s") if fast else ("5m", "10m")
    return {
        "levels": [
            {
                "name": "first line",
                "notify": ["sipho", "anna"],
                "channels": ["sms", "email"],
                "ack_deadline": first,
            },
            {
                "name": "second line",
                "notify": ["james"],
                "channels": ["sms", "email"],
                "ack_deadline": second,
            },
        ],
        "repeat": 1,
        "ack_timeout": "120s" if fast else "30m",
        "public_after": "30s" if fast else "10m",
        "public_every": "30s" if fast else "15m",
        "clients_after": "45s" if fast else "30m",
        "auto_failover": False,
    }


def server_entry(
    server: ServerPlan, ports: ServerPorts, host_key: str, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """The fleet.yaml entry of one lab server; its endpoints are the PUBLIC ports on
    *host* (netsim's address: loopback, or the wan address in a namespaced lab)."""
    capacity = (
        {"clients": 0, "disk_gb": 500}
        if server.role == "mirror"
        else {"clients": 40, "disk_gb": 50, "rpm": APP_RPM}
    )
    entry: dict[str, Any] = {
        "id": server.id,
        "dc": server.dc,
        "role": server.role,
        "ssh": {"host": host, "port": ports.ssh, "user": SSH_USER, "host_key": host_key},
    }
    if server.serves_http:
        entry["http"] = {"host": host, "port": ports.http}
    entry["data_root"] = server.data_root
    entry["capacity"] = capacity
    if server.mirrors:
        entry["mirrors"] = list(server.mirrors)
    return entry


def fleet_document(
    *,
    lab_dir: Path,
    servers: Sequence[ServerPlan],
    clients: Sequence[ClientPlan],
    ports: Mapping[str, ServerPorts],
    host_keys: Mapping[str, str],
    frontdoor_port: int,
    size_mb: float,
    fast: bool,
    host: str = "127.0.0.1",
    store_url: str | None = None,
) -> dict[str, Any]:
    """The whole fleet.yaml of the lab as plain data (dump it with :func:`write_yaml`);
    every endpoint and client URL is on *host*; the store is *store_url* (without a
    password), else a SQLite file in the lab."""
    per_client_gb = round(size_mb / max(len(clients), 1) / 1024, 4)
    return {
        "version": 1,
        "name": FLEET_NAME,
        "access": {"key_file": "keys/operator_ed25519"},
        "store": {"url": store_url or f"sqlite:///{lab_dir / 'state.db'}"},
        "timing": _timing(fast, len(app_servers(servers))),
        "channels": {
            "email": {"provider": "outbox", "sender": "noc@ppo.example"},
            "sms": {"provider": "outbox"},
            "x": {"provider": "outbox"},
            "outbox": str(lab_dir / "outbox.jsonl"),
        },
        "data_centres": [
            {"id": dc.id, "name": dc.name, "country": dc.country, "provider": "lab"}
            for dc in DATA_CENTRES
        ],
        "servers": [server_entry(s, ports[s.id], host_keys[s.id], host) for s in servers],
        "clients": [
            {
                "id": c.id,
                "name": c.name,
                "server": c.server,
                "data_path": c.data_path,
                "url": f"http://{host}:{frontdoor_port}/c/{c.id}/",
                "countries": list(c.countries),
                "size_gb": per_client_gb,
                "contacts": [{"name": c.contact_name, "email": c.contact_email}],
            }
            for c in clients
        ],
        "people": [{"id": p.id, "name": p.name, "email": p.email, "sms": p.sms} for p in PEOPLE],
        "escalation": _escalation(fast),
    }


def mirrors_for_new_app(dc: str, servers: Iterable[ServerPlan]) -> tuple[str, ...]:
    """On-site mirror in *dc*, then an off-site one: same country first, else any."""
    servers = list(servers)
    country = {d.id: d.country for d in DATA_CENTRES}
    mirrors = [s for s in servers if s.role == "mirror"]
    onsite = [m for m in mirrors if m.dc == dc]
    offsite = sorted(
        (m for m in mirrors if m.dc != dc),
        key=lambda m: (country.get(m.dc) != country.get(dc), m.id),
    )
    if not onsite or not offsite:
        raise LabError(f"no on-site and off-site mirror available for a new app server in {dc}")
    return (onsite[0].id, offsite[0].id)


def write_yaml(path: Path, document: Mapping[str, Any], header: str = "") -> None:
    """Dump *document* to *path* atomically (temporary file, then rename)."""
    text = header + yaml.safe_dump(
        dict(document), sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )
    write_text_atomic(path, text)


def write_text_atomic(path: Path, text: str, mode: int = 0o644, *, fsync: bool = False) -> None:
    """Replace *path* with *text* so a reader sees the old or the new file, never half.

    The rename alone survives a crash of this process (even ``kill -9``); *fsync* also
    survives a crash of the machine, at a cost of milliseconds per call.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text.encode("utf-8"), mode=mode, fsync=fsync)


FLEET_HEADER = (
    "# The embedded lab fleet, generated by `ppo-dr lab up`: every endpoint is a public\n"
    "# port on 127.0.0.1 (the lab's network simulator forwards it to the server).\n"
)
