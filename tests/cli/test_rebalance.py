"""``ppo-dr rebalance plan|run`` and ``ppo-dr server drain|return|ls`` on a fleet file
and a real SQLite store (the paths that need no Prefect API)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from ppo_dr.failover.plan_json import Plan
from ppo_dr.store import Store
from tests.cli.test_failover import fleet_file, store  # noqa: F401  (fixtures)


def ppo_dr(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def crowd_jhb1_1(store: Store) -> None:  # noqa: F811
    """app-jhb1-1 holds 3 of its 10 clients: over a 20 % target."""
    store.move_client("ubuntu-health", "app-jhb1-1", 1, reason="test")


def test_rebalance_plan_writes_an_approvable_planned_migration(
    store: Store,  # noqa: F811
    tmp_path: Path,
) -> None:
    crowd_jhb1_1(store)
    out = tmp_path / "plan.json"
    result = ppo_dr("rebalance", "plan", "--target-util", "0.2", "-o", str(out))
    assert result.exit_code == 0, result.output
    plan = Plan.from_json(out.read_text(encoding="utf-8"))
    assert plan.mode == "planned"
    [move] = plan.moves
    assert (move.from_server, move.to_server) == ("app-jhb1-1", "app-jhb1-2")
    assert "rebalance to 20% of each capacity: 1 client(s) move" in result.output
    assert "app-jhb1-1  jhb1  3 -> 2 / 10" in result.output
    assert f"failover plan {plan.plan_id} (planned)" in result.output

    store.mark_drained("app-jhb1-2", by="ops")
    result = ppo_dr("rebalance", "plan", "--target-util", "0.2")
    assert result.exit_code == 0, result.output
    assert "app-jhb1-2  jhb1  0 -> 0 / 10" in result.output
    assert "app-cpt1-1  cpt1  1 -> 2 / 10" in result.output


def test_an_unreachable_target_exits_2_with_the_reason(store: Store) -> None:  # noqa: F811
    crowd_jhb1_1(store)
    result = ppo_dr("rebalance", "plan", "--target-util", "0.1")
    assert result.exit_code == 2
    assert "app-jhb1-1 stays over target in clients" in result.output
    assert "app-lon1-1 is in GB, not allowed" in result.output
    assert "target not reachable" in result.output


def test_bad_rebalance_input_changes_nothing(store: Store, tmp_path: Path) -> None:  # noqa: F811
    for args, message in [
        (["--target-util", "1.5"], "at most 1"),
        (["--max-moves", "-1"], "non-negative"),
        (["--dc", "nowhere"], "no data centre 'nowhere'"),
    ]:
        result = ppo_dr("rebalance", "plan", *args)
        assert result.exit_code == 2 and message in result.output, result.output
    crowd_jhb1_1(store)
    out = tmp_path / "plan.json"
    assert ppo_dr("rebalance", "plan", "--target-util", "0.2", "-o", str(out)).exit_code == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    data["moves"][0]["to_server"] = "app-lon1-1"
    out.write_text(json.dumps(data), encoding="utf-8")
    result = ppo_dr("rebalance", "run", "--plan", str(out), "--approve")
    assert result.exit_code == 2
    assert "edited after it was made" in result.output


def test_drain_dry_run_prints_the_plan_and_marks_nothing(store: Store) -> None:  # noqa: F811
    result = ppo_dr("server", "drain", "app-jhb1-1", "--to", "jhb1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "drain of app-jhb1-1: 2 client(s) move" in result.output
    assert "app-jhb1-2  jhb1  1 -> 3 / 10" in result.output
    assert store.drained_servers() == []


def test_draining_the_last_za_server_is_refused_before_anything_moves(
    store: Store,  # noqa: F811
) -> None:
    store.mark_drained("app-jhb1-1", by="ops")
    store.mark_drained("app-jhb1-2", by="ops")
    result = ppo_dr("server", "drain", "app-cpt1-1")
    assert result.exit_code == 2
    assert "drain of app-cpt1-1 refused, nothing moved" in result.output
    assert "table-bay-fisheries (allowed: ZA)" in result.output
    assert "app-lon1-1 is in GB, not allowed" in result.output
    assert [d.server_id for d in store.drained_servers()] == ["app-jhb1-1", "app-jhb1-2"]
    assert ppo_dr("server", "drain", "app-cpt1-1", "--to", "nowhere").exit_code == 2


def test_return_ends_the_drain_and_its_window_and_offers_a_plan(
    store: Store,  # noqa: F811
) -> None:
    window = store.start_maintenance("server", "app-jhb1-2", reason="drained")
    store.mark_drained("app-jhb1-2", by="ops", maintenance_id=window.id)
    listed = ppo_dr("server", "ls")
    assert listed.exit_code == 0 and "app-jhb1-2  drained" in listed.output
    result = ppo_dr("server", "return", "app-jhb1-2", "--target-util", "0.2")
    assert result.exit_code == 0, result.output
    assert f"maintenance window {window.id} ended" in result.output
    assert "rebalance to 20% of each capacity" in result.output
    assert store.drained_servers() == []
    assert store.active_maintenance() == []
    again = ppo_dr("server", "return", "app-jhb1-2")
    assert again.exit_code == 2 and "is not drained" in again.output


@pytest.mark.prefect
def test_a_rebalance_says_which_running_failover_it_waits_for(
    prefect_api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect import get_client
    from prefect.states import Completed, Running

    from cli.rebalance import say_running_failovers
    from flows.failover import failover

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(failover, name="failover-server-app-x", state=Running())
    try:
        say_running_failovers("this rebalance")
    finally:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Completed(), force=True)
    assert (
        "failover run failover-server-app-x is running: this rebalance waits for it "
        "(one at a time)" in capsys.readouterr().out
    )
    say_running_failovers("this rebalance")
    assert capsys.readouterr().out == ""
