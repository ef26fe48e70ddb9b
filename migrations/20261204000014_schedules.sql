-- Cron schedules (DESIGN 10.3): each tick starts exactly one run.
--
-- A schedule is a row: its 5-field UTC cron expression, the workflow each
-- tick submits, whether it is paused, and next_run_at, the tick it waits
-- for. Every client node looks for due schedules (next_run_at <= now) on
-- the primary about once a second and, for each, submits the workflow
-- with idempotency key `schedule:<name>:<tick>` (the latest tick at or
-- before now: ticks missed while nothing ran collapse into that one),
-- then moves next_run_at past now only if it still holds what it read.
-- However many nodes and regions race for a tick, the key stores one run;
-- across a switchover or failover the same key is computed from the same
-- row, so a tick whose run was stored (acknowledged) is not run twice.
-- runs.schedule (20261203000005) names the schedule; the status document
-- now shows it.

CREATE TABLE swf.schedules (
    name         text PRIMARY KEY,
    cron         text NOT NULL,
    workflow     jsonb NOT NULL,
    paused       boolean NOT NULL DEFAULT false,
    next_run_at  timestamptz NOT NULL,
    last_run_id  uuid,
    last_tick_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON swf.schedules (next_run_at) WHERE NOT paused;

-- The status document gains `schedule`.
ALTER FUNCTION swf.run_status(uuid) RENAME TO _run_status_doc;
CREATE FUNCTION swf.run_status(p_run_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT d || jsonb_build_object('schedule', r.schedule)
      FROM swf._run_status_doc(p_run_id) AS d,
           swf.runs r
     WHERE r.run_id = p_run_id AND d IS NOT NULL
$$;
