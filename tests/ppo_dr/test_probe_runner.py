"""The probe runner with a real SQLite store and synthetic observations (no network).

The example fleet: jhb1 has two app servers (app-jhb1-1 with acme-mining and
karoo-logistics, app-jhb1-2 with ubuntu-health), cpt1 and lon1 one each. Its timing:
probe every 10 s, outage after 180 s, 3 successes to recover.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event

from ppo_dr.errors import PermanentError
from ppo_dr.inventory import Fleet, Vantage, load_fleet
from ppo_dr.probe.checks import HttpCheck
from ppo_dr.probe.graph import client_target, server_target
from ppo_dr.probe.minutes import HEARTBEAT_TARGET
from ppo_dr.probe.runner import (
    ESCALATION_STARTED,
    OUTAGE_KIND,
    CycleResult,
    Declared,
    ProbeRunner,
    probe_checks,
)
from ppo_dr.probe.state import Observation
from ppo_dr.probe.watchdog import SILENT_KIND, check_probe_silence
from ppo_dr.store import Store

FLEET = load_fleet(Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml")
T0 = datetime(2026, 11, 30, 6, 0, 0, tzinfo=UTC)
STEP = timedelta(seconds=FLEET.timing.probe_interval)
JHB1 = ("app-jhb1-1", "app-jhb1-2", "spare-jhb1-1")  # every server the probe checks there


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        opened.upgrade()
        yield opened


def targets(fleet: Fleet) -> list[str]:
    return [c.target_id for c in probe_checks(fleet)]


def affected(servers: Iterable[str]) -> set[str]:
    down = set(servers)
    graph_clients = {c.id for c in FLEET.clients if c.server in down}
    return {server_target(s) for s in down} | {client_target(c) for c in graph_clients}


class Clock:
    """Runs cycles every probe interval; *failing* targets fail, the rest answer."""

    def __init__(self, runner: ProbeRunner, start: datetime = T0, step: timedelta = STEP) -> None:
        self.runner = runner
        self.now = start
        self.step = step

    def run(self, seconds: float, failing: set[str] = frozenset()) -> list[CycleResult]:  # type: ignore[assignment]
        out = []
        end = self.now + timedelta(seconds=seconds)
        while self.now < end:
            obs = [
                Observation(
                    t, t not in failing, 5.0, "connect: refused" if t in failing else "ok", self.now
                )
                for t in targets(self.runner.fleet)
            ]
            out.append(self.runner.cycle(obs, now=self.now))
            self.now += self.step
        return out


def runner(store: Store, run_id: str = "run-1") -> ProbeRunner:
    r = ProbeRunner(FLEET, store, flow_run_id=None)
    r.seed(now=T0)
    return r


def declared(results: list[CycleResult]) -> list[Declared]:
    return [d for r in results for d in r.declared]


def test_checks_cover_servers_and_clients_health() -> None:
    checks = probe_checks(FLEET)
    ids = [c.target_id for c in checks]
    assert ids.count("server:app-jhb1-1") == 1
    assert len([i for i in ids if i.startswith("client:")]) == len(FLEET.clients)
    acme = next(c for c in checks if c.target_id == "client:acme-mining")
    assert isinstance(acme, HttpCheck) and acme.url == "https://acme-mining.ppo.example/health"
    via_door = probe_checks(FLEET, front_door="http://127.0.0.1:9/")
    acme = next(c for c in via_door if c.target_id == "client:acme-mining")
    assert isinstance(acme, HttpCheck) and acme.url == "http://127.0.0.1:9/c/acme-mining/health"


def test_server_kill_is_one_outage_naming_its_clients(store: Store) -> None:
    r = runner(store)
    clock = Clock(r)
    clock.run(30)
    results = clock.run(FLEET.timing.outage_threshold + 30, failing=affected(["app-jhb1-1"]))
    found = declared(results)
    assert len(found) == 1
    d = found[0]
    assert d.created and d.escalate and d.window is None
    incident = d.incident
    assert incident.kind == OUTAGE_KIND and incident.dedupe_key == "outage:server:app-jhb1-1"
    assert incident.scope["clients"] == ["acme-mining", "karoo-logistics"]
    assert incident.scope["servers"] == ["app-jhb1-1"] and incident.scope["dcs"] == ["jhb1"]
    # Declared within threshold + one interval of the first failure.
    assert incident.opened_at - datetime.fromisoformat(incident.scope["since"]) <= (
        timedelta(seconds=FLEET.timing.outage_threshold) + STEP
    )
    kinds = [e.kind for e in store.timeline(incident.id)]
    assert kinds[:3] == ["first-failure", "opened", "declared"] or set(kinds) >= {
        "first-failure",
        "opened",
        "declared",
    }
    assert len(store.incidents()) == 1
    # Transitions: every change recorded; per-minute counts, not every observation.
    moves = store.probe_transitions("server:app-jhb1-1")
    assert [(m.from_state, m.to_state) for m in moves] == [("up", "pending"), ("pending", "down")]
    r.flush_minutes()
    minutes = store.probe_minutes("server:app-jhb1-1")
    assert sum(m.checks for m in minutes) == len(clock_results := results) + 3
    assert len(minutes) <= 5 and len(clock_results) > 5


def test_a_server_released_from_the_fleet_is_forgotten_not_declared(store: Store) -> None:
    """A drill's scratch server is released mid-run: the run's fleet follows the file,
    so the server, failing since before its release, is never declared down."""
    r = runner(store)
    clock = Clock(r)
    gone = affected(["app-jhb1-2"])
    clock.run(60, failing=gone)
    assert r.tracker.status("server:app-jhb1-2").state.value == "pending"
    smaller = FLEET.model_copy(
        update={
            "servers": tuple(s for s in FLEET.servers if s.id != "app-jhb1-2"),
            "clients": tuple(c for c in FLEET.clients if c.server != "app-jhb1-2"),
        }
    )
    assert r.use_fleet(smaller) == sorted(gone)
    results = clock.run(FLEET.timing.outage_threshold + 60, failing=gone)
    assert declared(results) == [] and store.incidents() == []
    assert not gone & set(r.tracker.statuses)
    assert "server:app-jhb1-2" not in {c.target_id for c in r.checks()}


def test_whole_dc_is_one_outage(store: Store) -> None:
    r = runner(store)
    clock = Clock(r)
    clock.run(20)
    results = clock.run(FLEET.timing.outage_threshold + 40, failing=affected(JHB1))
    found = declared(results)
    assert [d.incident.dedupe_key for d in found] == ["outage:dc:jhb1"]
    assert found[0].incident.scope["clients"] == ["acme-mining", "karoo-logistics", "ubuntu-health"]
    assert found[0].incident.scope["servers"] == list(JHB1)
    # One server comes back: what is left is named in the DC's outage, no second page.
    results = clock.run(120, failing=affected(["app-jhb1-2"]))
    assert declared(results) == []
    assert len(store.incidents()) == 1
    results = clock.run(60)
    assert [i.dedupe_key for r_ in results for i in r_.recovered] == ["outage:dc:jhb1"]


def test_recovery_marks_the_incident_recovered(store: Store) -> None:
    r = runner(store)
    clock = Clock(r)
    clock.run(FLEET.timing.outage_threshold + 20, failing=affected(["app-lon1-1"]))
    (incident,) = store.incidents()
    results = clock.run(STEP.total_seconds() * (FLEET.timing.recovery_successes - 1))
    assert all(not r_.recovered for r_ in results)  # not after one or two successes
    results = clock.run(STEP.total_seconds() * 2)
    assert [i.id for r_ in results for i in r_.recovered] == [incident.id]
    after = store.incident(incident.id)
    assert after is not None and after.state == "recovered" and after.recovered_at is not None
    assert "probe-recovered" in [e.kind for e in store.timeline(incident.id)]
    assert r.open_outages == {}


def test_blip_never_opens_an_incident(store: Store) -> None:
    clock = Clock(runner(store))
    clock.run(FLEET.timing.outage_threshold - 20, failing=affected(["app-cpt1-1"]))
    clock.run(60)
    assert store.incidents() == []


def test_maintenance_window_suppresses_paging(store: Store) -> None:
    window = store.start_maintenance("dc", "jhb1", reason="migration", starts_at=T0)
    clock = Clock(runner(store))
    found = declared(
        clock.run(FLEET.timing.outage_threshold + 30, failing=affected(["app-jhb1-2"]))
    )
    assert len(found) == 1
    d = found[0]
    assert d.window is not None and d.window.id == window.id
    assert not d.escalate and d.incident.paging is False
    messages = [e.message for e in store.timeline(d.incident.id)]
    assert any(f"suppressed by maintenance window {window.id}" in m for m in messages)


def test_client_window_does_not_cover_its_server(store: Store) -> None:
    store.start_maintenance("client", "acme-mining", starts_at=T0)
    clock = Clock(runner(store))
    found = declared(
        clock.run(FLEET.timing.outage_threshold + 30, failing=affected(["app-jhb1-1"]))
    )
    assert len(found) == 1 and found[0].escalate and found[0].incident.paging


def test_restarted_probe_finds_the_same_incident_and_never_escalates_twice(store: Store) -> None:
    first = runner(store)
    clock = Clock(first)
    found = declared(
        clock.run(FLEET.timing.outage_threshold + 20, failing=affected(["app-jhb1-1"]))
    )
    assert len(found) == 1 and found[0].escalate
    first.escalation_started(found[0].incident.id, "esc-run-1")
    first.flush_minutes()

    # The next period's run (or one after a crash) resumes from the store.
    second = runner(store)
    assert second.open_outages == {"outage:server:app-jhb1-1": found[0].incident.id}
    assert second.tracker.status("server:app-jhb1-1").state.in_outage
    clock2 = Clock(second, start=clock.now + timedelta(seconds=30))
    results = clock2.run(FLEET.timing.outage_threshold + 20, failing=affected(["app-jhb1-1"]))
    assert declared(results) == []
    assert len(store.incidents()) == 1
    started = [e for e in store.timeline(found[0].incident.id) if e.kind == ESCALATION_STARTED]
    assert len(started) == 1
    # ... and it still sees the recovery.
    results = clock2.run(60)
    assert [i.id for r_ in results for i in r_.recovered] == [found[0].incident.id]


def test_restart_before_escalation_was_recorded_asks_again(store: Store) -> None:
    """A crash between opening the incident and starting the escalation: the next run
    finds the incident (created=False) and asks for the escalation again; the flow's
    run_deployment idempotency key makes that the same flow run."""
    clock = Clock(runner(store))
    (d,) = declared(clock.run(FLEET.timing.outage_threshold + 20, failing=affected(["app-cpt1-1"])))
    # The next run resumes from the store and asks for the escalation again.
    resumed = runner(store)
    assert [i.id for i in resumed.pending_escalations()] == [d.incident.id]
    resumed.escalation_started(d.incident.id, "esc-run-1")
    assert runner(store).pending_escalations() == []
    # A runner that never seeded re-derives the outage: same incident, not created.
    fresh = ProbeRunner(FLEET, store)
    found = declared(
        Clock(fresh, start=clock.now).run(
            FLEET.timing.outage_threshold + 20, failing=affected(["app-cpt1-1"])
        )
    )
    assert len(found) == 1
    again = found[0]
    assert not again.created and again.incident.id == d.incident.id and not again.escalate
    assert len(store.incidents()) == 1


def test_heartbeat_and_watchdog(store: Store) -> None:
    silent_after = timedelta(minutes=4)
    # Never heartbeated here: a fresh install, nothing to watch yet.
    assert check_probe_silence(store, silent_after, now=T0) == (None, False)
    first = runner(store)
    first.heartbeat(T0 - timedelta(minutes=10))
    assert store.probe_minutes(HEARTBEAT_TARGET) == []  # counted; written per minute
    assert first.flush_minutes() == 1
    incident, created = check_probe_silence(store, silent_after, now=T0)
    assert created and incident is not None and incident.kind == SILENT_KIND and incident.paging
    again, created = check_probe_silence(store, silent_after, now=T0 + timedelta(minutes=1))
    assert again is not None and again.id == incident.id and not created
    r = runner(store)
    r.heartbeat(T0 + timedelta(minutes=2))
    r.flush_minutes()
    assert store.probe_minutes(HEARTBEAT_TARGET)[0].checks == 1
    none, created = check_probe_silence(store, silent_after, now=T0 + timedelta(minutes=3))
    assert none is None and not created
    back = store.incident(incident.id)
    assert back is not None and back.state == "recovered"
    # Silent again later: the recovered incident is resolved, a new one pages.
    later, created = check_probe_silence(store, silent_after, now=T0 + timedelta(minutes=30))
    assert later is not None and later.id != incident.id and created
    old = store.incident(incident.id)
    assert old is not None and old.state == "resolved"


@pytest.mark.parametrize("restart_gap_s", [10, 300])
def test_pending_failure_run_is_carried_over_only_across_a_short_restart(
    store: Store, restart_gap_s: int
) -> None:
    """The next period's run starts seconds later: a failure run that was pending goes
    on (declared at threshold from the first failure); after a long silence it starts
    again (continuity unknown)."""
    failing = affected(["app-lon1-1"])
    first = runner(store)
    clock = Clock(first)
    clock.run(100, failing=failing)
    first.heartbeat(clock.now - STEP)
    first.flush_minutes()
    start = clock.now + timedelta(seconds=restart_gap_s)
    second = ProbeRunner(FLEET, store)
    second.seed(now=start)
    clock2 = Clock(second, start=start)
    found = declared(clock2.run(FLEET.timing.outage_threshold + 20, failing=failing))
    assert len(found) == 1
    since = datetime.fromisoformat(found[0].incident.scope["since"])
    if restart_gap_s <= FLEET.timing.probe_interval * 3:
        assert since == T0
        assert (
            found[0].incident.opened_at - T0
            <= timedelta(seconds=FLEET.timing.outage_threshold + restart_gap_s) + STEP
        )
    else:
        assert since == start


def test_a_relapse_after_recovery_is_a_new_incident(store: Store) -> None:
    clock = Clock(runner(store))
    failing = affected(["app-cpt1-1"])
    (first,) = declared(clock.run(FLEET.timing.outage_threshold + 20, failing=failing))
    clock.run(60)
    recovered = store.incident(first.incident.id)
    assert recovered is not None and recovered.state == "recovered"
    (second,) = declared(clock.run(FLEET.timing.outage_threshold + 20, failing=failing))
    assert second.created and second.escalate and second.incident.id != first.incident.id
    old = store.incident(first.incident.id)
    assert old is not None and old.state == "resolved" and old.resolved_by == "probe"
    assert "relapse" in [e.kind for e in store.timeline(second.incident.id)]


# --------------------------------------------------------------------------- quorum


def with_vantages(*names: str) -> Fleet:
    timing = FLEET.timing.model_copy(update={"vantages": tuple(Vantage(id=n) for n in names)})
    return FLEET.model_copy(update={"timing": timing})


def run_vantages(
    r: ProbeRunner, start: datetime, seconds: float, failing: dict[str, set[str]]
) -> list[CycleResult]:
    """Cycles every interval; vantage *v* sees the targets ``failing[v]`` fail."""
    out = []
    now = start
    while now < start + timedelta(seconds=seconds):
        obs = [
            Observation(t, t not in failing.get(v, set()), 5.0, "refused", now, vantage=v)
            for v in r.vantages
            for t in targets(FLEET)
        ]
        out.append(r.cycle(obs, now=now))
        now += STEP
    return out


def quorum_runner(store: Store, *names: str) -> ProbeRunner:
    r = ProbeRunner(with_vantages(*names), store)
    r.seed(now=T0)
    return r


@pytest.mark.parametrize("names", [("a", "b"), ("a", "b", "c")])
def test_one_vantage_failing_alone_never_declares(store: Store, names: tuple[str, ...]) -> None:
    r = quorum_runner(store, *names)
    everything = set(targets(FLEET))
    results = run_vantages(r, T0, FLEET.timing.outage_threshold * 3, {names[-1]: everything})
    assert store.incidents() == []
    assert [t for res in results for t in res.transitions] == []
    assert all(res.down == [] for res in results)


def test_a_majority_of_vantages_declares_naming_them(store: Store) -> None:
    r = quorum_runner(store, "a", "b", "c")
    down = affected(["app-jhb1-1"])
    results = run_vantages(r, T0, FLEET.timing.outage_threshold + 30, {"a": down, "b": down})
    (found,) = declared(results)
    assert found.incident.dedupe_key == "outage:server:app-jhb1-1"
    assert found.incident.scope["clients"] == ["acme-mining", "karoo-logistics"]
    (first, *_) = store.probe_transitions("server:app-jhb1-1")
    assert first.detail.startswith("2/3 vantages failing: a: refused; b: refused")


def test_a_silent_vantage_does_not_count_as_failing(store: Store) -> None:
    """Vantage c has no observations at all (its cycle never finished): a and b decide."""
    r = quorum_runner(store, "a", "b", "c")
    down = affected(["app-cpt1-1"])
    obs_at = T0
    results = []
    while obs_at < T0 + timedelta(seconds=FLEET.timing.outage_threshold + 30):
        obs = [
            Observation(t, not (v == "a" and t in down), 5.0, "refused", obs_at, vantage=v)
            for v in ("a", "b")
            for t in targets(FLEET)
        ]
        results.append(r.cycle(obs, now=obs_at))
        obs_at += STEP
    assert declared(results) == []  # 1 of 3 failing: no majority, whoever is silent


def test_observations_of_an_unknown_vantage_are_refused(store: Store) -> None:
    r = quorum_runner(store, "a", "b")
    stray = Observation("server:app-jhb1-1", True, 1.0, "ok", T0, vantage="z")
    with pytest.raises(ValueError, match="unknown vantage 'z'"):
        r.cycle([stray], now=T0)


def test_counts_are_written_once_per_minute_in_one_transaction(store: Store) -> None:
    """Two minutes of cycles over every target plus the heartbeat: one write (one
    statement, all targets) per finished minute, whatever the targets and cycles."""
    commits: list[str] = []

    def on_execute(_c: object, _cur: object, statement: str, *_a: object) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            commits.append(statement)

    event.listen(store.engine, "before_cursor_execute", on_execute)
    r = runner(store)
    clock = Clock(r)
    for _ in range(12):  # 2 minutes of cycles, every 10 s, from 06:00:00
        clock.run(STEP.total_seconds())
        r.heartbeat(clock.now - STEP)
    assert len(commits) == 1  # 06:00 written once 06:01 began; 06:01 still open
    assert r.flush_minutes() == len(targets(FLEET)) + 1  # the run ends: 06:01
    assert len(commits) == 2
    minutes = store.probe_minutes(HEARTBEAT_TARGET)
    assert [m.checks for m in minutes] == [6, 6]
    assert sum(m.checks for m in store.probe_minutes("server:app-jhb1-1")) == 12


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store on SQLite, and on PostgreSQL when PPO_DR_TEST_POSTGRES_URL is set."""
    from tests.ppo_dr.test_store import POSTGRES_URL, _fresh_postgres_database

    if request.param == "sqlite":
        with Store(f"sqlite:///{tmp_path / 'state.db'}") as opened:
            opened.upgrade()
            yield opened
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL backend: set PPO_DR_TEST_POSTGRES_URL=postgresql://...")
    for url in _fresh_postgres_database(POSTGRES_URL):
        with Store(url) as opened:
            opened.upgrade()
            yield opened


