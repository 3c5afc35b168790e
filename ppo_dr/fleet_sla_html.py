"""The fleet and SLA report rendered: charts (matplotlib, PNG) embedded in one HTML file,
or in the Markdown of the Prefect artifact.

matplotlib is imported when a chart is drawn (Agg backend, no display), never at import,
so the command line stays quick. Each chart is a ``data:image/png;base64`` image, so the
page is one self-contained file to mail or archive; a chart with nothing to show is a
sentence instead of an empty frame.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import pandas as pd

from ppo_dr.fleet_sla import RPO_PROMISE, FleetReport
from ppo_dr.reports import duration_text, md

if TYPE_CHECKING:
    from matplotlib.axes import Axes

NO_DATA: Final = "nothing recorded in the period"
_CSS: Final = (
    "body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;"
    "padding:.25rem .5rem;text-align:left}th{background:#f4f4f4}img{max-width:100%}"
)


def _png(draw: Callable[[Axes], None], height: float = 3.2) -> str:
    """Draw on a fresh figure and return it as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=(9, height))
    try:
        draw(axes)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _availability(report: FleetReport) -> Callable[[Axes], None]:
    frame = report.availability

    def draw(ax: Axes) -> None:
        colours = ["tab:green" if met else "tab:red" for met in frame["met"]]
        ax.bar(frame["client"], frame["availability_pct"], color=colours)
        ax.scatter(
            frame["client"],
            frame["target_pct"],
            marker="_",
            s=400,
            color="black",
            label="target",
            zorder=3,
        )
        low = min(float(frame["availability_pct"].min()), float(frame["target_pct"].min()))
        ax.set_ylim(max(0.0, low - 0.5), 100.05)
        ax.set_ylabel("availability %")
        ax.set_title("Availability per client against its target")
        ax.legend(loc="lower right")
        ax.tick_params(axis="x", labelrotation=30)

    return draw


def _rpo(report: FleetReport) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        for (client, mirror), rows in report.rpo.groupby(["client", "mirror"]):
            ax.plot(rows["taken_at"], rows["gap_min"], marker=".", label=f"{client} @ {mirror}")
        ax.axhline(
            RPO_PROMISE.total_seconds() / 60, color="red", linestyle="--", label="promise (1 h)"
        )
        ax.set_ylabel("minutes since previous snapshot")
        ax.set_title("RPO per client per mirror")
        ax.legend(fontsize="x-small", ncol=2)

    return draw


def _bytes(report: FleetReport) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        for mirror, rows in report.mirror_bytes.groupby("mirror"):
            ax.plot(rows["day"], rows["new_bytes"] / 1e6, marker="o", label=str(mirror))
        ax.set_ylabel("new MB per day")
        ax.set_title("Mirror traffic (new bytes written)")
        ax.legend(fontsize="x-small")

    return draw


def _durations(report: FleetReport) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        for server, rows in report.mirror_runs.groupby("server"):
            ax.plot(rows["taken_at"], rows["seconds"], marker=".", label=str(server))
        ax.set_ylabel("seconds")
        ax.set_title("Mirror run duration per app server")
        ax.legend(fontsize="x-small")

    return draw


def _drills(report: FleetReport, column: str, title: str) -> Callable[[Axes], None]:
    def draw(ax: Axes) -> None:
        for client, rows in report.drills.groupby("client"):
            ax.plot(rows["started_at"], rows[column], marker="o", label=str(client))
            failed = rows[~rows["ok"].astype(bool)]
            ax.scatter(failed["started_at"], failed[column], marker="x", color="red", zorder=3)
        ax.set_ylabel("seconds")
        ax.set_title(title + " (x: failed drill)")
        ax.legend(fontsize="x-small")

    return draw


def _incidents(report: FleetReport) -> Callable[[Axes], None]:
    counts = report.incidents.groupby("kind").size()

    def draw(ax: Axes) -> None:
        ax.bar([str(k) for k in counts.index], counts.to_numpy())
        ax.set_ylabel("incidents")
        ax.set_title("Incidents by kind")

    return draw


