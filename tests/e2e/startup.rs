//! Start-up as an operator meets it: every refusal is one line naming the
//! thing and the fix, with a non-zero exit, and a failed start leaves no
//! database files behind that were not there before.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Process, eventually, output_within};

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

/// Start the binary with `args` (listeners on 127.0.0.1:0 unless given)
/// and `database_url`; it must exit non-zero with exactly one line on
/// stderr, which is returned.
fn refused(mut cmd: Command, database_url: &str, args: &[&str]) -> String {
    let listeners = ["--proxy-listen", "--admin-listen"]
        .into_iter()
        .filter(|flag| !args.contains(flag))
        .flat_map(|flag| [flag, "127.0.0.1:0"]);
    cmd.args(listeners)
        .args(["--database-url", database_url])
        .args(args)
        .env("SWITCHYARD_LOG", "error");
    let out = output_within(&mut cmd, Duration::from_secs(20));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "started: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err.trim_end().to_string()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_missing_directory_is_named_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("x/y/switchyard.db");
    let err = refused(switchyard(), &format!("sqlite://{}", db.display()), &[]);
    assert_eq!(
        err,
        format!(
            "switchyard: cannot open database {}: directory {} does not exist \
             (create it, or pass --database-url sqlite:///path/to/file.db)",
            db.display(),
            tmp.path().join("x/y").display()
        )
    );
    assert!(files_in(tmp.path()).is_empty());
}

#[test]
fn a_url_of_another_database_is_named() {
    let err = refused(switchyard(), "mysql://db.internal/switchyard", &[]);
    assert!(
        err.contains("mysql://db.internal/switchyard is not a database URL Switchyard can use")
            && err.contains("--database-url sqlite:///"),
        "{err}"
    );
}

/// A shared database that cannot be reached, and no cache file to start
/// from: one line naming both, and no file left behind.
#[test]
fn an_unreachable_postgres_without_a_cache_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of the loopback.
    let mut cmd = switchyard();
    cmd.current_dir(tmp.path());
    let err = refused(cmd, "postgres://app:s3cret@127.0.0.1:1/switchyard", &[]);
    assert!(
        err.contains("cannot reach the config database postgres://127.0.0.1:1/switchyard")
            && err.contains("no cache file")
            && err.contains("switchyard-cache.json")
            && !err.contains("s3cret"),
        "{err}"
    );
    assert!(files_in(tmp.path()).is_empty());
}

#[test]
fn an_in_memory_database_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for url in ["sqlite://", "sqlite::memory:", "sqlite://x.db?mode=memory"] {
        let mut cmd = switchyard();
        cmd.current_dir(tmp.path());
        let err = refused(cmd, url, &[]);
        assert!(
            err.contains("in-memory database: every change would be lost at exit")
                && err.contains("--database-url sqlite:///"),
            "{url}: {err}"
        );
    }
    assert!(files_in(tmp.path()).is_empty());
}

/// Root writes to any directory, so there the gateway runs as `nobody`
/// (through util-linux's `setpriv`) to meet a directory it may not write.
#[test]
fn a_directory_it_cannot_write_is_named() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let root = std::fs::metadata(&ro).unwrap().uid() == 0;
    let cmd = if !root {
        switchyard()
    } else if Path::new("/usr/bin/setpriv").exists() {
        let mut cmd = Command::new("/usr/bin/setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_switchyard"));
        cmd
    } else {
        eprintln!("skipped: running as root without setpriv");
        return;
    };
    let url = format!("sqlite://{}/switchyard.db", ro.display());
    let err = refused(cmd, &url, &[]);
    assert!(
        err.contains(&format!("directory {} is not writable", ro.display()))
            && err.contains("let this user write there, or pass --database-url"),
        "{err}"
    );
    assert!(files_in(&ro).is_empty());
}

#[test]
fn an_address_in_use_is_one_line_and_leaves_no_database() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for flag in ["--proxy-listen", "--admin-listen"] {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/switchyard.db", tmp.path().display());
        let err = refused(switchyard(), &url, &[flag, &addr]);
        assert_eq!(
            err,
            format!(
                "switchyard: cannot listen on {addr}: the address is already in use \
                 (stop what listens there, or choose another address with {flag})"
            )
        );
        assert!(
            files_in(tmp.path()).is_empty(),
            "{:?}",
            files_in(tmp.path())
        );
    }
}

#[test]
fn a_start_that_fails_after_creating_the_database_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    // Valid as a document; refused when published (no such CA file).
    let bootstrap = tmp.path().join("boot.json");
    std::fs::write(
        &bootstrap,
        r#"{"upstreams": [{"name": "u", "tls": {"ca_file": "/nonexistent/ca.pem"},
                           "backends": [{"url": "https://127.0.0.1:1"}]}],
            "routes": [{"name": "r", "path": "/", "upstream": "u"}]}"#,
    )
    .unwrap();
    let url = format!("sqlite://{}/switchyard.db", tmp.path().display());
    let err = refused(
        switchyard(),
        &url,
        &["--bootstrap", bootstrap.to_str().unwrap()],
    );
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    assert_eq!(files_in(tmp.path()), ["boot.json"]);
}

#[tokio::test]
async fn the_database_in_use_is_logged_with_its_absolute_path() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("gw.db");
    let gw = Process::start(&format!("sqlite://{}", db.display()), &[]);
    let logged = eventually(Duration::from_secs(5), || {
        let found = gw
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("config database open"))
            .cloned();
        async move { found }
    })
    .await
    .expect("a line naming the database");
    assert!(
        logged.contains(&format!("database={}", db.display())),
        "{logged}"
    );
}
