"""gridsight's PostgreSQL schema: Alembic migrations, dimension models, partition maintenance.

`migrate(url)` brings any database to the newest schema (``alembic upgrade head``); it is safe
to run on every start and from every replica (Alembic takes a lock per transaction and the
migrations are idempotent on an up-to-date database).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MIGRATIONS_DIR", "alembic_config", "migrate", "current_revision"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str):
    """An Alembic Config for ``database_url`` without any ini file on disk."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = database_url
    return cfg


def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade the database at ``database_url`` to ``revision`` (default: the newest)."""
    from alembic import command
    from sqlalchemy import create_engine, pool, text

    from collector.settings import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            # several replicas may start together: one migrates, the others wait then find nothing to do
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('gridsight_migrate'))"))
            cfg = alembic_config(database_url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    from sqlalchemy import create_engine, inspect, pool, text

    from collector.settings import sqlalchemy_url

    engine = create_engine(sqlalchemy_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
