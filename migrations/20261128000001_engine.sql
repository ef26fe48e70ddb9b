-- Engine schema and state transitions of singularity-workflow.
--
-- Every transition is one function call (one round trip from any region).
-- Integrity lives in CHECK constraints, keys and foreign keys; the functions
-- lock in a fixed order (run, then step, then queue message) so concurrent
-- transitions do not deadlock in the common paths.
--
-- State machines (see README "Engine state machine"):
--   run:  running -> completed | failed | cancelled
--   step: created -> queued -> started -> completed
--                     ^          |
--                     +-(retry)--+--> failed (attempts exhausted)
--         any non-terminal -> cancelled (run cancelled or failed elsewhere)
--   attempt: running -> completed | failed | timed_out | abandoned

CREATE SCHEMA IF NOT EXISTS swf;

-- Singleton row: the epoch fences stale primaries and tokens; bumped at every promotion.
CREATE TABLE swf.cluster_state (
    id            boolean PRIMARY KEY DEFAULT true CHECK (id),
    epoch         bigint NOT NULL DEFAULT 1 CHECK (epoch >= 1),
    write_region  text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO swf.cluster_state DEFAULT VALUES;

CREATE TABLE swf.runs (
    run_id           uuid PRIMARY KEY,
    goal             text NOT NULL,
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    input            jsonb,
    output           jsonb,
    error            jsonb,
    idempotency_key  text UNIQUE,
    decomposer       text,
    submitted_by     text,
    submitted_region text,
    remaining_steps  int NOT NULL CHECK (remaining_steps >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    CHECK ((status = 'running') = (completed_at IS NULL))
);
CREATE INDEX runs_by_created ON swf.runs (created_at DESC, run_id DESC);
CREATE INDEX runs_by_status_created ON swf.runs (status, created_at DESC, run_id DESC);

CREATE TABLE swf.steps (
    run_id         uuid NOT NULL REFERENCES swf.runs ON DELETE CASCADE,
    step_id        text NOT NULL,
    ordinal        int NOT NULL,
    handler        text NOT NULL,
    queue          text NOT NULL,
    region         text,
    mq             text NOT NULL CHECK (mq ~ '^[a-z0-9_]{1,47}$'),
    depends_on     text[] NOT NULL DEFAULT '{}',
    input          jsonb,
    max_attempts   int NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    timeout_ms     int NOT NULL CHECK (timeout_ms > 0),
    status         text NOT NULL DEFAULT 'created'
                   CHECK (status IN ('created', 'queued', 'started', 'completed', 'failed', 'cancelled')),
    remaining_deps int NOT NULL CHECK (remaining_deps >= 0),
    attempts       int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Attempts given back by stopping executors; they do not use up max_attempts.
    released       int NOT NULL DEFAULT 0 CHECK (released >= 0),
    msg_id         bigint,
    output         jsonb,
    error          jsonb,
    started_at     timestamptz,
    completed_at   timestamptz,
    PRIMARY KEY (run_id, step_id),
    CHECK (status <> 'queued' OR msg_id IS NOT NULL),
    CHECK (status <> 'started' OR attempts >= 1),
    CHECK (attempts - released <= max_attempts)
);

-- Dependency edges: step_id depends on dep_id. Keyed for "who waits on dep_id?".
CREATE TABLE swf.deps (
    run_id  uuid NOT NULL,
    step_id text NOT NULL,
    dep_id  text NOT NULL,
    PRIMARY KEY (run_id, dep_id, step_id),
    FOREIGN KEY (run_id, step_id) REFERENCES swf.steps ON DELETE CASCADE,
    FOREIGN KEY (run_id, dep_id) REFERENCES swf.steps ON DELETE CASCADE,
    CHECK (step_id <> dep_id)
);

-- One row per execution attempt: the lineage trace.
CREATE TABLE swf.attempts (
    run_id      uuid NOT NULL,
    step_id     text NOT NULL,
    attempt     int NOT NULL CHECK (attempt >= 1),
    node_id     text NOT NULL,
    region      text NOT NULL,
    worker_pool text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    outcome     text NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'completed', 'failed', 'timed_out', 'abandoned')),
    error       jsonb,
    PRIMARY KEY (run_id, step_id, attempt),
    FOREIGN KEY (run_id, step_id) REFERENCES swf.steps ON DELETE CASCADE,
    CHECK ((outcome = 'running') = (finished_at IS NULL))
);

