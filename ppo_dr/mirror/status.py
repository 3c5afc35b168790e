"""How fresh each client's mirrors are: RPO per client and mirror, and the staleness rule.

Pure functions of the snapshot catalogue, the schedule and the time; no I/O.

- The mirror **interval** comes from ``fleet.timing.mirror_cron``: the longest gap
  between two consecutive fire times (:func:`cron_interval`), so a schedule that
  skips the night or the weekend is judged by its longest quiet spell, not its
  shortest.
- **RPO** of a client on a mirror is the age of its newest *verified* complete
  snapshot there (a snapshot that was written but not verified, or was found damaged,
  protects nothing yet).
- A client is **stale** when its newest verified snapshot on any mirror is older than
  twice the interval, or when it has none at all: one missed run is noise, two in a
  row mean the mirror job or the path to the mirrors is broken. It is stale too when
  one of its mirrors alone is that far behind (``stale_on``): the promise is a copy on
  *both* mirrors every interval, and a mirror that died or filled up must not go
  unnoticed because the other one is fresh (the chaos suite's ``mirror-dies``).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final, Protocol

from ppo_dr.errors import PermanentError

STALE_FACTOR: Final = 2
STALE_KIND: Final = "mirror-stale"
HOST_KEY_KIND: Final = "host-key-changed"
_REFERENCE: Final = date(2026, 1, 1)
_WEEKS: Final = 15  # minute/hour/weekday patterns repeat weekly: two weeks tell the gap
_YEARS: Final = 5  # day-of-month or month patterns: Feb 29 repeats within 4 years

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {name.lower(): (i + 1) % 7 for i, name in enumerate(calendar.day_abbr)}  # sun=0
# (name, low, high, names)
_FIELDS: Final[tuple[tuple[str, int, int, dict[str, int]], ...]] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class CronSpec:
    """A parsed five-field cron expression (minute hour day-of-month month day-of-week)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week  # cron's rule: either one when both are given
        return in_month and in_week


def _value(text: str, low: int, high: int, names: dict[str, int], what: str) -> int:
    token = text.lower()
    if token in names:
        return names[token]
    if not token.isdigit():
        raise PermanentError(f"cron {what} {text!r} is not a number")
    number = int(token)
    if not low <= number <= high:
        raise PermanentError(f"cron {what} {number} is outside {low}-{high}")
    return number


