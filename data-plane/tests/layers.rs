//! The data plane's floors, checked: every `crate::` and `super::` path in
//! `src/` is read, and the test fails if a module uses one on a higher
//! floor than its own, if the modules of one floor use each other in a
//! circle, or if the files of one module do. The floors are those
//! `ARCHITECTURE.md` draws and `src/lib.rs` lists; a new top-level module
//! must be given one here.
//!
//! Comments are left out (a doc link up is no arrow), and so are unit-test
//! modules (`#[cfg(test)] mod …`, written last: fixtures may be built
//! from any floor). Within a module, its files may use the module's own file (the
//! façade: `proxy.rs` for `proxy/`), which declares them: only arrows
//! between sibling files count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and its floor; a module uses only its own floor
/// and those below.
const FLOORS: &[(&str, u8)] = &[
    ("config", 0),
    ("clock", 0),
    ("persist", 0),
    ("lazy_timer", 0),
    ("stall", 0),
    ("counters", 0),
    ("access_log", 0),
    ("recover", 0),
    ("routing", 0),
    ("balance", 0),
    ("http1", 1),
    ("transport", 2),
    ("policy", 2),
    ("registry", 3),
    ("available", 3),
    ("outlier", 3),
    ("snapshot", 3),
    ("health", 3),
    ("status", 3),
    ("plane", 4),
    ("proxy", 5),
    ("exporter", 5),
    ("server", 6),
    ("fuzzing", 7),
];

/// Items `lib.rs` defines itself (not re-exports), usable from any floor.
const ROOT_ITEMS: &[&str] = &["BoxError"];

fn floor(module: &str) -> Option<u8> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

/// A source file: its module path (`["proxy", "inline"]`; `[]` for
/// `lib.rs`) and its text.
struct Source {
    path: PathBuf,
    module: Vec<String>,
    text: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&root).expect("under src/");
            let mut module: Vec<String> = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"] {
                module.clear();
            }
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            out.push(Source { path, module, text });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// `text` without comments, string literals' contents and unit-test
/// modules.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines.peek().is_some_and(|next| next.contains("mod "))
        {
            // Test modules are written last: the rest of the file is test
            // code.
            break;
        }
        out.push_str(&strip_line(line));
        out.push('\n');
    }
    out
}

/// One line without its comment and with string literals emptied.
fn strip_line(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// Every path `code` names from the crate root, as module segments
/// (`crate::proxy::inline::X` → `["proxy", "inline", "X"]`), including
/// each name of a grouped import (`crate::{a, b::c}`). `super::` paths
/// are resolved against `module`.
fn paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let preceded_by_ident = i > 0 && is_ident(bytes[i - 1]) || i > 1 && &code[i - 2..i] == "::";
        let (base, skip) = if rest.starts_with("crate::") && !preceded_by_ident {
            (Vec::new(), "crate::".len())
        } else if rest.starts_with("super::") && !preceded_by_ident {
            // `super` of `proxy/inline.rs` is `proxy`; of `proxy.rs`, the
            // crate root.
            let mut base: Vec<String> = module.to_vec();
            let mut skip = 0;
            let mut r = rest;
            while r.starts_with("super::") {
                base.pop();
                skip += "super::".len();
                r = &r["super::".len()..];
            }
            (base, skip)
        } else {
            i += 1;
            continue;
        };
        i += skip;
        let (found, used) = tree(&code[i..], base);
        out.extend(found);
        i += used.max(1);
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The paths of a use-tree at the start of `s` under `base`, and how many
/// bytes it took.
fn tree(s: &str, base: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let bytes = s.as_bytes();
    let mut path = base;
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'{' {
            let mut out = Vec::new();
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == b'}' {
                    return (out, i + 1);
                }
                let (found, used) = tree(&s[i..], path.clone());
                out.extend(found);
                i += used.max(1);
            }
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        if start == i {
            return (vec![path], i);
        }
        let name = &s[start..i];
        if name != "self" {
            path.push(name.to_string());
        }
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            return (vec![path], i);
        }
    }
}

