"""A global concurrency slot whose lease survives a slow machine but not a dead holder.

Prefect's ``concurrency()`` renews a slot's lease once per three quarters of the
lease, with three quick retries, then stops renewing for good. A long lease (its
default, 300 s) keeps a SIGKILLed run's slot taken for five minutes: every mirror of
that server in between is skipped. A short one (60 s) leaves 15 s for each renewal
to land; on our 2-core machine at a load of 50 a run busy hashing and compressing,
talking to a busy Prefect server, misses that, and the server's repossessor then
frees the slot of a run that is still writing.

:func:`leased_slot` keeps the short lease and renews it every
:data:`RENEW_FRACTION` of it (every 10 s for 60 s), trying again at the next beat
when one renewal fails: a renewal may be some 50 s late before a live run loses its
slot, while a killed run's slot is free one lease (plus the repossessor's 5 s loop)
after its last renewal. Acquisition and release are Prefect's own (its back-off on
a full limit, ``strict``, the release of a lease a cancelled run could not give
back); only the renewal is ours. Pinned to Prefect 3.9's ``prefect.concurrency``.

Given the store (``store_url``), a dead holder's slot is not even waited for: the
holder records its lease there, and a run that wants the slot first gives back the
leases of holders that are gone (their flow run ended, or an earlier attempt of the
asker's own rescheduled run; the rule is :mod:`ppo_dr.slot_holders`), then again every
:data:`RECLAIM_EVERY_S` from a thread while it waits. A SIGKILLed mirror's or failover's slot is
free for the rerun as soon as Prefect calls the killed run Crashed.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.concurrency._sync import (
    acquire_concurrency_slots_with_lease,
    release_concurrency_slots_with_lease,
)
from prefect.exceptions import ObjectNotFound
from prefect.logging.loggers import get_logger
from prefect.runtime import flow_run

from ppo_dr.errors import DRError
from ppo_dr.slot_holders import ENDED_STATES, Holder, RecordedLease, dead_leases
from ppo_dr.store import Store

#: A slot's lease, in seconds: a killed holder's slot is free this long after its last
#: renewal (60 s is the shortest the Prefect server accepts).
SLOT_LEASE_S: Final = 60.0
#: The lease is renewed every this much of it.
RENEW_FRACTION: Final = 1 / 6
#: While a slot is taken, dead holders are looked for this often (seconds).
RECLAIM_EVERY_S: Final = 10.0
#: This process, among reruns of the same flow run (``ppo_dr.slot_holders.Holder``).
_PROCESS_TOKEN: Final = uuid.uuid4().hex


def current_holder() -> Holder | None:
    """This process as a slot holder: its flow run (the one the runner or worker started
    it for, else the flow run in context) and its token; None outside any flow run."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID") or flow_run.get_id()
    return Holder(str(run_id), _PROCESS_TOKEN) if run_id else None


def _run_states(run_ids: set[str]) -> dict[str, str | None]:
    """Each run's state type now (``CRASHED``...), None for a run Prefect does not know."""
    states: dict[str, str | None] = {}
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            try:
                run = client.read_flow_run(UUID(run_id))
            except (ValueError, ObjectNotFound):
                states[run_id] = None
                continue
            states[run_id] = run.state_type.value if run.state_type else None
    return states


def free_dead_holders(name: str, store_url: str) -> list[str]:
    """Give back every lease of limit *name* whose holder is gone (module docstring);
    the holders' run ids. A failure to look is logged and frees nothing: the leases
    then run out on their own."""
    log = get_logger("ppo_dr.slots")
    freed: list[str] = []
    try:
        with Store.open(store_url) as store:
            leases = store.slot_leases(name)
            if not leases:
                return freed
            states = _run_states({lease.holder.run_id for lease in leases})
            with get_client(sync_client=True) as client:
                for lease in dead_leases(leases, states, current_holder()):
                    client.release_concurrency_slots_with_lease(UUID(lease.lease_id))
                    store.forget_slot_lease(lease.lease_id)
                    run = lease.holder.run_id
                    state = states.get(run)
                    why = state if state in ENDED_STATES else "an earlier attempt of this run"
                    log.warning("slot %s: gave back the lease of run %s (%s)", name, run, why)
                    freed.append(run)
    except (DRError, httpx.HTTPError) as exc:
        log.warning("slot %s: could not look for dead holders (%s)", name, exc)
    return freed


