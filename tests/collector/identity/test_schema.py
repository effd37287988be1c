"""Migration 0003_identity in the project's chain, and no personal data reachable from Tableau."""

from __future__ import annotations

from sqlalchemy import create_engine, pool, text

from collector.db import current_revision, migrate

IDENTITY_TABLES = {"users", "api_keys", "customers", "customer_meters", "enrollment_tokens", "gateway_credentials"}


def test_the_full_migration_chain_creates_the_identity_tables(database_url):
    migrate(database_url)
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        tables = {r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))}
        tableau_columns = {r[0] for r in conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'tableau'"))}
        tableau_sources = {r[0] for r in conn.execute(text(
            "SELECT DISTINCT source.relname FROM pg_depend d "
            "JOIN pg_rewrite rw ON d.objid = rw.oid JOIN pg_class v ON rw.ev_class = v.oid "
            "JOIN pg_namespace n ON v.relnamespace = n.oid JOIN pg_class source ON d.refobjid = source.oid "
            "WHERE n.nspname = 'tableau' AND source.oid <> v.oid"))}
    engine.dispose()
    assert IDENTITY_TABLES <= tables
    assert current_revision(database_url) is not None
    assert not tableau_sources & IDENTITY_TABLES, f"Tableau views read {tableau_sources & IDENTITY_TABLES}"
    personal = {"name_enc", "address_enc", "contact_enc", "wrapped_key", "password_hash", "secret_sha256",
                "address", "contact", "customer_name"}
    assert not tableau_columns & personal, f"Tableau views expose {tableau_columns & personal}"


def test_the_identity_migration_downgrades_cleanly(database_url):
    migrate(database_url)
    migrate_down = __import__("alembic.command", fromlist=["downgrade"]).downgrade
    from collector.db import alembic_config
    migrate_down(alembic_config(database_url), "0002_forecasting")
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=pool.NullPool)
    with engine.connect() as conn:
        tables = {r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))}
    engine.dispose()
    assert not tables & IDENTITY_TABLES
