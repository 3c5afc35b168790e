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
    both_halves,
    flow_run_pids,
    judge_orchestrator_kill,
    ledger_problems,
    lock_pid,
)
from ppo_dr.lab.chaos.verdict import RESULT_KEYS
from tests.chaos.judging import assert_fails_saying
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
    assert_fails_saying(result, note)


# --------------------------------------------------------------------------- failover half

#: acme's restore done before the kill, karoo's under way; versions 3 and 1 then.
AT_KILL = [("acme", "restore", "done", 1), ("acme", "verify", "running", 1),
           ("karoo", "restore", "running", 1)]  # fmt: skip
AFTER = [("acme", "restore", "done", 1), ("acme", "verify", "done", 2),
         ("karoo", "restore", "done", 2), ("karoo", "switch", "done", 1)]  # fmt: skip
VERSIONS = {"acme": 3, "karoo": 1}


def test_a_rerun_that_skips_the_done_restore_and_switches_each_client_once_holds() -> None:
    # karoo's restore was cut short by the kill: beginning it again is not twice
    assert ledger_problems(AT_KILL, AFTER, VERSIONS, {"acme": 4, "karoo": 2}) == []


LEDGER_BROKEN = [
    (AFTER[:2] + AFTER[3:], {"acme": 4, "karoo": 2}, "karoo: restore step missing"),
    ([*AFTER[1:], ("acme", "restore", "done", 2)], {"acme": 4, "karoo": 2},
     "acme: restored again by the rerun (attempts 2)"),
    ([*AFTER[:2], ("karoo", "restore", "failed", 2)], {"acme": 4, "karoo": 2},
     "karoo: restore step failed after the rerun"),
    (AFTER, {"acme": 5, "karoo": 2}, "acme: placement version moved by 2"),
    (AFTER, {"acme": 4, "karoo": 1}, "karoo: placement version moved by 0"),
    (AFTER, {"acme": 4}, "karoo: placement version moved by -1"),
]  # fmt: skip


@pytest.mark.parametrize(("after", "versions", "note"), LEDGER_BROKEN)
def test_each_broken_ledger_rule_is_named(
    after: list[tuple[str, str, str, int]], versions: dict[str, int], note: str
) -> None:
    problems = ledger_problems(AT_KILL, after, VERSIONS, versions)
    assert any(note in p for p in problems), problems


def test_the_row_passes_only_when_both_halves_held_and_names_each_halfs_notes() -> None:
    mirror = judge_orchestrator_kill(BY_NAME["orchestrator-kill"], GOOD)
    failover = replace(mirror, target="app-jhb1-1", rto_s=31.2, notes=["killed mid-restore"])
    failover = replace(failover, pages_sent=12, incidents_opened=1)
    row = both_halves(mirror, failover)
    assert row.passed and row.target == "app-jhb1-1" and row.rto_s == 31.2
    assert row.pages_sent == 12 and row.incidents_opened == 1
    assert row.notes[0].startswith("mirror half: 3 process(es)")
    assert row.notes[-1] == "failover half: killed mid-restore"
    assert not both_halves(replace(mirror, passed=False), failover).passed
    assert not both_halves(mirror, replace(failover, passed=False)).passed
    assert not both_halves(mirror, replace(failover, snapshots_intact=False)).snapshots_intact
    assert both_halves(replace(mirror, duplicate_notices=1), failover).duplicate_notices == 1
