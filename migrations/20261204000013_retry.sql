-- Retry of a failed or cancelled run (POST /v1/workflows/{id}/retry).
--
--   failed | cancelled -> running   retry_run
--
-- Every step that did not complete runs again: it goes back to `created`
-- with its dependencies counted again (those that completed count as
-- done), a fresh budget of max_attempts (released := attempts, so the
-- next attempt is numbered after the old ones and lineage keeps every old
-- attempt), and no output, error or times. Completed steps keep their
-- outputs, which their dependents receive as before. The run is running
-- again with its remaining steps counted, and the steps now ready are
-- queued. An executor still finishing an attempt of the run's previous
-- life reports a stale attempt: refused, as any late report is.
-- Any other status is returned as is (the API answers 409 invalid_state).

CREATE FUNCTION swf._retry_run(p_run_id uuid, p_epoch bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    g record;
BEGIN
    PERFORM swf.assert_epoch(p_epoch);
    SELECT r.status INTO v_status FROM swf.runs r WHERE r.run_id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_status NOT IN ('failed', 'cancelled') THEN
        RETURN v_status;
    END IF;
    -- The subquery sees the steps as they were: those reset here were not
    -- completed, and are not after it either.
    UPDATE swf.steps st
       SET status = 'created', msg_id = NULL, released = st.attempts, output = NULL,
           error = NULL, started_at = NULL, completed_at = NULL, ready_at = NULL,
           remaining_deps = (SELECT count(*) FROM swf.steps ds
                              WHERE ds.run_id = st.run_id AND ds.step_id = ANY (st.depends_on)
                                AND ds.status <> 'completed')
     WHERE st.run_id = p_run_id AND st.status <> 'completed';
    UPDATE swf.runs r
       SET status = 'running', completed_at = NULL, error = NULL,
           remaining_steps = (SELECT count(*) FROM swf.steps st
                               WHERE st.run_id = p_run_id AND st.status <> 'completed')
     WHERE r.run_id = p_run_id;
    FOR g IN SELECT st.mq, array_agg(st.run_id ORDER BY st.ordinal) AS runs,
                    array_agg(st.step_id ORDER BY st.ordinal) AS steps
               FROM swf.steps st
              WHERE st.run_id = p_run_id AND st.status = 'created' AND st.remaining_deps = 0
              GROUP BY st.mq LOOP
        PERFORM swf._enqueue_many(g.runs, g.steps, g.mq);
    END LOOP;
    RETURN 'running';
END $$;

CREATE PROCEDURE swf.retry_run(INOUT p_run_id uuid, INOUT p_epoch bigint,
                               INOUT p_status text DEFAULT NULL, INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text[];
BEGIN
    PERFORM set_config('swf.defer_wake', 'on', true);
    p_status := swf._retry_run(p_run_id, p_epoch);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    v_wake := swf._deferred_wakes();
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    PERFORM swf._send_wakes(v_wake);
END $$;
