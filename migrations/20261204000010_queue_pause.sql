-- Pausing and resuming queues; the queues' overview.
--
-- A queue (the name steps and pools use) is held in one or more pgmq
-- queues (mqs): the queue's own and one per region steps are pinned to
-- (model::workflow::mq_name, which may shorten and hash the name). So that
-- the database can tell which queue an mq holds:
--   swf.queue_mqs    mq -> queue, filled at this upgrade from the steps
--                    stored so far, then by each submit whose batch puts
--                    steps on an mq it does not list yet (a lookup per
--                    distinct mq of the batch; one insert the first time).
--   swf.queue_state  keyed by queue (the column was named mq and unused).
--
-- A paused queue's mqs are left out of every claim (swf.claim_tasks, which
-- the submit-and-claim path calls too), so nothing of the queue starts
-- while paused; what is running finishes. Submits still store and queue
-- the queue's tasks. Resuming wakes the pollers of its mqs.

CREATE TABLE swf.queue_mqs (
    mq    text PRIMARY KEY,
    queue text NOT NULL
);
CREATE INDEX queue_mqs_queue ON swf.queue_mqs (queue);

INSERT INTO swf.queue_mqs (mq, queue)
SELECT DISTINCT ON (st.mq) st.mq, st.queue
  FROM swf.steps st
 WHERE st.mq IN (SELECT m.queue_name FROM pgmq.meta m)
ON CONFLICT DO NOTHING;

ALTER TABLE swf.queue_state RENAME COLUMN mq TO queue;

-- The mqs of p_mqs, in order, whose queue is not paused.
CREATE FUNCTION swf._unpaused(p_mqs text[]) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN ARRAY(
        SELECT u.q FROM unnest(p_mqs) WITH ORDINALITY AS u(q, o)
         WHERE NOT EXISTS (SELECT 1 FROM swf.queue_mqs m
                             JOIN swf.queue_state s ON s.queue = m.queue
                            WHERE m.mq = u.q AND s.paused)
         ORDER BY u.o);
END $$;

ALTER FUNCTION swf.claim_tasks(text[], int, text, text, text, int, int, bigint, bigint)
    RENAME TO _claim_tasks;

-- claim_tasks as before, over the mqs whose queue is not paused.
CREATE FUNCTION swf.claim_tasks(p_mqs text[], p_qty int, p_node_id text, p_region text,
                                p_pool text, p_lease_ms int, p_margin_ms int, p_epoch bigint,
                                p_msg_id bigint DEFAULT NULL)
RETURNS TABLE (run_id uuid, step_id text, attempt int, handler text, timeout_ms int,
               input jsonb, msg_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT * FROM swf._claim_tasks(swf._unpaused(p_mqs), p_qty, p_node_id,
                                                p_region, p_pool, p_lease_ms, p_margin_ms,
                                                p_epoch, p_msg_id);
END $$;

-- Notes the queue of each mq of a batch of runs that swf.queue_mqs does
-- not list yet (p_runs as swf._submit_runs takes them).
CREATE FUNCTION swf._note_queues(p_runs jsonb, p_mqs text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(p_mqs) AS q
                WHERE NOT EXISTS (SELECT 1 FROM swf.queue_mqs m WHERE m.mq = q)) THEN
        INSERT INTO swf.queue_mqs (mq, queue)
        SELECT DISTINCT s->>'mq', s->>'queue'
          FROM jsonb_array_elements(p_runs) AS r, jsonb_array_elements(r->'steps') AS s
         WHERE s->>'mq' IS NOT NULL AND s->>'queue' IS NOT NULL
        ON CONFLICT DO NOTHING;
    END IF;
END $$;

-- swf.submit_and_claim: a submit that claimed all it stored wakes nobody;
-- it notes the queues of its batch's mqs (above), and claims with the
-- node's handler list when p_claim carries one (20261204000011).
--
-- swf.submit_and_claim woke every queue its runs were put on, after its
-- COMMIT. When the claim in the same transaction took fewer tasks than it
-- asked for, it found no other visible message in its queues (the claim
-- takes the oldest visible messages, skipping only those other claims
-- hold): the wake-up then made every listening poller, the submitting
-- node's own first, run a claim that found nothing (under 8 concurrent
-- submitters: ~300 empty claims and as many notifying transactions per
-- second). Such queues are no longer woken. The others are, as before,
-- and pollers still poll on their interval, so a message the claim could
-- not see (one locked by a claim that then rolled back) waits at most
-- that long.

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

