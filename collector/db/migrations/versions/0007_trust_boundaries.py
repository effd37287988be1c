"""Trust boundaries (#15): account generations for tokens and API keys; customer data keys leave the database.

Revision ID: 0007_trust_boundaries
Revises: 0006_meter_channels

* ``users.generation``: a number from one sequence, new for every account created, and renewed by
  a trigger whenever an account's role, customer, disabled flag or password changes (also when a
  deleted customer sets ``customer_id`` to null). Tokens carry it (claim ``gen``), API keys record
  their creator's (``api_keys.owner``, ``owner_generation``); a mismatch ends them. A re-created
  account gets a new number, so its predecessor's tokens never match it.
* ``customers.wrapped_key`` is no longer required: data keys live in the key store
  (``collector.pii.KeyStore``) outside PostgreSQL, where erasure can destroy them. Existing
  wrapped keys are moved there by the collector at start-up (``CustomerVault.adopt_database_keys``).
"""

from alembic import op

revision = "0007_trust_boundaries"
down_revision = "0006_meter_channels"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SEQUENCE IF NOT EXISTS account_generation_seq;
ALTER TABLE users ADD COLUMN generation bigint NOT NULL DEFAULT nextval('account_generation_seq');
CREATE OR REPLACE FUNCTION gridsight_renew_account_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.role IS DISTINCT FROM OLD.role OR NEW.customer_id IS DISTINCT FROM OLD.customer_id
       OR NEW.disabled IS DISTINCT FROM OLD.disabled OR NEW.password_hash IS DISTINCT FROM OLD.password_hash THEN
        NEW.generation := nextval('account_generation_seq');
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER users_renew_generation BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION gridsight_renew_account_generation();
ALTER TABLE api_keys ADD COLUMN owner text, ADD COLUMN owner_generation bigint,
    ADD CHECK ((owner IS NULL) = (owner_generation IS NULL));
ALTER TABLE customers DROP CONSTRAINT IF EXISTS customers_check;
"""

DOWNGRADE = """
ALTER TABLE api_keys DROP COLUMN IF EXISTS owner_generation, DROP COLUMN IF EXISTS owner;
DROP TRIGGER IF EXISTS users_renew_generation ON users;
DROP FUNCTION IF EXISTS gridsight_renew_account_generation();
ALTER TABLE users DROP COLUMN IF EXISTS generation;
DROP SEQUENCE IF EXISTS account_generation_seq;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
