"""Work pools nobody serves: a DC's pool without a worker means nobody runs its mirrors.

In the distributed topology each data centre's mirrors run on its pool (``dc-<id>``)
and the runbooks on ``control``. A pool whose workers are all gone is silent: no run
fails, the scheduled runs just wait in the queue while the mirrors grow stale. The
probe therefore reads the pools and their workers from the Prefect API every few
minutes and raises a **non-paging** ``pool-unattended`` incident per such pool,
naming it; it recovers once a worker is back. Non-paging: a lost DC pages through its
outage, and a worker restarted by systemd should not wake anyone.

:func:`unattended_pools` is the pure decision (the API's view and the time in, the
verdicts out); :func:`record_pool_attendance` applies it to the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ppo_dr.probe.incidents import keep_open_for, subject_key, utc_stamp
from ppo_dr.store import Incident, Store

#: Incident kind of a pool without an online worker.
UNATTENDED_KIND: Final = "pool-unattended"
#: Prefix of the pools of data centres (``dc-<id>``), whose work is the DC's mirrors.
DC_POOL_PREFIX: Final = "dc-"


@dataclass(frozen=True)
class PoolWorkers:
    """One work pool as the API shows it: when it was made, whether it is paused,
    and each worker's status and last heartbeat."""

    pool: str
    created: datetime
    paused: bool = False
    online: int = 0
    last_heartbeats: tuple[datetime, ...] = ()


@dataclass(frozen=True)
class Unattended:
    """A pool with no online worker for longer than the threshold, since *since*
    (its newest worker heartbeat, or its creation when no worker ever came)."""

    pool: str
    since: datetime
    ever_served: bool

    @property
    def title(self) -> str:
        return f"no worker on pool {self.pool} since {utc_stamp(self.since)}: {self.consequence}"

    @property
    def consequence(self) -> str:
        """What is not happening, in the operator's words."""
        if self.pool.startswith(DC_POOL_PREFIX):
            return f"nobody is running data centre {self.pool[len(DC_POOL_PREFIX) :]}'s mirrors"
        return f"nobody is running the runs of pool {self.pool}"


def unattended_pools(
    pools: Iterable[PoolWorkers], now: datetime, threshold: timedelta
) -> list[Unattended]:
    """Pools with no ONLINE worker whose last sign of one (newest heartbeat, else the
    pool's creation) is older than *threshold*, by pool name. A paused pool is an
    operator's choice and is never reported."""
    found: list[Unattended] = []
    for pool in sorted(pools, key=lambda p: p.pool):
        if pool.paused or pool.online > 0:
            continue
        since = max((pool.created, *pool.last_heartbeats))
        if now - since > threshold:
            found.append(Unattended(pool.pool, since, bool(pool.last_heartbeats)))
    return found


def dedupe_key(pool: str) -> str:
    return subject_key(UNATTENDED_KIND, pool)


def record_pool_attendance(
    store: Store,
    pools: Sequence[PoolWorkers],
    now: datetime,
    threshold: timedelta,
    *,
    flow_run_id: str | None = None,
) -> tuple[list[Incident], list[Incident]]:
    """Open (idempotently) a non-paging incident per unattended pool; mark recovered
    those whose pool is served again. Returns (opened now, recovered now)."""
    unattended = unattended_pools(pools, now, threshold)
    known = {p.pool for p in pools}

    def back(pool: str) -> str | None:
        return f"pool {pool} has an online worker again" if pool in known else None

    return keep_open_for(
        store,
        UNATTENDED_KIND,
        {u.pool: (u.title, {"level": "pool", "since": utc_stamp(u.since)}) for u in unattended},
        back,
        step="pool-served",
        relapse_note="unattended again",
        flow_run_id=flow_run_id,
        at=now,
    )
