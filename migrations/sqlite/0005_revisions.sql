-- Revision history: one row per committed change, written in the change's
-- own transaction (see control-plane/src/store/revisions.rs).
--
-- `revisions` is what the API shows (pruned to --revision-retention);
-- `revision_data` is how the config at each version is rebuilt: a whole
-- document every so often (a checkpoint), otherwise the new state of the
-- routes and upstreams the change touched (a delta). Data rows go only
-- once no kept revision needs them.
CREATE TABLE revisions (
    version    INTEGER PRIMARY KEY,
    at_unix_ms INTEGER NOT NULL,
    source     TEXT NOT NULL,    -- api, import, bootstrap, rollback
    endpoint   TEXT NOT NULL,    -- e.g. "PATCH /admin/upstreams/{name}/backends/{id}"
    client     TEXT,             -- the admin client's address
    comment    TEXT,             -- X-Change-Comment
    summary    TEXT NOT NULL     -- JSON: routes and upstreams added/changed/removed
);

CREATE TABLE revision_data (
    version    INTEGER PRIMARY KEY,
    checkpoint TEXT,             -- the whole config document (JSON), or NULL
    delta      TEXT              -- JSON {"routes": {name: route|null}, "upstreams": {...}}
);
