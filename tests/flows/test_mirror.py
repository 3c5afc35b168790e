"""The mirror runbook, run for real: the session lab's SSH servers, Prefect's test harness.

Each test gets its own state store (``PPO_DR_DB_URL``) and state directory, so the
catalogue and incidents it checks are its own; the lab's mirrors are shared, so a
test compares what it sent, not what is stored. Faults are always healed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentTaskRunId,
)
from prefect.client.schemas.objects import TaskRun
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.states import State

from flows.mirror import (
    mirror_fleet,
    mirror_limits,
    mirror_server,
    mirror_server_run,
    server_limit,
)
from ppo_dr.inventory import Fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.mirror.runbook import WHOLE_CHECK_EVERY_S
from ppo_dr.store import Store
from tasks.mirror import HEARTBEAT_EVENT, ensure_mirror_limits
from tasks.slots import leased_slot
from tests.cli.entry import PPO_DR
from tests.flows.runs import artifacts_of, eventually, flow_run_id, task_runs_of
from tests.prefect_fixtures import isolated_env

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
STAMP = r"\d{4}-\d{2}-\d{2}T\d{6}Z-[0-9a-f]{8}"  # start to the second, short id


# --------------------------------------------------------------------------- helpers


def sent(summary: dict[str, Any]) -> int:
    return sum(summary["sent"].values())


def run_server(lab: Lab, server: str, **kwargs: Any) -> tuple[State[Any], float]:
    started = time.monotonic()
    state = mirror_server(server, fleet_file=lab.fleet_file, return_state=True, **kwargs)
    return state, time.monotonic() - started


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def repo_dirs(lab: Lab, fleet: Fleet, server: str) -> list[Path]:
    out = []
    for mirror_id in fleet.server(server).mirrors:
        mirror = fleet.server(mirror_id)
        out.append(lab.data_root(mirror.id, mirror.data_root) / "repos" / server)
    return out


# --------------------------------------------------------------------------- tests


def test_a_run_checks_the_whole_repository_first_then_once_a_day(
    prefect_api: str,
    lab: Lab,
    fleet: Fleet,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every run checks what it wrote; the whole repository (every pack folder, manifest
    and index file: round trips that grow with its history) on a machine's first run
    and then when its last clean whole check is a day old (``ppo_dr.mirror.runbook``)."""
    cache = tmp_path / "cache"  # this test's own stamps, not the session's
    monkeypatch.setenv("PPO_DR_INDEX_CACHE", str(cache))
    server = "app-jhb1-1"
    first, _ = run_server(lab, server)
    assert first.is_completed(), first.message
    stamps = sorted(cache.glob("*/.whole-check"))
    assert len(stamps) == len(fleet.server(server).mirrors)

    def checked() -> list[float]:
        return [float(p.read_text()) for p in stamps]

    before = checked()
    second, _ = run_server(lab, server)
    assert second.is_completed(), second.message
    assert checked() == before  # only what it wrote
    assert all(r.verified_at is not None for r in store.snapshots())
    day_old = time.time() - WHOLE_CHECK_EVERY_S - 60
    stamps[0].write_text(f"{day_old:.3f}")
    third, _ = run_server(lab, server)
    assert third.is_completed(), third.message
    now = checked()
    assert now[0] > day_old + WHOLE_CHECK_EVERY_S and now[1:] == before[1:]


