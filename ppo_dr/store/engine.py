"""Connections and migrations: URL normalisation, engine set-up, Alembic run from code.

SQLite is set up for several processes sharing one file (the lab front door, flow
runs, the CLI): WAL journal, a busy timeout, foreign keys on, and SQLAlchemy emitting
BEGIN itself so that transactions really are transactions (Python's sqlite3 module
would otherwise leave SELECTs and DDL outside them). Write transactions start with
``BEGIN IMMEDIATE``: they queue for the write lock up front instead of failing half-way.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ppo_dr.errors import PermanentError

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE: Final = "ppo_dr_alembic_version"
BUSY_TIMEOUT_S: Final = 10.0
WRITE_OPTION: Final = "ppo_dr_write"  # execution option: this transaction will write
UPGRADE_LOCK_KEY: Final = 0x70706F5F6472  # "ppo_dr": PostgreSQL advisory lock for upgrades


def normalise_url(url: str) -> URL:
    """Parse *url*; ``postgresql://`` and ``postgres://`` get the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise PermanentError(
            f"state store URL is not a database URL ({exc}); "
            "expected sqlite:///path/to/file.db or postgresql://user@host/db"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise PermanentError(
            f"state store URL {parsed.render_as_string(hide_password=True)!r}: "
            "only sqlite and postgresql are supported"
        )
    return parsed


def make_engine(url: URL) -> Engine:
    """An engine for *url* with the settings the store relies on."""
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.query.get("uri"):
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, hide_parameters=True, connect_args={"timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(
        url,
        hide_parameters=True,  # notice bodies never end up in error messages or logs
        pool_pre_ping=True,
        connect_args={"connect_timeout": 10, "application_name": "ppo-dr"},
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _sqlite_on_begin)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, much faster
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """Turn on WAL; retried, because switching the journal mode of a fresh database
    can answer "database is locked" at once, without waiting for the busy timeout,
    while another process holds it (seen when two processes upgrade at once)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sqlite_on_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def alembic_config() -> Config:
    """Alembic configuration pointing at the packaged migrations; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("version_table", VERSION_TABLE)
    return config


@functools.cache
def head_revision() -> str:
    """The revision the code expects (the head of the packaged migrations)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise PermanentError(f"no migrations found in {MIGRATIONS_DIR}: broken installation")
    return head


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision in the packaged migrations."""
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())
