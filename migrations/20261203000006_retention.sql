-- Retention of finished runs (issue 11: history must not slow the engine).
--
-- The state machines are those of 20261203000005_engine_v2.sql, unchanged.
-- This adds one writer:
--
--   swf.purge_finished(p_before, p_limit, p_epoch)
--       deletes at most p_limit finished runs (completed, failed or
--       cancelled) that were created and finished before p_before, oldest
--       first, with everything they own: steps, attempts, dependency edges
--       and signals. One statement (data-modifying CTEs), one round trip,
--       one short transaction per batch. Returns the ids of the runs
--       deleted, so the caller can drop them from its lineage cache.
--
-- Explicit deletes: since engine v2, swf.attempts and swf.deps have no
-- foreign keys to swf.steps, and swf.signals never had one, so nothing
-- cascades to them; they are deleted by run_id (the leading column of each
-- one's primary key) in the same statement. swf.steps is deleted the same
-- way (the ON DELETE CASCADE from swf.runs then finds nothing left).
--
-- Never waiting on the engine: the runs are taken FOR UPDATE SKIP LOCKED, so
-- a run some transition holds (a retry, a late signal, a stale completion
-- waiting for its lock) is left for the next batch. Claims take only steps
-- of running runs, and the transitions that reach a finished run's rows lock
-- the run first, so once a run is ours its rows are normally free;
-- lock_timeout bounds any wait anyway (an ALTER TABLE, a manual lock), and
-- the batch is retried.
--
-- Finding candidates without a new index: swf.runs keeps no index on
-- completed_at or status for this (an index on a column the completion
-- updates turns that update from HOT into a full one, a measured cost on
-- the hot path, and the status index may be dropped for that reason). A run
-- that finished before the cutoff was created before it, so the batch walks
-- runs_by_created (created_at DESC, run_id DESC) backwards from the oldest
-- run and filters status and completed_at on the rows it reads. What it
-- reads besides the runs it deletes is the runs created before the cutoff
-- that are still running or paused, or finished after it: runs older than
-- the retention period, few in any healthy cluster. Sequential scans are off
-- for the function (as for the engine's batch functions), so stale
-- statistics cannot turn the walk into a scan and sort of the whole table.
-- (On 400,000 runs over 30 days, a batch of 1000 read its 1000 runs and 11
-- others, in a backward scan of runs_by_created with LIMIT.)

CREATE FUNCTION swf.purge_finished(p_before timestamptz, p_limit int, p_epoch bigint)
RETURNS uuid[]
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET lock_timeout = '5s'
AS $$
DECLARE
    v_runs uuid[];
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    IF p_before IS NULL OR p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'purge_finished: a cutoff and a limit of at least 1 are required (got %, %)',
            p_before, p_limit USING ERRCODE = '22023';
    END IF;
    WITH doomed AS (
        SELECT r.run_id
          FROM swf.runs r
         WHERE r.created_at < p_before
           AND r.status IN ('completed', 'failed', 'cancelled')
           AND r.completed_at < p_before
         ORDER BY r.created_at, r.run_id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), gone_attempts AS (
        DELETE FROM swf.attempts a USING doomed d WHERE a.run_id = d.run_id
    ), gone_deps AS (
        DELETE FROM swf.deps e USING doomed d WHERE e.run_id = d.run_id
    ), gone_signals AS (
        DELETE FROM swf.signals g USING doomed d WHERE g.run_id = d.run_id
    ), gone_steps AS (
        DELETE FROM swf.steps s USING doomed d WHERE s.run_id = d.run_id
    ), gone_runs AS (
        DELETE FROM swf.runs r USING doomed d WHERE r.run_id = d.run_id RETURNING r.run_id
    )
    SELECT coalesce(array_agg(g.run_id), '{}') INTO v_runs FROM gone_runs g;
    RETURN v_runs;
END $$;
