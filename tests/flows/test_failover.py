"""The failover runbook, run for real: a lab of its own per test (it kills servers), the
lab's SSH servers, front door and workload, and Prefect's test harness.

Each test starts a small lab (6 clients, a few MB, fast timings), mirrors every app
server once, breaks something, runs the flow and checks the outcome through the front
door, the lab's workload log and the store's ledger. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import contextvars
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.failover import failover
from flows.outcome import run_result
from ppo_dr.failover.fleet_state import fleet_state
from ppo_dr.failover.plan import Plan, Scope, Target, plan_failover
from ppo_dr.failover.steps import JOURNAL, switch_reason
from ppo_dr.fleet_access import client_ids_on, client_path
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.lost_writes import record_lost_writes
from ppo_dr.lab.supervisor import Lab
from ppo_dr.lab.topology import write_yaml
from ppo_dr.lab.workload import lost_writes, read_acks
from ppo_dr.store import Store
from tests.labs import front_door, mirror_all, own_lab_of_test
from tests.prefect_fixtures import isolated_env, using_api

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
LAB_CLIENTS = 6
LAB_SIZE_MB = 6


@pytest.fixture
def own_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A lab of this test's own, with every app server mirrored once; down at the end."""
    with own_lab_of_test(
        tmp_path, monkeypatch, clients=LAB_CLIENTS, size_mb=LAB_SIZE_MB, settle_s=2.0
    ) as lab:
        yield lab


def make_plan(lab: Lab, scope: Scope, target: Target, mode: str, down: tuple[str, ...]) -> Plan:
    state = fleet_state(lab.fleet_file, down, datetime.now(UTC))
    return plan_failover(state, scope, target, "planned" if mode == "planned" else "emergency")


def journal_on(lab: Lab, fleet: Fleet, client_id: str, server_id: str) -> list[bytes]:
    """The client's journal lines as the server's disk holds them."""
    path = client_path(fleet, client_id, server_id=server_id).lstrip("/")
    return (lab.server_dir(server_id) / "fs" / path / JOURNAL).read_bytes().splitlines()


def batch_runs(plan_id: str) -> list[tuple[Any, set[str]]]:
    """The plan's ``fail-over-clients`` runs, each with the names of its task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["fail-over-clients"]))
        )
        mine = [r for r in runs if r.parameters.get("plan_id") == plan_id]
        return [
            (
                run,
                {
                    t.name
                    for t in client.read_task_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                    )
                },
            )
            for run in mine
        ]


def batch_artifact(plan_id: str, server_id: str) -> str:
    """The data of a batch run's per-client artifact (empty if there is none)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = f"failover-batch-{plan_id}-{server_id}"
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return " ".join(str(a.data) for a in found)


def clients_on(lab: Lab, server_id: str) -> list[str]:
    with Store.open(lab.store_url) as store:
        return [p.client_id for p in store.placements() if p.server_id == server_id]


# --------------------------------------------------------------------------- emergency


