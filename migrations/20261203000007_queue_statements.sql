-- Per-queue statements with cached plans.
--
-- A pgmq queue is a table per queue (pgmq.q_<name>), so every statement on
-- it is built per call (EXECUTE format(...)) and PostgreSQL parses and plans
-- it each time. For the v2 claim (one statement of five CTEs) that planning
-- cost ~1.5 ms per call, several times the work of claiming a small batch,
-- and it was paid again by every submit through pgmq.send_batch.
--
-- Each queue now gets two functions whose SQL names its table statically,
-- so each connection plans them once and reuses the plan:
--   swf."claim@<queue>"   the batch claim of claim_tasks for that queue
--   swf."enqueue@<queue>" puts steps' tasks on that queue and marks the
--                          steps queued with their msg_id (one statement)
-- swf._queue_statements(queue) (re)creates both; queue creation calls it,
-- this migration calls it for every existing queue, and a caller finding one
-- missing (a queue made with pgmq.create directly) creates it under the
-- queue creators' lock. Calling them costs one trivial dynamic SELECT.
--
-- The engine's entry points also plan generically (plan_cache_mode): their
-- statements take arrays and keys whose custom plans are the same plan,
-- re-made on every call.

-- Waking pollers after COMMIT.
--
-- A transaction that NOTIFYs holds one database-wide lock from just before
-- its commit until the commit is flushed, so notifying transactions commit
-- one at a time, each waiting for its own WAL flush: submits queued behind
-- one another's fsync instead of sharing one. The engine's procedures now
-- defer the wake-up: inside them (swf.defer_wake = on, transaction-local)
-- swf._wake only notes the queue; after the data's COMMIT the procedure
-- sends the notifications in a second transaction that writes nothing and
-- commits without waiting for a flush (a notification lost in a crash only
-- delays a poller until its next poll, nothing else). Called outside such a
-- procedure, swf._wake notifies in the caller's transaction, as before.

CREATE FUNCTION swf._wake(p_mq text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('swf.defer_wake', true) = 'on' THEN
        PERFORM set_config('swf.wake',
                           concat_ws(',', nullif(current_setting('swf.wake', true), ''), p_mq),
                           true);
    ELSE
        PERFORM pg_notify('swf_' || p_mq, '');
    END IF;
END $$;

-- The queues noted by swf._wake in this transaction (read before COMMIT).
CREATE FUNCTION swf._deferred_wakes() RETURNS text[]
LANGUAGE sql AS $$
    SELECT coalesce(ARRAY(SELECT DISTINCT q
                            FROM unnest(string_to_array(
                                     nullif(current_setting('swf.wake', true), ''), ',')) AS q),
                    '{}')
$$;

-- Sends the deferred notifications in the current (new, empty) transaction,
-- which then commits without waiting for its flush.
CREATE FUNCTION swf._send_wakes(p_mqs text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_mqs) > 0 THEN
        PERFORM set_config('synchronous_commit', 'off', true);
        PERFORM pg_notify('swf_' || q, '') FROM unnest(p_mqs) AS q;
    END IF;
END $$;

CREATE FUNCTION swf._queue_statements(p_mq text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION swf.%1$I(p_qty int, p_lease_ms int, p_margin_ms int,
                                   p_node_id text, p_region text, p_pool text)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $b$
#variable_conflict use_column
BEGIN
    -- Claimed rows come back with their input; messages read but not
    -- claimed come back with a NULL run_id (claim_tasks takes those the
    -- one-message way).
    RETURN QUERY
    WITH m AS (
        SELECT q.msg_id, (q.message->>'run_id')::uuid AS run_id, q.message->>'step_id' AS step_id
          FROM pgmq.%2$I q
         WHERE q.vt <= clock_timestamp()
         ORDER BY q.msg_id
         LIMIT p_qty
           FOR UPDATE SKIP LOCKED),
    s AS (
        SELECT st.run_id, st.step_id
          FROM m
          JOIN swf.steps st
            ON st.run_id = m.run_id AND st.step_id = m.step_id AND st.msg_id = m.msg_id
         WHERE st.status = 'queued'
           -- A scalar subquery, not EXISTS: the generic plan cannot know the
           -- batch is small, and would hash every running run to join them.
           AND (SELECT r.status FROM swf.runs r WHERE r.run_id = st.run_id) = 'running'
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
        UPDATE pgmq.%2$I q
           SET vt = clock_timestamp()
                    + make_interval(secs => (least(up.timeout_ms, p_lease_ms) + p_margin_ms) / 1000.0),
               read_ct = q.read_ct + 1
          FROM up
         WHERE q.msg_id = up.msg_id),
    att AS (
        INSERT INTO swf.attempts (run_id, step_id, attempt, node_id, region, worker_pool,
                                  started_at)
        SELECT up.run_id, up.step_id, up.attempts, p_node_id, p_region, p_pool, clock_timestamp()
          FROM up)
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
      FROM m LEFT JOIN up ON up.msg_id = m.msg_id;
END $b$
$f$, 'claim@' || p_mq, 'q_' || p_mq);

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION swf.%1$I(p_runs uuid[], p_steps text[])
RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $b$
BEGIN
    WITH sent AS (
        INSERT INTO pgmq.%2$I (vt, message)
        SELECT clock_timestamp(), jsonb_build_object('run_id', u.r, 'step_id', u.s)
          FROM unnest(p_runs, p_steps) WITH ORDINALITY AS u(r, s, o)
         ORDER BY u.o
        RETURNING msg_id, (message->>'run_id')::uuid AS run_id, message->>'step_id' AS step_id)
    UPDATE swf.steps st SET status = 'queued', msg_id = sent.msg_id
      FROM sent
     WHERE st.run_id = sent.run_id AND st.step_id = sent.step_id;
    PERFORM swf._wake(%3$L);
END $b$
$f$, 'enqueue@' || p_mq, 'q_' || p_mq, p_mq);
END $$;

