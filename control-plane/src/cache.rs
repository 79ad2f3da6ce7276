//! The last-known-good config of a gateway on a shared database
//! (`--cache-file`): written after each publish, read at start only when
//! the database cannot be reached, so that a node restarted during a
//! database outage still serves the config it last had.
//!
//! The file is the live snapshot's config (with its version and backend
//! ids) as JSON, replaced atomically: written to a temporary file beside
//! it, fsynced, renamed over it, and the directory fsynced. A crash at any
//! point leaves the old file or the new one, never a mix. It holds what
//! the database holds (auth tokens only as hashes), and is made readable
//! by its owner only.
//!
//! Writing it is off the publish path: a task follows the published
//! version and writes the newest snapshot; several publishes in quick
//! succession are one write.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use data_plane::config::GatewayConfig;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Publisher;

/// The format of the file; another is refused rather than misread.
const FORMAT: u32 = 1;

/// Why the cache file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read cache file {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cache file {path} is not a Switchyard cache: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Serialize, Deserialize)]
struct Document {
    format: u32,
    config: GatewayConfig,
}

/// The cache file at one path.
#[derive(Debug, Clone)]
pub struct CacheFile {
    path: PathBuf,
}

impl CacheFile {
    pub fn new(path: impl Into<PathBuf>) -> CacheFile {
        CacheFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached config, or `None` when there is no file.
    pub fn read(&self) -> Result<Option<GatewayConfig>, CacheError> {
        let path = self.path.display().to_string();
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CacheError::Read { path, source }),
        };
        let doc: Document = serde_json::from_slice(&bytes).map_err(|e| CacheError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if doc.format != FORMAT {
            return Err(CacheError::Invalid {
                path,
                reason: format!("format {} (this gateway reads {FORMAT})", doc.format),
            });
        }
        Ok(Some(doc.config))
    }

    /// Replace the file with `config`, atomically.
    pub fn write(&self, config: GatewayConfig) -> io::Result<()> {
        let doc = Document {
            format: FORMAT,
            config,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile_in(dir, &self.path)?;
        let result = (|| {
            serde_json::to_writer(io::BufWriter::new(&mut tmp.1), &doc)
                .map_err(io::Error::other)?;
            tmp.1.flush()?;
            tmp.1.sync_all()?;
            fs::rename(&tmp.0, &self.path)?;
            // The rename itself is durable once the directory is.
            fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp.0);
        }
        result
    }

    /// Keep the file in step with `publisher`'s live snapshot until `stop`
    /// says so (then it is brought up to date once more). Failures are
    /// logged and retried at the next publish.
    pub fn follow(
        self,
        publisher: Arc<Publisher>,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let mut published = publisher.published();
        tokio::spawn(async move {
            let (mut written, mut stopping) = (0, false);
            loop {
                // (A dropped sender stops it too.)
                stopping |= *stop.borrow_and_update();
                let snapshot = publisher.plane().snapshot();
                let version = snapshot.version();
                if version > written {
                    let file = self.clone();
                    let done =
                        tokio::task::spawn_blocking(move || file.write(snapshot.config())).await;
                    match done {
                        Ok(Ok(())) => written = version,
                        Ok(Err(e)) => {
                            tracing::warn!(file = %self.path.display(), error = %e, "cannot write the cache file")
                        }
                        Err(e) => tracing::warn!(error = %e, "cache file writer failed"),
                    }
                }
                if stopping {
                    return;
                }
                tokio::select! {
                    changed = published.changed() => if changed.is_err() { return },
                    changed = stop.changed() => stopping |= changed.is_err(),
                }
            }
        })
    }
}

/// A new file beside `target`, readable by its owner only.
fn tempfile_in(dir: &Path, target: &Path) -> io::Result<(PathBuf, fs::File)> {
    let name = target.file_name().map_or_else(
        || "switchyard-cache".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let path = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    Ok((path.clone(), options.open(&path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_config_reads_back_and_a_stranger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheFile::new(dir.path().join("c.json"));
        assert!(cache.read().unwrap().is_none());
        let config: GatewayConfig = serde_json::from_value(serde_json::json!({
            "version": 7,
            "routes": [],
            "upstreams": [{"name": "u", "strategy": "round_robin",
                           "backends": [{"id": 3, "url": "http://127.0.0.1:9", "weight": 2}]}]
        }))
        .unwrap();
        cache.write(config.clone()).unwrap();
        assert_eq!(cache.read().unwrap(), Some(config.clone()));
        // Written again over itself, and nothing left beside it.
        cache.write(config).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(cache.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(cache.path(), "{\"format\": 9, \"config\": {}}").unwrap();
        let e = cache.read().unwrap_err().to_string();
        assert!(e.contains("is not a Switchyard cache"), "{e}");
        fs::write(cache.path(), "not json").unwrap();
        assert!(matches!(cache.read(), Err(CacheError::Invalid { .. })));
    }
}