def _reclaim_until(stop: threading.Event, name: str, store_url: str) -> None:
    """Free dead holders of *name* every :data:`RECLAIM_EVERY_S` until *stop*."""
    while not stop.wait(RECLAIM_EVERY_S):
        free_dead_holders(name, store_url)


@contextmanager
def _beside(thread_name: str, loop: Callable[..., None], *args: object) -> Iterator[None]:
    """Run ``loop(stop, *args)`` in a daemon thread while the block runs, in this
    context (the same API settings, the run's logger); *stop* is set at the end."""
    stop = threading.Event()
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(loop, stop, *args),
        name=thread_name,
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _acquire(
    name: str, timeout_s: float | None, lease_s: float, store_url: str | None
) -> ConcurrencyLimitWithLeaseResponse:
    """The slot, waiting at most *timeout_s* (None: for ever); with a store, dead
    holders are freed before the one try and every :data:`RECLAIM_EVERY_S` beside it
    (a thread: tries cut short every 10 s would each log an ERROR of Prefect's own)."""
    reclaiming: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if store_url is not None:
        free_dead_holders(name, store_url)
        reclaiming = _beside(f"slot-reclaim-{name}", _reclaim_until, name, store_url)
    with reclaiming:
        return acquire_concurrency_slots_with_lease(
            [name], 1, timeout_seconds=timeout_s, lease_duration=lease_s, strict=True
        )


def _record(store_url: str | None, lease: RecordedLease | None, *, forget: bool) -> None:
    """Record or forget *lease* in the store; a failure is logged (it costs only the
    quick release of this lease if its holder dies)."""
    if store_url is None or lease is None:
        return
    try:
        with Store.open(store_url) as store:
            if forget:
                store.forget_slot_lease(lease.lease_id)
            else:
                store.record_slot_lease(lease)
    except DRError as exc:
        get_logger("ppo_dr.slots").warning("slot %s: lease record not kept (%s)", lease.limit, exc)


def _renew_until(stop: threading.Event, lease_id: UUID, lease_s: float, name: str) -> None:
    """Renew *lease_id* every ``lease_s * RENEW_FRACTION`` until *stop*; a failed renewal
    is tried at the next beat, a lease the server no longer has (410) ends the loop."""
    log = get_logger("ppo_dr.slots")
    every = lease_s * RENEW_FRACTION
    with get_client(sync_client=True) as client:
        while not stop.wait(every):
            try:
                client.renew_concurrency_lease(lease_id=lease_id, lease_duration=lease_s)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == httpx.codes.GONE:
                    log.warning("slot %s: its lease ran out before a renewal landed", name)
                    return
                log.warning("slot %s: lease renewal failed (%s); next in %.0f s", name, exc, every)
            except httpx.HTTPError as exc:
                log.warning("slot %s: lease renewal failed (%s); next in %.0f s", name, exc, every)


@contextmanager
def leased_slot(
    name: str,
    *,
    timeout_s: float | None,
    lease_s: float = SLOT_LEASE_S,
    store_url: str | None = None,
) -> Iterator[None]:
    """One slot of global concurrency limit *name* (which must exist), held while the
    block runs and renewed often; with *store_url*, recorded there and taken back from
    dead holders (module docstring).

    Raises TimeoutError when no slot frees within *timeout_s* (None: waits for ever). A
    lost lease does not stop the block: what the slot guards must have its own lock
    (the repository's, the failover ledger's).
    """
    granted = _acquire(name, timeout_s, lease_s, store_url)
    holder = current_holder()
    recorded = None if holder is None else RecordedLease(str(granted.lease_id), name, holder)
    _record(store_url, recorded, forget=False)
    try:
        with _beside(f"slot-lease-{name}", _renew_until, granted.lease_id, lease_s, name):
            yield
    finally:
        try:
            release_concurrency_slots_with_lease(granted.lease_id)
        finally:
            _record(store_url, recorded, forget=True)
