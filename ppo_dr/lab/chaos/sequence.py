"""Which server each fault hits, drawn from the seed: the same seed, the same run.

Pure: the homes come from the store's placements, the choice from a
:class:`random.Random` seeded by ``--seed``, so a failed chaos run can be repeated
fault for fault.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from ppo_dr.errors import LabError


def clients_per_server(placements: Mapping[str, str]) -> dict[str, int]:
    """Server -> how many clients live there, from ``{client: server}``."""
    out: dict[str, int] = {}
    for server in placements.values():
        out[server] = out.get(server, 0) + 1
    return out


def pick_target(
    placements: Mapping[str, str], app_servers: Iterable[str], rng: random.Random
) -> str:
    """An app server that holds at least one client, drawn by *rng*.

    A server without clients would test nothing (no outage of a client, no failover),
    so it is never drawn; the candidates are sorted first so only the seed decides.
    """
    held = clients_per_server(placements)
    candidates = sorted(s for s in set(app_servers) if held.get(s, 0) > 0)
    if not candidates:
        raise LabError("no app server holds a client: nothing for a fault to hit")
    return rng.choice(candidates)
