"""The DR drill, run for real: a small lab of its own (the drill starts and releases a
scratch server, and one test corrupts a mirror), its SSH servers, and Prefect's harness.

The lab is mirrored once (and verified, so the catalogue has verified snapshots), then
the drill runs. Checked: the rows it records, the rotation and mirror alternation across
runs, that production routing is untouched, and that the scratch server is gone
afterwards (no process, no fleet.yaml entry, no restored data), also when the drill
fails on a corrupted mirror. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.states import State

from flows.drill import DRILL_LIMIT, DRILL_SLOTS, dr_drill
from flows.outcome import run_result
from ppo_dr.failover.drill import DRILL_FAILED_KIND, failed_dedupe_key, is_scratch_server
from ppo_dr.failover.plan import ProvisionRequest
from ppo_dr.fleet_access import mirror_plan, repo_path
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.lab.topology import write_yaml
from ppo_dr.providers import provider_for
from ppo_dr.store import Store
from tasks.mirror import ensure_mirror_limits
from tasks.slots import leased_slot
from tests.labs import own_lab as own_lab_of
from tests.ppo_dr.failover.fleets import lab_like_data

pytestmark = pytest.mark.timeout(300)

LAB_CLIENTS = 4
LAB_SIZE_MB = 4


@pytest.fixture
def own_lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    """A lab of this test's own, every app server mirrored and verified once."""
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PPO_DR_DB_URL", raising=False)
    with own_lab_of(tmp_path / "lab", clients=LAB_CLIENTS, size_mb=LAB_SIZE_MB) as lab:
        yield lab


def placements(lab: Lab) -> dict[str, tuple[str, int]]:
    with Store.open(lab.store_url) as store:
        return {p.client_id: (p.server_id, p.version) for p in store.placements()}


def mirrors_of(lab: Lab, client_id: str) -> tuple[str, str]:
    """(on-site, off-site) mirror of the client's home."""
    fleet = load_fleet(lab.fleet_file)
    onsite, offsite = (m.id for m, _ in mirror_plan(fleet, fleet.client(client_id).server))
    return onsite, offsite


