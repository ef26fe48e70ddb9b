-- Plans that do not depend on how many runs are running.
--
-- complete_tasks checked "the run is running" with EXISTS, and release_tasks
-- with a join on swf.runs; the planner may turn either into a join that
-- starts from runs_by_status_created (status = 'running'). With statistics
-- taken while few runs were running (an ANALYZE after a quiet period, or on
-- a table of finished history) the generic plan of complete_tasks did just
-- that: every batch of completions walked every running run and its step.
-- With a million finished runs analyzed and 100,000 queued, a batch of ~370
-- completions cost 450 ms (400,000 buffer hits) instead of a few.
--
-- As in the claim statements (20261203000007), the check is now a scalar
-- subquery on the run's key: one key lookup per item whatever the
-- statistics say, because a scalar subquery is never turned into a join.
-- The functions are otherwise those of 20261203000005 and 20261128000001.

CREATE OR REPLACE FUNCTION swf.complete_tasks(p_items jsonb, p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int, result text, run_status text)
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off
AS $$
DECLARE
    v_runs uuid[];
    v_steps text[];
    v_atts int[];
    v_outs jsonb[];
    d_runs uuid[];
    d_steps text[];
    d_atts int[];
    g record;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    SELECT array_agg(x.run_id ORDER BY x.run_id, x.step_id),
           array_agg(x.step_id ORDER BY x.run_id, x.step_id),
           array_agg(x.attempt ORDER BY x.run_id, x.step_id),
           array_agg(x.output ORDER BY x.run_id, x.step_id)
      INTO v_runs, v_steps, v_atts, v_outs
      FROM jsonb_to_recordset(p_items) AS x(run_id uuid, step_id text, attempt int, output jsonb);
    IF v_runs IS NULL THEN
        RETURN;
    END IF;
    -- Run locks first, in run_id order, as every transition takes them.
    PERFORM 1 FROM swf.runs r WHERE r.run_id = ANY (v_runs) ORDER BY r.run_id FOR UPDATE OF r;
    -- Only the current attempt of a started step of a running run completes.
    -- (The same attempt twice in one batch completes once, with the first
    -- copy's output; other attempts of the step match nothing.)
    WITH u AS (
        SELECT DISTINCT ON (u.run_id, u.step_id, u.attempt) u.*
          FROM unnest(v_runs, v_steps, v_atts, v_outs) WITH ORDINALITY
               AS u(run_id, step_id, attempt, output, ord)
         ORDER BY u.run_id, u.step_id, u.attempt, u.ord),
    done AS (
        UPDATE swf.steps st
           SET status = 'completed', output = u.output, completed_at = now()
          FROM u
         WHERE st.run_id = u.run_id AND st.step_id = u.step_id
           AND st.status = 'started' AND st.attempts = u.attempt
           AND (SELECT r.status FROM swf.runs r WHERE r.run_id = u.run_id) = 'running'
        RETURNING st.run_id, st.step_id, st.attempts, st.mq, st.msg_id),
    att AS (
        UPDATE swf.attempts a
           SET outcome = 'completed', finished_at = clock_timestamp()
          FROM done
         WHERE a.run_id = done.run_id AND a.step_id = done.step_id AND a.attempt = done.attempts
        RETURNING a.run_id),
    del AS (
        SELECT pgmq.delete(byq.mq, byq.ids) AS gone
          FROM (SELECT done.mq, array_agg(done.msg_id) AS ids FROM done GROUP BY done.mq) byq)
    SELECT array_agg(done.run_id), array_agg(done.step_id), array_agg(done.attempts)
      INTO d_runs, d_steps, d_atts
      FROM done
     WHERE (SELECT count(*) FROM del) >= 0 AND (SELECT count(*) FROM att) >= 0;

    IF d_runs IS NOT NULL THEN
        -- Dependents: count down; those with no dependency left get queued,
        -- one send_batch per queue.
        FOR g IN
            WITH hit AS (
                SELECT dp.run_id, dp.step_id, count(*)::int AS n
                  FROM unnest(d_runs, d_steps) AS c(run_id, step_id)
                  JOIN swf.deps dp ON dp.run_id = c.run_id AND dp.dep_id = c.step_id
                 GROUP BY dp.run_id, dp.step_id),
            ready AS (
                UPDATE swf.steps st SET remaining_deps = st.remaining_deps - hit.n
                  FROM hit
                 WHERE st.run_id = hit.run_id AND st.step_id = hit.step_id
                RETURNING st.run_id, st.step_id, st.mq, st.remaining_deps, st.status)
            SELECT ready.mq, array_agg(ready.run_id ORDER BY ready.run_id, ready.step_id) AS runs,
                   array_agg(ready.step_id ORDER BY ready.run_id, ready.step_id) AS steps
              FROM ready
             WHERE ready.remaining_deps = 0 AND ready.status = 'created'
             GROUP BY ready.mq
        LOOP
            PERFORM swf._enqueue_many(g.runs, g.steps, g.mq);
        END LOOP;
        -- Runs: count down; the last step completes the run with the object
        -- of its leaf steps' outputs (CASE evaluates the aggregate only then).
        UPDATE swf.runs r
           SET remaining_steps = r.remaining_steps - x.n,
               status = CASE WHEN r.remaining_steps = x.n THEN 'completed' ELSE r.status END,
               completed_at = CASE WHEN r.remaining_steps = x.n THEN now() END,
               output = CASE WHEN r.remaining_steps = x.n THEN
                   (SELECT coalesce(jsonb_object_agg(st.step_id, st.output), '{}')
                      FROM swf.steps st
                     WHERE st.run_id = r.run_id
                       AND NOT EXISTS (SELECT 1 FROM swf.deps dp
                                        WHERE dp.run_id = st.run_id AND dp.dep_id = st.step_id))
                   ELSE r.output END
          FROM (SELECT c.run_id, count(*)::int AS n FROM unnest(d_runs) AS c(run_id)
                 GROUP BY c.run_id) x
         WHERE r.run_id = x.run_id;
    END IF;

    -- One answer per item.
    RETURN QUERY
        SELECT u.run_id, u.step_id, u.attempt,
               CASE WHEN c.r IS NULL THEN 'stale' ELSE 'completed' END,
               (SELECT r.status FROM swf.runs r WHERE r.run_id = u.run_id)
          FROM unnest(v_runs, v_steps, v_atts) AS u(run_id, step_id, attempt)
          LEFT JOIN unnest(d_runs, d_steps, d_atts) AS c(r, s, a)
            ON c.r = u.run_id AND c.s = u.step_id AND c.a = u.attempt;
END $$;

CREATE OR REPLACE FUNCTION swf.release_tasks(p_items jsonb, p_epoch bigint)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    it record;
    n int := 0;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    -- Lock order everywhere: run, then step.
    PERFORM 1 FROM swf.runs r
     WHERE r.run_id IN (SELECT x.run_id FROM jsonb_to_recordset(p_items) AS x(run_id uuid))
     ORDER BY r.run_id FOR UPDATE;
    FOR it IN SELECT st.run_id, st.step_id, st.attempts, st.mq, st.msg_id
                FROM jsonb_to_recordset(p_items) AS x(run_id uuid, step_id text, attempt int)
                JOIN swf.steps st ON st.run_id = x.run_id AND st.step_id = x.step_id
                                 AND st.attempts = x.attempt AND st.status = 'started'
               WHERE (SELECT r.status FROM swf.runs r WHERE r.run_id = st.run_id) = 'running'
               ORDER BY st.run_id, st.step_id
                 FOR UPDATE OF st LOOP
        UPDATE swf.attempts a
           SET outcome = 'abandoned', finished_at = clock_timestamp(),
               error = jsonb_build_object('message', 'released by a stopping executor')
         WHERE a.run_id = it.run_id AND a.step_id = it.step_id AND a.attempt = it.attempts;
        UPDATE swf.steps st SET status = 'queued', released = st.released + 1
         WHERE st.run_id = it.run_id AND st.step_id = it.step_id;
        PERFORM pgmq.set_vt(it.mq, it.msg_id, clock_timestamp());
        PERFORM pg_notify('swf_' || it.mq, '');
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

ALTER FUNCTION swf.complete_tasks(jsonb, bigint) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION swf.release_tasks(jsonb, bigint) SET plan_cache_mode = force_generic_plan;