-- Node heartbeats.
CREATE TABLE swf.nodes (
    node_id           text PRIMARY KEY,
    node_type         text NOT NULL CHECK (node_type IN ('hybrid', 'edge', 'worker')),
    roles             text[] NOT NULL,
    region            text NOT NULL,
    api_url           text,
    pools             jsonb NOT NULL DEFAULT '[]',
    version           text NOT NULL,
    started_at        timestamptz NOT NULL,
    last_heartbeat_at timestamptz NOT NULL
);

------------------------------------------------------------------------------
-- Helpers
------------------------------------------------------------------------------

-- Refuses to write to a database whose epoch is older than one the caller has
-- seen (a resurrected old primary). Returns the database's epoch.
CREATE FUNCTION swf.assert_epoch(p_epoch bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_epoch bigint;
BEGIN
    SELECT epoch INTO v_epoch FROM swf.cluster_state;
    IF p_epoch IS NOT NULL AND v_epoch < p_epoch THEN
        RAISE EXCEPTION 'stale primary: database epoch % is older than epoch % seen by this node',
            v_epoch, p_epoch USING ERRCODE = 'SWF01';
    END IF;
    RETURN v_epoch;
END $$;

CREATE FUNCTION swf.ensure_queue(p_mq text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = p_mq) THEN
        PERFORM pgmq.create(p_mq);
    END IF;
END $$;

-- Puts the tasks of steps (p_runs[i], p_steps[i]) on pgmq queue p_mq in one
-- pgmq.send_batch call and wakes that queue's pollers. PostgreSQL folds
-- identical notifications within a transaction, so a batch sends one NOTIFY
-- per queue. pgmq assigns msg_ids from an identity column in insertion
-- order, so the sorted ids pair with the input order.
CREATE FUNCTION swf._enqueue_many(p_runs uuid[], p_steps text[], p_mq text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    IF coalesce(cardinality(p_runs), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM swf.ensure_queue(p_mq);
    SELECT array_agg(id ORDER BY id) INTO v_ids
      FROM pgmq.send_batch(p_mq,
             ARRAY(SELECT jsonb_build_object('run_id', u.r, 'step_id', u.s)
                     FROM unnest(p_runs, p_steps) WITH ORDINALITY AS u(r, s, o) ORDER BY u.o)) AS id;
    UPDATE swf.steps st SET status = 'queued', msg_id = u.id
      FROM unnest(p_runs, p_steps, v_ids) AS u(r, s, id)
     WHERE st.run_id = u.r AND st.step_id = u.s;
    PERFORM pg_notify('swf_' || p_mq, '');
END $$;

-- Ends a run that is still running: marks every unfinished step cancelled,
-- abandons running attempts and removes the run's queued work.
CREATE FUNCTION swf._stop_run(p_run_id uuid, p_status text, p_error jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s record;
BEGIN
    UPDATE swf.runs
       SET status = p_status, error = coalesce(p_error, error), completed_at = now()
     WHERE run_id = p_run_id AND status = 'running';
    FOR s IN
        UPDATE swf.steps SET status = 'cancelled', completed_at = now()
         WHERE run_id = p_run_id AND status IN ('created', 'queued', 'started')
        RETURNING mq, msg_id
    LOOP
        IF s.msg_id IS NOT NULL THEN
            PERFORM pgmq.delete(s.mq, s.msg_id);
        END IF;
    END LOOP;
    UPDATE swf.attempts
       SET outcome = 'abandoned', finished_at = now(),
           error = jsonb_build_object('message', 'run ' || p_status)
     WHERE run_id = p_run_id AND outcome = 'running';
END $$;

-- A step ran out of attempts: the step and its run fail.
CREATE FUNCTION swf._fail_step(p_run_id uuid, p_step_id text, p_error jsonb)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE swf.steps SET status = 'failed', error = p_error, completed_at = now()
     WHERE run_id = p_run_id AND step_id = p_step_id;
    PERFORM swf._stop_run(p_run_id, 'failed',
        jsonb_build_object('step_id', p_step_id, 'error', p_error));
END $$;

------------------------------------------------------------------------------
-- Transitions
------------------------------------------------------------------------------

-- Stores a batch of validated runs: run, steps, edges, root tasks. A run whose
-- idempotency_key exists already is not stored again; its existing run_id
-- comes back with created = false.
-- p_runs: [{run_id, goal, input, idempotency_key, decomposer, submitted_by,
--           submitted_region, steps: [{id, handler, queue, region, mq,
--           depends_on, input, max_attempts, timeout_ms}]}]
CREATE FUNCTION swf.start_runs(p_runs jsonb, p_epoch bigint)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_created uuid[];
    q record;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    WITH ins AS (
        INSERT INTO swf.runs (run_id, goal, input, idempotency_key, decomposer,
                              submitted_by, submitted_region, remaining_steps)
        SELECT (r->>'run_id')::uuid, r->>'goal', r->'input', r->>'idempotency_key',
               r->>'decomposer', r->>'submitted_by', r->>'submitted_region',
               jsonb_array_length(r->'steps')
          FROM jsonb_array_elements(p_runs) WITH ORDINALITY AS x(r, o)
         ORDER BY o
        -- Any conflict: the idempotency key (a client retry) or the run_id
        -- (this node retrying a submit whose first answer was lost).
        ON CONFLICT DO NOTHING
        RETURNING run_id)
    SELECT coalesce(array_agg(run_id), '{}') INTO v_created FROM ins;

    IF cardinality(v_created) > 0 THEN
        INSERT INTO swf.steps (run_id, step_id, ordinal, handler, queue, region, mq, depends_on,
                               input, max_attempts, timeout_ms, remaining_deps)
        SELECT (r.r->>'run_id')::uuid, x.id, x.ord::int, x.handler, x.queue, x.region, x.mq,
               coalesce(x.depends_on, '{}'), x.input, x.max_attempts, x.timeout_ms,
               coalesce(cardinality(x.depends_on), 0)
          FROM jsonb_array_elements(p_runs) AS r(r),
               ROWS FROM (jsonb_to_recordset(r.r->'steps')
                   AS (id text, handler text, queue text, region text, mq text, depends_on text[],
                       input jsonb, max_attempts int, timeout_ms int))
               WITH ORDINALITY AS x(id, handler, queue, region, mq, depends_on, input,
                                    max_attempts, timeout_ms, ord)
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

-- Claims up to p_qty tasks for one executor pool from pgmq queues p_mqs, in order
-- (the pool's region-pinned variant first, then the shared queue).
-- Records the attempt (node, region, pool), sets the message's visibility
-- timeout to min(step timeout, lease) + margin, and returns the handler input
-- {run, step, deps}. A message whose previous claim expired means that
-- executor was lost: its attempt is recorded abandoned and the task runs again
-- with attempt + 1 (or fails the step when attempts are exhausted).
CREATE FUNCTION swf.claim_tasks(p_mqs text[], p_qty int, p_node_id text, p_region text,
                                p_pool text, p_lease_ms int, p_margin_ms int, p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    p_mq text;
    m record;
    s swf.steps%ROWTYPE;
    v_run_status text;
    v_run_input jsonb;
    v_deps jsonb;
    v_vt_ids bigint[];
    v_vt_ms int[];
    v_del bigint[];
    g record;
    c_run uuid[] := '{}';
    c_step text[] := '{}';
    c_attempt int[] := '{}';
    c_input jsonb[] := '{}';
    c_msg bigint[] := '{}';
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    FOREACH p_mq IN ARRAY p_mqs LOOP
    EXIT WHEN p_qty <= 0;
    v_vt_ids := '{}'; v_vt_ms := '{}'; v_del := '{}';
    -- pgmq.read hides the messages for 60 s; each claimed one gets its own
    -- visibility below, set in one pgmq.set_vt call per distinct timeout.
    FOR m IN SELECT * FROM pgmq.read(p_mq, 60, p_qty) LOOP
        -- SKIP LOCKED: a step locked by a concurrent completion or cancel is
        -- left for a later claim rather than waited for (no lock-order cycle).
        SELECT * INTO s FROM swf.steps st
         WHERE st.run_id = (m.message->>'run_id')::uuid AND st.step_id = m.message->>'step_id'
           FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            IF EXISTS (SELECT 1 FROM swf.steps st
                        WHERE st.run_id = (m.message->>'run_id')::uuid
                          AND st.step_id = m.message->>'step_id') THEN
                PERFORM pgmq.set_vt(p_mq, m.msg_id, clock_timestamp());
            ELSE
                v_del := v_del || m.msg_id;
            END IF;
            CONTINUE;
        END IF;
        SELECT r.status, r.input INTO v_run_status, v_run_input FROM swf.runs r WHERE r.run_id = s.run_id;
        IF s.msg_id IS DISTINCT FROM m.msg_id OR s.status NOT IN ('queued', 'started')
           OR v_run_status <> 'running' THEN
            v_del := v_del || m.msg_id;
            CONTINUE;
        END IF;
        IF s.status = 'started' THEN
            UPDATE swf.attempts a
               SET outcome = 'abandoned', finished_at = now(),
                   error = jsonb_build_object('message',
                       'visibility timeout expired: the executor holding this attempt was lost')
             WHERE a.run_id = s.run_id AND a.step_id = s.step_id
               AND a.attempt = s.attempts AND a.outcome = 'running';
            IF s.attempts - s.released >= s.max_attempts THEN
                -- Failing the run locks it; take that lock without waiting
                -- (others lock run before step) or leave the message for later.
                PERFORM 1 FROM swf.runs r WHERE r.run_id = s.run_id FOR UPDATE SKIP LOCKED;
                IF NOT FOUND THEN
                    PERFORM pgmq.set_vt(p_mq, m.msg_id, clock_timestamp());
                    CONTINUE;
                END IF;
                v_del := v_del || m.msg_id;
                PERFORM swf._fail_step(s.run_id, s.step_id, jsonb_build_object(
                    'message', format('attempts exhausted (%s of %s): last attempt abandoned',
                                      s.attempts - s.released, s.max_attempts)));
                CONTINUE;
            END IF;
        END IF;
        v_vt_ids := v_vt_ids || m.msg_id;
        v_vt_ms := v_vt_ms || (least(s.timeout_ms, p_lease_ms) + p_margin_ms);
        UPDATE swf.steps st
           SET status = 'started', attempts = st.attempts + 1,
               started_at = coalesce(st.started_at, now())
         WHERE st.run_id = s.run_id AND st.step_id = s.step_id;
        INSERT INTO swf.attempts (run_id, step_id, attempt, node_id, region, worker_pool, started_at)
        VALUES (s.run_id, s.step_id, s.attempts + 1, p_node_id, p_region, p_pool, clock_timestamp());
        IF cardinality(s.depends_on) = 0 THEN
            v_deps := '{}';
        ELSE
            SELECT coalesce(jsonb_object_agg(d.dep_id, ds.output), '{}') INTO v_deps
              FROM swf.deps d
              JOIN swf.steps ds ON ds.run_id = d.run_id AND ds.step_id = d.dep_id
             WHERE d.run_id = s.run_id AND d.step_id = s.step_id;
        END IF;
        c_run := c_run || s.run_id;
        c_step := c_step || s.step_id;
        c_attempt := c_attempt || (s.attempts + 1);
        c_input := c_input || jsonb_build_object('run', v_run_input, 'step', s.input, 'deps', v_deps);
        c_msg := c_msg || m.msg_id;
        p_qty := p_qty - 1;
    END LOOP;
    FOR g IN SELECT u.ms, array_agg(u.id) AS ids FROM unnest(v_vt_ids, v_vt_ms) AS u(id, ms)
              GROUP BY u.ms LOOP
        PERFORM pgmq.set_vt(p_mq, g.ids, clock_timestamp() + make_interval(secs => g.ms / 1000.0));
    END LOOP;
    IF cardinality(v_del) > 0 THEN
        PERFORM pgmq.delete(p_mq, v_del);
    END IF;
    END LOOP;
    -- Hand out only attempts still current: failing an exhausted step later
    -- in this call may have stopped a run whose other step was claimed.
    RETURN QUERY
        SELECT u.r, u.s, u.a, st.handler, st.timeout_ms, u.i, u.m
          FROM unnest(c_run, c_step, c_attempt, c_input, c_msg) AS u(r, s, a, i, m)
          JOIN swf.steps st ON st.run_id = u.r AND st.step_id = u.s
         WHERE st.status = 'started' AND st.attempts = u.a;
END $$;

-- Finishes a batch of attempts successfully. Each item either completes
-- ('completed') or is refused ('stale': the attempt is not the step's current
-- one, the step is no longer running, or the run ended). Completing a step
-- starts the dependents whose inputs are all done; the last step finishes the
-- run with the object of its leaf steps' outputs.
-- p_items: [{run_id, step_id, attempt, output}]
CREATE FUNCTION swf.complete_tasks(p_items jsonb, p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int, result text, run_status text)
LANGUAGE plpgsql AS $$
DECLARE
    it record;
    s swf.steps%ROWTYPE;
    d record;
    g record;
    v_status text;
    v_del_mq text[] := '{}';
    v_del_id bigint[] := '{}';
    v_rdy_run uuid[] := '{}';
    v_rdy_step text[] := '{}';
    v_rdy_mq text[] := '{}';
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    FOR it IN SELECT * FROM jsonb_to_recordset(p_items)
                  AS x(run_id uuid, step_id text, attempt int, output jsonb)
               ORDER BY x.run_id, x.step_id LOOP
        run_id := it.run_id; step_id := it.step_id; attempt := it.attempt;
        SELECT r.status INTO v_status FROM swf.runs r WHERE r.run_id = it.run_id FOR UPDATE;
        -- Only the current attempt of a started step of a running run completes.
        UPDATE swf.steps st SET status = 'completed', output = it.output, completed_at = now()
         WHERE st.run_id = it.run_id AND st.step_id = it.step_id AND st.status = 'started'
           AND st.attempts = it.attempt AND v_status = 'running'
        RETURNING st.mq, st.msg_id INTO s.mq, s.msg_id;
        IF NOT FOUND THEN
            result := 'stale'; run_status := v_status;
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE swf.attempts a SET outcome = 'completed', finished_at = clock_timestamp()
         WHERE a.run_id = it.run_id AND a.step_id = it.step_id AND a.attempt = it.attempt;
        v_del_mq := v_del_mq || s.mq;
        v_del_id := v_del_id || s.msg_id;
        FOR d IN
            UPDATE swf.steps st SET remaining_deps = st.remaining_deps - 1
              FROM swf.deps dp
             WHERE dp.run_id = it.run_id AND dp.dep_id = it.step_id
               AND st.run_id = dp.run_id AND st.step_id = dp.step_id
            RETURNING st.step_id AS id, st.remaining_deps AS rem, st.mq AS mq
        LOOP
            IF d.rem = 0 THEN
                v_rdy_run := v_rdy_run || it.run_id;
                v_rdy_step := v_rdy_step || d.id;
                v_rdy_mq := v_rdy_mq || d.mq;
            END IF;
        END LOOP;
        -- The last step finishes the run with the object of its leaf outputs
        -- (CASE evaluates the aggregate only then).
        UPDATE swf.runs r
           SET remaining_steps = r.remaining_steps - 1,
               status = CASE WHEN r.remaining_steps = 1 THEN 'completed' ELSE r.status END,
               completed_at = CASE WHEN r.remaining_steps = 1 THEN now() END,
               output = CASE WHEN r.remaining_steps = 1 THEN
                   (SELECT coalesce(jsonb_object_agg(st.step_id, st.output), '{}')
                      FROM swf.steps st
                     WHERE st.run_id = it.run_id
                       AND NOT EXISTS (SELECT 1 FROM swf.deps dp
                                        WHERE dp.run_id = st.run_id AND dp.dep_id = st.step_id))
                   END
         WHERE r.run_id = it.run_id
        RETURNING r.status INTO v_status;
        result := 'completed'; run_status := v_status;
        RETURN NEXT;
    END LOOP;
    -- Queue work once per queue for the whole batch.
    FOR g IN SELECT u.mq, array_agg(u.id) AS ids FROM unnest(v_del_mq, v_del_id) AS u(mq, id)
              GROUP BY u.mq LOOP
        PERFORM pgmq.delete(g.mq, g.ids);
    END LOOP;
    FOR g IN SELECT u.mq, array_agg(u.r ORDER BY u.r, u.s) AS runs, array_agg(u.s ORDER BY u.r, u.s) AS steps
               FROM unnest(v_rdy_run, v_rdy_step, v_rdy_mq) AS u(r, s, mq)
              GROUP BY u.mq LOOP
        PERFORM swf._enqueue_many(g.runs, g.steps, g.mq);
    END LOOP;
END $$;

-- Records a batch of failed attempts (outcome 'failed' or 'timed_out').
-- With attempts left the task becomes visible again after exponential
-- backoff (base * 2^(attempt-1), capped); otherwise the step and run fail.
-- p_items: [{run_id, step_id, attempt, error, outcome}]
CREATE FUNCTION swf.fail_tasks(p_items jsonb, p_epoch bigint, p_backoff_base_ms int,
                               p_backoff_cap_ms int)
RETURNS TABLE (run_id uuid, step_id text, attempt int, result text, run_status text)
LANGUAGE plpgsql AS $$
DECLARE
    it record;
    s swf.steps%ROWTYPE;
    v_status text;
    v_delay bigint;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    FOR it IN SELECT * FROM jsonb_to_recordset(p_items)
                  AS x(run_id uuid, step_id text, attempt int, error jsonb, outcome text)
               ORDER BY x.run_id, x.step_id LOOP
        run_id := it.run_id; step_id := it.step_id; attempt := it.attempt;
        SELECT r.status INTO v_status FROM swf.runs r WHERE r.run_id = it.run_id FOR UPDATE;
        SELECT * INTO s FROM swf.steps st
         WHERE st.run_id = it.run_id AND st.step_id = it.step_id FOR UPDATE;
        IF NOT FOUND OR v_status IS DISTINCT FROM 'running' OR s.status <> 'started'
           OR s.attempts <> it.attempt THEN
            result := 'stale'; run_status := v_status;
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE swf.attempts a
           SET outcome = coalesce(it.outcome, 'failed'), finished_at = clock_timestamp(),
               error = it.error
         WHERE a.run_id = it.run_id AND a.step_id = it.step_id AND a.attempt = it.attempt;
        IF s.attempts - s.released < s.max_attempts THEN
            v_delay := least(p_backoff_cap_ms::bigint,
                             p_backoff_base_ms::bigint * (2::bigint ^ least(s.attempts - 1, 30))::bigint);
            UPDATE swf.steps st SET status = 'queued', error = it.error
             WHERE st.run_id = it.run_id AND st.step_id = it.step_id;
            PERFORM pgmq.set_vt(s.mq, s.msg_id,
                                clock_timestamp() + make_interval(secs => v_delay / 1000.0));
            result := 'retrying';
        ELSE
            PERFORM pgmq.delete(s.mq, s.msg_id);
            PERFORM swf._fail_step(it.run_id, it.step_id, it.error);
            v_status := 'failed';
            result := 'failed';
        END IF;
        run_status := v_status;
        RETURN NEXT;
    END LOOP;
END $$;

-- Extends the visibility timeout of running attempts (a long task's lease).
-- Returns the items that are still current; the others were cancelled,
-- failed elsewhere or re-claimed, and their executors should stop them.
-- p_items: [{run_id, step_id, attempt}]
CREATE FUNCTION swf.extend_tasks(p_items jsonb, p_lease_ms int, p_margin_ms int, p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int)
LANGUAGE plpgsql AS $$
DECLARE
    it record;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    FOR it IN SELECT st.run_id, st.step_id, st.attempts, st.mq, st.msg_id, st.timeout_ms
                FROM jsonb_to_recordset(p_items) AS x(run_id uuid, step_id text, attempt int)
                JOIN swf.steps st ON st.run_id = x.run_id AND st.step_id = x.step_id
                                 AND st.attempts = x.attempt AND st.status = 'started'
               ORDER BY st.run_id, st.step_id LOOP
        PERFORM pgmq.set_vt(it.mq, it.msg_id, clock_timestamp()
            + make_interval(secs => (least(it.timeout_ms, p_lease_ms) + p_margin_ms) / 1000.0));
        run_id := it.run_id; step_id := it.step_id; attempt := it.attempts;
        RETURN NEXT;
    END LOOP;
END $$;

-- Gives back claimed attempts that a stopping executor will not finish: the
-- attempt is recorded abandoned (it does not use up max_attempts) and the
-- task is visible again at once.
-- p_items: [{run_id, step_id, attempt}]
CREATE FUNCTION swf.release_tasks(p_items jsonb, p_epoch bigint)
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
                JOIN swf.runs r ON r.run_id = st.run_id AND r.status = 'running'
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

-- Cancels a run. Returns the run's status afterwards, or NULL when unknown.
CREATE FUNCTION swf.cancel_run(p_run_id uuid, p_epoch bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    SELECT status INTO v_status FROM swf.runs WHERE run_id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_status = 'running' THEN
        PERFORM swf._stop_run(p_run_id, 'cancelled',
                              jsonb_build_object('message', 'cancelled by request'));
        RETURN 'cancelled';
    END IF;
    RETURN v_status;
END $$;

------------------------------------------------------------------------------
-- Client-facing writes that return a consistency token.
--
-- A procedure may COMMIT: it runs the transition, commits, then reads the WAL
-- insert position, which is at or after the end of the commit record. So one
-- round trip yields both the result and a read-your-writes token.
------------------------------------------------------------------------------

CREATE PROCEDURE swf.submit_runs(INOUT p_runs jsonb, INOUT p_epoch bigint,
                                 INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    p_runs := swf.start_runs(p_runs, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
END $$;

CREATE PROCEDURE swf.cancel(INOUT p_run_id uuid, INOUT p_epoch bigint,
                            INOUT p_status text DEFAULT NULL, INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    p_status := swf.cancel_run(p_run_id, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
END $$;

------------------------------------------------------------------------------
-- Reads (one round trip each; JSON is assembled next to the data)
------------------------------------------------------------------------------

CREATE FUNCTION swf._metrics(p_run_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'total_steps', count(*),
        'completed_steps', count(*) FILTER (WHERE st.status = 'completed'),
        'failed_steps', count(*) FILTER (WHERE st.status = 'failed'),
        'total_tasks', count(*) FILTER (WHERE st.status <> 'created' OR st.attempts > 0),
        'completed_tasks', count(*) FILTER (WHERE st.status = 'completed'),
        'failed_tasks', count(*) FILTER (WHERE st.status = 'failed'),
        'total_attempts', coalesce(sum(st.attempts), 0),
        'duration_ms', (SELECT floor(extract(epoch FROM coalesce(r.completed_at, now()) - r.created_at) * 1000)::bigint
                          FROM swf.runs r WHERE r.run_id = p_run_id))
      FROM swf.steps st WHERE st.run_id = p_run_id
$$;

CREATE FUNCTION swf.run_status(p_run_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'run_id', r.run_id, 'goal', r.goal, 'status', r.status, 'input', r.input,
        'output', r.output, 'error', r.error, 'created_at', r.created_at,
        'completed_at', r.completed_at,
        'steps', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'id', st.step_id, 'handler', st.handler, 'queue', st.queue,
                        'region', st.region, 'depends_on', to_jsonb(st.depends_on),
                        'status', st.status, 'attempts', st.attempts, 'output', st.output,
                        'error', st.error, 'started_at', st.started_at,
                        'completed_at', st.completed_at) ORDER BY st.ordinal), '[]')
                    FROM swf.steps st WHERE st.run_id = r.run_id),
        'metrics', swf._metrics(r.run_id))
      FROM swf.runs r WHERE r.run_id = p_run_id
$$;

CREATE FUNCTION swf.run_lineage(p_run_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'run_id', r.run_id, 'goal', r.goal, 'status', r.status,
        'dag', jsonb_build_object('steps',
            (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'id', st.step_id, 'depends_on', to_jsonb(st.depends_on))
                        ORDER BY st.ordinal), '[]')
               FROM swf.steps st WHERE st.run_id = r.run_id)),
        'execution_trace',
            (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'step_id', a.step_id, 'attempt', a.attempt, 'node_id', a.node_id,
                        'region', a.region, 'worker_pool', a.worker_pool,
                        'started_at', a.started_at, 'finished_at', a.finished_at,
                        'outcome', a.outcome, 'error', a.error)
                        ORDER BY a.started_at, a.step_id, a.attempt), '[]')
               FROM swf.attempts a WHERE a.run_id = r.run_id),
        'metrics', swf._metrics(r.run_id))
      FROM swf.runs r WHERE r.run_id = p_run_id
$$;
