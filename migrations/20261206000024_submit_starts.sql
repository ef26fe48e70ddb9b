-- Migration 24: a hybrid node's plain submits start their steps in the
-- statement that stores them (issue 11: HTTP submits with 8 connections).
--
-- A hybrid node's pool publishes an offer: its free slots. A submit batch
-- that took it claimed, in the same transaction, through swf.claim_tasks
-- (a scan of the queue in claim order, with its wrappers), so only a batch
-- that reached an idle batcher did: under load that claim lengthened the
-- one submit in flight every waiting caller queued behind, and the pool
-- claimed the runs back with a statement of its own after the submit's
-- notification instead. Every batch then cost two transactions, a
-- notification, and a claim's scan.
--
-- swf."submit@<mq>" now takes the claim: the first p_qty steps (by
-- priority, then in order) whose handlers the claiming pool runs are
-- stored started, with attempt 1 recorded for that node, region and pool,
-- and their messages inserted invisible until the lease ends (as a claim
-- would leave them); the others are queued as before. The claimed tasks
-- come back with their input. No queue scan: the steps are the ones just
-- stored, and no notification goes out unless steps were left queued. The
-- node offers this only while its pool's queues hold nothing visible for
-- it (so new runs do not pass waiting ones), as many as its own claim
-- would ask for. swf.submit_plain passes such an offer (p_claim's "start")
-- when the pool takes the batch's queue and the queue is not paused;
-- otherwise it claims as swf.submit_and_claim does.

-- Replaces p_from by p_to in function p_fn's definition (which must hold
-- it), as in migrations 15, 22 and 23.
CREATE FUNCTION swf._patch_function(p_fn regprocedure, p_from text, p_to text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_def text := pg_get_functiondef(p_fn);
BEGIN
    IF position(p_from IN v_def) = 0 THEN
        RAISE EXCEPTION 'migration 24: % does not contain: %', p_fn, p_from;
    END IF;
    EXECUTE replace(v_def, p_from, p_to);
END $$;

SELECT swf._patch_function('swf._queue_statements(text)', $p$    EXECUTE format($f$
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
$p$,
    $p$    -- Its plain submit (migration 24): the old one-argument form goes.
    EXECUTE format('DROP FUNCTION IF EXISTS swf.%I(jsonb)', 'submit@' || p_mq);
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION swf.%1$I(p_runs jsonb, p_qty int, p_handlers text, p_lease_ms int,
                                    p_margin_ms int, p_node_id text, p_region text,
                                    p_pool text, OUT created uuid[], OUT claimed jsonb,
                                    OUT queued int)
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $b$
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
        RETURNING run_id, input),
    each AS (
        SELECT ins.run_id, ins.input AS run_input, src.o, x.*,
               x.handler IN ('noop', 'echo', 'sleep', 'fail')
               OR coalesce(p_handlers, '') = ''
               OR x.handler = ANY (string_to_array(p_handlers, ',')) AS runs_here
          FROM ins JOIN src ON (src.r->>'run_id')::uuid = ins.run_id,
               ROWS FROM (jsonb_to_recordset(src.r->'steps')
                   AS (id text, handler text, queue text, region text, input jsonb,
                       max_attempts int, timeout_ms int, priority int, map_max int,
                       wait_timeout_ms int))
               WITH ORDINALITY AS x(id, handler, queue, region, input, max_attempts,
                                    timeout_ms, priority, map_max, wait_timeout_ms, ord)),
    -- The first p_qty steps whose handlers the claiming pool runs start
    -- now, in claim order (priority, then submit order).
    st AS (
        SELECT e.*,
               e.runs_here AND row_number() OVER (
                   PARTITION BY e.runs_here
                   ORDER BY coalesce(e.priority, 0) DESC, e.o, e.ord) <= p_qty AS go
          FROM each e),
    sent AS (
        INSERT INTO pgmq.%2$I (vt, read_ct, message)
        SELECT CASE WHEN st.go THEN clock_timestamp() + make_interval(
                        secs => (least(st.timeout_ms, p_lease_ms) + p_margin_ms) / 1000.0)
                    ELSE clock_timestamp() END,
               CASE WHEN st.go THEN 1 ELSE 0 END,
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
                               wait_timeout_ms, status, msg_id, attempts, started_at)
        SELECT st.run_id, st.id, st.ord::int, st.handler, st.queue, st.region, %3$L, st.input,
               st.max_attempts, st.timeout_ms, 0, coalesce(st.priority, 0), st.map_max,
               st.wait_timeout_ms, CASE WHEN st.go THEN 'started' ELSE 'queued' END,
               sent.msg_id, CASE WHEN st.go THEN 1 ELSE 0 END,
               CASE WHEN st.go THEN now() END
          FROM st JOIN sent ON sent.run_id = st.run_id AND sent.step_id = st.id),
    att AS (
        INSERT INTO swf.attempts (run_id, step_id, attempt, node_id, region, worker_pool,
                                  started_at)
        SELECT st.run_id, st.id, 1, p_node_id, p_region, p_pool, clock_timestamp()
          FROM st WHERE st.go)
    SELECT coalesce((SELECT array_agg(ins.run_id) FROM ins), '{}'),
           coalesce((SELECT jsonb_agg(jsonb_build_array(
                                st.run_id, st.id, 1, st.handler, st.timeout_ms,
                                jsonb_build_object('run', st.run_input, 'step', st.input,
                                                   'deps', '{}'::jsonb))
                            ORDER BY st.o, st.ord)
                       FROM st WHERE st.go), '[]'),
           (SELECT count(*) FROM st WHERE NOT st.go)
      INTO created, claimed, queued;
END $b$
$f$, 'submit@' || p_mq, 'q_' || p_mq, p_mq);
$p$);

