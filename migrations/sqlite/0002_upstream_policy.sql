-- Upstream policy (hash_on, health_check, outlier_detection, retries,
-- fail_open) as one JSON object; '{}' means every default.
ALTER TABLE upstreams ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
