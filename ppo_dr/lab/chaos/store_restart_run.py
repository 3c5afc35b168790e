"""Taking the lab's state store away mid-failover, and reading what that did.

What a database restart means depends on the store:

- a PostgreSQL store (a loopback lab started with ``--store postgres``,
  :mod:`ppo_dr.lab.store_database`, or the distributed lab's control plane, whose
  cluster also holds Prefect's database): the cluster is stopped ``-m immediate`` (every
  backend quits at once, pooled connections are cut), kept down for
  :data:`~ppo_dr.lab.chaos.store_restart.STORE_DOWN_S` and started again on its port
  (:func:`ppo_dr.lab.controlplane_restart.restart`). Reads and writes fail meanwhile
  with a refused connection, a transient error.
- a SQLite store (the default lab) has no server to restart: its write lock is held
  by another process (this one) for the same window. Every write meanwhile waits out
  its busy timeout (10 s) and fails with "unavailable or busy", the same transient
  error; reads go on, as WAL allows.

The cluster is the one the fleet names (:meth:`ChaosFleet.store_cluster`); a
PostgreSQL store without a cluster of the lab's own is refused by name. The store errors
the runbooks met are counted in the fleet's run logs (serve's, or each worker's).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from ppo_dr.errors import LabError
from ppo_dr.lab import controlplane_restart
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
    store's *cluster* (a control-plane record directory) restarted, a SQLite store's
    write lock held. *run_logs* are where the runbooks log the store errors they meet."""

    def __init__(
        self,
        store_url: str,
        run_logs: list[Path],
        cluster: Path | None,
        down_s: float = STORE_DOWN_S,
    ) -> None:
        url = make_url(store_url)
        backend = url.get_backend_name()
        self.path: Path | None = None
        self.cluster: Path | None = None
        if backend == "sqlite" and url.database:
            self.path = Path(url.database)
            self.how = "SQLite write lock held by another process"
        elif backend == "postgresql" and cluster is not None:
            self.cluster = cluster
            self.how = "PostgreSQL stopped -m immediate and started again"
        else:
            raise LabError(
                f"store-restart on a {backend} store needs the lab's own database: a SQLite "
                "file, PostgreSQL from `lab up --store postgres`, or the distributed lab's "
                "control plane"
            )
        self.run_logs = run_logs
        self.down_s = down_s
        self.down_at: datetime | None = None
        self.up_at: datetime | None = None
        self.error: str | None = None
        self._log_offsets: dict[Path, int] = {}
        take = self._hold if self.path is not None else self._restart
        self._thread = threading.Thread(target=take, daemon=True)

    def start(self) -> None:
        """Take the store away now (returns at once; :meth:`wait` for it to come back)."""
        self._log_offsets = {p: p.stat().st_size if p.exists() else 0 for p in self.run_logs}
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
        """Store errors and waits the runbooks logged since :meth:`start` (meeting the
        outage), over every run log."""
        met = 0
        for path in self.run_logs:
            if not path.exists():
                continue
            with path.open("rb") as log:
                log.seek(self._log_offsets.get(path, 0))
                text = log.read().decode("utf-8", errors="replace")
            met += text.count(STORE_ERROR) + text.count(STORE_WAIT)
        return met

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
