"""The store's plumbing: lifecycle, schema check, one short transaction per call."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Self, TypeVar

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import ColumnElement, Engine, Select, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from ppo_dr.closing import ClosesOnExit
from ppo_dr.config import default_store_url, store_patience_s
from ppo_dr.errors import DRError, PermanentError, TransientError
from ppo_dr.store.engine import (
    UPGRADE_LOCK_KEY,
    VERSION_TABLE,
    WRITE_OPTION,
    alembic_config,
    head_revision,
    known_revisions,
    make_engine,
    normalise_url,
)
from ppo_dr.store.schema import IncidentRow

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")
T = TypeVar("T")  # an ORM row class
C = TypeVar("C")  # what a connection checkout returns

_log = logging.getLogger(__name__)
#: Longest pause between two tries to connect to a database that refuses connections.
_MAX_CONNECT_PAUSE_S = 5.0
#: SQLSTATE classes of a refusal no wait will change: the role or its password (28),
#: a database that does not exist (3D).
_FOR_GOOD = ("28", "3D")
#: The same refusals as libpq words them while connecting (psycopg gives no SQLSTATE
#: for a failed connection attempt, only the server's FATAL message).
_FOR_GOOD_WORDS = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",  # the role, or the database
    "permission denied",
)


def _refused_for_good(exc: OperationalError) -> bool:
    """Whether PostgreSQL said no for a reason a restart does not change: the role, its
    password, its access or the database. A refused or cut connection, "starting up"
    and "shutting down" are waited for."""
    state = getattr(exc.orig, "sqlstate", None) or ""
    message = str(exc.orig)
    return state.startswith(_FOR_GOOD) or any(words in message for words in _FOR_GOOD_WORDS)


class StoreBase(ClosesOnExit):
    """Lifecycle and transactions; the record-specific methods live in the mixins."""

    def __init__(self, url: str, *, patience_s: float | None = None) -> None:
        self._url = normalise_url(url)
        self._engine = make_engine(self._url)
        self._schema_ok = False
        #: How long a call waits for a PostgreSQL that refuses connections (default:
        #: ``$PPO_DR_STORE_PATIENCE_S``; SQLite has its busy timeout instead).
        self._patience_s = store_patience_s() if patience_s is None else patience_s

    @classmethod
    def open(cls, url: str | None = None) -> Self:
        """The store at *url*, or at ``PPO_DR_DB_URL`` / the SQLite file in ``PPO_DR_HOME``."""
        return cls(url or default_store_url())

    @property
    def url(self) -> str:
        """The database URL with any password masked (safe to log)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for instrumentation and tests, not for queries)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def close(self) -> None:
        """Close pooled connections; the store can be used again afterwards."""
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- schema -----------------------------------------------------------------------

    def upgrade(self) -> str:
        """Bring the schema to the head revision (``alembic upgrade head``); returns it.

        Idempotent, and safe if two processes do it at once (SQLite: the write lock;
        PostgreSQL: an advisory lock). The whole upgrade is one transaction.
        """
        config = alembic_config()
        with self._translate("upgrading the schema of"), self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY}
                    )
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        self._schema_ok = False
        revision = self.current_revision()
        if revision != head_revision():  # pragma: no cover - alembic would have raised
            raise PermanentError(f"upgrade of {self.url} ended at {revision}, not at head")
        return revision

    def current_revision(self) -> str | None:
        """The schema revision of the database, or None for an empty database."""
        with (
            self._translate("reading the schema revision of"),
            self._patiently(self._engine.connect) as conn,
        ):
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()

    def _ensure_schema(self) -> None:
        if self._schema_ok:
            return
        current = self.current_revision()
        head = head_revision()
        if current == head:
            self._schema_ok = True
            return
        if current is None:
            raise PermanentError(
                f"state store {self.url} has no schema yet: run `ppo-dr db upgrade` first"
            )
        if current not in known_revisions():
            raise PermanentError(
                f"state store {self.url} is at schema revision {current}, which this ppo-dr "
                f"does not know (it expects {head}): a newer ppo-dr upgraded it; upgrade ppo-dr"
            )
        raise PermanentError(
            f"state store {self.url} is at schema revision {current}, this ppo-dr needs "
            f"{head}: run `ppo-dr db upgrade`"
        )

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        """Turn driver errors into the ppo-dr error tree (messages never carry parameters)."""
        try:
            yield
        except DRError:
            raise
        except (OperationalError, InterfaceError) as exc:
            raise TransientError(
                f"state store {self.url} unavailable or busy while {doing} it: "
                f"{type(exc.orig).__name__}: {_first_line(exc.orig)}"
            ) from exc
        except DBAPIError as exc:
            raise PermanentError(
                f"state store {self.url} refused a statement while {doing} it: "
                f"{type(exc.orig).__name__}: {_first_line(exc.orig)}"
            ) from exc

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[Session]:
        """One short transaction: committed on success, rolled back on any error."""
        self._ensure_schema()
        with (
            self._translate("writing to" if write else "reading"),
            Session(self._engine, expire_on_commit=False, autoflush=True) as session,
            session.begin(),
        ):
            self._patiently(lambda: session.connection(execution_options={WRITE_OPTION: write}))
            yield session

    def _patiently(self, checkout: Callable[[], C]) -> C:
        """*checkout* (a connection for a transaction not begun on the server yet), tried
        again while PostgreSQL refuses connections, for up to the store's patience.

        A database restart or failover refuses connections for seconds to a minute;
        a runbook step should ride that out rather than fail. Nothing of the
        transaction has been sent when a checkout fails, so trying again is safe. A
        connection lost later, mid-transaction, is not retried here: whether its
        commit happened is unknown, and the task's own retry decides.
        """
        deadline = time.monotonic() + self._patience_s
        pause = 0.5
        while True:
            try:
                return checkout()
            except OperationalError as exc:
                remaining = deadline - time.monotonic()
                if self.dialect != "postgresql" or remaining <= 0 or _refused_for_good(exc):
                    raise
                pause = min(pause, remaining)
                _log.warning(
                    "state store %s refuses connections; trying again in %.1f s", self.url, pause
                )
                time.sleep(pause)
                pause = min(pause * 2, _MAX_CONNECT_PAUSE_S)

    def _records(self, record_type: type[R], query: Select[Any]) -> list[R]:
        """The rows *query* selects, as records, in one read-only transaction."""
        with self._tx(write=False) as session:
            return [to_record(record_type, row) for row in session.scalars(query)]

    @staticmethod
    def _insert(session: Session) -> Any:
        """The dialect's ``insert`` (it has ``on_conflict_do_nothing`` / ``_do_update``)."""
        return (
            postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        )

    def _insert_or_find(
        self,
        session: Session,
        row_type: type[T],
        values: Mapping[str, Any],
        key: Sequence[str],
        *,
        where: ColumnElement[bool] | None = None,
    ) -> tuple[T | None, bool]:
        """Insert a row unless one with the same *key* already exists: (the row, created).

        Looks first and inserts only if nothing is there. Race-safe: the unique index on
        *key* decides (``ON CONFLICT DO NOTHING``), so of two racing writers exactly one
        sees ``created`` and both get the same row, read fresh from the database. *where*
        is the predicate of a partial unique index (e.g. "not resolved"); the row comes
        back None only if the one that conflicted stopped matching it in between, and
        the caller may try again.
        """
        key_values = {name: values[name] for name in key}
        found = self._reread(session, row_type, key_values, where)
        if found is not None:  # the common rerun: no insert, so no sequence number spent
            return found, False
        stmt = (
            self._insert(session)(row_type)
            .values(**values)
            .on_conflict_do_nothing(index_elements=list(key), index_where=where)
            .returning(*sa_inspect(row_type).primary_key)
        )
        created = session.execute(stmt).first() is not None
        return self._reread(session, row_type, key_values, where), created

    def _upsert(
        self,
        session: Session,
        row_type: type[T],
        values: Mapping[str, Any],
        key: Sequence[str],
        update: Iterable[str],
    ) -> T:
        """Insert a row, or update the columns *update* of the one with the same *key*;
        return the row as now stored (read fresh, not the session's stale copy)."""
        insert = self._insert(session)(row_type).values(**values)
        session.execute(
            insert.on_conflict_do_update(
                index_elements=list(key), set_={name: insert.excluded[name] for name in update}
            )
        )
        row = self._reread(session, row_type, {name: values[name] for name in key})
        assert row is not None  # just written in this transaction
        return row

    @staticmethod
    def _added(session: Session, row: T) -> T:
        """Insert *row* now (flush), so its generated id is known before the commit."""
        session.add(row)
        session.flush()
        return row

    @staticmethod
    def _require_incident(session: Session, incident_id: int | None, missing: str) -> None:
        """PermanentError *missing* unless *incident_id* is None or a stored incident's:
        checked in the writer's transaction, so a row never points at no incident."""
        if incident_id is not None and session.get(IncidentRow, incident_id) is None:
            raise PermanentError(missing)

    @staticmethod
    def _locked_row(
        session: Session, row_type: type[T], *where: ColumnElement[bool], missing: str
    ) -> T:
        """The row of *row_type* matching *where*, locked for this transaction
        (PostgreSQL: FOR UPDATE); PermanentError *missing* if there is none."""
        row = session.scalars(select(row_type).where(*where).with_for_update()).one_or_none()
        if row is None:
            raise PermanentError(missing)
        return row

    @staticmethod
    def _reread(
        session: Session,
        row_type: type[T],
        key_values: Mapping[str, Any],
        where: ColumnElement[bool] | None = None,
    ) -> T | None:
        """The row with *key_values* (and *where*), refreshed from the database."""
        query = select(row_type).where(
            *(getattr(row_type, name) == value for name, value in key_values.items())
        )
        if where is not None:
            query = query.where(where)
        return session.scalars(query.execution_options(populate_existing=True)).one_or_none()


# -- helpers shared by the mixins ---------------------------------------------------------


def to_record(cls: type[R], row: object) -> R:
    """Copy the fields of dataclass *cls* from an ORM row (detached, plain values)."""
    return cls(**{f.name: _plain(getattr(row, f.name)) for f in dataclasses.fields(cls)})


def _plain(value: object) -> object:
    if isinstance(value, dict):
        return json.loads(json.dumps(value))  # deep copy: the record owns its data
    return value


def _first_line(exc: BaseException | None) -> str:
    text_ = str(exc).strip()
    return text_.splitlines()[0] if text_ else "(no message)"
