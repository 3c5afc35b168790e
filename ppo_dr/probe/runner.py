"""The probe's bookkeeping: observations in, transitions, aggregates and incidents out.

No Prefect here (the flow in ``flows/probe.py`` drives it), no network (the flow runs
the checks with :class:`~ppo_dr.probe.checks.Prober` and hands the observations in),
so every rule below is tested with a real store and synthetic observations.

One :class:`ProbeRunner` lives for one probe flow run (one period). Per cycle
(:meth:`ProbeRunner.cycle`):

1. feed the observations to the :class:`~ppo_dr.probe.state.OutageTracker`;
2. record **every** transition in the store (``probe_transitions``);
3. add the observations to per-(target, minute) counts kept in memory, and write a
   minute's counts once the minute is over, every target's in one transaction
   (``probe_minutes``; not every observation, and one write per minute, not per cycle);
4. derive the outages with inhibition (:func:`~ppo_dr.probe.graph.outages`); a NEW
   outage opens its incident idempotently (kind ``outage``, dedupe key = the outage
   key) -- unless an outage already open covers all its targets (a DC outage whose
   first server came back must not page again for the second server);
5. an open outage whose targets are all ``up`` again is marked recovered. If the same
   outage comes back before anyone resolved the recovered incident, that one is
   resolved by the probe and a new incident (a relapse, paged anew) is opened.

Exactly once, across restarts: a new runner (the next period's run, or a run after a
crash) seeds the tracker from the store's transitions (targets in ``down`` or
``recovering`` stay in outage, with their first-failure time) and its known outages
from the store's unrecovered ``outage`` incidents, so it re-derives the same keys and
finds the same incidents. An escalation is started only for an incident whose timeline
has no ``escalation-started`` entry; the flow's ``run_deployment`` idempotency key
(``escalation-<incident id>``) covers the crash between the two.

Maintenance windows (server, DC or client; :meth:`Store.active_maintenance`) suppress
paging: the incident is still opened (``paging=False``) with a timeline entry saying
which window, and no escalation is asked for.

The probe's own liveness: :meth:`ProbeRunner.heartbeat` adds one check per cycle to
the per-minute counts (:mod:`ppo_dr.probe.minutes`) of the pseudo-target
:data:`~ppo_dr.probe.minutes.HEARTBEAT_TARGET`;
:func:`~ppo_dr.probe.watchdog.check_probe_silence` (the watchdog flow) opens a paging
``probe-silent`` incident when that target has had no check for the silence threshold.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ppo_dr.inventory import Fleet
from ppo_dr.probe import fleet_checks
from ppo_dr.probe.checks import Check, HttpCheck
from ppo_dr.probe.graph import (
    FleetGraph,
    Outage,
    client_target,
    outages,
    server_target,
)
from ppo_dr.probe.incidents import open_or_relapse, utc_stamp
from ppo_dr.probe.minutes import MinuteCounts, last_heartbeat, minute_of
from ppo_dr.probe.spares import record_spares, spares_down
from ppo_dr.probe.state import (
    Observation,
    OutagePolicy,
    OutageTracker,
    TargetState,
    TargetStatus,
    Transition,
    cadence_gap,
    quorum_observation,
)
from ppo_dr.store import Incident, MaintenanceWindow, ProbeTransition, Store

#: Incident kind of an outage the probe declared.
OUTAGE_KIND: Final = "outage"
#: Timeline kinds the runner writes.
ESCALATION_STARTED: Final = "escalation-started"
ESCALATION_MISSING: Final = "escalation-unavailable"
#: How far back a restarted probe looks for the transitions of an outage in progress.
SEED_LOOKBACK: Final = timedelta(days=14)


def client_health_url(url: str) -> str:
    """A client's health URL from its public URL: ``<url>/health`` (``/c/<id>/health``
    on the lab's front door)."""
    return url.rstrip("/") + "/health"


def probe_checks(fleet: Fleet, front_door: str | None = None) -> list[Check]:
    """Every server's ``/health`` and every client's health page, through the front
    door when given, else under the client's public URL."""
    checks = fleet_checks(fleet, front_door=front_door)
    if front_door is not None:
        return checks
    urls = {client_target(c.id): client_health_url(c.url) for c in fleet.clients}
    return [
        replace(c, url=urls[c.target_id]) if isinstance(c, HttpCheck) and c.target_id in urls else c
        for c in checks
    ]


