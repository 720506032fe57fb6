-- Every runtime query of syncer, as named blocks loaded once by syncer/store/queries.py.
-- $n placeholders only; no value is ever formatted into this text.

-- name: create_work_tables
-- Session-private scratch space of one partition pass (temp tables: no WAL, gone with the session).
CREATE TEMP TABLE IF NOT EXISTS sync_stage (
    image_id text, name text, status text, visibility text, owner text, os_type text,
    platform text, os_version text, os_bit text, disk_format text, container_format text,
    min_ram integer, min_disk integer, size bigint, image_size bigint, virtual_env_type text,
    protected boolean, tags text[], enterprise_project_id text, created_at timestamptz,
    updated_at timestamptz, active_at timestamptz, raw jsonb, content_hash bytea
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS sync_page_events (
    image_id text, kind text, old_status text, new_status text, changes jsonb
) ON COMMIT DELETE ROWS;
-- The ids a full sweep saw. No key: a unique index cost every page ~4 us per image to
-- maintain (half of an unchanged page's database time); sweep_counts counts distinct ids
-- instead, once per sweep, so a duplicate still cannot stand in for an absence.
CREATE TEMP TABLE IF NOT EXISTS sync_seen (image_id text);
-- Emptied only when it holds something: a TRUNCATE gives the table and its index new files,
-- ~10 ms, which was half of what a delta pass cost (pg_stat_statements).
DO $$ BEGIN IF EXISTS (SELECT FROM sync_seen) THEN TRUNCATE sync_seen; END IF; END $$;
-- Every join of a pass is over a page or a partition whose statistics are stale mid-sync:
-- hashed, never a nested loop that could turn quadratic (LATERAL probes stay what they are).
SET enable_nestloop = off;
-- ... and no JIT: a LATERAL probe is a nested loop all the same, now costed above 10^10, which
-- made every probe statement (a delta's prefilter, every upsert) "expensive" enough to be
-- JIT-compiled: 1-5 s of compiling per statement for a millisecond of work.
SET jit = off;

-- name: ensure_partition
INSERT INTO ims.partitions (region, image_type) VALUES ($1, $2) ON CONFLICT DO NOTHING;

-- name: partition_state
SELECT watermark, last_full_sweep_at, complete_sweeps FROM ims.partitions
WHERE region = $1 AND image_type = $2;

-- name: close_orphaned_runs
-- In the transaction that took the partition's lease: a 'running' row left is one whose
-- replica stopped holding the partition (its lease expired, or it ran before leases).
UPDATE ims.sync_runs
SET outcome = 'failed', finished_at = clock_timestamp(),
    error = coalesce(error,
                     'replica gone: ' || worker || ' stopped before finishing (its lease expired)')
WHERE region = $1 AND image_type = $2 AND outcome = 'running'
RETURNING id;

-- name: start_run
-- clock_timestamp(), not now(): a run starts after the previous holder's run finished.
INSERT INTO ims.sync_runs (region, image_type, mode, worker, started_at)
VALUES ($1, $2, $3, $4, clock_timestamp())
RETURNING id, started_at;

-- name: finish_run
-- Only a run still open: one closed meanwhile (its lease taken over) keeps that verdict.
UPDATE ims.sync_runs
SET finished_at = clock_timestamp(), outcome = $2, pages = $3, images_seen = $4, created = $5,
    updated = $6, deleted = $7, error = $8, note = $9, unfit = $10
WHERE id = $1 AND outcome = 'running';

-- name: page_prefilter
-- One round trip per page, in autocommit: remember what a full sweep saw and return the
-- positions (1-based) of the images that need a write, and whether a row exists for each.
-- An unchanged image costs nothing more. The page's ids come as one JSON array ($3) and their
-- 16-byte content hashes as one bytea, end to end ($4): a Python list bound as an array costs
-- the driver two isinstance checks against abstract classes per element.
-- This form (delta passes) probes the primary key per image: a delta page's images are spread
-- over the whole partition. LATERAL … LIMIT 1 keeps it a probe whatever the statistics say,
-- and (SELECT $1) keeps it a probe by (region, image_id): see page_prefilter_range.
WITH page AS (
    SELECT p.image_id, substring($4::bytea FROM p.ord::int * 16 - 15 FOR 16) AS content_hash, p.ord
    FROM json_array_elements_text($3::json) WITH ORDINALITY AS p(image_id, ord)
), seen AS (
    INSERT INTO sync_seen (image_id) SELECT image_id FROM page WHERE $5::boolean
), wanted AS (
    SELECT p.ord, r.image_id IS NOT NULL AS known FROM page p
    LEFT JOIN LATERAL (
        SELECT r.image_id, r.content_hash, r.deleted_at, r.missed_sweeps, r.image_type
        FROM ims.image_rows r WHERE r.region = (SELECT $1::text) AND r.image_id = p.image_id
        LIMIT 1
    ) r ON true
    WHERE r.image_id IS NULL
       OR r.content_hash <> p.content_hash
       OR r.deleted_at IS NOT NULL
       OR r.missed_sweeps > 0
       OR r.image_type <> $2
)
SELECT ord, known FROM wanted;

-- name: page_prefilter_range
-- The same for a full sweep, whose pages follow created_at: the partition's live rows created
-- within the page's first and last created_at ($6, $7) are about the page's own images, so one
-- index range scan and a hash join replace a probe per image. (The pass runs with
-- enable_nestloop off, so the join is hashed whatever the statistics say.) An image not in
-- that range unchanged (new, tombstoned, missed, in another partition, its created_at
-- changed) is wanted, and `known` is then probed for it alone.
WITH page AS (
    SELECT p.image_id, substring($4::bytea FROM p.ord::int * 16 - 15 FOR 16) AS content_hash, p.ord
    FROM json_array_elements_text($3::json) WITH ORDINALITY AS p(image_id, ord)
), seen AS (
    INSERT INTO sync_seen (image_id) SELECT image_id FROM page WHERE $5::boolean
), stored AS MATERIALIZED (
    SELECT r.image_id, r.content_hash FROM ims.image_rows r
    WHERE r.region = $1 AND r.image_type = $2 AND r.deleted_at IS NULL
      AND r.created_at BETWEEN $6::timestamptz AND $7::timestamptz AND r.missed_sweeps = 0
), wanted AS (
    SELECT p.ord, p.image_id FROM page p LEFT JOIN stored s
        ON s.image_id = p.image_id AND s.content_hash = p.content_hash
    WHERE s.image_id IS NULL
)
-- `known` is a primary-key probe per wanted image, written as LATERAL … LIMIT 1 so that it
-- stays one: as EXISTS, a generic plan built on stale mid-sync statistics hashed it instead —
-- every page of a first sync read the region's whole table (auto_explain at 500,000 rows:
-- 198,500 heap rows, 610 ms per page), a first sync quadratic in the region's size.
-- The region is compared to (SELECT $1), a value the planner cannot see: statistics taken
-- before the region had rows (autoanalyze lags a first sync) price `region = '<it>'` at one
-- row, and the planner then entered an index by region alone — the smaller partition index —
-- with image_id a mere filter: every probe read the region's whole index (auto_explain at
-- 1,000,000 images: 4-6 s per page). tests/integration/test_probe_plans.py sets that trap.
SELECT w.ord, k.image_id IS NOT NULL AS known FROM wanted w
LEFT JOIN LATERAL (
    SELECT r.image_id FROM ims.image_rows r
    WHERE r.region = (SELECT $1::text) AND r.image_id = w.image_id
    LIMIT 1
) k ON true;

-- name: page_upsert
-- Writes ONLY rows whose content changed (or whose liveness did), and stages exactly one event
-- per written row that changed in a way a consumer cares about.
WITH old AS (
    SELECT r.* FROM sync_stage s CROSS JOIN LATERAL (
        SELECT r.image_id, r.status, r.raw, r.content_hash, r.deleted_at
        FROM ims.image_rows r WHERE r.region = (SELECT $1::text) AND r.image_id = s.image_id
        LIMIT 1  -- (SELECT $1): a probe by (region, image_id) under stale statistics, see above
    ) r
), up AS (
    INSERT INTO ims.image_rows AS r (
        region, image_id, image_type, name, status, visibility, owner, os_type, platform,
        os_version, os_bit, disk_format, container_format, min_ram, min_disk, size, image_size,
        virtual_env_type, protected, tags, enterprise_project_id, created_at, updated_at,
        active_at, raw, content_hash, deleted_at)
    SELECT $1, s.image_id, $2, s.name, s.status, s.visibility, s.owner, s.os_type, s.platform,
        s.os_version, s.os_bit, s.disk_format, s.container_format, s.min_ram, s.min_disk, s.size,
        s.image_size, s.virtual_env_type, s.protected, s.tags, s.enterprise_project_id,
        s.created_at, s.updated_at, s.active_at, s.raw, s.content_hash,
        CASE WHEN s.status = 'deleted' THEN now() END
    FROM sync_stage s
    ON CONFLICT (region, image_id) DO UPDATE SET
        image_type = excluded.image_type, name = excluded.name, status = excluded.status,
        visibility = excluded.visibility, owner = excluded.owner, os_type = excluded.os_type,
        platform = excluded.platform, os_version = excluded.os_version, os_bit = excluded.os_bit,
        disk_format = excluded.disk_format, container_format = excluded.container_format,
        min_ram = excluded.min_ram, min_disk = excluded.min_disk, size = excluded.size,
        image_size = excluded.image_size, virtual_env_type = excluded.virtual_env_type,
        protected = excluded.protected, tags = excluded.tags,
        enterprise_project_id = excluded.enterprise_project_id,
        created_at = excluded.created_at, updated_at = excluded.updated_at,
        active_at = excluded.active_at, raw = excluded.raw, content_hash = excluded.content_hash,
        deleted_at = CASE WHEN excluded.status = 'deleted' THEN coalesce(r.deleted_at, now()) END,
        observed_at = now(), missed_sweeps = 0, version = r.version + 1
    WHERE r.content_hash <> excluded.content_hash
       OR (r.deleted_at IS NOT NULL AND excluded.status IS DISTINCT FROM 'deleted')
       OR r.missed_sweeps > 0
       OR r.image_type <> excluded.image_type
    RETURNING r.image_id, r.status, r.raw, r.content_hash, r.deleted_at
), classified AS (
    SELECT up.image_id, old.status AS old_status, up.status AS new_status,
        CASE
            WHEN old.image_id IS NULL
                THEN CASE WHEN up.deleted_at IS NULL THEN 'created' ELSE 'deleted' END
            WHEN old.deleted_at IS NOT NULL AND up.deleted_at IS NULL THEN 'restored'
            WHEN old.deleted_at IS NULL AND up.deleted_at IS NOT NULL THEN 'deleted'
            WHEN old.deleted_at IS NOT NULL THEN NULL   -- a tombstone listed differently: no event
            WHEN old.status IS DISTINCT FROM up.status THEN 'status_changed'
            -- the hash is of the bytes as sent: only a different object is an update
            WHEN old.raw IS DISTINCT FROM up.raw THEN 'updated'
        END AS kind,
        CASE WHEN old.image_id IS NULL THEN '{}'::jsonb ELSE (
            SELECT coalesce(jsonb_object_agg(key, jsonb_build_array(o.value, n.value)), '{}'::jsonb)
            FROM jsonb_each(old.raw) o FULL JOIN jsonb_each(up.raw) n USING (key)
            WHERE o.value IS DISTINCT FROM n.value) END AS changes
    FROM up LEFT JOIN old ON old.image_id = up.image_id
)
INSERT INTO sync_page_events (image_id, kind, old_status, new_status, changes)
SELECT image_id, kind, old_status, new_status, changes FROM classified WHERE kind IS NOT NULL
RETURNING kind;

-- name: append_events
-- The LAST statement before COMMIT: the feed's advisory lock is held only from here to COMMIT.
INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status, changes, sync_run_id)
SELECT $1, image_id, kind, old_status, new_status, changes, $2
FROM sync_page_events ORDER BY image_id;