def processes_naming(text: str) -> list[int]:
    """Live processes whose command line mentions *text*."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_torn_down(lab: Lab, scratch_id: str, processes_before: int) -> None:
    """No scratch server left: not in fleet.yaml or lab.json, no process, no restored data."""
    assert is_scratch_server(scratch_id)
    fleet = load_fleet(lab.fleet_file)
    assert not [s.id for s in fleet.servers if is_scratch_server(s.id)]
    assert scratch_id not in json.loads(lab.state_file.read_text())["components"]
    assert processes_naming(scratch_id) == []
    assert len(lab.processes()) == processes_before
    restored = lab.data_root(scratch_id, "/srv/ppo")  # its files stay for a post-mortem ...
    assert (restored / ".ppo-staging").is_dir()  # (where every restore starts)
    leftovers = list(restored.glob("*/*"))
    assert leftovers == [], leftovers  # ... but no client data, no staging left


def run_id_of(state: State[Any]) -> UUID:
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    return run_id


def artifacts_of(run_id: UUID) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {a.key: a.data for a in found}


def test_drill_restores_canaries_records_them_and_tears_down(
    prefect_api: str, own_lab: Lab
) -> None:
    homes_before = placements(own_lab)
    processes_before = len(own_lab.processes())
    # A scratch server an earlier drill left behind (its process died before teardown).
    stale = "drill-20261129-033000-1"
    fleet = load_fleet(own_lab.fleet_file)
    provider = provider_for(fleet, "jhb1", fleet_file=own_lab.fleet_file, store_url="")
    provider.provision(ProvisionRequest(stale, "jhb1"))
    assert processes_naming(stale)

    started = time.monotonic()
    state = dr_drill(per_day=2, fleet_file=own_lab.fleet_file, return_state=True)
    took = time.monotonic() - started
    assert state.is_completed(), state.message
    result = state.result()
    assert isinstance(result, dict)
    (scratch,) = result["scratch"]
    first = sorted(result["drilled"])
    assert len(first) == 2 and set(result["drilled"].values()) == {"ok"}

    with Store.open(own_lab.store_url) as store:
        rows = store.drills()
        assert sorted(r.client_id for r in rows) == first
        for row in rows:
            onsite, _ = mirrors_of(own_lab, row.client_id)
            newest = store.latest_verified_snapshot(row.client_id, onsite)
            assert newest is not None
            assert row.ok, row.detail
            assert row.mirror_id == onsite  # a first drill is from the on-site mirror
            assert row.snapshot_id == newest.snapshot_id
            assert 0 < row.restore_seconds < 120
            assert 0 <= row.snapshot_age_seconds < 3600
            assert row.flow_run_id == str(run_id_of(state))
        print(
            f"\ndrill of 2 canaries in {took:.1f} s (scratch up and down included); restores "
            + ", ".join(f"{r.client_id} {r.restore_seconds:.2f} s" for r in rows)
        )
        assert store.incidents(kind=DRILL_FAILED_KIND) == []
        # The probe may still list the released scratch server for a period: no page.
        (window,) = [w for w in store.active_maintenance() if w.scope_id == scratch]
        assert window.scope_kind == "server" and window.ends_at is not None
    assert placements(own_lab) == homes_before  # production routing never changed
    assert_torn_down(own_lab, scratch, processes_before)
    assert processes_naming(stale) == []  # swept by the drill
    assert (own_lab.data_root(scratch, "/srv/ppo") / "clients").is_dir()  # restored, removed

    artifacts = artifacts_of(run_id_of(state))
    table = artifacts["dr-drill-today"]
    table = json.loads(table) if isinstance(table, str) else table
    assert sorted(r["client"] for r in table) == first
    assert {r["result"] for r in table} == {"ok"}
    summary = artifacts["dr-drill-summary"]
    assert "**2 of 2 canaries passed**" in summary and "## Trend" in summary
    for client in first:
        assert f"| {client} | 1 | 0 | `" in summary  # a sparkline of its restore time

    # The next drill takes the two never drilled; then the first two again, off-site.
    second = dr_drill(per_day=2, fleet_file=own_lab.fleet_file)
    assert isinstance(second, dict) and set(second["drilled"]) | set(first) == set(homes_before)
    third = dr_drill(clients=first[:1], fleet_file=own_lab.fleet_file)
    assert isinstance(third, dict) and list(third["drilled"]) == first[:1]
    with Store.open(own_lab.store_url) as store:
        again = store.drills(first[0])
    assert [r.mirror_id for r in again] == list(mirrors_of(own_lab, first[0]))
    assert all(r.ok for r in again)
    assert_torn_down(own_lab, third["scratch"][0], processes_before)


def test_a_corrupted_mirror_fails_the_drill_loudly_and_still_tears_down(
    prefect_api: str, own_lab: Lab
) -> None:
    fleet = load_fleet(own_lab.fleet_file)
    canary = fleet.clients[0].id
    home = fleet.client(canary).server
    onsite, _ = mirrors_of(own_lab, canary)
    repo = repo_path(fleet.server(onsite), home)
    packs = [p for p in (own_lab.data_root(onsite, repo) / "packs").rglob("*") if p.is_file()]
    assert packs
    for pack in packs:  # one flipped byte in the middle of every pack of the repository
        data = bytearray(pack.read_bytes())
        data[len(data) // 2] ^= 0xFF
        pack.chmod(0o600)
        pack.write_bytes(bytes(data))
    processes_before = len(own_lab.processes())
    started = time.monotonic()

    state = dr_drill(clients=[canary], fleet_file=own_lab.fleet_file, return_state=True)

    assert state.is_failed(), state
    assert canary in (state.message or "")
    with Store.open(own_lab.store_url) as store:
        (row,) = store.drills(canary)
        incidents = store.incidents(kind=DRILL_FAILED_KIND)
    assert not row.ok and row.mirror_id == onsite
    assert row.detail.startswith("restore failed"), row.detail
    assert [(i.dedupe_key, i.paging, i.state) for i in incidents] == [
        (failed_dedupe_key(canary), False, "open")
    ]
    assert onsite in incidents[0].title
    result = run_result(state)
    scratch = result["scratch"][0] if isinstance(result, dict) else None
    assert scratch is not None, result
    assert_torn_down(own_lab, scratch, processes_before)
    # Damage is permanent: the restore failed at its first attempt, with no retry waits.
    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id_of(state)]))
        )
    (restore_run,) = [r for r in runs if r.name == f"restore-{canary}"]
    assert restore_run.run_count == 1, restore_run
    assert "damaged on every mirror" in (restore_run.state.message or "")  # type: ignore[union-attr]
    print(f"\ncorrupted-mirror drill failed and tore down in {time.monotonic() - started:.1f} s")

    # The next drill of that client reads the other (off-site) mirror, passes, and
    # resolves the incident.
    again = dr_drill(clients=[canary], fleet_file=own_lab.fleet_file)
    assert isinstance(again, dict) and again["drilled"] == {canary: "ok"}
    with Store.open(own_lab.store_url) as store:
        assert [(r.mirror_id, r.ok) for r in store.drills(canary)] == [
            (onsite, False),
            (mirrors_of(own_lab, canary)[1], True),
        ]
        (incident,) = store.incidents(kind=DRILL_FAILED_KIND)
    assert incident.state == "resolved" and incident.resolved_by == "dr-drill"


def test_hostile_client_ids_are_refused_before_any_server_is_provisioned(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    path = tmp_path / "fleet.yaml"
    write_yaml(path, {**lab_like_data(), "store": {"url": f"sqlite:///{tmp_path / 'state.db'}"}})
    state = dr_drill(clients=["../../etc"], fleet_file=path, return_state=True)
    assert state.is_failed()
    assert "client id" in (state.message or "")
    assert not [s.id for s in load_fleet(path).servers if is_scratch_server(s.id)]


def test_a_drill_while_another_holds_the_drill_slot_is_skipped_without_provisioning(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    path = tmp_path / "fleet.yaml"
    url = f"sqlite:///{tmp_path / 'state.db'}"
    write_yaml(path, {**lab_like_data(), "store": {"url": url}})
    ensure_mirror_limits({DRILL_LIMIT: DRILL_SLOTS})
    # Held as a running drill holds it: recorded in the store, so never an orphan.
    with leased_slot(DRILL_LIMIT, timeout_s=10, store_url=url):
        started = time.monotonic()
        state = dr_drill(fleet_file=path, return_state=True)
        took = time.monotonic() - started
    assert state.is_cancelled(), state
    assert "another DR drill is still running" in (state.message or "")
    assert took < 30  # a slot its holder recorded is not watched as an orphan
    assert not [s.id for s in load_fleet(path).servers if is_scratch_server(s.id)]


def test_a_static_data_centre_lends_a_spare_and_gets_it_back_clean(
    prefect_api: str, own_lab: Lab, tmp_path: Path
) -> None:
    data = yaml.safe_load(own_lab.fleet_file.read_text())
    for dc in data["data_centres"]:
        if dc["id"] == "cpt1":
            dc["provider"] = "static"  # its spare is lent, not a new server started
    write_yaml(own_lab.fleet_file, data)
    spare = "spare-cpt1-1"
    spare_root = own_lab.data_root(spare, "/srv/ppo")
    before = sorted(p.relative_to(spare_root) for p in spare_root.rglob("*"))
    homes_before = placements(own_lab)

    result = dr_drill(per_day=2, dc="cpt1", fleet_file=own_lab.fleet_file)

    assert isinstance(result, dict), result
    assert len(result["drilled"]) == 2 and set(result["drilled"].values()) == {"ok"}
    assert f"{result['scratch'][0]} released" in result["teardown"]
    with Store.open(own_lab.store_url) as store:
        assert all(r.ok and r.detail == f"restored to {spare}, verified, healthy"
                   for r in store.drills())  # fmt: skip
    # The spare is free again (no claim) and holds what it held before, nothing more.
    claims = tmp_path / "home" / "claims" / load_fleet(own_lab.fleet_file).name
    assert not list(claims.glob("*.claim"))
    after = sorted(p.relative_to(spare_root) for p in spare_root.rglob("*"))
    assert set(after) - set(before) <= {Path("clients"), Path(".ppo-staging")}
    assert placements(own_lab) == homes_before
