-- The change feed's queries, as named blocks loaded once by syncer/store/queries.py.
-- $n placeholders only; no value is ever formatted into this text.
--
-- seq is commit-ordered (see migrations/versions/0001): at any snapshot the visible events are
-- a prefix of seq (gaps only where a transaction rolled back), so `seq > cursor` is exact.
-- An event's image_type is not stored with it: it is the type its image has in ims.image_rows
-- when the event is read: a primary-key probe per event (LATERAL … LIMIT 1 keeps it a probe
-- whatever the statistics say; a hash join would read the whole catalog for one page).

-- name: feed_head
-- The feed's identity, its retention boundary and its newest event, in one snapshot.
SELECT m.epoch, m.pruned_through, m.pruned_event_id, h.seq AS head_seq, h.event_id AS head_event_id
FROM ims.feed_meta m
LEFT JOIN LATERAL (
    SELECT e.seq, e.event_id FROM ims.image_events e ORDER BY e.seq DESC LIMIT 1
) h ON true;

-- name: position_check
-- What a cursor at seq $1 is checked against: the epoch, the retention boundary, and which
-- event (if any) holds that seq now.
SELECT m.epoch, m.pruned_through, m.pruned_event_id,
       (SELECT e.event_id FROM ims.image_events e WHERE e.seq = $1) AS event_id
FROM ims.feed_meta m;

-- name: events_after
-- The next $2 events after seq $1, in seq order, with their image's type.
SELECT e.seq, e.event_id, e.occurred_at, e.region, e.image_id, e.kind, e.old_status,
       e.new_status, e.changes, e.sync_run_id, r.image_type
FROM (
    SELECT * FROM ims.image_events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2
) e
LEFT JOIN LATERAL (
    SELECT r.image_type FROM ims.image_rows r
    WHERE r.region = e.region AND r.image_id = e.image_id LIMIT 1
) r ON true
ORDER BY e.seq;

-- name: tail_after
-- The hub's read: the next $2 events after its head $1, and, from the same snapshot, what the
-- hub checks its in-memory tail against: the epoch, the retention boundary and the event now
-- at $1. A database restored from a backup, or failed over to a replica that lost commits, has
-- rewound: another event, or none, holds that seq, and the tail must go. At least one row
-- (its event columns NULL when there is no new event).
SELECT m.epoch, m.pruned_through, m.pruned_event_id,
       (SELECT h.event_id FROM ims.image_events h WHERE h.seq = $1) AS at_head,
       e.seq, e.event_id, e.occurred_at, e.region, e.image_id, e.kind, e.old_status,
       e.new_status, e.changes, e.sync_run_id, r.image_type
FROM ims.feed_meta m
LEFT JOIN LATERAL (
    SELECT * FROM ims.image_events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2
) e ON true
LEFT JOIN LATERAL (
    SELECT r.image_type FROM ims.image_rows r
    WHERE r.region = e.region AND r.image_id = e.image_id LIMIT 1
) r ON true
ORDER BY e.seq;

-- name: events_window_end
-- A filtered read looks at no more than the next $2 events after $1: this is the last of them
-- (the cursor a filtered reader moves to when none of them matched).
SELECT w.seq, w.event_id FROM (
    SELECT e.seq, e.event_id FROM ims.image_events e WHERE e.seq > $1 ORDER BY e.seq LIMIT $2
) w ORDER BY w.seq DESC LIMIT 1;

-- name: events_matching
-- Events in ($1, $2] that pass the filters (NULL: no filter on that field), at most $7.
SELECT e.seq, e.event_id, e.occurred_at, e.region, e.image_id, e.kind, e.old_status,
       e.new_status, e.changes, e.sync_run_id, r.image_type
FROM ims.image_events e
LEFT JOIN LATERAL (
    SELECT r.image_type FROM ims.image_rows r
    WHERE r.region = e.region AND r.image_id = e.image_id LIMIT 1
) r ON true
WHERE e.seq > $1 AND e.seq <= $2
  AND ($3::text[] IS NULL OR e.region = ANY($3::text[]))
  AND ($4::text[] IS NULL OR r.image_type = ANY($4::text[]))
  AND ($5::text[] IS NULL OR e.kind = ANY($5::text[]))
  AND ($6::text IS NULL OR e.image_id = $6::text)
ORDER BY e.seq
LIMIT $7;

