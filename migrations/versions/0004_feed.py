"""The change feed over HTTP: the database's identity for cursors, retention, consumer offsets.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from syncer.migrations.support import run_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
-- One row. `epoch` names this database for the feed's cursors: a cursor minted against another
-- database (one recreated and migrated anew) carries another epoch and is refused with 410.
-- A restore keeps the epoch, so cursors also carry a digest of the event_id at their seq
-- (a restore rewinds the sequence, and reused seq numbers belong to other events).
-- Retention deletes a prefix of the feed and records its end here, in the same transaction.
CREATE TABLE ims.feed_meta (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch           uuid        NOT NULL DEFAULT gen_random_uuid(),
    pruned_through  bigint      NOT NULL DEFAULT 0,
    pruned_event_id uuid,       -- the event that was at pruned_through (a cursor there is valid)
    pruned_at       timestamptz
);
COMMENT ON TABLE ims.feed_meta IS
  'The change feed''s identity (epoch, for cursors) and retention boundary: every event with '
  'seq <= pruned_through has been removed; a cursor below it is answered 410 Gone.';
INSERT INTO ims.feed_meta DEFAULT VALUES;

-- Where each named consumer of the HTTP feed stands (PUT /v1/consumers/{name}).
CREATE TABLE ims.feed_consumers (
    name        text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    cursor      text        NOT NULL,   -- as given to the consumer (opaque)
    seq         bigint      NOT NULL,   -- the last event it has processed (0: none)
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ims.feed_consumers IS
  'Stored offsets of feed consumers: each has processed every event with seq <= this seq. '
  'Lag: SELECT count(*) FROM ims.image_events WHERE seq > feed_consumers.seq. Never moved by '
  'retention: an offset below feed_meta.pruned_through stays, and reading from it answers 410.';
"""

DOWNGRADE = """
DROP TABLE ims.feed_consumers;
DROP TABLE ims.feed_meta;
"""


def upgrade() -> None:
    run_sql(UPGRADE)


def downgrade() -> None:
    run_sql(DOWNGRADE)