-- name: append_page_events
-- append_events for a page: also one 'created' event per image COPied straight into
-- ims.image_rows (the fast path of a first sync), whose ids and statuses come as two JSON arrays
-- ($3, $4): no staging of those events, no round trip of their own.
INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status, changes, sync_run_id)
SELECT $1, image_id, kind, old_status, new_status, changes, $2 FROM (
    SELECT image_id, kind, old_status, new_status, changes FROM sync_page_events
    UNION ALL
    SELECT n.image_id, 'created', NULL, n.status, '{}'::jsonb
    FROM ROWS FROM (json_array_elements_text($3::json), json_array_elements_text($4::json))
        AS n(image_id, status)
) e ORDER BY image_id;

-- name: sweep_counts
SELECT (SELECT count(DISTINCT image_id) FROM sync_seen) AS seen,
       (SELECT count(*) FROM ims.image_rows
        WHERE region = $1 AND image_type = $2 AND deleted_at IS NULL) AS live;

-- name: prepare_mark_missed
-- The anti-join below spans the whole partition once per sweep: it must be a hash anti-join.
-- Mid-sync statistics of image_rows are stale (it may have grown from nothing), and a nested
-- loop over sync_seen per row is quadratic.
ANALYZE sync_seen;
SET LOCAL enable_nestloop = off;

