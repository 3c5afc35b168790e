"""Has the Prefect server written every task-run record of the runs we export? (pure)

The API writes task-run records asynchronously: after a busy flow some appear up to
a minute later (PREFECT-NOTES). An export therefore reads the task runs more than
once and waits, up to a bound, while any flow run still looks incomplete:

* it has ended, yet one of its task runs is not in a final state;
* a log line or artifact of it names a task run the API did not return;
* its number of task runs changed since the previous read (or there was none yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TaskRunRead:
    """One read of the task runs of the exported flow runs, by flow run id."""

    counts: Mapping[str, int]
    #: task runs not in a final state, counted only for flow runs that have ended
    unfinished: Mapping[str, int] = field(default_factory=dict)
    #: task-run ids named by a log line or artifact of the flow run but not returned
    missing: Mapping[str, Set[str]] = field(default_factory=dict)


def lagging_runs(previous: Mapping[str, int] | None, read: TaskRunRead) -> set[str]:
    """The flow runs whose task-run records look incomplete after *read*, given the
    counts of the *previous* read (None for the first read: every run needs a second)."""
    lagging = {run for run, n in read.unfinished.items() if n > 0}
    lagging |= {run for run, ids in read.missing.items() if ids}
    if previous is None:
        return lagging | set(read.counts)
    return lagging | {run for run, n in read.counts.items() if previous.get(run) != n}
