"""The store taken away mid-failover: its rules on top of the power cut's (pure), and
the loopback lab's outage itself (a SQLite write lock) against a real store file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ppo_dr.errors import LabError, TransientError
from ppo_dr.lab.chaos.catalogue import BY_NAME
from ppo_dr.lab.chaos.store_restart import STORE_DOWN_S, StoreRestartFacts, judge_store_restart
from ppo_dr.lab.chaos.store_restart_run import StoreOutage
from ppo_dr.lab.chaos.verdict import RESULT_KEYS, judge
from ppo_dr.store import Store
from tests.chaos.judging import assert_fails_saying
from tests.chaos.test_verdict import GOOD_OUTAGE, T0, at

SPEC = BY_NAME["store-restart"]
BASE = judge(SPEC, replace(GOOD_OUTAGE, fault="store-restart"))
PAGE = "incident:7/step:page.e0.r0.l1/to:sipho/via:sms"
MAIL = "incident:7/step:page.e0.r0.l1/to:sipho/via:email"
GOOD = StoreRestartFacts(
    how="SQLite write lock held by another process",
    injected_at=T0,
    down_at=at(41),
    up_at=at(41 + STORE_DOWN_S),
    store_errors=3,
    failover_ended_at=at(80),
    notices=((PAGE, "sent"), (MAIL, "sent")),
    outbox_keys=(PAGE, MAIL),
)


def test_a_clean_run_holds_with_the_store_window_on_the_chart() -> None:
    assert BASE.passed, BASE.notes
    result = judge_store_restart(BASE, GOOD)
    assert result.passed, result.notes
    assert list(result.as_json()) == list(RESULT_KEYS)
    assert "store away 30.0 s mid-failover" in result.notes[-1]
    assert ("store away", 41.0) in result.events
    assert ("store back", 71.0) in result.events


#: One broken rule a row, with the note that names it.
BROKEN = [
    (replace(GOOD, down_at=None, up_at=None), "never taken away"),
    (replace(GOOD, up_at=at(45)), "away 4.0 s, not 30 s"),
    (replace(GOOD, failover_ended_at=at(40)), "not mid-run"),
    (replace(GOOD, store_errors=0), "nothing was retried"),
    (replace(GOOD, notices=((PAGE, "sent"), (MAIL, "failed"))), f"notice {MAIL} failed"),
    (replace(GOOD, notices=((PAGE, "sent"),)), f"outbox line {MAIL} is no sent notice"),
    (replace(GOOD, outbox_keys=(PAGE,)), f"sent notice {MAIL} has 0 outbox lines"),
    (replace(GOOD, outbox_keys=(PAGE, MAIL, MAIL)), f"sent notice {MAIL} has 2 outbox"),
    (replace(GOOD, problems=("the store's lock could not be held",)), "could not be held"),
]


@pytest.mark.parametrize(("facts", "says"), BROKEN)
def test_each_broken_rule_fails_the_fault_with_its_note(
    facts: StoreRestartFacts, says: str
) -> None:
    assert_fails_saying(judge_store_restart(BASE, facts), says)


def test_a_failed_power_row_stays_failed() -> None:
    failed = judge(SPEC, replace(GOOD_OUTAGE, fault="store-restart", failover_state="failed"))
    result = judge_store_restart(failed, GOOD)
    assert not result.passed
    assert any("the failover did not complete" in n for n in result.notes)


def test_the_lab_outage_refuses_writes_transiently_then_lets_them_through(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    log = tmp_path / "serve.log"
    log.write_text("before\n", encoding="utf-8")
    with Store.open(url) as store:
        store.upgrade()
        outage = StoreOutage(url, log, down_s=20.0)  # twice the 10 s busy timeout
        outage.start()
        while outage.down_at is None and outage.error is None:
            outage._thread.join(0.05)
        with pytest.raises(TransientError, match="unavailable or busy") as caught:
            store.open_incident("outage", "k", "t", {})
        with log.open("a", encoding="utf-8") as out:
            out.write(f"retrying: {caught.value}\n")
        assert store.incidents() == []  # reads go on meanwhile
        facts = outage.facts(store, tmp_path / "outbox.jsonl", T0, None)
        store.open_incident("outage", "k", "t", {})
    assert facts.down_at is not None and facts.up_at is not None
    assert (facts.up_at - facts.down_at).total_seconds() >= 20.0
    assert (facts.store_errors, facts.problems, facts.notices) == (1, (), ())


def test_a_store_that_is_not_sqlite_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="needs the distributed lab"):
        StoreOutage("postgresql://ppo@127.0.0.1/ppo", tmp_path / "serve.log")