@dataclass(frozen=True, slots=True)
class Declared:
    """An outage this cycle opened (or found open) an incident for."""

    outage: Outage
    incident: Incident
    created: bool
    #: True: the flow must start the escalation for this incident now.
    escalate: bool
    #: The maintenance window that suppressed paging, if any.
    window: MaintenanceWindow | None = None


@dataclass(frozen=True, slots=True)
class CycleResult:
    """What one cycle did, for the flow's logs and summary."""

    at: datetime
    transitions: list[Transition]
    declared: list[Declared]
    recovered: list[Incident]
    down: list[str]
    #: Non-paging ``spare-down`` incidents opened (:mod:`ppo_dr.probe.spares`).
    spares_down: list[Incident] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return len(self.down)


@dataclass
class _Known:
    """An outage incident the runner watches until every one of its targets is up."""

    incident_id: int
    targets: frozenset[str]


@dataclass
class ProbeRunner:
    """One probe period's state: tracker, pending minute counts, outages being watched."""

    fleet: Fleet
    store: Store
    flow_run_id: str | None = None
    front_door: str | None = None
    hold_window: timedelta = timedelta(seconds=60)
    policy: OutagePolicy = field(init=False)
    graph: FleetGraph = field(init=False)
    tracker: OutageTracker = field(init=False)
    minutes: MinuteCounts = field(init=False, default_factory=MinuteCounts)
    _known: dict[str, _Known] = field(init=False, default_factory=dict)
    _latest: dict[str, dict[str, Observation]] = field(init=False, default_factory=dict)
    #: The idle spares last recorded down (None: not looked yet, so the first cycle
    #: reconciles the store's open ``spare-down`` incidents with what it sees).
    _spares_down: list[str] | None = field(init=False, default=None)
    #: The newest cycles' periods (start to start) and the last cycle's time: the
    #: cadence a gap in the observations is judged against (:func:`cadence_gap`).
    _periods: deque[timedelta] = field(init=False, default_factory=lambda: deque(maxlen=5))
    _last_cycle_at: datetime | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.policy = OutagePolicy.from_timing(self.fleet.timing)
        self.refresh_graph()
        self.tracker = OutageTracker(self.policy)

    # -- set-up -------------------------------------------------------------------

    def placements(self) -> dict[str, str]:
        return {p.client_id: p.server_id for p in self.store.placements()}

    def refresh_graph(self) -> None:
        """Re-read placements (clients move on failover) and rebuild the graph."""
        self.graph = FleetGraph.from_fleet(self.fleet, self.placements())

    def checks(self) -> list[Check]:
        """The checks of a cycle. Every spare is among them, hosting or not: a dead one
        whose clients a failover moved away must still be seen answering again for its
        outage to recover (found in the chaos tier, when spares were checked only while
        they hosted clients: the outage stayed open until the spare left the fleet)."""
        return probe_checks(self.fleet, self.front_door)

    def use_fleet(self, fleet: Fleet) -> list[str]:
        """Probe *fleet* from now on (a server was provisioned or released since the run
        began) and forget the targets it no longer has, so a released server is never
        declared down; the targets forgotten. The timing stays the run's: a new one
        takes effect with the next run."""
        self.fleet = fleet
        self.refresh_graph()
        kept = {c.target_id for c in self.checks()}
        return self.tracker.forget(t for t in self.tracker.statuses if t not in kept)

    def seed(self, now: datetime | None = None) -> None:
        """Resume from the store: targets in outage, and the outage incidents still open.

        A target whose newest transition left it ``down`` or ``recovering`` is seeded
        as ``down`` with the start of its failure run (its last ``up → pending``). A
        ``pending`` target is resumed only if the previous run's newest heartbeat
        minute ended within the policy's ``max_gap`` (else continuity across the
        restart is unknown and the failure run starts again, as after any gap).
        """
        now = now or datetime.now(UTC)
        last: dict[str, ProbeTransition] = {}
        run_start: dict[str, datetime] = {}
        for t in self.store.probe_transitions(since=now - SEED_LOOKBACK):
            last[t.target] = t
            if t.to_state == TargetState.PENDING and t.from_state == TargetState.UP:
                run_start[t.target] = t.at
        statuses: dict[str, TargetStatus] = {}
        # The previous run's last cycle was at most a minute after its newest heartbeat
        # minute: if that is within the state machine's gap, a pending failure run is
        # carried over (the usual case: the next period's run starts seconds later).
        beat = last_heartbeat(self.store, now, lookback=timedelta(minutes=5))
        gap = self.policy.max_gap or timedelta(0)
        resume_pending = beat is not None and now - beat <= gap
        for target, t in last.items():
            if t.to_state == TargetState.PENDING and resume_pending:
                statuses[target] = TargetStatus(
                    target,
                    state=TargetState.PENDING,
                    since=t.at,
                    first_failure_at=run_start.get(target, t.at),
                    last_reason=t.detail,
                )
            elif t.to_state in (TargetState.DOWN, TargetState.RECOVERING):
                statuses[target] = TargetStatus(
                    target,
                    state=TargetState.DOWN,
                    since=t.at,
                    first_failure_at=run_start.get(target, t.at),
                    last_at=None,
                    last_reason=t.detail,
                )
        self.tracker = OutageTracker(self.policy, statuses)
        self._known = {}
        for incident in self.store.incidents(states=("open", "acknowledged"), kind=OUTAGE_KIND):
            self._known[incident.dedupe_key] = _Known(incident.id, _scope_targets(incident.scope))

    # -- one cycle ----------------------------------------------------------------

    @property
    def vantages(self) -> tuple[str, ...]:
        """The fleet's vantage ids (``timing.vantages``); empty: one direct vantage."""
        return tuple(v.id for v in self.fleet.timing.vantages)

    @property
    def quorum_freshness(self) -> timedelta:
        """How old a vantage's latest observation may be and still count: two probe
        intervals and a timeout (every vantage checks every target each cycle)."""
        timing = self.fleet.timing
        return timedelta(seconds=2 * timing.probe_interval + timing.probe_timeout)

    def combine(self, observations: Sequence[Observation]) -> list[Observation]:
        """One observation per target from several vantages' (quorum); unchanged with
        fewer than two vantages.

        A target counts as failing only if a strict majority of ALL configured
        vantages saw it fail recently (:func:`~ppo_dr.probe.state.quorum_observation`):
        one vantage whose own path broke never declares an outage on its own.
        """
        names = self.vantages
        if len(names) < 2:
            return list(observations)
        newest: dict[str, datetime] = {}
        for o in observations:
            if o.vantage not in names:
                raise ValueError(f"observation from unknown vantage {o.vantage!r}: {names}")
            seen = self._latest.setdefault(o.target_id, {})
            if o.vantage not in seen or seen[o.vantage].at <= o.at:
                seen[o.vantage] = o
            newest[o.target_id] = max(o.at, newest.get(o.target_id, o.at))
        return [
            quorum_observation(
                target,
                self._latest[target],
                at,
                vantages=names,
                freshness=self.quorum_freshness,
            )
            for target, at in newest.items()
        ]

    def cycle(
        self, observations: Sequence[Observation], now: datetime | None = None
    ) -> CycleResult:
        """Feed one cycle's observations; persist, declare and recover (see the module).

        With several vantages, *observations* holds each vantage's; they are combined
        by :meth:`combine` first.
        """
        observations = self.combine(observations)
        at = now or max((o.at for o in observations), default=datetime.now(UTC))
        transitions = self.tracker.feed(
            observations, max_gap=cadence_gap(self.policy, self._periods)
        )
        if self._last_cycle_at is not None and at > self._last_cycle_at:
            self._periods.append(at - self._last_cycle_at)
        self._last_cycle_at = at
        for t in transitions:
            self.store.record_probe_transition(
                t.target_id, t.from_state.value, t.to_state.value, at=t.at, detail=t.reason
            )
        self._count(observations, at)
        statuses = self.tracker.statuses
        found = outages(statuses, self.graph, hold_window=self.hold_window)
        declared = [self._declare(o, at) for o in self._new_outages(found)]
        recovered = self._recoveries(statuses, at)
        spares, spares_back = self._spares(statuses, found, at)
        down = sorted(o.target_id for o in observations if not o.ok)
        return CycleResult(
            at, transitions, [d for d in declared if d], recovered + spares_back, down, spares
        )

    def _spares(
        self, statuses: Mapping[str, TargetStatus], found: Sequence[Outage], at: datetime
    ) -> tuple[list[Incident], list[Incident]]:
        """The ``spare-down`` incidents opened and recovered this cycle; the store is
        asked only when the set of idle spares down changed. A spare an outage incident
        still names (it hosted clients when it died) is that incident's."""
        named = {t for known in self._known.values() for t in known.targets}
        down = [
            s for s in spares_down(statuses, self.graph, found) if server_target(s) not in named
        ]
        if down == self._spares_down:
            return [], []
        changes = record_spares(self.store, down, self.graph, at, flow_run_id=self.flow_run_id)
        self._spares_down = down
        return changes

    def _new_outages(self, found: Sequence[Outage]) -> list[Outage]:
        new: list[Outage] = []
        for outage in found:
            if outage.key in self._known:
                continue
            if self._covered(outage):
                continue
            new.append(outage)
        return new

    def _covered(self, outage: Outage) -> bool:
        """Named in an outage still open: every target of a server or DC outage (what is
        left of a DC outage), or the client of a client outage wherever it is placed now
        -- a client a failover moved during the outage is still that incident's, not a
        new "client down" while it comes back on its new home."""
        targets = self._targets(outage)
        if outage.level == "client":
            targets = frozenset({client_target(outage.subject_id)})
        return any(targets <= k.targets for k in self._known.values())

    def _targets(self, outage: Outage) -> frozenset[str]:
        return _scope_targets(self.scope(outage))

    def scope(self, outage: Outage) -> dict[str, Any]:
        """The incident scope: level, subject and the clients, servers and DCs affected."""
        if outage.level == "dc":
            servers = list(self.graph.dc_servers.get(outage.subject_id, ()))
        elif outage.level == "server":
            servers = [outage.subject_id]
        else:
            servers = [self.graph.client_server[outage.subject_id]]
        dcs = sorted({self.graph.server_dc[s] for s in servers if s in self.graph.server_dc})
        return {
            "level": outage.level,
            "subject": outage.subject_id,
            "clients": list(outage.clients),
            "servers": sorted(servers),
            "dcs": dcs,
            "since": outage.since.isoformat(),
        }

    def _window_for(self, scope: Mapping[str, Any], at: datetime) -> MaintenanceWindow | None:
        """The maintenance window covering the outage: its subject, server(s) or DC(s)."""
        windows = self.store.active_maintenance(at)
        if not windows:
            return None
        level, subject = scope["level"], scope["subject"]
        covered: dict[tuple[str, str], MaintenanceWindow] = {}
        for w in windows:
            covered.setdefault((w.scope_kind, w.scope_id), w)

        def dc(dc_id: str) -> MaintenanceWindow | None:
            return covered.get(("dc", dc_id))

        def server(server_id: str) -> MaintenanceWindow | None:
            return covered.get(("server", server_id)) or dc(self.graph.server_dc.get(server_id, ""))

        if level == "dc":
            return dc(subject)
        if level == "server":
            return server(subject)
        return covered.get(("client", subject)) or server(self.graph.client_server.get(subject, ""))

    def _declare(self, outage: Outage, at: datetime) -> Declared | None:
        scope = self.scope(outage)
        window = self._window_for(scope, at)
        title = _title(outage)

        def open_incident() -> tuple[Incident, bool]:
            return self.store.open_incident(
                OUTAGE_KIND,
                outage.key,
                title,
                scope,
                paging=window is None,
                flow_run_id=self.flow_run_id,
                at=at,
            )

        incident, created, relapse_of = open_or_relapse(
            self.store,
            open_incident,
            by="probe",
            note=f"down again at {utc_stamp(at)}: continued in a new incident",
            flow_run_id=self.flow_run_id,
            at=at,
        )
        self._known[outage.key] = _Known(incident.id, _scope_targets(incident.scope))
        if created and relapse_of is not None:
            self._note(
                incident.id,
                "relapse",
                f"relapse of incident {relapse_of} (recovered, then down again)",
                data={"relapse_of": relapse_of},
                at=at,
            )
        if created:
            self._note(
                incident.id,
                "first-failure",
                f"first failure at {utc_stamp(outage.since)}",
                data={"at": outage.since.isoformat()},
                at=outage.since,
            )
            self._note(
                incident.id,
                "declared",
                f"declared by probe flow run {self.flow_run_id or '(none)'}: {title}",
                data={"key": outage.key, "threshold_s": self.policy.threshold.total_seconds()},
                at=at,
            )
            if window is not None:
                self._note(
                    incident.id,
                    "suppressed",
                    f"suppressed by maintenance window {window.id} "
                    f"({window.scope_kind} {window.scope_id}"
                    f"{': ' + window.reason if window.reason else ''}): no paging",
                    data={"window": window.id},
                    at=at,
                )
        escalate = incident.paging and not self._escalation_recorded(incident.id)
        return Declared(outage, incident, created, escalate, window)

    def _escalation_recorded(self, incident_id: int) -> bool:
        return any(e.kind == ESCALATION_STARTED for e in self.store.timeline(incident_id))

    def _recoveries(self, statuses: Mapping[str, TargetStatus], at: datetime) -> list[Incident]:
        done: list[Incident] = []
        for key, known in list(self._known.items()):
            if any(
                (s := statuses.get(t)) is not None and s.state is not TargetState.UP
                for t in known.targets
            ):
                continue
            # Seeded targets are down; a target never seen is up: needs a real recovery.
            incident = self.store.mark_recovered(
                known.incident_id, at=at, flow_run_id=self.flow_run_id
            )
            self._note(
                incident.id,
                "probe-recovered",
                f"all {len(known.targets)} target(s) up again "
                f"({self.policy.recovery_successes} successes in a row)",
                data={"targets": sorted(known.targets)},
                at=at,
            )
            del self._known[key]
            done.append(incident)
        return done

    # -- escalation hand-over -------------------------------------------------------

    def pending_escalations(self) -> list[Incident]:
        """Paging outage incidents being watched whose escalation was never recorded as
        started (the previous run crashed in between, or the escalation deployment did
        not exist yet): the flow asks again, under the same idempotency key."""
        out: list[Incident] = []
        for known in self._known.values():
            incident = self.store.incident(known.incident_id)
            if (
                incident is not None
                and incident.paging
                and incident.state in ("open", "acknowledged")
                and not self._escalation_recorded(incident.id)
            ):
                out.append(incident)
        return out

    def escalation_started(
        self, incident_id: int, flow_run_id: str, at: datetime | None = None
    ) -> None:
        self._note(
            incident_id,
            ESCALATION_STARTED,
            f"escalation started: flow run {flow_run_id}",
            data={"escalation_flow_run_id": flow_run_id},
            at=at,
        )

    def escalation_unavailable(
        self, incident_id: int, reason: str, at: datetime | None = None
    ) -> None:
        self._note(
            incident_id,
            ESCALATION_MISSING,
            f"escalation NOT started: {reason}",
            data={"reason": reason},
            at=at,
        )

    # -- aggregates and heartbeat ---------------------------------------------------

    def _note(
        self,
        incident_id: int,
        kind: str,
        message: str,
        *,
        data: Mapping[str, Any],
        at: datetime | None,
    ) -> None:
        """Add to the incident's timeline, in the name of this probe's flow run."""
        self.store.add_timeline(
            incident_id, kind, message, flow_run_id=self.flow_run_id, data=data, at=at
        )

    def _count(self, observations: Iterable[Observation], at: datetime) -> None:
        self.minutes.add(observations)
        self.flush_minutes(before=minute_of(at))

    def flush_minutes(self, before: datetime | None = None) -> int:
        """Write the counts of minutes before *before* (all of them if None), every
        target's in one transaction; rows written (:meth:`MinuteCounts.flush`).

        Called each cycle with the current minute, it writes once per minute, not once
        per cycle or per target; the flow calls it without *before* as the run ends.
        """
        return self.minutes.flush(self.store, before)

    def heartbeat(self, at: datetime | None = None) -> None:
        """Count a completed cycle for the pseudo-target
        :data:`~ppo_dr.probe.minutes.HEARTBEAT_TARGET`.

        Written with the other per-minute counts (once the minute is over, or as the
        run ends): the watchdog reads heartbeats per minute anyway, with a minute of
        slack, so a write per cycle would buy nothing.
        """
        self.minutes.heartbeat(at or datetime.now(UTC))

    @property
    def open_outages(self) -> dict[str, int]:
        """Outage key → incident id of the outages being watched for recovery."""
        return {k: v.incident_id for k, v in self._known.items()}


def _scope_targets(scope: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(
        [server_target(s) for s in scope.get("servers", [])]
        + [client_target(c) for c in scope.get("clients", [])]
    )


def _title(outage: Outage) -> str:
    clients = len(outage.clients)
    what = {"dc": "data centre", "server": "app server", "client": "client"}[outage.level]
    return f"{what} {outage.subject_id} down ({clients} client(s) affected)"
