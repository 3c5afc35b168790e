"""The escalation run's pause for an acknowledgement, and its "Acknowledged" state.

Prefect's ``pause_flow_run`` lets the server fail a run whose pause expired, which a
runbook that loops on a timed-out pause cannot live with (see :func:`wait_for_ack`).
So the pause, the resume form (:class:`Ack`) and the "Acknowledged" Running state are
made here from Prefect's public client API and :mod:`prefect.input` alone, in one
place, so no other flow needs to know how. tests/flows/test_escalation.py and
tests/ui/test_prefect_ui_ack.py pin the engine's behaviour this relies on (the UI form
refused without a name and accepted with one, a timed-out pause loops, an ack shows
Acknowledged), so an engine upgrade that changes it fails there first.
"""

from __future__ import annotations

import time
from typing import Any, Final, cast
from uuid import UUID

from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field

from flows.decision_fields import DeciderName, DecisionNote
from ppo_dr.errors import PermanentError

#: How often a paused run asks the API whether it was resumed (PREFECT-NOTES).
POLL_S: Final = 2
#: The server-side pause outlasts our wait by this much (see :func:`wait_for_ack`).
PAUSE_GRACE_S: Final = 300
#: Name of the run's state while an acknowledgement holds paging off (a Running state).
ACKNOWLEDGED: Final = "Acknowledged"


class Ack(RunInput):
    """Acknowledge the incident: you take it; paging stops (the UI shows this form)."""

    by: DeciderName = Field(
        description="Who takes the incident (as on the escalation policy, e.g. anna)"
    )
    note: DecisionNote = Field(
        default="", description="What you are doing about it (kept with the acknowledgement)"
    )


def _set_run_state(run_id: UUID, state: State[Any], force: bool = False) -> State[Any]:
    """Ask the API to put this run in *state*; the state the run is in afterwards.

    Public client API only (``set_flow_run_state``): WAIT is honoured, ABORT is an error.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import SetStateStatus

    with get_client(sync_client=True) as client:
        result = client.set_flow_run_state(run_id, state, force=force)
        while result.status == SetStateStatus.WAIT:
            time.sleep(getattr(result.details, "delay_seconds", POLL_S) or POLL_S)
            result = client.set_flow_run_state(run_id, state, force=force)
    if result.status == SetStateStatus.ABORT or result.state is None:
        reason = getattr(result.details, "reason", "") or result.status.value
        raise PermanentError(f"the escalation run cannot enter {state.name}: {reason}")
    return result.state


def _this_run_id() -> UUID:
    if flow_run.id is None:
        raise PermanentError("the escalation waits for an ack only inside its flow run")
    return UUID(str(flow_run.id))


def wait_for_ack(timeout: int, key: str) -> Ack | None:
    """Pause this run for an :class:`Ack` for up to *timeout* seconds; None if none came.

    What ``pause_flow_run(wait_for_input=Ack, timeout=..., poll_interval=2, key=...)``
    does, except at the end of the wait: there the run is Paused on the server and the
    server's pause-expiration service fails it as soon as the pause expires, so a flow
    that catches ``FlowPauseTimeout`` to loop may find itself Failed (measured here:
    "Run is already in terminal state FAILED" at the next pause). So the server-side
    pause lasts :data:`PAUSE_GRACE_S` longer than the wait, and at the end of the wait
    the run takes itself back to Running. A resume arriving in that instant is kept
    (its input is read after the switch). Only Prefect's public API is used: the
    client's ``set_flow_run_state`` and ``read_flow_run``, and :mod:`prefect.input`
    (the keyset the UI's Resume form writes to); tests/flows/test_escalation.py pins
    the behaviour (UI form refused without a name, accepted with one, timeout loops).
    """
    from prefect.client.orchestration import get_client
    from prefect.input import keyset_from_paused_state, read_flow_run_input
    from prefect.states import Paused, Running

    run_id = _this_run_id()
    proposed: State[Any] = Paused(
        timeout_seconds=timeout + PAUSE_GRACE_S, reschedule=False, pause_key=key
    )
    keyset = keyset_from_paused_state(proposed)
    proposed.state_details.run_input_keyset = cast(dict[str, str], keyset)

    def received() -> Ack | None:
        value: Any = read_flow_run_input(keyset["response"], flow_run_id=run_id)
        return Ack(**value) if value else None

    state = _set_run_state(run_id, proposed)
    if state.is_running():  # this pause happened before and was resumed
        return received()
    if not state.is_paused():
        raise PermanentError(f"the escalation run cannot pause: {state.type.value}")
    Ack.save(keyset, flow_run_id=run_id)  # the UI shows the form from this
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            time.sleep(max(0.1, min(POLL_S, deadline - time.monotonic())))
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_running():
                return received()
            if time.monotonic() >= deadline:
                break
    _set_run_state(run_id, Running(), force=True)
    return received()


def show_acknowledged(by: str) -> None:
    """Put the run in a Running state named :data:`ACKNOWLEDGED`: the UI shows it, with
    who took the incident, instead of a Paused run with a Resume button."""
    from prefect.states import Running

    message = f"acknowledged by {by}: paging stopped, watching until resolved"
    _set_run_state(_this_run_id(), Running(name=ACKNOWLEDGED, message=message), force=True)
