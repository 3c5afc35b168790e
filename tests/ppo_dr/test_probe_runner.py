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

from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.probe.checks import HttpCheck
from ppo_dr.probe.graph import client_target, server_target
from ppo_dr.probe.runner import (
    ESCALATION_STARTED,
    HEARTBEAT_TARGET,
    OUTAGE_KIND,
    SILENT_KIND,
    CycleResult,
    Declared,
    ProbeRunner,
    check_probe_silence,
    probe_checks,
)
from ppo_dr.probe.state import Observation
from ppo_dr.store import Store

FLEET = load_fleet(Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml")
T0 = datetime(2026, 11, 30, 6, 0, 0, tzinfo=UTC)
STEP = timedelta(seconds=FLEET.timing.probe_interval)
JHB1 = ("app-jhb1-1", "app-jhb1-2")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'state.db'}") as opened:
        opened.upgrade()
        yield opened


def targets(fleet: Fleet) -> list[str]:
    return [c.target_id for c in probe_checks(fleet, {})]


def affected(servers: Iterable[str]) -> set[str]:
    down = set(servers)
    graph_clients = {c.id for c in FLEET.clients if c.server in down}
    return {server_target(s) for s in down} | {client_target(c) for c in graph_clients}


class Clock:
    """Runs cycles every probe interval; *failing* targets fail, the rest answer."""

    def __init__(self, runner: ProbeRunner, start: datetime = T0) -> None:
        self.runner = runner
        self.now = start

    def run(self, seconds: float, failing: set[str] = frozenset()) -> list[CycleResult]:  # type: ignore[assignment]
        out = []
        end = self.now + timedelta(seconds=seconds)
        while self.now < end:
            obs = [
                Observation(
                    t, t not in failing, 5.0, "connect: refused" if t in failing else "ok", self.now
                )
                for t in targets(FLEET)
            ]
            out.append(self.runner.cycle(obs, now=self.now))
            self.now += STEP
        return out


def runner(store: Store, run_id: str = "run-1") -> ProbeRunner:
    r = ProbeRunner(FLEET, store, flow_run_id=None)
    r.seed(now=T0)
    return r


def declared(results: list[CycleResult]) -> list[Declared]:
    return [d for r in results for d in r.declared]


def test_checks_cover_servers_and_clients_health() -> None:
    checks = probe_checks(FLEET, {})
    ids = [c.target_id for c in checks]
    assert ids.count("server:app-jhb1-1") == 1
    assert len([i for i in ids if i.startswith("client:")]) == len(FLEET.clients)
    acme = next(c for c in checks if c.target_id == "client:acme-mining")
    assert isinstance(acme, HttpCheck) and acme.url == "https://acme-mining.ppo.example/health"
    via_door = probe_checks(FLEET, {}, front_door="http://127.0.0.1:9/")
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
    runner(store).heartbeat(T0 - timedelta(minutes=10))
    incident, created = check_probe_silence(store, silent_after, now=T0)
    assert created and incident is not None and incident.kind == SILENT_KIND and incident.paging
    again, created = check_probe_silence(store, silent_after, now=T0 + timedelta(minutes=1))
    assert again is not None and again.id == incident.id and not created
    r = runner(store)
    r.heartbeat(T0 + timedelta(minutes=2))
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
