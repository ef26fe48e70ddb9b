-- Engine v2: set-based claim and completion (issue 11).
--
-- The state machines are those of 20261203000004_limits.sql, unchanged.
-- What changes is how a batch moves through them:
--
--   swf.claim_tasks    per queue, ONE statement claims up to p_qty tasks:
--                      it locks the oldest visible messages (SKIP LOCKED),
--                      joins their steps (queued, run running; SKIP LOCKED),
--                      starts the steps, records the attempts, sets each
--                      message's visibility to min(step timeout, lease) +
--                      margin and builds the handler inputs. No per-row
--                      PL/pgSQL loop. A message the statement does not
--                      claim (its step was re-delivered after a lost
--                      executor, is orphaned, exhausted, or locked by a
--                      concurrent transition) goes through the one-message
--                      path of the previous version (_claim_message), which
--                      handles every such case; that path costs nothing when
--                      there are none.
--   swf.complete_tasks a batch of completions in a fixed number of
--                      statements whatever its size: lock the runs (in
--                      run_id order), complete the current attempts' steps,
--                      record the attempts, delete the messages (one
--                      pgmq.delete per queue), count down dependents and
--                      queue those now ready (one send_batch per queue),
--                      count down and finish the runs.
--
-- The epoch is asserted once per batch. Both functions keep their
-- signatures, so a node of the previous version keeps working against this
-- schema (rolling upgrade), and this version's nodes call the same names.
--
-- Key lookups only: the batch statements touch rows by primary key. The
-- planner's statistics of a table whose rows move between states quickly
-- (a queue) are always stale, and a stale "few rows are started" once made
-- it scan the steps table. The batch functions therefore run with sequential
-- scans disabled: every table is reached through its keys, whose cost stays
-- flat however much history the tables hold. (And without JIT: the
-- disabled scans' nominal costs would otherwise trigger a compile, 100+ ms,
-- on every call.)
--
-- Foreign keys off the hot path: swf.attempts and swf.deps no longer
-- reference swf.steps (their checks were two statements per attempt and per
-- edge). The engine writes them only for steps it holds; deleting a run
-- (retention) deletes its attempts and edges explicitly.
--
-- Room for the next features (columns now, behaviour later; all default to
-- today's behaviour so existing rows need no rewrite):
--   runs.priority, steps.priority     claim order within a queue
--   runs.run_at, steps.ready_at       ready-at times (run_at, delay_ms,
--                                     backoff): a message's vt carries it
--   runs/steps.concurrency_key/_limit concurrency keys
--   steps.map_source                  map steps (tasks per array element)
--   steps.wait_signal/_timeout_ms     steps that wait for a signal
--   runs.schedule                     the schedule that started a run
--   swf.queue_state                   paused queues
--   swf.signals                       signals sent to runs
-- A run status `paused` is allowed by the CHECK.

ALTER TABLE swf.attempts DROP CONSTRAINT IF EXISTS attempts_run_id_step_id_fkey;
ALTER TABLE swf.deps DROP CONSTRAINT IF EXISTS deps_run_id_step_id_fkey;
ALTER TABLE swf.deps DROP CONSTRAINT IF EXISTS deps_run_id_dep_id_fkey;

-- Room on each page for updated versions of a row (HOT updates).
ALTER TABLE swf.steps SET (fillfactor = 80);
ALTER TABLE swf.attempts SET (fillfactor = 85);
ALTER TABLE swf.runs SET (fillfactor = 85);

ALTER TABLE swf.runs
    ADD COLUMN priority int NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    ADD COLUMN run_at timestamptz,
    ADD COLUMN concurrency_key text,
    ADD COLUMN concurrency_limit int CHECK (concurrency_limit >= 1),
    ADD COLUMN schedule text;
ALTER TABLE swf.runs DROP CONSTRAINT IF EXISTS runs_status_check;
ALTER TABLE swf.runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('running', 'paused', 'completed', 'failed', 'cancelled'));
ALTER TABLE swf.runs DROP CONSTRAINT IF EXISTS runs_check;
ALTER TABLE swf.runs ADD CONSTRAINT runs_check
    CHECK ((status IN ('running', 'paused')) = (completed_at IS NULL));

