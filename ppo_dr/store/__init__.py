"""The state store: what is true *now* (Prefect's run history says what *ran*).

SQLAlchemy 2 on a SQLite file by default (WAL, shared by the lab, flows and the CLI) or
PostgreSQL for a multi-worker deployment (``postgresql://`` URLs use psycopg 3). The
schema is created and changed only by the Alembic migrations in ``ppo_dr/migrations``
(:meth:`Store.upgrade`, behind ``ppo-dr db upgrade``); a store whose schema is not at
head refuses to work and says so. Every public method is one short transaction, takes
and returns aware UTC datetimes, and returns frozen dataclasses (:mod:`.records`).

Tables, and why each exists:

``placements``          client → server, with a version for compare-and-set, so two
                        runs can never both move a client (failover, planned migration)
``placement_history``   every placement a client has had (seed, then each move), with
                        the flow run that made it: where was a client at time T?
``incidents``           one row per outage or trouble, deduplicated by key while open;
                        the hand-over point between the probe, escalation and failover
``timeline``            what happened to an incident, when, and which flow run did it
``notices``             every message to people or the public, recorded under an
                        idempotency key before sending, so a retry never sends twice
``probe_transitions``   the outage state machine's state changes per probe target
``probe_minutes``       per-target, per-minute check and failure counts (SLA reports)
``maintenance_windows`` planned work on a server, DC or client (suppresses paging)
``snapshots``           the snapshot catalogue: what each mirror holds per client, and
                        what the last verification found (restore picks from here)
``drained_servers``     servers emptied for an upgrade: no plan targets them (:mod:`.drained`)
``request_minutes``     requests per client per minute (load, for the rebalance) (:mod:`.requests`)
``probe_lease``         which probe flow run records now, and the hand-over (:mod:`.probe_lease`)
``slot_leases``         concurrency-slot leases and their holders, so a dead holder's slot is
                        given back at once (:mod:`.slot_leases`)
``drills``              DR drill results: restore time and snapshot age (RTO/RPO)
``failovers``           the failover ledger: one row per plan run (mode, incident, plan,
``failover_steps``      placement versions read at start), its steps per client (so a
``failover_results``    rerun skips what is done) and per-client RTO, RPO, writes lost

Code layout: :mod:`.schema` (tables), :mod:`.records` (returned types), :mod:`.engine`
(connections, migrations), :mod:`.base` (lifecycle, transactions) and one mixin module
per group of tables, combined into :class:`Store` here.
"""

from __future__ import annotations

from ppo_dr.store.catalogue import CatalogueMixin
from ppo_dr.store.drained import DrainedMixin
from ppo_dr.store.failovers import FailoverMixin
from ppo_dr.store.incidents import IncidentsMixin
from ppo_dr.store.notices import NoticesMixin
from ppo_dr.store.observations import ObservationsMixin
from ppo_dr.store.placements import PlacementsMixin
from ppo_dr.store.probe_lease import ProbeLease, ProbeLeaseMixin
from ppo_dr.store.records import (
    Drill,
    Failover,
    FailoverResult,
    FailoverStep,
    Incident,
    MaintenanceWindow,
    Notice,
    Placement,
    PlacementMove,
    ProbeMinute,
    ProbeTransition,
    Snapshot,
    TimelineEntry,
)
from ppo_dr.store.requests import RequestsMixin
from ppo_dr.store.slot_leases import SlotLeasesMixin


class Store(
    PlacementsMixin,
    IncidentsMixin,
    NoticesMixin,
    ObservationsMixin,
    CatalogueMixin,
    FailoverMixin,
    DrainedMixin,
    RequestsMixin,
    ProbeLeaseMixin,
    SlotLeasesMixin,
):
    """The ppo-dr state store. ``Store.open()`` for the configured one; ``upgrade()`` first.

    Safe to share between threads and processes; each method is its own transaction.
    """


__all__ = [
    "Drill",
    "Failover",
    "FailoverResult",
    "FailoverStep",
    "Incident",
    "MaintenanceWindow",
    "Notice",
    "Placement",
    "PlacementMove",
    "ProbeLease",
    "ProbeMinute",
    "ProbeTransition",
    "Snapshot",
    "Store",
    "TimelineEntry",
]
