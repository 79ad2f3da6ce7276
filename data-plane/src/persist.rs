//! Containers shared between snapshot versions.
//!
//! A new snapshot is a copy of the live one with a few entries changed. With
//! plain `Vec`s and `HashMap`s that copy costs one clone per entry (tens of
//! thousands of reference-count updates at 10k routes, and as many again
//! when the old version is dropped). These two split their entries into
//! reference-counted pieces: a copy shares every piece, and a change copies
//! only the piece it lands in (`Arc::make_mut`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

/// Hasher of the maps: fast on short keys (path segments, host and route
/// names), seeded per process so crafted keys cannot collide on purpose.
pub type FastHash = foldhash::fast::RandomState;

const CHUNK: usize = 64;

/// A vector in chunks of 64.
#[derive(Debug, Clone)]
pub struct ChunkedVec<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        ChunkedVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> ChunkedVec<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    /// Entry `i`, copying its chunk first if another version shares it.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let chunk = self.chunks.get_mut(i / CHUNK)?;
        if i % CHUNK >= chunk.len() {
            return None;
        }
        Some(&mut Arc::make_mut(chunk)[i % CHUNK])
    }

    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

impl<T: Clone> std::ops::Index<usize> for ChunkedVec<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        self.get(i).expect("index within the vector")
    }
}

/// Up to this many entries a map is one piece; past it, [`SHARDS`].
const ONE_PIECE_MAX: usize = 256;
const SHARDS: usize = 64;

/// A map from names to `V`, in one piece while small and in 64 pieces
/// (by key hash) once large.
#[derive(Debug, Clone)]
pub struct ShardedMap<V> {
    shards: Vec<Arc<HashMap<Arc<str>, V, FastHash>>>,
    len: usize,
    /// Picks a key's piece.
    hasher: FastHash,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        ShardedMap {
            shards: Vec::new(),
            len: 0,
            hasher: FastHash::default(),
        }
    }
}

impl<V: Clone> ShardedMap<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn shard(&self, key: &str) -> usize {
        match self.shards.len() {
            0 | 1 => 0,
            n => self.hasher.hash_one(key) as usize % n,
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.shards.get(self.shard(key))?.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The value of `key`, copying its piece first if another version
    /// shares it.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let i = self.shard(key);
        let shard = self.shards.get_mut(i)?;
        if !shard.contains_key(key) {
            return None;
        }
        Arc::make_mut(shard).get_mut(key)
    }

    pub fn insert(&mut self, key: Arc<str>, value: V) -> Option<V> {
        if self.shards.is_empty() {
            self.shards.push(Arc::default());
        }
        let i = self.shard(&key);
        let old = Arc::make_mut(&mut self.shards[i]).insert(key, value);
        if old.is_none() {
            self.len += 1;
            if self.len > ONE_PIECE_MAX && self.shards.len() == 1 {
                self.split();
            }
        }
        old
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = self.shard(key);
        let shard = self.shards.get_mut(i)?;
        if !shard.contains_key(key) {
            return None;
        }
        let old = Arc::make_mut(shard).remove(key);
        self.len -= 1;
        if self.len == 0 {
            self.shards.clear();
        }
        old
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// From one piece to [`SHARDS`].
    fn split(&mut self) {
        let one = std::mem::take(&mut self.shards);
        self.shards = (0..SHARDS).map(|_| Arc::default()).collect();
        for (k, v) in one.into_iter().flat_map(Arc::unwrap_or_clone) {
            let i = self.shard(&k);
            Arc::make_mut(&mut self.shards[i]).insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_copy_leaves_the_original_alone() {
        let mut v = ChunkedVec::default();
        let mut m = ShardedMap::default();
        for i in 0..1000 {
            v.push(i);
            m.insert(i.to_string().into(), i);
        }
        let (v0, m0) = (v.clone(), m.clone());
        *v.get_mut(700).unwrap() = -1;
        *m.get_mut("700").unwrap() = -1;
        m.remove("5");
        m.insert("new".into(), 1);
        v.push(1000);
        assert_eq!(v[700], -1);
        assert_eq!(v0[700], 700);
        assert_eq!((v.len(), v0.len()), (1001, 1000));
        assert_eq!(m.get("700"), Some(&-1));
        assert_eq!(m0.get("700"), Some(&700));
        assert_eq!((m.get("5"), m0.get("5")), (None, Some(&5)));
        assert_eq!((m.len(), m0.len()), (1000, 1000));
        assert_eq!(m.iter().count(), 1000);
        assert!(v.get(1001).is_none() && v.get_mut(1001).is_none());
        // Only the pieces that changed were copied: entry 700's chunk and
        // the last one (pushed to).
        let shared = v.chunks.iter().zip(&v0.chunks);
        assert_eq!(shared.filter(|(a, b)| !Arc::ptr_eq(a, b)).count(), 2);
        let shared = m.shards.iter().zip(&m0.shards);
        assert!(shared.filter(|(a, b)| !Arc::ptr_eq(a, b)).count() <= 3);
        for i in 0..1000 {
            m.remove(i.to_string().as_str());
        }
        m.remove("new");
        assert!(m.is_empty() && m.get("1").is_none());
    }
}
