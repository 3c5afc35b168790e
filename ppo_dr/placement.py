"""Placement rules the failover planner and the mirror runbook share (pure).

A server's mirror pair (:func:`mirrors_for`: declared, or derived on-site first) and
the capacity of a newly provisioned app server (:func:`template_capacity`). They sit
below both :mod:`ppo_dr.failover` and :mod:`ppo_dr.fleet_access`, so the runbook that
mirrors a server and the planner that moves its clients derive the same pair without
importing each other. :class:`PlanError` lives here because these rules raise it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from ppo_dr.errors import PermanentError
from ppo_dr.ids import check_id
from ppo_dr.inventory import Capacity, DataCentre, Fleet, Server

COUNTRY_RE: Final = re.compile(r"[A-Z]{2}")


class PlanError(PermanentError):
    """The request cannot be planned at all (unknown ids, contradictory scope or target)."""


def template_capacity(fleet: Fleet) -> Capacity:
    """Capacity of a newly provisioned app server: that of the fleet's largest app server.

    Largest by disk, then by clients; a fleet without app servers gets the inventory's
    default :class:`~ppo_dr.inventory.Capacity`. Providers build the template to match.
    """
    apps = fleet.servers_by_role("app")
    if not apps:
        return Capacity()
    return max(apps, key=lambda s: (s.capacity.disk_gb, s.capacity.clients, s.id)).capacity


def mirrors_for(
    fleet: Fleet,
    server_id: str,
    *,
    dc: str | None = None,
    down: frozenset[str] = frozenset(),
    countries: Sequence[str] | None = None,
) -> tuple[str, ...]:
    """The mirror pair of *server_id*, on-site first.

    A server that declares ``mirrors`` in the fleet keeps them, on-site first (residency
    is the caller's check). Otherwise the pair is derived: the on-site mirror (same
    DC) plus one off-site mirror (another DC; same country first, then by country code,
    DC and id, so the order of *countries* never matters), skipping *down* mirrors and
    mirrors outside *countries*. Pass the countries every client of the server allows
    (the mirror runbook does the same, so both derive the same pair). Fewer than
    two ids come back when the fleet has no such mirror: the caller decides whether a
    degraded pair is acceptable. *server_id* may be a server still to be provisioned,
    then *dc* names its data centre.
    """
    sid = check_id(server_id, "server id")
    server = server_or_none(fleet, sid)
    if server is not None:
        if dc is not None and check_id(dc, "data centre id") != server.dc:
            raise PlanError(f"server {sid!r} is in data centre {server.dc!r}, not {dc!r}")
        if server.role == "mirror":
            raise PlanError(f"server {sid!r} is a mirror server: it has no mirrors of its own")
        if server.mirrors:
            return tuple(sorted(server.mirrors, key=lambda m: dc_of(fleet, m) != server.dc))
        dc = server.dc
    elif dc is None:
        raise PlanError(f"server {sid!r} is not in the fleet: name the data centre it will be in")
    home = known_dc(fleet, check_id(dc, "data centre id"))
    allowed = None if countries is None else [country_code(c) for c in countries]

    def usable(m: Server) -> bool:
        return (
            m.role == "mirror"
            and m.id != sid
            and m.id not in down
            and (allowed is None or fleet.dc(m.dc).country in allowed)
        )

    mirrors = [m for m in fleet.servers if usable(m)]
    onsite = sorted(m.id for m in mirrors if m.dc == home.id)

    def offsite_rank(m: Server) -> tuple[bool, str, str, str]:
        country = fleet.dc(m.dc).country
        return (country != home.country, country, m.dc, m.id)

    offsite = sorted((m for m in mirrors if m.dc != home.id), key=offsite_rank)
    return tuple(onsite[:1]) + tuple(m.id for m in offsite[:1])


def server_or_none(fleet: Fleet, server_id: str) -> Server | None:
    """The fleet's server *server_id*, or None when the fleet has none by that id."""
    try:
        return fleet.server(server_id)
    except KeyError:
        return None


def dc_of(fleet: Fleet, server_id: str) -> str | None:
    """The data centre of *server_id*, or None when it is not in the fleet."""
    server = server_or_none(fleet, server_id)
    return None if server is None else server.dc


def known_dc(fleet: Fleet, dc_id: str) -> DataCentre:
    """The data centre *dc_id* of *fleet* (else :class:`PlanError`)."""
    try:
        return fleet.dc(dc_id)
    except KeyError:
        raise PlanError(f"no data centre {dc_id!r} in fleet {fleet.name}") from None


def country_code(value: object) -> str:
    """*value* if it is an ISO 3166 alpha-2 code (else :class:`PlanError`)."""
    if not isinstance(value, str) or not COUNTRY_RE.fullmatch(value):
        raise PlanError(f"country {value!r} is not an ISO 3166 alpha-2 code such as 'ZA'")
    return value
