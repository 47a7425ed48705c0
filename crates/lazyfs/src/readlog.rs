//! A record of which files a workload reads, first read first, across the layers of a mount:
//! the raw material of a learned prefetch list (`soci mount --record-reads` writes it in the
//! form `soci create --prefetch-files-json` takes).

use crate::tree::{Tree, ROOT_INO};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// First reads of files, in order, shared by the layers of one mount.
#[derive(Default)]
pub struct ReadLog {
    reads: Mutex<Vec<(usize, u64)>>,
    layers: Mutex<Vec<Arc<Tree>>>,
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
}

impl LayerReads {
    /// Notes a read of `ino`.
    pub fn record(&self, ino: u64) {
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
    }
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
