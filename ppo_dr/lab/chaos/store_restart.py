"""The store's database lost mid-failover (``store-restart``): what must hold, pure.

The fault is a power cut of an app server (judged as ``power`` by
:func:`ppo_dr.lab.chaos.verdict.judge`: one incident, a page, the failover done, no
acknowledged write lost beyond the RPO) with the state store taken away for
:data:`STORE_DOWN_S` once the failover runs. Its own rules, added to that row by
:func:`judge_store_restart`:

- the store really was unavailable for the whole window, and the window began before
  the failover ended (mid-run);
- retried: the runbooks met the unavailable store (in serve's log during or after the
  window: store errors, which the tasks retry, or a call waiting for a PostgreSQL that
  refuses connections, which the store itself rides out for ``ppo-dr serve``'s runs)
  and the failover still ended ``done``;
- no notice lost: none of the fault's notices ended ``failed``, and every outbox line
  of its incidents is a notice the store calls ``sent``;
- no notice duplicated: each ``sent`` notice has exactly one outbox line (the outbox
  duplicates are the base row's ``duplicate_notices`` too).

The I/O (the outage itself, reading serve's log) is
:mod:`ppo_dr.lab.chaos.store_restart_run`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from ppo_dr.lab.chaos.power_plus import on_top_of_power
from ppo_dr.lab.chaos.verdict import ChaosResult

#: How long the store is away: three times SQLite's busy timeout (10 s), so a write
#: cannot simply wait it out; the send and step tasks' retries (1, 4, 15 s) must.
STORE_DOWN_S: Final = 30.0
#: A window this much shorter than planned still counts (thread start, clock).
_WINDOW_SLACK_S: Final = 1.0
#: What the store logs when a call meets it unavailable (``ppo_dr.store.base``): an
#: error, which a task retries, or a wait for a PostgreSQL that refuses connections.
STORE_ERROR: Final = "unavailable or busy"
STORE_WAIT: Final = "refuses connections"


@dataclass(frozen=True, slots=True)
class StoreRestartFacts:
    """What the runner saw of the store's outage and of the fault's notices.

    ``notices`` are ``(idempotency key, status)`` of the fault's incidents;
    ``outbox_keys`` one key per outbox line of those incidents.
    """

    how: str  # what taking the store away meant here (SQLite lock, PostgreSQL restart)
    injected_at: datetime | None = None  # the power cut: the chart's zero
    down_at: datetime | None = None
    up_at: datetime | None = None
    store_errors: int = 0  # store errors and waits serve logged from the outage on
    failover_ended_at: datetime | None = None
    notices: tuple[tuple[str, str], ...] = ()
    outbox_keys: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def store_rules(facts: StoreRestartFacts) -> list[str]:
    """The store-restart rules broken by *facts* (module docstring), one note each."""
    notes = list(facts.problems)
    if facts.down_at is None or facts.up_at is None:
        notes.append("the store was never taken away")
    else:
        took = (facts.up_at - facts.down_at).total_seconds()
        if took < STORE_DOWN_S - _WINDOW_SLACK_S:
            notes.append(f"the store was away {took:.1f} s, not {STORE_DOWN_S:.0f} s")
        if facts.failover_ended_at is not None and facts.failover_ended_at <= facts.down_at:
            notes.append("the failover had ended before the store went away: not mid-run")
    if not facts.store_errors:
        notes.append("no runbook met the unavailable store: nothing was retried")
    lines = Counter(facts.outbox_keys)
    status = dict(facts.notices)
    notes += [f"notice {key} {state}: lost" for key, state in facts.notices if state == "failed"]
    notes += [
        f"outbox line {key} is no sent notice in the store (its record lost)"
        for key in sorted(lines)
        if status.get(key) != "sent"
    ]
    notes += [
        f"sent notice {key} has {lines[key]} outbox lines"
        for key, state in facts.notices
        if state == "sent" and lines[key] != 1
    ]
    return notes


def judge_store_restart(base: ChaosResult, facts: StoreRestartFacts) -> ChaosResult:
    """The power row *base* with the store-restart rules applied on top."""
    away = (
        (facts.up_at - facts.down_at).total_seconds()
        if facts.down_at is not None and facts.up_at is not None
        else 0.0
    )
    held = (
        f"store away {away:.1f} s mid-failover ({facts.how}); {facts.store_errors} "
        f"store error(s) or wait(s) met and ridden out; {len(facts.notices)} notice(s), "
        "each sent once"
    )
    marks = (("store away", facts.down_at), ("store back", facts.up_at))
    return on_top_of_power(base, store_rules(facts), held, marks, facts.injected_at)