@pytest.mark.lab
def test_power_loss_of_an_app_server_fails_its_clients_over(prefect_api: str, own_lab: Lab) -> None:
    lost_server = "app-jhb1-1"
    victims = clients_on(own_lab, lost_server)
    assert victims
    own_lab.break_(lost_server, "power")
    with Store.open(own_lab.store_url) as store:
        incident, _ = store.open_incident(
            "outage", f"server:{lost_server}", f"{lost_server} down", {"server": lost_server}
        )
    started = time.monotonic()
    result = failover(
        server=lost_server, incident_id=incident.id, approve=True, fleet_file=own_lab.fleet_file
    )
    took = time.monotonic() - started
    assert isinstance(result, dict), result
    assert result["state"] == "done" and set(result["moved"]) == set(victims)
    counted = record_lost_writes(own_lab.fleet_file, result["plan_id"])  # the lab's measure
    assert set(counted) == set(victims)

    fleet = load_fleet(own_lab.fleet_file)  # may list a provisioned server now
    with Store.open(own_lab.store_url) as store:
        results = {r.client_id: r for r in store.failover_results(result["plan_id"])}
        timeline = store.timeline(incident.id)
        steps = store.failover_steps(result["plan_id"])
        for client in victims:
            home = result["moved"][client]
            assert home != lost_server
            assert store.placement(client).server_id == home  # type: ignore[union-attr]
            assert front_door(fleet, client) == (200, home)
            r = results[client]
            assert r.outcome == "ok" and r.rto_seconds is not None
            assert 0 < r.rto_seconds <= took + 5  # from the incident's declaration
            assert r.rpo_seconds is not None and r.lost_writes is not None
            # The restored data is the snapshot: every file re-read and compared.
            verify = next(s for s in steps if s.client_id == client and s.step == "verify")
            assert verify.done and verify.data["files"] > 0
            # Writes the lost server acknowledged after the snapshot are the loss, and
            # the ledger's count agrees with the workload's own log.
            acks = own_lab.directory / "workload" / "acks.jsonl"
            journal = journal_on(own_lab, fleet, client, home)
            by_new_home = {
                a["seq"] for a in read_acks(acks) if a["client"] == client and a["server"] == home
            }
            independent = [s for s in lost_writes(acks, client, journal) if s not in by_new_home]
            assert r.lost_writes == len(independent)
    kinds = [e.kind for e in timeline]
    assert "failover-planned" in kinds and "failover-finished" in kinds
    assert all(e.flow_run_id for e in timeline if e.kind.startswith("failover"))
    assert kinds.count("failover-client") == len(victims)
    assert result["mirrored"] and all(v == "ok" for v in result["mirrored"].values())
    # One batch run per target server, each client in exactly one, a task run per step
    # and client inside it.
    runs = batch_runs(result["plan_id"])
    targets = [run.parameters["to_server"] for run, _ in runs]
    assert sorted(targets) == sorted(set(result["moved"].values()))
    for run, task_runs in runs:
        assert run.state.is_completed(), run.state
        for move in run.parameters["moves"]:
            client = move["client_id"]
            assert result["moved"][client] == run.parameters["to_server"]
            for step in ("client", "restore", "verify", "switch", "route", "result"):
                assert f"{step}-{client}" in task_runs, (step, client, task_runs)
    batched = [m["client_id"] for run, _ in runs for m in run.parameters["moves"]]
    assert sorted(batched) == sorted(victims)


# --------------------------------------------------------------------------- planned


@pytest.mark.lab
def test_planned_migration_to_another_country_loses_no_acknowledged_write(
    prefect_api: str, own_lab: Lab
) -> None:
    source = "app-lon1-1"  # GB; its clients also allow ZA
    movers = clients_on(own_lab, source)
    assert movers
    result = failover(
        server=source, to_country="ZA", mode="planned", approve=True, fleet_file=own_lab.fleet_file
    )
    assert isinstance(result, dict), result
    assert result["state"] == "done", result
    fleet = load_fleet(own_lab.fleet_file)
    time.sleep(3.0)  # the workload keeps writing through the front door to the new homes
    acks = own_lab.directory / "workload" / "acks.jsonl"
    record_lost_writes(own_lab.fleet_file, result["plan_id"])
    with Store.open(own_lab.store_url) as store:
        results = {r.client_id: r for r in store.failover_results(result["plan_id"])}
        windows = store.active_maintenance()
    for client in movers:
        home = result["moved"][client]
        assert fleet.dc(fleet.server(home).dc).country == "ZA"
        assert front_door(fleet, client) == (200, home)
        assert results[client].lost_writes == 0
        # Independently: every write acknowledged so far is in the new home's journal
        # (except ones acknowledged after we read it).
        journal = journal_on(own_lab, fleet, client, home)
        newest = max(json.loads(line)["seq"] for line in journal)
        assert [s for s in lost_writes(acks, client, journal) if s <= newest] == []
    assert windows == []  # the maintenance window closed at the end
    # Mirroring follows the placements: the new homes took the clients' snapshots, and
    # the old home's mirror no longer picks them up.
    with Store.open(own_lab.store_url) as store:
        placed = {p.client_id: p.server_id for p in store.placements()}
        for client in movers:
            homes = {s.server_id for s in store.snapshots(client_id=client)}
            assert result["moved"][client] in homes
    assert client_ids_on(fleet, source, placements=placed) == []


# --------------------------------------------------------------------------- rollback


