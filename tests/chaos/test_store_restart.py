"""The store taken away mid-failover: its rules on top of the power cut's (pure), and
the loopback lab's outage itself against a real store: a SQLite file's write lock held,
and a PostgreSQL cluster of the lab's own stopped ``-m immediate`` and started again."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ppo_dr.errors import LabError, TransientError
from ppo_dr.lab import store_database
from ppo_dr.lab.chaos.catalogue import BY_NAME
from ppo_dr.lab.chaos.store_restart import STORE_DOWN_S, StoreRestartFacts, judge_store_restart
from ppo_dr.lab.chaos.store_restart_run import StoreOutage
from ppo_dr.lab.chaos.verdict import RESULT_KEYS, judge
from ppo_dr.lab.controlplane_postgres import PG_ROOT
from ppo_dr.store import Store
from tests.chaos.judging import assert_fails_saying
from tests.chaos.test_verdict import GOOD_OUTAGE, T0, at
from tests.topology.conftest import reachable_tempdir

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
        outage = StoreOutage(url, [log], None, down_s=20.0)  # twice the 10 s busy timeout
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


def test_a_postgres_store_the_lab_does_not_own_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="needs the lab's own database"):
        StoreOutage("postgresql://ppo@127.0.0.1/ppo", [tmp_path / "serve.log"], None)


@pytest.mark.skipif(not any(PG_ROOT.glob("*/bin/postgres")), reason="needs Debian's postgresql")
@pytest.mark.timeout(180)
def test_the_labs_postgres_store_is_restarted_and_writes_come_back() -> None:
    directory = reachable_tempdir()
    try:
        urls = store_database.start(directory, echo=lambda _: None)
        assert store_database.recorded(directory)
        with pytest.raises(LabError, match="still recorded running"):
            store_database.start(directory, echo=lambda _: None)
        log = directory / "serve.log"
        log.write_text("", encoding="utf-8")
        with Store.open(urls.url) as store:
            store.upgrade()
            store.open_incident("outage", "before", "t", {})
            outage = StoreOutage(
                urls.url, [log], store_database.store_db_dir(directory), down_s=8.0
            )
            assert outage.how == "PostgreSQL stopped -m immediate and started again"
            outage.start()
            refused = None
            deadline = time.monotonic() + 30
            while refused is None and time.monotonic() < deadline:
                try:
                    store.incidents()  # no WAL reader here: reads fail too
                    time.sleep(0.2)
                except TransientError as exc:
                    refused = exc
            assert refused is not None and "unavailable or busy" in str(refused)
            with log.open("a", encoding="utf-8") as out:
                out.write(f"retrying: {refused}\n")
            waits = logging.FileHandler(log, encoding="utf-8")  # as serve's log has them
            logging.getLogger("ppo_dr.store").addHandler(waits)
            try:
                with Store(urls.url, patience_s=60) as patient:  # as serve's runbooks do
                    patient.open_incident("outage", "during", "t", {})  # waits for the restart
                    waited_until = datetime.now(UTC)
            finally:
                logging.getLogger("ppo_dr.store").removeHandler(waits)
                waits.close()
            facts = outage.facts(store, directory / "outbox.jsonl", T0, None)
            store.open_incident("outage", "after", "t", {})  # the pool reconnects
            keys = sorted(i.dedupe_key for i in store.incidents())
            assert keys == ["after", "before", "during"]
        assert facts.down_at is not None and facts.up_at is not None
        assert (facts.up_at - facts.down_at).total_seconds() >= 8.0
        assert waited_until >= facts.down_at + timedelta(seconds=5)  # it waited, not failed
        assert facts.store_errors >= 2 and facts.problems == ()  # the error and the waits
        assert store_database.stop(directory) == ["store postgres"]
        assert store_database.stop(directory) == []
    finally:
        store_database.stop(directory)
        shutil.rmtree(directory, ignore_errors=True)