def test_first_run_then_an_incremental_one(
    prefect_api: str, lab: Lab, fleet: Fleet, store: Store
) -> None:
    server = "app-jhb1-1"
    clients = [c.id for c in fleet.clients_on(server)]
    mirrors = list(fleet.server(server).mirrors)

    fresh = not any(d.exists() for d in repo_dirs(lab, fleet, server))
    first, took_first = run_server(lab, server)
    assert first.is_completed(), first.message
    one = first.result()
    assert one["outcome"] == "ok" and one["missing"] == [] and one["stale"] == []

    rows = store.snapshots()
    assert {(r.client_id, r.mirror_id) for r in rows} == {(c, m) for c in clients for m in mirrors}
    assert all(r.status == "complete" and r.verified_at is not None for r in rows)
    assert all(r.files > 0 and r.bytes > 0 for r in rows)
    assert {r.flow_run_id for r in rows} == {str(flow_run_id(first))}
    # Each row names the exact root object its mirror stores, and how long the run took.
    for r in rows:
        repo = lab.data_root(r.mirror_id, fleet.server(r.mirror_id).data_root) / "repos" / server
        [stored] = (repo / "snapshots" / r.client_id).glob(f"{r.snapshot_id}*")
        assert r.root_sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    [seconds] = {r.run_seconds for r in rows}
    assert seconds is not None and 0 < seconds < took_first

    time.sleep(2.5)  # the workload appends to every client's journal each second
    second, took_second = run_server(lab, server)
    assert second.is_completed(), second.message
    two = second.result()
    assert two["outcome"] == "ok"
    print(
        f"\nmirror {server}: first {took_first:.1f} s ({sent(one)} B sent), "
        f"incremental {took_second:.1f} s ({sent(two)} B sent)"
    )
    trees = sum(r.bytes for r in rows)  # every client's tree, once per mirror
    if fresh:  # the mirrors had nothing of this server: everything was sent
        assert sent(one) > trees / 4  # zstd packs the lab data to ~60 %
    # Only the workload's appends (and new manifests) go over the wire the second time.
    assert 0 < sent(two) < trees / 20
    assert sent(two) < sent(one) or not fresh
    # Packs went up from upload processes (fleet_access passes ``connect``); none outlives its run.
    assert not [p.name for p in multiprocessing.active_children() if p.name.startswith("ppo-dr-")]
    newest = {
        r.client_id: r for r in store.snapshots() if r.flow_run_id == str(flow_run_id(second))
    }
    assert set(newest) == set(clients)
    assert all(r.new_bytes < r.bytes for r in newest.values())

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id(second))
        assert re.fullmatch(rf"mirror-{server}-{STAMP}", run.name), run.name
        assert run.name.endswith(str(run.id)[:8])  # unique, even within one second
        assert {"dc:jhb1", f"server:{server}", *(f"client:{c}" for c in clients)} <= set(run.tags)
        artifacts = artifacts_of(client, run.id)
        table = artifacts[f"mirror-clients-{server}"]
        assert table.type == "table"
        data = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert [r["client"] for r in data] == clients
        for row in data:
            assert {f"sent_{m}" for m in mirrors} <= set(row)
            assert row["files_scanned"] > 0 and row["snapshot"] == newest[row["client"]].snapshot_id
        summary = artifacts[f"mirror-summary-{server}"].data
        assert isinstance(summary, str)
        assert "## RPO" in summary
        for mirror in mirrors:
            assert f"RPO on {mirror}" in summary

        def heartbeats() -> list[Any]:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=[HEARTBEAT_EVENT]),
                    resource=EventResourceFilter(id=[f"ppo-dr.mirror.{server}"]),
                ),
                limit=50,
            )
            return [e for e in page.events if e.payload.get("snapshot_at")] if page else []

        assert len(eventually(heartbeats)) >= 1


def test_a_cut_mirror_is_recorded_missing_and_filled_next_run(
    prefect_api: str, lab: Lab, fleet: Fleet, store: Store
) -> None:
    server = "app-jhb1-2"
    onsite = fleet.onsite_mirror(server).id
    offsite = fleet.offsite_mirrors(server)[0].id
    clients = [c.id for c in fleet.clients_on(server)]
    # New data the cut mirror will miss, whatever the workload wrote meanwhile (on a busy
    # machine it may write nothing between two runs): the catch-up below must carry it.
    data = lab.data_root(server, fleet.server(server).data_root)
    for client in clients:
        (data / fleet.client(client).data_path / "missed-by-the-cut.bin").write_bytes(
            os.urandom(64 * 1024)
        )
    lab.break_(offsite, "network")
    try:
        cut, took = run_server(lab, server)
    finally:
        lab.heal(offsite)
    assert cut.is_completed(), cut.message
    result = cut.result()
    assert result["outcome"] == "partial"
    assert sorted(result["missing"]) == sorted(f"{c}@{offsite}" for c in clients)
    rows = {(r.client_id, r.mirror_id): r for r in store.snapshots()}
    for client in clients:
        assert rows[(client, onsite)].status == "complete"
        assert rows[(client, onsite)].verified_at is not None
        assert rows[(client, offsite)].status == "missing"
        assert rows[(client, offsite)].verified_at is None
    print(f"\nmirror {server} with {offsite} cut: {took:.1f} s")

    healed, _ = run_server(lab, server)
    assert healed.is_completed(), healed.message
    after = healed.result()
    assert after["outcome"] == "ok"
    # The healed mirror catches up: it is sent what the other got last run and now.
    assert after["sent"][offsite] > after["sent"][onsite]
    latest = [r for r in store.snapshots() if r.flow_run_id == str(flow_run_id(healed))]
    assert {(r.client_id, r.mirror_id, r.status) for r in latest} == {
        (c, m, "complete") for c in clients for m in (onsite, offsite)
    }