@pytest.mark.lab
def test_a_target_that_fails_mid_restore_is_rolled_back(prefect_api: str, own_lab: Lab) -> None:
    source, target = "app-cpt1-1", "spare-jhb1-1"
    movers = clients_on(own_lab, source)
    plan = make_plan(own_lab, Scope(server=source), Target(server=target), "emergency", ())
    assert [m.to_server for m in plan.moves] == [target] * len(movers)
    with Store.open(own_lab.store_url) as store:
        before = {c: store.placement(c) for c in movers}

    def kill_target_once_restoring() -> None:
        deadline = time.monotonic() + 120
        with Store.open(own_lab.store_url) as store:
            while time.monotonic() < deadline:
                if store.failover(plan.plan_id) is not None and any(
                    s.step == "restore" for s in store.failover_steps(plan.plan_id)
                ):
                    own_lab.break_(target, "power")
                    return
                time.sleep(0.01)

    killer = threading.Thread(target=kill_target_once_restoring)
    killer.start()
    try:
        state = failover(
            plan_json=plan.to_json(), approve=True, fleet_file=own_lab.fleet_file, return_state=True
        )
    finally:
        killer.join()
    assert state.is_failed()
    ((run, task_runs),) = batch_runs(plan.plan_id)  # all onto one target: one run, Failed
    assert run.state.is_failed() and f"not moved to {target}" in run.state.message
    assert {f"rollback-{c}" for c in movers} <= task_runs
    artifact = batch_artifact(plan.plan_id, target)  # its per-client results
    assert all(f'"client": "{c}"' in artifact for c in movers), artifact
    fleet = load_fleet(own_lab.fleet_file)
    with Store.open(own_lab.store_url) as store:
        for client in movers:
            assert store.placement(client).server_id == source  # type: ignore[union-attr]
            assert front_door(fleet, client) == (200, source)
            start = before[client]
            assert start is not None
            moves = [h for h in store.placement_history(client) if h.version > start.version]
            # Any switch that happened was undone: back to the source each time.
            assert len(moves) % 2 == 0 and all(h.to_server == source for h in moves[1::2])
        results = store.failover_results(plan.plan_id)
        assert {r.client_id for r in results} == set(movers)
        assert {r.outcome for r in results} == {"rolled-back"}
        record = store.failover(plan.plan_id)
        assert record is not None and record.state == "failed"
        steps = store.failover_steps(plan.plan_id)
        assert {s.state for s in steps} <= {"failed", "rolled-back"}
    own_lab.heal(target)


# --------------------------------------------------------------------------- crash


@pytest.mark.lab
def test_a_killed_failover_reruns_to_completion_without_restoring_twice(
    prefect_server: str, own_lab: Lab, tmp_path: Path
) -> None:
    """On a real server: the killed run's one-failover slot is freed by the server's
    repossessor once its lease runs out (the test harness runs no such service)."""
    lost_server = "app-jhb1-1"
    own_lab.break_(lost_server, "power")
    plan = make_plan(own_lab, Scope(dc="jhb1"), Target(dc="cpt1"), "emergency", (lost_server,))
    assert len(plan.moves) >= 2, plan.render()
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.to_json())
    code = (
        "import sys; from pathlib import Path; from flows.failover import failover\n"
        "if __name__ == '__main__':\n"
        "    failover(plan_json=Path(sys.argv[1]).read_text(), approve=True,"
        " fleet_file=Path(sys.argv[2]))\n"
    )
    env = isolated_env(PREFECT_API_URL=prefect_server, PPO_DR_HOME=os.environ["PPO_DR_HOME"])
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(plan_file), str(own_lab.fleet_file)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first_switched: str | None = None
    try:
        deadline = time.monotonic() + 180
        with Store.open(own_lab.store_url) as store:
            while first_switched is None and time.monotonic() < deadline:
                assert proc.poll() is None, "the run ended before any client switched"
                if store.failover(plan.plan_id) is not None:
                    done = [
                        s.client_id
                        for s in store.failover_steps(plan.plan_id)
                        if s.step == "switch" and s.done
                    ]
                    first_switched = done[0] if done else None
                time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator dies mid-failover
        proc.wait(timeout=30)
    assert first_switched is not None, "no client switched within the time limit"
    with Store.open(own_lab.store_url) as store:
        finished_before = {
            s.client_id: s.finished_at
            for s in store.failover_steps(plan.plan_id)
            if s.step == "restore" and s.done
        }
        assert store.failover(plan.plan_id).state == "running"  # type: ignore[union-attr]

    with using_api(prefect_server):
        result = failover(plan_json=plan.to_json(), approve=True, fleet_file=own_lab.fleet_file)
    assert isinstance(result, dict), result
    assert result["state"] == "done", result
    fleet = load_fleet(own_lab.fleet_file)
    with Store.open(own_lab.store_url) as store:
        steps = store.failover_steps(plan.plan_id)
        for move in plan.moves:
            client = move.client_id
            restore = [s for s in steps if s.client_id == client and s.step == "restore"]
            assert len(restore) == 1 and restore[0].done
            if client in finished_before:  # restored before the kill: not again
                assert restore[0].finished_at == finished_before[client]
                assert restore[0].attempts == 1
            # One move per client, by this plan, never back and forth.
            moves = [
                h
                for h in store.placement_history(client)
                if h.reason == switch_reason(plan.plan_id)
            ]
            assert [(h.from_server, h.to_server) for h in moves] == [
                (move.from_server, move.to_server)
            ]
            assert front_door(fleet, client) == (200, move.to_server)
    assert result["moved"][first_switched] == next(
        m.to_server for m in plan.moves if m.client_id == first_switched
    )


