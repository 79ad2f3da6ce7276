//! The compiled route table: pure, I/O-free matching of (host, method, path)
//! to a route.
//!
//! Layout: one path-segment trie for routes without `hosts`, plus one trie
//! per configured host name in a hash map. A lookup walks at most two tries,
//! one node per path segment, so its cost depends on the depth of the
//! request path, not on the number of routes.
//!
//! Semantics (the contract in README.md, "Proxy behaviour"):
//! - a route path is a prefix matched on segment boundaries: `/api` matches
//!   `/api`, `/api/` and `/api/x`, never `/apix`;
//! - the longest matching prefix wins; on equal length a route naming the
//!   request's host beats a host-less route, and a route listing the method
//!   beats a route that accepts any method;
//! - the path given to [`RouteTable::find`] must already be normalised
//!   ([`path::normalize`]).

pub mod path;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::Method;

use crate::persist::ShardedMap;

/// The result of a successful lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    /// Index of the route, as given to [`RouteTableBuilder::insert`].
    pub route: usize,
    /// Byte length of the matched prefix in the looked-up path (0 for `/`).
    pub prefix_len: usize,
}

impl RouteMatch {
    /// The path to forward when the matched prefix is stripped: the rest of
    /// the path, or `/` when nothing is left.
    pub fn strip<'p>(&self, path: &'p str) -> &'p str {
        let rest = &path[self.prefix_len..];
        if rest.is_empty() { "/" } else { rest }
    }
}

/// Two routes that would answer exactly the same requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routes #{existing} and #{new} have the same host, path and methods")]
pub struct Conflict {
    pub existing: usize,
    pub new: usize,
}

pub use crate::persist::FastHash;

#[derive(Debug, Clone)]
struct Entry {
    route: usize,
    /// `None` = any method.
    methods: Option<Arc<[Method]>>,
}

impl Entry {
    fn accepts(&self, method: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(list) => list.iter().any(|m| m == method),
        }
    }
}

/// A trie node. Nodes are shared between table versions: changing a route
/// copies only the nodes on its path (`Arc::make_mut`).
#[derive(Debug, Clone, Default)]
struct Node {
    children: ShardedMap<Arc<Node>>,
    /// Routes whose prefix ends at this node; method-specific ones first.
    entries: Vec<Entry>,
}

impl Node {
    fn entry_for(&self, method: &Method) -> Option<&Entry> {
        self.entries.iter().find(|e| e.accepts(method))
    }
}

/// Compiled route table. Cloning is cheap (the tries are shared), and a
/// clone can be changed route by route without touching the original.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    any_host: Arc<Node>,
    by_host: ShardedMap<Arc<Node>>,
}

/// Collects routes, then freezes them into a [`RouteTable`].
#[derive(Debug, Default)]
pub struct RouteTableBuilder {
    table: RouteTable,
}

/// Segments of a route prefix: `/` → none, `/a/b/` → `a`, `b`.
fn prefix_segments(prefix: &str) -> impl Iterator<Item = &str> {
    prefix.split('/').filter(|s| !s.is_empty())
}

fn overlaps(a: &Option<Arc<[Method]>>, b: &Option<Arc<[Method]>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => false,
    }
}

impl RouteTableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add route number `route` (see [`RouteTable::insert`]).
    pub fn insert(
        &mut self,
        route: usize,
        prefix: &str,
        hosts: &[String],
        methods: &[Method],
    ) -> Result<(), Conflict> {
        self.table.insert(route, prefix, hosts, methods)
    }

    pub fn build(self) -> RouteTable {
        self.table
    }
}

impl RouteTable {
    /// Add route number `route`. `hosts` empty = any host (host names are
    /// compared case-insensitively, without port); `methods` empty = any.
    /// On a conflict the table is left unchanged.
    pub fn insert(
        &mut self,
        route: usize,
        prefix: &str,
        hosts: &[String],
        methods: &[Method],
    ) -> Result<(), Conflict> {
        let mut methods_sorted: Vec<Method> = methods.to_vec();
        methods_sorted.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        methods_sorted.dedup();
        let methods: Option<Arc<[Method]>> =
            (!methods_sorted.is_empty()).then(|| methods_sorted.into());
        if hosts.is_empty() {
            return insert_into(&mut self.any_host, route, prefix, methods);
        }
        for (i, host) in hosts.iter().enumerate() {
            let host = host.to_ascii_lowercase();
            if !self.by_host.contains_key(host.as_str()) {
                self.by_host.insert(host.as_str().into(), Arc::default());
            }
            let root = self.by_host.get_mut(host.as_str()).expect("inserted above");
            if let Err(c) = insert_into(root, route, prefix, methods.clone()) {
                // Undo the hosts already done: all or nothing.
                self.remove(route, prefix, &hosts[..i]);
                return Err(c);
            }
        }
        Ok(())
    }

    /// Take route number `route`, inserted with this `prefix` and `hosts`,
    /// out of the table. Nodes left empty are pruned.
    pub fn remove(&mut self, route: usize, prefix: &str, hosts: &[String]) {
        let segments: Vec<&str> = prefix_segments(prefix).collect();
        if hosts.is_empty() {
            remove_from(&mut self.any_host, &segments, route);
            return;
        }
        for host in hosts {
            let host = host.to_ascii_lowercase();
            if let Some(root) = self.by_host.get_mut(host.as_str())
                && remove_from(root, &segments, route)
            {
                self.by_host.remove(host.as_str());
            }
        }
    }
}

