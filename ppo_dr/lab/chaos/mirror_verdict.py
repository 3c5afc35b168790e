"""Judging the mirror-side faults: what the catalogue and the incidents showed, against
issue 10's rules for ``mirror-dies``, ``mirror-disk-full``, ``host-key-change``,
``latency`` and ``clock-skew``.

Pure, like :mod:`ppo_dr.lab.chaos.verdict` (whose :class:`ChaosResult` it returns):
:class:`MirrorObservation` is what the runner read back; a value it could not see is
empty or ``None`` and fails the rule that needs it. Times are the orchestrator's.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from ppo_dr.lab.chaos.catalogue import FaultSpec
from ppo_dr.lab.chaos.verdict import (
    ChaosResult,
    FaultWindow,
    duplicates,
    events_after,
    seconds_after,
    window_result,
)
from ppo_dr.mirror.manifest import snapshot_id_for

#: How far a snapshot's time may be from the fault's window (the run's own clock).
CLOCK_SLACK: Final = timedelta(seconds=5)
#: The RPO under a skewed clock must be within this: a 2 h skew taken for the time would
#: show as hours (or a negative age); runs minutes late on a loaded machine do not.
CLOCK_RPO_LIMIT_S: Final = 1800.0
#: How close the skew a server reports must be to the one injected.
SKEW_TOLERANCE_S: Final = 120.0


@dataclass
class _Judged:
    """Broken rules, and what was measured (reported, never failing)."""

    notes: list[str] = field(default_factory=list)
    measured: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SnapRow:
    """One catalogue row: a client's snapshot on one mirror."""

    client: str
    mirror: str
    snapshot_id: str
    taken_at: datetime
    status: str
    verified_at: datetime | None = None
    new_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Alert:
    """A non-outage incident opened during the fault."""

    id: int
    kind: str
    opened_at: datetime
    title: str
    paging: bool
    text: str = ""  # title and scope, as one string to search


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorObservation(FaultWindow):
    """What the records say about one mirror-side fault.

    ``mirror`` is the mirror the fault hit (None when it hit the app server, as the
    clock skew does) and ``other`` the app server's other mirror. ``rows`` are the
    catalogue rows of ``clients`` taken from one mirror interval before the injection
    on (a run in flight at the injection included). ``stale_open_at_end`` are the
    clients' ``mirror-stale`` incidents still open when the runner stopped waiting.
    """

    app_server: str
    mirror: str | None
    other: str | None
    clients: tuple[str, ...]
    interval_s: float
    threshold_s: float
    ended_at: datetime | None = None
    rows: tuple[SnapRow, ...] = ()
    rows_before: tuple[SnapRow, ...] = ()  # the hit mirror's rows before the fault
    outages: tuple[tuple[int, datetime], ...] = ()
    alerts: tuple[Alert, ...] = ()
    stale_open_at_end: tuple[int, ...] = ()
    elsewhere: tuple[str, ...] = ()  # incidents about other servers and clients: not judged
    pinned_fingerprint: str | None = None
    offered_fingerprint: str | None = None
    skew_seen_s: float | None = None
    in_flight: bool | None = None  # a run was writing to the mirror at the injection


def _during(obs: MirrorObservation, row: SnapRow) -> bool:
    """Taken after the injection and before the heal."""
    return obs.injected_at <= row.taken_at <= (obs.healed_at or obs.injected_at)


def _runs_in_window(obs: MirrorObservation) -> list[str]:
    """Snapshot ids taken from one interval before the injection to the heal."""
    start = obs.injected_at - timedelta(seconds=obs.interval_s)
    end = obs.healed_at or obs.injected_at
    return sorted({r.snapshot_id for r in obs.rows if start <= r.taken_at <= end})


def _complete(obs: MirrorObservation, mirror: str | None, snapshot_id: str) -> set[str]:
    return {
        r.client
        for r in obs.rows
        if r.mirror == mirror and r.snapshot_id == snapshot_id and r.status == "complete"
    }