# --------------------------------------------------------------------------- approval


@pytest.mark.lab
def test_a_run_waits_for_approval_from_the_terminal(
    prefect_api: str, own_lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)  # for the CLI
    client = clients_on(own_lab, "app-jhb1-2")[0]
    plan = make_plan(
        own_lab, Scope(clients=(client,)), Target(server="spare-cpt1-1"), "emergency", ()
    )
    cli = CliRunner()

    def run_in_thread() -> tuple[threading.Thread, list[Any]]:
        outcome: list[Any] = []
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=lambda: outcome.append(
                context.run(
                    failover,
                    plan_json=plan.to_json(),
                    fleet_file=own_lab.fleet_file,
                    return_state=True,
                )
            ),
            daemon=True,
        )
        thread.start()
        return thread, outcome

    def wait_paused() -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

        wanted = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"plan:{plan.plan_id}"]))
        deadline = time.monotonic() + 60
        with get_client(sync_client=True) as prefect:
            while time.monotonic() < deadline:
                runs = prefect.read_flow_runs(flow_run_filter=wanted)
                if any(r.state is not None and r.state.is_paused() for r in runs):
                    return
                time.sleep(0.2)
        raise AssertionError("the failover run never paused for approval")

    # Refused: the run ends having done nothing.
    thread, outcome = run_in_thread()
    wait_paused()
    refused = cli.invoke(app, ["failover", "approve", plan.plan_id, "--by", "bob", "--refuse"])
    thread.join(timeout=120)
    assert refused.exit_code == 0, refused.output
    assert "refused, resume accept" in refused.output
    assert outcome and outcome[0].is_completed() and "refused by bob" in outcome[0].message
    with Store.open(own_lab.store_url) as store:
        assert store.placement(client).server_id == "app-jhb1-2"  # type: ignore[union-attr]
        assert store.failover(plan.plan_id) is None

    # Approved: it carries the plan out.
    thread, outcome = run_in_thread()
    wait_paused()
    approved = cli.invoke(
        app, ["failover", "approve", plan.plan_id, "--by", "anna", "--note", "go"]
    )
    thread.join(timeout=240)
    assert approved.exit_code == 0, approved.output
    assert outcome and outcome[0].is_completed(), outcome
    fleet = load_fleet(own_lab.fleet_file)
    assert front_door(fleet, client) == (200, "spare-cpt1-1")
    # Nobody waits for plan ids that do not exist.
    none = cli.invoke(app, ["failover", "approve", "0123456789abcdef", "--by", "anna"])
    assert none.exit_code == 2 and "no failover run is waiting" in none.output


# --------------------------------------------------------------------------- provisioning


def plan_onto_a_new_server(lab: Lab) -> tuple[str, Plan, str]:
    """A client of app-jhb1-2 planned to cpt1 whose servers count as down: the plan
    provisions one there. (client, plan, the new server's id)."""
    client = clients_on(lab, "app-jhb1-2")[0]
    plan = make_plan(
        lab,
        Scope(clients=(client,)),
        Target(dc="cpt1"),
        "emergency",
        ("app-cpt1-1", "spare-cpt1-1"),
    )
    assert len(plan.provisions) == 1, plan.render()
    return client, plan, plan.provisions[0].server_id


