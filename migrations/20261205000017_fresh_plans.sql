-- Migration 17: two statements of the submit path keep index plans on a
-- fresh database.
--
-- PL/pgSQL caches a generic plan per statement and connection. Planned
-- while swf.steps is empty (a new cluster's first submits), these two chose
-- a sequential scan of swf.steps, and the pooled connections kept that plan
-- until the first autoanalyze of the table replaced it, a minute or more
-- later: every submit meanwhile read every step row (29.7 million rows read
-- in the first 12,000 one-step submits of `swf bench --shapes one
-- --concurrency 8`). Both look runs up by id, which the primary keys serve
-- at any size, so their planning now excludes sequential scans.

-- 1. The ready steps of the runs just stored (called by every submit, a
--    retry and a resume).
ALTER FUNCTION swf._start_ready(uuid[]) SET enable_seqscan = off;

-- 2. Whether a step of the submitted runs is still queued after the
--    submit's own claim (submit_and_claim, migration 15): it was a hash join
--    of the runs against every queued step. A procedure that commits cannot
--    carry a SET clause, so the test moves into a function that can.
CREATE FUNCTION swf._left_queued(p_runs jsonb) RETURNS boolean
LANGUAGE plpgsql STABLE SET enable_seqscan = off AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM swf.steps st
                    WHERE st.run_id = ANY (ARRAY(SELECT (r->>'run_id')::uuid
                                                   FROM jsonb_array_elements(p_runs) AS r))
                      AND st.status = 'queued');
END $$;

DO $$
DECLARE
    v_from text := 'NOT EXISTS (SELECT 1 FROM jsonb_array_elements(p_runs) AS r
                                  JOIN swf.steps st ON st.run_id = (r->>''run_id'')::uuid
                                 WHERE st.status = ''queued'');';
    v_def text := pg_get_functiondef(
        'swf.submit_and_claim(jsonb, bigint, text[], int, jsonb, text, jsonb)'::regprocedure);
BEGIN
    IF position(v_from IN v_def) = 0 THEN
        RAISE EXCEPTION 'migration 17: swf.submit_and_claim does not contain: %', v_from;
    END IF;
    EXECUTE replace(v_def, v_from, 'NOT swf._left_queued(p_runs);');
END $$;