def other_mirror_complete(obs: MirrorObservation) -> list[str]:
    """The other mirror held every run of the window, for every client (notes if not)."""
    runs = _runs_in_window(obs)
    if not runs:
        return ["no mirror run of the app server during the fault"]
    notes = []
    for snapshot_id in runs:
        taken = {r.client for r in obs.rows if r.snapshot_id == snapshot_id}
        missing = sorted(taken - _complete(obs, obs.other, snapshot_id))
        if missing:
            notes.append(
                f"snapshot {snapshot_id} not complete on the other mirror {obs.other} "
                f"for {', '.join(missing)}"
            )
    return notes


def nothing_listed_on_hit_mirror(obs: MirrorObservation) -> list[str]:
    """No snapshot taken during the fault is listed complete on the mirror it hit."""
    listed = [r for r in obs.rows if r.mirror == obs.mirror and _during(obs, r)]
    bad = sorted(f"{r.client}@{r.snapshot_id}" for r in listed if r.status == "complete")
    return [f"listed complete on {obs.mirror} while it was broken: {', '.join(bad)}"] if bad else []


def caught_up(obs: MirrorObservation) -> list[str]:
    """Every client has a verified snapshot on the hit mirror taken after the heal."""
    after = obs.healed_at
    if after is None:
        return ["never healed, so never caught up"]
    fresh = {
        r.client
        for r in obs.rows
        if r.mirror == obs.mirror
        and r.status == "complete"
        and r.verified_at is not None
        and r.taken_at > after
    }
    behind = sorted(set(obs.clients) - fresh)
    if behind:
        return [f"the next runs did not catch {obs.mirror} up for {', '.join(behind)}"]
    return []


def stale_alerted(obs: MirrorObservation) -> list[str]:
    """A mirror-stale alert opened (non-paging), and none left open once caught up."""
    stale = [a for a in obs.alerts if a.kind == "mirror-stale"]
    notes = []
    if not stale:
        notes.append(f"no stale alert while {obs.mirror} stayed broken past the RPO")
    if any(a.paging for a in stale):
        notes.append("a stale alert paged")
    if obs.stale_open_at_end:
        ids = ", ".join(f"#{i}" for i in obs.stale_open_at_end)
        notes.append(f"stale alert(s) still open after the catch-up: {ids}")
    return notes


def host_key_rules(obs: MirrorObservation) -> list[str]:
    """One non-paging incident naming the server and both fingerprints; no data sent."""
    notes = []
    pinned, offered = obs.pinned_fingerprint, obs.offered_fingerprint
    if not pinned or not offered or pinned == offered:
        notes.append(f"the host key was not seen replaced (pinned {pinned}, offered {offered})")
    found = [a for a in obs.alerts if a.kind != "mirror-stale" and (obs.mirror or "?") in a.text]
    if len(found) != 1:
        notes.append(f"{len(found)} host-key incident(s) naming {obs.mirror}, expected one")
    for alert in found:
        if alert.paging:
            notes.append(f"incident #{alert.id} pages; a changed host key must not")
        for what, fingerprint in (("pinned", pinned), ("offered", offered)):
            if fingerprint and fingerprint not in alert.text:
                notes.append(f"incident #{alert.id} does not name the {what} key {fingerprint}")
    sent = [r for r in obs.rows if r.mirror == obs.mirror and _during(obs, r)]
    if any(r.status == "complete" or r.new_bytes for r in sent):
        notes.append(f"data reached {obs.mirror} with a host key we do not know")
    return notes


def _median_duration(rows: list[SnapRow]) -> float | None:
    spans = [(r.verified_at - r.taken_at).total_seconds() for r in rows if r.verified_at]
    return statistics.median(spans) if spans else None


def rpo_seconds(obs: MirrorObservation, mirror: str | None) -> dict[str, float]:
    """Per client: age of its newest verified snapshot (on *mirror*, or any) at the end."""
    end = obs.ended_at or obs.healed_at or obs.injected_at
    out: dict[str, float] = {}
    for client in obs.clients:
        taken = [
            r.taken_at
            for r in obs.rows + obs.rows_before
            if r.client == client
            and r.status == "complete"
            and r.verified_at is not None
            and (mirror is None or r.mirror == mirror)
        ]
        if taken:
            out[client] = round(max((end - max(taken)).total_seconds(), 0.0), 1)
    return out


