"""Replicas and partition leases: PostgreSQL as the only coordinator of several daemons.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from syncer.migrations.support import run_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
-- Every process that runs passes (a daemon, or one `syncer sync --once`), while it lives.
CREATE TABLE ims.replicas (
    replica_id   uuid        PRIMARY KEY,
    worker       text        NOT NULL,               -- host:pid, as in sync_runs.worker
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE ims.replicas IS
  'Live syncer processes; one whose heartbeat is older than the lease TTL is gone.';

-- At most one pass per partition, across all replicas and both modes. A lease is taken in the
-- transaction that opens the pass's run, renewed while the pass lives, checked (and renewed)
-- in every transaction the pass writes in, and released at its end. One that expired (its
-- replica died or lost the database) may be taken over; its run is then closed as failed.
CREATE TABLE ims.partition_leases (
    region      text        NOT NULL,
    image_type  text        NOT NULL,
    holder_id   uuid        NOT NULL,                -- ims.replicas.replica_id
    holder      text        NOT NULL,                -- its worker name
    token       uuid        NOT NULL,                -- one per acquisition: the fencing token
    mode        text        NOT NULL,
    run_id      bigint,                              -- the sync_runs row of the pass
    acquired_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (region, image_type)
);
CREATE INDEX partition_leases_holder_idx ON ims.partition_leases (holder_id);
COMMENT ON TABLE ims.partition_leases IS
  'Which replica runs a pass of which partition, until when (renewed while it runs).';

-- The partition's advisory lock is gone; its job is the lease's now.
"""

DOWNGRADE = """
DROP TABLE ims.partition_leases;
DROP TABLE ims.replicas;
"""


def upgrade() -> None:
    run_sql(UPGRADE)


def downgrade() -> None:
    run_sql(DOWNGRADE)
