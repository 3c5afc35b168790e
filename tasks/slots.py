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

A Prefect server that keeps leases in memory forgets them when it restarts, while its
database still counts the slots. A live holder sees that at its next renewal ("gone"
less than a lease after its last one: :class:`~ppo_dr.slot_holders.LeaseClock`) or at
the one it makes before its release, and gives its slot back by count itself.

The records find the rest, orphans: slots a full limit counts as taken beyond every
recorded lease (their holders forgotten and dead too). Seen in every look for
:data:`ORPHAN_SEEN_S`, they are given back with a plain decrement. This relies on every
holder of the limit recording its lease, which all of ours do (``mirror-server-*``,
``mirror-dc-*``, ``failover``, ``dr-drill``, ``reports``); a holder whose record failed
records it again at its renewals, sooner than an orphan is given back.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.responses import ConcurrencyLimitWithLeaseResponse
from prefect.concurrency._sync import (
    acquire_concurrency_slots_with_lease,
    release_concurrency_slots_with_lease,
)
from prefect.exceptions import ObjectNotFound
from prefect.logging.loggers import get_logger
from prefect.runtime import flow_run

from ppo_dr import slot_holders
from ppo_dr.errors import DRError
from ppo_dr.slot_holders import Holder, LeaseClock, OrphanWatch, RecordedLease
from ppo_dr.store import Store

#: A slot's lease, in seconds: a killed holder's slot is free this long after its last
#: renewal (60 s is the shortest the Prefect server accepts).
SLOT_LEASE_S: Final = 60.0
#: The lease is renewed every this much of it.
RENEW_FRACTION: Final = 1 / 6
#: A lease answered "gone" less than a lease minus this since its last renewal was
#: sent was forgotten by a restart, not run out (``ppo_dr.slot_holders.LeaseClock``).
RENEW_MARGIN_S: Final = 10.0
#: While a slot is taken, dead holders are looked for this often (seconds).
RECLAIM_EVERY_S: Final = 10.0
#: Prefect's lease repossessor loop (its default), in seconds.
REPOSSESSOR_LOOP_S: Final = 5.0
#: Orphaned slots are given back once seen longer than a lease and the repossessor's
#: loop. A slot counted beyond the recorded leases may still have a live lease behind
#: it: a holder killed between its grant and its record, or one whose record keeps
#: failing on a busy store. Given back earlier, the repossessor would decrement it a
#: second time when that lease ran out (seen in the chaos matrix). A live lease has run
#: out or been recorded by then; a lease a restarted server forgot never runs out.
ORPHAN_SEEN_S: Final = SLOT_LEASE_S + REPOSSESSOR_LOOP_S + RECLAIM_EVERY_S
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
                for lease in slot_holders.dead_leases(leases, states, current_holder()):
                    client.release_concurrency_slots_with_lease(UUID(lease.lease_id))
                    store.forget_slot_lease(lease.lease_id)
                    run = lease.holder.run_id
                    state = states.get(run)
                    ended = state in slot_holders.ENDED_STATES
                    why = state if ended else "an earlier attempt of this run"
                    log.warning("slot %s: gave back the lease of run %s (%s)", name, run, why)
                    freed.append(run)
    except (DRError, httpx.HTTPError) as exc:
        log.warning("slot %s: could not look for dead holders (%s)", name, exc)
    return freed


def _orphans(name: str, store_url: str) -> int:
    """The slots of *name* that no recorded lease holds now, if the limit is full (0 when
    either side cannot be read: nothing is given back on a guess)."""
    try:
        with Store.open(store_url) as store:
            recorded = len(store.slot_leases(name))
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
    except (DRError, httpx.HTTPError, ObjectNotFound) as exc:
        get_logger("ppo_dr.slots").warning("slot %s: could not count its holders (%s)", name, exc)
        return 0
    return slot_holders.orphaned_slots(limit.active_slots, limit.limit, recorded)


