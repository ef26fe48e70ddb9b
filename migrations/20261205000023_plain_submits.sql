-- Migration 23: plain submits in one statement (issue 11: HTTP submits
-- with 8 connections; the submit a caller waits for is the critical path).
--
-- A plain run has no dependencies, maps, signal waits, delays, run_at or
-- concurrency keys: every step is ready at once. swf._submit_runs stores
-- such runs in created steps, then finds them ready (swf._start_ready),
-- dispatches by queue (swf._enqueue_many, swf._ensure_queue, swf._queue_fn,
-- EXECUTE) and queues each one: a message insert and a second update of
-- each step. swf."submit@<mq>", made with each queue's other statements,
-- inserts a batch of plain runs whose steps all go to queue <mq>, their
-- messages and their steps, already queued, in one statement.
-- swf.submit_plain is swf.submit_and_claim for such a batch (the node
-- chooses it; anything else goes the general way). Measured with one
-- pgbench client, 7 runs per call, commits not waiting for their flush:
-- 0.90 ms per call against 1.42.

-- Replaces p_from by p_to in function p_fn's definition (which must hold
-- it), as in migrations 15 and 22.
CREATE FUNCTION swf._patch_function(p_fn regprocedure, p_from text, p_to text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_def text := pg_get_functiondef(p_fn);
BEGIN
    IF position(p_from IN v_def) = 0 THEN
        RAISE EXCEPTION 'migration 23: % does not contain: %', p_fn, p_from;
    END IF;
    EXECUTE replace(v_def, p_from, p_to);
END $$;

-- What a submit answers, one object per run in order: its id and whether
-- this call created it (a run whose id exists counts as created: this node
-- retrying a submit whose first answer was lost; otherwise the idempotency
-- key matched an existing run, whose id is given).
CREATE FUNCTION swf._submitted(p_runs jsonb, p_created uuid[]) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- PL/pgSQL, not SQL: a SQL function with a FROM is planned on every
    -- call (migration 19).
    RETURN (SELECT jsonb_agg(
                CASE WHEN (r->>'run_id')::uuid = ANY (p_created)
                     THEN jsonb_build_object('run_id', r->>'run_id', 'created', true)
                     WHEN EXISTS (SELECT 1 FROM swf.runs e WHERE e.run_id = (r->>'run_id')::uuid)
                     THEN jsonb_build_object('run_id', r->>'run_id', 'created', true)
                     ELSE jsonb_build_object('run_id',
                              (SELECT e.run_id FROM swf.runs e
                                WHERE e.idempotency_key = r->>'idempotency_key'),
                              'created', false)
                END ORDER BY o)
              FROM jsonb_array_elements(p_runs) WITH ORDINALITY AS x(r, o));
END $$;

SELECT swf._patch_function(
    'swf._submit_runs(jsonb, bigint)',
    $p$    RETURN (SELECT jsonb_agg(
                CASE WHEN (r->>'run_id')::uuid = ANY (v_created)
                     THEN jsonb_build_object('run_id', r->>'run_id', 'created', true)
                     WHEN EXISTS (SELECT 1 FROM swf.runs e WHERE e.run_id = (r->>'run_id')::uuid)
                     THEN jsonb_build_object('run_id', r->>'run_id', 'created', true)
                     ELSE jsonb_build_object('run_id',
                              (SELECT e.run_id FROM swf.runs e
                                WHERE e.idempotency_key = r->>'idempotency_key'),
                              'created', false)
                END ORDER BY o)
              FROM jsonb_array_elements(p_runs) WITH ORDINALITY AS x(r, o));$p$,
    $p$    RETURN swf._submitted(p_runs, v_created);$p$);

-- The claim a submit makes for its node's pool (p_claim: the queues in
-- order, qty, node, region, pool, lease and margin, handlers), as
-- swf.claim_tasks makes it. A claim that fails claims nothing and leaves
-- the submit stored. drained: it came back short and left none of the
-- submitted runs' steps queued (nothing there for a poller to wake for).
CREATE FUNCTION swf._submit_claim(p_runs jsonb, p_claim jsonb, p_epoch bigint,
                                  OUT claimed jsonb, OUT drained boolean)
