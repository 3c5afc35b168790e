"""The failover plan's vocabulary: scope, target, what is known, and a plan's parts.

Plain frozen dataclasses, shared by the planner (:mod:`.plan`), the plan itself and its
JSON form (:mod:`.plan_json`), the steps and the flows. No logic beyond describing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, get_args

from ppo_dr.inventory import Fleet

Mode = Literal["emergency", "planned"]
MODES: Final[tuple[str, ...]] = get_args(Mode)
PLAN_FORMAT: Final = "ppo-dr-failover-plan"
PLAN_VERSION: Final = 1
PROVISION_TEMPLATE: Final = "app"
GB: Final = 10**9  # capacity.disk_gb is decimal gigabytes, like the disks it describes
PLAN_ID_LEN: Final = 16
SNAPSHOT_ID_MAX_LEN: Final = 128
#: What a snapshot id in a plan may hold: letters, digits, ``-``, ``_`` and ``:``, so an
#: edited plan cannot smuggle a path (``../``, ``/``, NUL) into the restore.
SNAPSHOT_ID_TEXT: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z:_-]*")


@dataclass(frozen=True)
class Scope:
    """What moves: some clients, every client on a server, or every client in a DC."""

    clients: tuple[str, ...] = ()
    server: str | None = None
    dc: str | None = None

    def describe(self) -> str:
        if self.clients:
            return f"clients {', '.join(self.clients)}"
        return f"server {self.server}" if self.server else f"data centre {self.dc}"


@dataclass(frozen=True)
class Target:
    """Where to: one server, any server of a DC or of a country, or (all None) automatic."""

    server: str | None = None
    dc: str | None = None
    country: str | None = None

    def describe(self) -> str:
        if self.server:
            return f"server {self.server}"
        if self.dc:
            return f"data centre {self.dc}"
        return f"country {self.country}" if self.country else "automatic"


@dataclass(frozen=True)
class SnapshotInfo:
    """One row of the store's snapshot catalogue, as the planner needs it."""

    client_id: str
    mirror_id: str
    snapshot_id: str
    taken_at: datetime
    verified: bool
    size_bytes: int


@dataclass(frozen=True)
class FleetState:
    """Everything the planner decides from; gathered by the caller (store, fleet, probes)."""

    fleet: Fleet
    placements: Mapping[str, str]  # client -> server now (clients missing here: fleet.yaml's)
    snapshots: Sequence[SnapshotInfo]
    now: datetime
    down: frozenset[str] = frozenset()  # servers (any role) that are unreachable or lost
    provisionable: frozenset[str] = frozenset()  # DCs where a new app server can be made


@dataclass(frozen=True)
class ProvisionRequest:
    """A new app server the plan needs; its id is chosen here so a rerun asks for the same."""

    server_id: str
    dc: str
    template: str = PROVISION_TEMPLATE
    mirrors: tuple[str, ...] = ()  # on-site first


@dataclass(frozen=True)
class ClientMove:
    """One client's move: from where, to where, restored from which mirror and snapshot."""

    client_id: str
    from_server: str
    to_server: str
    source_mirror: str | None
    snapshot_id: str | None
    snapshot_at: datetime | None
    fallback_mirrors: tuple[str, ...]
    new_mirrors: tuple[str, ...]
    size_bytes: int

    def servers(self, *, planned: bool) -> tuple[str, ...]:
        """The servers the move's steps reach: the target and the mirrors, and the source
        in planned mode (an emergency never touches the lost source); each once."""
        named: tuple[str | None, ...] = (
            self.from_server if planned else None,
            self.to_server,
            self.source_mirror,
            *self.fallback_mirrors,
            *self.new_mirrors,
        )
        return tuple(dict.fromkeys(s for s in named if s is not None))


@dataclass(frozen=True)
class Refusal:
    """A client the plan does not move, and why (this text is what gets escalated)."""

    client_id: str
    reason: str
