"""The hardware-upgrade scene: the stop-gap server is drained (every client goes home to
the repaired server by planned migrations), the plan approved by a person, and each
client checked against the workload log: 0 acknowledged writes lost."""

from __future__ import annotations

from deployments.demo.session import OutageDemo, ppo
from deployments.demo.upgrade_scene import approve_when_paused, migrated


def drain_back(demo: OutageDemo) -> None:
    demo.step(
        f"Drain {demo.new_home} for an upgrade: every client home to {demo.victim}, approved",
        "`server drain` plans the planned migrations and refuses one that would strand a\n"
        "client; the drain run pauses for approval, puts the server under maintenance, marks\n"
        "it drained (no plan targets it) and moves the clients: freeze, final sync, switch",
    )
    moves = migrated(demo, lambda: _drain_and_approve(demo))
    if sorted(moves) != sorted(demo.clients) or {t for _, t in moves.values()} != {demo.victim}:
        raise SystemExit(f"demo: the drain did not bring every client home: {moves}")
    marks = [d for d in demo.store.drained_servers() if d.server_id == demo.new_home]
    print(f"{demo.new_home}: {'drained, under maintenance' if marks else 'NOT MARKED DRAINED'}")


def _drain_and_approve(demo: OutageDemo) -> None:
    shown = ppo(
        demo, "server", "drain", demo.new_home, "--to", demo.victim, "--by", "sipho",
        "--reason", "stop-gap server back to the pool",
    )  # fmt: skip
    approve_when_paused(demo, shown, "drain", "upgrade window agreed")
