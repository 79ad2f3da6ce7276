-- Route policies: the JSON of a route's policies (auth with token hashes
-- only, IP rules, rate limit, CORS, header edits, redirect; '{}' means
-- none), a per-route response timeout, and routes without an upstream (a
-- route that only redirects).
--
-- SQLite cannot drop NOT NULL from a column, so the routes table is
-- rebuilt: a new table with the same columns, keys and checks (upstream
-- now NULLable, still a foreign key to upstreams ON DELETE RESTRICT), the
-- rows copied, the old table dropped, the new one renamed, and its index
-- made again. Nothing references routes, so dropping it breaks no key.
CREATE TABLE routes_new (
    name           TEXT PRIMARY KEY,
    path           TEXT NOT NULL,
    methods        TEXT NOT NULL, -- JSON array of method names
    hosts          TEXT NOT NULL, -- JSON array of host names
    strip_prefix   INTEGER NOT NULL,
    -- NULL only for a route that redirects (its policies say where).
    upstream       TEXT REFERENCES upstreams (name) ON DELETE RESTRICT,
    version        INTEGER NOT NULL,
    preserve_host  INTEGER NOT NULL DEFAULT 0,
    max_body_bytes INTEGER,
    timeout_ms     INTEGER,
    policies       TEXT NOT NULL DEFAULT '{}'
);

INSERT INTO routes_new (name, path, methods, hosts, strip_prefix, upstream, version,
                        preserve_host, max_body_bytes)
SELECT name, path, methods, hosts, strip_prefix, upstream, version, preserve_host, max_body_bytes
FROM routes;

DROP TABLE routes;
ALTER TABLE routes_new RENAME TO routes;
CREATE INDEX routes_upstream ON routes (upstream);
