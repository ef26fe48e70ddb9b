-- What a task's message carries, and the order claims take messages in
-- (DESIGN 10.2, 10.4): its ready time, its priority and its handler. Each
-- queue's statements are remade here once for all three.
--
-- 1. Durable delays: a run's `run_at` and a step's `delay_ms` (DESIGN 10.2).
--
-- A task waits for its ready time as a pgmq message that is not visible
-- yet (its vt is the ready time), so it holds no executor slot, survives
-- restarts and failovers like any message, and is claimed by the usual
-- claim once visible (executors find it at their next poll, within
-- executor.poll_interval_ms; nothing wakes them at that moment).
--   runs.run_at      stored as given (the column came in 20261203000005);
--                    the run's root steps get it as their ready_at.
--   steps.delay_ms   new; the step's message becomes visible delay_ms
--                    after the step is queued, i.e. after its last
--                    dependency completed (a root step: after submit, or
--                    after run_at when that is later).
--   steps.ready_at   set, for a step that waited, to the time its message
--                    became visible.
-- swf._submit_runs stores both; each queue's enqueue statement
-- (swf."enqueue@<queue>", remade here for every queue) reads them from the
-- step rows it marks queued. Steps without either are queued as before.
--
-- 2. Priorities (DESIGN 10.2): higher is claimed first within a queue.
--
-- A run's `priority` and each step's (default: the run's), -100..100,
-- default 0, are stored (the columns came in 20261203000005). A task's
-- message carries its step's priority as "p" when it is not 0, and each
-- queue's claim takes the visible messages in order of that priority, then
-- of age (msg_id), through an index of each queue table on the same
-- expression, so the order costs no sort however long the queue is, and
-- hands the claimed tasks out in that order.
-- swf.msg_priority is that expression (IMMUTABLE, so it can be indexed).
-- Each queue's index on that order is made with its statements.
--
-- 3. A pool claims only tasks whose handler its node runs.
--
-- Any pool polling a queue used to claim any of its tasks, so a task for
-- `http:<name>` or `command:<name>` (or a library handler) could go to a
-- node without that handler and fail there ("not registered"). A task's
-- message now names its handler as "h" unless it is a built-in (which
-- every node runs), and a claim made with the claiming node's handler
-- list (swf.claim_tasks_for; the submit-and-claim path through p_claim's
-- "handlers") leaves the messages of other handlers in the queue for the
-- nodes that run them. The list travels in a transaction-local setting,
-- swf.claim_handlers: "," followed by the names, comma-separated. A claim
-- without it (nodes of the previous version) claims any task, as before,
-- and messages queued before this migration carry no "h".

ALTER TABLE swf.steps ADD COLUMN delay_ms bigint NOT NULL DEFAULT 0;

CREATE FUNCTION swf.msg_priority(p_message jsonb) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce((p_message->>'p')::int, 0)
$$;

CREATE FUNCTION swf._claims_handler(p_handler text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('swf.claim_handlers', true), '') = ''
        OR p_handler = ANY (string_to_array(current_setting('swf.claim_handlers', true), ','))
$$;

CREATE FUNCTION swf.claim_tasks_for(p_handlers text, p_mqs text[], p_qty int, p_node_id text,
                                    p_region text, p_pool text, p_lease_ms int,
                                    p_margin_ms int, p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('swf.claim_handlers', p_handlers, true);
    RETURN QUERY SELECT * FROM swf.claim_tasks(p_mqs, p_qty, p_node_id, p_region, p_pool,
                                               p_lease_ms, p_margin_ms, p_epoch);
END $$;

-- Each queue's statements: the claim in order of priority then age,
-- leaving messages of handlers the claimer does not run; the enqueue
-- setting each message's visibility to its step's ready time and naming
-- its priority and (non-built-in) handler; and the queue's order index.
CREATE OR REPLACE FUNCTION swf._queue_statements(p_mq text) RETURNS void
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
        SELECT q.msg_id, (q.message->>'run_id')::uuid AS run_id, q.message->>'step_id' AS step_id,
               swf.msg_priority(q.message) AS prio
          FROM pgmq.%2$I q
         WHERE q.vt <= clock_timestamp()
           AND (q.message->>'h' IS NULL OR swf._claims_handler(q.message->>'h'))
         ORDER BY swf.msg_priority(q.message) DESC, q.msg_id
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
      FROM m LEFT JOIN up ON up.msg_id = m.msg_id
     ORDER BY m.prio DESC, m.msg_id;
END $b$
$f$, 'claim@' || p_mq, 'q_' || p_mq);

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
    -- The claim's order: priority, then age.
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON pgmq.%I (swf.msg_priority(message) DESC, msg_id)',
                   'q_' || p_mq || '_prio', 'q_' || p_mq);
END $$;



SELECT swf._queue_statements(queue_name) FROM pgmq.meta;

-- As in 20261128000001 (start_runs, renamed in 20261203000001), storing
-- run_at, delay_ms and the priorities.
CREATE OR REPLACE FUNCTION swf._submit_runs(p_runs jsonb, p_epoch bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_created uuid[];
    q record;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    WITH ins AS (
        INSERT INTO swf.runs (run_id, goal, input, idempotency_key, decomposer,
                              submitted_by, submitted_region, remaining_steps, run_at,
                              priority)
        SELECT (r->>'run_id')::uuid, r->>'goal', r->'input', r->>'idempotency_key',
               r->>'decomposer', r->>'submitted_by', r->>'submitted_region',
               jsonb_array_length(r->'steps'), (r->>'run_at')::timestamptz,
               coalesce((r->>'priority')::int, 0)
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
                               ready_at, priority)
        SELECT (r.r->>'run_id')::uuid, x.id, x.ord::int, x.handler, x.queue, x.region, x.mq,
               coalesce(x.depends_on, '{}'), x.input, x.max_attempts, x.timeout_ms,
               coalesce(cardinality(x.depends_on), 0), greatest(coalesce(x.delay_ms, 0), 0),
               CASE WHEN coalesce(cardinality(x.depends_on), 0) = 0
                    THEN (r.r->>'run_at')::timestamptz END,
               coalesce(x.priority, 0)
          FROM jsonb_array_elements(p_runs) AS r(r),
               ROWS FROM (jsonb_to_recordset(r.r->'steps')
                   AS (id text, handler text, queue text, region text, mq text, depends_on text[],
                       input jsonb, max_attempts int, timeout_ms int, delay_ms bigint,
                       priority int))
               WITH ORDINALITY AS x(id, handler, queue, region, mq, depends_on, input,
                                    max_attempts, timeout_ms, delay_ms, priority, ord)
         WHERE (r.r->>'run_id')::uuid = ANY (v_created);

        INSERT INTO swf.deps (run_id, step_id, dep_id)
        SELECT (r.r->>'run_id')::uuid, x.id, d
          FROM jsonb_array_elements(p_runs) AS r(r),
               jsonb_to_recordset(r.r->'steps') AS x(id text, depends_on text[]),
               unnest(coalesce(x.depends_on, '{}')) AS d
         WHERE (r.r->>'run_id')::uuid = ANY (v_created);

        FOR q IN SELECT st.mq, array_agg(st.run_id ORDER BY st.run_id, st.ordinal) AS runs,
                        array_agg(st.step_id ORDER BY st.run_id, st.ordinal) AS steps
                   FROM swf.steps st
                  WHERE st.run_id = ANY (v_created) AND st.remaining_deps = 0
                  GROUP BY st.mq LOOP
            PERFORM swf._enqueue_many(q.runs, q.steps, q.mq);
        END LOOP;
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