def test_minute_batch_merges_adds_and_keeps_the_largest_latency(any_store: Store) -> None:
    store = any_store
    minute = T0.replace(second=0)
    store.record_probe_minute("a", minute, 6, 1, 50.0)
    written = store.record_probe_minutes(
        [
            ("a", minute + timedelta(seconds=30), 6, 0, None),  # None keeps the maximum
            ("a", minute + timedelta(seconds=40), 1, 1, 70.0),  # same row twice: merged
            ("b", minute, 3, 3, None),
            (HEARTBEAT_TARGET, minute, 6, 0, None),
        ]
    )
    assert written == 3
    rows = {(m.target, m.minute): m for m in store.probe_minutes(since=minute)}
    a = rows[("a", minute)]
    assert (a.checks, a.failures, a.latency_ms_max) == (13, 2, 70.0)
    assert (rows[("b", minute)].checks, rows[("b", minute)].latency_ms_max) == (3, None)
    assert store.record_probe_minutes([]) == 0
    with pytest.raises(PermanentError, match="cannot exceed"):
        store.record_probe_minutes([("c", minute, 1, 2, None)])
    assert ("c", minute) not in {(m.target, m.minute) for m in store.probe_minutes()}


def test_clients_moved_during_an_outage_are_not_new_client_outages(store: Store) -> None:
    """A failover moves the server's clients while it stays dead; the next probe run
    (seeded: the clients still in outage) sees them come back on their new home: no
    "client down" incident for them, they belong to the server's incident still open."""
    store.seed_placements({c.id: c.server for c in FLEET.clients})
    first = runner(store)
    clock = Clock(first)
    lost = affected(["app-jhb1-1"])
    [found] = declared(clock.run(FLEET.timing.outage_threshold + 20, failing=lost))
    first.flush_minutes()
    for client in found.incident.scope["clients"]:
        place = store.placement(client)
        assert place is not None
        store.move_client(client, "app-cpt1-1", place.version, reason="failover")

    second = runner(store)  # the next period's run: graph from the placements now
    assert second.graph.client_server["acme-mining"] == "app-cpt1-1"
    clock2 = Clock(second, start=clock.now + STEP)
    results = clock2.run(120, failing={server_target("app-jhb1-1")})
    assert declared(results) == [], [d.incident.title for d in declared(results)]
    assert [i.dedupe_key for i in store.incidents()] == ["outage:server:app-jhb1-1"]