-- name: mark_missed
-- After a COMPLETE full sweep: every live image of the partition it did not see has been missed
-- once more; those missed by enough consecutive complete sweeps become tombstones.
WITH missing AS (
    SELECT r.image_id, r.status AS old_status FROM ims.image_rows r
    WHERE r.region = $1 AND r.image_type = $2 AND r.deleted_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM sync_seen s WHERE s.image_id = r.image_id)
), marked AS (
    UPDATE ims.image_rows r SET
        missed_sweeps = r.missed_sweeps + 1,
        observed_at = CASE WHEN r.missed_sweeps = 0 AND $3::timestamptz IS NOT NULL
                           THEN greatest(r.observed_at, $3::timestamptz) ELSE r.observed_at END,
        deleted_at = CASE WHEN r.missed_sweeps + 1 >= $4 THEN now() END,
        status = CASE WHEN r.missed_sweeps + 1 >= $4 THEN 'deleted' ELSE r.status END,
        version = r.version + CASE WHEN r.missed_sweeps + 1 >= $4 THEN 1 ELSE 0 END
    FROM missing m
    -- the same partition-sized index range as the anti-join above (not the whole region)
    WHERE r.region = $1 AND r.image_type = $2 AND r.deleted_at IS NULL
      AND r.image_id = m.image_id
    RETURNING r.image_id, m.old_status, r.deleted_at IS NOT NULL AS tombstoned
)
INSERT INTO sync_page_events (image_id, kind, old_status, new_status, changes)
SELECT image_id, 'deleted', old_status, 'deleted', '{}'::jsonb FROM marked WHERE tombstoned
RETURNING kind;

