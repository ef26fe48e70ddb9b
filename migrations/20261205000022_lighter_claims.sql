-- Migration 22: lighter claims (issue 12: one key, limit 50, ran at
-- 0.42-0.50x the unkeyed burn-down; a key's claims run one after the other
-- under its lock, so what a claim costs until its transaction ends is the
-- key's pace).
--
-- 1. An executor's claim commits without waiting for its WAL flush.
--    Nothing acknowledged depends on a claim being durable. (A claim that
--    sets messages apart for the one-message path, which may fail a step or
--    a run for good, goes back to a synchronous commit there.) A claim lost in
--    a crash is a claim that never happened: its attempt's report is
--    refused as stale and the task is claimed again (at least once, as
--    after an expired lease). A report commits synchronously, and its
--    flush covers every WAL record before it, the claim of its attempt
--    included: once an outcome is acknowledged, the claim it completes is
--    durable. Streaming replicas get only flushed WAL, so no replica sees a
--    claim the primary could lose. Submits (with the claim of the tasks
--    they make ready) stay synchronous: a submit is acknowledged to a user.
--
-- 2. A claim updates its messages in place (HOT). A claim and a lease
--    extension move a message's vt; pgmq indexes vt (q_<mq>_vt_idx), so
--    each such update wrote a new entry into every index of the queue
--    (the message id, the claim order, the key order, vt), and the claims'
--    index scans then stepped over the dead ones. No statement of the
--    engine reads a queue by vt alone (the claims read the claim and key
--    orders, and filter on vt; pgmq's read goes by message id), so the
--    index goes, and queue tables keep 30% of each page free (fillfactor
--    70) for the new versions to stay on their page. pgmq's functions work
--    as before.

CREATE OR REPLACE FUNCTION swf.claim_tasks_reusing(p_handlers text, p_ended text[], p_mqs text[],
                                        p_qty int, p_node_id text, p_region text,
                                        p_pool text, p_lease_ms int, p_margin_ms int,
                                        p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint, concurrency_key text)
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    -- Transaction-local, and kept past this function's own SET clauses:
    -- the claim's commit (its statement's end) does not wait for the flush.
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM set_config('swf.claim_handlers', coalesce(p_handlers, ''), true);
    PERFORM set_config('swf.key_ended', coalesce(array_remove(p_ended, NULL), '{}')::text,
                       true);
    PERFORM set_config('swf.key_claimed', '', true);
    -- The claim's rows are all made before the first is projected (a
    -- PL/pgSQL set-returning function fills its result first), so the
    -- flag is final here; the scalar subquery stays a key lookup.
    RETURN QUERY
    SELECT c.run_id, c.step_id, c.attempt, c.handler, c.timeout_ms, c.input, c.msg_id,
           CASE WHEN current_setting('swf.key_claimed', true) = 'on' THEN
               (SELECT st.concurrency_key FROM swf.steps st
                 WHERE st.run_id = c.run_id AND st.step_id = c.step_id) END
      FROM swf.claim_tasks(p_mqs, p_qty, p_node_id, p_region, p_pool, p_lease_ms,
                           p_margin_ms, p_epoch) c;
    PERFORM set_config('swf.key_ended', '', true);
END $$;

-- As in 20261204000015; the messages a claim sets apart go one by one
-- through swf._claim_message, which may fail a step or a run for good: a
-- claim that has any commits synchronously (see 1 above).
CREATE OR REPLACE FUNCTION swf._claim_leftovers(p_mq text, p_ids bigint[], p_qty int, p_key text,
                                     p_slots int[], p_node_id text, p_region text,
                                     p_pool text, p_lease_ms int, p_margin_ms int,
                                     p_epoch bigint)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    -- This path can end a step or a run (attempts exhausted, a dead run's
    -- message): such a transaction waits for its flush, like any other.
    IF cardinality(p_ids) > 0 THEN
        PERFORM set_config('synchronous_commit', 'on', true);
    END IF;
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

-- The storage of queue p_mq: no vt index, room on each page (above).
CREATE FUNCTION swf._queue_storage(p_mq text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS pgmq.%I', 'q_' || p_mq || '_vt_idx');
    EXECUTE format('ALTER TABLE pgmq.%I SET (fillfactor = 70)', 'q_' || p_mq);
END $$;

-- As in 20261203000007, with that storage.
CREATE OR REPLACE FUNCTION swf._ensure_queue(p_mq text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = p_mq) THEN
        PERFORM pg_advisory_xact_lock(6005346003322226005);
        IF NOT EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = p_mq) THEN
            PERFORM pgmq.create(p_mq);
            PERFORM swf._queue_statements(p_mq);
            PERFORM swf._queue_storage(p_mq);
        END IF;
    END IF;
END $$;

-- As in 20261203000007, with that storage.
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
        PERFORM swf._queue_storage(v_mq);
    END LOOP;
END $$;

-- As in 20261203000007: a queue made outside the engine (pgmq.create
-- directly) gets its statements at its first use, and now that storage too.
CREATE OR REPLACE FUNCTION swf._queue_fn(p_kind text, p_mq text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_name text := format('swf.%I', p_kind || '@' || p_mq);
BEGIN
    IF to_regproc(v_name) IS NULL THEN
        PERFORM pg_advisory_xact_lock(6005346003322226005);
        IF to_regproc(v_name) IS NULL THEN
            PERFORM swf._queue_statements(p_mq);
            PERFORM swf._queue_storage(p_mq);
        END IF;
    END IF;
    RETURN v_name;
END $$;

SELECT swf._queue_storage(queue_name) FROM pgmq.meta;
