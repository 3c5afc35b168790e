"""One probe run's side of the hand-over: the lease rules of :mod:`.lease` applied to
the store, one locked read-modify-write per call (no Prefect, no waiting: the flow
sleeps between calls)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ppo_dr.probe.lease import LEASE_NAME, Handover, claimed, handover, released, renewed
from ppo_dr.store import ProbeLease, Store


@dataclass
class LeaseKeeper:
    """The probe lease as seen by run *run*, scheduled at *rank*."""

    store: Store
    run: str
    rank: datetime
    ttl: timedelta
    name: str = LEASE_NAME
    #: The lease as last read or written by this run.
    lease: ProbeLease | None = None

    def claim(self, now: datetime | None = None) -> Handover:
        """Take the lease as the run starts (see :func:`~.lease.claimed`)."""
        at = now or datetime.now(UTC)
        self.lease = self.store.change_probe_lease(
            self.name, lambda lease: claimed(lease, self.run, self.rank, at, self.ttl, self.name)
        )
        return handover(self.lease, self.run, at, self.ttl)

    def renew(self, now: datetime | None = None) -> Handover:
        """Renew it (each cycle, and each poll while waiting); STAND_DOWN once lost."""
        at = now or datetime.now(UTC)
        self.lease = self.store.change_probe_lease(
            self.name, lambda lease: renewed(lease, self.run, at)
        )
        return handover(self.lease, self.run, at, self.ttl)

    def release(self, now: datetime | None = None) -> None:
        """This run stopped: its successor (or the next run) need not wait for it."""
        at = now or datetime.now(UTC)
        self.lease = self.store.change_probe_lease(
            self.name, lambda lease: released(lease, self.run, at)
        )

    @property
    def successor(self) -> str | None:
        """The run holding the lease now, if not this one."""
        if self.lease is None or self.lease.holder == self.run:
            return None
        return self.lease.holder
