"""The ims schema: images, events (commit-ordered seq), sync runs, partition state.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from syncer.migrations.support import run_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# pg_advisory_xact_lock key that serializes event writers (see docs/changefeed.md).
FEED_LOCK_KEY = 7_140_201_001

UPGRADE = f"""
CREATE SCHEMA IF NOT EXISTS ims;

-- One row per (region, image_id), tombstones kept. Written only when the content hash changes
-- (or the row's liveness does); an unchanged image costs no write.
CREATE TABLE ims.image_rows (
    region                text        NOT NULL,
    image_id              text        NOT NULL,
    image_type            text        NOT NULL,
    name                  text,
    status                text,
    visibility            text,
    owner                 text,
    os_type               text,
    platform              text,
    os_version            text,
    os_bit                text,
    disk_format           text,
    container_format      text,
    min_ram               integer,
    min_disk              integer,
    size                  bigint,
    image_size            bigint,
    virtual_env_type      text,
    protected             boolean,
    tags                  text[],
    enterprise_project_id text,
    created_at            timestamptz,
    updated_at            timestamptz,
    active_at             timestamptz,
    raw                   jsonb       NOT NULL,
    content_hash          bytea       NOT NULL,
    version               bigint      NOT NULL DEFAULT 1,
    first_seen_at         timestamptz NOT NULL DEFAULT now(),
    observed_at           timestamptz NOT NULL DEFAULT now(),
    missed_sweeps         integer     NOT NULL DEFAULT 0,
    deleted_at            timestamptz,
    PRIMARY KEY (region, image_id)
);
COMMENT ON TABLE ims.image_rows IS
  'Storage behind the ims.images view. observed_at: the last observation that wrote the row, '
  'or the last confirmation before the image went missing.';
CREATE INDEX image_rows_partition_idx ON ims.image_rows (region, image_type) INCLUDE (status);
CREATE INDEX image_rows_status_idx ON ims.image_rows (status);
CREATE INDEX image_rows_created_at_idx ON ims.image_rows (created_at);
CREATE INDEX image_rows_updated_at_idx ON ims.image_rows (updated_at);
-- Live rows of a partition in listing order: a full sweep compares each page with this range.
CREATE INDEX image_rows_live_idx ON ims.image_rows (region, image_type, created_at)
  WHERE deleted_at IS NULL;

-- Per (region, image type): what the sync needs to resume and to judge deletions.
CREATE TABLE ims.partitions (
    region              text        NOT NULL,
    image_type          text        NOT NULL,
    watermark           timestamptz,            -- newest updated_at committed (delta mode)
    last_full_sweep_at  timestamptz,            -- start of the last COMPLETE full sweep
    last_full_run_id    bigint,
    complete_sweeps     bigint      NOT NULL DEFAULT 0,
    last_delta_at       timestamptz,            -- start of the last complete delta pass
    note                text,                   -- e.g. why the last sweep tombstoned nothing
    PRIMARY KEY (region, image_type)
);

CREATE TABLE ims.sync_runs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    region      text        NOT NULL,
    image_type  text        NOT NULL,
    mode        text        NOT NULL CHECK (mode IN ('full', 'delta')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome     text        NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'ok', 'failed')),
    pages       integer     NOT NULL DEFAULT 0,
    images_seen integer     NOT NULL DEFAULT 0,
    created     integer     NOT NULL DEFAULT 0,
    updated     integer     NOT NULL DEFAULT 0,
    deleted     integer     NOT NULL DEFAULT 0,
    error       text,
    worker      text        NOT NULL,
    note        text
);
-- At most one pass running per partition, across replicas and modes.
CREATE UNIQUE INDEX sync_runs_one_running_idx ON ims.sync_runs (region, image_type)
    WHERE outcome = 'running';
CREATE INDEX sync_runs_partition_idx ON ims.sync_runs (region, image_type, started_at DESC);

-- The change feed. seq increases in COMMIT order: a BEFORE INSERT statement trigger takes one
-- transaction-level advisory lock, held to COMMIT, before any row of the statement draws its
-- seq (identity values are drawn as rows are formed, after statement triggers fire). The next
-- writer therefore gets its numbers only once this one's are visible. Writers insert their
-- events as ONE statement, the last before COMMIT, to keep the locked tail short.
CREATE TABLE ims.image_events (
    seq         bigint      GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ims.image_events_seq CACHE 1) PRIMARY KEY,
    event_id    uuid        NOT NULL DEFAULT gen_random_uuid(),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    region      text        NOT NULL,
    image_id    text        NOT NULL,
    kind        text        NOT NULL
        CHECK (kind IN ('created', 'status_changed', 'updated', 'deleted', 'restored')),
    old_status  text,
    new_status  text,
    changes     jsonb       NOT NULL DEFAULT '{{}}'::jsonb,
    sync_run_id bigint
);
CREATE INDEX image_events_image_idx ON ims.image_events (region, image_id, seq);
CREATE INDEX image_events_occurred_at_idx ON ims.image_events (occurred_at);

CREATE FUNCTION ims.serialize_event_writers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({FEED_LOCK_KEY});
    RETURN NULL;
END
$$;
CREATE TRIGGER image_events_serialize BEFORE INSERT ON ims.image_events
    FOR EACH STATEMENT EXECUTE FUNCTION ims.serialize_event_writers();

-- A doorbell for feed readers: they re-query the table on it (and on a timer).
CREATE FUNCTION ims.notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ims_image_events', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER image_events_notify AFTER INSERT ON ims.image_events
    FOR EACH STATEMENT EXECUTE FUNCTION ims.notify_events();

CREATE FUNCTION ims.forbid_event_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ims.image_events is append-only';
END
$$;
CREATE TRIGGER image_events_append_only BEFORE UPDATE ON ims.image_events
    FOR EACH ROW EXECUTE FUNCTION ims.forbid_event_update();

-- The SQL surface (CONTRACT §3).
CREATE VIEW ims.images AS
SELECT r.region, r.image_id, r.image_type, r.name, r.status, r.visibility, r.owner, r.os_type,
       r.platform, r.os_version, r.os_bit, r.disk_format, r.container_format, r.min_ram,
       r.min_disk, r.size, r.image_size, r.virtual_env_type, r.protected, r.tags,
       r.enterprise_project_id, r.created_at, r.updated_at, r.active_at, r.raw,
       r.first_seen_at,
       CASE WHEN r.deleted_at IS NULL AND r.missed_sweeps = 0
            THEN GREATEST(r.observed_at, p.last_full_sweep_at)
            ELSE r.observed_at END AS last_seen_at,
       r.deleted_at,
       r.version
FROM ims.image_rows r
LEFT JOIN ims.partitions p ON p.region = r.region AND p.image_type = r.image_type;
COMMENT ON VIEW ims.images IS 'One row per (region, image_id), tombstones kept (deleted_at set).';

CREATE VIEW ims.current_images AS
SELECT * FROM ims.images WHERE deleted_at IS NULL;
COMMENT ON VIEW ims.current_images IS 'The live images.';
"""

DOWNGRADE = """
DROP SCHEMA ims CASCADE;
"""


def upgrade() -> None:
    run_sql(UPGRADE)


def downgrade() -> None:
    run_sql(DOWNGRADE)
