//! One remote layer ready to be served lazily: its zTOC fetched and checked, its inode tree
//! built, and its span manager pointed at the registry.

use crate::fs::{LayerFs, MountConfig, MountedSession};
use crate::metrics::LayerMetrics;
use crate::serve::FuseOptions;
use crate::source::RegistrySource;
use crate::spans::{CacheBudget, SpanConfig, SpanManager};
use crate::tree::Tree;
use crate::windows::WindowSource;
use oci::prefetch::PrefetchArtifact;
use oci::soci_index::{PrefetchDescriptor, ZtocDescriptor};
use oci::Descriptor;
use registry::Repository;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

/// Largest zTOC read (a zTOC of a multi-GB layer with many small files is a few MB).
const MAX_ZTOC_SIZE: u64 = 512 << 20;

/// Why a layer could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Fetching the zTOC or prefetch artifact failed.
    #[error("fetching {what} of layer {layer}: {source}")]
    Fetch {
        /// What was fetched: `zTOC sha256:…` or `prefetch artifact sha256:…`.
        what: String,
        /// Layer digest.
        layer: String,
        /// The registry error.
        #[source]
        source: registry::Error,
    },
    /// The zTOC or prefetch artifact does not decode or does not describe this layer.
    #[error("{what} of layer {layer} is unusable: {message}")]
    Invalid {
        /// What is unusable: `zTOC sha256:…` or `prefetch artifact sha256:…`.
        what: String,
        /// Layer digest.
        layer: String,
        /// What is wrong.
        message: String,
    },
    /// The span manager could not start (cache directory).
    #[error(transparent)]
    Spans(#[from] crate::Error),
}

/// Metadata blobs (zTOCs, prefetch artifacts) held in memory, used instead of the registry's
/// copy: `soci optimize` serves an image from an index it built and has not published.
#[derive(Clone, Default)]
pub struct LocalBlobs(Arc<HashMap<oci::Digest, bytes::Bytes>>);

impl LocalBlobs {
    /// The blobs given, by digest (each is checked against its digest when used).
    pub fn new(blobs: impl IntoIterator<Item = (oci::Digest, bytes::Bytes)>) -> Self {
        LocalBlobs(Arc::new(blobs.into_iter().collect()))
    }

    /// The blob of `digest`, if held.
    fn get(&self, digest: &oci::Digest) -> Option<&bytes::Bytes> {
        self.0.get(digest)
    }
}

/// A lazily served layer.
pub struct RemoteLayer {
    /// The layer's descriptor from the image manifest.
    pub layer: Descriptor,
    /// Its files.
    pub tree: Arc<Tree>,
    /// Its data.
    pub spans: SpanManager,
}

impl RemoteLayer {
    /// Fetches (or takes from `local`) and checks the zTOC of `layer`, builds its tree, and
    /// prepares span fetches from `repo` with a cache under `cache_root/<zTOC hex>`.
    pub async fn open(
        repo: &Repository,
        local: &LocalBlobs,
        layer: &Descriptor,
        ztoc_desc: &ZtocDescriptor,
        cache_root: &Path,
        config: SpanConfig,
        budget: Arc<CacheBudget>,
    ) -> Result<Self, LayerError> {
        let layer_digest = layer.digest().to_string();
        let ztoc_digest = ztoc_desc.digest.to_string();
        let what = format!("zTOC {ztoc_digest}");
        let invalid = |message: String| LayerError::Invalid {
            what: what.clone(),
            layer: layer_digest.clone(),
            message,
        };
        let hex = ztoc_digest.trim_start_matches("sha256:");
        let cache_dir = cache_root.join(hex);
        let (ztoc, windows) = match open_lean(repo, local, layer, ztoc_desc, &cache_dir).await {
            Some(lean) => (lean.ztoc, Some(lean.windows)),
            None => {
                let bytes = full_ztoc(repo, local, &layer_digest, ztoc_desc, &cache_dir).await?;
                let ztoc = ztoc::decode(&bytes).map_err(|e| invalid(e.to_string()))?;
                (ztoc, None)
            }
        };
        if ztoc.compressed_archive_size != layer.size() {
            return Err(invalid(format!(
                "it describes a {} byte blob but the layer has {} bytes",
                ztoc.compressed_archive_size,
                layer.size()
            )));
        }
        let tree = Tree::build(&ztoc.toc.files);
        for skipped in &tree.skipped {
            tracing::warn!(layer = %layer_digest, "entry left out of the mount: {skipped}");
        }
        let mut spans = SpanManager::new(
            layer_digest.clone(),
            Arc::new(ztoc),
            Box::new(RegistrySource::new(repo.clone(), layer.digest().clone())),
            cache_dir,
            config,
            Arc::new(LayerMetrics::default()),
            budget,
        )?;
        if let Some(index) = windows {
            let blob = RegistrySource::new(repo.clone(), ztoc_desc.digest.clone());
            spans = spans.with_windows(WindowSource::new(index, Box::new(blob)));
        }
        Ok(RemoteLayer {
            layer: layer.clone(),
            tree: Arc::new(tree),
            spans,
        })
    }

