"""Taking the lab's state store away mid-failover, and reading what that did.

What a database restart means depends on the store:

- a PostgreSQL store (a loopback lab started with ``--store postgres``,
  :mod:`ppo_dr.lab.store_database`): the cluster is stopped ``-m immediate`` (every
  backend quits at once, pooled connections are cut), kept down for
  :data:`~ppo_dr.lab.chaos.store_restart.STORE_DOWN_S` and started again on its port
  (:func:`ppo_dr.lab.controlplane_restart.restart`). Reads and writes fail meanwhile
  with a refused connection, a transient error.
- a SQLite store (the default lab) has no server to restart: its write lock is held
  by another process (this one) for the same window. Every write meanwhile waits out
  its busy timeout (10 s) and fails with "unavailable or busy", the same transient
  error; reads go on, as WAL allows.

The distributed lab's store is its control plane's PostgreSQL; its chaos fleet is not
built, so a PostgreSQL store without a cluster of the lab's own is refused by name.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from ppo_dr.errors import LabError
from ppo_dr.lab import controlplane_restart, store_database
from ppo_dr.lab.chaos import records
from ppo_dr.lab.chaos.store_restart import (
    STORE_DOWN_S,
    STORE_ERROR,
    STORE_WAIT,
    StoreRestartFacts,
)
from ppo_dr.store import Store

#: How long taking the lock may wait for a write in progress.
_LOCK_WAIT_S = 60.0


def _now() -> datetime:
    return datetime.now(UTC)


class StoreOutage:
    """The store taken away for *down_s* in a thread, from :meth:`start` on: a PostgreSQL
    store of the lab in *lab_dir* restarted, a SQLite store's write lock held."""

    def __init__(
        self, store_url: str, serve_log: Path, lab_dir: Path, down_s: float = STORE_DOWN_S
    ) -> None:
        url = make_url(store_url)
        backend = url.get_backend_name()
        self.path: Path | None = None
        self.cluster: Path | None = None
        if backend == "sqlite" and url.database:
            self.path = Path(url.database)
            self.how = "SQLite write lock held by another process"
        elif backend == "postgresql" and store_database.recorded(lab_dir):
            self.cluster = store_database.store_db_dir(lab_dir)
            self.how = "PostgreSQL stopped -m immediate and started again"
        else:
            raise LabError(
                f"store-restart on a {backend} store needs the lab's own database: a SQLite "
                "file, or PostgreSQL from `lab up --store postgres` (the distributed lab's "
                "control plane is not a chaos target yet)"
            )
        self.serve_log = serve_log
        self.down_s = down_s
        self.down_at: datetime | None = None
        self.up_at: datetime | None = None
        self.error: str | None = None
        self._log_offset = 0
        take = self._hold if self.path is not None else self._restart
        self._thread = threading.Thread(target=take, daemon=True)

    def start(self) -> None:
        """Take the store away now (returns at once; :meth:`wait` for it to come back)."""
        self._log_offset = self.serve_log.stat().st_size if self.serve_log.exists() else 0
        self._thread.start()

    def wait(self) -> None:
        """Until the store is back (at most the window and the lock's wait or the start)."""
        if self._thread.is_alive():
            self._thread.join(self.down_s + _LOCK_WAIT_S + 10.0)

    def _restart(self) -> None:
        assert self.cluster is not None
        try:
            self.down_at = _now()
            controlplane_restart.restart(self.cluster, "postgres", down_s=self.down_s)
            self.up_at = _now()
        except (LabError, OSError) as exc:
            self.error = f"the store's database could not be restarted: {exc}"

    def _hold(self) -> None:
        assert self.path is not None
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
        """Store errors and waits serve logged since :meth:`start` (the runbooks meeting
        the outage)."""
        if not self.serve_log.exists():
            return 0
        with self.serve_log.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode("utf-8", errors="replace")
        return text.count(STORE_ERROR) + text.count(STORE_WAIT)

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
