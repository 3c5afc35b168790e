"""The fleet and SLA report's numbers: is the promise kept, month after month?

For a period ``[start, end)``: availability per client (outage minutes from the probe's
transitions, against the client's ``availability_target`` in fleet.yaml), incidents
by kind and cause, mean time to detect / acknowledge / recover, RPO per client per
mirror over time (the gap between consecutive snapshots, against the one-hour promise),
mirror bytes per day, mirror run durations per app server, verify results, the DR
drill RTO/RPO trend per client, and failed notices by channel. pandas does the
grouping; :mod:`ppo_dr.fleet_sla_html` draws it.

A client's outage runs from the first failed check that led to ``down`` (the
``suspect`` transition before it) to the first answer again (leaving ``down``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import pandas as pd

from ppo_dr.probe.graph import client_target
from ppo_dr.reports import build_report
from ppo_dr.store import Drill, Incident, Notice, ProbeTransition, Snapshot, TimelineEntry

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet
    from ppo_dr.store import Store

#: The operator's promise: no client's newest snapshot is older than this.
RPO_PROMISE: Final = timedelta(hours=1)


@dataclass(frozen=True)
class FleetReport:
    """Every table of the report, as DataFrames (one row per item, plain columns)."""

    fleet: str
    start: datetime
    end: datetime
    availability: pd.DataFrame  # client, name, target_pct, outage_min, availability_pct, met
    incidents: pd.DataFrame  # id, kind, cause, opened_at, detect_s, ack_s, recover_s
    rpo: pd.DataFrame  # client, mirror, taken_at, gap_min (to the previous snapshot)
    mirror_bytes: pd.DataFrame  # day, mirror, bytes, new_bytes, snapshots
    mirror_runs: pd.DataFrame  # server, taken_at, seconds (one row per mirror run)
    verify: pd.DataFrame  # mirror, status, verified, snapshots
    drills: pd.DataFrame  # client, started_at, ok, rto_s, rpo_s
    failed_notices: pd.DataFrame  # channel, failed

    def means(self) -> dict[str, timedelta | None]:
        """MTTD, MTTA, MTTR over the period's incidents (None where nothing measured)."""
        out: dict[str, timedelta | None] = {}
        for name, column in (("MTTD", "detect_s"), ("MTTA", "ack_s"), ("MTTR", "recover_s")):
            values = self.incidents[column].dropna() if len(self.incidents) else pd.Series()
            out[name] = timedelta(seconds=float(values.mean())) if len(values) else None
        return out

    def by_kind_and_cause(self) -> pd.DataFrame:
        """Incident counts per kind and cause."""
        if not len(self.incidents):
            return pd.DataFrame(columns=["kind", "cause", "incidents"])
        return self.incidents.groupby(["kind", "cause"]).size().reset_index(name="incidents")

    def rpo_worst(self) -> pd.DataFrame:
        """Per client and mirror: the worst gap and how many gaps broke the promise."""
        if not len(self.rpo):
            return pd.DataFrame(columns=["client", "mirror", "worst_gap_min", "over_promise"])
        limit = RPO_PROMISE.total_seconds() / 60
        grouped = self.rpo.groupby(["client", "mirror"])["gap_min"]
        return pd.DataFrame(
            {
                "worst_gap_min": grouped.max(),
                "over_promise": grouped.apply(lambda gaps: int((gaps > limit).sum())),
            }
        ).reset_index()

    def mirror_durations(self) -> pd.DataFrame:
        """Per app server: how many mirror runs, their median and longest duration."""
        if not len(self.mirror_runs):
            return pd.DataFrame(columns=["server", "runs", "median_s", "max_s"])
        grouped = self.mirror_runs.groupby("server")["seconds"]
        return pd.DataFrame(
            {"runs": grouped.size(), "median_s": grouped.median(), "max_s": grouped.max()}
        ).reset_index()


def outage_minutes(transitions: Iterable[ProbeTransition], start: datetime, end: datetime) -> float:
    """Minutes of ``[start, end)`` one target spent out (suspect-then-down until it
    left down); *transitions* are the target's, in time order, including earlier ones."""
    total = timedelta()
    suspect_since: datetime | None = None
    down_since: datetime | None = None
    for t in transitions:
        if t.to_state == "suspect":
            suspect_since = t.at
        elif t.to_state == "down":
            down_since = suspect_since or t.at
        elif down_since is not None:  # recovering or up: it answers again
            total += _overlap(down_since, t.at, start, end)
            down_since = suspect_since = None
        else:
            suspect_since = None
    if down_since is not None:
        total += _overlap(down_since, end, start, end)
    return total.total_seconds() / 60


def _overlap(a: datetime, b: datetime, start: datetime, end: datetime) -> timedelta:
    return max(timedelta(), min(b, end) - max(a, start))


def availability_table(
    fleet: Fleet,
    transitions: Mapping[str, Sequence[ProbeTransition]],
    start: datetime,
    end: datetime,
) -> pd.DataFrame:
    """One row per client of *fleet*: target, outage minutes, availability, target met."""
    period = (end - start).total_seconds() / 60
    rows = []
    for client in fleet.clients:
        out = outage_minutes(transitions.get(client_target(client.id), ()), start, end)
        pct = 100.0 * (1 - out / period) if period > 0 else 100.0
        rows.append(
            {
                "client": client.id,
                "name": client.name,
                "target_pct": client.availability_target,
                "outage_min": round(out, 1),
                "availability_pct": round(pct, 4),
                "met": pct >= client.availability_target,
            }
        )
    return pd.DataFrame(
        rows, columns=["client", "name", "target_pct", "outage_min", "availability_pct", "met"]
    )


