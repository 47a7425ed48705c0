//! The merged view of an image's layers, as overlayfs would show it, without mounting:
//! path resolution (symlinks followed the way the kernel does), directory listings and file
//! reads. `soci ls` and `soci cat` use it to inspect an image in a registry while fetching only
//! the index, the zTOCs and the spans holding the files read.

use crate::spans::{SharedError, SpanManager};
use crate::tree::{Node, NodeKind, Tree, OVERLAY_OPAQUE_XATTR, ROOT_INO};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// Symlinks followed during one resolution before giving up (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// Where a layer's file data comes from.
pub enum LayerData {
    /// Fetched span by span.
    Lazy(SpanManager),
    /// The whole uncompressed tar in memory (small layers without a zTOC).
    Memory(Arc<Vec<u8>>),
}

/// One layer of the view.
pub struct ViewLayer {
    /// Layer digest.
    pub digest: String,
    /// Its files.
    pub tree: Arc<Tree>,
    /// Its data.
    pub data: LayerData,
}

/// Why a path could not be resolved or read.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Nothing at that path (or it was deleted by an upper layer).
    #[error("{0}: no such file or directory in the image")]
    NotFound(String),
    /// A path component is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(String),
    /// Too many symlinks.
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
    /// Not a regular file.
    #[error("{0}: not a regular file")]
    NotAFile(String),
    /// Reading the data failed.
    #[error("{path}: {source}")]
    Read {
        /// Path read.
        path: String,
        /// What failed.
        #[source]
        source: SharedError,
    },
}

/// An entry found in the merged view.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Canonical path (symlinks resolved, except the last component when not followed).
    pub path: String,
    /// Index of the layer that provides the entry (0 = topmost).
    pub layer: usize,
    /// The inode in that layer.
    pub node: &'a Node,
    /// For directories: every layer's directory merged at this path, topmost first.
    dirs: Vec<(usize, u64)>,
}

/// The layers of an image, topmost first.
pub struct ImageView {
    layers: Vec<ViewLayer>,
}

fn is_whiteout(node: &Node) -> bool {
    node.kind == NodeKind::Char && node.rdev == 0
}