-- Pauses (p_paused) or resumes queue p_queue; returns whether it was
-- paused before. p_mqs: the queue's mqs the caller can name (its own and
-- one per region of the cluster), noted first, so that a queue paused
-- before its first task holds that task too. Resuming wakes the pollers
-- of the queue's mqs.
CREATE FUNCTION swf.set_queue_paused(p_queue text, p_paused boolean, p_epoch bigint,
                                     p_mqs text[] DEFAULT '{}')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_was boolean;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    INSERT INTO swf.queue_mqs (mq, queue)
    SELECT DISTINCT q, p_queue FROM unnest(p_mqs) AS q
    ON CONFLICT DO NOTHING;
    SELECT s.paused INTO v_was FROM swf.queue_state s WHERE s.queue = p_queue FOR UPDATE;
    INSERT INTO swf.queue_state (queue, paused, updated_at)
    VALUES (p_queue, p_paused, now())
    ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at;
    IF NOT p_paused THEN
        PERFORM pg_notify('swf_' || m.mq, '') FROM swf.queue_mqs m WHERE m.queue = p_queue;
    END IF;
    RETURN coalesce(v_was, false);
END $$;

-- Every queue: tasks ready (depth), claimed and not finished (in_flight),
-- waiting for a ready-at time (delayed), the age of the oldest ready task
-- (NULL when none), and whether it is paused. A queue is listed once it
-- holds tasks or was paused. Counts the queues' tables (live tasks only);
-- reads only, so a replica answers it too.
CREATE FUNCTION swf.queue_overview()
RETURNS TABLE (name text, depth bigint, in_flight bigint, delayed bigint,
               oldest_age_ms bigint, paused boolean)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_mq text;
    v_queue text;
    v_d bigint;
    v_f bigint;
    v_w bigint;
    v_o timestamptz;
    a_queue text[] := '{}';
    a_d bigint[] := '{}';
    a_f bigint[] := '{}';
    a_w bigint[] := '{}';
    a_o timestamptz[] := '{}';
BEGIN
    FOR v_mq, v_queue IN
        SELECT m.queue_name, coalesce(qm.queue, m.queue_name)
          FROM pgmq.meta m LEFT JOIN swf.queue_mqs qm ON qm.mq = m.queue_name
    LOOP
        EXECUTE format(
            'SELECT count(*) FILTER (WHERE vt <= clock_timestamp()),
                    count(*) FILTER (WHERE vt > clock_timestamp() AND read_ct > 0),
                    count(*) FILTER (WHERE vt > clock_timestamp() AND read_ct = 0),
                    min(enqueued_at) FILTER (WHERE vt <= clock_timestamp())
               FROM pgmq.%I', 'q_' || v_mq)
          INTO v_d, v_f, v_w, v_o;
        a_queue := a_queue || v_queue;
        a_d := a_d || v_d;
        a_f := a_f || v_f;
        a_w := a_w || v_w;
        a_o := a_o || v_o;
    END LOOP;
    RETURN QUERY
        SELECT coalesce(a.queue, s.queue),
               coalesce(a.depth, 0)::bigint, coalesce(a.in_flight, 0)::bigint,
               coalesce(a.delayed, 0)::bigint,
               (extract(epoch FROM clock_timestamp() - a.oldest) * 1000)::bigint,
               coalesce(s.paused, false)
          FROM (SELECT u.queue, sum(u.d) AS depth, sum(u.f) AS in_flight,
                       sum(u.w) AS delayed, min(u.o) AS oldest
                  FROM unnest(a_queue, a_d, a_f, a_w, a_o) AS u(queue, d, f, w, o)
                 GROUP BY u.queue) a
          FULL JOIN swf.queue_state s ON s.queue = a.queue
         ORDER BY 1;
END $$;
