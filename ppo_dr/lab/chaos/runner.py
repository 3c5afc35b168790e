"""Running the matrix: inject a fault, let the runbooks act, read the records, heal.

For each fault, in order: wait until the fleet is healthy and the target's clients
have a snapshot to be restored from; inject; follow what the runbooks do (the probe's
incident, the escalation's pages, the failover it starts, approved here as the on-call
would when the policy wants a person); heal; wait until every component answers;
wait one outage threshold more (a thawed server must not open a second incident);
then read everything back (:mod:`ppo_dr.lab.chaos.records`), judge it
(:func:`ppo_dr.lab.chaos.verdict.judge`) and resolve the incident, so the next fault
starts from a quiet fleet. The runbooks themselves run in ``ppo-dr serve`` (the
loopback lab) or on the lab's own workers (the distributed lab); this module only
breaks, heals, waits and reads.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final, Protocol, TypeVar

from ppo_dr.errors import DRError, TransientError
from ppo_dr.escalation import failover_view
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.chaos import records
from ppo_dr.lab.chaos.catalogue import FaultSpec
from ppo_dr.lab.chaos.fleets import ChaosFleet
from ppo_dr.lab.chaos.flow_runs import FlowRuns
from ppo_dr.lab.chaos.integrity_run import IntegrityContext, exercise_integrity
from ppo_dr.lab.chaos.orchestrator import both_halves
from ppo_dr.lab.chaos.orchestrator_failover import (
    FAILOVER_ENDED,
    FailoverKill,
    kill_failover_midway,
)
from ppo_dr.lab.chaos.orchestrator_run import KillContext, exercise_orchestrator_kill
from ppo_dr.lab.chaos.prefect_server_kill import PrefectKillFacts
from ppo_dr.lab.chaos.sequence import pick_target
from ppo_dr.lab.chaos.store_restart_run import StoreOutage
from ppo_dr.lab.chaos.verdict import ChaosResult, Observation, judge, judge_soak
from ppo_dr.store import Incident, Store
from ppo_dr.waiting import poll

T = TypeVar("T")

#: Issue 10's flapping: down 5 s, up 5 s, for 2 minutes.
FLAP_DOWN_S = 5.0
FLAP_UP_S = 5.0
FLAP_FOR_S = 120.0


class ChaosOperator(FlowRuns, Protocol):
    """What a person on call does during a chaos run that needs Prefect (cli supplies it)."""

    def approve(self, plan_id: str) -> None:
        """Approve the plan a failover run is paused on."""
        ...


@dataclass(frozen=True, slots=True)
class Limits:
    """How long each wait may take, in seconds (generous: a loaded 2-core box is slow)."""

    ready: float = 300.0
    declare: float = 180.0
    plan: float = 600.0  # declaration to a plan: the escalation, then the failover, start
    failover: float = 900.0
    healthy: float = 120.0
    recover: float = 240.0  # healthy again to the probe calling the outages recovered
    settle: float = 25.0  # after healthy again: one outage threshold and a few checks

    @classmethod
    def for_fleet(cls, fleet: Fleet) -> Limits:
        threshold = float(fleet.timing.outage_threshold)
        probe = float(fleet.timing.probe_interval)
        return cls(declare=3 * threshold + 120.0, settle=threshold + 3 * probe)


#: Side fault -> the fault it runs beside when both are asked for. ``channel-errors``
#: touches no server and judges only its own ``test`` incident; ``flapping`` expects no
#: incident and no page of its own and lasts longer. Together they take the longer of
#: the two (~2.5 minutes) instead of the sum (~4.5): the CI tier's 10 minutes.
BESIDE: Final[dict[str, str]] = {"channel-errors": "flapping"}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Fault:
    """One fault being exercised: what the runner learned along the way."""

    spec: FaultSpec
    target: str  # a server, or a data centre
    servers: list[str]  # the servers the fault hits
    placements: dict[str, str]  # client -> server when it was injected
    clients: list[str]
    injected_at: datetime
    before: set[tuple[str, str, str, str]]
    lost_before: dict[str, set[int]]  # acked writes already missing (an earlier fault's)
    problems: list[str] = field(default_factory=list)
    incident: Incident | None = None
    plan_id: str | None = None
    healed_at: datetime | None = None
    healthy_at: datetime | None = None
    store_outage: StoreOutage | None = None  # store-restart: the store taken away
    api_kill: PrefectKillFacts | None = None  # prefect-server-kill: what the kill did


class ChaosRun:
    """The matrix on one lab: :meth:`run` returns one result per fault."""

    def __init__(
        self,
        fleet: ChaosFleet,
        store: Store,
        operator: ChaosOperator,
        *,
        seed: int = 1,
        progress: Callable[[str], None] = lambda _m: None,
        on_result: Callable[[ChaosResult], None] = lambda _r: None,
        limits: Limits | None = None,
    ) -> None:
        self.fleet = fleet
        self.store = store
        self.operator = operator
        self.rng = random.Random(seed)
        self.say = progress
        self.on_result = on_result
        self.limits = limits or Limits.for_fleet(load_fleet(fleet.fleet_file))
        #: Incidents a fault running beside another opened: not the other's to judge
        #: or to resolve.
        self.side_incidents: set[int] = set()

    def run(self, specs: list[FaultSpec]) -> list[ChaosResult]:
        """Each fault in turn, but a :data:`BESIDE` side fault runs in a thread while
        the fault it goes with runs; the results in the order of *specs*."""
        names = {s.name for s in specs}
        sides = {BESIDE[s.name]: s for s in specs if BESIDE.get(s.name) in names}
        results: dict[str, ChaosResult] = {}
        for spec in specs:
            if BESIDE.get(spec.name) in names:
                continue  # run beside its host, in the host's turn
            side = sides.get(spec.name)
            if side is None:
                self._record(spec, self.exercise(spec), results)
                continue
            self.say(f"{side.name} runs beside {spec.name} (it touches no server)")
            with ThreadPoolExecutor(1, thread_name_prefix=f"chaos-{side.name}") as pool:
                beside = pool.submit(self.exercise, side)
                self._record(spec, self.exercise(spec), results)
                self._record(side, beside.result(), results)
        return [results[s.name] for s in specs]

    def _record(self, spec: FaultSpec, result: ChaosResult, into: dict[str, ChaosResult]) -> None:
        self.say(f"{spec.name} on {result.target}: {'held' if result.passed else 'FAILED'}")
        self.on_result(result)
        into[spec.name] = result

    def soak(self, specs: list[FaultSpec], duration_s: float) -> list[ChaosResult]:
        """Faults drawn by the seed from *specs*, one after the other, until
        *duration_s* has passed (none starts after it); then the whole fleet checked.

        The order of faults and targets is the seed's; how many fit in the time is
        the machine's. The last row (``soak-final``) is :func:`judge_soak`'s.
        """
        ends = time.monotonic() + duration_s
        results: list[ChaosResult] = []
        while time.monotonic() < ends:
            results += self.run([self.rng.choice(specs)])
        self.say("soak over: verifying every repository and every client's journal")
        placements = {p.client_id: p.server_id for p in self.store.placements()}
        model = load_fleet(self.fleet.fleet_file)
        problems = records.verify_repositories(model, set(placements.values()), placements)
        missing: dict[str, list[int]] | None
        try:
            lost = records.lost_writes(model, self.fleet.acks_file, sorted(placements), self.fleet)
            missing = {c: [seq for seq, _ in seqs] for c, seqs in lost.items()}
        except DRError as exc:
            problems.append(str(exc))
            missing = None
        final = judge_soak(results, missing, problems)
        self.on_result(final)
        return [*results, final]

    # ---- one fault

    def exercise(self, spec: FaultSpec) -> ChaosResult:
        """Inject *spec* into a server drawn by the seed, follow it, heal it, judge it."""
        if spec.shape == "integrity":
            context = IntegrityContext(
                self.fleet, self.store, self.operator, self.rng, self.say, self._ready
            )
            return exercise_integrity(context, spec)
        if spec.shape == "orchestrator-kill":  # a mirror run killed, then a failover run
            kill = KillContext(self.fleet, self.store, self.operator, self.say, self._ready)
            mirror_half = exercise_orchestrator_kill(kill, spec)
            midway = FailoverKill(
                self.store, self.operator, self.operator.approve, self.say, self.limits.failover
            )
            self.say(f"{spec.name}: now a failover's run, killed mid-restore")
            failover_half = self._exercise_outage(replace(spec, lab_fault="power"), midway)
            failover_half.notes[:0] = midway.said
            return both_halves(mirror_half, failover_half)
        if spec.shape == "channel-errors":
            from ppo_dr.lab.chaos.channel_errors_run import exercise_channel_errors

            return exercise_channel_errors(self, spec)
        if spec.shape == "mirror":  # trouble around a server: the mirror runbook's
            from ppo_dr.lab.chaos.mirror_faults import exercise_mirror_fault

            return exercise_mirror_fault(self, spec)
        return self._exercise_outage(spec)

    def _exercise_outage(self, spec: FaultSpec, midway: FailoverKill | None = None) -> ChaosResult:
        """A server (or DC) lost, or flapping: inject, follow, heal, judge. With *midway*,
        the failover's run is killed mid-restore and rerun (``orchestrator-kill``)."""
        placements = {p.client_id: p.server_id for p in self.store.placements()}
        model = load_fleet(self.fleet.fleet_file)
        servers = [s.id for s in model.servers if s.role in ("app", "spare")]
        target = pick_target(placements, servers, self.rng)
        hit = [target]
        if spec.shape == "dc-outage":
            target = model.server(target).dc
            hit = [s.id for s in model.servers_in(target)]
        clients = sorted(c for c, s in placements.items() if s in hit)
        self._ready(clients)
        already = records.lost_writes(model, self.fleet.acks_file, clients, self.fleet)
        fault = _Fault(
            spec,
            target,
            hit,
            placements,
            clients,
            _now(),
            records.complete_snapshot_ids(self.store, clients),
            {c: {seq for seq, _ in seqs} for c, seqs in already.items()},
        )
        self.say(f"{spec.name}: {spec.injected} on {target} ({len(clients)} clients)")
        try:
            if spec.shape == "flapping":
                self._flap(fault)
            else:
                self._outage(fault, model, midway)
        except DRError as exc:
            fault.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            self._heal(fault)
        healthy = self._since(fault, fault.healthy_at) if fault.healthy_at else "never"
        self.say(f"  healed at +{self._since(fault, fault.healed_at)}; healthy at +{healthy}")
        self._await_recovery(fault)
        self.say(f"  probe: every outage recovered at +{self._since(fault)}; settling")
        time.sleep(self.limits.settle)  # a late (second) incident shows up in this time
        if fault.store_outage is not None:
            return self._judge_store_restart(fault)
        if fault.api_kill is not None:
            return self._judge_prefect_server_kill(fault)
        judged = spec if midway is None else replace(spec, shape="server-outage")
        result = judge(judged, self._observe(fault))
        self.say(f"  judged at +{self._since(fault)}")
        return result

    @staticmethod
    def _poll(check: Callable[[], T | None], timeout: float, every: float = 0.5) -> T | None:
        """:func:`poll` of the store, riding its transient errors: ``store-restart`` takes
        it away for 30 s, and this runner observes; it must not fail with the store."""
        return poll(check, timeout, every, riding=(TransientError,))

    @staticmethod
    def _since(fault: _Fault, at: datetime | None = None) -> str:
        """Seconds from the injection to *at* (default now), for the progress lines."""
        return f"{((at or _now()) - fault.injected_at).total_seconds():.0f} s"

    def _await_recovery(self, fault: _Fault) -> None:
        """Wait until the probe itself calls every outage of the fault recovered.

        Resolving an incident while the probe still has its targets down makes the
        probe declare them again (seen: a client and a server incident re-opened the
        moment a power cut's incident was resolved after the heal). So the on-call
        resolves only what the probe has seen come back.
        """

        def recovered() -> bool:
            opened = records.incidents_since(self.store, fault.injected_at)
            return all(i.state in ("recovered", "resolved") for i in opened if i.kind == "outage")

        if not self._poll(recovered, self.limits.recover, every=2.0):
            still = [
                f"#{i.id} {i.state}"
                for i in records.incidents_since(self.store, fault.injected_at)
                if i.kind == "outage" and i.state not in ("recovered", "resolved")
            ]
            fault.problems.append(
                f"not seen recovered by the probe within {self.limits.recover:.0f} s: "
                + ", ".join(still)
            )

    def _ready(self, clients: list[str]) -> None:
        """Healthy, and a complete snapshot of every client to restore from."""

        def ready() -> bool:
            have = records.newest_snapshots(self.store, clients)
            return not self.fleet.unhealthy() and all(c in have for c in clients)

        if not self._poll(ready, self.limits.ready, every=2.0):
            self.say("warning: not every client has a snapshot yet; injecting anyway")

    def _outage(self, fault: _Fault, model: Fleet, midway: FailoverKill | None) -> None:
        assert fault.spec.lab_fault is not None
        self.fleet.break_(fault.target, fault.spec.lab_fault)
        level = "dc" if fault.spec.shape == "dc-outage" else "server"
        key = f"outage:{level}:{fault.target}"

        def declared() -> Incident | None:
            found = records.incidents_since(self.store, fault.injected_at)
            return next((i for i in found if i.dedupe_key == key), None)

        fault.incident = self._poll(declared, self.limits.declare)
        if fault.incident is None:
            fault.problems.append(f"no incident {key} within {self.limits.declare:.0f} s")
            return
        self.say(f"  incident #{fault.incident.id} declared: {fault.incident.title}")
        auto = bool(model.escalation and model.escalation.auto_failover)
        fault.plan_id = self._approve(fault.incident.id, auto)
        if fault.plan_id is None:
            fault.problems.append("the escalation started no failover with a plan to run")
            return
        plan_id = fault.plan_id
        if fault.spec.name == "store-restart":
            self._take_store_away(fault)
        if fault.spec.name == "prefect-server-kill":
            self._kill_prefect_server(fault, fault.incident.id, plan_id)
        if midway is not None:
            fault.problems += kill_failover_midway(midway, fault.incident.id, plan_id)

        def finished() -> str | None:
            record = self.store.failover(plan_id)
            return record.state if record is not None and record.state in FAILOVER_ENDED else None

        state = self._poll(finished, self.limits.failover, every=2.0)
        self.say(f"  failover {plan_id[:12]}: {state or 'not finished in time'}")

    def _approve(self, incident_id: int, auto: bool) -> str | None:
        """Wait for the failover's plan; approve it unless the policy is automatic."""

        def planned() -> str | None:
            view = failover_view(self.store.timeline(incident_id))
            if view.unavailable:
                raise DRError(f"the failover could not be started: {view.unavailable}")
            if view.plan_id is not None and view.moves == 0:
                why = "; ".join(f"{c}: {r}" for c, r in view.refusals) or "nothing to move"
                raise DRError(f"the failover plan moves no client: {why}")
            return view.plan_id

        plan_id = self._poll(planned, self.limits.plan)
        if plan_id is not None and not auto:
            self.operator.approve(plan_id)
            self.say(f"  plan {plan_id[:12]} approved (the lab's policy asks a person)")
        return plan_id

    def _flap(self, fault: _Fault) -> None:
        assert fault.spec.lab_fault is not None
        ends = time.monotonic() + FLAP_FOR_S
        spells = 0
        while time.monotonic() < ends:
            self.fleet.break_(fault.target, fault.spec.lab_fault)
            time.sleep(FLAP_DOWN_S)
            self.fleet.heal(fault.target)
            spells += 1
            time.sleep(FLAP_UP_S)
        self.say(f"  {spells} down spells of {FLAP_DOWN_S:.0f} s")

    def begin(
        self, spec: FaultSpec, target: str, placements: dict[str, str], clients: list[str]
    ) -> _Fault:
        """The record of a fault about to be injected into *target*: the snapshots and
        the acknowledged writes already missing before it (for faults run elsewhere)."""
        model = load_fleet(self.fleet.fleet_file)
        already = records.lost_writes(model, self.fleet.acks_file, clients, self.fleet)
        return _Fault(
            spec,
            target,
            [target],
            placements,
            clients,
            _now(),
            records.complete_snapshot_ids(self.store, clients),
            {c: {seq for seq, _ in seqs} for c, seqs in already.items()},
        )

    def _heal(self, fault: _Fault) -> None:
        fault.healed_at = _now()
        try:
            self.fleet.heal(fault.target)
        except DRError as exc:
            fault.problems.append(f"heal of {fault.target} failed: {exc}")

        def healthy() -> datetime | None:
            return None if self.fleet.unhealthy() else _now()

        fault.healthy_at = poll(healthy, self.limits.healthy, every=2.0)

    # ---- reading back

    def _observe(self, fault: _Fault) -> Observation:
        store = self.store
        opened = [
            i
            for i in records.incidents_since(store, fault.injected_at)
            if i.id not in self.side_incidents
        ]
        outages = [i for i in opened if i.kind == "outage"]
        ids = [i.id for i in opened]
        obs = Observation(
            fault=fault.spec.name,
            target=fault.target,
            injected_at=fault.injected_at,
            healed_at=fault.healed_at,
            healthy_at=fault.healthy_at,
            first_failed_at=records.first_failed_check(store, fault.servers, fault.injected_at),
            incidents=tuple((i.id, i.opened_at) for i in outages),
            other_incidents=tuple(f"#{i.id} {i.kind}" for i in opened if i.kind != "outage"),
            pages=tuple(records.pages_sent(store, ids)),
            notice_keys=tuple(records.outbox_keys(self.fleet.outbox(), ids)),
            clients=tuple(fault.clients),
        )
        model = load_fleet(self.fleet.fleet_file)
        if fault.incident is not None and fault.plan_id is not None:
            record = store.failover(fault.plan_id)
            taken, rto = records.restored_snapshots(store, fault.plan_id)
            obs = replace(
                obs,
                failover_state=record.state if record is not None else None,
                failover_steps=tuple(
                    records.failover_steps(store, fault.incident.id, fault.plan_id)
                ),
                rto_s=rto,
                snapshot_at=taken,
            )
            if fault.spec.shape == "dc-outage":
                wrong = records.misplaced(model, store, fault.plan_id, fault.target)
                obs = replace(obs, misplaced=tuple(wrong))
        elif fault.spec.shape == "flapping":
            obs = replace(obs, snapshot_at=records.newest_snapshots(store, fault.clients))
        try:
            lost: dict[str, tuple[tuple[int, datetime], ...]] | None = records.new_losses(
                model, self.fleet.acks_file, fault.clients, fault.lost_before, self.fleet
            )
        except DRError as exc:
            fault.problems.append(str(exc))
            lost = None
        after = records.complete_snapshot_ids(store, fault.clients)
        # The repositories of the homes the fault hit, re-read and re-hashed.
        homes = set(fault.placements.values()) & set(fault.servers)
        damaged = records.verify_repositories(model, homes, fault.placements)
        fault.problems += damaged
        broken = [
            s
            for c in fault.clients
            for s in store.snapshots(c)
            if s.server_id in fault.servers
            and s.status == "complete"
            and fault.injected_at <= s.taken_at <= (fault.healed_at or _now())
        ]
        for incident in opened:  # the on-call closes it: the next fault starts quiet
            store.resolve(incident.id, by="chaos", note=f"chaos run: {fault.spec.name} healed")
        return replace(
            obs,
            lost_seqs=lost,
            snapshots_before=len(fault.before),
            snapshots_intact=fault.before <= after and not damaged,
            snapshots_taken_of_broken=len(broken),
            problems=tuple(fault.problems),
        )

    # ---- store-restart: a power cut, and the store taken away mid-failover

    def _take_store_away(self, fault: _Fault) -> None:
        cluster = self.fleet.store_cluster()
        fault.store_outage = StoreOutage(str(self.store.url), self.fleet.run_logs(), cluster)
        fault.store_outage.start()
        outage = fault.store_outage
        self.say(f"  the store taken away for {outage.down_s:.0f} s mid-failover ({outage.how})")

    def _judge_store_restart(self, fault: _Fault) -> ChaosResult:
        from ppo_dr.lab.chaos.store_restart import judge_store_restart

        assert fault.store_outage is not None
        facts = fault.store_outage.facts(
            self.store, self.fleet.outbox(), fault.injected_at, fault.plan_id
        )
        return judge_store_restart(judge(fault.spec, self._observe(fault)), facts)

    # ---- prefect-server-kill: a power cut, and the Prefect API killed mid-failover

    def _kill_prefect_server(self, fault: _Fault, incident_id: int, plan_id: str) -> None:
        from ppo_dr.lab.chaos.prefect_server_kill_run import (
            KillApiContext,
            kill_api_mid_failover,
        )

        context = KillApiContext(self.store, self.operator, self.say, self.limits.failover)
        fault.api_kill = kill_api_mid_failover(context, incident_id, plan_id, fault.injected_at)

    def _judge_prefect_server_kill(self, fault: _Fault) -> ChaosResult:
        from ppo_dr.lab.chaos.prefect_server_kill import judge_prefect_server_kill
        from ppo_dr.lab.chaos.prefect_server_kill_run import nothing_twice

        assert fault.api_kill is not None
        facts = nothing_twice(self.store, fault.plan_id, fault.injected_at, fault.api_kill)
        return judge_prefect_server_kill(judge(fault.spec, self._observe(fault)), facts)
