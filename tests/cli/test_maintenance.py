"""``ppo-dr maintenance start|ls|end`` on a real SQLite store and the example fleet:
windows are opened on ids the fleet knows, listed while in force, ended; bad input is
one line and exit 2."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from cli.maintenance import parse_for
from ppo_dr.errors import PermanentError
from ppo_dr.store import Store
from tests.cli.entry import ROOT

EXAMPLE = ROOT / "examples" / "fleet.yaml"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("PPO_DR_DB_URL", url)
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PPO_DR_FLEET", str(EXAMPLE))
    with Store(url) as opened:
        opened.upgrade()
        yield opened


def maintenance(*args: str) -> Result:
    return CliRunner().invoke(app, ["maintenance", *args])


def window_id(result: Result) -> int:
    assert result.exit_code == 0, result.output
    found = re.search(r"maintenance window (\d+):", result.output)
    assert found, result.output
    return int(found.group(1))


def test_start_ls_end(store: Store) -> None:
    assert "no maintenance window in force" in maintenance("ls").output
    before = datetime.now(UTC)
    server = window_id(maintenance("start", "--server", "app-jhb1-1", "--for", "1h30m"))
    dc = window_id(maintenance("start", "--dc", "cpt1", "--reason", "UPS swap", "--by", "anna"))
    [first, second] = store.active_maintenance()
    assert (first.id, first.scope_kind, first.scope_id) == (server, "server", "app-jhb1-1")
    assert first.ends_at is not None
    assert timedelta(minutes=89) < first.ends_at - before < timedelta(minutes=91)
    assert (second.scope_kind, second.reason, second.created_by) == ("dc", "UPS swap", "anna")
    assert second.ends_at is None
    listed = maintenance("ls").output
    assert "app-jhb1-1" in listed and "(until ended)" in listed and "UPS swap" in listed

    ended = maintenance("end", str(dc))
    assert ended.exit_code == 0, ended.output
    assert f"maintenance window {dc} (dc cpt1) ended at" in ended.output
    assert [w.id for w in store.active_maintenance()] == [server]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start"], "give exactly one of --server, --dc or --client"),
        (["start", "--server", "app-jhb1-1", "--dc", "jhb1"], "give exactly one of"),
        (["start", "--server", "app-jhb9-1"], "server 'app-jhb9-1' is not in"),
        (["start", "--client", "acme-minnig"], "client 'acme-minnig' is not in"),
        (["start", "--dc", "jhb1", "--for", "soon"], "is not a duration like"),
        (["start", "--dc", "jhb1", "--for", "0m"], "--for must be longer than 0"),
        (["end", "999"], "no maintenance window with id 999"),
    ],
)
def test_bad_requests_are_one_line_errors(store: Store, args: list[str], message: str) -> None:
    result = maintenance(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert store.active_maintenance() == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h 30m", 5400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_for(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "2x", "1h and 5m", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(PermanentError, match="not a duration"):
        parse_for(text)
