-- How many routes and upstreams the deltas since the last checkpoint hold,
-- this revision's included (0 for a checkpoint). A whole config written
-- keeps a delta of what it changed, which may be many: the checkpoint rule
-- counts them, not only revisions (control-plane/src/store/revisions.rs).
-- Rows from before count 0.
ALTER TABLE revision_data ADD COLUMN weight INTEGER NOT NULL DEFAULT 0;