SELECT swf._queue_statements(queue_name) FROM pgmq.meta;

-- swf.submit_and_claim for a batch of plain runs all on queue p_mq; with
-- p_claim (the node's offer) for a pool that takes p_mq, its steps start
-- in the statement that stores them.
CREATE OR REPLACE PROCEDURE swf.submit_plain(INOUT p_runs jsonb, INOUT p_epoch bigint,
                                             IN p_mq text, IN p_max_queues int,
                                             IN p_claim jsonb,
                                             INOUT p_lsn text DEFAULT NULL,
                                             INOUT p_claimed jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_created uuid[];
    v_queued int;
    v_qty int := 0;
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
    IF (p_claim->>'start')::boolean AND p_claim->'mqs' ? p_mq
       AND cardinality(swf._unpaused(ARRAY[p_mq])) = 1 THEN
        v_qty := greatest((p_claim->>'qty')::int, 0);
    END IF;
    EXECUTE format('SELECT * FROM %s($1, $2, $3, $4, $5, $6, $7, $8)',
                   swf._queue_fn('submit', p_mq))
       INTO v_created, p_claimed, v_queued
      USING p_runs, v_qty, p_claim->>'handlers', (p_claim->>'lease_ms')::int,
            (p_claim->>'margin_ms')::int, p_claim->>'node_id', p_claim->>'region',
            p_claim->>'pool';
    p_runs := swf._submitted(p_runs, v_created);
    IF p_claim IS NOT NULL AND v_qty = 0 THEN
        SELECT c.claimed, c.drained INTO p_claimed, v_drained
          FROM swf._submit_claim(p_runs, p_claim, p_epoch) AS c;
    END IF;
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    -- Steps left queued are there for the queue's pollers.
    IF v_queued > 0 AND NOT (v_drained AND p_claim->'mqs' ? p_mq) THEN
        PERFORM swf._send_wakes(ARRAY[p_mq]);
    END IF;
END $$;

DROP FUNCTION swf._patch_function(regprocedure, text, text);
