-- Migration 18: run controls of many callers in one transaction.
--
-- swf.run_controls applies a batch of cancels, pauses, resumes and signals,
-- each as its single procedure does (swf.cancel_run, swf.set_run_paused,
-- swf.send_signal), and commits once: a node far from the primary sends
-- its callers' controls together, one round trip for all of them.
--
-- p_ops: [{"op": "cancel"|"pause"|"resume"|"signal", "run_id", "name"?,
-- "payload"?}]. Answers, in p_ops' order, what the single procedure
-- answers: the run's status after a cancel, pause or resume, before a
-- signal; null for an unknown run. The runs are locked in run_id order, as
-- every transition locks them, so concurrent batches cannot deadlock.
CREATE PROCEDURE swf.run_controls(INOUT p_ops jsonb, INOUT p_epoch bigint,
                                  INOUT p_lsn text DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text[];
    v_out text[] := '{}';
    o record;
BEGIN
    PERFORM set_config('swf.defer_wake', 'on', true);
    PERFORM swf.assert_epoch(p_epoch);
    FOR o IN SELECT x, i FROM jsonb_array_elements(p_ops) WITH ORDINALITY AS t(x, i)
              ORDER BY (x->>'run_id')::uuid, i LOOP
        v_out[o.i] := CASE o.x->>'op'
            WHEN 'cancel' THEN swf._cancel_run((o.x->>'run_id')::uuid, p_epoch)
            WHEN 'pause' THEN swf._set_run_paused((o.x->>'run_id')::uuid, true, p_epoch)
            WHEN 'resume' THEN swf._set_run_paused((o.x->>'run_id')::uuid, false, p_epoch)
            WHEN 'signal' THEN swf._send_signal((o.x->>'run_id')::uuid, o.x->>'name',
                                                o.x->'payload', p_epoch)
        END;
        IF o.x->>'op' NOT IN ('cancel', 'pause', 'resume', 'signal') THEN
            RAISE EXCEPTION 'run_controls: unknown op %', o.x->>'op';
        END IF;
    END LOOP;
    p_ops := to_jsonb(v_out);
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    v_wake := swf._deferred_wakes();
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    PERFORM swf._send_wakes(v_wake);
END $$;
