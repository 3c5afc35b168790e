"""The Prefect API killed mid-failover: its rules on top of the power cut's (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ppo_dr.lab.chaos.catalogue import BY_NAME
from ppo_dr.lab.chaos.prefect_server_kill import PrefectKillFacts, judge_prefect_server_kill
from ppo_dr.lab.chaos.verdict import RESULT_KEYS, judge
from tests.chaos.judging import assert_fails_saying
from tests.chaos.test_verdict import GOOD_OUTAGE, T0, at

SPEC = BY_NAME["prefect-server-kill"]
BASE = judge(SPEC, replace(GOOD_OUTAGE, fault="prefect-server-kill"))
GOOD = PrefectKillFacts(
    injected_at=T0,
    killed_at=at(50),
    back_at=at(75),
    failover_ended_at=at(120),
    moves={"acme": 1, "karoo": 1},
    restores={"acme": 1, "karoo": 1},
)


@pytest.mark.parametrize(
    ("facts", "says"),
    [
        (GOOD, "it rode it out"),
        (replace(GOOD, resumed=True, crashed_state="CRASHED"), "it ended CRASHED and the on-call"),
    ],
)
def test_a_clean_run_holds_ridden_out_or_resumed(facts: PrefectKillFacts, says: str) -> None:
    result = judge_prefect_server_kill(BASE, facts)
    assert result.passed, result.notes
    assert list(result.as_json()) == list(RESULT_KEYS)
    assert says in result.notes[-1]
    assert "dead 25.0 s mid-failover" in result.notes[-1]
    assert ("Prefect API killed", 50.0) in result.events
    assert ("Prefect API back", 75.0) in result.events


@pytest.mark.parametrize(
    ("facts", "says"),
    [
        (replace(GOOD, killed_at=None, back_at=None), "was not killed while the failover ran"),
        (replace(GOOD, failover_ended_at=at(40)), "not mid-failover"),
        (replace(GOOD, back_at=None), "did not answer again"),
        (replace(GOOD, moves={}, restores={}), "no client of the plan"),
        (replace(GOOD, moves={"acme": 2, "karoo": 1}), "acme: placement moved 2 times"),
        (replace(GOOD, moves={"acme": 0, "karoo": 1}), "acme: placement moved 0 times"),
        (replace(GOOD, restores={"acme": 2, "karoo": 1}), "acme: restore began 2 times"),
        (replace(GOOD, restores={"acme": 1}), "karoo: restore began 0 times"),
        (replace(GOOD, problems=("no restore began within 600 s",)), "no restore began"),
    ],
)
def test_each_broken_rule_fails_the_fault_with_its_note(facts: PrefectKillFacts, says: str) -> None:
    result = judge_prefect_server_kill(BASE, facts)
    assert_fails_saying(result, says)
    assert not any("mid-failover;" in note for note in result.notes)  # no "held" sentence


def test_a_failed_power_row_stays_failed() -> None:
    failed = judge(SPEC, replace(GOOD_OUTAGE, fault="prefect-server-kill", rto_s=None))
    result = judge_prefect_server_kill(failed, GOOD)
    assert not result.passed
    assert any("no RTO recorded" in n for n in result.notes)