-- The name of queue p_mq's function of kind p_kind ('claim', 'enqueue'),
-- created first when missing (under the queue creators' lock, re-checked).
CREATE FUNCTION swf._queue_fn(p_kind text, p_mq text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_name text := format('swf.%I', p_kind || '@' || p_mq);
BEGIN
    IF to_regproc(v_name) IS NULL THEN
        PERFORM pg_advisory_xact_lock(6005346003322226005);
        IF to_regproc(v_name) IS NULL THEN
            PERFORM swf._queue_statements(p_mq);
        END IF;
    END IF;
    RETURN v_name;
END $$;

SELECT swf._queue_statements(queue_name) FROM pgmq.meta;

-- Queue creation makes the queue's functions too.
CREATE OR REPLACE FUNCTION swf._ensure_queue(p_mq text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = p_mq) THEN
        PERFORM pg_advisory_xact_lock(6005346003322226005);
        IF NOT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = p_mq) THEN
            PERFORM pgmq.create(p_mq);
            PERFORM swf._queue_statements(p_mq);
        END IF;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION swf.ensure_queues(p_mqs text[], p_epoch bigint, p_max_queues int)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_missing text[];
    v_have bigint;
    v_mq text;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    v_missing := ARRAY(SELECT DISTINCT q FROM unnest(coalesce(p_mqs, '{}')) AS q
                        WHERE NOT EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = q)
                        ORDER BY q);
    IF cardinality(v_missing) = 0 THEN
        RETURN;
    END IF;
    -- Creators take turns ("SWF_QUEU"), and count again once it is theirs.
    PERFORM pg_advisory_xact_lock(6005346003322226005);
    v_missing := ARRAY(SELECT DISTINCT q FROM unnest(p_mqs) AS q
                        WHERE NOT EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = q)
                        ORDER BY q);
    SELECT count(*) INTO v_have FROM pgmq.meta;
    IF p_max_queues IS NOT NULL AND v_have + cardinality(v_missing) > p_max_queues THEN
        RAISE EXCEPTION 'too many queues: creating % more (%) would make % queues; the cluster allows % (limits.max_queues)',
            cardinality(v_missing),
            array_to_string(v_missing[1:5], ', ') || CASE WHEN cardinality(v_missing) > 5 THEN ', ...' ELSE '' END,
            v_have + cardinality(v_missing), p_max_queues
            USING ERRCODE = 'SWF02';
    END IF;
    FOREACH v_mq IN ARRAY v_missing LOOP
        PERFORM pgmq.create(v_mq);
        PERFORM swf._queue_statements(v_mq);
    END LOOP;
