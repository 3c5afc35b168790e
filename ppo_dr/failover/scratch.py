"""A drill's scratch server, told by its id (pure).

A drill provisions ``drill-<YYYYMMDD>-<HHMMSS>-<n>`` for a few minutes, restores its
canaries into it and releases it. It sits in fleet.yaml meanwhile, an empty app server
with room, so the planners must tell it apart: clients placed there would be torn down
with it (seen in CI: a failover planned a client onto a drill's scratch server, which
was gone by the time the failover acted). Here, not in :mod:`.drill`, so that the pure
planners can use it without the drill's imports.
"""

from __future__ import annotations

from typing import Final

#: Prefix of every scratch server id: ``drill-<YYYYMMDD>-<HHMMSS>-<n>``.
SCRATCH_PREFIX: Final = "drill-"


def is_scratch_server(server_id: str) -> bool:
    """True for an id :func:`ppo_dr.failover.drill.scratch_server_id` makes (what a
    stale-scratch sweep may release, and what no plan may move a client onto)."""
    head, _, rest = server_id.partition(SCRATCH_PREFIX)
    parts = rest.split("-")
    return (
        head == ""
        and len(parts) == 3
        and len(parts[0]) == 8
        and len(parts[1]) == 6
        and all(p.isdigit() and p.isascii() for p in parts)
    )
