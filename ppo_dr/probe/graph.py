"""Inhibition: many failing targets, one outage at the level that explains them.

Targets form a graph: client → app server (its current placement) → data centre.
When an app server's own check is in outage, its clients' failures are symptoms, not
separate outages: the result is ONE server-level outage naming every client placed
there. When every checked server of a data centre (at least two of them) is in outage,
it is ONE dc-level outage. Only a client failing on a healthy server is a client-level
outage. This is Alertmanager's inhibition, done as a pure function of the states.

Witnesses: a spare that hosts no client is checked too, but only as a witness for its
data centre. Its own outage opens nothing (no client is affected); it makes a DC with a
single app server tell "the server died" from "the DC died", which two app servers
alone could not. Without it such a DC's loss was a server outage, and whether the lab's
London DC had a second server to count depended on which faults had run before.

Keys are ``outage:<level>:<subject>`` -- derived from the subject only, never from
times or ordering -- so a restarted probe re-derives the same key and the store's
``open_incident`` finds the incident already open instead of opening a second one.

Holding back: if a client is down while its server is still *pending* and the two
started failing together (within ``hold_window``), the client outage is held back for
now: a cycle later the server is usually down too, and the client should be named in
the server's outage instead of paging once for the client and once for the server.
The same holds for a server whose data-centre siblings are pending. A parent that
flaps (its failure runs keep restarting) does not hold anything back, because its
failures did not start with the child's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from ppo_dr.probe.state import TargetState, TargetStatus

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet

Level = Literal["client", "server", "dc"]


def client_target(client_id: str) -> str:
    """The probe target id of a client's health check (through the front door)."""
    return f"client:{client_id}"


def server_target(server_id: str) -> str:
    """The probe target id of an app server's own health check."""
    return f"server:{server_id}"


def outage_key(level: Level, subject_id: str) -> str:
    """The stable dedupe key of an outage: the same subject always gives the same key."""
    return f"outage:{level}:{subject_id}"


@dataclass(frozen=True, slots=True)
class FleetGraph:
    """Who depends on whom: clients on app servers (current placements) in DCs."""

    client_server: Mapping[str, str]
    server_dc: Mapping[str, str]
    dc_servers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Servers checked only to tell a DC outage from a server outage (idle spares).
    witnesses: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        client_server: Mapping[str, str],
        server_dc: Mapping[str, str],
        witnesses: Iterable[str] = (),
    ) -> FleetGraph:
        """A graph from the two maps; servers per DC follow from *server_dc*, which
        names the *witnesses* too."""
        by_dc: dict[str, list[str]] = {}
        for server, dc in sorted(server_dc.items()):
            by_dc.setdefault(dc, []).append(server)
        dc_servers = {d: tuple(s) for d, s in by_dc.items()}
        return cls(dict(client_server), dict(server_dc), dc_servers, frozenset(witnesses))

    @classmethod
    def from_fleet(cls, fleet: Fleet, placements: Mapping[str, str] | None = None) -> FleetGraph:
        """The fleet's app servers, clients and witnesses; *placements* (client →
        server) override the homes in fleet.yaml, since clients move on failover."""
        homes = {c.id: c.server for c in fleet.clients}
        homes.update(placements or {})
        hosting = set(homes.values())
        server_dc = {s.id: s.dc for s in fleet.servers if s.http is not None or s.id in hosting}
        idle = set(server_dc) - hosting
        witnesses = {s.id for s in fleet.servers if s.id in idle and s.role != "app"}
        return cls.build(homes, server_dc, witnesses)

    def clients_on(self, server_id: str) -> tuple[str, ...]:
        return tuple(sorted(c for c, s in self.client_server.items() if s == server_id))


@dataclass(frozen=True, slots=True)
class Outage:
    """One outage to open an incident for: its key, level, subject and who is affected."""

    key: str
    level: Level
    subject_id: str
    clients: tuple[str, ...]
    since: datetime


def _first(statuses: Iterable[TargetStatus | None]) -> datetime | None:
    times = [s.first_failure_at for s in statuses if s is not None and s.first_failure_at]
    return min(times) if times else None


def _holds(parent: TargetStatus | None, child: TargetStatus, window: timedelta) -> bool:
    """A pending parent whose failures began with the child's holds the child back."""
    if parent is None or parent.state is not TargetState.PENDING:
        return False
    if parent.first_failure_at is None or child.first_failure_at is None:
        return False
    return abs(parent.first_failure_at - child.first_failure_at) <= window


def outages(
    states: Mapping[str, TargetStatus],
    graph: FleetGraph,
    *,
    hold_window: timedelta = timedelta(seconds=60),
) -> list[Outage]:
    """The outages the target *states* amount to, at the highest level that explains them.

    *states* is keyed by target id (:func:`client_target`, :func:`server_target`);
    targets not in it count as up. Sorted by key, so the result is deterministic.
    """

    def status(target: str) -> TargetStatus | None:
        return states.get(target)

    def out(target: str) -> bool:
        s = status(target)
        return s is not None and s.state.in_outage

    down = {s for s in graph.server_dc if out(server_target(s))}
    servers_out = down - graph.witnesses
    found: list[Outage] = []

    dcs_out: set[str] = set()
    for dc, servers in graph.dc_servers.items():
        if len(servers) >= 2 and all(s in down for s in servers):
            dcs_out.add(dc)
            clients = tuple(sorted(c for s in servers for c in graph.clients_on(s)))
            since = _first(
                [status(server_target(s)) for s in servers]
                + [status(client_target(c)) for c in clients if out(client_target(c))]
            )
            assert since is not None  # every server is in outage, so each has a first failure
            found.append(Outage(outage_key("dc", dc), "dc", dc, clients, since))

    for server in sorted(servers_out):
        dc = graph.server_dc[server]
        if dc in dcs_out:
            continue
        own = status(server_target(server))
        assert own is not None
        siblings = [status(server_target(s)) for s in graph.dc_servers.get(dc, ()) if s != server]
        if len(graph.dc_servers.get(dc, ())) >= 2 and any(
            _holds(sib, own, hold_window) for sib in siblings
        ):
            continue  # the whole DC may be going: wait a cycle rather than page twice
        clients = graph.clients_on(server)
        since = _first([own] + [status(client_target(c)) for c in clients if out(client_target(c))])
        assert since is not None
        found.append(Outage(outage_key("server", server), "server", server, clients, since))

    for client, server in sorted(graph.client_server.items()):
        own = status(client_target(client))
        if own is None or not own.state.in_outage:
            continue
        if server in servers_out:
            continue  # inhibited: named in its server's (or DC's) outage
        if _holds(status(server_target(server)), own, hold_window):
            continue
        assert own.first_failure_at is not None
        found.append(
            Outage(outage_key("client", client), "client", client, (client,), own.first_failure_at)
        )

    return sorted(found, key=lambda o: o.key)
