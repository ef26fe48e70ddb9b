-- Migration 16: the status document's steps carry their `input` (the step's
-- own input from the workflow, null when it has none), which the dashboard
-- shows next to each step's output.
--
-- The function is patched by a checked text replace, as migration 15 did:
-- the migration fails, changing nothing, if the text is not the one expected.
DO $$
DECLARE
    v_from text := '''error'', st.error, ''index'', st.map_index,';
    v_def text := pg_get_functiondef('swf._run_status_doc(uuid)'::regprocedure);
BEGIN
    IF position(v_from IN v_def) = 0 THEN
        RAISE EXCEPTION 'migration 16: swf._run_status_doc does not contain: %', v_from;
    END IF;
    EXECUTE replace(v_def, v_from, v_from || ' ''input'', st.input,');
END $$;