def charts(report: FleetReport) -> dict[str, str | None]:
    """Chart title -> base64 PNG (None when the period has nothing to draw)."""
    plan: list[tuple[str, pd.DataFrame, Callable[[Axes], None]]] = [
        ("Availability", report.availability, _availability(report)),
        ("Incidents by kind", report.incidents, _incidents(report)),
        ("RPO per client per mirror", report.rpo, _rpo(report)),
        ("Mirror traffic", report.mirror_bytes, _bytes(report)),
        ("Mirror durations", report.mirror_runs, _durations(report)),
        ("Drill RTO trend", report.drills, _drills(report, "rto_s", "DR drill RTO per client")),
        ("Drill RPO trend", report.drills, _drills(report, "rpo_s", "DR drill RPO per client")),
    ]
    return {title: _png(draw) if len(frame) else None for title, frame, draw in plan}


def _tables(report: FleetReport) -> list[tuple[str, pd.DataFrame]]:
    means = report.means()
    summary = pd.DataFrame([{"measure": k, "mean": duration_text(v)} for k, v in means.items()])
    return [
        ("Availability per client", report.availability),
        ("MTTD / MTTA / MTTR", summary),
        ("Incidents by kind and cause", report.by_kind_and_cause()),
        ("RPO: worst gap per client and mirror", report.rpo_worst()),
        ("Mirror bytes per day", report.mirror_bytes),
        ("Mirror run durations per app server", report.mirror_durations()),
        ("Verify results", report.verify),
        ("DR drills", report.drills),
        ("Failed notices by channel", report.failed_notices),
    ]


def _title(report: FleetReport) -> str:
    return (
        f"Fleet report {report.fleet}: {report.start:%Y-%m-%d %H:%M}Z "
        f"to {report.end:%Y-%m-%d %H:%M}Z"
    )


def _h(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html_table(frame: pd.DataFrame) -> str:
    if not len(frame):
        return f"<p><em>{NO_DATA}</em></p>"
    head = "".join(f"<th>{_h(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_h(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def fleet_report_html(report: FleetReport, images: dict[str, str | None] | None = None) -> str:
    """The report as one self-contained HTML page; every value escaped."""
    images = charts(report) if images is None else images
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(_title(report))}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(_title(report))}</h1>",
    ]
    for name, frame in _tables(report):
        parts += [f"<h2>{_h(name)}</h2>", _html_table(frame)]
    parts.append("<h2>Charts</h2>")
    for title, png in images.items():
        parts.append(f"<h3>{_h(title)}</h3>")
        parts.append(
            f'<img class="chart" alt="{_h(title)}" src="data:image/png;base64,{png}">'
            if png
            else f"<p><em>{NO_DATA}</em></p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_table(frame: pd.DataFrame) -> list[str]:
    if not len(frame):
        return [f"_{NO_DATA}_"]
    rows: list[Any] = list(frame.itertuples(index=False))
    return [
        "| " + " | ".join(md(c) for c in frame.columns) + " |",
        "|" + "---|" * len(frame.columns),
        *("| " + " | ".join(md(v) for v in row) + " |" for row in rows),
    ]


def fleet_report_markdown(report: FleetReport, images: dict[str, str | None] | None = None) -> str:
    """The report as Markdown (the Prefect artifact), charts as embedded PNG images."""
    images = charts(report) if images is None else images
    lines = [f"# {md(_title(report))}", ""]
    for name, frame in _tables(report):
        lines += [f"## {md(name)}", "", *_md_table(frame), ""]
    lines += ["## Charts", ""]
    for title, png in images.items():
        shown = f"![{md(title)}](data:image/png;base64,{png})" if png else f"_{NO_DATA}_"
        lines += [f"### {md(title)}", "", shown, ""]
    return "\n".join(lines)
