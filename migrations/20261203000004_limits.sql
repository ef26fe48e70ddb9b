-- Limits: a cap on pgmq queues, failures that are not retried, and claims
-- that isolate a message they cannot hand out (issue 10).
--
-- A database of the previous schema upgrades in place: no table changes;
-- queued pgmq messages and running attempts stay valid. Entry points that
-- changed keep answering the previous binary's calls (rolling upgrade):
--   swf.claim_tasks   gains p_msg_id (DEFAULT NULL: the 8-argument call
--                     claims as before); the body is otherwise unchanged
--                     but for reading its messages through a cursor.
--   swf.fail_tasks    items may say "retry": false (absent: true).
--   swf.ensure_queues gains p_max_queues (a 3-argument version; the
--                     2-argument one is that with no cap).
--   swf.submit_runs   a second procedure takes the runs' queues and the cap
--                     (p_mqs, p_max_queues) and creates missing queues under
--                     the cap before storing; the 2-argument one is kept.
-- New entry points: swf.peek_tasks and swf.reject_task (the claim's
-- isolation path). `Store::claim_message` calls swf.claim_tasks with
-- p_msg_id; every other store method calls the entry point of its name.
--
-- Queue cap
-- ---------
-- swf.ensure_queues(p_mqs, p_epoch, p_max_queues) creates the queues of
-- p_mqs that do not exist. With a cap, it refuses (SQLSTATE SWF02, nothing
-- created) when that would take the database past p_max_queues pgmq queues
-- in all. Creators serialise on a transaction advisory lock and count again
-- under it, so concurrent submits cannot pass the cap together. Queues that
-- exist are always usable. Executors create their pools' queues without a
-- cap (the operator configured them); submits pass the node's
-- limits.max_queues.
--
-- Claim isolation
-- ---------------
-- swf.claim_tasks is set-based and has no EXCEPTION block (a subtransaction
-- per message would overflow the subxid cache). When it raises for a reason
-- that belongs to a message (a data error, a size limit such as a step
-- input past jsonb's 256 MiB), the executor falls back, in separate calls:
-- swf.peek_tasks lists the visible messages, swf.claim_tasks(..., p_msg_id)
-- claims each alone, and a message whose claim raises goes to
-- swf.reject_task, which fails its step at once with an error code
-- (input_too_large or claim_failed) and removes the message. So one bad
-- message never blocks its queue.
--
-- Names and calls are as documented in 20261203000001_state_machine_names.sql.
--
-- State machine
-- -------------
-- run (swf.runs.status):
--   running -> completed   the last step completed (complete_tasks); output =
--                          the object of its leaf steps' outputs
--   running -> failed      a step failed for good (fail_tasks, reject_task, or
--                          claim_tasks finding its last attempt abandoned)
--   running -> cancelled   cancel_run
--   Terminal states are final; every other transition below requires the
--   run to be running.
--
-- step (swf.steps.status), one per DAG node:
--   created -> queued      all dependencies completed (at submit for roots):
--                          its task message is sent (_enqueue_many)
--   queued  -> started     claim_tasks read the message: attempt + 1 recorded
--   started -> completed   complete_tasks of the current attempt; dependents
--                          whose dependencies are now all complete get queued
--   started -> queued      fail_tasks with attempts left and retry allowed
--                          (the message becomes visible after backoff base *
--                          2^(attempt-1), capped); release_tasks (a stopping
--                          executor gives the attempt back: visible at once,
--                          `released` + 1, so it does not use up max_attempts)
--   started -> started     re-claim: claim_tasks read the message again after
--                          its visibility timeout expired (the executor was
--                          lost): the old attempt is abandoned, attempt + 1
--   started -> failed      fail_tasks with attempts exhausted or with
--                          "retry": false (output_too_large), or a re-claim
--                          finding the abandoned attempt was the last one;
--                          the run fails
--   queued | started -> failed
--                          reject_task: the task could not be claimed (its
--                          input is too large, or its claim raised); a failed
--                          attempt + 1 records why (when attempts are left);
--                          the run fails
--   created | queued | started -> cancelled
--                          the run was cancelled or failed (_stop_run)
--   "Attempts used" is attempts - released, bounded by max_attempts (CHECK).
--
-- task attempt (swf.attempts.outcome), one row per claim:
--   running -> completed   complete_tasks
--   running -> failed      fail_tasks (handler error, or its output too large)
--   running -> timed_out   fail_tasks (the handler ran past its timeout)
--   running -> abandoned   re-claimed after its visibility timeout expired,
--                          released by a stopping executor, or its run ended
--                          while it ran (_stop_run)
--   (none)  -> failed      reject_task records an attempt that never ran
--   Only the step's current attempt (steps.attempts) of a started step of a
--   running run may complete or fail it; anything else is answered `stale`.
--   An attempt's error is a JSON object with a "message"; errors the engine
--   or executor decide also carry a "code": output_too_large, input_too_large,
--   claim_failed.
--
-- pgmq message (one per step in the step's queue mq, id in steps.msg_id,
-- kept across attempts):
--   sent       created -> queued: pgmq.send_batch, visible at once, and
--              NOTIFY swf_<mq> wakes pollers. Submit creates the queue of
--              every step of its runs first (ensure_queues, under the cap).
--   read       claim_tasks: pgmq.read with a 60 s visibility timeout (or,
--              with p_msg_id, that one message if it is visible), then
--              set_vt to min(step timeout, lease) + margin for each claimed
--              message (invisible while its attempt runs)
--   vt extended  extend_tasks: set_vt again while a long attempt runs or its
--              outcome is being reported
--   vt reset   fail_tasks with attempts left: set_vt to now + backoff;
--              release_tasks: set_vt to now (and NOTIFY); claim_tasks
--              skipping a step locked by a concurrent transition: set_vt now
--   visible again on vt expiry: the next read is a re-claim (see above)
--   deleted    the step completed, failed for good (reject_task included) or
--              was cancelled, or a read found it orphaned (its step gone, not
--              current, or its run not running)
--   archived   reject_task found a message that is not a task of this engine
--              (no run_id/step_id): kept in pgmq's archive for inspection.
--              Every other message is deleted, never archived: the history
--              lives in swf.attempts.
--
-- Locks are taken run before step everywhere; claim_tasks and reject_task,
-- which start from the message, take step and run locks with SKIP LOCKED
-- instead of waiting.

-- Creates the pgmq queues of p_mqs that do not exist; with p_max_queues,
-- refuses (SWF02) rather than take the database past that many queues.
CREATE FUNCTION swf.ensure_queues(p_mqs text[], p_epoch bigint, p_max_queues int)
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
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION swf.ensure_queues(p_mqs text[], p_epoch bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM swf.ensure_queues(p_mqs, p_epoch, NULL::int);
END $$;

-- Submit under the queue cap: the queues of every step of p_runs (p_mqs)
-- exist, or are created within p_max_queues, before the runs are stored;
-- all in the one transaction.
CREATE PROCEDURE swf.submit_runs(INOUT p_runs jsonb, INOUT p_epoch bigint, IN p_mqs text[],
                                 IN p_max_queues int, INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM swf.ensure_queues(p_mqs, p_epoch, p_max_queues);
    p_runs := swf._submit_runs(p_runs, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
END $$;

-- Claims up to p_qty tasks for one executor pool from pgmq queues p_mqs, in
-- order (the pool's region-pinned variant first, then the shared queue).
-- With p_msg_id, p_mqs names one queue and only that message is claimed,
-- if it is visible and nobody holds it (the isolation path).
-- Records the attempt (node, region, pool), sets the message's visibility
-- timeout to min(step timeout, lease) + margin, and returns the handler input
-- {run, step, deps}. A message whose previous claim expired means that
-- executor was lost: its attempt is recorded abandoned and the task runs again
-- with attempt + 1 (or fails the step when attempts are exhausted).
DROP FUNCTION swf.claim_tasks(text[], int, text, text, text, int, int, bigint);
CREATE FUNCTION swf.claim_tasks(p_mqs text[], p_qty int, p_node_id text, p_region text,
                                p_pool text, p_lease_ms int, p_margin_ms int, p_epoch bigint,
                                p_msg_id bigint DEFAULT NULL)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    p_mq text;
    c refcursor;
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
    IF p_msg_id IS NULL THEN
        OPEN c FOR SELECT r.msg_id, r.message FROM pgmq.read(p_mq, 60, p_qty) AS r;
    ELSE
        OPEN c FOR EXECUTE format(
            'WITH one AS (SELECT q.msg_id FROM pgmq.%1$I q
                           WHERE q.msg_id = $1 AND q.vt <= clock_timestamp()
                             FOR UPDATE SKIP LOCKED)
             UPDATE pgmq.%1$I q
                SET vt = clock_timestamp() + interval ''60 seconds'', read_ct = q.read_ct + 1
               FROM one WHERE q.msg_id = one.msg_id
             RETURNING q.msg_id, q.message', 'q_' || p_mq) USING p_msg_id;
    END IF;
    LOOP
        FETCH c INTO m;
        EXIT WHEN NOT FOUND;
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
    CLOSE c;
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

-- The visible messages of p_mqs, up to p_qty per queue, in the order
-- claim_tasks would read them. Reads only: nothing is locked or hidden.
CREATE FUNCTION swf.peek_tasks(p_mqs text[], p_qty int)
RETURNS TABLE (mq text, msg_id bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_mq text;
BEGIN
    FOREACH v_mq IN ARRAY p_mqs LOOP
        RETURN QUERY EXECUTE format(
            'SELECT %L::text, q.msg_id FROM pgmq.%I q
              WHERE q.vt <= clock_timestamp() ORDER BY q.msg_id LIMIT $1', v_mq, 'q_' || v_mq)
            USING p_qty;
    END LOOP;
END $$;

-- Fails the task of message p_msg_id of queue p_mq, whose claim raised
-- (p_detail, the database's message): its step fails at once with error
-- code p_code (input_too_large or claim_failed), recorded as a failed
-- attempt of node p_node_id when the step has attempts left, and the run
-- fails; the message is deleted. Returns what it did:
--   'failed'    the step failed
--   'archived'  the message is not a task of this engine (archived)
--   'deleted'   the message was orphaned (its step gone, not current, or
--               its run not running): deleted, as a claim would
--   'skipped'   the message is gone, claimed meanwhile, or its run or step
--               is locked by a concurrent transition: left as it is
CREATE FUNCTION swf.reject_task(p_mq text, p_msg_id bigint, p_code text, p_detail text,
                                p_node_id text, p_region text, p_pool text, p_epoch bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_msg jsonb;
    v_n bigint;
    v_run uuid;
    v_status text;
    s swf.steps%ROWTYPE;
    v_bytes bigint;
    v_deps bigint;
    v_error jsonb;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    EXECUTE format('SELECT q.message FROM pgmq.%I q
                     WHERE q.msg_id = $1 AND q.vt <= clock_timestamp()
                       FOR UPDATE SKIP LOCKED', 'q_' || p_mq)
       INTO v_msg USING p_msg_id;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n = 0 THEN
        RETURN 'skipped';
    END IF;
    IF jsonb_typeof(v_msg) IS DISTINCT FROM 'object'
       OR jsonb_typeof(v_msg->'step_id') IS DISTINCT FROM 'string'
       OR NOT coalesce(v_msg->>'run_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
                       false) THEN
        PERFORM pgmq.archive(p_mq, p_msg_id);
        RETURN 'archived';
    END IF;
    v_run := (v_msg->>'run_id')::uuid;
    -- Run before step, without waiting (the message is locked already).
    SELECT r.status INTO v_status FROM swf.runs r WHERE r.run_id = v_run FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM swf.runs r WHERE r.run_id = v_run) THEN
            RETURN 'skipped';
        END IF;
        PERFORM pgmq.delete(p_mq, p_msg_id);
        RETURN 'deleted';
    END IF;
    SELECT * INTO s FROM swf.steps st
     WHERE st.run_id = v_run AND st.step_id = v_msg->>'step_id' FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM swf.steps st
                    WHERE st.run_id = v_run AND st.step_id = v_msg->>'step_id') THEN
            RETURN 'skipped';
        END IF;
        PERFORM pgmq.delete(p_mq, p_msg_id);
        RETURN 'deleted';
    END IF;
    IF s.mq IS DISTINCT FROM p_mq OR s.msg_id IS DISTINCT FROM p_msg_id
       OR s.status NOT IN ('queued', 'started') OR v_status <> 'running' THEN
        PERFORM pgmq.delete(p_mq, p_msg_id);
        RETURN 'deleted';
    END IF;
    IF s.status = 'started' THEN
        UPDATE swf.attempts a
           SET outcome = 'abandoned', finished_at = now(),
               error = jsonb_build_object('message',
                   'visibility timeout expired: the executor holding this attempt was lost')
         WHERE a.run_id = s.run_id AND a.step_id = s.step_id
           AND a.attempt = s.attempts AND a.outcome = 'running';
    END IF;
    IF p_code = 'input_too_large' THEN
        SELECT coalesce(sum(octet_length(ds.output::text)), 0), count(*) INTO v_bytes, v_deps
          FROM swf.deps d
          JOIN swf.steps ds ON ds.run_id = d.run_id AND ds.step_id = d.dep_id
         WHERE d.run_id = s.run_id AND d.step_id = s.step_id;
        v_bytes := v_bytes + coalesce(octet_length(s.input::text), 0)
            + coalesce((SELECT octet_length(r.input::text) FROM swf.runs r WHERE r.run_id = s.run_id), 0);
        v_error := jsonb_build_object('code', p_code, 'bytes', v_bytes, 'message', format(
            'the input of step `%s` would be about %s bytes (the run input, the step input and '
            'the outputs of its %s dependencies), more than the database can hold in one value: %s',
            s.step_id, v_bytes, v_deps, p_detail));
    ELSE
        v_error := jsonb_build_object('code', p_code, 'message', format(
            'the task of step `%s` could not be claimed: %s', s.step_id, p_detail));
    END IF;
    IF s.attempts - s.released < s.max_attempts THEN
        UPDATE swf.steps st
           SET attempts = st.attempts + 1, started_at = coalesce(st.started_at, now())
         WHERE st.run_id = s.run_id AND st.step_id = s.step_id;
        INSERT INTO swf.attempts (run_id, step_id, attempt, node_id, region, worker_pool,
                                  started_at, finished_at, outcome, error)
        VALUES (s.run_id, s.step_id, s.attempts + 1, p_node_id, p_region, p_pool,
                clock_timestamp(), clock_timestamp(), 'failed', v_error);
    END IF;
    PERFORM pgmq.delete(p_mq, p_msg_id);
    PERFORM swf._fail_step(s.run_id, s.step_id, v_error);
    RETURN 'failed';
END $$;

-- Records a batch of failed attempts (outcome 'failed' or 'timed_out').
-- With attempts left the task becomes visible again after exponential
-- backoff (base * 2^(attempt-1), capped); otherwise, or when the item says
-- "retry": false (a failure retrying cannot fix), the step and run fail.
-- p_items: [{run_id, step_id, attempt, error, outcome, retry?}]
CREATE OR REPLACE FUNCTION swf.fail_tasks(p_items jsonb, p_epoch bigint, p_backoff_base_ms int,
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
                  AS x(run_id uuid, step_id text, attempt int, error jsonb, outcome text,
                       retry boolean)
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
        IF coalesce(it.retry, true) AND s.attempts - s.released < s.max_attempts THEN
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