-- name: record_full_sweep
-- The watermark ($5) is where the next delta starts: a point this COMPLETE sweep covered (its
-- start, in the API's clock where known), never beyond now().
UPDATE ims.partitions
SET last_full_sweep_at = $3, last_full_run_id = $4, complete_sweeps = complete_sweeps + 1,
    note = NULL, watermark = least($5::timestamptz, now())
WHERE region = $1 AND image_type = $2;

-- name: record_skipped_sweep
-- Complete, but too short to judge absences: the listing still covered what it listed.
UPDATE ims.partitions SET note = $3, watermark = least($4::timestamptz, now())
WHERE region = $1 AND image_type = $2;

-- name: record_delta
UPDATE ims.partitions SET last_delta_at = $3, watermark = least($4::timestamptz, now())
WHERE region = $1 AND image_type = $2;

-- name: recent_runs
SELECT id, region, image_type, mode, started_at, finished_at, outcome, pages, images_seen,
       created, updated, deleted, error, worker, note
FROM ims.sync_runs ORDER BY id DESC LIMIT $1;

-- name: full_sweep_ages
-- Seconds since each partition's last COMPLETE full sweep started (NULL: never), and its start.
SELECT region, image_type, last_full_sweep_at,
       extract(epoch FROM clock_timestamp() - last_full_sweep_at)::float8 AS age
FROM ims.partitions;