def latency_rules(obs: MirrorObservation) -> tuple[list[str], list[str]]:
    """Slower, not failed: (broken rules, what was measured)."""
    notes = []
    during = [r for r in obs.rows if r.mirror == obs.mirror and _during(obs, r)]
    done = {r.client for r in during if r.status == "complete" and r.verified_at is not None}
    behind = sorted(set(obs.clients) - done)
    if behind:
        notes.append(f"no verified snapshot on the slow {obs.mirror} for {', '.join(behind)}")
    failed = sorted({f"{r.client}@{r.snapshot_id}" for r in during if r.status != "complete"})
    if failed:
        notes.append(f"runs failed on the slow mirror: {', '.join(failed)}")
    measured = []
    for alert in (a for a in obs.alerts if a.kind == "mirror-stale"):
        if f"behind: {obs.mirror}" in alert.text:  # the slow mirror alone fell behind
            notes.append(f"stale alert #{alert.id}: the slow {obs.mirror} fell behind")
        else:  # every mirror late: the runs start late (a loaded machine), not the link
            measured.append(f"stale alert #{alert.id} with every mirror late (not the link)")
    before, slow = _median_duration(list(obs.rows_before)), _median_duration(during)
    rpo = rpo_seconds(obs, obs.mirror)
    measured += [
        "run to verified on the slow mirror: "
        + (f"{slow:.1f} s" if slow is not None else "n/a")
        + " (before: "
        + (f"{before:.1f} s" if before is not None else "n/a")
        + ")",
        "RPO on it at the end: "
        + (", ".join(f"{c} {s:.0f} s" for c, s in sorted(rpo.items())) or "none"),
    ]
    if len(rpo) < len(obs.clients):
        notes.append("no RPO for every client on the slow mirror")
    return notes, measured


def clock_rules(obs: MirrorObservation) -> list[str]:
    """Snapshot ids and times are the orchestrator's, RPO sane, no alert."""
    notes = []
    skew = obs.skew_seen_s
    if skew is None:
        notes.append(f"{obs.target} did not report its clock")
    elif skew < 0 or abs(skew - round(skew / 3600) * 3600) > SKEW_TOLERANCE_S or skew < 3600:
        notes.append(f"{obs.target} reported a clock {skew:+.0f} s off: the skew was not in force")
    low, high = obs.injected_at - CLOCK_SLACK, (obs.healed_at or obs.injected_at) + CLOCK_SLACK
    during = [r for r in obs.rows if r.taken_at >= obs.injected_at - CLOCK_SLACK]
    for row in during:
        if row.snapshot_id != snapshot_id_for(row.taken_at):
            notes.append(f"{row.client}@{row.mirror}: id {row.snapshot_id} is not its time")
    # Nothing can be taken after we looked (our now), nor before the window it is in.
    latest = max(obs.ended_at or high, high) + CLOCK_SLACK
    wrong = [r for r in obs.rows if r.taken_at > latest or (r in during and r.taken_at < low)]
    if wrong:
        notes.append(
            "snapshot times outside the fault's window (the server's clock?): "
            + ", ".join(sorted({r.snapshot_id for r in wrong}))
        )
    done = {r.client for r in during if r.status == "complete" and r.verified_at is not None}
    behind = sorted(set(obs.clients) - done)
    if behind:
        notes.append(f"no verified snapshot while the clock was skewed for {', '.join(behind)}")
    rpo = rpo_seconds(obs, None)
    odd = sorted(c for c, s in rpo.items() if not 0 <= s <= CLOCK_RPO_LIMIT_S)
    if odd or len(rpo) < len(obs.clients):
        notes.append(
            f"RPO not within 0..{CLOCK_RPO_LIMIT_S:.0f} s for {', '.join(odd) or 'some clients'}"
        )
    # A stale alert says the runs came late (the ids and RPO above say whose clock they
    # used); anything else is an incident the skew caused.
    other = [a for a in obs.alerts if a.kind != "mirror-stale"]
    if other:
        notes.append("incidents opened for a skewed clock: " + ", ".join(f"#{a.id}" for a in other))
    return notes


