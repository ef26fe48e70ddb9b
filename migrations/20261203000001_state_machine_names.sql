-- The engine's state machine, in one place, and names that agree.
--
-- 20261128000001_engine.sql is left as it was applied (databases that ran it
-- keep its checksum); this migration renames and re-documents without
-- changing what any transition does. A database holding running work
-- upgrades in place: no table changes, and queued pgmq messages stay valid.
--
-- Names
-- -----
-- A function or procedure without a leading underscore is an entry point:
-- the store calls it, from the `Store` method of the same name
-- (`Store::submit_runs` -> `swf.submit_runs`, `Store::claim_tasks` ->
-- `swf.claim_tasks`, ...). Two store methods call more than one:
-- `Store::finish_tasks` calls `swf.complete_tasks` and `swf.fail_tasks` in one
-- statement, and `Store::run_document` reads `swf.run_status` or
-- `swf.run_lineage`. `swf.assert_epoch` is called by entry points and, inline,
-- by `Store::heartbeat`.
-- A name with a leading underscore is internal: only other functions call it.
-- A write that returns a consistency token is a procedure (it must COMMIT
-- before reading the WAL position); it wraps the function holding the
-- transition, named as the procedure with a leading underscore:
--   procedure swf.submit_runs  wraps  swf._submit_runs  (was swf.start_runs)
--   procedure swf.cancel_run   wraps  swf._cancel_run   (was swf.cancel, swf.cancel_run)
-- and `swf.ensure_queue` (one queue, called while enqueueing) becomes
-- `swf._ensure_queue`, next to the new entry point `swf.ensure_queues`, which
-- creates an executor's queues in one round trip and carries the epoch.
--
-- State machine
-- -------------
-- run (swf.runs.status):
--   running -> completed   the last step completed (complete_tasks); output =
--                          the object of its leaf steps' outputs
--   running -> failed      a step failed for good (fail_tasks, or claim_tasks
--                          finding its last attempt abandoned)
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
--   started -> queued      fail_tasks with attempts left (the message becomes
--                          visible after backoff base * 2^(attempt-1), capped);
--                          release_tasks (a stopping executor gives the
--                          attempt back: visible at once, `released` + 1, so
--                          it does not use up max_attempts)
--   started -> started     re-claim: claim_tasks read the message again after
--                          its visibility timeout expired (the executor was
--                          lost): the old attempt is abandoned, attempt + 1
--   started -> failed      fail_tasks with attempts exhausted, or a re-claim
--                          finding the abandoned attempt was the last one;
--                          the run fails
--   created | queued | started -> cancelled
--                          the run was cancelled or failed (_stop_run)
--   "Attempts used" is attempts - released, bounded by max_attempts (CHECK).
--
-- task attempt (swf.attempts.outcome), one row per claim:
--   running -> completed   complete_tasks
--   running -> failed      fail_tasks (handler error)
--   running -> timed_out   fail_tasks (the handler ran past its timeout)
--   running -> abandoned   re-claimed after its visibility timeout expired,
--                          released by a stopping executor, or its run ended
--                          while it ran (_stop_run)
--   Only the step's current attempt (steps.attempts) of a started step of a
--   running run may complete or fail it; anything else is answered `stale`.
--
-- pgmq message (one per step in the step's queue mq, id in steps.msg_id,
-- kept across attempts):
--   sent       created -> queued: pgmq.send_batch, visible at once, and
--              NOTIFY swf_<mq> wakes pollers
--   read       claim_tasks: pgmq.read with a 60 s visibility timeout, then
--              set_vt to min(step timeout, lease) + margin for each claimed
--              message (invisible while its attempt runs)
--   vt extended  extend_tasks: set_vt again while a long attempt runs
--   vt reset   fail_tasks with attempts left: set_vt to now + backoff;
--              release_tasks: set_vt to now (and NOTIFY); claim_tasks
--              skipping a step locked by a concurrent transition: set_vt now
--   visible again on vt expiry: the next read is a re-claim (see above)
--   deleted    the step completed, failed for good or was cancelled, or a
--              read found it orphaned (its step gone, not current, or its
--              run not running). Messages are deleted, never archived: the
--              history lives in swf.attempts.
--
-- Locks are taken run before step everywhere; claim_tasks, which starts from
-- the message, takes step and run locks with SKIP LOCKED instead of waiting.

-- Internal functions keep their bodies; the procedures and the one caller of
-- a renamed function are redefined below with only the called name changed.
ALTER FUNCTION swf.start_runs(jsonb, bigint) RENAME TO _submit_runs;
ALTER FUNCTION swf.cancel_run(uuid, bigint) RENAME TO _cancel_run;
ALTER FUNCTION swf.ensure_queue(text) RENAME TO _ensure_queue;
DROP PROCEDURE swf.cancel(uuid, bigint, text, text);

CREATE OR REPLACE FUNCTION swf._enqueue_many(p_runs uuid[], p_steps text[], p_mq text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    IF coalesce(cardinality(p_runs), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM swf._ensure_queue(p_mq);
    SELECT array_agg(id ORDER BY id) INTO v_ids
      FROM pgmq.send_batch(p_mq,
             ARRAY(SELECT jsonb_build_object('run_id', u.r, 'step_id', u.s)
                     FROM unnest(p_runs, p_steps) WITH ORDINALITY AS u(r, s, o) ORDER BY u.o)) AS id;
    UPDATE swf.steps st SET status = 'queued', msg_id = u.id
      FROM unnest(p_runs, p_steps, v_ids) AS u(r, s, id)
     WHERE st.run_id = u.r AND st.step_id = u.s;
    PERFORM pg_notify('swf_' || p_mq, '');
END $$;

-- Creates the pgmq queues p_mqs (idempotent). A database of an older epoch
-- than p_epoch refuses, before creating any.
CREATE FUNCTION swf.ensure_queues(p_mqs text[], p_epoch bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_mq text;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    FOREACH v_mq IN ARRAY coalesce(p_mqs, '{}') LOOP
        PERFORM swf._ensure_queue(v_mq);
    END LOOP;
END $$;

CREATE OR REPLACE PROCEDURE swf.submit_runs(INOUT p_runs jsonb, INOUT p_epoch bigint,
                                            INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    p_runs := swf._submit_runs(p_runs, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
END $$;

CREATE PROCEDURE swf.cancel_run(INOUT p_run_id uuid, INOUT p_epoch bigint,
                                INOUT p_status text DEFAULT NULL, INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    p_status := swf._cancel_run(p_run_id, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
END $$;
