"""Identity and access: accounts, API keys, customers with encrypted personal fields,
customer-meter links, one-time enrollment tokens and enrolled gateway credentials.

Personal fields are stored only as AES-GCM ciphertext under a per-customer data key, and
that key only wrapped by the master key (see collector/pii.py); erasing a customer nulls
the wrapped key, which makes any copy of the ciphertext (backups included) unreadable.
``customer_meters.meter_id`` is the meter serial as on the wire, deliberately without a
foreign key: a meter may be bound to a customer before its gateway first reports it.

Revision ID: 0003_identity
Revises: 0002_forecasting
"""

from alembic import op

revision = "0003_identity"
down_revision = "0002_forecasting"
branch_labels = None
depends_on = None

_ROLES = "('admin', 'technician', 'analyst', 'policymaker', 'consumer')"


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE customers (
            customer_id   text PRIMARY KEY,
            wrapped_key   bytea,
            name_enc      bytea,
            address_enc   bytea,
            contact_enc   bytea,
            created_at    timestamptz NOT NULL DEFAULT now(),
            erased_at     timestamptz,
            CHECK ((erased_at IS NULL) = (wrapped_key IS NOT NULL))
        );
        CREATE TABLE customer_meters (
            meter_id      text PRIMARY KEY,
            customer_id   text NOT NULL REFERENCES customers(customer_id) ON DELETE CASCADE,
            linked_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX customer_meters_customer ON customer_meters (customer_id);
        CREATE TABLE users (
            username      text PRIMARY KEY,
            password_hash text NOT NULL,
            role          text NOT NULL CHECK (role IN {_ROLES}),
            customer_id   text REFERENCES customers(customer_id) ON DELETE SET NULL,
            disabled      boolean NOT NULL DEFAULT false,
            failed_logins integer NOT NULL DEFAULT 0,
            locked_until  timestamptz,
            created_at    timestamptz NOT NULL DEFAULT now(),
            CHECK (role <> 'consumer' OR customer_id IS NOT NULL OR disabled)
        );
        CREATE TABLE api_keys (
            key_id        text PRIMARY KEY,
            name          text NOT NULL,
            role          text NOT NULL CHECK (role IN {_ROLES} AND role <> 'consumer'),
            secret_sha256 text NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            revoked_at    timestamptz
        );
        CREATE TABLE enrollment_tokens (
            token_id      text PRIMARY KEY,
            token_sha256  text NOT NULL UNIQUE,
            gateway_id    text NOT NULL,
            created_by    text NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            expires_at    timestamptz NOT NULL,
            used_at       timestamptz
        );
        CREATE TABLE gateway_credentials (
            gateway_id    text PRIMARY KEY,
            credential    text NOT NULL CHECK (credential IN ('certificate', 'password')),
            fingerprint   text,
            enrolled_at   timestamptz NOT NULL DEFAULT now(),
            token_id      text REFERENCES enrollment_tokens(token_id) ON DELETE SET NULL
        );
    """)


def downgrade() -> None:
    op.execute("""
        DROP TABLE IF EXISTS gateway_credentials;
        DROP TABLE IF EXISTS enrollment_tokens;
        DROP TABLE IF EXISTS api_keys;
        DROP TABLE IF EXISTS users;
        DROP TABLE IF EXISTS customer_meters;
        DROP TABLE IF EXISTS customers;
    """)
