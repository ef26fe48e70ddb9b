-- Migration 21: a node reuses the concurrency slots of its own tasks whose
-- handlers have ended (issue 12: one key, limit 50, ran at 0.28x the
-- unkeyed burn-down).
--
-- A keyed task held its slot from its claim until its completion committed
-- (a slot is live while its step is `started` in that attempt). Between
-- the handler's end and that commit no handler runs in the slot, yet no
-- claim could take it: with one key, every slot went through claim,
-- handler, report batch, COMMIT, the queue's wake-up and the next claim
-- before it could be used again, one trip at a time.
--
-- Now a claim may name attempts of the claiming node whose handlers have
-- ended and whose outcomes are on their way to the database; their slots
-- count as free to that claim. The limit still bounds the handlers of a
-- key running at once, cluster-wide: a named attempt runs no handler, and
-- a slot taken this way belongs to the new task (a late or refused report
-- of the old attempt does not give it back; if the old attempt runs again,
-- it claims a slot of its own). Other claims still see such a slot live
-- until the report commits.
--
--   swf.claim_tasks_reusing(p_handlers, p_ended, <swf.claim_tasks' args>)
--     as swf.claim_tasks_for (p_handlers NULL: any handler), where
--     p_ended holds those attempts as 'run_id:attempt:step_id'; each
--     claimed task comes back with its concurrency key (NULL: none), so
--     the node knows which ended attempts to name next.
--
-- The named attempts reach swf._key_free through the transaction-local
-- setting swf.key_ended (as the handler list reaches the claim through
-- swf.claim_handlers); NULL names are dropped (a NULL would make every
-- comparison unknown, and so every slot free). swf._key_free sets
-- swf.key_claimed, so the wrapper looks the keys up only after a claim
-- that visited a key. The lookup reads the steps as of the wrapper's
-- statement: a step submitted between that and the claim comes back
-- without its key, and its slot is then not reused (it waits for the
-- report, as before). Claims that do not name attempts (other entry
-- points, nodes of the previous version) behave as before.

CREATE OR REPLACE FUNCTION swf._key_free(p_key text, p_limit int) RETURNS int[]
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_ended text[] := coalesce(nullif(current_setting('swf.key_ended', true), ''), '{}')::text[];
    v_live int[];
    v_free int[];
BEGIN
    PERFORM set_config('swf.key_claimed', 'on', true);
    v_live := ARRAY(SELECT ks.slot FROM swf.key_slots ks
                     WHERE ks.key = p_key AND ks.lease_until > clock_timestamp()
                       AND NOT coalesce((ks.run_id::text || ':' || ks.attempt || ':' || ks.step_id)
                                        = ANY (v_ended), false)
                       AND EXISTS (SELECT 1 FROM swf.steps st
                                    WHERE st.run_id = ks.run_id AND st.step_id = ks.step_id
                                      AND st.status = 'started' AND st.attempts = ks.attempt));
    v_free := ARRAY(SELECT n FROM generate_series(1, p_limit) AS n
                     WHERE n <> ALL (v_live) ORDER BY n);
    RETURN v_free[1 : greatest(p_limit - cardinality(v_live), 0)];
END $$;

CREATE FUNCTION swf.claim_tasks_reusing(p_handlers text, p_ended text[], p_mqs text[],
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
