-- Migration 22: lighter claims (issue 12: one key, limit 50, ran at
-- 0.42-0.50x the unkeyed burn-down; a key's claims run one after the other
-- under its lock, so what a claim costs until its transaction ends is the
-- key's pace).
--
-- 1. An executor's claim commits without waiting for its WAL flush.
--    Nothing acknowledged depends on a claim being durable. (A claim that
--    sets messages apart for the one-message path, swf._claim_message, which
--    may fail a step or a run for good, commits synchronously.) A claim lost in
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

-- Replaces p_from by p_to in function p_fn's definition (which must hold
-- it), as in 20261204000015: the small edits below to functions of earlier
-- migrations.
CREATE FUNCTION swf._patch_function(p_fn regprocedure, p_from text, p_to text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_def text := pg_get_functiondef(p_fn);
BEGIN
    IF position(p_from IN v_def) = 0 THEN
        RAISE EXCEPTION 'migration 22: % does not contain: %', p_fn, p_from;
    END IF;
    EXECUTE replace(v_def, p_from, p_to);
END $$;

-- 1. The executor's claim: transaction-local, and kept past the function's
-- own SET clauses, so the claim's commit (its statement's end) does not
-- wait for the flush.
SELECT swf._patch_function(
    'swf.claim_tasks_reusing(text, text[], text[], int, text, text, text, int, int, bigint)',
    $p$    PERFORM set_config('swf.claim_handlers', coalesce(p_handlers, ''), true);$p$,
    $p$    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM set_config('swf.claim_handlers', coalesce(p_handlers, ''), true);$p$);

-- The one-message path can end a step or a run for good (attempts
-- exhausted, a dead run's message): a transaction that took it waits for
-- its flush, like any other.
SELECT swf._patch_function(
    'swf._claim_message(text[], int, text, text, text, int, int, bigint, bigint)',
    $p$    PERFORM swf.assert_epoch(p_epoch);
    FOREACH p_mq IN ARRAY p_mqs LOOP$p$,
    $p$    PERFORM set_config('synchronous_commit', 'on', true);
    PERFORM swf.assert_epoch(p_epoch);
    FOREACH p_mq IN ARRAY p_mqs LOOP$p$);

-- 2. The storage of queue p_mq: no vt index, room on each page (above).
CREATE FUNCTION swf._queue_storage(p_mq text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('DROP INDEX IF EXISTS pgmq.%I', 'q_' || p_mq || '_vt_idx');
    EXECUTE format('ALTER TABLE pgmq.%I SET (fillfactor = 70)', 'q_' || p_mq);
END $$;

-- A queue's engine objects (its statements and claim indexes, made with the
-- queue, or at its first use for a queue made by pgmq.create directly)
-- include that storage.
SELECT swf._patch_function(
    'swf._queue_statements(text)',
    $p$WHERE message ? ''k''', 'q_' || p_mq || '_keyed', 'q_' || p_mq);$p$,
    $p$WHERE message ? ''k''', 'q_' || p_mq || '_keyed', 'q_' || p_mq);
    PERFORM swf._queue_storage(p_mq);$p$);

DROP FUNCTION swf._patch_function(regprocedure, text, text);

SELECT swf._queue_storage(queue_name) FROM pgmq.meta;
