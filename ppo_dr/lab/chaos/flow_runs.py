"""What the chaos faults ask of the orchestrator: start a deployment's run, see its state.

A protocol, so that :mod:`ppo_dr` stays free of Prefect: ``cli/chaos.py`` implements it
over the served Prefect API. State names are Prefect's state types (``COMPLETED``,
``FAILED``, ``CRASHED``, ``CANCELLED``, ``RUNNING``, ...).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

#: States a run does not leave.
FINAL_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class FlowRuns(Protocol):
    """Runs of the served deployments (named ``flow/deployment``)."""

    def run_to_end(self, deployment: str, parameters: dict[str, Any]) -> str:
        """Start a run and wait for its final state (tried again while the deployment's
        one slot is taken, which cancels a new run); that state's name."""
        ...

    def start_run(self, deployment: str, parameters: dict[str, Any]) -> str:
        """Start a run of *deployment* now without waiting for it; its id."""
        ...

    def running_run(self, deployment: str) -> tuple[str, datetime] | None:
        """(id, start time) of a run of *deployment* running now, if any."""
        ...

    def run_state(self, run_id: str) -> str:
        """The run's state name now."""
        ...

    def run_history(self, run_id: str) -> list[tuple[str, datetime]]:
        """Every state the run has been in, oldest first, with when it was entered (a
        crash the deploy automation reschedules at once is seen here, not in
        :meth:`run_state`)."""
        ...

    def rerun(self, run_id: str) -> None:
        """Schedule the ended run *run_id* again, the same run (what ``ppo-dr deploy``'s
        "rerun a crashed failover" automation does: state Scheduled, AwaitingRetry)."""
        ...
