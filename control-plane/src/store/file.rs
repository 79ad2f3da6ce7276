//! Where the config database lives: a `sqlite:` URL read into an absolute
//! file path, checks that say in one line why it cannot be opened, and
//! removing the files of a database that a failed start created.
//!
//! SQLite answers most of these cases with the same "unable to open
//! database file" (code 14), whatever the cause; the checks here look at
//! the file system first, so the message names the directory that is
//! missing or not writable. A URL that would open an in-memory (or
//! temporary) database is refused: the gateway promises that every
//! acknowledged change survives a restart, and such a database loses all
//! of them at exit.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

/// Why the database at a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("{url} is not a database URL Switchyard can use: give sqlite://FILE or postgres://…")]
    NotSqlite { url: String },
    #[error("{url} is an in-memory database: every change would be lost at exit")]
    InMemory { url: String },
    #[error("{url} is not a usable database URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot open database {path}: directory {dir} does not exist")]
    NoDirectory { path: String, dir: String },
    #[error("cannot open database {path}: {dir} is not a directory")]
    NotADirectory { path: String, dir: String },
    #[error("cannot open database {path}: it is a directory")]
    IsADirectory { path: String },
    #[error("cannot open database {path}: {what} is not writable: {reason}")]
    NotWritable {
        path: String,
        what: String,
        reason: String,
    },
    #[error("cannot open database {path}: {reason}")]
    Other { path: String, reason: String },
}

impl OpenError {
    /// What the operator can do about it, besides choosing another file.
    pub fn fix(&self) -> Option<&'static str> {
        match self {
            OpenError::NoDirectory { .. } => Some("create it"),
            OpenError::NotADirectory { .. } => Some("correct the path"),
            OpenError::IsADirectory { .. } => Some("name a file in it"),
            OpenError::NotWritable { .. } => Some("let this user write there"),
            OpenError::BadUrl { .. } => Some("correct it"),
            _ => None,
        }
    }
}

/// The database file of a `sqlite:` URL.
#[derive(Debug, Clone)]
pub struct DatabaseFile {
    options: SqliteConnectOptions,
    path: PathBuf,
}

impl DatabaseFile {
    /// Read `url`: `sqlite://FILE` or `sqlite:FILE` (a bare path is taken
    /// too, as sqlx does), with sqlx's query parameters. The path is made
    /// absolute against the current directory.
    pub fn parse(url: &str) -> Result<Self, OpenError> {
        let owned = || url.to_string();
        if let Some((scheme, _)) = url.split_once(':')
            && is_scheme(scheme)
            && !scheme.eq_ignore_ascii_case("sqlite")
        {
            return Err(OpenError::NotSqlite { url: owned() });
        }
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
        let memory = query
            .split('&')
            .any(|p| p.eq_ignore_ascii_case("mode=memory"));
        if file.is_empty() || file == ":memory:" || memory {
            return Err(OpenError::InMemory { url: owned() });
        }
        if file.starts_with("file:") {
            return Err(OpenError::BadUrl {
                url: owned(),
                reason: "SQLite URI file names (file:…) are not supported; give a path".into(),
            });
        }
        let options = SqliteConnectOptions::from_str(url).map_err(|e| OpenError::BadUrl {
            url: owned(),
            reason: e.to_string(),
        })?;
        let path = std::path::absolute(options.get_filename()).map_err(|e| OpenError::BadUrl {
            url: owned(),
            reason: e.to_string(),
        })?;
        Ok(DatabaseFile {
            options: options.filename(&path),
            path,
        })
    }

    /// The database file, absolute.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file exists (before a start: whether it will create it).
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    pub(crate) fn options(&self) -> SqliteConnectOptions {
        self.options.clone()
    }

    /// Check that the file can be opened for writing, creating it (empty,
    /// which SQLite takes as a new database) when missing.
    pub(crate) fn prepare(&self) -> Result<(), OpenError> {
        let path = self.path.display().to_string();
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let dir_name = dir.display().to_string();
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(OpenError::NotADirectory {
                    path,
                    dir: dir_name,
                });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(OpenError::NoDirectory {
                    path,
                    dir: dir_name,
                });
            }
            Err(e) if e.kind() == ErrorKind::NotADirectory => {
                return Err(OpenError::NotADirectory {
                    path,
                    dir: dir_name,
                });
            }
            Err(e) => {
                return Err(OpenError::Other {
                    path,
                    reason: e.to_string(),
                });
            }
        }
        let existed = match fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => return Err(OpenError::IsADirectory { path }),
            Ok(_) => true,
            Err(_) => false,
        };
        let opened = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path);
        opened.map(drop).map_err(|e| match e.kind() {
            kind @ (ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem) => {
                OpenError::NotWritable {
                    path,
                    what: if existed {
                        "the file".into()
                    } else {
                        format!("directory {dir_name}")
                    },
                    reason: match kind {
                        ErrorKind::PermissionDenied => "permission denied",
                        _ => "read-only file system",
                    }
                    .into(),
                }
            }
            _ => OpenError::Other {
                path,
                reason: e.to_string(),
            },
        })
    }

    /// Remove the database with SQLite's files beside it (`-wal`, `-shm`,
    /// `-journal`): for a start that created it and then failed. Call it
    /// only once the store is closed.
    pub fn remove(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            if let Err(e) = fs::remove_file(&name)
                && e.kind() != ErrorKind::NotFound
            {
                tracing::warn!(file = %Path::new(&name).display(), error = %e, "cannot remove");
            }
        }
    }
}

/// A URL scheme (RFC 3986: a letter, then letters, digits, `+ - .`), at
/// least two characters so that a Windows drive (`C:`) is not one.
fn is_scheme(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests;
