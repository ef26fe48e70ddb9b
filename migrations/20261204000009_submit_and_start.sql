-- A hybrid node starts what it submits.
--
-- A node that is both client and executor used to submit a run, COMMIT,
-- notify, and then, woken by its own notification, claim the task in a
-- second round trip and a second transaction. swf.submit_and_claim does
-- both in one: after storing the runs it claims up to p_claim.qty tasks
-- for the calling node's pool, through swf.claim_tasks (the same claim:
-- oldest visible messages of the pool's queues, SKIP LOCKED, attempts
-- recorded with that node, region and pool, leases set). The node asks
-- for no more than its pool's free slots, and only when it has free
-- slots, so under load submits store and executors claim as before.
--
-- The claim runs in a subtransaction: if it raises (a message the claim
-- refuses, a lock timeout), the runs are still stored, nothing is claimed,
-- and the pool's own claim loop meets the message as before. Queues are
-- woken after COMMIT as by swf.submit_runs (other nodes may have free
-- slots too).
--
-- This node's submits all go through it, with p_claim NULL (claim nothing)
-- when there is no pool to claim for; swf.submit_runs stays for nodes of
-- the previous version.
--
-- p_claim: {"mqs": [..], "qty": n, "node_id", "region", "pool",
--           "lease_ms", "margin_ms"}, or NULL
-- p_claimed: [[run_id, step_id, attempt, handler, timeout_ms, input], ...]

CREATE PROCEDURE swf.submit_and_claim(INOUT p_runs jsonb, INOUT p_epoch bigint,
                                      IN p_mqs text[], IN p_max_queues int,
                                      IN p_claim jsonb,
                                      INOUT p_lsn text DEFAULT NULL,
                                      INOUT p_claimed jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_wake text[];
BEGIN
    PERFORM set_config('swf.defer_wake', 'on', true);
    PERFORM swf.ensure_queues(p_mqs, p_epoch, p_max_queues);
    p_runs := swf._submit_runs(p_runs, p_epoch);
    p_claimed := '[]';
    IF p_claim IS NOT NULL THEN
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
        EXCEPTION WHEN OTHERS THEN
            p_claimed := '[]';
        END;
    END IF;
    p_epoch := (SELECT epoch FROM swf.cluster_state);
    v_wake := swf._deferred_wakes();
    COMMIT;
    p_lsn := pg_current_wal_insert_lsn()::text;
    PERFORM swf._send_wakes(v_wake);
END $$;
