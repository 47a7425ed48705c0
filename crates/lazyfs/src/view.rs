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

/// Largest uncompressed size of a layer without a zTOC that is read into memory.
const MAX_SMALL_LAYER: u64 = 1 << 30;

/// Why an image view could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenViewError {
    /// A layer with a zTOC could not be prepared (zTOC fetch or check).
    #[error(transparent)]
    Layer(#[from] Box<crate::layer::LayerError>),
    /// A layer without a zTOC could not be fetched.
    #[error("fetching layer {layer}: {source}")]
    Fetch {
        /// The layer.
        layer: String,
        /// The registry error.
        #[source]
        source: registry::Error,
    },
    /// A layer without a zTOC cannot be read whole.
    #[error("layer {layer} has no zTOC and {reason}")]
    SmallLayer {
        /// The layer.
        layer: String,
        /// Why it cannot be read.
        reason: String,
    },
}

impl ImageView {
    /// The view of `image` (from `repo`) through its SOCI `index`: each layer with a zTOC is
    /// read lazily (spans cached under `cache_root`), each small layer without one is
    /// fetched whole, verified and kept in memory.
    pub async fn open(
        repo: &registry::Repository,
        image: &oci::resolve::ResolvedImage,
        index: &oci::soci_index::SociIndex,
        cache_root: &std::path::Path,
    ) -> Result<Self, OpenViewError> {
        let budget = crate::spans::CacheBudget::new(None);
        let mut layers = Vec::new();
        for layer in image.manifest.layers().iter().rev() {
            let ztoc = index
                .ztocs
                .iter()
                .find(|z| &z.layer_digest == layer.digest());
            let view_layer = match ztoc {
                Some(z) => {
                    let config = crate::spans::SpanConfig::default();
                    let rl = crate::layer::RemoteLayer::open(
                        repo,
                        &crate::layer::LocalBlobs::default(),
                        layer,
                        z,
                        cache_root,
                        config,
                        budget.clone(),
                    )
                    .await
                    .map_err(Box::new)?;
                    ViewLayer {
                        digest: layer.digest().to_string(),
                        tree: rl.tree,
                        data: LayerData::Lazy(rl.spans),
                    }
                }
                None => small_layer(repo, layer).await?,
            };
            layers.push(view_layer);
        }
        Ok(ImageView::new(layers))
    }
}

/// A layer without a zTOC (small by definition): fetched whole, verified, kept in memory.
async fn small_layer(
    repo: &registry::Repository,
    layer: &oci::Descriptor,
) -> Result<ViewLayer, OpenViewError> {
    use std::io::Read;
    let digest = layer.digest().to_string();
    let blob = repo
        .get_blob_bytes(layer.digest(), layer.size())
        .await
        .map_err(|source| OpenViewError::Fetch {
            layer: digest.clone(),
            source,
        })?;
    let fail = |reason: String| OpenViewError::SmallLayer {
        layer: digest.clone(),
        reason,
    };
    let reader: Box<dyn Read + '_> = match oci::manifest::LayerCompression::of(layer.media_type()) {
        oci::manifest::LayerCompression::Gzip => {
            Box::new(flate2::read::MultiGzDecoder::new(&blob[..]))
        }
        oci::manifest::LayerCompression::Uncompressed => Box::new(&blob[..]),
        other => {
            let why = other.skip_reason().unwrap_or_default();
            return Err(fail(format!("{why}; it cannot be read")));
        }
    };
    let mut tar = Vec::new();
    reader
        .take(MAX_SMALL_LAYER + 1)
        .read_to_end(&mut tar)
        .map_err(|e| fail(format!("cannot be decompressed: {e}")))?;
    if tar.len() as u64 > MAX_SMALL_LAYER {
        return Err(fail(format!(
            "is over {MAX_SMALL_LAYER} bytes uncompressed"
        )));
    }
    let toc = ztoc::toc::read_toc(&tar[..]).map_err(|e| fail(format!("its tar: {e}")))?;
    Ok(ViewLayer {
        digest,
        tree: Arc::new(Tree::build(&toc.files)),
        data: LayerData::Memory(Arc::new(tar)),
    })
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