def test_a_stale_client_opens_exactly_one_incident(
    prefect_api: str, lab: Lab, fleet: Fleet, store: Store
) -> None:
    server = "app-jhb1-2"
    mirrored, left_out = [c.id for c in fleet.clients_on(server)]
    for _ in range(2):
        state, _took = run_server(lab, server, clients=[mirrored])
        assert state.is_completed(), state.message
        assert state.result()["stale"] == [left_out]
    incidents = store.incidents(kind="mirror-stale")
    assert [(i.dedupe_key, i.paging, i.state) for i in incidents] == [
        (f"mirror-stale:{left_out}", False, "open")
    ]
    assert left_out in incidents[0].title
    # Mirrored with the rest, the client is fresh again: the run resolves its incident.
    state, _took = run_server(lab, server)
    assert state.is_completed(), state.message
    assert state.result()["stale"] == []
    [done] = store.incidents(kind="mirror-stale")
    assert (done.state, done.resolved_by) == ("resolved", "mirror")
    [note] = [e.message for e in store.timeline(done.id) if e.kind == "resolved"]
    assert f"fresh again: verified snapshot of {left_out} from {server}" in note


def test_a_changed_host_key_fails_at_once_and_writes_nothing(
    prefect_api: str, lab: Lab, fleet: Fleet, store: Store, tmp_path: Path
) -> None:
    server = "app-cpt1-1"
    document = yaml.safe_load(lab.fleet_file.read_text(encoding="utf-8"))
    document["access"]["key_file"] = str(lab.operator_key)
    other = next(s for s in document["servers"] if s["id"] == "app-lon1-1")
    for entry in document["servers"]:
        if entry["id"] == server:
            entry["ssh"]["host_key"] = other["ssh"]["host_key"]
    forged = tmp_path / "fleet.yaml"
    forged.write_text(yaml.safe_dump(document), encoding="utf-8")
    before = [files_under(d) for d in repo_dirs(lab, fleet, server)]

    started = time.monotonic()
    state = mirror_server(server, fleet_file=forged, return_state=True)
    took = time.monotonic() - started

    assert state.is_failed()
    assert "HostKeyError" in (state.message or "")
    assert "host key changed" in (state.message or "")
    assert took < 15, took  # no back-off: the first retry alone would wait 1-15 s more
    assert [files_under(d) for d in repo_dirs(lab, fleet, server)] == before
    assert store.snapshots() == []
    # Someone must look, nobody is paged: one incident naming the server and both keys.
    [alert] = store.incidents(kind="host-key-changed")
    assert (alert.dedupe_key, alert.paging, alert.state) == (
        f"host-key-changed:{server}",
        False,
        "open",
    )
    assert alert.scope["offered"] != alert.scope["pinned"]
    for fingerprint in (alert.scope["offered"], alert.scope["pinned"]):
        assert fingerprint.startswith("SHA256:") and fingerprint in alert.title
    assert server in alert.title
    with get_client(sync_client=True) as client:
        run_id = flow_run_id(state)

        def snapshot_task() -> TaskRun | None:
            runs = [r for r in task_runs_of(client, run_id) if r.name == f"snapshot-{server}"]
            return runs[0] if runs and runs[0].state and runs[0].state.is_final() else None

        task_run = eventually(snapshot_task)
        assert task_run.run_count == 1
        assert task_run.state is not None and task_run.state.is_failed()


def test_a_run_of_a_server_that_is_already_mirroring_is_skipped(
    prefect_api: str, lab: Lab, fleet: Fleet, store: Store
) -> None:
    server = "app-lon1-1"
    ensure_mirror_limits(mirror_limits(fleet, [server]))
    # Held as another run of the runbook holds it: recorded in the store (a slot held
    # with no record is an orphan, given back after tasks.slots.ORPHAN_SEEN_S).
    with leased_slot(server_limit(server), timeout_s=10, store_url=store.url):
        state, took = run_server(lab, server)
    assert state.is_cancelled(), state
    assert "still running" in (state.message or "")
    assert store.snapshots() == []
    assert took < 30


def test_a_spare_without_clients_has_nothing_to_mirror_and_its_run_ends_quietly(
    prefect_api: str, lab: Lab, fleet: Fleet, store: Store
) -> None:
    """The distributed topology schedules a mirror of every spare, so that clients a
    failover moves onto one are mirrored from then on; until then each run is a no-op."""
    spare = fleet.servers_by_role("spare")[0].id
    before = (store.snapshots(), store.incidents())
    state, _took = run_server(lab, spare)
    assert state.is_completed(), state.message
    assert state.message == f"spare {spare} holds no client: nothing to mirror"
    assert (store.snapshots(), store.incidents()) == before
    mirror = fleet.servers_by_role("mirror")[0].id
    refused, _took = run_server(lab, mirror)  # a mirror is never a home: refused
    assert refused.is_failed() and "not an app server" in (refused.message or "")


