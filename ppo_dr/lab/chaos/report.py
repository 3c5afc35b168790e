"""The chaos run as a standalone HTML page: the table, and a timeline chart per fault.

The chart is drawn with matplotlib (Agg, no display) and inlined as SVG, so the page
is one file to attach to a review. matplotlib is imported inside :func:`timeline_svg`
only: ``ppo-dr --help`` must stay fast.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence

from ppo_dr.lab.chaos.verdict import RESULT_KEYS, ChaosResult

_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #999;padding:.3em .6em;text-align:left;vertical-align:top}"
    ".held{background:#dfd}.failed{background:#fdd}svg{max-width:100%;height:auto}"
)
#: Event rows of the chart, top to bottom: what each event's label starts with, and
#: the row's name on the axis.
_LANES = ("fault injected", "first failed check", "incident", "page", "failover", "heal")
_LANE_NAMES = ("fault", "probe", "incident", "pages", "failover", "heal")


def _lane(label: str) -> int:
    for index, start in enumerate(_LANES):
        if label.startswith(start):
            return index
    return len(_LANES) - 1  # "healthy again" shares the heal lane


def timeline_svg(result: ChaosResult) -> str:
    """The fault's events on a time axis (seconds after the injection), as SVG text."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 2.8))
    try:
        lanes = [_lane(what) for what, _ in result.events]
        times = [at for _, at in result.events]
        axes.scatter(times, lanes, marker="|", s=300, color="#c33" if not result.passed else "#363")
        for (what, at), lane in zip(result.events, lanes, strict=True):
            if not what.startswith("page"):  # pages are many: the lane says it
                axes.annotate(
                    what, (at, lane), textcoords="offset points", xytext=(3, 6), fontsize=7
                )
        axes.set_yticks(range(len(_LANES)), _LANE_NAMES)
        axes.set_ylim(len(_LANES) - 0.5, -0.7)
        axes.set_xlabel("seconds after the fault was injected")
        axes.set_title(f"{result.fault} on {result.target}", fontsize=9)
        axes.grid(axis="x", alpha=0.3)
        figure.tight_layout()
        out = io.StringIO()
        figure.savefig(out, format="svg")
    finally:
        plt.close(figure)
    text = out.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog: the SVG sits inside HTML


def _cell(value: object) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, list):
        return "<br>".join(html.escape(str(v)) for v in value) or "&ndash;"
    return html.escape(str(value))


def report_html(results: Sequence[ChaosResult], *, title: str, duration_s: float) -> str:
    """The whole page: a summary line, the issue's table, then each fault's chart."""
    held = sum(1 for r in results if r.passed)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in RESULT_KEYS)
    rows = []
    for result in results:
        row = result.as_json()
        cells = "".join(f"<td>{_cell(row[k])}</td>" for k in RESULT_KEYS)
        rows.append(f'<tr class="{"held" if result.passed else "failed"}">{cells}</tr>')
    charts = [
        f"<h2>{html.escape(r.fault)} on {html.escape(r.target)}</h2>\n{timeline_svg(r)}"
        for r in results
    ]
    return "\n".join(
        [
            "<!doctype html>",
            f'<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
            f"<style>{_STYLE}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p>{held} of {len(results)} faults held; the run took {duration_s:.0f} s.</p>",
            f"<table><tr>{head}</tr>",
            *rows,
            "</table>",
            *charts,
            "</body></html>",
        ]
    )


def results_json(results: Sequence[ChaosResult]) -> str:
    """One JSON object per fault, in a list, with exactly the issue's keys."""
    return json.dumps([r.as_json() for r in results], indent=1, ensure_ascii=False) + "\n"


def results_table(results: Sequence[ChaosResult]) -> str:
    """The terminal's table: one line per fault, the issue's numbers."""
    head = ("FAULT", "TARGET", "HELD", "DETECT_S", "INC", "PAGES", "DUP", "RTO_S", "LOST", "BEYOND")
    lines: list[tuple[str, ...]] = [head]
    for r in results:
        lines.append(
            tuple(
                "-" if v is None else str(v)
                for v in (
                    r.fault,
                    r.target,
                    "yes" if r.passed else "NO",
                    r.detected_after_s,
                    r.incidents_opened,
                    r.pages_sent,
                    r.duplicate_notices,
                    r.rto_s,
                    r.acked_writes_lost,
                    r.lost_beyond_rpo,
                )
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    for r in results:
        text += [f"{r.fault}: {note}" for note in r.notes]
    return "\n".join(text)