def incident_table(incidents: Iterable[tuple[Incident, Sequence[TimelineEntry]]]) -> pd.DataFrame:
    """One row per incident: kind, cause, and seconds to detect, acknowledge, recover."""
    rows = []
    for incident, timeline in incidents:
        report = build_report(incident, timeline, [])
        rows.append(
            {
                "id": incident.id,
                "kind": incident.kind,
                "cause": (incident.cause or "").strip() or "not recorded",
                "opened_at": incident.opened_at,
                "detect_s": _s(report.time_to_detect),
                "ack_s": _s(report.time_to_ack),
                "recover_s": _s(report.time_to_recover),
            }
        )
    columns = ["id", "kind", "cause", "opened_at", "detect_s", "ack_s", "recover_s"]
    return pd.DataFrame(rows, columns=columns)


def _s(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def rpo_table(snapshots: Iterable[Snapshot], start: datetime, end: datetime) -> pd.DataFrame:
    """Per client and mirror, each snapshot of the period with the gap (minutes) since
    the one before it: the worst age that client's newest copy reached there."""
    rows = []
    last: dict[tuple[str, str], datetime] = {}
    for s in sorted(snapshots, key=lambda s: (s.taken_at, s.id)):
        key = (s.client_id, s.mirror_id)
        before = last.get(key)
        last[key] = s.taken_at
        if before is not None and start <= s.taken_at < end:
            gap = (s.taken_at - before).total_seconds() / 60
            rows.append(
                {
                    "client": key[0],
                    "mirror": key[1],
                    "taken_at": s.taken_at,
                    "gap_min": round(gap, 2),
                }
            )
    return pd.DataFrame(rows, columns=["client", "mirror", "taken_at", "gap_min"])


def mirror_tables(
    snapshots: Iterable[Snapshot], start: datetime, end: datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bytes per day per mirror, and verify results per mirror, for the period."""
    frame = pd.DataFrame(
        [
            {
                "day": s.taken_at.date(),
                "mirror": s.mirror_id,
                "bytes": s.bytes,
                "new_bytes": s.new_bytes,
                "status": s.status,
                "verified": s.verified_at is not None,
            }
            for s in snapshots
            if start <= s.taken_at < end
        ],
        columns=["day", "mirror", "bytes", "new_bytes", "status", "verified"],
    )
    if not len(frame):
        return (
            pd.DataFrame(columns=["day", "mirror", "bytes", "new_bytes", "snapshots"]),
            pd.DataFrame(columns=["mirror", "status", "verified", "snapshots"]),
        )
    per_day = (
        frame.groupby(["day", "mirror"])
        .agg(bytes=("bytes", "sum"), new_bytes=("new_bytes", "sum"), snapshots=("bytes", "size"))
        .reset_index()
    )
    verify = frame.groupby(["mirror", "status", "verified"]).size().reset_index(name="snapshots")
    return per_day, verify


def mirror_run_table(snapshots: Iterable[Snapshot], start: datetime, end: datetime) -> pd.DataFrame:
    """One row per mirror run of the period (one app server's run, for all its clients and
    mirrors): server, when, seconds. Runs catalogued before durations were kept are left
    out rather than counted as zero."""
    runs = {
        (s.server_id, s.taken_at): s.run_seconds
        for s in snapshots
        if start <= s.taken_at < end and s.run_seconds is not None
    }
    return pd.DataFrame(
        [{"server": k[0], "taken_at": k[1], "seconds": v} for k, v in sorted(runs.items())],
        columns=["server", "taken_at", "seconds"],
    )


def drill_table(drills: Iterable[Drill], start: datetime, end: datetime) -> pd.DataFrame:
    """Every drill of the period: client, when, result, RTO and RPO in seconds."""
    rows = [
        {
            "client": d.client_id,
            "started_at": d.started_at,
            "ok": d.ok,
            "rto_s": d.restore_seconds,
            "rpo_s": d.snapshot_age_seconds,
        }
        for d in drills
        if start <= d.started_at < end
    ]
    return pd.DataFrame(rows, columns=["client", "started_at", "ok", "rto_s", "rpo_s"])


def failed_notice_table(notices: Iterable[Notice], start: datetime, end: datetime) -> pd.DataFrame:
    """Failed notices of the period per channel."""
    frame = pd.DataFrame(
        [
            {"channel": n.channel}
            for n in notices
            if n.status == "failed" and start <= n.created_at < end
        ],
        columns=["channel"],
    )
    return frame.groupby("channel").size().reset_index(name="failed")


def fleet_report_for(store: Store, fleet: Fleet, start: datetime, end: datetime) -> FleetReport:
    """The report of *fleet* for ``[start, end)`` from *store*."""
    transitions = {
        client_target(c.id): store.probe_transitions(client_target(c.id)) for c in fleet.clients
    }
    incidents = [(i, store.timeline(i.id)) for i in store.incidents() if start <= i.opened_at < end]
    snapshots = store.snapshots()
    per_day, verify = mirror_tables(snapshots, start, end)
    return FleetReport(
        fleet=fleet.name,
        start=start,
        end=end,
        availability=availability_table(fleet, transitions, start, end),
        incidents=incident_table(incidents),
        rpo=rpo_table(snapshots, start, end),
        mirror_bytes=per_day,
        mirror_runs=mirror_run_table(snapshots, start, end),
        verify=verify,
        drills=drill_table(store.drills(), start, end),
        failed_notices=failed_notice_table(store.notices(), start, end),
    )
