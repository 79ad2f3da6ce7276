//! Revision history: every committed change leaves one revision, written in
//! the change's own transaction (so a `kill -9` never leaves a change
//! without its revision, nor a revision without its change).
//!
//! A revision is its metadata (`revisions`: time, source, endpoint, client,
//! comment, summary) and the means to rebuild the config at its version
//! (`revision_data`): the whole document (a *checkpoint*, written for the
//! first revision of a database or after a gap), or a *delta*: the new
//! state of the routes and upstreams the change touched, in the export
//! format. A change of one backend's weight stores one upstream, whatever
//! the size of the config; a whole config written (`PUT`, a rollback)
//! stores the routes and upstreams it changed, or the whole config when
//! that is as many as a checkpoint falls due after. The config at version
//! `v` is the newest checkpoint at or before `v` with the deltas after it
//! applied in order. So that there are never
//! many deltas to apply, a revision also gets a checkpoint every
//! [`CHECKPOINT_EVERY`] revisions, or every [`CHECKPOINT_SHARE`]th of the
//! config's size in revisions if that is more, or once the deltas since
//! the last one hold that many routes and upstreams (their `weight`)
//! ([`Checkpoint::Due`]); that one is added after its change, off the
//! change's path.
//!
//! Pruning keeps the newest `retention` revisions; data rows go once no
//! kept revision needs them (the deltas between the oldest kept revision
//! and the checkpoint before it remain, invisible).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::AnyConnection;

use super::{StoreError, Touched};
use crate::view::ConfigView;

/// A checkpoint at most this often (in revisions)...
pub const CHECKPOINT_EVERY: u64 = 64;
/// ...and, for a large config, only after 1/N of its routes and upstreams
/// in revisions, or in the deltas' entries, whichever comes first (an API
/// change's delta holds about one of them, a whole config written as many
/// as it changed): rebuilding a version then reads about 1 + 1/N
/// checkpoints' worth of JSON, while a large config is not written whole
/// every 64 changes (at 100,000 routes a checkpoint is ~17 MB and costs
/// the change that writes it about a second; a route change's delta is
/// ~150 bytes).
pub const CHECKPOINT_SHARE: u64 = 8;

/// Default of `--revision-retention`.
pub const DEFAULT_RETENTION: u64 = 1000;

/// Longest `X-Change-Comment`, in characters.
pub const MAX_COMMENT_CHARS: usize = 256;

/// What made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A resource endpoint of the admin API.
    Api,
    /// `PUT /admin/config`.
    Import,
    /// `--bootstrap` on an empty database.
    Bootstrap,
    /// `POST /admin/revisions/{version}/rollback`.
    Rollback,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Import => "import",
            Source::Bootstrap => "bootstrap",
            Source::Rollback => "rollback",
        }
    }

    fn parse(s: &str) -> Result<Source, StoreError> {
        Ok(match s {
            "api" => Source::Api,
            "import" => Source::Import,
            "bootstrap" => Source::Bootstrap,
            "rollback" => Source::Rollback,
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown revision source {other:?}"
                )));
            }
        })
    }
}

/// Who made a change, how and why: recorded with its revision.
#[derive(Debug, Clone)]
pub struct ChangeMeta {
    pub source: Source,
    /// Method and route template, e.g. `PATCH /admin/upstreams/{name}`.
    pub endpoint: String,
    /// The admin client's address.
    pub client: Option<String>,
    /// The operator's `X-Change-Comment`.
    pub comment: Option<String>,
}

impl ChangeMeta {
    /// A change not made over the admin API (`--bootstrap`, tests).
    pub fn internal(source: Source, endpoint: &str) -> ChangeMeta {
        ChangeMeta {
            source,
            endpoint: endpoint.to_string(),
            client: None,
            comment: None,
        }
    }
}

/// Names added, changed and removed, each sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Changes {
    fn len(&self) -> usize {
        self.added.len() + self.changed.len() + self.removed.len()
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Every name in it.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.added.iter().chain(&self.changed).chain(&self.removed)
    }
}

/// What a change did, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub routes: Changes,
    pub upstreams: Changes,
}

impl Summary {
    /// How many routes and upstreams it names.
    pub fn len(&self) -> usize {
        self.routes.len() + self.upstreams.len()
    }