def _give_back_orphans(name: str, watch: OrphanWatch, store_url: str) -> int:
    """One look for orphans of *name*; gives back those *watch* says were seen long
    enough; how many."""
    count = watch.look(_orphans(name, store_url), time.monotonic())
    if count:
        try:
            with get_client(sync_client=True) as client:
                client.release_concurrency_slots([name], count, occupancy_seconds=ORPHAN_SEEN_S)
        except httpx.HTTPError as exc:
            get_logger("ppo_dr.slots").warning("slot %s: orphans not given back (%s)", name, exc)
            return 0
        get_logger("ppo_dr.slots").warning(
            "slot %s: gave back %d slot(s) no recorded lease holds, seen for %.0f s "
            "(a Prefect server restarted and forgot their leases)",
            name,
            count,
            ORPHAN_SEEN_S,
        )
    return count


def free_slots(name: str, store_url: str) -> bool:
    """Give back the slots of *name* held by nobody: the leases of dead holders at once,
    and orphans after watching them for :data:`ORPHAN_SEEN_S` (only when there are
    some: a slot its recorded holder has costs no wait); whether a slot is free now.
    For an asker that does not wait for a taken slot (the mirror skips its server),
    which then takes it with ``leased_slot(..., freed=True)``."""
    free_dead_holders(name, store_url)
    watch = OrphanWatch(ORPHAN_SEEN_S)
    deadline = time.monotonic() + ORPHAN_SEEN_S + RECLAIM_EVERY_S
    while _give_back_orphans(name, watch, store_url) == 0 and watch.watching:
        if time.monotonic() >= deadline:
            break
        time.sleep(RECLAIM_EVERY_S)
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(name)
    return bool(limit.active_slots < limit.limit)


def _reclaim_until(stop: threading.Event, name: str, store_url: str) -> None:
    """Free dead holders and orphans of *name* every :data:`RECLAIM_EVERY_S` until *stop*."""
    watch = OrphanWatch(ORPHAN_SEEN_S)
    while not stop.wait(RECLAIM_EVERY_S):
        free_dead_holders(name, store_url)
        _give_back_orphans(name, watch, store_url)


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
    name: str, timeout_s: float | None, lease_s: float, store_url: str | None, freed: bool
) -> ConcurrencyLimitWithLeaseResponse:
    """The slot, waiting at most *timeout_s* (None: for ever); with a store, dead
    holders are freed before the one try (unless the caller just did: *freed*) and
    every :data:`RECLAIM_EVERY_S` beside it (a thread: tries cut short every 10 s would
    each log an ERROR of Prefect's own)."""
    reclaiming: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if store_url is not None:
        if not freed:
            free_dead_holders(name, store_url)
        reclaiming = _beside(f"slot-reclaim-{name}", _reclaim_until, name, store_url)
    with reclaiming:
        return acquire_concurrency_slots_with_lease(
            [name], 1, timeout_seconds=timeout_s, lease_duration=lease_s, strict=True
        )


def _record(store_url: str | None, lease: RecordedLease | None, *, forget: bool) -> bool:
    """Record or forget *lease* in the store; whether that was done. A failure is
    logged (a record not kept is tried again at the renewals)."""
    if store_url is None or lease is None:
        return True
    try:
        with Store.open(store_url) as store:
            if forget:
                store.forget_slot_lease(lease.lease_id)
            else:
                store.record_slot_lease(lease)
    except DRError as exc:
        get_logger("ppo_dr.slots").warning("slot %s: lease record not kept (%s)", lease.limit, exc)
        return False
    return True


