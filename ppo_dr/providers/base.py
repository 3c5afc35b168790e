"""What every provider offers the failover and drill runbooks, and what they share.

A provider owns one data centre's way of getting servers and routing clients:

    provision(request)          a server for a :class:`~ppo_dr.failover.plan.ProvisionRequest`;
                                idempotent by ``request.server_id`` (a rerun after a crash
                                gets the same server, ``created=False``)
    release(server_id)          give it back; idempotent; refused while clients are placed there
    route(client_id, server_id) make the router follow the placement the flow has already
                                switched in the store (``Store.move_client``); a receipt text

Errors follow :mod:`ppo_dr.errors`: :class:`TransientError` for what may pass
(throttling, an instance still booting, a router not caught up yet), and
:class:`PermanentError` for what will not (bad template, refused credentials, a
server that still hosts clients).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from ppo_dr.errors import PermanentError
from ppo_dr.ids import check_id

if TYPE_CHECKING:
    from ppo_dr.failover.plan import ProvisionRequest
    from ppo_dr.inventory import Fleet, Server

ProviderName = Literal["lab", "aws", "static"]


@dataclass(frozen=True)
class ProvisionedServer:
    """A server a provider handed out, and how to find it again."""

    server: Server  # its fleet entry: ssh endpoint with pinned host key, http, data_root, mirrors
    provider: str  # "lab" | "aws" | "static"
    created: bool  # False when it existed already (an idempotent rerun)
    detail: dict[str, str] = field(default_factory=dict)  # e.g. instance id, region


class Provider(Protocol):
    """Server provisioning and routing for one data centre."""

    name: str

    def provision(self, request: ProvisionRequest) -> ProvisionedServer: ...

    def release(self, server_id: str) -> None: ...

    def route(self, client_id: str, server_id: str) -> str: ...


class ProviderError(PermanentError):
    """A provider cannot do what was asked (configuration, a refused release, ...)."""


def checked_request(request: ProvisionRequest, dc_id: str, provider: str) -> None:
    """Refuse a request with hostile ids, or meant for another DC, before any I/O."""
    check_id(request.server_id, "server id")
    check_id(request.dc, "data centre id")
    for mirror in request.mirrors:
        check_id(mirror, "mirror id")
    if request.dc != dc_id:
        raise ProviderError(
            f"the {provider} provider of {dc_id} cannot provision {request.server_id} "
            f"in {request.dc}"
        )
    if request.template != "app":
        raise ProviderError(
            f"unknown server template {request.template!r} for {request.server_id}: "
            "only 'app' servers are provisioned"
        )


def checked_mirrors(fleet: Fleet, dc_id: str, server_id: str, mirrors: tuple[str, ...]) -> None:
    """The planned mirror pair must be existing mirror servers: one in *dc_id*, one elsewhere."""
    known = {s.id: s for s in fleet.servers}
    for mirror_id in mirrors:
        mirror = known.get(mirror_id)
        if mirror is None or mirror.role != "mirror":
            what = "not a server of the fleet" if mirror is None else f"a {mirror.role} server"
            raise ProviderError(f"mirror {mirror_id!r} of {server_id} is {what}")
    onsite = [m for m in mirrors if known[m].dc == dc_id]
    if len(set(mirrors)) != len(mirrors) or len(onsite) != 1 or len(onsite) == len(mirrors):
        raise ProviderError(
            f"mirrors of {server_id} must be one mirror in {dc_id} and at least one in "
            f"another data centre (got {', '.join(mirrors) or 'none'})"
        )


def placed_on(store_url: str, server_id: str) -> list[str]:
    """The clients the store places on *server_id* now (the routing truth), sorted."""
    from ppo_dr.store import Store

    store = Store(store_url)
    try:
        return sorted(p.client_id for p in store.placements() if p.server_id == server_id)
    finally:
        store.close()


def refuse_if_hosting(store_url: str, server_id: str) -> None:
    """Releasing a server with clients on it would take them down: refuse, naming them."""
    clients = placed_on(store_url, server_id)
    if clients:
        raise ProviderError(
            f"{server_id} still hosts clients ({', '.join(clients)}): move them before releasing it"
        )