@pytest.mark.lab
def test_a_client_moves_to_a_server_provisioned_for_the_plan(
    prefect_api: str, own_lab: Lab
) -> None:
    client, plan, new = plan_onto_a_new_server(own_lab)
    assert [m.to_server for m in plan.moves] == [new]
    result = failover(plan_json=plan.to_json(), approve=True, fleet_file=own_lab.fleet_file)
    assert isinstance(result, dict), result
    assert result["moved"] == {client: new} and result["released"] == []
    fleet = load_fleet(own_lab.fleet_file)
    assert fleet.server(new).dc == "cpt1" and fleet.server(new).role == "app"
    assert front_door(fleet, client) == (200, new)
    assert result["mirrored"] == {new: "ok"}
    assert result["scheduled"] == {}  # not deployed per server: mirror-fleet mirrors it
    # A rerun of the finished plan provisions nothing new and moves nobody again.
    again = failover(plan_json=plan.to_json(), approve=True, fleet_file=own_lab.fleet_file)
    assert isinstance(again, dict) and again["moved"] == {client: new}
    with Store.open(own_lab.store_url) as store:
        history = store.placement_history(client)
    assert [h.to_server for h in history] == ["app-jhb1-2", new]


def mirror_deployment(server_id: str) -> Any:
    """``mirror-server/mirror-<server_id>`` as the API has it, or None."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(f"mirror-server/mirror-{server_id}")
        except ObjectNotFound:
            return None


@pytest.mark.lab
def test_a_provisioned_server_gets_a_scheduled_mirror_where_each_server_has_one(
    prefect_api: str, own_lab: Lab
) -> None:
    """Deployed per server (as ``ppo-dr deploy`` does), the failover gives the server it
    provisioned its own scheduled mirror on its DC's pool: before, that server was
    mirrored once by the failover and then not again until the next deploy."""
    from prefect.client.orchestration import get_client

    from deployments.deploy import ensure_work_pools
    from deployments.registry import work_pools
    from flows.mirror import MIRROR_DC_SLOTS
    from flows.mirror_schedule import MIRROR_QUEUE, mirror_of_server_deployment

    client, plan, new = plan_onto_a_new_server(own_lab)
    fleet = load_fleet(own_lab.fleet_file)
    made_pools = [name for name, what in ensure_work_pools(work_pools(fleet)) if what == "created"]
    try:
        mirror_of_server_deployment(fleet, "app-jhb1-2").apply(work_pool_name="dc-jhb1")
        assert mirror_deployment(new) is None
        result = failover(plan_json=plan.to_json(), approve=True, fleet_file=own_lab.fleet_file)
        assert isinstance(result, dict), result
        assert result["moved"] == {client: new} and result["scheduled"] == {new: "created"}
        made = mirror_deployment(new)
        assert made is not None
        assert (made.work_pool_name, made.work_queue_name) == ("dc-cpt1", MIRROR_QUEUE)
        assert made.parameters == {"server_id": new}
        assert [s.schedule.cron for s in made.schedules] == [fleet.timing.mirror_cron]
        assert made.paused is False
        with get_client(sync_client=True) as api:
            queue = api.read_work_queue_by_name(MIRROR_QUEUE, work_pool_name="dc-cpt1")
        assert queue.concurrency_limit == MIRROR_DC_SLOTS
        # A rerun finds it there and leaves it as it is (an operator may have paused it).
        again = failover(plan_json=plan.to_json(), approve=True, fleet_file=own_lab.fleet_file)
        assert isinstance(again, dict) and again["scheduled"] == {new: "present"}
        assert mirror_deployment(new).id == made.id
    finally:  # the harness is shared: other tests expect no per-server deployment, and
        # the probe raises pool-unattended for a pool without a worker (seen in CI)
        with get_client(sync_client=True) as api:
            for server_id in ("app-jhb1-2", new):
                found = mirror_deployment(server_id)
                if found is not None:
                    api.delete_deployment(found.id)
            for name in made_pools:
                api.delete_work_pool(name)


# --------------------------------------------------------------------------- a whole DC


@pytest.mark.lab
def test_loss_of_a_whole_data_centre_restores_from_the_off_site_mirror(
    prefect_api: str, own_lab: Lab
) -> None:
    victims = [c for s in ("app-jhb1-1", "app-jhb1-2") for c in clients_on(own_lab, s)]
    own_lab.break_("jhb1", "power")  # both app servers, the on-site mirror and the spare
    result = failover(dc="jhb1", approve=True, fleet_file=own_lab.fleet_file)
    assert isinstance(result, dict), result
    assert set(result["moved"]) == set(victims) and result["state"] == "done"
    fleet = load_fleet(own_lab.fleet_file)
    with Store.open(own_lab.store_url) as store:
        results = {r.client_id: r for r in store.failover_results(result["plan_id"])}
    for client in victims:
        home = result["moved"][client]
        assert fleet.server(home).dc != "jhb1"
        assert fleet.dc(fleet.server(home).dc).country in fleet.client(client).countries
        assert results[client].source_mirror == "mirror-cpt1-1"  # jhb1's own mirror is gone
        assert front_door(fleet, client) == (200, home)


@pytest.mark.lab
def test_clients_whose_only_country_has_no_surviving_data_centre_are_refused(
    prefect_api: str, own_lab: Lab
) -> None:
    """jhb1 lost and cpt1 left with only its mirror (static: nothing can be started
    there): the jhb1 clients' data is on mirror-cpt1-1, but they allow only ZA and ZA can
    host nobody, so they are refused for residency. Then cpt1's mirror goes too: refused
    again, now because no mirror holding them is left."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    data = yaml.safe_load(own_lab.fleet_file.read_text(encoding="utf-8"))
    for dc in data["data_centres"]:
        if dc["id"] == "cpt1":
            dc["provider"] = "static"
    write_yaml(own_lab.fleet_file, data)
    fleet = load_fleet(own_lab.fleet_file)
    on_jhb1 = sorted(c for s in ("app-jhb1-1", "app-jhb1-2") for c in clients_on(own_lab, s))
    londoner = next(c.id for c in fleet.clients if c.server == "app-lon1-1")
    assert on_jhb1 and all(tuple(fleet.client(c).countries) == ("ZA",) for c in on_jhb1)
    assert set(fleet.client(londoner).countries) == {"GB", "ZA"}
    with Store.open(own_lab.store_url) as store:
        before = {c.id: store.placement(c.id) for c in fleet.clients}
        incident, _ = store.open_incident("outage", "dc:jhb1", "jhb1 down", {"dc": "jhb1"})
    own_lab.break_("jhb1", "power")
    own_lab.break_("app-cpt1-1", "power")
    own_lab.break_("spare-cpt1-1", "power")

    def refuse_all(expected: str) -> tuple[str, str]:
        """Fail over jhb1: nobody moves; (plan id, the run's message), checked."""
        state = failover(
            dc="jhb1", incident_id=incident.id, approve=True, fleet_file=own_lab.fleet_file,
            return_state=True,
        )  # fmt: skip
        assert state.is_failed(), state
        message = state.message or ""
        assert "moves nobody" in message, message
        for client in on_jhb1:
            assert f"{client}: {expected}" in message, message
        return message.split("plan ", 1)[1].split()[0], message

    plan_id, message = refuse_all("no allowed target (allowed countries: ZA)")
    assert "app-cpt1-1 is down" in message and "spare-cpt1-1 is down" in message
    assert "data centre cpt1 (static) cannot provision" in message
    with get_client(sync_client=True) as prefect:
        (artifact,) = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"failover-plan-{plan_id}"]))
        )
    assert "refused (escalate):" in str(artifact.data)
    assert all(f"  {c}: no allowed target" in str(artifact.data) for c in on_jhb1)
    with Store.open(own_lab.store_url) as store:
        assert store.failover(plan_id) is None  # nothing begun, nothing restored
        assert store.failover_steps(plan_id) == []
        (planned,) = [e for e in store.timeline(incident.id) if e.kind == "failover-planned"]
        assert planned.flow_run_id
        assert sorted(planned.data["refusals"]) == on_jhb1
        for client in on_jhb1:
            assert f"{client}: no allowed target" in planned.message, planned.message
        assert {c.id: store.placement(c.id) for c in fleet.clients} == before

    # A scope that mixes them: the Londoner (GB or ZA) moves within GB; the ZA client
    # is refused, and only the Londoner is restored anywhere.
    za_client = on_jhb1[0]
    state = failover(
        clients=[za_client, londoner],
        approve=True,
        fleet_file=own_lab.fleet_file,
        return_state=True,
    )
    # Not all it was asked: Failed, with the per-client results as its data.
    assert state.is_failed() and "1 of 1 moved; 1 refused" in (state.message or ""), state
    result = run_result(state)
    assert isinstance(result, dict), result
    assert result["state"] == "partial", result
    assert set(result["moved"]) == {londoner}
    assert load_fleet(own_lab.fleet_file).server(result["moved"][londoner]).dc == "lon1"
    assert list(result["refused"]) == [za_client]
    assert "allowed countries: ZA" in result["refused"][za_client]
    with Store.open(own_lab.store_url) as store:
        assert {s.client_id for s in store.failover_steps(result["plan_id"])} == {londoner}
        assert store.placement(za_client) == before[za_client]

    # The rest of cpt1 goes too: no mirror holding the jhb1 clients is left either.
    own_lab.break_("mirror-cpt1-1", "power")
    _, message = refuse_all("no verified snapshot on a reachable mirror")
    assert "mirror-cpt1-1 is down" in message and "mirror-jhb1-1 is down" in message
    with Store.open(own_lab.store_url) as store:
        assert all(store.placement(c) == before[c] for c in on_jhb1)
    own_lab.heal("jhb1")
    own_lab.heal("cpt1")