    /// Fetches the spans a prefetch artifact lists; returns how many it listed.
    pub async fn prefetch(
        &self,
        repo: &Repository,
        local: &LocalBlobs,
        artifact: &PrefetchDescriptor,
    ) -> Result<usize, LayerError> {
        let layer = self.layer.digest().to_string();
        let what = format!("prefetch artifact {}", artifact.digest);
        let invalid = |message: String| LayerError::Invalid {
            what: what.clone(),
            layer: layer.clone(),
            message,
        };
        let bytes = fetch_metadata_blob(
            (repo, local),
            &what,
            &layer,
            &artifact.digest,
            artifact.size,
            oci::prefetch::MAX_PREFETCH_SIZE,
        )
        .await?;
        let parsed = PrefetchArtifact::parse(&bytes, &what).map_err(|e| invalid(e.to_string()))?;
        let spans = parsed.ranked_spans();
        let count = spans.len();
        self.spans
            .prefetch_ranked(spans)
            .await
            .map_err(|e| invalid(format!("prefetching: {e}")))?;
        Ok(count)
    }

    /// Mounts the layer read-only at `mountpoint`, fetching on `runtime`, as `fuse` says
    /// (threads, kernel cache lifetimes, passthrough; first reads of files are noted in its
    /// read log when given). Serving a layer whole (prefetch, background fetch) is
    /// [`crate::serve::serve_layer`]'s job.
    pub fn mount(
        &self,
        mountpoint: &Path,
        runtime: tokio::runtime::Handle,
        fuse: &FuseOptions,
    ) -> std::io::Result<MountedSession> {
        let mut fs = self.filesystem(runtime);
        if let Some(log) = &fuse.read_log {
            fs = fs.record_reads(log);
        }
        fs.mount(mountpoint, &self.mount_config(fuse))
    }

    /// Serves the live FUSE connection `device` of this layer mounted at `mountpoint` by a
    /// process that is gone (see [`LayerFs::resume`]).
    pub fn resume(
        &self,
        device: OwnedFd,
        mountpoint: &Path,
        runtime: tokio::runtime::Handle,
        fuse: &FuseOptions,
    ) -> std::io::Result<MountedSession> {
        self.filesystem(runtime)
            .resume(device, mountpoint, &self.mount_config(fuse))
    }

    fn filesystem(&self, runtime: tokio::runtime::Handle) -> LayerFs {
        LayerFs::new(
            self.tree.clone(),
            Some(self.spans.clone()),
            runtime,
            self.spans.metrics().clone(),
        )
    }

    fn mount_config(&self, fuse: &FuseOptions) -> MountConfig {
        MountConfig {
            threads: fuse.threads.max(1),
            fs_name: format!("soci:{}", self.layer.digest()),
            ttls: fuse.ttls,
            passthrough: fuse.passthrough.clone(),
        }
    }
}

/// Name of the zTOC's copy in its layer's span cache directory.
const KEPT_ZTOC: &str = "ztoc";
/// Name of the lean zTOC's copy there.
const KEPT_LEAN: &str = "lean";

/// The full zTOC of a layer: kept on disk by an earlier open, or fetched (and kept).
async fn full_ztoc(
    repo: &Repository,
    local: &LocalBlobs,
    layer: &str,
    desc: &ZtocDescriptor,
    cache_dir: &Path,
) -> Result<bytes::Bytes, LayerError> {
    if let Some(bytes) = read_kept(cache_dir, KEPT_ZTOC, &desc.digest, desc.size) {
        return Ok(bytes);
    }
    let what = format!("zTOC {}", desc.digest);
    let bytes = fetch_metadata_blob(
        (repo, local),
        &what,
        layer,
        &desc.digest,
        desc.size,
        MAX_ZTOC_SIZE,
    )
    .await?;
    keep(cache_dir, KEPT_ZTOC, &bytes);
    Ok(bytes)
}