/// What a path names at the top level: a top-level module, or a root
/// item.
fn top(path: &[String]) -> Option<&str> {
    path.first().map(String::as_str)
}

#[test]
fn every_top_level_module_has_a_floor() {
    for src in sources() {
        if let Some(m) = src.module.first() {
            assert!(
                floor(m).is_some(),
                "{}: module `{m}` has no floor: add it to FLOORS here, to lib.rs's list and to ARCHITECTURE.md",
                src.path.display()
            );
        }
    }
}

#[test]
fn arrows_point_down_and_modules_form_no_circle() {
    let mut problems = Vec::new();
    // Top-level module → the top-level modules it uses.
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Per directory module: sibling file → siblings it uses.
    let mut siblings: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for src in sources() {
        let Some(own) = src.module.first().cloned() else {
            continue; // lib.rs: the façade, above every floor
        };
        let Some(own_floor) = floor(&own) else {
            continue; // reported by the other test
        };
        for path in paths(&code(&src.text), &src.module) {
            let Some(target) = top(&path) else { continue };
            if target.starts_with(|c: char| c.is_ascii_uppercase()) {
                if !ROOT_ITEMS.contains(&target) {
                    problems.push(format!(
                        "{}: `crate::{target}` is a re-export of lib.rs: name its module instead",
                        src.path.display()
                    ));
                }
                continue;
            }
            let Some(target_floor) = floor(target) else {
                continue; // a function or constant of lib.rs, or a macro
            };
            if target != own {
                if target_floor > own_floor {
                    problems.push(format!(
                        "{}: `{own}` (floor {own_floor}) uses `{}` (floor {target_floor}): arrows point down only",
                        src.path.display(),
                        path.join("::")
                    ));
                }
                graph
                    .entry(own.clone())
                    .or_default()
                    .insert(target.to_string());
                continue;
            }
            // Within one module: which sibling file uses which.
            if src.module.len() >= 2 && path.len() >= src.module.len() {
                let parent = &src.module[..src.module.len() - 1];
                if path[..parent.len()] == *parent {
                    let from = src.module[parent.len()].clone();
                    let to = path[parent.len()].clone();
                    let is_module_file = is_file_of(&src.module[..parent.len()], &to);
                    if to != from && is_module_file {
                        siblings
                            .entry(parent.to_vec())
                            .or_default()
                            .entry(from)
                            .or_default()
                            .insert(to);
                    }
                }
            }
        }
    }
    if let Some(circle) = find_circle(&graph) {
        problems.push(format!(
            "modules use each other in a circle: {}",
            circle.join(" → ")
        ));
    }
    for (parent, graph) in &siblings {
        if let Some(circle) = find_circle(graph) {
            problems.push(format!(
                "files of `{}` use each other in a circle: {}",
                parent.join("::"),
                circle.join(" → ")
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Whether `name` is a file (or directory module) of module `parent`.
fn is_file_of(parent: &[String], name: &str) -> bool {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for p in parent {
        dir.push(p);
    }
    dir.join(format!("{name}.rs")).exists() || dir.join(name).is_dir()
}

/// A circle in `graph`, as the nodes along it, if there is one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let at = stack
                    .iter()
                    .position(|n| n == node)
                    .expect("open nodes are stacked");
                let mut circle = stack[at..].to_vec();
                circle.push(node.to_string());
                return Some(circle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, marks, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(circle);
        }
    }
    None
}

/// The checker itself: it finds what it is meant to find.
#[test]
fn the_checker_reads_paths_and_finds_circles() {
    let module = vec!["proxy".to_string(), "inline".to_string()];
    let found = paths(
        &code(
            "use crate::{http1::{fields, headers::Seen}, registry};\n// crate::server\nlet s = \"crate::server\";\nuse super::prepare::Head;\n",
        ),
        &module,
    );
    let found: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        [
            "http1::fields",
            "http1::headers::Seen",
            "registry",
            "proxy::prepare::Head"
        ]
    );
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    assert_eq!(find_circle(&graph), None);
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_circle(&graph).map(|c| c.len()), Some(4));
}