# --------------------------------------------------------------------------- the CLI


def test_failover_run_refuses_bad_input_before_reaching_any_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    cli = CliRunner()
    edited = tmp_path / "plan.json"
    edited.write_text('{"format": "ppo-dr-failover-plan", "version": 1, "plan_id": "x"}')
    cases = [
        (["failover", "run", "--plan", str(edited)], "plan"),
        (["failover", "run", "--plan", str(tmp_path / "missing.json")], "cannot read plan"),
        (["failover", "run", "--server", "a", "--dc", "b"], "exactly one scope"),
        (["failover", "run", "--server", "app-1", "--mode", "yolo"], "--mode 'yolo' unknown"),
        (["failover", "run", "--server", "app-1"], "no Prefect API known"),
        (["failover", "approve", "../../etc", "--by", "x"], "plan id"),
    ]
    for argv, message in cases:
        result = cli.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert message in result.output, (argv, result.output)


@pytest.mark.lab
def test_a_server_provisioned_for_a_client_that_failed_is_released(
    prefect_api: str, own_lab: Lab
) -> None:
    client, plan, new = plan_onto_a_new_server(own_lab)
    # Every mirror holding the client is lost after planning: the restore cannot succeed.
    mirrors = {m for move in plan.moves for m in (move.source_mirror, *move.fallback_mirrors)}
    for mirror in sorted(m for m in mirrors if m):
        own_lab.break_(mirror, "power")
    try:
        state = failover(
            plan_json=plan.to_json(), approve=True, fleet_file=own_lab.fleet_file, return_state=True
        )
    finally:
        for mirror in sorted(m for m in mirrors if m):
            own_lab.heal(mirror)
    assert state.is_failed()
    fleet = load_fleet(own_lab.fleet_file)
    assert new not in {s.id for s in fleet.servers}  # provisioned, unused, released
    assert front_door(fleet, client) == (200, "app-jhb1-2")
    with Store.open(own_lab.store_url) as store:
        (result,) = store.failover_results(plan.plan_id)
        assert result.outcome == "rolled-back" and "mirror" in result.detail


