"""The fleet file may grow under a failover run, not lose or change a server it uses.

Each step re-reads the file (provisioning adds the new server to it), so an edit made
mid-run is seen by the next step. A server added is fine; one the client's steps reach
that is removed or re-addressed stops that client with a permanent error naming the
file and the servers, before the step acts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ppo_dr.errors import PermanentError
from ppo_dr.failover.plan import ClientMove
from ppo_dr.failover.plan_checks import identities, server_identity, still_in_fleet
from ppo_dr.inventory import parse_fleet
from ppo_dr.placement import PlanError
from tasks.failover_client import ClientLedger
from tests.ppo_dr.failover.fleets import lab_like_data

MOVE = ClientMove(
    client_id="acme-mining",
    from_server="app-jhb1-1",
    to_server="app-cpt1-1",
    source_mirror="mirror-cpt1-1",
    snapshot_id="2026-11-30T083000Z",
    snapshot_at=None,
    fallback_mirrors=("mirror-jhb1-1", "mirror-cpt1-1"),
    new_mirrors=("mirror-cpt1-1", "mirror-jhb1-1"),
    size_bytes=1,
)


def _fleet(data: dict[str, Any]) -> Any:
    return parse_fleet(yaml.safe_dump(data), "fleet.yaml")


def _drop_target(data: dict[str, Any]) -> None:
    """app-cpt1-1 (the move's target) and the one client on it gone from *data*."""
    data["servers"].remove(_server(data, "app-cpt1-1"))
    data["clients"] = [c for c in data["clients"] if c["server"] != "app-cpt1-1"]


def _server(data: dict[str, Any], server_id: str) -> dict[str, Any]:
    (found,) = [s for s in data["servers"] if s["id"] == server_id]
    return found


def test_an_emergency_move_reaches_target_and_mirrors_and_a_planned_one_the_source_too() -> None:
    assert MOVE.servers(planned=False) == (
        "app-cpt1-1", "mirror-cpt1-1", "mirror-jhb1-1",
    )  # fmt: skip
    assert MOVE.servers(planned=True) == ("app-jhb1-1", *MOVE.servers(planned=False))


def test_a_fleet_that_grew_or_changed_a_capacity_still_serves_the_run() -> None:
    data = lab_like_data()
    before = _fleet(data)
    expected = identities(before, MOVE.servers(planned=True))
    added = {**copy.deepcopy(_server(data, "spare-cpt1-1")), "id": "spare-cpt1-9"}
    added["ssh"]["host"] = added["http"]["host"] = "spare-cpt1-9.example"
    data["servers"].append(added)
    _server(data, "app-cpt1-1")["capacity"] = {"clients": 99, "disk_gb": 1}
    grown = _fleet(data)
    assert still_in_fleet(grown, expected, "fleet.yaml", "the move") is grown


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop_target, "lost app-cpt1-1 "),
        (lambda d: _server(d, "app-cpt1-1")["ssh"].update(port=2222), "changed app-cpt1-1 "),
        (lambda d: _server(d, "mirror-jhb1-1")["ssh"].update(host="elsewhere.example"),
         "changed mirror-jhb1-1 "),
    ],
)  # fmt: skip
def test_a_server_the_move_uses_lost_or_changed_is_refused_by_name(edit: Any, message: str) -> None:
    data = lab_like_data()
    expected = identities(_fleet(data), MOVE.servers(planned=False))
    edit(data)
    with pytest.raises(PlanError) as caught:
        still_in_fleet(_fleet(data), expected, "/etc/ppo/fleet.yaml", "the move of acme-mining")
    assert isinstance(caught.value, PermanentError)  # no retry: the file will not come back
    text = str(caught.value)
    assert message in text and "/etc/ppo/fleet.yaml" in text and "acme-mining" in text
    assert "may only grow" in text


def test_a_server_missing_when_the_batch_began_is_reported_lost_not_crashed_on() -> None:
    data = lab_like_data()
    _drop_target(data)
    fleet = _fleet(data)
    expected = identities(fleet, MOVE.servers(planned=False))
    assert ("app-cpt1-1", "-") in expected
    with pytest.raises(PlanError, match="lost app-cpt1-1 "):
        still_in_fleet(fleet, expected, "fleet.yaml", "the move")


def test_the_source_of_an_emergency_may_leave_the_fleet_file() -> None:
    data = lab_like_data()
    expected = identities(_fleet(data), MOVE.servers(planned=False))
    data["servers"].remove(_server(data, "app-jhb1-1"))
    data["clients"] = [c for c in data["clients"] if c["server"] != "app-jhb1-1"]
    assert still_in_fleet(_fleet(data), expected, "fleet.yaml", "the move")


def test_the_identity_ignores_capacity_only() -> None:
    data = lab_like_data()
    before = server_identity(_fleet(data).server("app-cpt1-1"))
    _server(data, "app-cpt1-1")["capacity"] = {"clients": 1, "disk_gb": 1}
    assert server_identity(_fleet(data).server("app-cpt1-1")) == before
    _server(data, "app-cpt1-1")["mirrors"] = ["mirror-jhb1-1", "mirror-cpt1-1"]
    assert server_identity(_fleet(data).server("app-cpt1-1")) != before


def test_a_client_step_reads_the_fleet_file_through_the_guard(tmp_path: Path) -> None:
    data = lab_like_data()
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    ledger = ClientLedger(
        path, "sqlite:///unused", "plan-1", "acme-mining", None,
        identities(_fleet(data), MOVE.servers(planned=False)),
    )  # fmt: skip
    assert ledger.fleet().server("app-cpt1-1").dc == "cpt1"
    _server(data, "app-cpt1-1")["http"]["port"] = 8080  # re-addressed mid-run
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(PlanError, match=f"fleet file {path} changed app-cpt1-1 during the run"):
        ledger.fleet()