fn is_opaque(node: &Node) -> bool {
    node.xattrs
        .get(OsStr::new(OVERLAY_OPAQUE_XATTR))
        .is_some_and(|v| v == b"y")
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

impl ImageView {
    /// A view over `layers`, topmost first.
    pub fn new(layers: Vec<ViewLayer>) -> Self {
        ImageView { layers }
    }

    /// The layers, topmost first.
    pub fn layers(&self) -> &[ViewLayer] {
        &self.layers
    }

    /// The merged root directory; `None` for an image without layers.
    fn root(&self) -> Option<Entry<'_>> {
        let mut dirs = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            dirs.push((i, ROOT_INO));
            if l.tree.get(ROOT_INO).is_some_and(is_opaque) {
                break;
            }
        }
        let &(layer, ino) = dirs.first()?;
        let node = self.layers.get(layer)?.tree.get(ino)?;
        Some(Entry {
            path: "/".into(),
            layer,
            node,
            dirs,
        })
    }

    /// The entry `name` in merged directory `dir`, with overlay rules: the topmost layer
    /// that has the name wins, a whiteout deletes it, and directories merge down to the first
    /// opaque one.
    fn child<'a>(&'a self, dir: &Entry<'a>, name: &OsStr) -> Option<Entry<'a>> {
        let path = join(&dir.path, &name.to_string_lossy());
        let mut found: Option<Entry<'a>> = None;
        for &(layer, ino) in &dir.dirs {
            let Some(node) = self.layers[layer].tree.lookup(ino, name) else {
                continue;
            };
            match &mut found {
                None => {
                    if is_whiteout(node) {
                        return None;
                    }
                    let dirs = if node.kind == NodeKind::Dir {
                        vec![(layer, node.ino)]
                    } else {
                        Vec::new()
                    };
                    let opaque = node.kind != NodeKind::Dir || is_opaque(node);
                    found = Some(Entry {
                        path: path.clone(),
                        layer,
                        node,
                        dirs,
                    });
                    if opaque {
                        break;
                    }
                }
                Some(entry) => {
                    // Below a directory only directories merge; anything else ends it.
                    if node.kind != NodeKind::Dir {
                        break;
                    }
                    entry.dirs.push((layer, node.ino));
                    if is_opaque(node) {
                        break;
                    }
                }
            }
        }
        found
    }

    /// Resolves `path` from the root, following symlinks in every component and, when
    /// `follow_last`, in the last one too.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Entry<'_>, ViewError> {
        let mut pending: Vec<OsString> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .rev()
            .map(OsString::from)
            .collect();
        let mut stack = vec![self.root().ok_or_else(|| ViewError::NotFound("/".into()))?];
        let mut hops = 0;
        while let Some(name) = pending.pop() {
            let current = stack.last().expect("the root stays on the stack");
            if name == "." {
                continue;
            }
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            if current.node.kind != NodeKind::Dir {
                return Err(ViewError::NotADirectory(current.path.clone()));
            }
            let Some(entry) = self.child(current, &name) else {
                return Err(ViewError::NotFound(join(
                    &current.path,
                    &name.to_string_lossy(),
                )));
            };
            let last = pending.is_empty();
            if entry.node.kind == NodeKind::Symlink && (!last || follow_last) {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(ViewError::Loop(path.to_owned()));
                }
                let target = entry.node.link_target.as_bytes();
                if target.starts_with(b"/") {
                    stack.truncate(1);
                }
                for part in target.split(|b| *b == b'/').filter(|p| !p.is_empty()).rev() {
                    pending.push(OsStr::from_bytes(part).to_owned());
                }
                continue;
            }
            stack.push(entry);
        }
        Ok(stack.pop().expect("the root stays on the stack"))
    }

    /// The merged entries of directory `dir`, sorted by name.
    pub fn list<'a>(&'a self, dir: &Entry<'a>) -> Result<Vec<Entry<'a>>, ViewError> {
        if dir.node.kind != NodeKind::Dir {
            return Err(ViewError::NotADirectory(dir.path.clone()));
        }
        let mut names: BTreeMap<&OsStr, ()> = BTreeMap::new();
        for &(layer, ino) in &dir.dirs {
            if let Some(node) = self.layers[layer].tree.get(ino) {
                for (name, _) in &node.children {
                    names.insert(name.as_os_str(), ());
                }
            }
        }
        Ok(names
            .into_keys()
            .filter_map(|name| self.child(dir, name))
            .collect())
    }

    /// Reads bytes `range` of regular file `entry` (clipped to its size).
    pub async fn read(&self, entry: &Entry<'_>, range: Range<u64>) -> Result<Vec<u8>, ViewError> {
        if entry.node.kind != NodeKind::Regular {
            return Err(ViewError::NotAFile(entry.path.clone()));
        }
        let end = range.end.min(entry.node.size);
        let start = range.start.min(end);
        let offset = entry.node.data_offset;
        match &self.layers[entry.layer].data {
            LayerData::Lazy(spans) => {
                spans
                    .read(offset + start..offset + end)
                    .await
                    .map_err(|source| ViewError::Read {
                        path: entry.path.clone(),
                        source,
                    })
            }
            LayerData::Memory(bytes) => bytes
                .get((offset + start) as usize..(offset + end) as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| ViewError::NotAFile(entry.path.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_without_layers_has_nothing_to_resolve() {
        let view = ImageView::new(Vec::new());
        assert!(matches!(
            view.resolve("/", false),
            Err(ViewError::NotFound(_))
        ));
        assert!(matches!(
            view.resolve("etc/passwd", true),
            Err(ViewError::NotFound(_))
        ));
    }
}
