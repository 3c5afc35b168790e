"""The orchestrator killed mid-run: a flow run's processes found by their environment,
and the verdict (cut short, rerun completed, every client snapshotted after the kill,
repositories clean, nothing lost, nobody paged)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from ppo_dr.lab.chaos.catalogue import BY_NAME
from ppo_dr.lab.chaos.orchestrator import (
    KillObservation,
    flow_run_pids,
    judge_orchestrator_kill,
    lock_pid,
)
from ppo_dr.lab.chaos.verdict import RESULT_KEYS
from tests.chaos.test_verdict import T0

RUN = "0190a3c4-1111-7000-8000-000000000001"


def test_the_processes_of_a_flow_run_are_those_naming_it_in_their_environment() -> None:
    environs = [
        (10, b"HOME=/root\0PREFECT__FLOW_RUN_ID=" + RUN.encode() + b"\0"),
        (11, b"PREFECT__FLOW_RUN_ID=" + RUN.encode()),
        (12, b"PREFECT__FLOW_RUN_ID=" + RUN.encode() + b"-other\0"),  # another id
        (13, b"X=PREFECT__FLOW_RUN_ID=" + RUN.encode()),  # only a value mentioning it
        (14, b""),
    ]
    assert flow_run_pids(environs, RUN) == [10, 11]
    assert flow_run_pids(environs, "nope") == []


@pytest.mark.parametrize(
    ("doc", "pid"),
    [
        (b'{"owner": "ppo-dr", "pid": 4242, "host": "h", "time": 1.0}', 4242),
        (b'{"pid": "4242"}', None),
        (b'{"pid": true}', None),
        (b"[4242]", None),
        (b"not json", None),
        (b"", None),
    ],
)
def test_the_pid_of_a_repository_lock_is_read_only_when_well_formed(
    doc: bytes, pid: int | None
) -> None:
    assert lock_pid(doc) == pid


GOOD = KillObservation(
    fault="orchestrator-kill",
    what="mirror-fleet/mirror-fleet",
    killed_at=T0,
    killed_pids=3,
    running_s=4.2,
    holding="app-jhb1-1's repository on mirror-jhb1-1",
    killed_state="CRASHED",
    rerun_state="COMPLETED",
    rerun_done_at=T0 + timedelta(seconds=41),
    reruns=2,
    clients=("acme", "karoo"),
    repository_problems=(),
    snapshots_intact=True,
    lost=0,
)


def test_a_kill_the_rerun_recovers_from_holds() -> None:
    result = judge_orchestrator_kill(BY_NAME["orchestrator-kill"], GOOD)
    assert result.passed, result.notes
    row = result.as_json()
    assert tuple(row) == RESULT_KEYS
    assert row["target"] == "mirror-fleet/mirror-fleet" and row["rto_s"] is None
    assert row["incidents_opened"] == 0 and row["acked_writes_lost"] == 0
    assert "3 process(es) of a mirror-fleet/mirror-fleet run SIGKILLed" in row["notes"][0]
    assert result.events == [("orchestrator killed", 0.0), ("rerun completed", 41.0)]


def test_a_run_failed_by_the_kill_counts_as_cut_short() -> None:
    assert judge_orchestrator_kill(
        BY_NAME["orchestrator-kill"], replace(GOOD, killed_state="FAILED")
    ).passed


BROKEN = [
    ({"killed_at": None}, "no process of a running mirror-fleet/mirror-fleet run was killed"),
    ({"killed_pids": 0}, "no process of a running"),
    ({"holding": None}, "was not killed while writing a repository"),
    ({"killed_state": "COMPLETED"}, "completed anyway: it was killed too late"),
    ({"killed_state": None}, "ended in no final state"),
    ({"killed_state": "RUNNING"}, "ended RUNNING"),
    ({"rerun_state": "FAILED"}, "the rerun of mirror-fleet/mirror-fleet ended FAILED"),
    ({"rerun_state": None}, "ended not at all"),
    ({"without_new_snapshot": ("karoo",)}, "no complete snapshot after the kill of: karoo"),
    ({"repository_problems": None}, "not verified after the rerun"),
    ({"repository_problems": ("mirror-a: blob x missing",)}, "verify --read-data: mirror-a"),
    ({"snapshots_intact": False}, "not all intact"),
    ({"outage_incidents": 1}, "1 outage incident(s)"),
    ({"pages": (T0,)}, "1 page(s) sent"),
    ({"notice_keys": ("k", "k")}, "1 notice(s) sent twice"),
    ({"lost": None}, "could not be checked"),
    ({"lost": 2}, "2 acknowledged write(s) missing"),
    ({"problems": ("DRError: no run started",)}, "DRError: no run started"),
]


@pytest.mark.parametrize(("change", "note"), BROKEN)
def test_each_broken_rule_fails_the_fault_with_its_note(
    change: dict[str, object], note: str
) -> None:
    result = judge_orchestrator_kill(BY_NAME["orchestrator-kill"], replace(GOOD, **change))  # type: ignore[arg-type]
    assert not result.passed
    assert any(note in n for n in result.notes), result.notes
