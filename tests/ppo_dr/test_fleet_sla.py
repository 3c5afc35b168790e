"""The fleet and SLA report: outage minutes from the probe's transitions (pure, table
driven), each table from a real store, the charts (real PNGs, one per table with data),
hostile text escaped, and ``ppo-dr report fleet`` with its bad input."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ppo_dr.fleet_sla import fleet_report_for, outage_minutes
from ppo_dr.fleet_sla_html import fleet_report_html, fleet_report_markdown
from ppo_dr.inventory import load_fleet
from ppo_dr.store import ProbeTransition, Store
from tests.ppo_dr.test_evidence import failed_page

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fleet.yaml"
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)


def t(minute: float, to: str) -> ProbeTransition:
    return ProbeTransition(0, "client:acme-mining", "x", to, START + timedelta(minutes=minute), "")


@pytest.mark.parametrize(
    ("transitions", "minutes"),
    [
        ([], 0.0),
        ([t(10, "suspect"), t(11, "up")], 0.0),  # a blip never counts
        ([t(10, "suspect"), t(13, "down"), t(30, "recovering"), t(31, "up")], 20.0),
        ([t(13, "down"), t(30, "up")], 17.0),  # no suspect recorded: from down
        ([t(-20, "suspect"), t(-17, "down"), t(5, "recovering")], 5.0),  # began before
        ([t(43190, "suspect"), t(43195, "down")], 10.0),  # still out at the end
        ([t(1, "suspect"), t(2, "up"), t(5, "down"), t(6, "up")], 1.0),  # old suspect reset
        ([t(10, "suspect"), t(13, "down"), t(20, "recovering"), t(21, "down"), t(25, "up")], 14.0),
    ],
    ids=["none", "blip", "outage", "no-suspect", "before", "ongoing", "reset", "relapse"],
)
def test_outage_minutes_run_from_the_first_failure_to_the_first_answer(
    transitions: list[ProbeTransition], minutes: float
) -> None:
    assert outage_minutes(transitions, START, END) == pytest.approx(minutes)


def at(days: float) -> datetime:
    return START + timedelta(days=days)


def fill(store: Store) -> None:
    """Thirty minutes of outage for acme-mining, an incident, snapshots with a two-hour
    gap, two drills, a failed SMS."""
    store.record_probe_transition("client:acme-mining", "up", "suspect", at=at(2))
    store.record_probe_transition(
        "client:acme-mining", "suspect", "down", at=at(2) + timedelta(minutes=3)
    )
    store.record_probe_transition(
        "client:acme-mining", "down", "up", at=at(2) + timedelta(minutes=30)
    )
    incident, _ = store.open_incident(
        "outage", "k", "down", {"clients": ["acme-mining"]}, at=at(2) + timedelta(minutes=3)
    )
    store.add_timeline(incident.id, "first-failure", "", at=at(2))
    store.acknowledge(incident.id, "anna", at=at(2) + timedelta(minutes=5))
    store.mark_recovered(incident.id, at=at(2) + timedelta(minutes=30))
    store.annotate(incident.id, "<b>PSU</b>", None, None)
    for hours in (0, 1, 3, 4):
        snap = store.record_snapshot(
            server_id="app-jhb1-1",
            client_id="acme-mining",
            mirror_id="mirror-jhb1-1",
            snapshot_id=f"2026-11-05T0{hours}0000Z",
            taken_at=at(4) + timedelta(hours=hours),
            files=1,
            bytes=1000,
            new_bytes=10_000_000,
            run_seconds=20.0 + hours,  # 20, 21, 23, 24 s
        )
        store.mark_snapshot_verified(
            "mirror-jhb1-1", "acme-mining", snap.snapshot_id, at=snap.taken_at, ok=hours != 4
        )
    for day, ok in ((3, True), (10, False)):
        store.record_drill(
            client_id="acme-mining",
            mirror_id="mirror-cpt1-1",
            snapshot_id="s",
            started_at=at(day),
            finished_at=at(day) + timedelta(minutes=1),
            ok=ok,
            restore_seconds=40.0 + day,
            snapshot_age_seconds=600.0,
        )
    failed_page(store, incident.id, at(2), "SNS 500")


def test_every_table_from_the_store(store: Store) -> None:
    fill(store)
    report = fleet_report_for(store, load_fleet(EXAMPLE), START, END)
    acme = report.availability.set_index("client").loc["acme-mining"]
    assert acme["outage_min"] == 30.0 and acme["target_pct"] == 99.9
    assert acme["availability_pct"] == pytest.approx(100 * (1 - 30 / (30 * 24 * 60)), abs=1e-4)
    assert acme["met"]  # 30 minutes of 43 200 is 99.93 %
    means = report.means()
    assert means == {
        "MTTD": timedelta(minutes=3),
        "MTTA": timedelta(minutes=2),
        "MTTR": timedelta(minutes=30),
    }
    assert report.by_kind_and_cause().to_dict("records") == [
        {"kind": "outage", "cause": "<b>PSU</b>", "incidents": 1}
    ]
    assert report.rpo["gap_min"].tolist() == [60.0, 120.0, 60.0]
    assert report.rpo_worst().to_dict("records") == [
        {
            "client": "acme-mining",
            "mirror": "mirror-jhb1-1",
            "worst_gap_min": 120.0,
            "over_promise": 1,
        }
    ]
    assert report.mirror_bytes.to_dict("records")[0]["new_bytes"] == 40_000_000
    assert report.mirror_durations().to_dict("records") == [
        {"server": "app-jhb1-1", "runs": 4, "median_s": 22.0, "max_s": 24.0}
    ]
    verify = {
        (r["status"], r["verified"]): r["snapshots"] for r in report.verify.to_dict("records")
    }
    assert verify == {("complete", True): 3, ("damaged", True): 1}
    assert report.drills["ok"].tolist() == [True, False]
    assert report.failed_notices.to_dict("records") == [{"channel": "sms", "failed": 1}]


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_every_chart_is_a_real_png_and_hostile_text_is_escaped(store: Store) -> None:
    import matplotlib.image

    fill(store)
    report = fleet_report_for(store, load_fleet(EXAMPLE), START, END)
    page = fleet_report_html(report)
    images = pngs(page)
    assert len(images) == page.count('<img class="chart"') == 7  # every chart has data
    for data in images:
        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 300
    assert "<b>PSU</b>" not in page and "&lt;b&gt;PSU&lt;/b&gt;" in page
    text = fleet_report_markdown(report, images={"Availability": None})
    assert "<b>" not in text and "_nothing recorded in the period_" in text
    empty = fleet_report_for(store, load_fleet(EXAMPLE), END, END + timedelta(days=1))
    assert len(pngs(fleet_report_html(empty))) == 1  # availability only: nothing else happened


def test_the_command_writes_the_page_and_refuses_bad_input(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(store)
    env = {"PPO_DR_DB_URL": store.url, "PPO_DR_FLEET": str(EXAMPLE)}
    out = tmp_path / "out" / "fleet.html"
    runner = CliRunner()
    args = ["report", "fleet", "--from", "2026-11-03", "--to", "2026-11-03", "-o", str(out)]
    done = runner.invoke(app, args, env=env)
    assert done.exit_code == 0, done.output
    assert "2026-11-03 00:00Z to 2026-11-04 00:00Z" in done.output  # --to day included
    page = out.read_text()  # one day: the outage and its incident, nothing mirrored
    assert len(pngs(page)) == 2 and "<td>acme-mining</td>" in page
    for bad, said in (
        (["--from", "2026-11-30", "--to", "2026-11-01"], "must come after"),
        (["--from", "yesterday", "--to", "2026-11-01"], "give a date"),
    ):
        result = runner.invoke(
            app, ["report", "fleet", *bad, "-o", str(tmp_path / "x.html")], env=env
        )
        assert result.exit_code == 2 and said in result.output
    wrong = runner.invoke(app, [*args[:-1], str(tmp_path / "x.pdf")], env=env)
    assert wrong.exit_code == 2 and "name the file *.html" in wrong.output
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "x.pdf").exists()