def test_mirror_fleet_mirrors_every_app_server(
    prefect_api: str, lab: Lab, fleet: Fleet, store: Store
) -> None:
    started = time.monotonic()
    state = mirror_fleet(fleet_file=lab.fleet_file, return_state=True)
    took = time.monotonic() - started
    assert state.is_completed(), state.message
    outcomes = state.result()
    servers = [s.id for s in fleet.servers_by_role("app")]
    assert sorted(outcomes) == sorted(servers)
    assert {o["outcome"] for o in outcomes.values()} == {"ok"}
    rows = store.snapshots()
    assert {r.client_id for r in rows} == {c.id for c in fleet.clients}
    print(f"\nmirror_fleet of {len(servers)} servers: {took:.1f} s")
    with get_client(sync_client=True) as client:
        children = eventually(lambda: _children(client, flow_run_id(state), len(servers)))
    assert sorted(re.sub(rf"-{STAMP}$", "", c.name) for c in children) == sorted(
        f"mirror-{s}" for s in servers
    )
    assert all(c.state is not None and c.state.is_completed() for c in children)
    # Servers are mirrored side by side, not one after the other.
    spans = sorted((c.start_time, c.end_time) for c in children)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def _children(client: SyncPrefectClient, run_id: UUID, expected: int) -> list[Any] | None:
    """The mirror_server runs the fleet run started (each under a mapped task run)."""
    task_runs = [t.id for t in task_runs_of(client, run_id) if t.name.startswith("mirror-")]
    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(any_=task_runs)
        )
    )
    done = [c for c in children if c.end_time is not None]
    return done if len(done) == expected else None


# --------------------------------------------------------------------------- the CLI


def ppo_dr(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PPO_DR, "mirror", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_server_that_left_the_fleet_since_the_fleets_run_began_is_skipped(
    prefect_api: str, lab: Lab, store: Store
) -> None:
    """Seen in the chaos matrix: the fleet's run listed a drill's scratch server, the
    drill released it, and its mirror failed the whole fleet's run."""

    @flow(name="mirror-one-of-the-fleet")
    def one_of_the_fleet(server_id: str) -> dict[str, Any]:
        return mirror_server_run(server_id, lab.fleet_file, False)

    out = one_of_the_fleet("drill-20261205-235500-1")
    assert out["outcome"] == "skipped", out
    assert "left the fleet during this run" in out["message"]
    assert "no server 'drill-20261205-235500-1'" in out["message"]


def test_cli_smoke(lab: Lab, fleet: Fleet, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with Store(url) as opened:
        opened.upgrade()
    env = isolated_env(PPO_DR_DB_URL=url, PPO_DR_HOME=str(tmp_path / "home"))
    f = ["--fleet", str(lab.fleet_file)]
    server = "app-lon1-1"
    client = fleet.clients_on(server)[0].id

    done = ppo_dr("run", server, *f, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert client in done.stdout and "RPO on" in done.stdout

    listed = ppo_dr("ls", "--client", client, *f, env=env)
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"{client}\s+\d{{4}}-\d\d-\d\dT\d\d-\d\d-\d\dZ", listed.stdout)
    assert "complete, verified" in listed.stdout

    checked = ppo_dr("verify", "--client", client, "--read-data", "--subset", "1/2", *f, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok" in checked.stdout

    dest = tmp_path / "restored"
    restored = ppo_dr("restore", client, "--to", str(dest), *f, env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    data = lab.data_root(server, fleet.server(server).data_root)
    source = data / fleet.client(client).data_path
    assert (dest / "journal").is_dir()
    assert len(files_under(dest)) >= len(files_under(source)) - 2  # the journal grows on

    pruned = ppo_dr("prune", "--server", server, "--keep-hourly", "1", *f, env=env)
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert "kept" in pruned.stdout

    for bad, message in [
        (["run", "app;rm -rf /", *f], "server id"),
        (["ls", "--client", "../../etc", *f], "client id"),
        (["restore", client, "--to", server, *f], "explicit --path"),
        (["restore", client, "--to", server, "--path", "/etc/x", *f], "not inside"),
        (["restore", client, "--to", "nowhere", *f], "no server of fleet"),
        (["verify", "--subset", "3/2", *f], "--subset"),
        (["run", "mirror-jhb1-1", *f], "not an app server"),
    ]:
        refused = ppo_dr(*bad, env=env)
        assert refused.returncode == 2, (bad, refused.stdout, refused.stderr)
        assert "Traceback" not in refused.stderr
        assert message in refused.stderr, (bad, refused.stderr)
    assert os.environ.get("PPO_DR_DB_URL") != url