    /// Nothing changed: the change is a no-op.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.upstreams.is_empty()
    }

    /// The routes and upstreams it names, to patch the live snapshot
    /// with; `None` beyond [`MAX_PATCHED_NAMES`] (compile the whole config).
    pub fn touched(&self) -> Option<Touched> {
        let routes: Vec<String> = self.routes.names().cloned().collect();
        let upstreams: Vec<String> = self.upstreams.names().cloned().collect();
        (routes.len() + upstreams.len() <= MAX_PATCHED_NAMES)
            .then_some(Touched { routes, upstreams })
    }
}

/// The state of some routes and upstreams in the export format (`null`:
/// absent), by name. A whole document is the state of all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub routes: BTreeMap<String, Option<Value>>,
    pub upstreams: BTreeMap<String, Option<Value>>,
}

impl Resources {
    /// Every route and upstream of an export.
    pub fn of_export(view: &ConfigView) -> Resources {
        let value = serde_json::to_value(view).expect("a config view serialises");
        Resources::of_document(value)
    }

    /// The routes and upstreams of an export named in `names`, as
    /// [`Resources::of_export`] has them; the rest are not serialised. A
    /// name the export does not have is left out, which [`summary`] and
    /// [`delta`] read as absent, as they do `None` (so the import of a
    /// large config into an empty one builds no entry for "before").
    pub fn of_export_named(view: &ConfigView, names: &Touched) -> Resources {
        fn pick<T: Serialize>(
            items: &[T],
            name: impl Fn(&T) -> &str,
            wanted: &[String],
        ) -> BTreeMap<String, Option<Value>> {
            let wanted: HashSet<&str> = wanted.iter().map(String::as_str).collect();
            items
                .iter()
                .filter(|item| wanted.contains(name(item)))
                .map(|item| {
                    let value = serde_json::to_value(item).expect("a config item serialises");
                    (name(item).to_string(), Some(value))
                })
                .collect()
        }
        Resources {
            routes: pick(&view.routes, |r| &r.name, &names.routes),
            upstreams: pick(&view.upstreams, |u| &u.upstream.name, &names.upstreams),
        }
    }

    /// Every route and upstream of a document in the `/admin/config` format
    /// (its items moved, not copied: at 100,000 routes a copy was a tenth
    /// of a second, twice in each `PUT /admin/config`).
    pub fn of_document(mut doc: Value) -> Resources {
        let mut named = |list: &str| -> BTreeMap<String, Option<Value>> {
            let Some(Value::Array(items)) = doc.get_mut(list).map(Value::take) else {
                return BTreeMap::new();
            };
            items
                .into_iter()
                .filter_map(|item| {
                    let name = item["name"].as_str()?.to_string();
                    Some((name, Some(item)))
                })
                .collect()
        };
        Resources {
            routes: named("routes"),
            upstreams: named("upstreams"),
        }
    }

    /// The `/admin/config` document of a whole state at `version`.
    pub fn document(&self, version: u64) -> Value {
        let list = |map: &BTreeMap<String, Option<Value>>| -> Vec<Value> {
            map.values().flatten().cloned().collect()
        };
        serde_json::json!({
            "version": version,
            "upstreams": list(&self.upstreams),
            "routes": list(&self.routes),
        })
    }

    /// The RFC 6902 JSON Patch from this whole state's document to
    /// `other`'s (their `version`s left out: every change bumps it).
    pub fn patch_to(&self, other: &Resources) -> json_patch::Patch {
        let doc = |state: &Resources| {
            let mut doc = state.document(0);
            if let Some(members) = doc.as_object_mut() {
                members.remove("version");
            }
            doc
        };
        json_patch::diff(&doc(self), &doc(other))
    }

    /// Put `delta`'s entries in force (a `null` entry removes).
    fn apply(&mut self, delta: Resources) {
        for (name, state) in delta.routes {
            self.routes.insert(name, state);
        }
        for (name, state) in delta.upstreams {
            self.upstreams.insert(name, state);
        }
        self.routes.retain(|_, s| s.is_some());
        self.upstreams.retain(|_, s| s.is_some());
    }
}

fn changes(
    before: &BTreeMap<String, Option<Value>>,
    after: &BTreeMap<String, Option<Value>>,
) -> Changes {
    let mut c = Changes::default();
    let absent = None;
    for name in before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
    {
        let was = before.get(name).unwrap_or(&absent);
        let is = after.get(name).unwrap_or(&absent);
        match (was, is) {
            (None, Some(_)) => c.added.push(name.clone()),
            (Some(_), None) => c.removed.push(name.clone()),
            (Some(a), Some(b)) if a != b => c.changed.push(name.clone()),
            _ => {}
        }
    }
    for list in [&mut c.added, &mut c.changed, &mut c.removed] {
        list.sort();
    }
    c
}

