use super::*;

fn parse_err(url: &str) -> OpenError {
    DatabaseFile::parse(url).unwrap_err()
}

#[test]
fn other_schemes_are_refused() {
    // (postgres:// never reaches here: `Database::parse` takes it first.)
    for url in ["mysql://x", "https://x/y.db", "postgresql:x"] {
        assert!(
            matches!(parse_err(url), OpenError::NotSqlite { .. }),
            "{url}"
        );
    }
    let e = parse_err("mysql://db/switchyard").to_string();
    assert_eq!(
        e,
        "mysql://db/switchyard is not a database URL Switchyard can use: give sqlite://FILE or postgres://…"
    );
}

#[test]
fn in_memory_databases_are_refused() {
    for url in [
        "sqlite://",
        "sqlite:",
        "sqlite::memory:",
        "sqlite://:memory:",
        ":memory:",
        "sqlite://x.db?mode=memory",
        "sqlite://?mode=memory&cache=shared",
    ] {
        assert!(
            matches!(parse_err(url), OpenError::InMemory { .. }),
            "{url}"
        );
    }
}

#[test]
fn other_unusable_urls_say_why() {
    assert!(matches!(
        parse_err("sqlite://file:x.db"),
        OpenError::BadUrl { .. }
    ));
    let e = parse_err("sqlite://x.db?mode=bogus");
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn the_path_is_made_absolute() {
    let cwd = std::env::current_dir().unwrap();
    for url in ["sqlite://rel.db", "sqlite:rel.db", "rel.db"] {
        assert_eq!(
            DatabaseFile::parse(url).unwrap().path(),
            cwd.join("rel.db"),
            "{url}"
        );
    }
    let f = DatabaseFile::parse("sqlite:///var/lib/sy/x.db?mode=rwc").unwrap();
    assert_eq!(f.path(), Path::new("/var/lib/sy/x.db"));
    assert_eq!(f.options().get_filename(), Path::new("/var/lib/sy/x.db"));
}

fn file_in(dir: &Path, rest: &str) -> DatabaseFile {
    DatabaseFile::parse(&format!("sqlite://{}/{rest}", dir.display())).unwrap()
}

#[test]
fn a_missing_directory_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let f = file_in(tmp.path(), "x/y/switchyard.db");
    let e = f.prepare().unwrap_err();
    let dir = tmp.path().join("x/y");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot open database {}: directory {} does not exist",
            f.path().display(),
            dir.display()
        )
    );
    assert_eq!(e.fix(), Some("create it"));
    assert!(!tmp.path().join("x").exists(), "nothing was created");
}

#[test]
fn files_where_directories_belong_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("plain"), b"").unwrap();
    for rest in ["plain/switchyard.db", "plain/sub/switchyard.db"] {
        let e = file_in(tmp.path(), rest).prepare().unwrap_err();
        assert!(matches!(e, OpenError::NotADirectory { .. }), "{rest}: {e}");
    }
    std::fs::create_dir(tmp.path().join("db")).unwrap();
    let e = file_in(tmp.path(), "db").prepare().unwrap_err();
    assert!(matches!(e, OpenError::IsADirectory { .. }), "{e}");
}

#[test]
fn a_read_only_directory_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let ro = tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), b"").is_ok() {
        eprintln!("skipped: this user (root) may write to a read-only directory");
        return;
    }
    let e = file_in(&ro, "switchyard.db").prepare().unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("directory {} is not writable", ro.display())),
        "{e}"
    );
    assert_eq!(e.fix(), Some("let this user write there"));
}

#[test]
fn prepare_creates_an_empty_file_and_remove_takes_it_with_its_companions() {
    let tmp = tempfile::tempdir().unwrap();
    let f = file_in(tmp.path(), "switchyard.db");
    assert!(!f.exists());
    f.prepare().unwrap();
    assert!(f.exists());
    assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 0);
    for companion in ["switchyard.db-wal", "switchyard.db-shm"] {
        std::fs::write(tmp.path().join(companion), b"x").unwrap();
    }
    std::fs::write(tmp.path().join("other.db"), b"x").unwrap();
    f.remove();
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["other.db"]);
}