fn insert_into(
    root: &mut Arc<Node>,
    route: usize,
    prefix: &str,
    methods: Option<Arc<[Method]>>,
) -> Result<(), Conflict> {
    // Check first, so a conflict copies and changes nothing.
    let mut at: Option<&Node> = Some(root);
    for seg in prefix_segments(prefix) {
        at = at.and_then(|n| n.children.get(seg)).map(|n| &**n);
    }
    // Two "any method" routes, or two method lists sharing a method, at
    // the same node would be ambiguous. "Any" beside a list is fine: the
    // list is more specific and wins for its methods.
    if let Some(existing) =
        at.and_then(|n| n.entries.iter().find(|e| overlaps(&e.methods, &methods)))
    {
        return Err(Conflict {
            existing: existing.route,
            new: route,
        });
    }
    let mut node = Arc::make_mut(root);
    for seg in prefix_segments(prefix) {
        if !node.children.contains_key(seg) {
            node.children.insert(seg.into(), Arc::default());
        }
        node = Arc::make_mut(node.children.get_mut(seg).expect("inserted above"));
    }
    node.entries.push(Entry { route, methods });
    node.entries.sort_by_key(|e| e.methods.is_none());
    Ok(())
}

/// Remove `route`'s entry below `node` along `segments`; true when `node`
/// is left with nothing in it.
fn remove_from(node: &mut Arc<Node>, segments: &[&str], route: usize) -> bool {
    let Some((seg, rest)) = segments.split_first() else {
        if node.entries.iter().any(|e| e.route == route) {
            Arc::make_mut(node).entries.retain(|e| e.route != route);
        }
        return node.entries.is_empty() && node.children.is_empty();
    };
    if !node.children.contains_key(seg) {
        return false;
    }
    let n = Arc::make_mut(node);
    let child = n.children.get_mut(seg).expect("checked above");
    if remove_from(child, rest, route) {
        n.children.remove(seg);
    }
    n.entries.is_empty() && n.children.is_empty()
}

impl RouteTable {
    /// Find the route for a request. `host` is the request host without
    /// port (any case); `path` must be normalised.
    pub fn find(&self, host: Option<&str>, method: &Method, path: &str) -> Option<RouteMatch> {
        let specific = host
            .and_then(|h| lookup_host(&self.by_host, h))
            .and_then(|root| walk(root, method, path));
        let general = walk(&self.any_host, method, path);
        match (specific, general) {
            (Some(s), Some(g)) if g.prefix_len > s.prefix_len => Some(g),
            (Some(s), _) => Some(s),
            (None, g) => g,
        }
    }

    /// Every route [`RouteTable::find`] looks at for this request, in the
    /// order it looks: the routes of the request's host, then those for
    /// any host, each at the prefix of the path where it sits. (The same
    /// walk as `find`, keeping what it passes over.)
    pub fn considered(&self, host: Option<&str>, method: &Method, path: &str) -> Vec<Considered> {
        let mut out = Vec::new();
        if let Some(root) = host.and_then(|h| lookup_host(&self.by_host, h)) {
            visit(root, method, path, true, &mut out);
        }
        visit(&self.any_host, method, path, false, &mut out);
        out
    }

    /// Whether some route is for given hosts only: else a lookup needs no
    /// host.
    pub fn has_host_routes(&self) -> bool {
        !self.by_host.is_empty()
    }

    /// Whether the table holds no route at all.
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
            && self.any_host.entries.is_empty()
            && self.any_host.children.is_empty()
    }
}

fn lookup_host<'t>(map: &'t ShardedMap<Arc<Node>>, host: &str) -> Option<&'t Node> {
    if map.is_empty() {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        map.get(host.to_ascii_lowercase().as_str()).map(|n| &**n)
    } else {
        map.get(host).map(|n| &**n)
    }
}

/// A route a lookup looked at (see [`RouteTable::considered`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Considered {
    pub route: usize,
    /// Byte length of the path prefix it sits at.
    pub prefix_len: usize,
    /// It names the request's host (else: any host).
    pub by_host: bool,
    /// It takes the request's method.
    pub method_ok: bool,
    /// Its prefix ends on a segment boundary of the path (else it ends
    /// inside one, as `/api` in `/apix`: a near miss, never a match).
    pub on_boundary: bool,
}

/// [`walk`]'s path through one trie, every entry on it noted, and the
/// near misses beside it: routes whose last segment is a proper prefix of
/// the path's next segment.
fn visit(root: &Node, method: &Method, path: &str, by_host: bool, out: &mut Vec<Considered>) {
    let mut note = |node: &Node, prefix_len: usize, on_boundary: bool| {
        out.extend(node.entries.iter().map(|e| Considered {
            route: e.route,
            prefix_len,
            by_host,
            method_ok: e.accepts(method),
            on_boundary,
        }));
    };
    note(root, 0, true);
    let mut node = root;
    let mut offset = 0;
    for seg in path[1..].split('/') {
        if seg.is_empty() {
            break;
        }
        for (key, child) in node.children.iter() {
            if key.len() < seg.len() && seg.starts_with(&**key) {
                note(child, offset + 1 + key.len(), false);
            }
        }
        let Some(child) = node.children.get(seg) else {
            break;
        };
        node = child;
        offset += 1 + seg.len();
        note(node, offset, true);
    }
}

/// Walk one trie along `path`, remembering the deepest node with a route for
/// `method`.
fn walk(root: &Node, method: &Method, path: &str) -> Option<RouteMatch> {
    let mut best = root.entry_for(method).map(|e| RouteMatch {
        route: e.route,
        prefix_len: 0,
    });
    let mut node = root;
    let mut offset = 0; // byte offset of the '/' before the current segment
    for seg in path[1..].split('/') {
        if seg.is_empty() {
            break;
        }
        let Some(child) = node.children.get(seg) else {
            break;
        };
        node = child;
        offset += 1 + seg.len();
        if let Some(e) = node.entry_for(method) {
            best = Some(RouteMatch {
                route: e.route,
                prefix_len: offset,
            });
        }
    }
    best
}
