-- Migration 20: the drill journal records partition drills
-- (`swf drill partition`): from_region is the primary's region (it does
-- not move), to_region the region cut off.
ALTER TABLE swf.drills DROP CONSTRAINT drills_kind_check;
ALTER TABLE swf.drills ADD CONSTRAINT drills_kind_check
    CHECK (kind IN ('switchover', 'failover', 'partition'));
