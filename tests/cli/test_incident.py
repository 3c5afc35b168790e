"""``ppo-dr incident ...`` on a real SQLite store, without a Prefect API: list, show,
annotate, ack (recorded; no run to resume), resolve, report in Markdown and HTML."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ppo_dr.store import Store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("PPO_DR_DB_URL", url)
    monkeypatch.setenv("PPO_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PPO_DR_FLEET", str(tmp_path / "no-fleet.yaml"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with Store(url) as opened:
        opened.upgrade()
        yield opened


def ppo_dr(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def opened(store: Store) -> int:
    incident, _ = store.open_incident(
        "outage",
        "server/app-jhb1-1",
        "app server app-jhb1-1 down",
        {"server": "app-jhb1-1", "clients": ["acme-mining", "karoo-logistics"]},
        flow_run_id="11111111-2222-3333-4444-555555555555",
    )
    store.record_notice(
        f"incident:{incident.id}/step:page.e0.r0.l1/to:anna/via:sms",
        incident_id=incident.id,
        step="page.e0.r0.l1",
        channel="sms",
        recipient="anna",
        subject="s",
        body="b",
    )
    return incident.id


def test_ls_show_annotate_ack_resolve_report(store: Store, tmp_path: Path) -> None:
    assert "no open incidents" in ppo_dr("incident", "ls")
    incident_id = opened(store)
    listed = ppo_dr("incident", "ls")
    assert "app server app-jhb1-1 down" in listed and "open" in listed

    shown = ppo_dr("incident", "show", str(incident_id))
    assert "clients:  acme-mining, karoo-logistics" in shown
    assert "[run 11111111-2222-3333-4444-555555555555]" in shown
    assert "pending sms" in shown

    out = ppo_dr("incident", "ack", str(incident_id), "--by", "anna", "--note", "on it")
    assert "acknowledged by anna" in out and "no Prefect API known" in out
    acked = store.incident(incident_id)
    assert acked is not None and acked.state == "acknowledged" and acked.acknowledged_by == "anna"

    ppo_dr("incident", "annotate", str(incident_id), "--cause", "PSU <b>failed</b>")
    ppo_dr("incident", "resolve", str(incident_id), "--by", "anna")
    assert "no open incidents" in ppo_dr("incident", "ls")
    assert "resolved" in ppo_dr("incident", "ls", "--all")

    markdown = ppo_dr("incident", "report", str(incident_id))
    assert "## Cause" in markdown and "PSU &lt;b&gt;failed&lt;/b&gt;" in markdown
    page = tmp_path / "out" / "report.html"
    ppo_dr("incident", "report", str(incident_id), "-o", str(page))
    html = page.read_text(encoding="utf-8")
    assert "<h2>Cause</h2>" in html and "<b>failed" not in html


def test_errors_are_one_line(store: Store) -> None:
    result = CliRunner().invoke(app, ["incident", "show", "99"])
    assert result.exit_code == 2 and "no incident with id 99" in result.output
    result = CliRunner().invoke(app, ["incident", "annotate", "99"])
    assert result.exit_code == 2 and "--cause" in result.output
