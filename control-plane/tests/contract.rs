//! The control plane uses only the data plane's public contract: the
//! config types, `DataPlane`'s compile/patch/install API and the status
//! view — never its proxy, snapshot internals, registry, transport or
//! server (see ARCHITECTURE.md). This reads every `data_plane::` path in
//! `src/` and fails on any other module.

use std::path::Path;

/// The data plane's modules the control plane may name, and why.
const ALLOWED: &[&str] = &[
    "config",   // GatewayConfig and its types: the contract
    "status",   // the live view /admin/status and health show
    "recover",  // the admin API's panics are caught as the proxy's are
    "http1",    // request IDs (`headers::new_request_id`), one scheme for both listeners
    "counters", // the histogram buckets of the admin API's own metrics
    "exporter", // the data plane's collector, registered with /metrics
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_data_planes_contract_is_used() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("data_plane::") {
                let rest = &code[at + "data_plane::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // `data_plane::{…}` and `data_plane::DataPlane`: root items.
                let root_item =
                    name.is_empty() || name.starts_with(|c: char| c.is_ascii_uppercase());
                if !root_item && !ALLOWED.contains(&name.as_str()) {
                    problems.push(format!("{}:{}: data_plane::{name}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the control plane reaches past the data plane's contract:\n{}",
        problems.join("\n")
    );
}
