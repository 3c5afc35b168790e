"""The HTML report: the table with the issue's columns and a chart per fault, inline."""

from __future__ import annotations

import json
from dataclasses import replace

from ppo_dr.lab.chaos.catalogue import BY_NAME
from ppo_dr.lab.chaos.report import report_html, results_json, results_table
from ppo_dr.lab.chaos.verdict import RESULT_KEYS, judge
from tests.chaos.test_verdict import GOOD_FLAP, GOOD_OUTAGE


def test_the_report_has_the_table_and_one_inline_svg_chart_per_fault() -> None:
    power = judge(BY_NAME["power"], GOOD_OUTAGE)
    flap = judge(BY_NAME["flapping"], replace(GOOD_FLAP, target="<b>x</b>"))
    page = report_html([power, flap], title="chaos", duration_s=321.4)
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 2
    assert "<?xml" not in page
    assert "2 of 2 faults held; the run took 321 s." in page
    for key in RESULT_KEYS:
        assert f"<th>{key}</th>" in page
    assert "<b>x</b>" not in page  # everything from outside is escaped
    assert "&lt;b&gt;x&lt;/b&gt;" in page


def test_the_json_is_one_object_per_fault_with_exactly_the_issue_keys() -> None:
    rows = json.loads(results_json([judge(BY_NAME["power"], GOOD_OUTAGE)]))
    assert [list(row) for row in rows] == [list(RESULT_KEYS)]


def test_the_terminal_table_says_which_fault_failed_and_why() -> None:
    failed = judge(BY_NAME["power"], replace(GOOD_OUTAGE, target="app-9", pages=()))
    text = results_table([failed])
    assert text.splitlines()[1].split()[:3] == ["power", "app-9", "NO"]
    assert "power: nobody was paged" in text
