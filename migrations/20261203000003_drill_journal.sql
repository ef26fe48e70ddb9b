-- The drill journal (DESIGN 10.3: `GET /v1/admin/drills`): one row per
-- switchover or failover drill, kept in the cluster's database.
--
-- Where a row is written: on the primary the drill starts from, while that
-- primary still takes writes; once the target is promoted, on the target
-- (upserted: a failover's target may never have received the row). Nothing
-- is written on the old primary after it is fenced: its WAL after the fence
-- point would diverge from the target's.
--
-- At most one drill runs at a time, cluster-wide: the partial unique index
-- `drills_one_running` refuses a second `running` row on the primary, and a
-- drill refused that way answers 409 `drill_in_progress`.
--
-- Drill states (swf.drills.state):
--   running -> ok           finished, and its report passed
--   running -> failed       finished with a report that did not pass, or
--                           aborted while the old primary was still the only
--                           writable database (report: {"error": ...})
--   running -> interrupted  the node that ran it restarted and found it still
--                           running (the process running it was killed)
--   running | interrupted -> recovered
--                           `swf drill recover` left exactly one writable
--                           primary (report.recovery: what it found and did)
-- `phase` is the last phase the drill started; `epoch_before` the epoch it
-- started at, so recovery can tell whether the target's epoch was bumped.
--
-- The engine's state machine is unchanged; it is documented in the header of
-- 20261203000001_state_machine_names.sql. A database of the previous schema
-- upgrades in place: this only adds a table.

CREATE TABLE swf.drills (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('switchover', 'failover')),
    from_region   text NOT NULL,
    to_region     text NOT NULL,
    state         text NOT NULL DEFAULT 'running'
                  CHECK (state IN ('running', 'ok', 'failed', 'interrupted', 'recovered')),
    -- The node running the drill, and its API (recovery asks it whether the
    -- drill is still alive).
    node_id       text NOT NULL,
    node_url      text,
    phase         text NOT NULL,
    epoch_before  bigint NOT NULL CHECK (epoch_before >= 1),
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    report        jsonb
);

-- One running drill at most.
CREATE UNIQUE INDEX drills_one_running ON swf.drills ((true)) WHERE state = 'running';
CREATE INDEX drills_newest ON swf.drills (started_at DESC, id DESC);
