"""Alembic environment for gridsight's PostgreSQL schema.

`collector.db.migrate(url)` passes the URL in ``config.attributes["url"]`` (never through the
ini parser, which would mangle ``%`` in passwords). Migrations are written by hand (SQL where
PostgreSQL features matter: partitioning, views); there are no ORM models to autogenerate from,
so the migrations and collector/db/SCHEMA.md are the one description of the schema.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from collector.settings import sqlalchemy_url

config = context.config
target_metadata = None


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: call collector.db.migrate(url)")
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
