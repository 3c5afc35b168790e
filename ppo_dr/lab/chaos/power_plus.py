"""Faults that are a power cut plus a second blow (``store-restart``,
``prefect-server-kill``): the power row, with their own rules on top.

Pure. The base row is :func:`ppo_dr.lab.chaos.verdict.judge`'s for the power cut (one
incident, a page, the failover done, nothing lost beyond the RPO); each fault adds
the notes of its broken rules, a sentence of what it saw when it held, and its own
marks on the timeline chart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from ppo_dr.lab.chaos.verdict import ChaosResult


def on_top_of_power(
    base: ChaosResult,
    broken: list[str],
    held: str,
    marks: Iterable[tuple[str, datetime | None]],
    injected_at: datetime | None,
) -> ChaosResult:
    """*base* failed too by any of *broken*; *held* noted when all held; *marks* on the
    chart (seconds after *injected_at*, the power cut)."""
    passed = base.passed and not broken
    notes = broken + list(base.notes) + ([held] if passed else [])
    events = list(base.events)
    if injected_at is not None:
        events += [
            (what, round((at - injected_at).total_seconds(), 1))
            for what, at in marks
            if at is not None
        ]
    return replace(base, passed=passed, notes=notes, events=sorted(events, key=lambda e: e[1]))
