-- Migration 19: two helpers of every submit and every completion keep
-- their plans.
--
-- swf._run_output (a finished run's output, computed as its last step
-- completes) and swf._deferred_wakes (the queues a transaction woke, read
-- before it commits) were SQL-language functions. PostgreSQL inlines only
-- single-expression SQL functions; these two, with FROM clauses, were parsed,
-- analysed and planned again on every statement that called them. In a
-- one-run submit and a one-task completion (`pgbench` of the three calls,
-- one client), that was 15% of the completion's time. As PL/pgSQL they keep
-- a cached plan per connection. Same results; _run_output plans without
-- sequential scans, as migration 17's statements do, so that a plan cached
-- while swf.steps is still small stays an index lookup by run.

CREATE OR REPLACE FUNCTION swf._run_output(p_run_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
BEGIN
    RETURN (SELECT coalesce(jsonb_object_agg(st.step_id, st.output), '{}')
              FROM swf.steps st
             WHERE st.run_id = p_run_id
               AND NOT EXISTS (SELECT 1 FROM swf.deps dp
                                WHERE dp.run_id = st.run_id AND dp.dep_id = st.step_id));
END $$;

CREATE OR REPLACE FUNCTION swf._deferred_wakes() RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text := current_setting('swf.wake', true);
BEGIN
    IF v_wake IS NULL OR v_wake = '' THEN
        RETURN '{}';
    END IF;
    RETURN ARRAY(SELECT DISTINCT q FROM unnest(string_to_array(v_wake, ',')) AS q);
END $$;
