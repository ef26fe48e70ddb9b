-- A pool claims only tasks whose handler its node runs.
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

-- As in 20261204000015, each queue's messages naming their handler and its
-- claim leaving those of handlers the claimer does not run.
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

-- As in 20261204000010, the claim made with the node's handler list.
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
        IF p_claim ? 'handlers' THEN
            PERFORM set_config('swf.claim_handlers', p_claim->>'handlers', true);
        END IF;
        BEGIN
            p_claimed := (
                SELECT coalesce(jsonb_agg(jsonb_build_array(c.run_id, c.step_id, c.attempt,
                                                            c.handler, c.timeout_ms, c.input)),
                                '[]')
                  FROM swf.claim_tasks(ARRAY(SELECT jsonb_array_elements_text(p_claim->'mqs')),
                                       (p_claim->>'qty')::int, p_claim->>'node_id',
                                       p_claim->>'region', p_claim->>'pool',
                                       (p_claim->>'lease_ms')::int,
                                       (p_claim->>'margin_ms')::int, p_epoch) AS c);
            v_drained := jsonb_array_length(p_claimed) < (p_claim->>'qty')::int;
        EXCEPTION WHEN OTHERS THEN
            p_claimed := '[]';
        END;
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
