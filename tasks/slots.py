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
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.concurrency._sync import (
    acquire_concurrency_slots_with_lease,
    release_concurrency_slots_with_lease,
)
from prefect.logging.loggers import get_logger

#: A slot's lease, in seconds: a killed holder's slot is free this long after its last
#: renewal (60 s is the shortest the Prefect server accepts).
SLOT_LEASE_S: Final = 60.0
#: The lease is renewed every this much of it.
RENEW_FRACTION: Final = 1 / 6


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
def leased_slot(name: str, *, timeout_s: float, lease_s: float = SLOT_LEASE_S) -> Iterator[None]:
    """One slot of global concurrency limit *name* (which must exist), held while the
    block runs and renewed often (module docstring).

    Raises TimeoutError when no slot frees within *timeout_s*. A lost lease does not
    stop the block: what the slot guards must have its own lock (the repository's).
    """
    granted = acquire_concurrency_slots_with_lease(
        [name], 1, timeout_seconds=timeout_s, lease_duration=lease_s, strict=True
    )
    stop = threading.Event()
    renewer = threading.Thread(  # in this context: the same API settings, run logger
        target=contextvars.copy_context().run,
        args=(_renew_until, stop, granted.lease_id, lease_s, name),
        name=f"slot-lease-{name}",
        daemon=True,
    )
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        release_concurrency_slots_with_lease(granted.lease_id)
