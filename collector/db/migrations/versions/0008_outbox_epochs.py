"""Outbox epochs and content digests: the idempotency key becomes (gateway, epoch, seq).

Revision ID: 0008_outbox_epochs
Revises: 0007_trust_boundaries

A gateway that loses its data directory (SD-card swap, re-flash, reinstall) restarts its
sequence numbers at 1. Keyed on (gateway_id, seq) alone, everything it sent next was acked
and discarded as a "duplicate" until the new seq passed the old high-water mark. Since wire
schema version 2 every message carries its outbox's epoch (a random id born with the
outbox); version-1 messages belong to the legacy epoch, stored as ''.

- ``ingest_log`` gains ``epoch`` (part of the primary key) and ``digest`` (SHA-256 of the
  message's content, ``gridsight.wire.content_digest``): the same key with the same digest
  is a duplicate, with another digest a ``seq_conflict`` dead letter. Rows from before this
  migration have no digest and are treated as duplicates, as before.
- ``gateway_epochs`` records each epoch a gateway has used: its seq range, message count and
  when it was first and last heard from. ``gateways.epoch`` is the current one.
- ``dead_letters`` gains ``replayed_at`` / ``replay_result``
  (``gridsight collector dead-letters replay``).
"""

from alembic import op

revision = "0008_outbox_epochs"
down_revision = "0007_trust_boundaries"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE ingest_log ADD COLUMN epoch text NOT NULL DEFAULT '';
ALTER TABLE ingest_log ADD COLUMN digest bytea;
ALTER TABLE ingest_log DROP CONSTRAINT ingest_log_pkey;
ALTER TABLE ingest_log ADD PRIMARY KEY (gateway_id, epoch, seq);

CREATE TABLE gateway_epochs (
    gateway_id         text NOT NULL,
    epoch              text NOT NULL,            -- '' = the legacy epoch (schema-1 messages)
    first_seq          bigint NOT NULL,
    last_seq           bigint NOT NULL,
    messages           bigint NOT NULL DEFAULT 0,
    first_sent_at      timestamptz NOT NULL,
    first_received_at  timestamptz NOT NULL,
    last_received_at   timestamptz NOT NULL,
    PRIMARY KEY (gateway_id, epoch)
);
CREATE INDEX gateway_epochs_first_received_idx ON gateway_epochs (first_received_at);
INSERT INTO gateway_epochs
SELECT gateway_id, '', min(seq), max(seq), count(*), min(sent_at), min(received_at), max(received_at)
FROM ingest_log GROUP BY gateway_id;

ALTER TABLE gateways ADD COLUMN epoch text;
ALTER TABLE gateways ADD COLUMN epoch_started_at timestamptz;
ALTER TABLE gateways ADD COLUMN epochs integer NOT NULL DEFAULT 0;
UPDATE gateways g SET epoch = '', epoch_started_at = e.first_received_at, epochs = 1
FROM gateway_epochs e WHERE e.gateway_id = g.id;

ALTER TABLE dead_letters ADD COLUMN replayed_at timestamptz;
ALTER TABLE dead_letters ADD COLUMN replay_result text;
CREATE INDEX dead_letters_gateway_idx ON dead_letters (gateway_id, received_at);
"""

DOWNGRADE = r"""
DROP INDEX IF EXISTS dead_letters_gateway_idx;
ALTER TABLE dead_letters DROP COLUMN IF EXISTS replay_result;
ALTER TABLE dead_letters DROP COLUMN IF EXISTS replayed_at;
ALTER TABLE gateways DROP COLUMN IF EXISTS epochs;
ALTER TABLE gateways DROP COLUMN IF EXISTS epoch_started_at;
ALTER TABLE gateways DROP COLUMN IF EXISTS epoch;
DROP TABLE IF EXISTS gateway_epochs;
-- keys of other epochs would collide under (gateway_id, seq): keep the legacy epoch's
DELETE FROM ingest_log WHERE epoch <> '';
ALTER TABLE ingest_log DROP CONSTRAINT ingest_log_pkey;
ALTER TABLE ingest_log ADD PRIMARY KEY (gateway_id, seq);
ALTER TABLE ingest_log DROP COLUMN IF EXISTS digest;
ALTER TABLE ingest_log DROP COLUMN IF EXISTS epoch;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
