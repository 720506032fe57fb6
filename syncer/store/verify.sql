-- `syncer verify`: the event log folded over the state finds exactly ims.image_rows.
-- $n placeholders only; read in one REPEATABLE READ snapshot (syncer/store/verify.py).

-- name: verify_totals
SELECT (SELECT count(*) FROM ims.image_rows) AS images,
       (SELECT count(*) FROM ims.image_events) AS events,
       (SELECT min(seq) FROM ims.image_events) AS oldest_seq,
       coalesce((SELECT pruned_through FROM ims.feed_meta), 0) AS pruned_through;

-- name: verify_replay
-- Every disagreement between the events (from the oldest retained one) and the rows, one row
-- each: the first $1 in key order, and their total. Set-based: the events are read once in
-- (region, image_id, seq) order (the image_events_image_idx order), their `changes` expanded
-- once, and both hash-joined with the rows; no per-image round trip, whatever the size.
--
-- What the retained events determine, per image:
-- * each event against the one before it: old_status = the previous new_status; `created`
--   only first (and, when retention removed nothing, every image begins with its birth:
--   `created`, or `deleted` when first seen deleted); after `deleted` only `restored`, and
--   `restored` only after `deleted`; `status_changed` changes the status, `updated` does not
--   and names a field;
-- * each field an event names ({"field": [old, new]} over the raw object's keys): its old value
--   is the new value the previous event naming it gave — within one life of the image: a
--   tombstone's raw may be rewritten without an event (listed deleted again, differently), so
--   what came before a `deleted` says nothing about the fields after it;
-- * the row now: live ⇔ the last event is not `deleted`; status = the last new_status; for a
--   live image, each field the events of its current life name has the last value they gave
--   (a value of null also stands for a field that is absent).
-- An image whose early events retention removed starts from an unknown state: only the
-- retained events are checked, and a row without any retained event is fine then.
WITH meta AS MATERIALIZED (
    SELECT coalesce((SELECT pruned_through FROM ims.feed_meta), 0) AS pruned_through
), ev AS MATERIALIZED (
    SELECT e.seq, e.region, e.image_id, e.kind, e.old_status, e.new_status,
           jsonb_typeof(e.changes) AS changes_type,
           CASE WHEN jsonb_typeof(e.changes) = 'object' THEN e.changes ELSE '{}' END AS changes,
           lag(e.seq) OVER w AS prev_seq,
           lag(e.kind) OVER w AS prev_kind,
           lag(e.new_status) OVER w AS prev_status,
           lead(e.seq) OVER w IS NULL AS is_last,
           -- the image's life: how many `deleted` events came before this one
           count(*) FILTER (WHERE e.kind = 'deleted') OVER w
               - (e.kind = 'deleted')::int AS life
    FROM ims.image_events e
    WINDOW w AS (PARTITION BY e.region, e.image_id ORDER BY e.seq)
), field AS MATERIALIZED (
    SELECT ev.region, ev.image_id, ev.seq, ev.life, c.key, c.value,
           jsonb_typeof(c.value) = 'array' AND jsonb_array_length(c.value) = 2 AS pair,
           lag(c.value -> 1) OVER f AS prev_new,
           lag(ev.seq) OVER f AS prev_field_seq,
           lead(ev.seq) OVER f IS NULL AS last_for_key
    FROM ev CROSS JOIN LATERAL jsonb_each(ev.changes) c
    WHERE ev.changes <> '{}'
    WINDOW f AS (PARTITION BY ev.region, ev.image_id, ev.life, c.key ORDER BY ev.seq)
), last AS MATERIALIZED (
    SELECT * FROM ev WHERE is_last
), problems AS (
    -- each event, and each against the one before it (its problems joined in one line)
    SELECT ev.region, ev.image_id, ev.seq, nullif(concat_ws('; ',
        CASE WHEN ev.changes_type IS DISTINCT FROM 'object'
             THEN format('%s event: changes is a JSON %s, not an object', ev.kind, ev.changes_type)
        END,
        CASE WHEN ev.prev_seq IS NOT NULL AND ev.old_status IS DISTINCT FROM ev.prev_status
             THEN format('%s event: old status %L, but event %s left %L',
                         ev.kind, ev.old_status, ev.prev_seq, ev.prev_status)
        END,
        CASE WHEN ev.kind = 'created' AND ev.prev_seq IS NOT NULL
             THEN format('created again (after event %s)', ev.prev_seq)
             WHEN ev.kind = 'created' AND (ev.old_status IS NOT NULL OR ev.changes <> '{}')
             THEN 'created event with an old status or changes'
             WHEN ev.prev_seq IS NULL AND meta.pruned_through = 0 AND ev.kind <> 'created'
                  AND NOT (ev.kind = 'deleted' AND ev.old_status IS NULL AND ev.changes = '{}')
             THEN format('the first event is %s, not its creation (and retention removed no event)',
                         ev.kind)
        END,
        CASE WHEN ev.prev_kind = 'deleted' AND ev.kind <> 'restored'
             THEN format('%s event after deleted (a tombstone is only ever restored)', ev.kind)
             WHEN ev.kind = 'restored' AND ev.prev_seq IS NOT NULL AND ev.prev_kind <> 'deleted'
             THEN format('restored after %s (event %s), not after deleted', ev.prev_kind, ev.prev_seq)
        END,
        CASE WHEN ev.kind = 'deleted' AND ev.new_status IS DISTINCT FROM 'deleted'
             THEN format('deleted event with new status %L', ev.new_status)
             WHEN ev.kind = 'status_changed' AND ev.old_status IS NOT DISTINCT FROM ev.new_status
             THEN format('status_changed event from %L to the same', ev.old_status)
             WHEN ev.kind = 'updated' AND ev.old_status IS DISTINCT FROM ev.new_status
             THEN format('updated event that changes the status %L to %L',
                         ev.old_status, ev.new_status)
             WHEN ev.kind = 'updated' AND ev.changes = '{}'
             THEN 'updated event that names no field'
        END), '') AS problem
    FROM ev CROSS JOIN meta
  UNION ALL
    -- each field against the previous event that named it, in the same life of the image
    SELECT f.region, f.image_id, f.seq,
           CASE WHEN NOT f.pair
                THEN format('field %L: the change is %s, not [old, new]',
                            left(f.key, 60), left(f.value::text, 80))
                ELSE format('field %L: old value %s, but event %s left %s', left(f.key, 60),
                            left((f.value -> 0)::text, 80), f.prev_field_seq,
                            left(f.prev_new::text, 80))
           END
    FROM field f
    WHERE NOT f.pair OR (f.prev_field_seq IS NOT NULL AND (f.value -> 0) IS DISTINCT FROM f.prev_new)
  UNION ALL
    -- each row against the last event of its image, and events of an image without a row
    SELECT coalesce(r.region, l.region), coalesce(r.image_id, l.image_id), l.seq,
        CASE WHEN r.image_id IS NULL THEN 'events of an image without a row' ELSE
        nullif(concat_ws('; ',
        CASE WHEN l.seq IS NULL AND meta.pruned_through = 0
             THEN 'a row without any event (and retention removed no event)'
        END,
        CASE WHEN l.seq IS NOT NULL AND r.deleted_at IS NOT NULL AND l.kind <> 'deleted'
             THEN format('tombstoned (deleted_at set), but the last event is %s', l.kind)
             WHEN l.seq IS NOT NULL AND r.deleted_at IS NULL AND l.kind = 'deleted'
             THEN 'live (deleted_at null), but the last event is deleted'
        END,
        CASE WHEN l.seq IS NOT NULL AND r.status IS DISTINCT FROM l.new_status
             THEN format('status %L, but the events end in %L', r.status, l.new_status)
        END,
        CASE WHEN (r.deleted_at IS NOT NULL) <> (r.status IS NOT DISTINCT FROM 'deleted')
             THEN format('status %L with deleted_at %s', r.status,
                         coalesce(r.deleted_at::text, 'null'))
        END), '') END
    FROM ims.image_rows r FULL JOIN last l ON l.region = r.region AND l.image_id = r.image_id
    CROSS JOIN meta
  UNION ALL
    -- each field of a live row: the last value the events of its current life gave it
    SELECT f.region, f.image_id, f.seq,
           format('field %L is %s, but event %s left it %s', left(f.key, 60),
                  left(coalesce(r.raw -> f.key, 'null')::text, 80), f.seq,
                  left((f.value -> 1)::text, 80))
    FROM field f
    JOIN last l ON l.region = f.region AND l.image_id = f.image_id AND l.life = f.life
    JOIN ims.image_rows r ON r.region = f.region AND r.image_id = f.image_id
    WHERE f.last_for_key AND f.pair AND l.kind <> 'deleted' AND r.deleted_at IS NULL
      AND (f.value -> 1) IS DISTINCT FROM coalesce(r.raw -> f.key, 'null')
)
SELECT region, image_id, seq, problem, count(*) OVER () AS total
FROM problems
WHERE problem IS NOT NULL
ORDER BY region, image_id, seq NULLS FIRST, problem
LIMIT $1;