/// What changed from `before` to `after` (states of the same names, or
/// two whole states).
pub fn summary(before: &Resources, after: &Resources) -> Summary {
    Summary {
        routes: changes(&before.routes, &after.routes),
        upstreams: changes(&before.upstreams, &after.upstreams),
    }
}

/// The entries of `after` that differ from `before`.
pub fn delta(after: &Resources, summary: &Summary) -> Resources {
    let pick = |map: &BTreeMap<String, Option<Value>>, c: &Changes| {
        c.names()
            .map(|n| (n.clone(), map.get(n).cloned().flatten()))
            .collect()
    };
    Resources {
        routes: pick(&after.routes, &summary.routes),
        upstreams: pick(&after.upstreams, &summary.upstreams),
    }
}

/// How a revision's config is kept.
#[derive(Debug)]
pub enum RevisionData {
    /// The whole config document, as JSON text.
    Checkpoint(String),
    Delta(Resources),
}

/// A revision as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RevisionView {
    pub version: u64,
    pub at_unix_ms: u64,
    pub source: Source,
    pub endpoint: String,
    pub client: Option<String>,
    pub comment: Option<String>,
    pub summary: Summary,
}

#[derive(sqlx::FromRow)]
struct RevisionRow {
    version: i64,
    at_unix_ms: i64,
    source: String,
    endpoint: String,
    client: Option<String>,
    comment: Option<String>,
    summary: String,
}

impl TryFrom<RevisionRow> for RevisionView {
    type Error = StoreError;

    fn try_from(row: RevisionRow) -> Result<Self, StoreError> {
        Ok(RevisionView {
            version: row.version as u64,
            at_unix_ms: row.at_unix_ms as u64,
            source: Source::parse(&row.source)?,
            endpoint: row.endpoint,
            client: row.client,
            comment: row.comment,
            summary: serde_json::from_str(&row.summary)
                .map_err(|e| StoreError::Corrupt(format!("bad revision summary: {e}")))?,
        })
    }
}

const COLUMNS: &str = "version, at_unix_ms, source, endpoint, client, comment, summary";

/// Whether the revision at a version carries the whole config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// Its delta is enough.
    No,
    /// One is due ([`CHECKPOINT_EVERY`] revisions, at least `resources` /
    /// [`CHECKPOINT_SHARE`], since the last): the delta is stored now and
    /// the whole config added after the change ([`add_checkpoint`]), off
    /// its path.
    Due,
    /// Nothing to rebuild it from otherwise: the first revision of the
    /// database, or the first after a gap; or its delta alone would hold
    /// as many entries as a checkpoint falls due after (a whole config
    /// written with that many changes), so the whole config is stored
    /// instead.
    Required,
}

