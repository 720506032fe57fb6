-- Replicas and partition leases (loaded with queries.sql by syncer/store/queries.py).
-- Every time here is the database's own clock (clock_timestamp()): replicas' clocks may differ.

-- name: acquire_lease
-- Take the partition's lease if nobody holds it or its holder's lease expired. Returns the new
-- fencing token and the previous holder (when one is taken over); nothing when it is held.
WITH previous AS (
    SELECT holder, run_id FROM ims.partition_leases WHERE region = $1 AND image_type = $2
)
INSERT INTO ims.partition_leases AS l (region, image_type, holder_id, holder, token, mode,
                                       expires_at)
VALUES ($1, $2, $3, $4, gen_random_uuid(), $5, clock_timestamp() + make_interval(secs => $6))
ON CONFLICT (region, image_type) DO UPDATE SET
    holder_id = excluded.holder_id, holder = excluded.holder, token = excluded.token,
    mode = excluded.mode, run_id = NULL, acquired_at = clock_timestamp(),
    expires_at = excluded.expires_at
WHERE l.expires_at < clock_timestamp()
RETURNING token, (SELECT holder FROM previous) AS previous_holder;

-- name: tie_lease
UPDATE ims.partition_leases SET run_id = $2 WHERE token = $1;

-- name: fence
-- In a pass's write transaction: the pass still holds its lease. The row stays locked until
-- COMMIT, so no other replica can take the lease over while this transaction writes; the
-- lease is renewed on the way. Nothing returned: the lease is lost, the transaction must not
-- commit.
UPDATE ims.partition_leases
SET expires_at = greatest(expires_at, clock_timestamp() + make_interval(secs => $2))
WHERE token = $1 AND expires_at > clock_timestamp()
RETURNING 1;

-- name: renew_lease
UPDATE ims.partition_leases SET expires_at = clock_timestamp() + make_interval(secs => $2)
WHERE token = $1 AND expires_at > clock_timestamp()
RETURNING 1;

-- name: release_lease
DELETE FROM ims.partition_leases WHERE token = $1;

-- name: reap_runs
-- Runs still 'running' whose pass no longer holds a live lease: their replica stopped (died,
-- was killed, lost the database) before closing them.
UPDATE ims.sync_runs r
SET outcome = 'failed', finished_at = clock_timestamp(),
    error = 'replica gone: ' || r.worker || ' stopped before finishing (its lease expired)'
WHERE r.outcome = 'running' AND NOT EXISTS (
    SELECT 1 FROM ims.partition_leases l
    WHERE l.region = r.region AND l.image_type = r.image_type AND l.run_id = r.id
      AND l.expires_at > clock_timestamp())
RETURNING r.id, r.region, r.image_type, r.worker;

-- name: heartbeat
-- A replica says it lives (registering on its first beat); the live replicas come back.
WITH beat AS (
    INSERT INTO ims.replicas AS r (replica_id, worker, host, pid)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (replica_id) DO UPDATE SET heartbeat_at = clock_timestamp()
    RETURNING replica_id, worker, host, pid
)
SELECT replica_id, worker, host, pid FROM beat
UNION
SELECT replica_id, worker, host, pid FROM ims.replicas
WHERE heartbeat_at > clock_timestamp() - make_interval(secs => $5)
ORDER BY 1;

-- name: replicas_on_host
SELECT replica_id, worker, pid FROM ims.replicas WHERE host = $1 AND replica_id <> $2;

-- name: retire_replica
-- A replica that is gone for certain (a clean stop, or a process of this host that no longer
-- runs): its leases expire now, and it leaves the list.
WITH expired AS (
    UPDATE ims.partition_leases SET expires_at = clock_timestamp() WHERE holder_id = $1
)
DELETE FROM ims.replicas WHERE replica_id = $1;

-- name: prune_replicas
DELETE FROM ims.replicas WHERE heartbeat_at < clock_timestamp() - make_interval(secs => $1);

-- name: since_last_pass
-- Seconds since a pass of this mode last started on the partition (any replica; NULL: never).
SELECT extract(epoch FROM clock_timestamp() - max(started_at))::float8 FROM ims.sync_runs
WHERE region = $1 AND image_type = $2 AND mode = $3;
