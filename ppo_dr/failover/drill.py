"""The scheduled DR drill's decisions, pure: which clients to drill today, from which
mirror, on which scratch server, and how the results read as a trend.

Rotation (:func:`pick_canaries`): each day drills at least ``ceil(n / 7)`` of the *n*
clients, never-drilled first, then least recently drilled, ties by client id. A client
drilled today moves behind every client not drilled today, so a client at rank *r* in
the queue is reached within ``r // quota + 1`` days: everyone within 7 days, whatever
the history was. A failed drill counts as a drill (it opened an incident); otherwise a
client that always fails would take a slot every day and push others past a week.

Mirrors alternate per client (:func:`next_mirror`): on-site, off-site, on-site, ...,
so both copies of every client are proven restorable within two weeks.

Residency holds in drills too: a scratch server is placed only in a data centre whose
country every one of its canaries allows (:func:`scratch_groups`); usually one scratch
server takes all canaries.

Nothing here does I/O; the flow (``flows/drill.py``) reads the store and the fleet and
passes them in.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, Protocol

from ppo_dr.errors import PermanentError
from ppo_dr.failover.scratch import SCRATCH_PREFIX, is_scratch_server
from ppo_dr.ids import check_id
from ppo_dr.mirror.status import SnapshotRef

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet, Server

MirrorKind = Literal["on-site", "off-site"]
ON_SITE: Final[MirrorKind] = "on-site"
OFF_SITE: Final[MirrorKind] = "off-site"
MIRROR_KINDS: Final[tuple[MirrorKind, ...]] = (ON_SITE, OFF_SITE)

#: Every client is drilled at least once in this many consecutive days.
ROTATION_DAYS: Final = 7
#: How far back the trend artifact looks.
TREND_DAYS: Final = 30
#: What a drill row names as its snapshot when the mirror had no verified one.
NO_SNAPSHOT: Final = "none"
#: Incident kind of a failed drill (non-paging: nobody is down, a backup is in doubt).
DRILL_FAILED_KIND: Final = "drill-failed"

_SPARKS: Final = "▁▂▃▄▅▆▇█"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class DrillPlanError(PermanentError):
    """The drill cannot be planned as asked (bad quota, an unknown client, ...)."""


@dataclass(frozen=True)
class DrillHistory:
    """What the store says about one client's drills: when last, from which kind of mirror."""

    client_id: str
    last_drilled_at: datetime | None = None
    last_mirror: MirrorKind | None = None


@dataclass(frozen=True)
class Canary:
    """A client to drill today, the kind of mirror to restore it from, and how overdue."""

    client_id: str
    mirror: MirrorKind
    last_drilled_at: datetime | None
    days_since: int | None  # whole days since the last drill; None if never drilled

    @property
    def overdue(self) -> bool:
        """Never drilled, or not within the rotation period (the promise was broken)."""
        return self.days_since is None or self.days_since >= ROTATION_DAYS


@dataclass(frozen=True)
class ScratchGroup:
    """Canaries that share one scratch server in data centre *dc* (residency allows it)."""

    dc: str
    canaries: tuple[Canary, ...]


@dataclass(frozen=True)
class Unplaceable:
    """A canary no scratch data centre may hold (its residency), and why."""

    client_id: str
    reason: str


# --------------------------------------------------------------------------- rotation


def daily_quota(clients: int, per_day: int | None = None) -> int:
    """How many clients to drill today: ``ceil(clients / 7)``, or *per_day* if larger
    (never more than there are). A smaller *per_day* is raised to the weekly minimum:
    the promise that every client is drilled each week wins over the setting."""
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 0:
        raise DrillPlanError(f"number of clients must be a non-negative integer, got {clients!r}")
    if per_day is not None and (
        isinstance(per_day, bool) or not isinstance(per_day, int) or per_day < 1
    ):
        raise DrillPlanError(f"per_day must be a positive integer, got {per_day!r}")
    weekly = math.ceil(clients / ROTATION_DAYS)
    return min(clients, max(weekly, per_day or 0))


