"""What the failover planner is given: the fleet as the state store sees it now.

The planner (:func:`~ppo_dr.failover.plan.plan_failover`) is pure; this module reads
its input once, from the fleet file and the store, for ``ppo-dr failover plan`` and
the failover flow's planning task alike, so both plan from the same facts.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ppo_dr import config

if TYPE_CHECKING:
    from ppo_dr.failover.plan import FleetState

# Providers that can make a new app server on demand; `static` only has its spares.
PROVISIONING_PROVIDERS: Final = frozenset({"lab", "aws"})


def fleet_state(fleet_file: Path | None, down: tuple[str, ...], now: datetime) -> FleetState:
    """What the planner needs, read from the fleet file and the state store.

    Placements come from the store (the truth); a client it has never placed is on its
    fleet.yaml server. A snapshot counts as verified when its last verification found
    it complete. Provisionable DCs are those whose provider is lab or aws.
    """
    from ppo_dr.failover.plan import FleetState, SnapshotInfo
    from ppo_dr.inventory import load_fleet
    from ppo_dr.mirror.runbook import store_url
    from ppo_dr.store import Store

    path = Path(fleet_file) if fleet_file else config.fleet_file()
    fleet = load_fleet(path)
    with Store.open(store_url(fleet)) as store:
        placements = {p.client_id: p.server_id for p in store.placements()}
        snapshots = [
            SnapshotInfo(
                client_id=s.client_id,
                mirror_id=s.mirror_id,
                snapshot_id=s.snapshot_id,
                taken_at=s.taken_at,
                verified=s.status == "complete" and s.verified_at is not None,
                size_bytes=s.bytes,
            )
            for s in store.snapshots()
        ]
    return FleetState(
        fleet=fleet,
        placements=placements,
        snapshots=snapshots,
        now=now,
        down=frozenset(down),
        provisionable=frozenset(
            dc.id for dc in fleet.data_centres if dc.provider in PROVISIONING_PROVIDERS
        ),
    )
