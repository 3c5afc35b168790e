"""How fresh each client's mirrors are: RPO per client and mirror, and the staleness rule.

Pure functions of the snapshot catalogue, the schedule and the time; no I/O.

- The mirror **interval** comes from ``fleet.timing.mirror_cron``: the longest gap
  between two consecutive fire times (:func:`ppo_dr.cron.cron_interval`), so a schedule that
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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from ppo_dr.cron import cron_interval

STALE_FACTOR: Final = 2
STALE_KIND: Final = "mirror-stale"
HOST_KEY_KIND: Final = "host-key-changed"


# --------------------------------------------------------------------------- the schedule


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