# --------------------------------------------------------------------------- death


@pytest.mark.lab
def test_a_failover_run_that_dies_is_on_the_timeline_and_pages(
    prefect_api: str, lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments.prefect_api import approve_plan
    from ppo_dr.errors import PermanentError
    from ppo_dr.failover.death import DEATH_KIND

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    mirror_all(lab)  # a verified snapshot to plan from
    fleet = load_fleet(lab.fleet_file)
    client = fleet.clients[0]
    with Store.open(lab.store_url) as store:
        incident, _ = store.open_incident(
            "client-down", f"test-death-{time.time_ns()}", "test outage", {"clients": [client.id]}
        )
    # Nobody approves: the run times out while paused (as a lost lease ended it in #15).
    state = failover.with_options(timeout_seconds=15)(
        clients=[client.id], incident_id=incident.id, fleet_file=lab.fleet_file, return_state=True
    )
    assert state.is_failed(), state
    with Store.open(lab.store_url) as store:
        died = [e for e in store.timeline(incident.id) if e.kind == DEATH_KIND]
        assert len(died) == 1 and "ended TimedOut" in died[0].message, died
        assert died[0].flow_run_id == str(state.state_details.flow_run_id)
        pages = [n for n in store.notices(incident.id) if "failover-died" in n.step]
        assert pages and all(n.status == "sent" for n in pages), pages
        assert {n.channel for n in pages} >= {"sms", "email"}
        planned = [e for e in store.timeline(incident.id) if e.kind == "failover-planned"]
        plan_id = planned[0].data["plan_id"]
    # Approving the dead run's plan says so, with the run's state.
    with pytest.raises(PermanentError, match=r"its run failover-.* ended TimedOut: .*timeout"):
        approve_plan(plan_id, {"approve": True, "by": "anna", "note": ""}, wait_s=1)


# --------------------------------------------------------------------------- seeding


@pytest.mark.lab
def test_a_seed_waits_for_the_new_homes_repository_lock(prefect_api: str, own_lab: Lab) -> None:
    """A mirror run of the new home (the every-minute schedule after a failover) holds
    its repository's lock when the seed starts: the seed waits and then succeeds."""
    from ppo_dr.fleet_access import FleetAccess, mirror_plan, repo_path
    from ppo_dr.mirror.lock import RepositoryLock

    client = clients_on(own_lab, "app-jhb1-2")[0]
    plan = make_plan(
        own_lab, Scope(clients=(client,)), Target(server="spare-cpt1-1"), "emergency", ()
    )
    move = plan.moves[0]
    fleet = load_fleet(own_lab.fleet_file)
    mirror_id = (
        move.new_mirrors[0]
        if move.new_mirrors
        else mirror_plan(fleet, move.to_server, {client: move.to_server})[0][0].id
    )
    held_s = 12.0
    with FleetAccess(fleet) as access:
        lock = RepositoryLock(
            access.remote(mirror_id),
            repo_path(fleet.server(mirror_id), move.to_server),
            "test: a mirror run of the new home",
        )
        lock.acquire()
        releaser = threading.Timer(held_s, lock.release)
        releaser.start()
        started = time.monotonic()
        try:
            state = failover(
                plan_json=plan.to_json(),
                approve=True,
                fleet_file=own_lab.fleet_file,
                return_state=True,
            )
        finally:
            releaser.join()
    assert state.is_completed(), state
    assert time.monotonic() - started > held_s
    with Store.open(own_lab.store_url) as store:
        (seed,) = [s for s in store.failover_steps(plan.plan_id, client) if s.step == "seed"]
        assert seed.done and seed.attempts >= 2, seed  # locked first, then seeded
        copies = seed.data["copies"]
        assert mirror_id in {c["mirror"] for c in copies}, copies


@pytest.mark.lab
def test_a_new_homes_mirror_skipped_by_its_scheduled_run_is_tried_again(
    prefect_api: str, own_lab: Lab
) -> None:
    """A mirror run of the new home holds its slot when the failover mirrors it: the
    failover's run is skipped (Cancelled), tried again, and the failover Completes (a
    skip once ended a DC loss Failed with every client healthy)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from flows.mirror import mirror_limits, server_limit
    from ppo_dr.mirror.runbook import store_url
    from tasks.mirror import ensure_mirror_limits
    from tasks.slots import leased_slot

    client = clients_on(own_lab, "app-jhb1-2")[0]
    plan = make_plan(
        own_lab, Scope(clients=(client,)), Target(server="spare-cpt1-1"), "emergency", ()
    )
    home = plan.moves[0].to_server
    ensure_mirror_limits(mirror_limits(load_fleet(own_lab.fleet_file), [home]))
    skipped = threading.Event()

    def home_runs() -> list[Any]:
        with get_client(sync_client=True) as api:
            runs = api.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["mirror-server"]))
            )
        return [r for r in runs if r.parameters.get("server_id") == home]

    url = store_url(load_fleet(own_lab.fleet_file))

    def hold_the_slot_until_skipped() -> None:  # as the new home's scheduled run would
        with leased_slot(server_limit(home), timeout_s=30, store_url=url):
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                if any(r.state is not None and r.state.is_cancelled() for r in home_runs()):
                    skipped.set()
                    return
                time.sleep(0.5)

    holder = threading.Thread(target=contextvars.copy_context().run,
                              args=(hold_the_slot_until_skipped,))  # fmt: skip
    holder.start()
    try:
        result = failover(plan_json=plan.to_json(), approve=True, fleet_file=own_lab.fleet_file)
    finally:
        holder.join()
    assert skipped.is_set(), "the failover's mirror run of the new home was never skipped"
    assert isinstance(result, dict), result
    assert result["mirrored"] == {home: "ok"}, result
    states = sorted(r.state.type.value for r in home_runs() if r.state is not None)
    assert "CANCELLED" in states and "COMPLETED" in states, states
