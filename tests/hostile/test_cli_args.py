"""Hostile ids and unknown ids on the command line, in-process: each is refused with
one clear line and exit 2, and the store is byte-for-byte what it was."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ppo_dr.store import Store
from tests.cli.entry import ROOT
from tests.hostile.fleets import store_with_an_incident
from tests.ppo_dr.hostile_ids import HOSTILE_ID_SAMPLE

EXAMPLE = ROOT / "examples" / "fleet.yaml"
#: The shell, path and whitespace tricks of the shared sample, NUL, and 10 kB.
HOSTILE = [*HOSTILE_ID_SAMPLE[:3], "$(reboot)", "a\nb", "a\x00b", "a" * 10_240]
assert set(HOSTILE[:5]) <= set(HOSTILE_ID_SAMPLE)

Dump = Callable[[], list[str]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite store with one open incident, made once (migrating is slow)."""
    return store_with_an_incident(tmp_path_factory.mktemp("hostile-store") / "state.db")


@pytest.fixture
def dump(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dump]:
    """A fresh copy of the template store; returns what is in it, row by row."""
    db = tmp_path / "state.db"
    shutil.copyfile(template, db)
    monkeypatch.setenv("PPO_DR_DB_URL", f"sqlite:///{db}")
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PPO_DR_FLEET", str(EXAMPLE))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)

    def rows() -> list[str]:
        with sqlite3.connect(db) as conn:
            return list(conn.iterdump())

    yield rows


def _refused(args: list[str], dump: Dump) -> str:
    before = dump()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    assert "Traceback" not in result.output
    assert dump() == before, f"{args} changed the store"
    return result.output


#: Every command that takes an id as an argument or option, with {} where it goes.
ID_COMMANDS = [
    ["maintenance", "start", "--server", "{}"],
    ["maintenance", "start", "--dc", "{}"],
    ["maintenance", "start", "--client", "{}"],
    ["failover", "plan", "--server", "{}"],
    ["failover", "plan", "--dc", "{}"],
    ["failover", "approve", "{}", "--by", "anna"],
    ["mirror", "restore", "{}", "--to", "app-jhb1-2"],
    ["mirror", "restore", "acme-mining", "--to", "{}"],
    ["mirror", "restore", "acme-mining", "--to", "app-jhb1-2", "--snapshot", "{}"],
    ["mirror", "ls", "--client", "{}"],
    ["mirror", "ls", "--mirror", "{}"],
    ["failover", "plan", "--clients", "acme-mining,{}"],
    ["failover", "plan", "--server", "app-jhb1-1", "--to-server", "{}"],
    ["incident", "ack", "{}", "--by", "anna"],
    ["incident", "show", "{}"],
]


@pytest.mark.parametrize("command", ID_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda v: repr(v[:12]))
def test_hostile_ids_are_refused_and_change_nothing(
    command: list[str], hostile: str, dump: Dump
) -> None:
    _refused([hostile if part == "{}" else part for part in command], dump)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["maintenance", "start", "--server", "app-nowhere-9"], "not in"),
        (["maintenance", "start", "--dc", "nowhere"], "not in"),
        (["maintenance", "start", "--client", "no-such-client"], "not in"),
        (["incident", "ack", "999", "--by", "anna"], "no incident with id 999"),
        (["incident", "resolve", "999", "--by", "anna"], "999"),
        (["maintenance", "end", "999"], "999"),
    ],
)
def test_unknown_ids_are_refused_and_change_nothing(args: list[str], says: str, dump: Dump) -> None:
    assert says in _refused(args, dump)


@pytest.mark.parametrize("who", ["", "a\x00b", "a" * 10_240])
def test_an_ack_by_nobody_or_a_hostile_name_is_refused(who: str, dump: Dump) -> None:
    _refused(["incident", "ack", "1", "--by", who], dump)


def test_an_ack_records_who_took_the_incident(dump: Dump) -> None:
    result = CliRunner().invoke(app, ["incident", "ack", "1", "--by", "anna", "--note", "on it"])
    assert result.exit_code == 0, result.output
    assert "incident 1 acknowledged by anna" in result.output
    with Store.open() as store:
        incident = store.incident(1)
        assert incident is not None and incident.acknowledged_by == "anna"
        [entry] = [e for e in store.timeline(1) if e.kind == "acknowledged"]
        assert "anna" in entry.message and "on it" in entry.message


def test_approving_without_a_run_waiting_is_refused(dump: Dump) -> None:
    """A well-formed plan id no run waits on: refused before anything is resumed."""
    assert "no Prefect API" in _refused(["failover", "approve", "0" * 16, "--by", "anna"], dump)
