"""The Prefect API killed mid-failover (``prefect-server-kill``): what must hold, pure.

The fault is a power cut of an app server (the base row, as ``power``) and, once the
failover restores, the chaos run's Prefect server SIGKILLed and started again on the
same port and database after :data:`API_DOWN_S`. The failover either rides it out
(its client retries the API) or crashes; then the on-call resumes it: the failover
deployment run again with the stored plan, approved, as ``ppo-dr failover run
--plan`` would. Its own rules (:func:`judge_prefect_server_kill`):

- the API was killed while the failover ran, and answered again;
- the run completed or was resumed (the base row's "failover done");
- nothing done twice: per client of the plan, one move of its placement since the
  power cut (version +1), and its restore step begun once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from ppo_dr.lab.chaos.power_plus import on_top_of_power
from ppo_dr.lab.chaos.verdict import ChaosResult

#: How long the API stays dead before it is started again.
API_DOWN_S: Final = 10.0
#: The step a failover must not begin twice for a client.
RESTORE_STEP: Final = "restore"


@dataclass(frozen=True, slots=True)
class PrefectKillFacts:
    """What the runner saw of the kill and of the plan's clients afterwards.

    ``moves`` are placement moves per client since the power cut; ``restores`` how
    often each client's restore step began.
    """

    injected_at: datetime | None = None
    killed_at: datetime | None = None
    back_at: datetime | None = None  # the API answered again
    failover_ended_at: datetime | None = None
    resumed: bool = False  # the on-call ran the plan again after a crash
    crashed_state: str | None = None  # the failover run's state that asked for it
    moves: Mapping[str, int] = field(default_factory=dict)
    restores: Mapping[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def kill_rules(facts: PrefectKillFacts) -> list[str]:
    """The prefect-server-kill rules broken by *facts*, one note each."""
    notes = list(facts.problems)
    if facts.killed_at is None:
        notes.append("the Prefect API was not killed while the failover ran")
    elif facts.failover_ended_at is not None and facts.failover_ended_at <= facts.killed_at:
        notes.append("the failover had ended before the API was killed: not mid-failover")
    if facts.killed_at is not None and facts.back_at is None:
        notes.append("the Prefect API did not answer again after its restart")
    if not facts.moves:
        notes.append("no client of the plan to check for work done twice")
    notes += [
        f"{client}: placement moved {count} times since the power cut, not once"
        for client, count in sorted(facts.moves.items())
        if count != 1
    ]
    notes += [
        f"{client}: restore began {facts.restores.get(client, 0)} times, not once"
        for client in sorted(facts.moves)
        if facts.restores.get(client, 0) != 1
    ]
    return notes


def judge_prefect_server_kill(base: ChaosResult, facts: PrefectKillFacts) -> ChaosResult:
    """The power row *base* with the prefect-server-kill rules applied on top."""
    down = (
        f"{(facts.back_at - facts.killed_at).total_seconds():.1f} s"
        if facts.killed_at is not None and facts.back_at is not None
        else "?"
    )
    how = (
        f"it ended {facts.crashed_state} and the on-call resumed its plan"
        if facts.resumed
        else "it rode it out"
    )
    held = (
        f"Prefect API dead {down} mid-failover; {how}; each of {len(facts.moves)} "
        "client(s) moved once and restored once"
    )
    marks = (
        ("Prefect API killed", facts.killed_at),
        ("Prefect API back", facts.back_at),
    )
    return on_top_of_power(base, kill_rules(facts), held, marks, facts.injected_at)