def _field(text: str, low: int, high: int, names: dict[str, int], what: str) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise PermanentError(f"cron {what} step {step_text!r} is not a positive number")
            step = int(step_text)
        if base in {"*", "?"}:
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _value(first, low, high, names, what)
            end = _value(last, low, high, names, what)
            if end < start:
                raise PermanentError(f"cron {what} range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, what)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expression: str) -> CronSpec:
    """Parse a five-field cron expression; PermanentError says what is wrong."""
    parts = expression.split()
    if len(parts) != 5:
        raise PermanentError(f"cron {expression!r} must have 5 fields, has {len(parts)}")
    sets = [
        _field(text, low, high, names, what)
        for text, (what, low, high, names) in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = {d % 7 for d in sets[4]}
    return CronSpec(
        minutes=frozenset(sets[0]),
        hours=frozenset(sets[1]),
        days=frozenset(sets[2]),
        months=frozenset(sets[3]),
        weekdays=frozenset(weekdays),
        days_restricted=not parts[2].startswith(("*", "?")),
        weekdays_restricted=not parts[4].startswith(("*", "?")),
    )


def _fires(spec: CronSpec, days: int) -> Iterator[int]:
    """Fire times as minutes since the reference date, over *days* days."""
    minutes = sorted(spec.minutes)
    hours = sorted(spec.hours)
    for offset in range(days):
        if spec.day_matches(_REFERENCE + timedelta(days=offset)):
            for hour in hours:
                for minute in minutes:
                    yield offset * 1440 + hour * 60 + minute


def cron_interval(expression: str) -> timedelta:
    """The longest gap between consecutive fire times of *expression*.

    ``0 * * * *`` → 1 h, ``* * * * *`` → 1 min, ``0 9 * * 1-5`` → 3 days (Friday to
    Monday). PermanentError for an expression that does not parse or fires less than
    twice in five years.
    """
    spec = parse_cron(expression)
    weekly = not spec.days_restricted and spec.months == frozenset(range(1, 13))
    span = _WEEKS * 7 if weekly else _YEARS * 366
    previous: int | None = None
    longest = 0
    for fire in _fires(spec, span):
        if previous is not None:
            longest = max(longest, fire - previous)
        previous = fire
    if longest == 0:
        raise PermanentError(f"cron {expression!r} does not fire regularly enough to mirror by")
    return timedelta(minutes=longest)


def stale_after(expression: str) -> timedelta:
    """Age beyond which a client's newest verified snapshot makes it stale."""
    return STALE_FACTOR * cron_interval(expression)


# --------------------------------------------------------------------------- RPO


class SnapshotRef(Protocol):
    """Which snapshot of which client on which mirror: what every record of one carries
    (a catalogued snapshot, a drill that restored it)."""

    @property
    def client_id(self) -> str: ...
    @property
    def mirror_id(self) -> str: ...
    @property
    def snapshot_id(self) -> str: ...


class CatalogueEntry(SnapshotRef, Protocol):
    """What this module reads of a catalogued snapshot (:class:`ppo_dr.store.Snapshot`)."""

    @property
    def taken_at(self) -> datetime: ...
    @property
    def verified_at(self) -> datetime | None: ...
    @property
    def status(self) -> str: ...


@dataclass(frozen=True)
class MirrorRpo:
    """One client on one mirror: its newest verified snapshot and its age."""

    client_id: str
    mirror_id: str
    snapshot_id: str | None
    taken_at: datetime | None
    rpo: timedelta | None  # None: nothing verified on this mirror
    last_status: str | None  # status of the newest catalogued snapshot, whatever it is


@dataclass(frozen=True)
class ClientStatus:
    """A client's protection across its mirrors, and whether it is stale."""

    client_id: str
    per_mirror: dict[str, MirrorRpo]
    newest_verified: datetime | None
    rpo: timedelta | None
    stale: bool
    threshold: timedelta
    missing_on: list[str] = field(default_factory=list)  # mirrors whose newest is missing
    stale_on: list[str] = field(default_factory=list)  # mirrors too far behind on their own

    @property
    def best_mirror(self) -> str | None:
        """The mirror holding the newest verified snapshot, if any."""
        dated = [(r.taken_at, m) for m, r in self.per_mirror.items() if r.taken_at is not None]
        return max(dated)[1] if dated else None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def client_statuses(
    snapshots: Iterable[CatalogueEntry],
    clients: Sequence[str],
    mirrors: Sequence[str],
    *,
    now: datetime,
    threshold: timedelta,
) -> list[ClientStatus]:
    """RPO of each of *clients* on each of *mirrors*, and staleness, at *now*."""
    now = _utc(now)
    newest_verified: dict[tuple[str, str], CatalogueEntry] = {}
    newest_any: dict[tuple[str, str], CatalogueEntry] = {}
    wanted_clients, wanted_mirrors = set(clients), set(mirrors)
    for snap in snapshots:
        key = (snap.client_id, snap.mirror_id)
        if snap.client_id not in wanted_clients or snap.mirror_id not in wanted_mirrors:
            continue
        if key not in newest_any or _utc(snap.taken_at) >= _utc(newest_any[key].taken_at):
            newest_any[key] = snap
        if snap.status == "complete" and snap.verified_at is not None:
            best = newest_verified.get(key)
            if best is None or _utc(snap.taken_at) > _utc(best.taken_at):
                newest_verified[key] = snap
    out: list[ClientStatus] = []
    for client in clients:
        per_mirror: dict[str, MirrorRpo] = {}
        for mirror in mirrors:
            verified = newest_verified.get((client, mirror))
            latest = newest_any.get((client, mirror))
            taken = _utc(verified.taken_at) if verified else None
            per_mirror[mirror] = MirrorRpo(
                client_id=client,
                mirror_id=mirror,
                snapshot_id=verified.snapshot_id if verified else None,
                taken_at=taken,
                rpo=max(now - taken, timedelta(0)) if taken else None,
                last_status=latest.status if latest else None,
            )
        dates = [r.taken_at for r in per_mirror.values() if r.taken_at is not None]
        newest = max(dates) if dates else None
        rpo = max(now - newest, timedelta(0)) if newest else None
        behind = [m for m, r in per_mirror.items() if r.rpo is None or r.rpo > threshold]
        out.append(
            ClientStatus(
                client_id=client,
                per_mirror=per_mirror,
                newest_verified=newest,
                rpo=rpo,
                stale=rpo is None or rpo > threshold or bool(behind),
                threshold=threshold,
                missing_on=[m for m, r in per_mirror.items() if r.last_status == "missing"],
                stale_on=behind,
            )
        )
    return out


def format_age(age: timedelta | None) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``, ``3d 4h``; ``never`` for None."""
    if age is None:
        return "never"
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def stale_dedupe_key(client_id: str) -> str:
    """One open mirror-stale incident per client, whichever run notices it."""
    return f"{STALE_KIND}:{client_id}"


def fresh_note(status: ClientStatus, server_id: str) -> str:
    """Why a client's mirror-stale incident is resolved: its fresh verified snapshot."""
    when = f"{status.newest_verified:%Y-%m-%d %H:%M:%S}Z" if status.newest_verified else "?"
    return (
        f"fresh again: verified snapshot of {status.client_id} from {server_id} taken {when} "
        f"({format_age(status.rpo)} old, limit {format_age(status.threshold)})"
    )


def stale_title(status: ClientStatus) -> str:
    """The incident title for a stale client, in the operator's words."""
    if status.newest_verified is None:
        return (
            f"client {status.client_id} has no verified mirror snapshot "
            f"(limit {format_age(status.threshold)})"
        )
    if status.rpo is not None and status.rpo <= status.threshold and status.stale_on:
        ages = ", ".join(f"{m} {format_age(status.per_mirror[m].rpo)}" for m in status.stale_on)
        return (
            f"client {status.client_id}: mirror(s) behind: {ages} "
            f"(limit {format_age(status.threshold)}; newest elsewhere {format_age(status.rpo)} old)"
        )
    return (
        f"client {status.client_id}: newest verified snapshot is {format_age(status.rpo)} old "
        f"(limit {format_age(status.threshold)}, taken {status.newest_verified:%Y-%m-%d %H:%M:%S}Z)"
    )


def host_key_alert(server_id: str, offered: str | None, pinned: str | None) -> tuple[str, str]:
    """(dedupe key, title) of the non-paging incident for a server whose host key changed.

    One per server while open; the title names both fingerprints, which the operator
    compares with the server's console out of band before re-pinning anything.
    """
    title = (
        f"host key of {server_id} changed: it offered {offered or 'an unknown key'}, "
        f"fleet.yaml pins {pinned or 'an unknown key'}; nothing was sent to it "
        "(possible man-in-the-middle: check the key out of band before re-pinning)"
    )
    return f"{HOST_KEY_KIND}:{server_id}", title


def rpo_markdown(statuses: Sequence[ClientStatus], mirrors: Sequence[str]) -> str:
    """A Markdown table: one row per client, its RPO on each mirror, stale or not."""
    header = "| client | " + " | ".join(f"RPO on {m}" for m in mirrors) + " | state |"
    rule = "|---|" + "---|" * len(mirrors) + "---|"
    lines = [header, rule]
    for status in statuses:
        cells = []
        for mirror in mirrors:
            entry = status.per_mirror[mirror]
            cell = format_age(entry.rpo)
            if entry.last_status in {"missing", "damaged"}:
                cell += f" (last run: {entry.last_status})"
            cells.append(cell)
        state = "**STALE**" if status.stale else "ok"
        lines.append(f"| {status.client_id} | " + " | ".join(cells) + f" | {state} |")
    return "\n".join(lines)