def cycles_of_checks(
    r: ProbeRunner, start: datetime, seconds: float, failing: set[str]
) -> tuple[list[CycleResult], datetime]:
    """Cycles over the runner's own checks (``runner.checks()``, as the flow runs them)."""
    out, now = [], start
    while now < start + timedelta(seconds=seconds):
        obs = [
            Observation(c.target_id, c.target_id not in failing, 5.0, "ok", now) for c in r.checks()
        ]
        out.append(r.cycle(obs, now=now))
        now += STEP
    return out, now


def test_a_dead_spare_whose_clients_moved_away_is_watched_until_it_answers(store: Store) -> None:
    """A spare hosting a client dies; the failover moves the client off it. The next
    run still checks the spare (an idle spare is a witness of its DC), keeps the outage
    open while it is dead, and recovers it once it answers. Found in the chaos tier:
    the outage stayed open until the healed spare left the fleet file."""
    store.seed_placements({c.id: c.server for c in FLEET.clients} | {"acme-mining": "spare-jhb1-1"})
    first = runner(store)
    spare = server_target("spare-jhb1-1")
    assert spare in {c.target_id for c in first.checks()}  # it hosts a client
    dead = {spare, client_target("acme-mining")}
    results, now = cycles_of_checks(first, T0, FLEET.timing.outage_threshold + 20, dead)
    [found] = declared(results)
    assert found.incident.scope["servers"] == ["spare-jhb1-1"]
    first.flush_minutes()
    place = store.placement("acme-mining")
    assert place is not None
    store.move_client("acme-mining", "app-jhb1-1", place.version, reason="failover")

    second = runner(store)  # the next run: the spare hosts nothing now
    assert "spare-jhb1-1" in second.graph.witnesses
    assert spare in {c.target_id for c in second.checks()}
    results, now = cycles_of_checks(second, now, 60, {spare})
    assert not [i for r_ in results for i in r_.recovered]  # still dead: still open
    assert not declared(results)  # and an idle spare opens nothing of its own
    results, now = cycles_of_checks(second, now, 60, set())  # healed
    assert [i.id for r_ in results for i in r_.recovered] == [found.incident.id]
    after = store.incident(found.incident.id)
    assert after is not None and after.state == "recovered"


