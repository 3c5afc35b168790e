"""The fleet as the mirror sees it: what to snapshot on a server, and its mirrors connected.

:func:`client_sources` lists each client living on an app server with its data
directory; :func:`mirror_targets` connects to the server's mirrors (pair from
:func:`ppo_dr.fleet_access.mirror_plan`) through a :class:`~ppo_dr.fleet_access.FleetAccess`,
reporting the ones that cannot be reached for now instead of failing on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ppo_dr.errors import HostKeyError, PermanentError, TransientError
from ppo_dr.fleet_access import FleetAccess, client_ids_on, client_path, mirror_plan
from ppo_dr.ids import check_id
from ppo_dr.inventory import Fleet
from ppo_dr.mirror.results import ClientSource, MirrorTarget


def client_sources(
    fleet: Fleet,
    app_server_id: str,
    clients: Iterable[str] | None = None,
    placements: Mapping[str, str] | None = None,
) -> list[ClientSource]:
    """What to snapshot on *app_server_id*: each client living there and its absolute
    data directory on it."""
    return [
        ClientSource(client_id=c, path=client_path(fleet, c, server_id=app_server_id))
        for c in client_ids_on(fleet, app_server_id, clients, placements)
    ]


@dataclass(frozen=True)
class ConnectedMirrors:
    """The mirrors of one app server we could reach, and why the others failed."""

    targets: list[MirrorTarget]
    unreachable: dict[str, str]  # mirror id -> the transient error's message

    @property
    def mirror_ids(self) -> list[str]:
        return [t.mirror_id for t in self.targets] + list(self.unreachable)


def mirror_targets(
    fleet: Fleet,
    app_server_id: str,
    access: FleetAccess,
    mirrors: Sequence[str] | None = None,
    placements: Mapping[str, str] | None = None,
) -> ConnectedMirrors:
    """Connect to each mirror of *app_server_id* (or those in *mirrors*).

    Each target carries ``connect`` (:meth:`FleetAccess.connector`), so snapshots
    upload, and restores read, from separate processes with their own connections.
    A mirror that cannot be reached for now (TransientError) is reported in
    ``unreachable`` and the others are returned, so one mirror down does not stop the
    other. A permanent error (changed host key, refused key) is raised: that is not
    a mirror to write to, and nothing must be written anywhere until it is fixed.
    """
    wanted = None if mirrors is None else {check_id(m, "mirror id") for m in mirrors}
    targets: list[MirrorTarget] = []
    unreachable: dict[str, str] = {}
    plan = mirror_plan(fleet, app_server_id, placements)
    for mirror, path in plan:
        if wanted is not None and mirror.id not in wanted:
            continue
        try:
            remote = access.remote(mirror.id)
        except TransientError as exc:
            unreachable[mirror.id] = str(exc)
            continue
        except HostKeyError as exc:  # name the mirror: the operator checks its key
            raise HostKeyError(
                f"mirror {mirror.id}: {exc}",
                server_id=mirror.id,
                offered=exc.offered,
                pinned=exc.pinned,
            ) from exc
        targets.append(
            MirrorTarget(
                mirror_id=mirror.id,
                remote=remote,
                repo_path=path,
                connect=access.connector(mirror.id),
            )
        )
    if wanted is not None:
        unknown = wanted - {m.id for m, _ in plan}
        if unknown:
            raise PermanentError(
                f"mirror(s) {', '.join(sorted(unknown))} do not mirror server {app_server_id}"
            )
    return ConnectedMirrors(targets, unreachable)