/// What the revision at `version`, whose delta holds `entries` routes and
/// upstreams, of a config of `resources` of them must store (see
/// [`Checkpoint`]), and its weight: the entries of the deltas since the
/// last checkpoint, its own included (what [`record`] keeps with it).
pub async fn checkpoint(
    conn: &mut AnyConnection,
    version: u64,
    resources: usize,
    entries: usize,
) -> Result<(Checkpoint, u64), StoreError> {
    let last: Option<(i64,)> = sqlx::query_as(
        "SELECT version FROM revision_data WHERE checkpoint IS NOT NULL ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    // The weight the revision before carries on (none after a checkpoint).
    let previous: Option<(i64,)> = sqlx::query_as(
        "SELECT CASE WHEN checkpoint IS NULL THEN weight ELSE 0 END FROM revision_data WHERE version = $1",
    )
    .bind(version as i64 - 1)
    .fetch_optional(&mut *conn)
    .await?;
    let every = CHECKPOINT_EVERY.max(resources as u64 / CHECKPOINT_SHARE);
    let entries = entries as u64;
    Ok(match (last, previous) {
        (Some(_), Some(_)) if entries >= every => (Checkpoint::Required, 0),
        (Some((c,)), Some((carried,))) => {
            let weight = carried.max(0) as u64 + entries;
            if version - c as u64 >= every || weight >= every {
                (Checkpoint::Due, weight)
            } else {
                (Checkpoint::No, weight)
            }
        }
        _ => (Checkpoint::Required, 0),
    })
}

/// Add `doc`, the whole config at `version`, to that revision's data
/// (which has its delta). Whether it was added: not when the revision's
/// data is gone (pruned) or already has one.
pub async fn add_checkpoint(
    conn: &mut AnyConnection,
    version: u64,
    doc: String,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE revision_data SET checkpoint = $1 WHERE version = $2 AND checkpoint IS NULL",
    )
    .bind(doc)
    .bind(version as i64)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Record the revision at `version` with its `weight` ([`checkpoint`]),
/// and prune to the newest `retention`.
pub async fn record(
    conn: &mut AnyConnection,
    version: u64,
    meta: &ChangeMeta,
    summary: &Summary,
    data: RevisionData,
    weight: u64,
    retention: u64,
) -> Result<(), StoreError> {
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    sqlx::query(
        "INSERT INTO revisions (version, at_unix_ms, source, endpoint, client, comment, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(version as i64)
    .bind(at)
    .bind(meta.source.as_str())
    .bind(&meta.endpoint)
    .bind(&meta.client)
    .bind(&meta.comment)
    .bind(serde_json::to_string(summary).expect("a summary serialises"))
    .execute(&mut *conn)
    .await?;
    let (checkpoint, delta) = match data {
        RevisionData::Checkpoint(doc) => (Some(doc), None),
        RevisionData::Delta(d) => (
            None,
            Some(serde_json::to_string(&d).expect("a delta serialises")),
        ),
    };
    sqlx::query(
        "INSERT INTO revision_data (version, checkpoint, delta, weight) VALUES ($1, $2, $3, $4)",
    )
    .bind(version as i64)
    .bind(checkpoint)
    .bind(delta)
    .bind(weight as i64)
    .execute(&mut *conn)
    .await?;
    let keep_from = version.saturating_sub(retention.max(1) - 1) as i64;
    sqlx::query("DELETE FROM revisions WHERE version < $1")
        .bind(keep_from)
        .execute(&mut *conn)
        .await?;
    // The data the oldest kept revision is rebuilt from starts at the
    // newest checkpoint at or before it.
    sqlx::query(
        "DELETE FROM revision_data WHERE version < (
             SELECT MAX(version) FROM revision_data
             WHERE checkpoint IS NOT NULL AND version <= (SELECT MIN(version) FROM revisions))",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Beyond this many names, catching up or writing a whole config compiles
/// the whole config rather than patching each.
const MAX_PATCHED_NAMES: usize = 256;

/// The routes and upstreams the revisions after `from` up to `to` changed
/// (the change feed another gateway sharing the database reads), or
/// `None` when the whole config must be read instead: one of those
/// revisions is no longer kept, or they changed more than
/// [`MAX_PATCHED_NAMES`] things.
pub async fn touched_between(
    conn: &mut AnyConnection,
    from: u64,
    to: u64,
) -> Result<Option<Touched>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT summary FROM revisions WHERE version > $1 AND version <= $2 ORDER BY version",
    )
    .bind(from as i64)
    .bind(to as i64)
    .fetch_all(&mut *conn)
    .await?;
    if rows.len() as u64 != to.saturating_sub(from) {
        return Ok(None);
    }
    let (mut routes, mut upstreams) = (BTreeSet::new(), BTreeSet::new());
    for (raw,) in rows {
        let summary: Summary = serde_json::from_str(&raw)
            .map_err(|e| StoreError::Corrupt(format!("bad revision summary: {e}")))?;
        routes.extend(summary.routes.names().cloned());
        upstreams.extend(summary.upstreams.names().cloned());
        if routes.len() + upstreams.len() > MAX_PATCHED_NAMES {
            return Ok(None);
        }
    }
    Ok(Some(Touched {
        routes: routes.into_iter().collect(),
        upstreams: upstreams.into_iter().collect(),
    }))
}

/// Revisions newest first: at most `limit`, older than `before` if given.
pub async fn list(
    conn: &mut AnyConnection,
    limit: u32,
    before: Option<u64>,
) -> Result<Vec<RevisionView>, StoreError> {
    let rows: Vec<RevisionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM revisions WHERE version < $1 ORDER BY version DESC LIMIT $2"
    ))
    .bind(before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64))
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(RevisionView::try_from).collect()
}

/// The kept revision at `version`.
pub async fn get(
    conn: &mut AnyConnection,
    version: u64,
) -> Result<Option<RevisionView>, StoreError> {
    let Ok(v) = i64::try_from(version) else {
        return Ok(None);
    };
    let row: Option<RevisionRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM revisions WHERE version = $1"
    ))
    .bind(v)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(RevisionView::try_from).transpose()
}