def test_an_idle_spare_down_opens_one_non_paging_incident_until_it_answers(store: Store) -> None:
    """No client is affected, so nobody is paged; but the next failover has one spare
    fewer in jhb1, and the operator is told so, once, across a restart of the probe."""
    spare = server_target("spare-jhb1-1")
    first = runner(store)
    assert "spare-jhb1-1" in first.graph.witnesses
    results, now = cycles_of_checks(first, T0, FLEET.timing.outage_threshold + 20, {spare})
    assert not declared(results)
    [opened] = [i for r_ in results for i in r_.spares_down]
    assert (opened.kind, opened.severity, opened.paging) == ("spare-down", "minor", False)
    assert opened.title == "spare spare-jhb1-1 in jhb1 down: a failover has one spare fewer there"
    assert opened.scope["dcs"] == ["jhb1"]
    first.flush_minutes()

    second = runner(store)  # the next period's run: still down, nothing new
    results, now = cycles_of_checks(second, now, 30, {spare})
    assert not [i for r_ in results for i in [*r_.spares_down, *r_.recovered]]
    results, now = cycles_of_checks(second, now, 60, set())  # it answers again
    assert [i.id for r_ in results for i in r_.recovered] == [opened.id]
    after = store.incident(opened.id)
    assert after is not None and after.state == "recovered"
    assert "spare spare-jhb1-1 answers again" in store.timeline(opened.id)[-1].message
    assert store.incidents(kind="spare-down") == [after]


