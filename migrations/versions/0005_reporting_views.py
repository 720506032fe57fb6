"""Reporting: views (and one function) for the questions reporting tools ask (docs/sql.md).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Every object here reads only the SQL surface (ims.images, ims.current_images, ims.image_events,
ims.sync_runs) and ims.partitions. Views run with their owner's rights, so the reader role
(granted SELECT on them by `syncer migrate`) still cannot read ims.image_rows or
ims.partitions themselves.
"""

from syncer.migrations.support import run_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = """
-- Tombstones by time: recently deleted images without a scan of every row.
CREATE INDEX image_rows_deleted_at_idx ON ims.image_rows (deleted_at)
    WHERE deleted_at IS NOT NULL;

CREATE VIEW ims.live_image_counts AS
SELECT region, image_type, platform, os_type, os_version,
       count(*) AS images,
       count(*) FILTER (WHERE status = 'active') AS active_images,
       sum(image_size)::bigint AS image_size_bytes
FROM ims.current_images
GROUP BY region, image_type, platform, os_type, os_version;
COMMENT ON VIEW ims.live_image_counts IS
  'Live images per region, image type, platform and OS (os_type, os_version); NULL where IMS '
  'sent no value. Sum over the other columns for coarser counts.';
COMMENT ON COLUMN ims.live_image_counts.images IS 'Live images in this group, any status.';
COMMENT ON COLUMN ims.live_image_counts.active_images IS 'Those of them with status active.';
COMMENT ON COLUMN ims.live_image_counts.image_size_bytes IS
  'Sum of image_size (the API''s __image_size, bytes) over the group; NULL sizes count as none.';

CREATE VIEW ims.status_transitions_daily AS
SELECT (e.occurred_at AT TIME ZONE 'UTC')::date AS day,
       e.region, i.image_type, e.kind, e.old_status, e.new_status,
       count(*) AS transitions
FROM ims.image_events e
LEFT JOIN ims.images i ON i.region = e.region AND i.image_id = e.image_id
WHERE e.old_status IS DISTINCT FROM e.new_status
GROUP BY 1, 2, 3, 4, 5, 6;
COMMENT ON VIEW ims.status_transitions_daily IS
  'Status transitions observed per UTC day (events whose status changed: created, '
  'status_changed, deleted, restored), per region, image type and (old_status, new_status). '
  'Covers the events retention keeps ([feed].retention).';
COMMENT ON COLUMN ims.status_transitions_daily.day IS
  'The UTC day on which syncer observed the transition (image_events.occurred_at).';
COMMENT ON COLUMN ims.status_transitions_daily.old_status IS
  'NULL for kind created (the image was new).';
COMMENT ON COLUMN ims.status_transitions_daily.transitions IS 'Events in this group.';

CREATE VIEW ims.images_in_progress AS
SELECT i.region, i.image_id, i.image_type, i.name, i.owner, i.status, i.disk_format,
       i.created_at, i.updated_at,
       s.occurred_at AS status_seen_at,
       coalesce(least(i.updated_at, s.occurred_at), i.first_seen_at) AS in_status_since,
       now() - coalesce(least(i.updated_at, s.occurred_at), i.first_seen_at) AS in_status_for
FROM ims.current_images i
LEFT JOIN LATERAL (
    SELECT e.occurred_at FROM ims.image_events e
    WHERE e.region = i.region AND e.image_id = i.image_id AND e.new_status = i.status
      AND e.kind IN ('created', 'status_changed', 'restored')
    ORDER BY e.seq DESC LIMIT 1
) s ON true
WHERE i.status IN ('queued', 'saving');
COMMENT ON VIEW ims.images_in_progress IS
  'Live images still being created or uploaded (status queued or saving), with how long they '
  'have been in that status. Stuck ones: WHERE in_status_for > interval ''1 hour'', or '
  'ims.stuck_images(interval).';
COMMENT ON COLUMN ims.images_in_progress.status_seen_at IS
  'When syncer first observed the image in this status (NULL once retention removed that event).';
COMMENT ON COLUMN ims.images_in_progress.in_status_since IS
  'The earlier of the API''s updated_at and status_seen_at (first_seen_at when both are '
  'unknown): the image has been in this status at least since then.';
COMMENT ON COLUMN ims.images_in_progress.in_status_for IS 'now() - in_status_since.';

CREATE FUNCTION ims.stuck_images(older_than interval DEFAULT interval '1 hour')
RETURNS SETOF ims.images_in_progress
LANGUAGE sql STABLE AS $$
    SELECT * FROM ims.images_in_progress WHERE in_status_for > older_than
    ORDER BY in_status_for DESC, region, image_id
$$;
COMMENT ON FUNCTION ims.stuck_images(interval) IS
  'Images queued or saving for longer than older_than (default 1 hour), longest first: '
  'SELECT * FROM ims.stuck_images() or ims.stuck_images(''6 hours'').';
REVOKE ALL ON FUNCTION ims.stuck_images(interval) FROM PUBLIC;

CREATE VIEW ims.killed_images AS
SELECT i.region, i.image_id, i.image_type, i.name, i.owner, i.visibility, i.disk_format,
       i.image_size, i.created_at, i.updated_at,
       k.occurred_at AS killed_seen_at, k.old_status AS status_before
FROM ims.current_images i
LEFT JOIN LATERAL (
    SELECT e.occurred_at, e.old_status FROM ims.image_events e
    WHERE e.region = i.region AND e.image_id = i.image_id AND e.new_status = 'killed'
      AND e.kind IN ('created', 'status_changed', 'restored')
    ORDER BY e.seq DESC LIMIT 1
) k ON true
WHERE i.status = 'killed';
COMMENT ON VIEW ims.killed_images IS
  'Live images whose creation or upload failed (status killed). Killed within a period: '
  'ims.image_events WHERE new_status = ''killed'' (docs/sql.md).';
COMMENT ON COLUMN ims.killed_images.killed_seen_at IS
  'When syncer first observed the image killed (NULL once retention removed that event).';
COMMENT ON COLUMN ims.killed_images.status_before IS
  'The status it had before (NULL when it was first seen already killed, or the event is gone).';

CREATE VIEW ims.deleted_images AS
SELECT i.region, i.image_id, i.image_type, i.name, i.owner, i.deleted_at, i.last_seen_at,
       i.first_seen_at,
       CASE WHEN i.raw->>'status' = 'deleted' THEN 'listed_deleted' ELSE 'missed_sweeps' END
           AS deleted_because,
       coalesce(d.old_status, nullif(i.raw->>'status', 'deleted')) AS status_before,
       d.sync_run_id AS deleted_by_run_id
FROM ims.images i
LEFT JOIN LATERAL (
    SELECT e.old_status, e.sync_run_id FROM ims.image_events e
    WHERE e.region = i.region AND e.image_id = i.image_id AND e.kind = 'deleted'
    ORDER BY e.seq DESC LIMIT 1
) d ON true
WHERE i.deleted_at IS NOT NULL;
COMMENT ON VIEW ims.deleted_images IS
  'Tombstones: images syncer judged deleted, with when and why.';
COMMENT ON COLUMN ims.deleted_images.deleted_because IS
  'listed_deleted: IMS listed it with status deleted; missed_sweeps: absent from '
  '[sync].delete_after_missed_sweeps consecutive complete full sweeps.';
COMMENT ON COLUMN ims.deleted_images.status_before IS 'Its status before the deletion.';
COMMENT ON COLUMN ims.deleted_images.deleted_by_run_id IS
  'The ims.sync_runs pass that tombstoned it (NULL once retention removed the event).';

CREATE VIEW ims.recently_deleted AS
SELECT * FROM ims.deleted_images WHERE deleted_at > now() - interval '7 days';
COMMENT ON VIEW ims.recently_deleted IS
  'Images deleted within the last 7 days (other windows: ims.deleted_images).';

-- The last pass of a kind is one probe of sync_runs_partition_idx (region, image_type,
-- started_at DESC): ORDER BY started_at DESC alone, in the index's order.
CREATE VIEW ims.partition_freshness AS
SELECT p.region, p.image_type,
       (SELECT count(*) FROM ims.current_images c
        WHERE c.region = p.region AND c.image_type = p.image_type) AS live_images,
       p.last_full_sweep_at,
       now() - p.last_full_sweep_at AS full_sweep_age,
       p.complete_sweeps,
       p.last_delta_at,
       p.watermark,
       l.id AS last_run_id, l.mode AS last_run_mode, l.outcome AS last_run_outcome,
       l.started_at AS last_run_started_at, l.finished_at AS last_run_finished_at,
       l.error AS last_run_error, l.worker AS last_run_worker,
       coalesce(l.outcome = 'failed', false) AS failing,
       ok.finished_at AS last_ok_at,
       r.started_at AS running_since, r.mode AS running_mode, r.worker AS running_worker,
       p.note
FROM ims.partitions p
LEFT JOIN LATERAL (
    SELECT * FROM ims.sync_runs s
    WHERE s.region = p.region AND s.image_type = p.image_type AND s.outcome <> 'running'
    ORDER BY s.started_at DESC LIMIT 1
) l ON true
LEFT JOIN LATERAL (
    SELECT s.finished_at FROM ims.sync_runs s
    WHERE s.region = p.region AND s.image_type = p.image_type AND s.outcome = 'ok'
    ORDER BY s.started_at DESC LIMIT 1
) ok ON true
LEFT JOIN LATERAL (
    SELECT * FROM ims.sync_runs s
    WHERE s.region = p.region AND s.image_type = p.image_type AND s.outcome = 'running'
    ORDER BY s.started_at DESC LIMIT 1
) r ON true;
COMMENT ON VIEW ims.partition_freshness IS
  'Every partition (region, image type) syncer knows: live images, its last complete full '
  'sweep and its age, its last finished pass, a pass running now. Stale: WHERE full_sweep_age '
  '> your threshold (syncer status uses twice [sync].full_interval) OR last_full_sweep_at IS NULL.';
COMMENT ON COLUMN ims.partition_freshness.last_full_sweep_at IS
  'Start of the last COMPLETE full sweep (NULL: none yet): every live image was confirmed then.';
COMMENT ON COLUMN ims.partition_freshness.watermark IS
  'Where the next delta pass starts listing (minus [sync].delta_overlap).';
COMMENT ON COLUMN ims.partition_freshness.last_run_id IS
  'The last FINISHED pass (full or delta, by start), in ims.sync_runs.';
COMMENT ON COLUMN ims.partition_freshness.failing IS
  'The last finished pass failed (as syncer status judges it).';
COMMENT ON COLUMN ims.partition_freshness.last_ok_at IS 'End of the last successful pass.';
COMMENT ON COLUMN ims.partition_freshness.running_since IS
  'Start of a pass running now (NULL: none).';
COMMENT ON COLUMN ims.partition_freshness.note IS
  'Why the last complete sweep tombstoned nothing, if it did not.';

CREATE VIEW ims.failing_partitions AS
SELECT p.region, p.image_type,
       streak.failures AS consecutive_failures,
       streak.first_failed_at AS failing_since,
       l.finished_at AS last_failed_at, l.mode AS last_failed_mode, l.error AS last_error,
       l.worker AS last_worker, l.id AS last_run_id,
       ok.finished_at AS last_ok_at
FROM ims.partitions p
JOIN LATERAL (
    SELECT * FROM ims.sync_runs s
    WHERE s.region = p.region AND s.image_type = p.image_type AND s.outcome <> 'running'
    ORDER BY s.started_at DESC LIMIT 1
) l ON l.outcome = 'failed'
LEFT JOIN LATERAL (
    SELECT s.started_at, s.finished_at FROM ims.sync_runs s
    WHERE s.region = p.region AND s.image_type = p.image_type AND s.outcome = 'ok'
    ORDER BY s.started_at DESC LIMIT 1
) ok ON true
CROSS JOIN LATERAL (
    SELECT count(*) AS failures, min(s.started_at) AS first_failed_at FROM ims.sync_runs s
    WHERE s.region = p.region AND s.image_type = p.image_type AND s.outcome = 'failed'
      AND s.started_at > coalesce(ok.started_at, '-infinity')
) streak;
COMMENT ON VIEW ims.failing_partitions IS
  'Partitions whose last finished pass failed, with the failures since the last successful '
  'pass and the last error (a rejected credential, an unreachable API, a paging anomaly, ...).';
COMMENT ON COLUMN ims.failing_partitions.consecutive_failures IS
  'Failed passes (any mode) started after the last successful one.';
COMMENT ON COLUMN ims.failing_partitions.failing_since IS 'Start of the first of them.';
COMMENT ON COLUMN ims.failing_partitions.last_ok_at IS
  'End of the last successful pass (NULL: never succeeded).';
"""

DOWNGRADE = """
DROP VIEW ims.failing_partitions;
DROP VIEW ims.partition_freshness;
DROP VIEW ims.recently_deleted;
DROP VIEW ims.deleted_images;
DROP VIEW ims.killed_images;
DROP FUNCTION ims.stuck_images(interval);
DROP VIEW ims.images_in_progress;
DROP VIEW ims.status_transitions_daily;
DROP VIEW ims.live_image_counts;
DROP INDEX ims.image_rows_deleted_at_idx;
"""


def upgrade() -> None:
    run_sql(UPGRADE)


def downgrade() -> None:
    run_sql(DOWNGRADE)
