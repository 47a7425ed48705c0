//! A record of which files a workload reads, first read first, across the layers of a mount:
//! the raw material of a learned prefetch list (`soci mount --record-reads` writes it in the
//! form `soci create --prefetch-files-json` takes). It also keeps the byte ranges read, so a
//! benchmark can compare the bytes fetched with the bytes a workload actually used (a file's
//! size overstates a workload that reads only its head).

use crate::tree::{Tree, ROOT_INO};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// `[start, end)` byte ranges of a file, sorted and merged.
pub type Ranges = Vec<(u64, u64)>;

/// The ranges file of `--record-read-ranges`: `{"/path": [[start, end], ...], ...}` with the
/// files in the order of their first read (a JSON object keeps its order on disk; the
/// prefetch list read from it keeps it as the artifact's priorities).
pub struct RangesByPath<'a>(pub &'a [(String, Ranges)]);

impl serde::Serialize for RangesByPath<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (path, ranges) in self.0 {
            map.serialize_entry(path, ranges)?;
        }
        map.end()
    }
}

/// First reads of files, in order, shared by the layers of one mount.
#[derive(Default)]
pub struct ReadLog {
    reads: Mutex<Vec<(usize, u64)>>,
    layers: Mutex<Vec<Arc<Tree>>>,
    /// Per (layer, inode): the file ranges read, sorted, disjoint and not touching.
    ranges: Mutex<HashMap<(usize, u64), Ranges>>,
}

/// One layer's view of a [`ReadLog`]: remembers which inodes were already recorded, so a
/// read costs one atomic load after the first.
pub struct LayerReads {
    log: Arc<ReadLog>,
    layer: usize,
    seen: Vec<AtomicBool>,
}

impl ReadLog {
    /// An empty log.
    pub fn new() -> Arc<Self> {
        Arc::new(ReadLog::default())
    }

    /// Registers a layer's tree; its reads are recorded through the returned handle.
    pub fn layer(self: &Arc<Self>, tree: Arc<Tree>) -> LayerReads {
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        let seen = (0..=tree.len()).map(|_| AtomicBool::new(false)).collect();
        layers.push(tree);
        LayerReads {
            log: self.clone(),
            layer: layers.len() - 1,
            seen,
        }
    }

    /// Paths of the files read, first read first (`/`-rooted, without repeats).
    pub fn paths(&self) -> Vec<String> {
        let reads = self.reads.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<String> = Vec::new();
        for (layer, ino) in reads {
            if let Some(path) = layers.get(layer).and_then(|t| path_of(t, ino)) {
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
        out
    }

    /// The byte ranges read of each file (`[start, end)`, sorted, merged), by path, files in
    /// the order of their first read.
    pub fn ranges(&self) -> Vec<(String, Ranges)> {
        let reads = self.reads.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        let ranges = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(String, Ranges)> = Vec::new();
        for key in reads {
            let (Some(path), Some(r)) = (
                layers.get(key.0).and_then(|t| path_of(t, key.1)),
                ranges.get(&key),
            ) else {
                continue;
            };
            match out.iter_mut().find(|(p, _)| *p == path) {
                // One path in two layers (an upper layer's copy shadows a lower one): both
                // were read, so both count.
                Some((_, existing)) => {
                    for &(start, end) in r {
                        add_range(existing, start, end);
                    }
                }
                None => out.push((path, r.clone())),
            }
        }
        out
    }

    /// Distinct bytes of file data read so far, over all files and layers (a range read twice
    /// counts once). Reads as the filesystem saw them, so the kernel's readahead is included.
    pub fn bytes_read(&self) -> u64 {
        let ranges = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        ranges
            .values()
            .flat_map(|r| r.iter().map(|(start, end)| end - start))
            .sum()
    }
}

impl LayerReads {
    /// Notes a read of `len` bytes at `offset` of `ino` (`len` as served, already cut at the
    /// end of the file).
    pub fn record(&self, ino: u64, offset: u64, len: u64) {
        let Some(flag) = self.seen.get(ino as usize) else {
            return;
        };
        if !flag.swap(true, Ordering::Relaxed) {
            self.log
                .reads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((self.layer, ino));
        }
        if len > 0 {
            let mut ranges = self.log.ranges.lock().unwrap_or_else(|p| p.into_inner());
            add_range(
                ranges.entry((self.layer, ino)).or_default(),
                offset,
                offset.saturating_add(len),
            );
        }
    }
}

/// Adds [start, end) to a sorted list of disjoint ranges, merging what overlaps or touches.
fn add_range(ranges: &mut Ranges, start: u64, end: u64) {
    if start >= end {
        return;
    }
    // First range that ends at or after `start`: everything before it stays as it is.
    let first = ranges.partition_point(|&(_, e)| e < start);
    let mut merged = (start, end);
    let mut last = first;
    while let Some(&(s, e)) = ranges.get(last) {
        if s > merged.1 {
            break;
        }
        merged = (merged.0.min(s), merged.1.max(e));
        last += 1;
    }
    ranges.splice(first..last, [merged]);
}

/// A path of inode `ino` in `tree` (any one of its names when it has several).
fn path_of(tree: &Tree, ino: u64) -> Option<String> {
    let mut parts = Vec::new();
    let mut current = tree.get(ino)?;
    // Parent links form a tree rooted at ROOT_INO; the bound guards against a malformed one.
    for _ in 0..tree.len() {
        if current.ino == ROOT_INO {
            parts.reverse();
            return Some(format!("/{}", parts.join("/")));
        }
        let parent = tree.get(current.parent)?;
        let (name, _) = parent.children.iter().find(|(_, c)| *c == current.ino)?;
        parts.push(name.to_string_lossy().into_owned());
        current = parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::add_range;
    use proptest::prelude::*;

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        let mut r = Vec::new();
        add_range(&mut r, 10, 20);
        add_range(&mut r, 30, 40);
        assert_eq!(r, [(10, 20), (30, 40)]);
        add_range(&mut r, 20, 25);
        assert_eq!(r, [(10, 25), (30, 40)]);
        add_range(&mut r, 0, 5);
        assert_eq!(r, [(0, 5), (10, 25), (30, 40)]);
        add_range(&mut r, 4, 31);
        assert_eq!(r, [(0, 40)]);
        add_range(&mut r, 12, 13);
        assert_eq!(r, [(0, 40)]);
    }

    proptest! {
        /// The merged list covers exactly the union of what was added (checked bit by bit
        /// on a small universe) and stays sorted and disjoint.
        #[test]
        fn ranges_cover_the_union(adds in proptest::collection::vec((0u64..200, 0u64..40), 0..30)) {
            let mut r = Vec::new();
            let mut covered = [false; 240];
            for (start, len) in adds {
                add_range(&mut r, start, start + len);
                for c in &mut covered[start as usize..(start + len) as usize] {
                    *c = true;
                }
            }
            for w in r.windows(2) {
                prop_assert!(w[0].1 < w[1].0, "not disjoint and apart: {:?}", r);
            }
            for (i, c) in covered.iter().enumerate() {
                let inside = r.iter().any(|&(s, e)| (s..e).contains(&(i as u64)));
                prop_assert_eq!(inside, *c, "byte {} in {:?}", i, r);
            }
        }
    }
}