def judge_mirror(spec: FaultSpec, obs: MirrorObservation) -> ChaosResult:
    """Apply *spec*'s rules (issue 10) to *obs*; every broken rule is a note."""
    out = _Judged(list(obs.problems))
    # No outage, no restore: every acknowledged write must still be where it was.
    lost = None if obs.lost_seqs is None else sum(len(s) for s in obs.lost_seqs.values())
    beyond = lost
    dupes = duplicates(obs.notice_keys)
    if obs.healthy_at is None:
        out.notes.append("the fleet was not healthy again after the heal")
    if obs.outages:
        out.notes.append(f"{len(obs.outages)} outage incident(s) for a mirror-side fault")
    if obs.pages:
        out.notes.append(f"{len(obs.pages)} page(s) sent for a mirror-side fault")
    if dupes:
        out.notes.append(f"{dupes} notice(s) sent twice under one idempotency key")
    if lost is None:
        out.notes.append("acknowledged writes could not be checked against the journals")
    elif lost:
        out.notes.append(f"{lost} acknowledged write(s) lost, with no outage to lose them in")
    if obs.snapshots_intact is not True:
        out.notes.append("snapshots taken before the fault were not all intact afterwards")
    if spec.name == "mirror-dies":
        if obs.in_flight is False:
            out.measured.append("no run was seen writing at the kill: killed between runs")
        out.notes += other_mirror_complete(obs) + nothing_listed_on_hit_mirror(obs)
        out.notes += stale_alerted(obs) + caught_up(obs)
    elif spec.name == "mirror-disk-full":
        # The disk fills mid-run: the run in flight at the injection (taken up to an
        # interval before it) is the first that should record the mirror missing.
        # Counting only runs begun after it failed the matrix once the heal came
        # before the next run (2026-12-06).
        in_flight = set(_runs_in_window(obs))
        missing = [r for r in obs.rows if r.mirror == obs.mirror and r.snapshot_id in in_flight]
        if not any(r.status == "missing" for r in missing):
            out.notes.append(f"no run recorded its snapshot missing on the full {obs.mirror}")
        out.notes += other_mirror_complete(obs) + nothing_listed_on_hit_mirror(obs)
        out.notes += stale_alerted(obs) + caught_up(obs)
    elif spec.name == "host-key-change":
        out.notes += host_key_rules(obs)
    elif spec.name == "latency":
        broken, out.measured = latency_rules(obs)
        out.notes += broken
    elif spec.name == "clock-skew":
        out.notes += clock_rules(obs)
        rpo = rpo_seconds(obs, None)
        out.measured.append(
            f"{obs.target} reported its clock {obs.skew_seen_s or 0:+.0f} s off; RPO at the end: "
            + (", ".join(f"{c} {s:.0f} s" for c, s in sorted(rpo.items())) or "none")
        )
    else:
        out.notes.append(f"fault {spec.name!r} has no mirror-side rules to judge it by")
    passed = not out.notes
    alerts = [f"#{a.id} {a.kind}: {a.title}" for a in obs.alerts]
    notes = out.notes + out.measured + ([f"alerts: {'; '.join(alerts)}"] if alerts else [])
    if obs.elsewhere:
        notes.append(f"elsewhere meanwhile (not judged): {'; '.join(obs.elsewhere)}")
    first_alert = min((a.opened_at for a in obs.alerts), default=None)
    return window_result(
        spec,
        obs,
        passed=passed,
        notes=notes,
        detected_after_s=seconds_after(obs.injected_at, first_alert),
        incidents_opened=len(obs.outages),
        rto_s=None,
        lost=lost,
        beyond=beyond,
        events=_events(obs),
    )


def _events(obs: MirrorObservation) -> list[tuple[str, float]]:
    raw: list[tuple[str, datetime | None]] = [("fault injected", obs.injected_at)]
    raw += [(f"#{a.id} {a.kind}", a.opened_at) for a in obs.alerts]
    raw += [("healed", obs.healed_at), ("healthy again", obs.healthy_at)]
    return events_after(obs.injected_at, raw)