def next_mirror(last: MirrorKind | None) -> MirrorKind:
    """The other kind of mirror than last time; on-site for a first drill."""
    if last is not None and last not in MIRROR_KINDS:
        raise DrillPlanError(f"unknown mirror kind {last!r}: one of {', '.join(MIRROR_KINDS)}")
    return OFF_SITE if last == ON_SITE else ON_SITE


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise DrillPlanError(f"{what} must carry a time zone (UTC), got {value.isoformat()}")
    return value.astimezone(UTC)


def pick_canaries(
    clients: Iterable[str],
    history: Mapping[str, DrillHistory],
    today: date,
    per_day: int | None = None,
) -> tuple[Canary, ...]:
    """Today's canaries, most overdue first (see the module docstring for the rule).

    *clients* are the clients to rotate over (duplicates ignored, order irrelevant);
    *history* may hold entries for others (ignored) and lack entries (never drilled).
    The result depends only on the set of clients, their history and *per_day*.
    """
    ids = sorted({check_id(c, "client id") for c in clients})
    quota = daily_quota(len(ids), per_day)

    def last(client_id: str) -> datetime | None:
        entry = history.get(client_id)
        if entry is None or entry.last_drilled_at is None:
            return None
        return _utc(entry.last_drilled_at, f"last drill of {client_id}")

    queue = sorted(ids, key=lambda c: (last(c) is not None, last(c) or _EPOCH, c))
    picked: list[Canary] = []
    for client_id in queue[:quota]:
        entry = history.get(client_id)
        when = last(client_id)
        picked.append(
            Canary(
                client_id=client_id,
                mirror=next_mirror(entry.last_mirror if entry else None),
                last_drilled_at=when,
                days_since=None if when is None else max(0, (today - when.date()).days),
            )
        )
    return tuple(picked)


class DrillLike(SnapshotRef, Protocol):
    """What the rotation and the trend read of a recorded drill (``ppo_dr.store.Drill``)."""

    @property
    def started_at(self) -> datetime: ...
    @property
    def ok(self) -> bool: ...
    @property
    def restore_seconds(self) -> float: ...
    @property
    def snapshot_age_seconds(self) -> float: ...


def histories(
    drills: Iterable[DrillLike], kind_of: Mapping[str, Mapping[str, MirrorKind]]
) -> dict[str, DrillHistory]:
    """Each client's latest drill, with its mirror as a kind: *kind_of* maps client ->
    mirror id -> kind (:func:`mirror_kinds`). A mirror no longer among the client's
    mirrors gives kind None, so the next drill starts again on-site."""
    latest: dict[str, DrillLike] = {}
    for drill in drills:
        seen = latest.get(drill.client_id)
        if seen is None or _utc(drill.started_at, "drill start") >= _utc(
            seen.started_at, "drill start"
        ):
            latest[drill.client_id] = drill
    return {
        client: DrillHistory(
            client, _utc(d.started_at, "drill start"), kind_of.get(client, {}).get(d.mirror_id)
        )
        for client, d in latest.items()
    }


# --------------------------------------------------------------------------- fleet


def mirror_kinds(mirrors: Sequence[Server], home_dc: str) -> dict[str, MirrorKind]:
    """mirror id -> on-site (in the home's data centre) or off-site."""
    return {m.id: ON_SITE if m.dc == home_dc else OFF_SITE for m in mirrors}


def choose_mirror(mirrors: Sequence[Server], home_dc: str, kind: MirrorKind) -> Server:
    """The first of the home's *mirrors* (on-site first, as ``mirror_plan`` lists them)
    of the wanted *kind*; DrillPlanError if the home has none of that kind."""
    for mirror in mirrors:
        if (mirror.dc == home_dc) == (kind == ON_SITE):
            return mirror
    raise DrillPlanError(
        f"no {kind} mirror among {', '.join(m.id for m in mirrors) or 'none'} "
        f"(home data centre {home_dc})"
    )


@dataclass(frozen=True)
class CanaryTarget:
    """Where a canary's drill reads from: its home now and the mirror of the wanted kind."""

    canary: Canary
    home: str
    mirror_id: str

    @property
    def client_id(self) -> str:
        return self.canary.client_id


