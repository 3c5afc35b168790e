"""Alembic environment for the ppo-dr state store.

Normally run from code (:meth:`ppo_dr.store.Store.upgrade`, behind ``ppo-dr db upgrade``),
which hands over an open connection in ``config.attributes["connection"]`` inside a
transaction it owns. Without one, it connects to ``-x url=...`` or the default store URL.

A new revision: write ``versions/NNNN_what.py`` by hand (or run
``alembic.command.revision(ppo_dr.store.engine.alembic_config(), autogenerate=True, ...)``
with a connection in ``config.attributes``); ``test_migrations_match_schema`` says when
the migrations and ``ppo_dr/store/schema.py`` disagree.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from ppo_dr.store.engine import VERSION_TABLE, make_engine, normalise_url
from ppo_dr.store.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE is limited
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from ppo_dr.config import default_store_url

    url = context.get_x_argument(as_dictionary=True).get("url") or default_store_url()
    engine = make_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("ppo-dr migrations run online only (Store.upgrade / `ppo-dr db upgrade`)")
run_migrations_online()
