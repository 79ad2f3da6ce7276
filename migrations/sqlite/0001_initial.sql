-- Switchyard config store. One global config version, bumped by every
-- mutation; each row records the version of its last change (its ETag).

CREATE TABLE meta (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    config_version INTEGER NOT NULL
);
INSERT INTO meta (id, config_version) VALUES (1, 0);

CREATE TABLE upstreams (
    name                       TEXT PRIMARY KEY,
    strategy                   TEXT NOT NULL,
    connect_timeout_ms         INTEGER NOT NULL,
    response_header_timeout_ms INTEGER NOT NULL,
    -- The route that created this upstream inline (deleted with it), or NULL.
    owner_route                TEXT,
    version                    INTEGER NOT NULL
);

CREATE TABLE backends (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    upstream TEXT NOT NULL REFERENCES upstreams (name) ON DELETE CASCADE,
    url      TEXT NOT NULL,
    weight   INTEGER NOT NULL,
    version  INTEGER NOT NULL,
    UNIQUE (upstream, url)
);

CREATE TABLE routes (
    name         TEXT PRIMARY KEY,
    path         TEXT NOT NULL,
    methods      TEXT NOT NULL, -- JSON array of method names
    hosts        TEXT NOT NULL, -- JSON array of host names
    strip_prefix INTEGER NOT NULL,
    upstream     TEXT NOT NULL REFERENCES upstreams (name) ON DELETE RESTRICT,
    version      INTEGER NOT NULL
);
CREATE INDEX routes_upstream ON routes (upstream);
