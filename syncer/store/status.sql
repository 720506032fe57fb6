-- The read side of `syncer status` (loaded with queries.sql by syncer/store/queries.py).
-- $n placeholders only; no value is ever formatted into this text.

-- name: status_partitions
-- Every partition the database knows, with its sweep record and its live images.
SELECT p.region, p.image_type, p.last_full_sweep_at, p.last_delta_at, p.watermark, p.note,
       (SELECT count(*) FROM ims.image_rows r
        WHERE r.region = p.region AND r.image_type = p.image_type AND r.deleted_at IS NULL) AS live
FROM ims.partitions p
ORDER BY p.region, p.image_type;

-- name: status_runs
-- Per partition: its last finished full pass, its last finished delta pass, and a running
-- pass if any. Each is one probe of sync_runs_partition_idx (region, image_type, started_at),
-- however long the history.
SELECT p.region, p.image_type, k.slot, s.id, s.mode, s.outcome, s.started_at, s.finished_at,
       s.pages, s.images_seen, s.created, s.updated, s.deleted, s.error, s.worker, s.note
FROM ims.partitions p
CROSS JOIN (VALUES ('full'), ('delta'), ('running')) AS k(slot)
CROSS JOIN LATERAL (
    SELECT * FROM ims.sync_runs s
    WHERE s.region = p.region AND s.image_type = p.image_type
      AND CASE WHEN k.slot = 'running' THEN s.outcome = 'running'
               ELSE s.mode = k.slot AND s.outcome <> 'running' END
    ORDER BY s.started_at DESC, s.id DESC
    LIMIT 1
) s
ORDER BY p.region, p.image_type, k.slot;