END $$;

-- As in 20261203000001, through the queue's own function.
CREATE OR REPLACE FUNCTION swf._enqueue_many(p_runs uuid[], p_steps text[], p_mq text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(cardinality(p_runs), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM swf._ensure_queue(p_mq);
    EXECUTE format('SELECT %s($1, $2)', swf._queue_fn('enqueue', p_mq)) USING p_runs, p_steps;
END $$;

-- As in 20261203000005, through the queue's own claim function.
CREATE OR REPLACE FUNCTION swf.claim_tasks(p_mqs text[], p_qty int, p_node_id text,
                                           p_region text, p_pool text, p_lease_ms int,
                                           p_margin_ms int, p_epoch bigint,
                                           p_msg_id bigint DEFAULT NULL)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_mq text;
    v_left bigint[];
    v_id bigint;
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
        v_left := '{}';
        FOR run_id, step_id, attempt, handler, timeout_ms, input, msg_id IN
            EXECUTE format('SELECT * FROM %s($1, $2, $3, $4, $5, $6)',
                           swf._queue_fn('claim', v_mq))
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
            FOR run_id, step_id, attempt, handler, timeout_ms, input, msg_id IN
                SELECT * FROM swf._claim_message(ARRAY[v_mq], 1, p_node_id, p_region, p_pool,
                                                 p_lease_ms, p_margin_ms, p_epoch, v_id)
            LOOP
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

ALTER FUNCTION swf.complete_tasks(jsonb, bigint) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION swf._submit_runs(jsonb, bigint) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION swf.release_tasks(jsonb, bigint) SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION swf.fail_tasks(jsonb, bigint, int, int) SET plan_cache_mode = force_generic_plan;

-- The submit procedures, waking pollers after their COMMIT.
CREATE OR REPLACE PROCEDURE swf.submit_runs(INOUT p_runs jsonb, INOUT p_epoch bigint,
                                            INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text[];
BEGIN
    PERFORM set_config('swf.defer_wake', 'on', true);
    p_runs := swf._submit_runs(p_runs, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    v_wake := swf._deferred_wakes();
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    PERFORM swf._send_wakes(v_wake);
END $$;

CREATE OR REPLACE PROCEDURE swf.submit_runs(INOUT p_runs jsonb, INOUT p_epoch bigint,
                                            IN p_mqs text[], IN p_max_queues int,
                                            INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text[];
BEGIN
    PERFORM set_config('swf.defer_wake', 'on', true);
    PERFORM swf.ensure_queues(p_mqs, p_epoch, p_max_queues);
    p_runs := swf._submit_runs(p_runs, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    v_wake := swf._deferred_wakes();
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    PERFORM swf._send_wakes(v_wake);
END $$;

-- An executor's batch of outcomes: complete_tasks of p_done and fail_tasks
-- of p_failed in one transaction, then the wake-ups of the queues that got
-- dependents. p_results: [[run_id, step_id, attempt, result], ...], one per
-- item, result as complete_tasks and fail_tasks answer.
CREATE PROCEDURE swf.finish_tasks(IN p_done jsonb, IN p_failed jsonb, IN p_epoch bigint,
                                  IN p_backoff_base_ms int, IN p_backoff_cap_ms int,
                                  INOUT p_results jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text[];
BEGIN
    PERFORM set_config('swf.defer_wake', 'on', true);
    p_results := (SELECT coalesce(jsonb_agg(jsonb_build_array(x.run_id, x.step_id, x.attempt,
                                                              x.result)), '[]')
                    FROM (SELECT c.run_id, c.step_id, c.attempt, c.result
                            FROM swf.complete_tasks(p_done, p_epoch) AS c
                          UNION ALL
                          SELECT f.run_id, f.step_id, f.attempt, f.result
                            FROM swf.fail_tasks(p_failed, p_epoch, p_backoff_base_ms,
                                                p_backoff_cap_ms) AS f) x);
    v_wake := swf._deferred_wakes();
    COMMIT;
    PERFORM swf._send_wakes(v_wake);
END $$;
