"""Capacity for the failover planner: what each client weighs, what each server holds.

A :class:`Slot` is a server a client could land on, with what it holds now and what
the plan adds; :func:`client_sizes` and :func:`server_load` fill it in from the
snapshot catalogue and the placements (pandas, imported only when a plan is made).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ppo_dr.failover.model import GB, SnapshotInfo
from ppo_dr.failover.plan_json import human_size
from ppo_dr.inventory import Fleet


@dataclass
class Slot:
    """A server a client could land on, with what it holds now and what the plan adds."""

    server_id: str
    dc: str
    country: str
    max_clients: int
    max_bytes: int
    clients: int
    bytes: int
    new: bool  # to be provisioned by this plan
    pair: tuple[str, ...] | None  # None until its first client fixes a derived pair

    def problem(self, size: int) -> str | None:
        """Why a client of *size* bytes does not fit, or None if it does."""
        if self.clients + 1 > self.max_clients:
            return f"full ({self.clients}/{self.max_clients} clients)"
        if self.bytes + size > self.max_bytes:
            free = max(self.max_bytes - self.bytes, 0)
            return f"full (needs {human_size(size)}, {human_size(free)} free)"
        return None

    def utilisation(self, size: int) -> float:
        """The fuller of clients and disk after adding the client, 0..1."""
        return max(
            (self.clients + 1) / self.max_clients if self.max_clients else math.inf,
            (self.bytes + size) / self.max_bytes if self.max_bytes else math.inf,
        )


def client_sizes(
    fleet: Fleet, placements: Mapping[str, str], snapshots: Sequence[SnapshotInfo]
) -> dict[str, int]:
    """Bytes per client: its newest catalogued snapshot's size, else fleet.yaml's size_gb."""
    import pandas as pd  # only here: the CLI's other commands start without pandas

    declared = {c.id: int(c.size_gb * GB) for c in fleet.clients}
    frame = pd.DataFrame(
        [(s.client_id, s.taken_at, s.snapshot_id, s.size_bytes) for s in snapshots],
        columns=["client_id", "taken_at", "snapshot_id", "size_bytes"],
    )
    newest: dict[str, int] = {}
    if not frame.empty:
        latest = frame.sort_values(["client_id", "taken_at", "snapshot_id"]).groupby(
            "client_id", sort=True
        )["size_bytes"]
        newest = {str(k): int(v) for k, v in latest.last().items()}
    return {c: newest.get(c, declared.get(c, 0)) for c in {*declared, *placements}}


def server_load(
    placements: Mapping[str, str], sizes: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    """(clients, bytes) placed on each server now."""
    import pandas as pd

    frame = pd.DataFrame(
        [(c, s, sizes.get(c, 0)) for c, s in placements.items()],
        columns=["client_id", "server_id", "size_bytes"],
    )
    if frame.empty:
        return {}
    totals = frame.groupby("server_id").agg(
        clients=("client_id", "count"), bytes=("size_bytes", "sum")
    )
    return {str(server): (int(row.clients), int(row.bytes)) for server, row in totals.iterrows()}
