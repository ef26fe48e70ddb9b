-- Bulk cancel (POST /v1/workflows/cancel): every run of a status, with an
-- optional exact goal and creation window, cancelled as swf.cancel_run
-- cancels one (swf._cancel_run per run, which leaves a run that is not
-- running as it is).
--
-- Runs are taken in run_id order (the order completion batches lock runs
-- in), 500 per transaction, each batch committed before the next, so a
-- large cancel holds no lock for long; the keyset (run_id > the last one)
-- makes progress whatever each run's answer. A cancel cut short (lost
-- connection, crash) has cancelled whole batches; sent again it cancels
-- the rest. p_cancelled counts the runs this call cancelled, p_ids lists
-- them (the node drops them from its lineage cache).

CREATE PROCEDURE swf.cancel_runs(IN p_status text, IN p_goal text,
                                 IN p_created_after timestamptz,
                                 IN p_created_before timestamptz,
                                 INOUT p_epoch bigint,
                                 INOUT p_cancelled bigint DEFAULT NULL,
                                 INOUT p_ids uuid[] DEFAULT NULL,
                                 INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_last uuid := '00000000-0000-0000-0000-000000000000';
    v_batch uuid[];
    v_id uuid;
BEGIN
    p_cancelled := 0;
    p_ids := '{}';
    PERFORM swf.assert_epoch(p_epoch);
    LOOP
        v_batch := ARRAY(SELECT r.run_id FROM swf.runs r
                          WHERE r.status = p_status AND r.run_id > v_last
                            AND (p_goal IS NULL OR r.goal = p_goal)
                            AND (p_created_after IS NULL OR r.created_at >= p_created_after)
                            AND (p_created_before IS NULL OR r.created_at < p_created_before)
                          ORDER BY r.run_id
                          LIMIT 500);
        EXIT WHEN cardinality(v_batch) = 0;
        FOREACH v_id IN ARRAY v_batch LOOP
            IF swf._cancel_run(v_id, p_epoch) = 'cancelled' THEN
                p_cancelled := p_cancelled + 1;
                p_ids := p_ids || v_id;
            END IF;
        END LOOP;
        v_last := v_batch[cardinality(v_batch)];
        COMMIT;
    END LOOP;
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
END $$;