LANGUAGE plpgsql AS $$
BEGIN
    claimed := '[]';
    drained := false;
    IF p_claim ? 'handlers' THEN
        PERFORM set_config('swf.claim_handlers', p_claim->>'handlers', true);
    END IF;
    BEGIN
        claimed := (
            SELECT coalesce(jsonb_agg(jsonb_build_array(c.run_id, c.step_id, c.attempt,
                                                        c.handler, c.timeout_ms, c.input)),
                            '[]')
              FROM swf.claim_tasks(ARRAY(SELECT jsonb_array_elements_text(p_claim->'mqs')),
                                   (p_claim->>'qty')::int, p_claim->>'node_id',
                                   p_claim->>'region', p_claim->>'pool',
                                   (p_claim->>'lease_ms')::int,
                                   (p_claim->>'margin_ms')::int, p_epoch) AS c);
        drained := jsonb_array_length(claimed) < (p_claim->>'qty')::int
            AND NOT swf._left_queued(p_runs);
    EXCEPTION WHEN OTHERS THEN
        claimed := '[]';
    END;
END $$;

-- swf.submit_and_claim, its claim now swf._submit_claim.
CREATE OR REPLACE PROCEDURE swf.submit_and_claim(INOUT p_runs jsonb, INOUT p_epoch bigint,
                                                 IN p_mqs text[], IN p_max_queues int,
                                                 IN p_claim jsonb,
                                                 INOUT p_lsn text DEFAULT NULL,
                                                 INOUT p_claimed jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text[];
    v_drained boolean := false;
BEGIN
    PERFORM set_config('swf.defer_wake', 'on', true);
    PERFORM swf.ensure_queues(p_mqs, p_epoch, p_max_queues);
    PERFORM swf._note_queues(p_runs, p_mqs);
    p_runs := swf._submit_runs(p_runs, p_epoch);
    p_claimed := '[]';
    IF p_claim IS NOT NULL THEN
        SELECT c.claimed, c.drained INTO p_claimed, v_drained
          FROM swf._submit_claim(p_runs, p_claim, p_epoch) AS c;
    END IF;
    v_wake := swf._deferred_wakes();
    IF v_drained THEN
        -- The claim drained its queues (or they are paused): nothing there
        -- for a poller.
        v_wake := ARRAY(SELECT q FROM unnest(v_wake) AS q WHERE NOT p_claim->'mqs' ? q);
    END IF;
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    PERFORM swf._send_wakes(v_wake);
END $$;

-- A queue's statements include its plain submit: runs (p_runs as
-- swf._submit_runs takes them) whose steps are all plain and all go to this
-- queue. Returns the runs it created (a run whose id or idempotency key
-- exists is skipped whole). Each step is stored queued, with its message,
-- visible at once.
SELECT swf._patch_function(
    'swf._queue_statements(text)',
    $p$    -- The claims' orders: unkeyed by priority then age; keyed by key, then so.$p$,
    $p$    EXECUTE format($f$
CREATE OR REPLACE FUNCTION swf.%1$I(p_runs jsonb)
RETURNS uuid[]
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $b$
DECLARE
    v_created uuid[];
BEGIN
    WITH src AS (
        SELECT x.r, x.o FROM jsonb_array_elements(p_runs) WITH ORDINALITY AS x(r, o)),
    ins AS (
        INSERT INTO swf.runs (run_id, goal, input, idempotency_key, decomposer, submitted_by,
                              submitted_region, remaining_steps, priority)
        SELECT (src.r->>'run_id')::uuid, src.r->>'goal', src.r->'input',
               src.r->>'idempotency_key', src.r->>'decomposer', src.r->>'submitted_by',
               src.r->>'submitted_region', jsonb_array_length(src.r->'steps'),
               coalesce((src.r->>'priority')::int, 0)
          FROM src ORDER BY src.o
        ON CONFLICT DO NOTHING
        RETURNING run_id),
    st AS (
        SELECT ins.run_id, src.o, x.*
          FROM ins JOIN src ON (src.r->>'run_id')::uuid = ins.run_id,
               ROWS FROM (jsonb_to_recordset(src.r->'steps')
                   AS (id text, handler text, queue text, region text, input jsonb,
                       max_attempts int, timeout_ms int, priority int, map_max int,
                       wait_timeout_ms int))
               WITH ORDINALITY AS x(id, handler, queue, region, input, max_attempts,
                                    timeout_ms, priority, map_max, wait_timeout_ms, ord)),
    sent AS (
        INSERT INTO pgmq.%2$I (vt, message)
        SELECT clock_timestamp(),
               jsonb_build_object('run_id', st.run_id, 'step_id', st.id)
               || CASE WHEN coalesce(st.priority, 0) = 0 THEN '{}'::jsonb
                       ELSE jsonb_build_object('p', st.priority) END
               || CASE WHEN st.handler IN ('noop', 'echo', 'sleep', 'fail') THEN '{}'::jsonb
                       ELSE jsonb_build_object('h', st.handler) END
          FROM st ORDER BY st.o, st.ord
        RETURNING msg_id, (message->>'run_id')::uuid AS run_id, message->>'step_id' AS step_id),
    steps AS (
        INSERT INTO swf.steps (run_id, step_id, ordinal, handler, queue, region, mq, input,
                               max_attempts, timeout_ms, remaining_deps, priority, map_max,
                               wait_timeout_ms, status, msg_id)
        SELECT st.run_id, st.id, st.ord::int, st.handler, st.queue, st.region, %3$L, st.input,
               st.max_attempts, st.timeout_ms, 0, coalesce(st.priority, 0), st.map_max,
               st.wait_timeout_ms, 'queued', sent.msg_id
          FROM st JOIN sent ON sent.run_id = st.run_id AND sent.step_id = st.id)
    SELECT coalesce(array_agg(ins.run_id), '{}') INTO v_created FROM ins;
    RETURN v_created;
END $b$
$f$, 'submit@' || p_mq, 'q_' || p_mq, p_mq);
    -- The claims' orders: unkeyed by priority then age; keyed by key, then so.$p$);

SELECT swf._queue_statements(queue_name) FROM pgmq.meta;

-- swf.submit_and_claim for a batch of plain runs all on queue p_mq.
CREATE PROCEDURE swf.submit_plain(INOUT p_runs jsonb, INOUT p_epoch bigint, IN p_mq text,
                                  IN p_max_queues int, IN p_claim jsonb,
                                  INOUT p_lsn text DEFAULT NULL,
                                  INOUT p_claimed jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_created uuid[];
    v_drained boolean := false;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    -- Both helpers check again; checked here first, a known queue costs no
    -- call (ensure_queues would assert the epoch a second time).
    IF NOT EXISTS (SELECT 1 FROM pgmq.meta m WHERE m.queue_name = p_mq) THEN
        PERFORM swf.ensure_queues(ARRAY[p_mq], p_epoch, p_max_queues);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM swf.queue_mqs m WHERE m.mq = p_mq) THEN
        PERFORM swf._note_queues(p_runs, ARRAY[p_mq]);
    END IF;
    EXECUTE format('SELECT %s($1)', swf._queue_fn('submit', p_mq)) INTO v_created USING p_runs;
    p_runs := swf._submitted(p_runs, v_created);
    p_claimed := '[]';
    IF p_claim IS NOT NULL THEN
        SELECT c.claimed, c.drained INTO p_claimed, v_drained
          FROM swf._submit_claim(p_runs, p_claim, p_epoch) AS c;
    END IF;
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    IF cardinality(v_created) > 0 AND NOT (v_drained AND p_claim->'mqs' ? p_mq) THEN
        PERFORM swf._send_wakes(ARRAY[p_mq]);
    END IF;
END $$;

DROP FUNCTION swf._patch_function(regprocedure, text, text);