def test_a_spare_of_a_dc_that_is_down_is_named_by_the_dc_outage_alone(store: Store) -> None:
    r = runner(store)
    results, _ = cycles_of_checks(
        r, T0, FLEET.timing.outage_threshold + 20, affected(JHB1) | {server_target("spare-jhb1-1")}
    )
    assert [d.outage.key for d in declared(results)] == ["outage:dc:jhb1"]
    assert not [i for r_ in results for i in r_.spares_down]


def test_a_probe_cycling_slower_than_its_interval_still_declares_the_dc_once(
    store: Store,
) -> None:
    """Each cycle 4 intervals apart (a loaded machine), more than the policy's gap of 3:
    the probe is still looking, so failure runs go on and the DC is one outage, within
    the threshold and a cycle or two (the gap measured against the probe's own cadence)."""
    slow = 4 * STEP
    assert slow > (runner(store).policy.max_gap or timedelta(0))
    clock = Clock(runner(store), step=slow)
    clock.run(5 * slow.total_seconds())
    cut = clock.now
    results = clock.run(FLEET.timing.outage_threshold + 3 * slow.total_seconds(), affected(JHB1))
    found = declared(results)
    assert [d.incident.dedupe_key for d in found] == ["outage:dc:jhb1"]
    assert (
        found[0].incident.opened_at - cut
        <= timedelta(seconds=FLEET.timing.outage_threshold) + 2 * slow
    )
    assert len(store.incidents()) == 1


def test_a_probe_that_stalls_starts_the_failure_run_again(store: Store) -> None:
    """A stall far longer than the recent cycles is the probe not looking: failures
    before and after it are not one continuous run."""
    clock = Clock(runner(store))
    clock.run(60)
    failing = affected(JHB1)
    clock.run(100, failing)  # pending, not yet the 180 s threshold
    clock.now += timedelta(seconds=60)  # no cycle for 60 s (> 3 cycles of 10 s)
    resumed = clock.now
    assert declared(clock.run(170, failing)) == []  # 100 + 60 + 170 > 180: a new run
    found = declared(clock.run(30, failing))
    assert [d.incident.dedupe_key for d in found] == ["outage:dc:jhb1"]
    assert found[0].incident.opened_at - resumed >= timedelta(seconds=180)