ALTER TABLE swf.steps
    ADD COLUMN priority int NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    ADD COLUMN ready_at timestamptz,
    ADD COLUMN concurrency_key text,
    ADD COLUMN concurrency_limit int CHECK (concurrency_limit >= 1),
    ADD COLUMN map_source text,
    ADD COLUMN wait_signal text,
    ADD COLUMN wait_timeout_ms int CHECK (wait_timeout_ms > 0);

CREATE TABLE swf.queue_state (
    mq         text PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE swf.signals (
    run_id      uuid NOT NULL,
    name        text NOT NULL,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    payload     jsonb,
    consumed_by text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name, seq)
);

-- Waits (lock_timeout bounds it) until no other transaction holds message
-- p_msg_id of queue p_mq, and holds its lock. Taking only this lock first
-- cannot deadlock: nothing else is held while waiting.
CREATE FUNCTION swf._await_message(p_mq text, p_msg_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT 1 FROM pgmq.%I WHERE msg_id = $1 FOR UPDATE', 'q_' || p_mq)
      USING p_msg_id;
END $$;

-- reject_task, as in 20261203000004, after waiting for the message's lock
-- (it too follows a claim that raised on another connection).
ALTER FUNCTION swf.reject_task(text, bigint, text, text, text, text, text, bigint)
    RENAME TO _reject_message;
CREATE FUNCTION swf.reject_task(p_mq text, p_msg_id bigint, p_code text, p_detail text,
                                p_node_id text, p_region text, p_pool text, p_epoch bigint)
RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM swf._await_message(p_mq, p_msg_id);
    RETURN swf._reject_message(p_mq, p_msg_id, p_code, p_detail, p_node_id, p_region, p_pool,
                               p_epoch);
END $$;

-- The previous claim, kept as the one-message path.
ALTER FUNCTION swf.claim_tasks(text[], int, text, text, text, int, int, bigint, bigint)
    RENAME TO _claim_message;

CREATE FUNCTION swf.claim_tasks(p_mqs text[], p_qty int, p_node_id text, p_region text,
                                p_pool text, p_lease_ms int, p_margin_ms int, p_epoch bigint,
                                p_msg_id bigint DEFAULT NULL)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off
AS $$
DECLARE
    v_mq text;
    v_left bigint[];
    v_id bigint;
    v_n int;
BEGIN
    IF p_msg_id IS NOT NULL THEN
        -- The isolation path follows a claim that raised on another
        -- connection, whose locks are released only after its error was
        -- sent: wait for the message's lock rather than skip it.
        PERFORM swf._await_message(p_mqs[1], p_msg_id);
        RETURN QUERY SELECT * FROM swf._claim_message(p_mqs, p_qty, p_node_id, p_region, p_pool,
                                                      p_lease_ms, p_margin_ms, p_epoch, p_msg_id);
        RETURN;
    END IF;
    PERFORM swf.assert_epoch(p_epoch);
    FOREACH v_mq IN ARRAY p_mqs LOOP
        EXIT WHEN p_qty <= 0;
        -- Claimed rows come back with their input; messages read but not
        -- claimed come back with a NULL run_id and go the one-message way.
        v_left := '{}';
        FOR run_id, step_id, attempt, handler, timeout_ms, input, msg_id IN EXECUTE format($q$
            WITH m AS (
                SELECT q.msg_id, (q.message->>'run_id')::uuid AS run_id, q.message->>'step_id' AS step_id
                  FROM pgmq.%1$I q
                 WHERE q.vt <= clock_timestamp()
                 ORDER BY q.msg_id
                 LIMIT $1
                   FOR UPDATE SKIP LOCKED),
            s AS (
                SELECT st.run_id, st.step_id
                  FROM m
                  JOIN swf.steps st
                    ON st.run_id = m.run_id AND st.step_id = m.step_id AND st.msg_id = m.msg_id
                 WHERE st.status = 'queued'
                   AND EXISTS (SELECT 1 FROM swf.runs r
                                WHERE r.run_id = st.run_id AND r.status = 'running')
                   FOR UPDATE OF st SKIP LOCKED),
            up AS (
                UPDATE swf.steps st
                   SET status = 'started', attempts = st.attempts + 1,
                       started_at = coalesce(st.started_at, now())
                  FROM s
                 WHERE st.run_id = s.run_id AND st.step_id = s.step_id
                RETURNING st.run_id, st.step_id, st.attempts, st.handler, st.timeout_ms,
                          st.input, st.depends_on, st.msg_id),
            vt AS (
                UPDATE pgmq.%1$I q
                   SET vt = clock_timestamp()
                            + make_interval(secs => (least(up.timeout_ms, $2) + $3) / 1000.0),
                       read_ct = q.read_ct + 1
                  FROM up
                 WHERE q.msg_id = up.msg_id),
            att AS (
                INSERT INTO swf.attempts (run_id, step_id, attempt, node_id, region, worker_pool,
                                          started_at)
                SELECT up.run_id, up.step_id, up.attempts, $4, $5, $6, clock_timestamp() FROM up)
            SELECT up.run_id, up.step_id, up.attempts, up.handler, up.timeout_ms,
                   CASE WHEN up.run_id IS NOT NULL THEN jsonb_build_object(
                       'run', (SELECT r.input FROM swf.runs r WHERE r.run_id = up.run_id),
                       'step', up.input,
                       'deps', CASE WHEN cardinality(up.depends_on) = 0 THEN '{}'::jsonb ELSE
                           (SELECT coalesce(jsonb_object_agg(ds.step_id, ds.output), '{}')
                              FROM swf.steps ds
                             WHERE ds.run_id = up.run_id AND ds.step_id = ANY (up.depends_on))
                           END)
                   END,
                   m.msg_id
              FROM m LEFT JOIN up ON up.msg_id = m.msg_id
            $q$, 'q_' || v_mq)
            USING p_qty, p_lease_ms, p_margin_ms, p_node_id, p_region, p_pool
        LOOP
            IF run_id IS NULL THEN
                v_left := v_left || msg_id;
            ELSE
                p_qty := p_qty - 1;
                RETURN NEXT;
            END IF;
        END LOOP;
        -- The uncommon cases, one message each (re-delivery after a lost
        -- executor, orphans, exhausted attempts, a step locked meanwhile).
        FOREACH v_id IN ARRAY v_left LOOP
            v_n := 0;
            FOR run_id, step_id, attempt, handler, timeout_ms, input, msg_id IN
                SELECT * FROM swf._claim_message(ARRAY[v_mq], 1, p_node_id, p_region, p_pool,
                                                 p_lease_ms, p_margin_ms, p_epoch, v_id)
            LOOP
                v_n := v_n + 1;
                IF p_qty > 0 THEN
                    p_qty := p_qty - 1;
                    RETURN NEXT;
                ELSE
                    -- More than asked for: give it back at once.
                    PERFORM swf.release_tasks(jsonb_build_array(jsonb_build_object(
                        'run_id', run_id, 'step_id', step_id, 'attempt', attempt)), p_epoch);
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
END $$;

-- Completes a batch of attempts: each item completes ('completed') or is
-- refused ('stale': not the step's current attempt, the step not started,
-- or the run not running). Completing a step queues the dependents whose
-- dependencies are now all complete; a run's last step completes the run
-- with the object of its leaf steps' outputs.
-- p_items: [{run_id, step_id, attempt, output}]
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
           AND EXISTS (SELECT 1 FROM swf.runs r WHERE r.run_id = u.run_id AND r.status = 'running')
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
