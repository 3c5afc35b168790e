"""Taking the lab's state store away mid-failover, and reading what that did.

What a database restart means depends on the store. In the loopback lab the store is
a SQLite file in WAL mode, with no server to restart: here the restart is its write
lock held by another process (this one) for
:data:`~ppo_dr.lab.chaos.store_restart.STORE_DOWN_S`. Every write meanwhile waits out
its busy timeout (10 s) and fails with "unavailable or busy", a transient error, as a
write to a restarting PostgreSQL fails with a refused connection; reads go on, as WAL
allows. A PostgreSQL store (the distributed lab) would be stopped ``-m immediate``
and started again (:func:`ppo_dr.lab.controlplane_restart.restart`): that path needs
the distributed lab's chaos fleet, not built yet, and is refused by name.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from ppo_dr.errors import LabError
from ppo_dr.lab.chaos import records
from ppo_dr.lab.chaos.store_restart import STORE_DOWN_S, STORE_ERROR, StoreRestartFacts
from ppo_dr.store import Store

#: How long taking the lock may wait for a write in progress.
_LOCK_WAIT_S = 60.0


def _now() -> datetime:
    return datetime.now(UTC)


class StoreOutage:
    """The store's write lock held for *down_s* in a thread, from :meth:`start` on."""

    how = "SQLite write lock held by another process"

    def __init__(self, store_url: str, serve_log: Path, down_s: float = STORE_DOWN_S) -> None:
        url = make_url(store_url)
        if url.get_backend_name() != "sqlite" or not url.database:
            raise LabError(
                f"store-restart on {url.get_backend_name()} needs the distributed lab's "
                "restart of its database (not built); the loopback lab's store is SQLite"
            )
        self.path = Path(url.database)
        self.serve_log = serve_log
        self.down_s = down_s
        self.down_at: datetime | None = None
        self.up_at: datetime | None = None
        self.error: str | None = None
        self._log_offset = 0
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def start(self) -> None:
        """Take the store away now (returns at once; :meth:`wait` for it to come back)."""
        self._log_offset = self.serve_log.stat().st_size if self.serve_log.exists() else 0
        self._thread.start()

    def wait(self) -> None:
        """Until the store is back (at most the window and the lock's wait)."""
        if self._thread.is_alive():
            self._thread.join(self.down_s + _LOCK_WAIT_S + 10.0)

    def _hold(self) -> None:
        try:
            connection = sqlite3.connect(self.path, timeout=_LOCK_WAIT_S, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")  # the write lock, until ROLLBACK
                self.down_at = _now()
                threading.Event().wait(self.down_s)
                connection.execute("ROLLBACK")
                self.up_at = _now()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            self.error = f"the store's lock could not be held: {exc}"

    def store_errors(self) -> int:
        """Store errors serve logged since :meth:`start` (the runbooks meeting the outage)."""
        if not self.serve_log.exists():
            return 0
        with self.serve_log.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode("utf-8", errors="replace").count(STORE_ERROR)

    def facts(
        self, store: Store, outbox: Path, since: datetime, plan_id: str | None
    ) -> StoreRestartFacts:
        """What the judge needs: the window, the errors met, the fault's notices.

        Notices are read before and after the outbox: one whose status changed between
        the two reads was being sent then, and is left out (neither lost nor doubled).
        """
        self.wait()
        ids = [i.id for i in records.incidents_since(store, since)]

        def statuses() -> dict[str, str]:
            return {n.idempotency_key: n.status for i in ids for n in store.notices(i)}

        before = statuses()
        lines = records.outbox_keys(outbox, ids)
        after = statuses()
        moving = {k for k, status in after.items() if before.get(k) != status}
        failover = store.failover(plan_id) if plan_id else None
        return StoreRestartFacts(
            how=self.how,
            injected_at=since,
            down_at=self.down_at,
            up_at=self.up_at,
            store_errors=self.store_errors(),
            failover_ended_at=failover.finished_at if failover else None,
            notices=tuple((k, s) for k, s in after.items() if k not in moving),
            outbox_keys=tuple(k for k in lines if k not in moving),
            problems=(self.error,) if self.error else (),
        )