-- name: prune_events
-- One small batch of retention, in one statement (one snapshot): of the next $2 events after
-- the boundary, the longest run (in seq order) older than $1 seconds (by the database's clock,
-- which stamped occurred_at) is deleted and the
-- boundary moves to its end. occurred_at is not monotonic in seq (a transaction that started
-- earlier may commit later), so the run stops at the first event that is still young.
-- Deleting old rows takes no lock that writers (appending at the other end) or readers wait on.
-- Two replicas pruning at once delete nothing twice and never move the boundary backwards.
WITH batch AS (
    SELECT e.seq, e.event_id, e.occurred_at FROM ims.image_events e
    WHERE e.seq > (SELECT pruned_through FROM ims.feed_meta)
    ORDER BY e.seq LIMIT $2
), young AS (
    SELECT coalesce(min(b.seq), 9223372036854775807) AS seq FROM batch b
    WHERE b.occurred_at >= now() - make_interval(secs => $1::float8)
), doomed AS (
    SELECT b.seq, b.event_id FROM batch b WHERE b.seq < (SELECT seq FROM young)
), removed AS (
    DELETE FROM ims.image_events e USING doomed d WHERE e.seq = d.seq RETURNING e.seq
), boundary AS (
    SELECT d.seq, d.event_id FROM doomed d ORDER BY d.seq DESC LIMIT 1
), moved AS (
    UPDATE ims.feed_meta m
    SET pruned_through = b.seq, pruned_event_id = b.event_id, pruned_at = now()
    FROM boundary b WHERE m.pruned_through < b.seq
    RETURNING m.pruned_through
)
SELECT (SELECT count(*) FROM removed) AS removed,
       (SELECT count(*) FROM doomed) AS doomed,
       (SELECT pruned_through FROM moved) AS pruned_through;

-- name: consumer_put
INSERT INTO ims.feed_consumers (name, cursor, seq) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET cursor = excluded.cursor, seq = excluded.seq, updated_at = now();

-- name: consumer_delete
DELETE FROM ims.feed_consumers WHERE name = $1 RETURNING name;

-- name: consumers
-- Stored offsets ($1: one name, or NULL for all) with their lag: the events after the offset
-- (counted exactly up to $2, beyond that estimated from the newest seq) and when the oldest of
-- them occurred.
SELECT c.name, c.cursor, c.seq, c.created_at, c.updated_at, m.pruned_through,
       CASE WHEN n.events < $2 THEN n.events
            ELSE greatest(n.events, coalesce(h.seq, 0) - c.seq) END AS lag_events,
       (SELECT e.occurred_at FROM ims.image_events e WHERE e.seq > c.seq
        ORDER BY e.seq LIMIT 1) AS oldest_unread_at,
       now() AS now
FROM ims.feed_consumers c
CROSS JOIN ims.feed_meta m
LEFT JOIN LATERAL (
    SELECT e.seq FROM ims.image_events e ORDER BY e.seq DESC LIMIT 1
) h ON true
CROSS JOIN LATERAL (
    SELECT count(*) AS events FROM (
        SELECT 1 FROM ims.image_events e WHERE e.seq > c.seq LIMIT $2
    ) x
) n
WHERE $1::text IS NULL OR c.name = $1::text
ORDER BY c.name;

-- name: images_page
-- The live images after key ($1, $2) in key order, filtered (NULL: no filter), at most $6.
-- ($7: particular image ids, e.g. to fetch the objects of images a consumer saw created.)
SELECT i.region, i.image_id, i.image_type, i.name, i.status, i.visibility, i.owner, i.os_type,
       i.platform, i.os_version, i.os_bit, i.disk_format, i.container_format, i.min_ram,
       i.min_disk, i.size, i.image_size, i.virtual_env_type, i.protected, i.tags,
       i.enterprise_project_id, i.created_at, i.updated_at, i.active_at, i.raw,
       i.first_seen_at, i.last_seen_at, i.deleted_at, i.version
FROM ims.current_images i
WHERE (i.region, i.image_id) > ($1::text, $2::text)
  AND ($3::text[] IS NULL OR i.region = ANY($3::text[]))
  AND ($4::text[] IS NULL OR i.image_type = ANY($4::text[]))
  AND ($5::text[] IS NULL OR i.status = ANY($5::text[]))
  AND ($7::text[] IS NULL OR i.image_id = ANY($7::text[]))
ORDER BY i.region, i.image_id
LIMIT $6;
