-- Per-route Host forwarding and body limit; per-upstream body idle timeout.
ALTER TABLE routes ADD COLUMN preserve_host INTEGER NOT NULL DEFAULT 0;
ALTER TABLE routes ADD COLUMN max_body_bytes INTEGER;
ALTER TABLE upstreams ADD COLUMN body_idle_timeout_ms INTEGER NOT NULL DEFAULT 60000;