def canary_targets(
    fleet: Fleet, placements: Mapping[str, str], canaries: Sequence[Canary]
) -> list[CanaryTarget]:
    """Each canary's home (the store's placement, else fleet.yaml) and its mirror of the
    kind the rotation chose (:func:`choose_mirror` over the home's mirrors)."""
    from ppo_dr.fleet_access import homes, mirror_plan

    where = homes(fleet, placements)
    targets: list[CanaryTarget] = []
    for canary in canaries:
        home = where.get(canary.client_id)
        if home is None:
            raise DrillPlanError(f"client {canary.client_id!r} is not in fleet {fleet.name}")
        mirrors = [m for m, _ in mirror_plan(fleet, home, placements)]
        mirror = choose_mirror(mirrors, fleet.server(home).dc, canary.mirror)
        targets.append(CanaryTarget(canary, home, mirror.id))
    return targets


def kinds_by_client(
    fleet: Fleet, placements: Mapping[str, str]
) -> dict[str, dict[str, MirrorKind]]:
    """client -> its home's mirrors as kinds (for :func:`histories`)."""
    from ppo_dr.fleet_access import homes, mirror_plan

    found: dict[str, dict[str, MirrorKind]] = {}
    by_home: dict[str, dict[str, MirrorKind]] = {}
    for client, home in homes(fleet, placements).items():
        if home not in by_home:
            mirrors = [m for m, _ in mirror_plan(fleet, home, placements)]
            by_home[home] = mirror_kinds(mirrors, fleet.server(home).dc)
        found[client] = by_home[home]
    return found


def scratch_dcs(fleet: Fleet) -> list[str]:
    """Data centres that can lend a scratch server, in fleet order: a lab or aws one
    provisions a server; a static one needs a spare with SSH and HTTP."""
    usable: list[str] = []
    for dc in fleet.data_centres:
        if dc.provider in ("lab", "aws") or any(
            s.role == "spare" and s.ssh is not None and s.http is not None
            for s in fleet.servers_in(dc.id)
        ):
            usable.append(dc.id)
    return usable


def allowed_dcs(fleet: Fleet, client_id: str, candidates: Sequence[str]) -> list[str]:
    """The *candidates* (data centre ids) in a country the client allows."""
    countries = set(fleet.client(check_id(client_id, "client id")).countries)
    return [dc for dc in candidates if fleet.dc(dc).country in countries]


def scratch_groups(
    canaries: Sequence[Canary],
    allowed: Mapping[str, Collection[str]],
    dc_order: Sequence[str],
) -> tuple[tuple[ScratchGroup, ...], tuple[Unplaceable, ...]]:
    """Share scratch servers among *canaries*: greedily the data centre the most
    remaining canaries allow (ties in *dc_order*), until all are placed; canaries that
    allow none of *dc_order* are returned as unplaceable, with the reason."""
    rank = {dc: i for i, dc in enumerate(dc_order)}
    left = list(canaries)
    unplaceable = tuple(
        Unplaceable(
            c.client_id,
            f"residency of {c.client_id} allows none of the data centres that can lend a "
            f"scratch server ({', '.join(dc_order) or 'none'})",
        )
        for c in left
        if not set(allowed.get(c.client_id, ())) & set(rank)
    )
    gone = {u.client_id for u in unplaceable}
    left = [c for c in left if c.client_id not in gone]
    groups: list[ScratchGroup] = []
    while left:
        counts = {dc: sum(dc in allowed.get(c.client_id, ()) for c in left) for dc in rank}
        best = min(rank, key=lambda dc: (-counts[dc], rank[dc]))
        taken = tuple(c for c in left if best in allowed.get(c.client_id, ()))
        groups.append(ScratchGroup(best, taken))
        left = [c for c in left if c not in taken]
    return tuple(groups), unplaceable