def _renew_once(client: SyncPrefectClient, lease_id: UUID, clock: LeaseClock, name: str) -> bool:
    """Renew *lease_id* once; False when the server no longer has it (410: it ran out,
    or a restart lost it, which *clock* tells apart), so there is nothing left to renew.
    A failure is logged."""
    log = get_logger("ppo_dr.slots")
    sent = time.monotonic()
    try:
        client.renew_concurrency_lease(lease_id=lease_id, lease_duration=clock.lease_s)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == httpx.codes.GONE:
            if clock.gone(time.monotonic()):
                log.warning("slot %s: its lease was forgotten (the Prefect server restarted)", name)
            else:
                log.warning("slot %s: its lease ran out", name)
            return False
        log.warning("slot %s: lease renewal failed (%s)", name, exc)
    except httpx.HTTPError as exc:
        log.warning("slot %s: lease renewal failed (%s)", name, exc)
    else:
        clock.renewed(sent)
    return True


def _renew_until(
    stop: threading.Event,
    lease_id: UUID,
    clock: LeaseClock,
    name: str,
    record_again: Callable[[], bool] | None = None,
) -> None:
    """Renew *lease_id* every ``lease_s * RENEW_FRACTION`` until *stop* (a failed renewal
    is tried at the next beat); *record_again* (the lease's record failed) is tried at
    every beat until it is kept: an unrecorded live holder would look like an orphan."""
    renewing = True
    with get_client(sync_client=True) as client:
        while not stop.wait(clock.lease_s * RENEW_FRACTION):
            if record_again is not None and record_again():
                record_again = None
            if renewing:
                renewing = _renew_once(client, lease_id, clock, name)


def _give_back(lease_id: UUID, clock: LeaseClock, name: str, held_s: float) -> None:
    """Give the slot back: with its lease, or by count when the server forgot the lease
    (a release with a lease it does not know gives nothing back, and the slot would stay
    taken until a waiter saw it orphaned for :data:`ORPHAN_SEEN_S`). One renewal first
    tells whether it was forgotten since the last beat."""
    with get_client(sync_client=True) as client:
        if not clock.forgotten:
            _renew_once(client, lease_id, clock, name)
        if clock.forgotten:
            client.release_concurrency_slots([name], 1, occupancy_seconds=held_s)
            log = get_logger("ppo_dr.slots")
            log.warning("slot %s: given back by count (its lease was forgotten)", name)
            return
    release_concurrency_slots_with_lease(lease_id)


@contextmanager
def leased_slot(
    name: str,
    *,
    timeout_s: float | None,
    lease_s: float = SLOT_LEASE_S,
    store_url: str | None = None,
    freed: bool = False,
) -> Iterator[None]:
    """One slot of global concurrency limit *name* (which must exist), held while the
    block runs and renewed often; with *store_url*, recorded there and taken back from
    dead holders (module docstring). *freed*: :func:`free_slots` has just run.

    Raises TimeoutError when no slot frees within *timeout_s* (None: waits for ever). A
    lost lease does not stop the block: what the slot guards must have its own lock
    (the repository's, the failover ledger's).
    """
    asked_at = time.monotonic()
    granted = _acquire(name, timeout_s, lease_s, store_url, freed)
    # Granted after *asked_at*, so its lease runs out no sooner than a lease after it;
    # a renewal's round trip is kept as a margin for a long wait's last try.
    clock = LeaseClock(lease_s, max(asked_at, time.monotonic() - RENEW_MARGIN_S), RENEW_MARGIN_S)
    held_from = time.monotonic()
    # Outside a flow run the process token stands for the run: Prefect never knows it,
    # so it is never called dead, and its record keeps its slot from looking orphaned.
    holder = current_holder() or Holder(_PROCESS_TOKEN, _PROCESS_TOKEN)
    recorded = RecordedLease(str(granted.lease_id), name, holder)
    kept = _record(store_url, recorded, forget=False)
    again = None if kept else functools.partial(_record, store_url, recorded, forget=False)
    try:
        with _beside(f"slot-lease-{name}", _renew_until, granted.lease_id, clock, name, again):
            yield
    finally:
        try:
            _give_back(granted.lease_id, clock, name, time.monotonic() - held_from)
        finally:
            _record(store_url, recorded, forget=True)
