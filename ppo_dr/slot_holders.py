"""Which recorded concurrency-slot leases belong to holders that are gone.

A global concurrency slot (one mirror of a server at a time, one failover at a time) is
a lease on the Prefect server, renewed by its holder. A SIGKILLed holder stops renewing
and the server frees the slot one lease (60 s at least) after the last renewal. Every
run that wanted the slot meanwhile was skipped (a mirror) or waited (the failover rerun
that finishes a crashed plan). Like restic's stale locks, a lease whose holder is known
dead can be given back at once instead: each holder records its lease in the store
(:mod:`ppo_dr.store.slot_leases`) with the flow run of its process and a token of the
process, and the next run that wants the slot frees the dead ones first.

This module is the rule, with no I/O: given the recorded leases, the state of each
holder's flow run and who is asking, which leases are dead. A holder is dead when

- its flow run ended (Prefect's final states: its process is gone), or
- its flow run is the asker's own and the token differs: the run was scheduled again
  after a crash (the failover rerun keeps its run id) and this is an earlier attempt's
  lease; no run executes twice at once, so that attempt's process is gone.

Anything else is left to the lease's expiry: a run still RUNNING (maybe alive, maybe
not yet marked), a run Prefect does not know (another server's, or deleted), the
asker's own process (another thread holding a slot of the same limit).

An *orphan* is a slot counted taken with no lease behind it: a Prefect server that keeps
its leases in memory (one ``prefect server start``, no Redis) forgets them when it
restarts, while the limit's count of taken slots is in its database. No lease ever
runs out for such a slot, and its holder's release finds no lease and gives nothing
back: the slot is taken for good (seen in the chaos matrix: the next failover waited
for ever). When every holder of a limit records its lease, the slots taken beyond the
recorded leases are orphans; :class:`OrphanWatch` gives them back once they have been
seen for a while (a holder records its lease just after the grant, so one look may
catch a live one between the two). A live holder that finds its lease forgotten gives
its slot back by count itself (:class:`LeaseClock`), so only the slots of holders that
died as well are left for the watch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Prefect's final state types: a run in one of them has no process left.
ENDED_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


@dataclass(frozen=True)
class Holder:
    """Who holds (or asks for) a slot: the flow run of the process, and a token unique
    to the process (a rerun of the same flow run gets a new one)."""

    run_id: str
    token: str


@dataclass(frozen=True)
class RecordedLease:
    """A lease as its holder recorded it."""

    lease_id: str
    limit: str
    holder: Holder


def dead_leases(
    leases: Sequence[RecordedLease],
    run_states: Mapping[str, str | None],
    asker: Holder | None,
) -> list[RecordedLease]:
    """The leases of *leases* whose holder is gone (module docstring), in their order.

    *run_states* maps a holder's run id to its state type (``CRASHED``, ``RUNNING``,
    ...), None or absent where the run is unknown; *asker* is the process asking (None
    if it is not a flow run's: then only ended runs count).
    """
    dead = []
    for lease in leases:
        holder = lease.holder
        ended = run_states.get(holder.run_id) in ENDED_STATES
        earlier_attempt = (
            asker is not None and holder.run_id == asker.run_id and holder.token != asker.token
        )
        if ended or earlier_attempt:
            dead.append(lease)
    return dead


def orphaned_slots(active: int, limit: int, recorded: int) -> int:
    """How many of a full limit's *active* slots no recorded lease holds (0 unless the
    limit is full: an orphan costs nothing until it keeps somebody out)."""
    if active < limit:
        return 0
    return max(0, active - recorded)


@dataclass
class OrphanWatch:
    """Gives orphans back only once seen in every look for *seen_s* seconds.

    Feed it :func:`orphaned_slots` at each look; it answers how many slots to give back
    now: the fewest seen over the whole stretch (a live holder not yet recorded at one
    look is recorded by the next). A look with none starts the stretch again; so does
    a give-back.
    """

    seen_s: float
    _since: float | None = field(default=None, init=False)
    _fewest: int = field(default=0, init=False)

    @property
    def watching(self) -> bool:
        """Whether orphans were seen and are being watched (a stretch is open)."""
        return self._since is not None

    def look(self, orphans: int, now: float) -> int:
        """The slots to give back after a look at *now* (seconds, monotonic)."""
        if orphans <= 0:
            self._since = None
            return 0
        if self._since is None:
            self._since, self._fewest = now, orphans
            return 0
        self._fewest = min(self._fewest, orphans)
        if now - self._since < self.seen_s:
            return 0
        freed, self._since = self._fewest, None
        return freed


@dataclass
class LeaseClock:
    """Tells a lease the server forgot (it restarted) from one that ran out.

    Both answer a renewal with "gone", and they need opposite give-backs: a lease that
    ran out was freed by the server's repossessor (giving it back again would free a
    slot someone else holds), while a forgotten lease's slot is still counted and only
    its holder can give it back, by count, before it becomes an orphan that every
    waiter must watch for :data:`tasks.slots.ORPHAN_SEEN_S`. A lease cannot have run
    out less than a lease after the last renewal the server took, so "gone" within
    *margin_s* of a lease since a renewal was *sent* means forgotten.
    """

    lease_s: float
    renewed_at: float  # monotonic seconds when the last renewal (or the grant) was sent
    margin_s: float
    forgotten: bool = False

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at *sent_at* was taken."""
        self.renewed_at = max(self.renewed_at, sent_at)

    def gone(self, answered_at: float) -> bool:
        """The server answered "gone" at *answered_at*; whether the lease was forgotten."""
        if answered_at - self.renewed_at < self.lease_s - self.margin_s:
            self.forgotten = True
        return self.forgotten