def scratch_server_id(started: datetime, n: int) -> str:
    """``drill-<YYYYMMDD>-<HHMMSS>-<n>``: the *n*-th scratch server of the drill scheduled
    at *started* (UTC). A retry of the same run asks for the same id, so the provider
    hands back the same server instead of a second one."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DrillPlanError(f"scratch server number must be a positive integer, got {n!r}")
    when = _utc(started, "drill start")
    return check_id(f"{SCRATCH_PREFIX}{when:%Y%m%d-%H%M%S}-{n}", "scratch server id")


def failed_dedupe_key(client_id: str) -> str:
    """One open drill-failed incident per client, however many drills fail meanwhile."""
    return f"{DRILL_FAILED_KIND}:{check_id(client_id, 'client id')}"


# --------------------------------------------------------------------------- trend


@dataclass(frozen=True)
class ClientTrend:
    """A client's drills over the trend window, oldest first."""

    client_id: str
    drills: tuple[DrillLike, ...]

    @property
    def failures(self) -> int:
        return sum(not d.ok for d in self.drills)

    @property
    def restore_seconds(self) -> list[float]:
        """Restore time of each successful drill (a failed one stopped part-way)."""
        return [d.restore_seconds for d in self.drills if d.ok]

    @property
    def rpo_seconds(self) -> list[float]:
        """Snapshot age at each drill that found a snapshot."""
        return [d.snapshot_age_seconds for d in self.drills if d.snapshot_id != NO_SNAPSHOT]


def drill_trends(
    drills: Iterable[DrillLike], now: datetime, days: int = TREND_DAYS
) -> list[ClientTrend]:
    """Each client's drills of the last *days* days up to *now*, clients sorted by id."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise DrillPlanError(f"trend window must be a positive number of days, got {days!r}")
    end = _utc(now, "now")
    start = end - timedelta(days=days)
    by_client: dict[str, list[DrillLike]] = {}
    for drill in drills:
        if start <= _utc(drill.started_at, "drill start") <= end:
            by_client.setdefault(drill.client_id, []).append(drill)
    return [
        ClientTrend(client, tuple(sorted(found, key=lambda d: _utc(d.started_at, "drill start"))))
        for client, found in sorted(by_client.items())
    ]


def sparkline(values: Sequence[float]) -> str:
    """One block character per value, scaled from the smallest to the largest
    (all equal: all low bars); empty for no values."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if not all(math.isfinite(v) for v in (low, high)):
        raise DrillPlanError("sparkline values must be finite numbers")
    span = high - low
    top = len(_SPARKS) - 1
    return "".join(_SPARKS[0 if span == 0 else round((v - low) / span * top)] for v in values)


def format_seconds(seconds: float) -> str:
    """``4.2 s``, ``12 min``, ``3.5 h``: a duration an operator reads at a glance."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _series(values: Sequence[float]) -> str:
    if not values:
        return "-"
    last, worst = format_seconds(values[-1]), format_seconds(max(values))
    return f"`{sparkline(values)}` last {last}, max {worst}"


def trend_markdown(trends: Sequence[ClientTrend], days: int = TREND_DAYS) -> str:
    """A Markdown table: per client its drills, failures, and restore time and RPO as
    sparklines (oldest left) with the latest and the worst value."""
    lines = [
        f"## Trend: restore time and RPO by client, last {days} days",
        "",
        "| client | drills | failed | restore time | RPO (snapshot age) |",
        "|---|---:|---:|---|---|",
    ]
    for t in trends:
        lines.append(
            f"| {t.client_id} | {len(t.drills)} | {t.failures} | "
            f"{_series(t.restore_seconds)} | {_series(t.rpo_seconds)} |"
        )
    if not trends:
        lines.append("| (no drills yet) | 0 | 0 | - | - |")
    return "\n".join(lines) + "\n"


__all__ = [
    "DRILL_FAILED_KIND",
    "MIRROR_KINDS",
    "NO_SNAPSHOT",
    "OFF_SITE",
    "ON_SITE",
    "ROTATION_DAYS",
    "SCRATCH_PREFIX",
    "TREND_DAYS",
    "Canary",
    "CanaryTarget",
    "ClientTrend",
    "DrillHistory",
    "DrillLike",
    "DrillPlanError",
    "MirrorKind",
    "ScratchGroup",
    "Unplaceable",
    "allowed_dcs",
    "canary_targets",
    "choose_mirror",
    "daily_quota",
    "drill_trends",
    "failed_dedupe_key",
    "format_seconds",
    "histories",
    "is_scratch_server",
    "kinds_by_client",
    "mirror_kinds",
    "next_mirror",
    "pick_canaries",
    "scratch_dcs",
    "scratch_groups",
    "scratch_server_id",
    "sparkline",
    "trend_markdown",
]