/// The layer's lean zTOC, when its index lists one and no full zTOC is at hand already
/// (on disk from an earlier open, or held in `local`), checked against the zTOC it names.
/// Anything wrong with it is logged and `None`: the full zTOC serves instead.
async fn open_lean(
    repo: &Repository,
    local: &LocalBlobs,
    layer: &Descriptor,
    desc: &ZtocDescriptor,
    cache_dir: &Path,
) -> Option<ztoc::lean::LeanZtoc> {
    let lean = desc.lean.as_ref()?;
    if local.get(&desc.digest).is_some() || cache_dir.join(KEPT_ZTOC).exists() {
        return None;
    }
    let layer_digest = layer.digest().to_string();
    let what = format!("lean zTOC {}", lean.digest);
    let bytes = match read_kept(cache_dir, KEPT_LEAN, &lean.digest, lean.size) {
        Some(bytes) => bytes,
        None => {
            let limit = ztoc::lean::MAX_ZTOC_BYTES;
            match fetch_metadata_blob(
                (repo, local),
                &what,
                &layer_digest,
                &lean.digest,
                lean.size,
                limit,
            )
            .await
            {
                Ok(bytes) => {
                    keep(cache_dir, KEPT_LEAN, &bytes);
                    bytes
                }
                Err(e) => {
                    tracing::warn!(layer = %layer_digest, "{e}; using the full zTOC");
                    return None;
                }
            }
        }
    };
    let decoded = ztoc::lean::decode_lean(&bytes, desc.size).and_then(|l| {
        if l.windows.ztoc_size == desc.size {
            Ok(l)
        } else {
            Err(ztoc::Error::InvalidZtoc(format!(
                "it was made from a zTOC of {} bytes, not {}",
                l.windows.ztoc_size, desc.size
            )))
        }
    });
    match decoded {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(layer = %layer_digest, "{what} is unusable: {e}; using the full zTOC");
            None
        }
    }
}

/// The blob `name` kept in `cache_dir` by an earlier open, if it is there and matches
/// `digest` and `size`: a restarted server resumes its mounts without asking the registry.
fn read_kept(
    cache_dir: &Path,
    name: &str,
    digest: &oci::Digest,
    size: u64,
) -> Option<bytes::Bytes> {
    let path = cache_dir.join(name);
    let len = std::fs::metadata(&path).ok()?.len();
    if len != size || len > MAX_ZTOC_SIZE {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    (&oci::digest::sha256(&bytes) == digest).then(|| bytes::Bytes::from(bytes))
}

/// Keeps a verified metadata blob in `cache_dir` as `name` (written whole, then renamed into
/// place). Best effort: without the copy a later open fetches it again.
fn keep(cache_dir: &Path, name: &str, bytes: &[u8]) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(cache_dir)?;
        // The span manager removes `.tmp.<name>.<pid>` files of dead writers.
        let tmp = cache_dir.join(format!(".tmp.{name}.{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, cache_dir.join(name))
    };
    if let Err(e) = write() {
        tracing::debug!(dir = %cache_dir.display(), "{name} not kept on disk: {e}");
    }
}

/// Fetches a small metadata blob of a layer (a zTOC or a prefetch artifact), verified against
/// its digest, refusing sizes over `limit` before anything is downloaded; a blob held in
/// `local` is only verified.
async fn fetch_metadata_blob(
    (repo, local): (&Repository, &LocalBlobs),
    what: &str,
    layer: &str,
    digest: &oci::Digest,
    size: u64,
    limit: u64,
) -> Result<bytes::Bytes, LayerError> {
    if size > limit {
        return Err(LayerError::Invalid {
            what: what.to_owned(),
            layer: layer.to_owned(),
            message: format!("{size} bytes is over the {limit} byte limit"),
        });
    }
    if let Some(bytes) = local.get(digest) {
        if bytes.len() as u64 != size || &oci::digest::sha256(bytes) != digest {
            return Err(LayerError::Invalid {
                what: what.to_owned(),
                layer: layer.to_owned(),
                message: "the copy held in memory does not match its descriptor".into(),
            });
        }
        return Ok(bytes.clone());
    }
    repo.get_blob_bytes(digest, size)
        .await
        .map_err(|source| LayerError::Fetch {
            what: what.to_owned(),
            layer: layer.to_owned(),
            source,
        })
}
