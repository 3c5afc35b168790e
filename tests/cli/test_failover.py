"""``ppo-dr failover plan`` on a fleet file and a real SQLite store in tmp_path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
import yaml
from typer.testing import CliRunner, Result

from cli.main import app
from ppo_dr.failover.plan_json import Plan
from ppo_dr.store import Store
from tests.ppo_dr.failover.fleets import lab_like_data


@pytest.fixture
def fleet_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(lab_like_data()), encoding="utf-8")
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PPO_DR_FLEET", str(path))
    return path


@pytest.fixture
def store(tmp_path: Path, fleet_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("PPO_DR_DB_URL", url)
    with Store(url) as opened:
        opened.upgrade()
        data = yaml.safe_load(fleet_file.read_text())
        opened.seed_placements({c["id"]: c["server"] for c in data["clients"]})
        taken = datetime.now(UTC) - timedelta(minutes=20)
        for client in data["clients"]:
            server = next(s for s in data["servers"] if s["id"] == client["server"])
            for mirror in server["mirrors"]:
                opened.record_snapshot(
                    server_id=server["id"],
                    client_id=client["id"],
                    mirror_id=mirror,
                    snapshot_id=f"{taken:%Y-%m-%dT%H%M%SZ}",
                    taken_at=taken,
                    files=3,
                    bytes=2_000_000,
                    new_bytes=0,
                )
                opened.mark_snapshot_verified(
                    mirror, client["id"], f"{taken:%Y-%m-%dT%H%M%SZ}", taken, ok=True
                )
        yield opened


def failover(*args: str) -> Result:
    return CliRunner().invoke(app, ["failover", *args])


def test_plan_prints_and_writes_an_approvable_plan(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    result = failover("plan", "--server", "app-jhb1-1", "--down", "app-jhb1-1", "-o", str(out))
    assert result.exit_code == 0, result.output
    plan = Plan.from_json(out.read_text(encoding="utf-8"))
    assert f"failover plan {plan.plan_id} (emergency)" in result.output
    assert {m.client_id for m in plan.moves} == {"acme-mining", "karoo-logistics"}
    # The server is down: another DC of the same country; sizes from the catalogue.
    assert all(m.to_server.endswith("cpt1-1") for m in plan.moves)
    assert all(m.size_bytes == 2_000_000 for m in plan.moves)
    assert f"plan written to {out}" in result.output


def test_the_store_placement_wins_over_fleet_yaml(store: Store) -> None:
    store.move_client("ubuntu-health", "app-jhb1-1", 1, reason="test")
    result = failover("plan", "--server", "app-jhb1-1", "--mode", "planned", "--to-dc", "cpt1")
    assert result.exit_code == 0, result.output
    assert "ubuntu-health" in result.output and "final sync" in result.output


def test_refusals_are_printed_and_exit_2(store: Store) -> None:
    down = "app-jhb1-1,app-jhb1-2,spare-jhb1-1,mirror-jhb1-1,app-cpt1-1,spare-cpt1-1"
    result = failover("plan", "--dc", "jhb1", "--down", down)
    assert result.exit_code == 2, result.output
    assert "refused (escalate):" in result.output
    assert "acme-mining: no allowed target (allowed countries: ZA)" in result.output
    assert "3 client(s) refused" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "app-jhb1-1", "--dc", "jhb1"], "name exactly one scope"),
        ([], "name exactly one scope"),
        (["--clients", "acme-mining,,x"], "empty item"),
        (["--clients", "../../etc/passwd"], "refused: does not match"),
        (["--server", "app-jhb1-1", "--to-country", "GB"], "allows GB"),
        (["--server", "app-jhb1-1", "--to-dc", "cpt1", "--to-country", "ZA"], "at most one"),
        (["--server", "app-jhb1-1", "--mode", "hot"], "--mode 'hot' unknown"),
        (["--server", "app-jhb1-1", "--down", "app-jhb1-9"], "not a server of fleet"),
        (["--server", "nope"], "not a server of fleet"),
    ],
)
def test_bad_requests_are_one_line_errors(store: Store, args: list[str], message: str) -> None:
    result = failover("plan", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output


def test_an_unwritable_output_is_an_error_not_a_traceback(store: Store, tmp_path: Path) -> None:
    result = failover("plan", "--server", "app-jhb1-1", "-o", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in result.output
    missing = tmp_path / "no" / "such" / "plan.json"
    result = failover("plan", "--server", "app-jhb1-1", "-o", str(missing))
    assert result.exit_code == 2 and "cannot write the plan" in result.output


def test_a_broken_fleet_file_is_reported(fleet_file: Path, store: Store) -> None:
    fleet_file.write_text("name: [", encoding="utf-8")
    result = failover("plan", "--server", "app-jhb1-1", "--fleet", str(fleet_file))
    assert result.exit_code == 2 and "YAML syntax" in result.output


def test_the_written_plan_is_json_an_operator_can_read(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    failover("plan", "--clients", "thames-advisory", "--to-country", "ZA", "-o", str(out))
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["format"] == "ppo-dr-failover-plan" and data["mode"] == "emergency"
    assert data["scope"] == {"clients": ["thames-advisory"], "server": None, "dc": None}
    assert data["moves"][0]["source_mirror"] == "mirror-lon1-1"
    assert not list(tmp_path.glob(".plan.json.*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--server", "app-jhb1-1", "--incident", "7"], "failover-incident-7"),
        (["--server", "app-jhb1-1"], "failover-server-app-jhb1-1-{short}"),
        (["--clients", "acme-mining,karoo-logistics", "--mode", "planned"],
         "migrate-clients-acme-mining-and-1-{short}"),
    ],
)  # fmt: skip
def test_run_prints_the_name_the_run_will_have_not_its_first_random_one(
    store: Store, prefect_api: str, monkeypatch: pytest.MonkeyPatch, args: list[str], name: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    from flows.failover import failover as failover_flow
    from tests.prefect_fixtures import using_api

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    with using_api(prefect_api):
        # Registered, nobody serves it here; deleted after, as other tests on this harness
        # need the failover deployment absent (or their own).
        deployment_id = failover_flow.to_deployment("failover").apply()
    try:
        result = failover("run", *args)
        assert result.exit_code == 0, result.output
        run_id = result.output.split("(id ", 1)[1].split(")", 1)[0]
        with using_api(prefect_api), get_client(sync_client=True) as client:
            client.set_flow_run_state(run_id, Cancelled(message="test: never to run"), force=True)
            client.delete_flow_run(UUID(run_id))
        assert (
            f"failover run {name.format(short=run_id[:8])} started (id {run_id})" in result.output
        )
    finally:
        with using_api(prefect_api), get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)
