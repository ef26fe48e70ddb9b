-- Paused runs, concurrency keys, signals and map steps (DESIGN 10.2, 10.3).
--
-- 1. Paused runs (POST /v1/workflows/{id}/pause, .../resume).
--
--   running -> paused    swf.pause_run: the run's queued tasks are parked
--                        (their messages' vt set to 'infinity'), so no claim
--                        reads them; tasks already started finish, and their
--                        completions, failures and releases count as for a
--                        running run (dependents are queued, retries wait).
--   paused  -> running   swf.resume_run: the parked messages become visible
--                        again (at their step's ready_at when that is later).
--   A message of a paused run that a claim reads anyway (a dependent queued
--   or a retry's backoff ending while paused, a lease expiring) is parked
--   then; resuming wakes it like the others. A paused run can be cancelled,
--   and fails like a running one when a step fails for good.
--
-- 2. Concurrency keys: at most `limit` tasks of a key execute at once,
--    cluster-wide.
--
--   A task holds a slot of its key from its claim until its attempt ends
--   (its step leaves `started` or moves to another attempt) or its lease
--   runs out (the message's vt, which extend_tasks moves together with the
--   slot's lease_until). A key has at most `limit` slots, rows (key, slot)
--   of swf.key_slots made on first use and then reassigned in place (HOT
--   updates: no index churn however many tasks pass), written only by
--   claims holding the key's advisory lock. Liveness is computed, so no
--   transition (completion, failure, cancel, an executor's death) has to
--   give a slot back: a slot is free when its attempt is over or its lease
--   expired.
--   A keyed task's message carries "k" (key) and "l" (limit). Each queue's
--   claim first visits keys that have messages (a loose scan of the
--   queue's key index, from a random point, up to 16 keys per claim), and
--   claims of each at most its free slots; then the unkeyed messages, as
--   before, through an index of their own, so a backlog of keyed messages
--   at their limit costs the unkeyed claim nothing. Completing a keyed task
--   wakes its queue's pollers (a slot came free).
--
-- 3. Signals: a `wait_for` step has no task. When it becomes ready it takes
--    the oldest signal of its name not yet consumed (one sent before it
--    waited is kept in swf.signals) and completes with its payload; or it
--    waits (status `waiting`, a row of swf.waits with its deadline). A
--    signal sent to a run completes the first step waiting for it, or is
--    stored. A waiting step past its deadline fails with code `timed_out`
--    (swf.expire_waits, called by client nodes every second).
--
-- 4. Map steps: a `map` step has one task per element of its source (the
--    run's input, "$run", or a dependency's output). When it becomes ready
--    its items become steps `<id>[<index>]` (map_parent, map_index,
--    map_item) with its handler, queue, attempts, timeout, delay, priority
--    and concurrency, each with its own attempts and lineage; the map step
--    waits (status `waiting`) with one dependency edge per item, and
--    completes with the array of their outputs in order when the last
--    completes. An empty array completes it at once with []; a source that
--    is not an array, or longer than the submitting node's
--    limits.max_map_items (kept in steps.map_max), fails it; an item that
--    fails for good fails it.
--
-- A step that becomes ready and is a wait or a map step goes through
-- swf._advance instead of a queue; swf._finish_step completes such a step
-- and moves what depends on it, as complete_tasks does for tasks.

ALTER TABLE swf.steps DROP CONSTRAINT IF EXISTS steps_status_check;
ALTER TABLE swf.steps ADD CONSTRAINT steps_status_check
    CHECK (status IN ('created', 'queued', 'started', 'waiting', 'completed', 'failed',
                      'cancelled')) NOT VALID;
ALTER TABLE swf.steps VALIDATE CONSTRAINT steps_status_check;

ALTER TABLE swf.steps
    ADD COLUMN map_parent text,
    ADD COLUMN map_index  int,
    ADD COLUMN map_item   jsonb,
    ADD COLUMN map_count  int,
    ADD COLUMN map_max    int;

CREATE TABLE swf.key_slots (
    key         text NOT NULL,
    slot        int NOT NULL,
    run_id      uuid NOT NULL,
    step_id     text NOT NULL,
    attempt     int NOT NULL,
    lease_until timestamptz NOT NULL,
    PRIMARY KEY (key, slot)
) WITH (fillfactor = 50);

CREATE TABLE swf.waits (
    run_id   uuid NOT NULL,
    step_id  text NOT NULL,
    signal   text NOT NULL,
    deadline timestamptz,
    PRIMARY KEY (run_id, step_id)
);
CREATE INDEX waits_by_signal ON swf.waits (run_id, signal);
CREATE INDEX waits_by_deadline ON swf.waits (deadline) WHERE deadline IS NOT NULL;

-- Replaces p_from by p_to in function p_fn's definition (which must hold
-- it): the small edits below to functions of earlier migrations.
CREATE FUNCTION swf._patch_function(p_fn regprocedure, p_from text, p_to text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_def text := pg_get_functiondef(p_fn);
BEGIN
    IF position(p_from IN v_def) = 0 THEN
        RAISE EXCEPTION 'migration 15: % does not contain: %', p_fn, p_from;
    END IF;
    EXECUTE replace(v_def, p_from, p_to);
END $$;

-- Parks messages p_ids of queue p_mq (their run is paused).
CREATE FUNCTION swf._park(p_mq text, p_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('UPDATE pgmq.%I SET vt = ''infinity'' WHERE msg_id = ANY ($1)', 'q_' || p_mq)
      USING p_ids;
END $$;

-- A paused run's message read by a claim is parked; a paused run is
-- otherwise treated as a running one by the transitions of tasks.
SELECT swf._patch_function(
    'swf._claim_message(text[], int, text, text, text, int, int, bigint, bigint)',
    '        IF s.msg_id IS DISTINCT FROM m.msg_id OR',
    '        IF v_run_status = ''paused'' AND s.msg_id = m.msg_id
           AND s.status IN (''queued'', ''started'') THEN
            PERFORM swf._park(p_mq, ARRAY[m.msg_id]);
            CONTINUE;
        END IF;
        IF s.msg_id IS DISTINCT FROM m.msg_id OR');
SELECT swf._patch_function(
    'swf._reject_message(text, bigint, text, text, text, text, text, bigint)',
    'v_status <> ''running''', 'v_status NOT IN (''running'', ''paused'')');
SELECT swf._patch_function(
    'swf.fail_tasks(jsonb, bigint, int, int)',
    'v_status IS DISTINCT FROM ''running''',
    'coalesce(v_status NOT IN (''running'', ''paused''), true)');
SELECT swf._patch_function(
    'swf.release_tasks(jsonb, bigint)',
    'WHERE r.run_id = st.run_id) = ''running''',
    'WHERE r.run_id = st.run_id) IN (''running'', ''paused'')');
SELECT swf._patch_function(
    'swf._cancel_run(uuid, bigint)',
    'IF v_status = ''running'' THEN', 'IF v_status IN (''running'', ''paused'') THEN');
-- Steps of a map step in the order of their index; the status document.
SELECT swf._patch_function(
    'swf._run_status_doc(uuid)',
    'ORDER BY st.ordinal)', 'ORDER BY st.ordinal, st.map_index NULLS FIRST)');
SELECT swf._patch_function(
    'swf._run_status_doc(uuid)',
    '''error'', st.error,', '''error'', st.error, ''index'', st.map_index,');
-- A submit whose claim took fewer tasks than it asked for woke nobody
-- (20261204000010): its queues had nothing else visible. Since claims take
-- only the handlers their node runs (20261204000011), that no longer
-- follows: a task of this submit for another node's handler stays queued.
-- The wake-ups are now skipped only when no step of the submit's runs is
-- left queued.
SELECT swf._patch_function(
    'swf.submit_and_claim(jsonb, bigint, text[], int, jsonb, text, jsonb)',
    'v_drained := jsonb_array_length(p_claimed) < (p_claim->>''qty'')::int;',
    'v_drained := jsonb_array_length(p_claimed) < (p_claim->>''qty'')::int
                AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_runs) AS r
                                  JOIN swf.steps st ON st.run_id = (r->>''run_id'')::uuid
                                 WHERE st.status = ''queued'');');
DROP FUNCTION swf._patch_function(regprocedure, text, text);

-- As in 20261128000001, for paused runs and waiting steps too.
CREATE OR REPLACE FUNCTION swf._stop_run(p_run_id uuid, p_status text, p_error jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    UPDATE swf.runs
       SET status = p_status, error = coalesce(p_error, error), completed_at = now()
     WHERE run_id = p_run_id AND status IN ('running', 'paused');
    FOR s IN
        UPDATE swf.steps SET status = 'cancelled', completed_at = now()
         WHERE run_id = p_run_id AND status IN ('created', 'queued', 'started', 'waiting')
        RETURNING mq, msg_id
    LOOP
        IF s.msg_id IS NOT NULL THEN
            PERFORM pgmq.delete(s.mq, s.msg_id);
        END IF;
    END LOOP;
    DELETE FROM swf.waits w WHERE w.run_id = p_run_id;
    UPDATE swf.attempts
       SET outcome = 'abandoned', finished_at = now(),
           error = jsonb_build_object('message', 'run ' || p_status)
     WHERE run_id = p_run_id AND outcome = 'running';
END $$;

-- As in 20261128000001; an item of a map step failing for good fails the
-- map step too.
CREATE OR REPLACE FUNCTION swf._fail_step(p_run_id uuid, p_step_id text, p_error jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_parent text;
    v_index int;
BEGIN
    UPDATE swf.steps SET status = 'failed', error = p_error, completed_at = now()
     WHERE run_id = p_run_id AND step_id = p_step_id
    RETURNING map_parent, map_index INTO v_parent, v_index;
    IF v_parent IS NOT NULL THEN
        UPDATE swf.steps
           SET status = 'failed', completed_at = now(),
               error = jsonb_build_object('message', format('item %s failed', v_index),
                                          'index', v_index, 'error', p_error)
         WHERE run_id = p_run_id AND step_id = v_parent;
    END IF;
    PERFORM swf._stop_run(p_run_id, 'failed',
        jsonb_build_object('step_id', p_step_id, 'error', p_error));
END $$;

-- The output of run p_run_id: the object of its leaf steps' outputs.
CREATE FUNCTION swf._run_output(p_run_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(st.step_id, st.output), '{}')
      FROM swf.steps st
     WHERE st.run_id = p_run_id
       AND NOT EXISTS (SELECT 1 FROM swf.deps dp
                        WHERE dp.run_id = st.run_id AND dp.dep_id = st.step_id)
$$;

-- Completes step p_step_id of a running or paused run (a wait or a map
-- step) with p_output, counts down its dependents and its run, queues the
-- dependents now ready (or advances them: waits and maps), and completes
-- the run when it was its last step.
CREATE FUNCTION swf._finish_step(p_run_id uuid, p_step_id text, p_output jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    g record;
    v_special text[] := '{}';
    v_id text;
BEGIN
    UPDATE swf.steps
       SET status = 'completed', output = p_output, completed_at = now(),
           started_at = coalesce(started_at, now())
     WHERE run_id = p_run_id AND step_id = p_step_id;
    -- Dependents: count down, and split those now ready as complete_tasks
    -- does (tasks queued per queue; waits and maps advance below).
    FOR g IN
        WITH ready AS (
            UPDATE swf.steps st SET remaining_deps = st.remaining_deps - 1
              FROM swf.deps dp
             WHERE dp.run_id = p_run_id AND dp.dep_id = p_step_id
               AND st.run_id = dp.run_id AND st.step_id = dp.step_id
            RETURNING st.step_id, st.mq, st.ordinal, st.remaining_deps, st.status,
                      (st.map_source IS NOT NULL OR st.wait_signal IS NOT NULL) AS special)
        SELECT ready.special, ready.mq,
               array_agg(ready.step_id ORDER BY ready.ordinal) AS steps
          FROM ready
         WHERE ready.remaining_deps = 0
           AND (ready.status = 'created' OR (ready.special AND ready.status = 'waiting'))
         GROUP BY ready.special, ready.mq
    LOOP
        IF g.special THEN
            v_special := v_special || g.steps;
        ELSE
            PERFORM swf._enqueue_many(array_fill(p_run_id, ARRAY[cardinality(g.steps)]),
                                      g.steps, g.mq);
        END IF;
    END LOOP;
    UPDATE swf.runs r
       SET remaining_steps = r.remaining_steps - 1,
           status = CASE WHEN r.remaining_steps = 1 THEN 'completed' ELSE r.status END,
           completed_at = CASE WHEN r.remaining_steps = 1 THEN now() END,
           output = CASE WHEN r.remaining_steps = 1 THEN swf._run_output(r.run_id)
                         ELSE r.output END
     WHERE r.run_id = p_run_id;
    FOREACH v_id IN ARRAY v_special LOOP
        PERFORM swf._advance(p_run_id, v_id);
    END LOOP;
END $$;

-- Step p_step_id of run p_run_id became ready and has no task of its own:
-- a wait step takes a signal or waits; a map step makes its items' steps
-- (or completes, when they are done or there are none).
CREATE FUNCTION swf._advance(p_run_id uuid, p_step_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s swf.steps%ROWTYPE;
    v_seq bigint;
    v_payload jsonb;
    v_src jsonb;
    v_n int;
BEGIN
    SELECT * INTO s FROM swf.steps st
     WHERE st.run_id = p_run_id AND st.step_id = p_step_id FOR UPDATE;
    IF NOT FOUND OR s.remaining_deps <> 0
       OR NOT (s.status = 'created' OR (s.status = 'waiting' AND s.map_count IS NOT NULL))
       OR (SELECT r.status FROM swf.runs r WHERE r.run_id = p_run_id)
          NOT IN ('running', 'paused') THEN
        RETURN;
    END IF;
    IF s.wait_signal IS NOT NULL THEN
        SELECT g.seq, g.payload INTO v_seq, v_payload
          FROM swf.signals g
         WHERE g.run_id = p_run_id AND g.name = s.wait_signal AND g.consumed_by IS NULL
         ORDER BY g.seq LIMIT 1 FOR UPDATE;
        IF FOUND THEN
            UPDATE swf.signals g SET consumed_by = p_step_id
             WHERE g.run_id = p_run_id AND g.name = s.wait_signal AND g.seq = v_seq;
            PERFORM swf._finish_step(p_run_id, p_step_id, v_payload);
        ELSE
            UPDATE swf.steps st SET status = 'waiting', started_at = now()
             WHERE st.run_id = p_run_id AND st.step_id = p_step_id;
            INSERT INTO swf.waits (run_id, step_id, signal, deadline)
            VALUES (p_run_id, p_step_id, s.wait_signal,
                    clock_timestamp() + make_interval(secs => s.wait_timeout_ms / 1000.0));
        END IF;
        RETURN;
    END IF;
    IF s.map_count IS NOT NULL THEN
        -- Every item completed: the outputs in order.
        PERFORM swf._finish_step(p_run_id, p_step_id,
            (SELECT coalesce(jsonb_agg(c.output ORDER BY c.map_index), '[]')
               FROM swf.deps dp
               JOIN swf.steps c ON c.run_id = dp.run_id AND c.step_id = dp.dep_id
              WHERE dp.run_id = p_run_id AND dp.step_id = p_step_id
                AND c.map_parent = p_step_id));
        RETURN;
    END IF;
    v_src := CASE WHEN s.map_source = '$run'
                  THEN (SELECT r.input FROM swf.runs r WHERE r.run_id = p_run_id)
                  ELSE (SELECT d.output FROM swf.steps d
                         WHERE d.run_id = p_run_id AND d.step_id = s.map_source) END;
    IF jsonb_typeof(v_src) IS DISTINCT FROM 'array' THEN
        PERFORM swf._fail_step(p_run_id, p_step_id, jsonb_build_object(
            'code', 'map_source_not_array',
            'message', format('step `%s` maps over %s, whose %s is %s, not an array',
                              p_step_id,
                              CASE WHEN s.map_source = '$run' THEN 'the run'
                                   ELSE format('step `%s`', s.map_source) END,
                              CASE WHEN s.map_source = '$run' THEN 'input' ELSE 'output' END,
                              coalesce(jsonb_typeof(v_src), 'absent'))));
        RETURN;
    END IF;
    v_n := jsonb_array_length(v_src);
    IF v_n > coalesce(s.map_max, 10000) THEN
        PERFORM swf._fail_step(p_run_id, p_step_id, jsonb_build_object(
            'code', 'map_too_large',
            'message', format('step `%s` maps over %s items; the limit is %s (limits.max_map_items)',
                              p_step_id, v_n, coalesce(s.map_max, 10000))));
        RETURN;
    END IF;
    IF v_n = 0 THEN
        UPDATE swf.steps st SET map_count = 0
         WHERE st.run_id = p_run_id AND st.step_id = p_step_id;
        PERFORM swf._finish_step(p_run_id, p_step_id, '[]');
        RETURN;
    END IF;
    INSERT INTO swf.steps (run_id, step_id, ordinal, handler, queue, region, mq, depends_on,
                           input, max_attempts, timeout_ms, remaining_deps, delay_ms, ready_at,
                           priority, concurrency_key, concurrency_limit, map_parent,
                           map_index, map_item)
    SELECT p_run_id, format('%s[%s]', p_step_id, e.o - 1), s.ordinal, s.handler, s.queue,
           s.region, s.mq, s.depends_on, s.input, s.max_attempts, s.timeout_ms, 0, s.delay_ms,
           s.ready_at, s.priority, s.concurrency_key, s.concurrency_limit, p_step_id,
           (e.o - 1)::int, e.v
      FROM jsonb_array_elements(v_src) WITH ORDINALITY AS e(v, o);
    INSERT INTO swf.deps (run_id, step_id, dep_id)
    SELECT p_run_id, p_step_id, format('%s[%s]', p_step_id, i)
      FROM generate_series(0, v_n - 1) AS i;
    UPDATE swf.steps st
       SET status = 'waiting', remaining_deps = v_n, map_count = v_n, started_at = now()
     WHERE st.run_id = p_run_id AND st.step_id = p_step_id;
    UPDATE swf.runs r SET remaining_steps = r.remaining_steps + v_n
     WHERE r.run_id = p_run_id;
    PERFORM swf._enqueue_many(
        array_fill(p_run_id, ARRAY[v_n]),
        ARRAY(SELECT format('%s[%s]', p_step_id, i) FROM generate_series(0, v_n - 1) AS i),
        s.mq);
END $$;

-- The free slots of key p_key among its first p_limit, as many as the
-- limit leaves free (live slots numbered past it, from a higher limit
-- used before, count too). The caller holds the key's lock.
CREATE FUNCTION swf._key_free(p_key text, p_limit int) RETURNS int[]
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_live int[];
    v_free int[];
BEGIN
    v_live := ARRAY(SELECT ks.slot FROM swf.key_slots ks
                     WHERE ks.key = p_key AND ks.lease_until > clock_timestamp()
                       AND EXISTS (SELECT 1 FROM swf.steps st
                                    WHERE st.run_id = ks.run_id AND st.step_id = ks.step_id
                                      AND st.status = 'started' AND st.attempts = ks.attempt));
    v_free := ARRAY(SELECT n FROM generate_series(1, p_limit) AS n
                     WHERE n <> ALL (v_live) ORDER BY n);
    RETURN v_free[1 : greatest(p_limit - cardinality(v_live), 0)];
END $$;

-- The transaction-scoped lock of key p_key; p_wait: wait for it, or only try.
CREATE FUNCTION swf._key_lock(p_key text, p_wait boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF p_wait THEN
        PERFORM pg_advisory_xact_lock(hashtextextended('swf.key:' || p_key, 0));
        RETURN true;
    END IF;
    RETURN pg_try_advisory_xact_lock(hashtextextended('swf.key:' || p_key, 0));
END $$;

-- Each queue's statements (as in 20261204000011, plus):
--   swf."claim@<queue>"   claims unkeyed messages only, through the index
--                          q_<queue>_free (the order of _prio, unkeyed only)
--   swf."claimk@<queue>"  claims messages of one key into its free slots,
--                          through q_<queue>_keyed (key, priority, age)
--   swf."keys@<queue>"    up to p_n keys that have visible messages, from
--                          p_from on (wrapping around), with the limit of
--                          each key's first message
--   swf."enqueue@<queue>" messages carry "k" and "l" for keyed steps, and
--                          map items their index (so the input can have it)
CREATE OR REPLACE FUNCTION swf._queue_statements(p_mq text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_claim constant text := $t$
CREATE OR REPLACE FUNCTION swf.{{FN}}({{KEYARG}}p_qty int, p_lease_ms int, p_margin_ms int,
                                   p_node_id text, p_region text, p_pool text)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
SET plan_cache_mode = force_generic_plan
AS $b$
#variable_conflict use_column
BEGIN
    -- Claimed rows come back with their input; messages read but not
    -- claimed come back with a NULL run_id (claim_tasks takes those the
    -- one-message way).
    RETURN QUERY
    WITH m AS (
        SELECT q.msg_id, (q.message->>'run_id')::uuid AS run_id, q.message->>'step_id' AS step_id,
               swf.msg_priority(q.message) AS prio
          FROM pgmq.{{Q}} q
         WHERE q.vt <= clock_timestamp() AND {{FILTER}}
           AND (q.message->>'h' IS NULL OR swf._claims_handler(q.message->>'h'))
         ORDER BY {{ORDER}}swf.msg_priority(q.message) DESC, q.msg_id
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
                  st.input, st.depends_on, st.msg_id, st.map_index, st.map_item),
    vt AS (
        UPDATE pgmq.{{Q}} q
           SET vt = clock_timestamp()
                    + make_interval(secs => (least(up.timeout_ms, p_lease_ms) + p_margin_ms) / 1000.0),
               read_ct = q.read_ct + 1
          FROM up
         WHERE q.msg_id = up.msg_id),{{SLOTS}}
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
               || CASE WHEN up.map_index IS NULL THEN '{}'::jsonb
                       ELSE jsonb_build_object('item', up.map_item, 'index', up.map_index) END
           END,
           m.msg_id
      FROM m LEFT JOIN up ON up.msg_id = m.msg_id
     ORDER BY m.prio DESC, m.msg_id;
END $b$
$t$;
    v_slots constant text := $t$
    slots AS (
        INSERT INTO swf.key_slots (key, slot, run_id, step_id, attempt, lease_until)
        SELECT p_key, p_slots[x.n], x.run_id, x.step_id, x.attempts, clock_timestamp()
                    + make_interval(secs => (least(x.timeout_ms, p_lease_ms) + p_margin_ms) / 1000.0)
          FROM (SELECT up.*, row_number() OVER () AS n FROM up) x
        ON CONFLICT (key, slot) DO UPDATE
           SET run_id = excluded.run_id, step_id = excluded.step_id,
               attempt = excluded.attempt, lease_until = excluded.lease_until),$t$;
    v_q text := quote_ident('q_' || p_mq);
BEGIN
    EXECUTE replace(replace(replace(replace(replace(replace(v_claim,
        '{{FN}}', quote_ident('claim@' || p_mq)), '{{KEYARG}}', ''),
        '{{Q}}', v_q), '{{FILTER}}', 'NOT (q.message ? ''k'')'), '{{ORDER}}', ''),
        '{{SLOTS}}', '');
    EXECUTE replace(replace(replace(replace(replace(replace(v_claim,
        '{{FN}}', quote_ident('claimk@' || p_mq)), '{{KEYARG}}', 'p_key text, p_slots int[], '),
        '{{Q}}', v_q), '{{FILTER}}', 'q.message ? ''k'' AND q.message->>''k'' = p_key'),
        '{{ORDER}}', 'q.message->>''k'', '), '{{SLOTS}}', v_slots);

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION swf.%1$I(p_n int, p_from text)
RETURNS TABLE (key text, lim int)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
SET plan_cache_mode = force_generic_plan
AS $b$
#variable_conflict use_column
BEGIN
    -- A loose scan of the key index: one descent per key.
    RETURN QUERY
    WITH RECURSIVE k(key) AS (
        (SELECT q.message->>'k' FROM pgmq.%2$I q
          WHERE q.message ? 'k' AND q.message->>'k' >= p_from
          ORDER BY q.message->>'k' LIMIT 1)
        UNION ALL
        SELECT (SELECT q.message->>'k' FROM pgmq.%2$I q
                 WHERE q.message ? 'k' AND q.message->>'k' > k.key
                 ORDER BY q.message->>'k' LIMIT 1)
          FROM k WHERE k.key IS NOT NULL),
    f(key) AS (
        SELECT k.key FROM k WHERE k.key IS NOT NULL LIMIT p_n),
    w(key) AS (
        (SELECT q.message->>'k' FROM pgmq.%2$I q
          WHERE q.message ? 'k' AND q.message->>'k' < p_from
          ORDER BY q.message->>'k' LIMIT 1)
        UNION ALL
        SELECT (SELECT q.message->>'k' FROM pgmq.%2$I q
                 WHERE q.message ? 'k' AND q.message->>'k' > w.key AND q.message->>'k' < p_from
                 ORDER BY q.message->>'k' LIMIT 1)
          FROM w WHERE w.key IS NOT NULL),
    keys(key) AS (
        SELECT f.key FROM f
        UNION ALL
        (SELECT w.key FROM w WHERE w.key IS NOT NULL
          LIMIT greatest(p_n - (SELECT count(*) FROM f), 0)))
    SELECT keys.key, l.lim
      FROM keys,
           LATERAL (SELECT (q.message->>'l')::int AS lim FROM pgmq.%2$I q
                     WHERE q.message ? 'k' AND q.message->>'k' = keys.key
                       AND q.vt <= clock_timestamp()
                     ORDER BY q.message->>'k', swf.msg_priority(q.message) DESC, q.msg_id
                     LIMIT 1) l;
END $b$
$f$, 'keys@' || p_mq, 'q_' || p_mq);

    EXECUTE format($f$
CREATE OR REPLACE FUNCTION swf.%1$I(p_runs uuid[], p_steps text[])
RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $b$
BEGIN
    -- A step's message is visible from its ready time: at once, or after
    -- its delay (counted from its ready_at, the run's run_at for a root
    -- step, if that is later than now).
    WITH sent AS (
        INSERT INTO pgmq.%2$I (vt, message)
        SELECT CASE WHEN st.delay_ms = 0 AND st.ready_at IS NULL THEN clock_timestamp()
                    ELSE greatest(clock_timestamp(), st.ready_at)
                         + make_interval(secs => st.delay_ms / 1000.0) END,
               jsonb_build_object('run_id', u.r, 'step_id', u.s)
               || CASE WHEN st.priority = 0 THEN '{}'::jsonb
                       ELSE jsonb_build_object('p', st.priority) END
               || CASE WHEN st.handler IN ('noop', 'echo', 'sleep', 'fail') THEN '{}'::jsonb
                       ELSE jsonb_build_object('h', st.handler) END
               || CASE WHEN st.concurrency_key IS NULL THEN '{}'::jsonb
                       ELSE jsonb_build_object('k', st.concurrency_key,
                                               'l', st.concurrency_limit) END
          FROM unnest(p_runs, p_steps) WITH ORDINALITY AS u(r, s, o)
          JOIN swf.steps st ON st.run_id = u.r AND st.step_id = u.s
         ORDER BY u.o
        RETURNING msg_id, vt, (message->>'run_id')::uuid AS run_id, message->>'step_id' AS step_id)
    UPDATE swf.steps st
       SET status = 'queued', msg_id = sent.msg_id,
           ready_at = CASE WHEN st.delay_ms > 0 OR st.ready_at IS NOT NULL THEN sent.vt END
      FROM sent
     WHERE st.run_id = sent.run_id AND st.step_id = sent.step_id;
    PERFORM swf._wake(%3$L);
END $b$
$f$, 'enqueue@' || p_mq, 'q_' || p_mq, p_mq);
    -- The claims' orders: unkeyed by priority then age; keyed by key, then so.
    EXECUTE format('DROP INDEX IF EXISTS pgmq.%I', 'q_' || p_mq || '_prio');
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (swf.msg_priority(message) DESC, msg_id)
                    WHERE NOT (message ? ''k'')', 'q_' || p_mq || '_free', 'q_' || p_mq);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I
                    ((message->>''k''), swf.msg_priority(message) DESC, msg_id)
                    WHERE message ? ''k''', 'q_' || p_mq || '_keyed', 'q_' || p_mq);
END $$;

SELECT swf._queue_statements(queue_name) FROM pgmq.meta;

-- The messages p_ids of queue p_mq that a claim read but did not claim, one
-- at a time through swf._claim_message (re-deliveries, orphans, exhausted
-- attempts, steps locked meanwhile, paused runs), up to p_qty of them
-- claimed; with p_key, each claimed one takes the next of p_slots, free
-- slots of that key (the caller holds the key's lock), and p_qty is their
-- number.
CREATE FUNCTION swf._claim_leftovers(p_mq text, p_ids bigint[], p_qty int, p_key text,
                                     p_slots int[], p_node_id text, p_region text,
                                     p_pool text, p_lease_ms int, p_margin_ms int,
                                     p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    FOREACH v_id IN ARRAY p_ids LOOP
        FOR run_id, step_id, attempt, handler, timeout_ms, input, msg_id IN
            SELECT * FROM swf._claim_message(ARRAY[p_mq], 1, p_node_id, p_region, p_pool,
                                             p_lease_ms, p_margin_ms, p_epoch, v_id)
        LOOP
            IF p_qty > 0 THEN
                IF p_key IS NOT NULL THEN
                    INSERT INTO swf.key_slots AS ks (key, slot, run_id, step_id, attempt,
                                                     lease_until)
                    VALUES (p_key, p_slots[cardinality(p_slots) - p_qty + 1], run_id, step_id,
                            attempt, clock_timestamp()
                            + make_interval(secs => (least(timeout_ms, p_lease_ms) + p_margin_ms) / 1000.0))
                    ON CONFLICT ON CONSTRAINT key_slots_pkey DO UPDATE
                       SET run_id = excluded.run_id, step_id = excluded.step_id,
                           attempt = excluded.attempt, lease_until = excluded.lease_until;
                END IF;
                p_qty := p_qty - 1;
                RETURN NEXT;
            ELSE
                -- More than asked for: give it back at once.
                PERFORM swf.release_tasks(jsonb_build_array(jsonb_build_object(
                    'run_id', run_id, 'step_id', step_id, 'attempt', attempt)), p_epoch);
            END IF;
        END LOOP;
    END LOOP;
END $$;

-- As in 20261203000007, with keys: per queue, first the keys that have
-- visible messages (each up to its free slots, under its lock, skipped
-- when another claim holds it), then the unkeyed messages.
CREATE OR REPLACE FUNCTION swf._claim_tasks(p_mqs text[], p_qty int, p_node_id text,
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
    v_key text;
    v_lim int;
    v_slots int[];
    v_n int;
BEGIN
    IF p_msg_id IS NOT NULL THEN
        -- The isolation path follows a claim that raised on another
        -- connection, whose locks are released only after its error was
        -- sent: wait for the message's lock rather than skip it.
        PERFORM swf._await_message(p_mqs[1], p_msg_id);
        EXECUTE format('SELECT q.message->>''k'', (q.message->>''l'')::int
                          FROM pgmq.%I q WHERE q.msg_id = $1', 'q_' || p_mqs[1])
           INTO v_key, v_lim USING p_msg_id;
        IF v_key IS NOT NULL THEN
            PERFORM swf._key_lock(v_key, true);
            v_slots := (swf._key_free(v_key, v_lim))[1:1];
            IF cardinality(v_slots) = 0 THEN
                RETURN;
            END IF;
        END IF;
        RETURN QUERY SELECT * FROM swf._claim_leftovers(p_mqs[1], ARRAY[p_msg_id], 1, v_key,
                                                        v_slots, p_node_id, p_region, p_pool,
                                                        p_lease_ms, p_margin_ms, p_epoch);
        RETURN;
    END IF;
    PERFORM swf.assert_epoch(p_epoch);
    FOREACH v_mq IN ARRAY p_mqs LOOP
        EXIT WHEN p_qty <= 0;
        FOR v_key, v_lim IN
            EXECUTE format('SELECT * FROM %s($1, $2)', swf._queue_fn('keys', v_mq))
            USING 16, md5(random()::text)
        LOOP
            EXIT WHEN p_qty <= 0;
            CONTINUE WHEN v_lim IS NULL OR NOT swf._key_lock(v_key, false);
            v_slots := swf._key_free(v_key, v_lim);
            v_slots := v_slots[1 : least(cardinality(v_slots), p_qty)];
            CONTINUE WHEN cardinality(v_slots) = 0;
            v_left := '{}';
            v_n := 0;
            FOR run_id, step_id, attempt, handler, timeout_ms, input, msg_id IN
                EXECUTE format('SELECT * FROM %s($1, $2, $3, $4, $5, $6, $7, $8)',
                               swf._queue_fn('claimk', v_mq))
                USING v_key, v_slots, cardinality(v_slots), p_lease_ms, p_margin_ms, p_node_id,
                      p_region, p_pool
            LOOP
                IF run_id IS NULL THEN
                    v_left := v_left || msg_id;
                ELSE
                    p_qty := p_qty - 1;
                    v_n := v_n + 1;
                    RETURN NEXT;
                END IF;
            END LOOP;
            -- The slots the claim did not fill (it fills them in order).
            v_slots := v_slots[v_n + 1 :];
            FOR run_id, step_id, attempt, handler, timeout_ms, input, msg_id IN
                SELECT * FROM swf._claim_leftovers(v_mq, v_left, cardinality(v_slots), v_key,
                                                   v_slots, p_node_id, p_region, p_pool,
                                                   p_lease_ms, p_margin_ms, p_epoch)
            LOOP
                p_qty := p_qty - 1;
                RETURN NEXT;
            END LOOP;
        END LOOP;
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
        FOR run_id, step_id, attempt, handler, timeout_ms, input, msg_id IN
            SELECT * FROM swf._claim_leftovers(v_mq, v_left, p_qty, NULL, NULL, p_node_id,
                                               p_region, p_pool, p_lease_ms, p_margin_ms,
                                               p_epoch)
        LOOP
            p_qty := p_qty - 1;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END $$;

-- As in 20261128000001; a keyed task's slot is extended with its lease.
CREATE OR REPLACE FUNCTION swf.extend_tasks(p_items jsonb, p_lease_ms int, p_margin_ms int,
                                            p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int)
LANGUAGE plpgsql AS $$
DECLARE
    it record;
    v_until timestamptz;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    FOR it IN SELECT st.run_id, st.step_id, st.attempts, st.mq, st.msg_id, st.timeout_ms,
                     st.concurrency_key
                FROM jsonb_to_recordset(p_items) AS x(run_id uuid, step_id text, attempt int)
                JOIN swf.steps st ON st.run_id = x.run_id AND st.step_id = x.step_id
                                 AND st.attempts = x.attempt AND st.status = 'started'
               ORDER BY st.run_id, st.step_id LOOP
        v_until := clock_timestamp()
            + make_interval(secs => (least(it.timeout_ms, p_lease_ms) + p_margin_ms) / 1000.0);
        PERFORM pgmq.set_vt(it.mq, it.msg_id, v_until);
        IF it.concurrency_key IS NOT NULL THEN
            UPDATE swf.key_slots ks SET lease_until = v_until
             WHERE ks.key = it.concurrency_key AND ks.run_id = it.run_id
               AND ks.step_id = it.step_id AND ks.attempt = it.attempts;
        END IF;
        run_id := it.run_id; step_id := it.step_id; attempt := it.attempts;
        RETURN NEXT;
    END LOOP;
END $$;

-- As in 20261204000008, for paused runs too; dependents that are waits or
-- maps advance (after the runs are counted down); completing a keyed task
-- wakes its queue (a slot came free).
CREATE OR REPLACE FUNCTION swf.complete_tasks(p_items jsonb, p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int, result text, run_status text)
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_runs uuid[];
    v_steps text[];
    v_atts int[];
    v_outs jsonb[];
    d_runs uuid[];
    d_steps text[];
    d_atts int[];
    d_keyed text[];
    s_runs uuid[] := '{}';
    s_steps text[] := '{}';
    g record;
    i int;
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
    -- Only the current attempt of a started step of a running (or paused)
    -- run completes. (The same attempt twice in one batch completes once,
    -- with the first copy's output; other attempts of the step match nothing.)
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
           AND (SELECT r.status FROM swf.runs r WHERE r.run_id = u.run_id)
               IN ('running', 'paused')
        RETURNING st.run_id, st.step_id, st.attempts, st.mq, st.msg_id, st.concurrency_key),
    att AS (
        UPDATE swf.attempts a
           SET outcome = 'completed', finished_at = clock_timestamp()
          FROM done
         WHERE a.run_id = done.run_id AND a.step_id = done.step_id AND a.attempt = done.attempts
        RETURNING a.run_id),
    del AS (
        SELECT pgmq.delete(byq.mq, byq.ids) AS gone
          FROM (SELECT done.mq, array_agg(done.msg_id) AS ids FROM done GROUP BY done.mq) byq)
    SELECT array_agg(done.run_id), array_agg(done.step_id), array_agg(done.attempts),
           array_agg(DISTINCT done.mq) FILTER (WHERE done.concurrency_key IS NOT NULL)
      INTO d_runs, d_steps, d_atts, d_keyed
      FROM done
     WHERE (SELECT count(*) FROM del) >= 0 AND (SELECT count(*) FROM att) >= 0;

    IF d_runs IS NOT NULL THEN
        -- Dependents: count down; those with no dependency left get queued,
        -- one send_batch per queue (waits and maps: below).
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
                RETURNING st.run_id, st.step_id, st.mq, st.remaining_deps, st.status,
                          (st.map_source IS NOT NULL OR st.wait_signal IS NOT NULL) AS special)
            SELECT ready.special, ready.mq,
                   array_agg(ready.run_id ORDER BY ready.run_id, ready.step_id) AS runs,
                   array_agg(ready.step_id ORDER BY ready.run_id, ready.step_id) AS steps
              FROM ready
             WHERE ready.remaining_deps = 0
               AND (ready.status = 'created' OR (ready.special AND ready.status = 'waiting'))
             GROUP BY ready.special, ready.mq
        LOOP
            IF g.special THEN
                s_runs := s_runs || g.runs;
                s_steps := s_steps || g.steps;
            ELSE
                PERFORM swf._enqueue_many(g.runs, g.steps, g.mq);
            END IF;
        END LOOP;
        -- Runs: count down; the last step completes the run with the object
        -- of its leaf steps' outputs (CASE evaluates the aggregate only then).
        UPDATE swf.runs r
           SET remaining_steps = r.remaining_steps - x.n,
               status = CASE WHEN r.remaining_steps = x.n THEN 'completed' ELSE r.status END,
               completed_at = CASE WHEN r.remaining_steps = x.n THEN now() END,
               output = CASE WHEN r.remaining_steps = x.n THEN swf._run_output(r.run_id)
                             ELSE r.output END
          FROM (SELECT c.run_id, count(*)::int AS n FROM unnest(d_runs) AS c(run_id)
                 GROUP BY c.run_id) x
         WHERE r.run_id = x.run_id;
        FOR i IN 1 .. cardinality(s_runs) LOOP
            PERFORM swf._advance(s_runs[i], s_steps[i]);
        END LOOP;
        IF d_keyed IS NOT NULL THEN
            PERFORM swf._wake(q) FROM unnest(d_keyed) AS q;
        END IF;
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

-- Queues the ready steps of runs p_runs (status created, no dependency
-- left): tasks one statement per queue, waits and maps through _advance.
CREATE FUNCTION swf._start_ready(p_runs uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    g record;
    i int;
BEGIN
    FOR g IN SELECT (st.map_source IS NOT NULL OR st.wait_signal IS NOT NULL) AS special, st.mq,
                    array_agg(st.run_id ORDER BY st.run_id, st.ordinal) AS runs,
                    array_agg(st.step_id ORDER BY st.run_id, st.ordinal) AS steps
               FROM swf.steps st
              WHERE st.run_id = ANY (p_runs) AND st.remaining_deps = 0
                AND (st.status = 'created' OR (st.status = 'waiting' AND st.map_count IS NOT NULL))
              GROUP BY 1, 2 LOOP
        IF g.special THEN
            FOR i IN 1 .. cardinality(g.runs) LOOP
                PERFORM swf._advance(g.runs[i], g.steps[i]);
            END LOOP;
        ELSE
            PERFORM swf._enqueue_many(g.runs, g.steps, g.mq);
        END IF;
    END LOOP;
END $$;

-- As in 20261204000011, storing concurrency, map and wait fields; root
-- steps that are waits or maps advance instead of being queued.
CREATE OR REPLACE FUNCTION swf._submit_runs(p_runs jsonb, p_epoch bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_created uuid[];
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    WITH ins AS (
        INSERT INTO swf.runs (run_id, goal, input, idempotency_key, decomposer,
                              submitted_by, submitted_region, remaining_steps, run_at,
                              priority, concurrency_key, concurrency_limit)
        SELECT (r->>'run_id')::uuid, r->>'goal', r->'input', r->>'idempotency_key',
               r->>'decomposer', r->>'submitted_by', r->>'submitted_region',
               jsonb_array_length(r->'steps'), (r->>'run_at')::timestamptz,
               coalesce((r->>'priority')::int, 0), r->>'concurrency_key',
               (r->>'concurrency_limit')::int
          FROM jsonb_array_elements(p_runs) WITH ORDINALITY AS x(r, o)
         ORDER BY o
        -- Any conflict: the idempotency key (a client retry) or the run_id
        -- (this node retrying a submit whose first answer was lost).
        ON CONFLICT DO NOTHING
        RETURNING run_id)
    SELECT coalesce(array_agg(run_id), '{}') INTO v_created FROM ins;

    IF cardinality(v_created) > 0 THEN
        INSERT INTO swf.steps (run_id, step_id, ordinal, handler, queue, region, mq, depends_on,
                               input, max_attempts, timeout_ms, remaining_deps, delay_ms,
                               ready_at, priority, concurrency_key, concurrency_limit,
                               map_source, map_max, wait_signal, wait_timeout_ms)
        SELECT (r.r->>'run_id')::uuid, x.id, x.ord::int, x.handler, x.queue, x.region, x.mq,
               coalesce(x.depends_on, '{}'), x.input, x.max_attempts, x.timeout_ms,
               coalesce(cardinality(x.depends_on), 0), greatest(coalesce(x.delay_ms, 0), 0),
               CASE WHEN coalesce(cardinality(x.depends_on), 0) = 0
                    THEN (r.r->>'run_at')::timestamptz END,
               coalesce(x.priority, 0), x.concurrency_key, x.concurrency_limit, x.map,
               x.map_max, x.wait_signal, x.wait_timeout_ms
          FROM jsonb_array_elements(p_runs) AS r(r),
               ROWS FROM (jsonb_to_recordset(r.r->'steps')
                   AS (id text, handler text, queue text, region text, mq text, depends_on text[],
                       input jsonb, max_attempts int, timeout_ms int, delay_ms bigint,
                       priority int, concurrency_key text, concurrency_limit int, map text,
                       map_max int, wait_signal text, wait_timeout_ms int))
               WITH ORDINALITY AS x(id, handler, queue, region, mq, depends_on, input,
                                    max_attempts, timeout_ms, delay_ms, priority,
                                    concurrency_key, concurrency_limit, map, map_max,
                                    wait_signal, wait_timeout_ms, ord)
         WHERE (r.r->>'run_id')::uuid = ANY (v_created);

        INSERT INTO swf.deps (run_id, step_id, dep_id)
        SELECT (r.r->>'run_id')::uuid, x.id, d
          FROM jsonb_array_elements(p_runs) AS r(r),
               jsonb_to_recordset(r.r->'steps') AS x(id text, depends_on text[]),
               unnest(coalesce(x.depends_on, '{}')) AS d
         WHERE (r.r->>'run_id')::uuid = ANY (v_created);

        PERFORM swf._start_ready(v_created);
    END IF;

    RETURN (SELECT jsonb_agg(
                CASE WHEN (r->>'run_id')::uuid = ANY (v_created)
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

ALTER FUNCTION swf._submit_runs(jsonb, bigint) SET plan_cache_mode = force_generic_plan;

-- As in 20261204000013: dependencies counted from the edges (a map step's
-- items are its edges too); a map step whose items exist waits for those
-- not completed; ready waits and maps advance.
CREATE OR REPLACE FUNCTION swf._retry_run(p_run_id uuid, p_epoch bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    SELECT r.status INTO v_status FROM swf.runs r WHERE r.run_id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_status NOT IN ('failed', 'cancelled') THEN
        RETURN v_status;
    END IF;
    -- The subquery sees the steps as they were: those reset here were not
    -- completed, and are not after it either.
    UPDATE swf.steps st
       SET status = CASE WHEN st.map_count IS NOT NULL THEN 'waiting' ELSE 'created' END,
           msg_id = NULL, released = st.attempts, output = NULL,
           error = NULL, started_at = NULL, completed_at = NULL,
           ready_at = NULL,
           remaining_deps = (SELECT count(*) FROM swf.deps dp
                               JOIN swf.steps ds ON ds.run_id = dp.run_id
                                                AND ds.step_id = dp.dep_id
                              WHERE dp.run_id = st.run_id AND dp.step_id = st.step_id
                                AND ds.status <> 'completed')
     WHERE st.run_id = p_run_id AND st.status <> 'completed';
    UPDATE swf.runs r
       SET status = 'running', completed_at = NULL, error = NULL,
           remaining_steps = (SELECT count(*) FROM swf.steps st
                               WHERE st.run_id = p_run_id AND st.status <> 'completed')
     WHERE r.run_id = p_run_id;
    PERFORM swf._start_ready(ARRAY[p_run_id]);
    RETURN 'running';
END $$;

-- Pauses (p_paused) or resumes run p_run_id. Returns its status
-- afterwards: `paused` / `running` when done (or already so), another
-- status as it is (the API answers 409), NULL for an unknown run.
CREATE FUNCTION swf._set_run_paused(p_run_id uuid, p_paused boolean, p_epoch bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    g record;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    SELECT r.status INTO v_status FROM swf.runs r WHERE r.run_id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_status NOT IN ('running', 'paused')
       OR v_status = (CASE WHEN p_paused THEN 'paused' ELSE 'running' END) THEN
        RETURN v_status;
    END IF;
    UPDATE swf.runs r SET status = CASE WHEN p_paused THEN 'paused' ELSE 'running' END
     WHERE r.run_id = p_run_id;
    IF p_paused THEN
        FOR g IN SELECT st.mq, array_agg(st.msg_id) AS ids
                   FROM swf.steps st
                  WHERE st.run_id = p_run_id AND st.status = 'queued'
                  GROUP BY st.mq LOOP
            PERFORM swf._park(g.mq, g.ids);
        END LOOP;
        RETURN 'paused';
    END IF;
    -- Parked messages (queued steps, and started ones whose lease ran out
    -- while paused) become visible at their ready time.
    FOR g IN SELECT st.mq, array_agg(st.msg_id) AS ids, array_agg(st.ready_at) AS ready
               FROM swf.steps st
              WHERE st.run_id = p_run_id AND st.status IN ('queued', 'started')
              GROUP BY st.mq LOOP
        EXECUTE format('UPDATE pgmq.%I q
                           SET vt = greatest(clock_timestamp(), coalesce(u.ready, clock_timestamp()))
                          FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, ready)
                         WHERE q.msg_id = u.id AND q.vt = ''infinity''', 'q_' || g.mq)
          USING g.ids, g.ready;
        PERFORM swf._wake(g.mq);
    END LOOP;
    RETURN 'running';
END $$;

CREATE PROCEDURE swf.set_run_paused(INOUT p_run_id uuid, IN p_paused boolean,
                                    INOUT p_epoch bigint, INOUT p_status text DEFAULT NULL,
                                    INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text[];
BEGIN
    PERFORM set_config('swf.defer_wake', 'on', true);
    p_status := swf._set_run_paused(p_run_id, p_paused, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    v_wake := swf._deferred_wakes();
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    PERFORM swf._send_wakes(v_wake);
END $$;

-- Sends signal p_name with p_payload to run p_run_id: the first step (in
-- the workflow's order) waiting for it completes with the payload, or the
-- signal is kept for a step that waits later. Returns the run's status
-- before the signal (`running` or `paused`: delivered or kept; another:
-- nothing stored, the API answers 409), NULL for an unknown run.
CREATE FUNCTION swf._send_signal(p_run_id uuid, p_name text, p_payload jsonb, p_epoch bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_step text;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    SELECT r.status INTO v_status FROM swf.runs r WHERE r.run_id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_status NOT IN ('running', 'paused') THEN
        RETURN v_status;
    END IF;
    SELECT w.step_id INTO v_step
      FROM swf.waits w
      JOIN swf.steps st ON st.run_id = w.run_id AND st.step_id = w.step_id
     WHERE w.run_id = p_run_id AND w.signal = p_name AND st.status = 'waiting'
     ORDER BY st.ordinal
     LIMIT 1;
    INSERT INTO swf.signals (run_id, name, payload, consumed_by)
    VALUES (p_run_id, p_name, p_payload, v_step);
    IF v_step IS NOT NULL THEN
        DELETE FROM swf.waits w WHERE w.run_id = p_run_id AND w.step_id = v_step;
        PERFORM swf._finish_step(p_run_id, v_step, p_payload);
    END IF;
    RETURN v_status;
END $$;

CREATE PROCEDURE swf.send_signal(INOUT p_run_id uuid, IN p_name text, IN p_payload jsonb,
                                 INOUT p_epoch bigint, INOUT p_status text DEFAULT NULL,
                                 INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text[];
BEGIN
    PERFORM set_config('swf.defer_wake', 'on', true);
    p_status := swf._send_signal(p_run_id, p_name, p_payload, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    v_wake := swf._deferred_wakes();
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    PERFORM swf._send_wakes(v_wake);
END $$;

-- Fails the waiting steps whose deadline passed (error code `timed_out`),
-- up to p_limit per call; each fails its run. Returns the runs failed.
-- Runs locked by another transition are left for the next call.
CREATE FUNCTION swf.expire_waits(p_epoch bigint, p_limit int)
RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    w record;
    v_failed uuid[] := '{}';
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    FOR w IN SELECT x.run_id, x.step_id, x.signal
               FROM swf.waits x
              WHERE x.deadline <= clock_timestamp()
              ORDER BY x.deadline
              LIMIT p_limit LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM swf.runs r WHERE r.run_id = w.run_id
                                     FOR UPDATE SKIP LOCKED);
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM swf.waits x
                                   WHERE x.run_id = w.run_id AND x.step_id = w.step_id
                                     AND x.deadline <= clock_timestamp());
        DELETE FROM swf.waits x WHERE x.run_id = w.run_id AND x.step_id = w.step_id;
        PERFORM swf._fail_step(w.run_id, w.step_id, jsonb_build_object(
            'code', 'timed_out',
            'message', format('no signal `%s` arrived before the step''s timeout', w.signal)));
        v_failed := v_failed || w.run_id;
    END LOOP;
    RETURN v_failed;
END $$;

-- The queues' overview (20261204000010) counts the tasks of paused runs
-- (parked: vt 'infinity') apart, not as in flight or delayed.
DROP FUNCTION swf.queue_overview();
CREATE FUNCTION swf.queue_overview()
RETURNS TABLE (name text, depth bigint, in_flight bigint, delayed bigint, parked bigint,
               oldest_age_ms bigint, paused boolean)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_mq text;
    v_queue text;
    v_d bigint;
    v_f bigint;
    v_w bigint;
    v_p bigint;
    v_o timestamptz;
    a_queue text[] := '{}';
    a_d bigint[] := '{}';
    a_f bigint[] := '{}';
    a_w bigint[] := '{}';
    a_p bigint[] := '{}';
    a_o timestamptz[] := '{}';
BEGIN
    FOR v_mq, v_queue IN
        SELECT m.queue_name, coalesce(qm.queue, m.queue_name)
          FROM pgmq.meta m LEFT JOIN swf.queue_mqs qm ON qm.mq = m.queue_name
    LOOP
        EXECUTE format(
            'SELECT count(*) FILTER (WHERE vt <= clock_timestamp()),
                    count(*) FILTER (WHERE vt > clock_timestamp() AND vt < ''infinity''
                                       AND read_ct > 0),
                    count(*) FILTER (WHERE vt > clock_timestamp() AND vt < ''infinity''
                                       AND read_ct = 0),
                    count(*) FILTER (WHERE vt = ''infinity''),
                    min(enqueued_at) FILTER (WHERE vt <= clock_timestamp())
               FROM pgmq.%I', 'q_' || v_mq)
          INTO v_d, v_f, v_w, v_p, v_o;
        a_queue := a_queue || v_queue;
        a_d := a_d || v_d;
        a_f := a_f || v_f;
        a_w := a_w || v_w;
        a_p := a_p || v_p;
        a_o := a_o || v_o;
    END LOOP;
    RETURN QUERY
        SELECT coalesce(a.queue, s.queue),
               coalesce(a.depth, 0)::bigint, coalesce(a.in_flight, 0)::bigint,
               coalesce(a.delayed, 0)::bigint, coalesce(a.parked, 0)::bigint,
               (extract(epoch FROM clock_timestamp() - a.oldest) * 1000)::bigint,
               coalesce(s.paused, false)
          FROM (SELECT u.queue, sum(u.d) AS depth, sum(u.f) AS in_flight,
                       sum(u.w) AS delayed, sum(u.p) AS parked, min(u.o) AS oldest
                  FROM unnest(a_queue, a_d, a_f, a_w, a_p, a_o) AS u(queue, d, f, w, p, o)
                 GROUP BY u.queue) a
          FULL JOIN swf.queue_state s ON s.queue = a.queue
         ORDER BY 1;
END $$;

-- Retention (20261203000006) also deletes concurrency slots whose lease
-- ended before the cutoff (dead long ago; a key used once would otherwise
-- keep its slot rows forever), up to p_limit per call, then purges runs
-- as before.
ALTER FUNCTION swf.purge_finished(timestamptz, int, bigint) RENAME TO _purge_runs;
CREATE FUNCTION swf.purge_finished(p_before timestamptz, p_limit int, p_epoch bigint)
RETURNS uuid[]
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET lock_timeout = '5s'
AS $$
BEGIN
    IF p_before IS NOT NULL AND p_limit >= 1 THEN
        PERFORM swf.assert_epoch(p_epoch);
        DELETE FROM swf.key_slots ks
         WHERE (ks.key, ks.slot) IN (SELECT s.key, s.slot FROM swf.key_slots s
                                      WHERE s.lease_until < p_before
                                      LIMIT p_limit
                                        FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN swf._purge_runs(p_before, p_limit, p_epoch);
END $$;
