"""Hostile and unknown parameters thrown at the runbooks themselves, as a deployment or
a run from the UI would pass them (the CLI's own checks are not in the way): every run
fails with a message naming what was wrong, and the store, the state directory and
the fleet file are byte-for-byte what they were.

The fleet is ``examples/fleet.yaml`` with every server on 127.0.0.1 at a port nothing
listens on, the outbox for channels and a SQLite store, so a refusal that came too
late (after a connection, a page or a provisioned server) would show, and the
loopback guard fails the test if anything reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.drain import drain
from flows.drill import dr_drill
from flows.escalation import escalation
from flows.failover import failover
from flows.mirror import mirror_server
from flows.probe import probe_watchdog
from flows.rebalance import rebalance
from ppo_dr.failover.plan import FleetState, Scope, Target, plan_failover
from ppo_dr.failover.plan_json import with_id
from ppo_dr.inventory import load_fleet
from tests.hostile.fleets import loopback_example, store_with_an_incident
from tests.netguard import loopback_guard
from tests.ppo_dr.failover.fleets import NOW, mirrored

pytestmark = [pytest.mark.prefect, pytest.mark.timeout(240)]

#: Shell, path, whitespace, NUL and a 10 kB string: what an id parameter must refuse.
HOSTILE = ["a;rm -rf /", "../../etc", "A B", "a\x00b", "a" * 10_240]


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example fleet on 127.0.0.1 (nothing listening), outbox channels, no store URL."""
    doc = loopback_example()
    doc["channels"] = {"outbox": str(tmp_path_factory.mktemp("outbox") / "outbox.jsonl")}
    doc.pop("store")
    path = tmp_path_factory.mktemp("hostile-fleet") / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated store with one open incident (#1) and the example's placements."""
    return store_with_an_incident(tmp_path_factory.mktemp("hostile-flow-store") / "state.db")


Snapshot = Callable[[], dict[str, Any]]


@pytest.fixture
def snapshot(
    prefect_api: str,
    template: Path,
    fleet_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Snapshot]:
    """A fresh store and state directory; returns everything a run could have changed."""
    db = tmp_path / "state.db"
    db.write_bytes(template.read_bytes())
    home = tmp_path / "home"
    home.mkdir()
    outbox = Path(yaml.safe_load(fleet_file.read_text())["channels"]["outbox"])
    monkeypatch.setenv("PPO_DR_DB_URL", f"sqlite:///{db}")
    monkeypatch.setenv("PPO_DR_HOME", str(home))
    monkeypatch.setenv("PPO_DR_FLEET", str(fleet_file))

    def state() -> dict[str, Any]:
        with sqlite3.connect(db) as conn:
            rows = list(conn.iterdump())
        files = {
            str(p.relative_to(home)): p.read_bytes() if p.is_file() else b"dir"
            for p in sorted(home.rglob("*"))
        }
        return {
            "store": rows,
            "home": files,
            "fleet": hashlib.sha256(fleet_file.read_bytes()).hexdigest(),
            "outbox": outbox.read_bytes() if outbox.exists() else b"",
        }

    with loopback_guard(monkeypatch):
        yield state


def _refused(snapshot: Snapshot, flow: Any, says: str, **params: Any) -> None:
    """Run *flow* with *params*: it must fail naming *says*, and change nothing."""
    before = snapshot()
    state = flow(**params, return_state=True)
    if inspect.isawaitable(state):
        state = asyncio.run(state)
    assert state.is_failed(), (params, state)
    message = state.message or ""
    assert says in message, (params, message)
    assert "Traceback" not in message and len(message) < 2_000, message[:2_000]
    after = snapshot()
    for part, value in before.items():
        assert after[part] == value, f"{flow.name}({params}) changed the {part}"


ID_RULE = "does not match id syntax"
SERVER = {"server": "app-jhb1-1"}

#: (flow, hostile value -> parameters): every id a runbook takes as a parameter.
ID_PARAMETERS: list[tuple[Any, str, Callable[[str], dict[str, Any]]]] = [
    (mirror_server, "server_id", lambda v: {"server_id": v}),
    (mirror_server, "clients", lambda v: {"server_id": "app-jhb1-1", "clients": [v]}),
    (failover, "clients", lambda v: {"clients": [v]}),
    (failover, "server", lambda v: {"server": v}),
    (failover, "dc", lambda v: {"dc": v}),
    (failover, "to_server", lambda v: {**SERVER, "to_server": v}),
    (failover, "to_dc", lambda v: {**SERVER, "to_dc": v}),
    (failover, "clients", lambda v: {"clients": [v], "mode": "planned"}),
    (failover, "server", lambda v: {"server": v, "mode": "planned"}),
    (drain, "server", lambda v: {"server": v}),
    (drain, "to_dc", lambda v: {**SERVER, "to_dc": v}),
    (drain, "to_server", lambda v: {**SERVER, "to_server": v}),
    (dr_drill, "clients", lambda v: {"clients": [v]}),
    (dr_drill, "dc", lambda v: {"dc": v}),
    (rebalance, "dc", lambda v: {"dc": v}),
]  # fmt: skip


#: Each parameter gets one hostile value, in turn, so every value meets three
#: parameters (the rule itself is tested with all of them in tests/ppo_dr/test_ids.py).
CASES = [(f, p, HOSTILE[i % len(HOSTILE)]) for i, (f, _, p) in enumerate(ID_PARAMETERS)]
CASE_IDS = [
    f"{f.name}-{n}-{HOSTILE[i % len(HOSTILE)][:8]!r}" for i, (f, n, _) in enumerate(ID_PARAMETERS)
]


@pytest.mark.parametrize(("flow", "params", "hostile"), CASES, ids=CASE_IDS)
def test_a_hostile_id_parameter_fails_the_run_and_changes_nothing(
    snapshot: Snapshot, flow: Any, params: Callable[[str], dict[str, Any]], hostile: str
) -> None:
    _refused(snapshot, flow, ID_RULE, **params(hostile))


#: (flow, parameters, what the message must name): well-formed ids nobody knows.
UNKNOWN: list[tuple[Any, dict[str, Any], str]] = [
    (mirror_server, {"server_id": "app-nowhere-9"}, "app-nowhere-9"),
    (mirror_server, {"server_id": "app-jhb1-1", "clients": ["no-such-client"]}, "no-such-client"),
    (failover, {"clients": ["no-such-client"]}, "no-such-client"),
    (failover, {"server": "app-nowhere-9"}, "app-nowhere-9"),
    (failover, {"dc": "nowhere"}, "nowhere"),
    (failover, {"server": "app-jhb1-1", "to_server": "app-nowhere-9"}, "app-nowhere-9"),
    (failover, {"server": "app-jhb1-1", "to_dc": "nowhere"}, "nowhere"),
    (failover, {"server": "app-jhb1-1", "to_country": "XX"}, "XX"),
    (failover, {"server": "app-jhb1-1", "incident_id": 999}, "999"),
    (failover, {"plan_json": "{}", "approve": True}, "plan"),
    (failover, {"plan_json": "not json", "approve": True}, "plan"),
    (drain, {"server": "app-nowhere-9"}, "app-nowhere-9"),
    (drain, {"server": "app-jhb1-1", "to_dc": "nowhere"}, "nowhere"),
    (dr_drill, {"clients": ["no-such-client"]}, "no-such-client"),
    (dr_drill, {"dc": "nowhere"}, "nowhere"),
    (rebalance, {"dc": "nowhere"}, "nowhere"),
    (rebalance, {"plan_json": '{"plan_id": "../../x"}', "approve": True}, "plan"),
    (escalation, {"incident_id": 999}, "999"),
    (escalation, {"incident_id": -1}, "incident_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("flow", "params", "says"), UNKNOWN, ids=[f"{f.name}-{p}"[:60] for f, p, _ in UNKNOWN]
)
def test_an_unknown_id_fails_the_run_naming_it_and_changes_nothing(
    snapshot: Snapshot, flow: Any, params: dict[str, Any], says: str
) -> None:
    _refused(snapshot, flow, says, **params)


def _plan_json(fleet_file: Path, **move_changes: Any) -> str:
    """A well-formed emergency plan of app-jhb1-1 with its first move changed, the
    plan id made anew from the content (so only the changed field can refuse it)."""
    fleet = load_fleet(fleet_file)
    state = FleetState(fleet=fleet, placements={}, snapshots=mirrored(fleet), now=NOW)
    plan = plan_failover(state, Scope(server="app-jhb1-1"), Target())
    first, *rest = plan.moves
    return with_id(replace(plan, moves=(replace(first, **move_changes), *rest))).to_json()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"snapshot_id": "../../../etc/passwd"}, "snapshot_id"),
        ({"snapshot_id": "2026-11-30T05-00-00Z\x00"}, "snapshot_id"),
        ({"to_server": "a" * 10_240}, "to_server"),
        ({"source_mirror": "mirror-nowhere-9"}, "mirror-nowhere-9"),
    ],
    ids=["snapshot dot-dot", "snapshot NUL", "10 kB server", "unknown mirror"],
)
def test_a_hostile_plan_is_refused_before_any_step(
    snapshot: Snapshot, fleet_file: Path, change: dict[str, Any], says: str
) -> None:
    plan_json = _plan_json(fleet_file, **change)
    _refused(snapshot, failover, says, plan_json=plan_json, approve=True)


def test_a_wrongly_typed_parameter_is_refused_before_the_run(snapshot: Snapshot) -> None:
    _refused(snapshot, escalation, "incident_id", incident_id="1; DROP TABLE incidents")
    _refused(snapshot, probe_watchdog, "silent_after_s", silent_after_s="soon")