/// The whole config at a kept revision's `version`, or `None` when that
/// revision is not kept.
pub async fn state_at(
    conn: &mut AnyConnection,
    version: u64,
) -> Result<Option<Resources>, StoreError> {
    if get(conn, version).await?.is_none() {
        return Ok(None);
    }
    let v = version as i64;
    let checkpoint: Option<(i64, String)> = sqlx::query_as(
        "SELECT version, checkpoint FROM revision_data
         WHERE checkpoint IS NOT NULL AND version <= $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(v)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((from, doc)) = checkpoint else {
        return Err(StoreError::Corrupt(format!(
            "no checkpoint at or before revision {version}"
        )));
    };
    let doc: Value = serde_json::from_str(&doc)
        .map_err(|e| StoreError::Corrupt(format!("bad revision checkpoint {from}: {e}")))?;
    let mut state = Resources::of_document(doc);
    let deltas: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT version, delta FROM revision_data WHERE version > $1 AND version <= $2 ORDER BY version",
    )
    .bind(from)
    .bind(v)
    .fetch_all(&mut *conn)
    .await?;
    if deltas.len() as i64 != v - from {
        return Err(StoreError::Corrupt(format!(
            "revision data between {from} and {version} is incomplete"
        )));
    }
    for (at, delta) in deltas {
        let delta =
            delta.ok_or_else(|| StoreError::Corrupt(format!("revision {at} has no delta")))?;
        let delta: Resources = serde_json::from_str(&delta)
            .map_err(|e| StoreError::Corrupt(format!("bad revision delta {at}: {e}")))?;
        state.apply(delta);
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(routes: &[(&str, i64)], upstreams: &[(&str, i64)]) -> Resources {
        let map = |items: &[(&str, i64)]| {
            items
                .iter()
                .map(|(n, x)| (n.to_string(), Some(serde_json::json!({"name": n, "x": x}))))
                .collect()
        };
        Resources {
            routes: map(routes),
            upstreams: map(upstreams),
        }
    }

    /// A summary names what was added, changed and removed; the delta
    /// carries just those, and applying it to the state before gives the
    /// state after.
    #[test]
    fn a_delta_takes_the_state_before_to_the_state_after() {
        let before = state(&[("a", 1), ("b", 1)], &[("u", 1), ("v", 1)]);
        let after = state(&[("b", 2), ("c", 1)], &[("u", 1), ("v", 3)]);
        let s = summary(&before, &after);
        assert_eq!(s.routes.added, ["c"]);
        assert_eq!(s.routes.changed, ["b"]);
        assert_eq!(s.routes.removed, ["a"]);
        assert_eq!(s.upstreams.changed, ["v"]);
        assert!(s.upstreams.added.is_empty() && s.upstreams.removed.is_empty());
        let d = delta(&after, &s);
        assert_eq!(d.routes.len(), 3);
        assert_eq!(d.upstreams.len(), 1);
        let mut rebuilt = before.clone();
        rebuilt.apply(d);
        assert_eq!(rebuilt, after);
        assert!(summary(&after, &after).is_empty());
    }

    /// A summary is patched in up to `MAX_PATCHED_NAMES` names, routes
    /// and upstreams together, every kind of change counted.
    #[test]
    fn a_summary_is_patched_up_to_its_limit() {
        let names = |prefix: &str, n: usize| -> Vec<String> {
            (0..n).map(|i| format!("{prefix}{i}")).collect()
        };
        let summary = |routes: usize, upstreams: usize| Summary {
            routes: Changes {
                added: names("a", routes / 2),
                changed: vec![],
                removed: names("r", routes - routes / 2),
            },
            upstreams: Changes {
                added: vec![],
                changed: names("u", upstreams),
                removed: vec![],
            },
        };
        let touched = summary(200, MAX_PATCHED_NAMES - 200).touched().unwrap();
        assert_eq!(touched.routes.len(), 200);
        assert!(touched.routes.contains(&"r0".to_string()));
        assert_eq!(touched.upstreams, names("u", MAX_PATCHED_NAMES - 200));
        assert!(summary(200, MAX_PATCHED_NAMES - 199).touched().is_none());
        assert!(summary(MAX_PATCHED_NAMES + 1, 0).touched().is_none());
    }

    /// A document and its state go both ways.
    #[test]
    fn documents_and_states_round_trip() {
        let s = state(&[("r", 1)], &[("u", 2)]);
        let doc = s.document(7);
        assert_eq!(doc["version"], 7);
        assert_eq!(Resources::of_document(doc), s);
    }
}
