"""``ppo-dr lab chaos`` as an operator runs it: bad input refused before anything is
touched (fast), and one power cut on a lab of our own, judged from the lab's records
(slow: a Prefect server, the probe's 20 s threshold and a failover take minutes)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ppo_dr.lab.chaos.verdict import RESULT_KEYS
from tests.chaos.test_catalogue import IMPLEMENTED
from tests.cli.entry import ppo_dr_argv
from tests.labs import own_lab
from tests.prefect_fixtures import isolated_env


def chaos(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ppo_dr_argv(), "lab", "chaos", *args],
        env=isolated_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize(
    ("faults", "says"),
    [
        ("pigeon", "unknown fault 'pigeon'"),
        ("power,nope", "unknown fault 'nope'"),
    ],
)
def test_a_fault_unknown_is_refused_before_the_lab_is_read(
    tmp_path: Path, faults: str, says: str
) -> None:
    done = chaos("--dir", str(tmp_path / "no-lab"), "--faults", faults)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert IMPLEMENTED in done.stderr
    assert not (tmp_path / "no-lab").exists()


def test_a_soak_that_is_no_duration_is_refused(tmp_path: Path) -> None:
    done = chaos("--dir", str(tmp_path / "no-lab"), "--faults", "power", "--soak", "5x")
    assert done.returncode == 2
    assert "--soak '5x' is not a duration" in done.stderr


def test_no_running_lab_is_a_clear_error(tmp_path: Path) -> None:
    done = chaos("--dir", str(tmp_path / "no-lab"), "--faults", "power")
    assert done.returncode == 2
    assert "no lab in" in done.stderr


@pytest.mark.slow
@pytest.mark.lab
@pytest.mark.prefect
@pytest.mark.timeout(1200)
def test_a_power_cut_is_survived_and_the_evidence_written(tmp_path: Path) -> None:
    out_json, out_html = tmp_path / "chaos.json", tmp_path / "chaos.html"
    with own_lab(tmp_path / "lab", clients=3, size_mb=2, settle_s=3) as lab:
        done = chaos(
            "--dir",
            str(lab.directory),
            "--faults",
            "power",
            "--json",
            str(out_json),
            "--report",
            str(out_html),
            timeout=1100,
        )
        unhealthy = [row.name for row in lab.status() if not row.healthy]
    assert not unhealthy, f"left broken by the chaos run: {unhealthy}"
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = json.loads(out_json.read_text(encoding="utf-8"))
    assert list(row) == list(RESULT_KEYS)
    assert row["fault"] == "power" and row["passed"] is True
    assert row["incidents_opened"] == 1 and row["pages_sent"] >= 1
    assert row["duplicate_notices"] == 0 and row["lost_beyond_rpo"] == 0
    assert row["rto_s"] is not None and row["snapshots_intact"] is True
    page = out_html.read_text(encoding="utf-8")
    assert page.count("<svg") == 1 and "1 of 1 faults held" in page


@pytest.mark.slow
@pytest.mark.lab
@pytest.mark.prefect
@pytest.mark.timeout(1800)
def test_damaged_packs_and_killed_orchestrators_are_noticed_and_survived(tmp_path: Path) -> None:
    out_json = tmp_path / "chaos.json"
    with own_lab(tmp_path / "lab", clients=3, size_mb=2, settle_s=3) as lab:
        done = chaos(
            "--dir",
            str(lab.directory),
            "--faults",
            "bitflip,truncate-pack,orchestrator-kill",
            "--json",
            str(out_json),
            timeout=1700,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["fault"]: row for row in json.loads(out_json.read_text(encoding="utf-8"))}
    assert list(rows) == ["bitflip", "truncate-pack", "orchestrator-kill"]
    for name in ("bitflip", "truncate-pack"):
        row = rows[name]
        assert row["passed"] and row["target"].startswith("mirror-")
        assert row["incidents_opened"] == 1 and row["pages_sent"] == 0  # drill-failed only
        assert "verify named client" in row["notes"][0]
    kill = rows["orchestrator-kill"]
    assert kill["passed"] and kill["snapshots_intact"] is True
    assert kill["incidents_opened"] == 1 and kill["rto_s"] is not None  # the failover half
    mirror_half, failover_half = kill["notes"][:2]
    assert "SIGKILLed" in mirror_half and "holding the lock of" in mirror_half
    assert failover_half.startswith("failover half: failover run killed")
    assert failover_half.endswith("failover done")
