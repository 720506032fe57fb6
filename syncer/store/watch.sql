-- What `syncer demo` shows as it happens (loaded with the other *.sql by syncer/store/queries.py).
-- $n placeholders only; no value is ever formatted into this text.

-- name: watch_head_seq
SELECT coalesce(max(seq), 0) FROM ims.image_events;

-- name: watch_events_after
-- The newest $2 events after seq $1 (newest first), and how many there are of each kind.
SELECT seq, occurred_at, region, image_id, kind, old_status, new_status,
       ARRAY(SELECT jsonb_object_keys(coalesce(changes, '{}'::jsonb)) ORDER BY 1) AS fields
FROM ims.image_events WHERE seq > $1 ORDER BY seq DESC LIMIT $2;

-- name: watch_event_kinds_after
SELECT kind, count(*) AS n, max(seq) AS last FROM ims.image_events WHERE seq > $1 GROUP BY kind;

-- name: watch_runs_finished_after
-- Passes finished after ($1, $2) = (finished_at, id), in the order they finished.
SELECT id, region, image_type, mode, outcome, started_at, finished_at, pages, images_seen,
       created, updated, deleted, error, note
FROM ims.sync_runs
WHERE outcome <> 'running' AND (finished_at, id) > ($1, $2)
ORDER BY finished_at, id
LIMIT 500;

-- name: watch_runs_latest
SELECT finished_at, id FROM ims.sync_runs
WHERE outcome <> 'running' ORDER BY finished_at DESC, id DESC LIMIT 1;
