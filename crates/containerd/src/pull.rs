//! Pulling an image into containerd the way containerd's own client pulls with unpack, but
//! with the labels a remote snapshotter needs on every layer's Prepare ([`LayerLabels`]), so
//! the SOCI snapshotter can answer "already exists" for the layers it mounts lazily instead
//! of having them downloaded (`soci image rpull`).
//!
//! The steps: resolve the image in its registry; store its index(es), manifest and config
//! in containerd's content store with the GC references and distribution sources
//! containerd's pull sets; for each layer, Prepare a snapshot on its parent (a remote
//! snapshotter may answer that it exists), else fetch the blob, apply it and commit the
//! snapshot under its chain ID; label the config with the top snapshot and write the image
//! record. Everything runs under a lease that is deleted at the end, so an interrupted pull
//! leaves nothing that garbage collection would not take.

use crate::client::{Client, Image, WriteOutcome};
use crate::labels::{self, LayerLabels};
use containerd_client::types::{Descriptor as CtdDescriptor, Mount};
use futures_util::TryStreamExt;
use oci::manifest::{ParsedManifest, MAX_MANIFEST_SIZE};
use oci::reference::ImageRef;
use oci::resolve::CachingFetcher;
use oci::resolve::{ManifestFetcher, PlatformSelection, ResolvedImage, MAX_CONFIG_SIZE};
use oci::{Descriptor, Digest};
use registry::Repository;
use std::collections::HashMap;
use std::time::Duration;

/// How long the pull's lease survives if the pull dies before deleting it (containerd's
/// client uses 24 hours too).
const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// Nested indexes deeper than this are not followed (a loop or a hostile index).
const MAX_INDEX_DEPTH: usize = 8;
/// Prepares per layer: a key collision, or a remote snapshot that vanished between the
/// answers, is retried with a new key, as containerd's unpacker does.
const PREPARE_ATTEMPTS: usize = 3;

/// What to pull, and into which snapshotter.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The image as typed (`HOST/REPO[:TAG|@DIGEST]`); it names the image record the way
    /// `ctr` would.
    pub image: String,
    /// Which platform's image of a multi-platform index.
    pub platform: PlatformSelection,
    /// containerd snapshotter to unpack into.
    pub snapshotter: String,
    /// SOCI index for the snapshotter to use (default: it finds one).
    pub soci_index_digest: Option<Digest>,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    /// The image record's name.
    pub name: String,
    /// The image manifest pulled.
    pub manifest_digest: Digest,
    /// Layers whose snapshot existed already.
    pub present: usize,
    /// Layers the snapshotter provided itself (lazily, not downloaded).
    pub remote: usize,
    /// Layers fetched and unpacked.
    pub fetched: usize,
    /// Bytes downloaded for the fetched layers (blobs containerd already had are not
    /// counted).
    pub fetched_bytes: u64,
}

/// What happened to one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerOutcome {
    /// Its snapshot existed already.
    Present,
    /// The snapshotter provided it (a remote snapshot): nothing was downloaded.
    Remote,
    /// It was unpacked from its blob, of which `downloaded` bytes came from the registry.
    Fetched {
        /// Bytes downloaded (0 when containerd had the blob).
        downloaded: u64,
    },
}

/// Progress: one layer is done.
#[derive(Debug, Clone, Copy)]
pub struct LayerEvent<'a> {
    /// The layer.
    pub layer: &'a Descriptor,
    /// Its chain ID (the committed snapshot's name).
    pub chain_id: &'a str,
    /// The snapshotter it went into.
    pub snapshotter: &'a str,
    /// What happened.
    pub outcome: LayerOutcome,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The image is not a registry reference.
    #[error("{image} is not a registry reference; rpull needs HOST/REPO[:TAG|@DIGEST]")]
    NotRegistryReference {
        /// The image as given.
        image: String,
    },
    /// containerd refused or failed a call.
    #[error(transparent)]
    Containerd(#[from] crate::client::Error),
    /// The registry refused or failed a request (the error names the image or blob; boxed:
    /// registry errors are large and rare).
    #[error(transparent)]
    Registry(Box<registry::Error>),
    /// A reference, manifest or index is invalid, or no platform matches.
    #[error(transparent)]
    Image(#[from] oci::Error),
    /// The manifest the platform selection chose is not under the reference's index.
    #[error(
        "image {image}: the image manifest {manifest} is not reachable from the reference's index"
    )]
    Unreachable {
        /// The image.
        image: String,
        /// The manifest.
        manifest: Digest,
    },
    /// The image config cannot be read.
    #[error("image {image}: the config {config} is not JSON")]
    ConfigNotJson {
        /// The image.
        image: String,
        /// The config blob.
        config: Digest,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A diff ID in the image config is not a digest.
    #[error(
        "image {image}: config diff ID {value:?} is not a digest (expected sha256:<64 hex digits>)"
    )]
    InvalidDiffId {
        /// The image.
        image: String,
        /// The value.
        value: String,
    },
    /// The manifest and the config disagree on the number of layers.
    #[error("image {image}: the manifest lists {layers} layers but the config {diff_ids} diff IDs; the image is corrupt")]
    LayerCountMismatch {
        /// The image.
        image: String,
        /// Layers in the manifest.
        layers: usize,
        /// Diff IDs in the config.
        diff_ids: usize,
    },
    /// Downloading a layer blob failed.
    #[error("downloading layer {layer}")]
    Download {
        /// The layer.
        layer: Digest,
        /// The registry's error.
        #[source]
        source: Box<registry::Error>,
    },
    /// A layer unpacked to something else than the config says.
    #[error("layer {layer} unpacked to {applied}, but the image config says its diff ID is {diff_id}: the image is corrupt")]
    DiffIdMismatch {
        /// The layer.
        layer: Digest,
        /// What containerd's diff service computed.
        applied: String,
        /// The config's diff ID.
        diff_id: Digest,
    },
    /// The snapshotter said the snapshot exists but does not list it.
    #[error("layer {layer}: snapshotter {snapshotter} kept answering 'already exists' but has no snapshot {chain_id}")]
    SnapshotMissing {
        /// The layer.
        layer: Digest,
        /// The snapshotter.
        snapshotter: String,
        /// The snapshot it should have.
        chain_id: String,
    },
    /// Resolving the image on a blocking thread failed (a panic there: a bug).
    #[error("resolving {image}: the task failed: {reason}")]
    Task {
        /// The image.
        image: String,
        /// The panic or cancellation.
        reason: String,
    },
}

impl From<registry::Error> for PullError {
    fn from(e: registry::Error) -> Self {
        PullError::Registry(Box::new(e))
    }
}

/// containerd's chain IDs: chain(0) = diff(0), chain(i) = sha256(chain(i-1) + " " + diff(i)).
pub fn chain_ids<D: AsRef<str>>(diff_ids: &[D]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let diff_id = diff_id.as_ref();
        let next = match out.last() {
            None => diff_id.to_owned(),
            Some(prev) => crate::client::sha256_str(format!("{prev} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Pulls `options.image` from its registry (through `registry`, whose configuration
/// supplies credentials, TLS and mirrors) into containerd through `client`, calling
/// `progress` as each layer is done.
pub async fn pull(
    client: &Client,
    registry: &registry::Client,
    options: &PullOptions,
    progress: &(dyn Fn(&LayerEvent<'_>) + Sync),
) -> Result<PullReport, PullError> {
    let source = Source::parse(&options.image)?;
    let repo = registry.repository(&source.host, &source.repository)?;
    let lease = client.create_lease(LEASE_EXPIRY).await?;
    let result = pull_leased(
        &client.with_lease(&lease),
        &repo,
        &source,
        options,
        progress,
    )
    .await;
    // The lease goes on success and failure alike: on success the image record and the GC
    // labels hold everything, on failure what was written becomes collectable.
    if let Err(e) = client.delete_lease(&lease).await {
        tracing::warn!("deleting lease {lease}: {e}");
    }
    result
}

async fn pull_leased(
    client: &Client,
    repo: &Repository,
    source: &Source,
    options: &PullOptions,
    progress: &(dyn Fn(&LayerEvent<'_>) + Sync),
) -> Result<PullReport, PullError> {
    let image = resolve(repo, source, &options.platform).await?;
    store_metadata(client, &image, source).await?;
    let unpacker = Unpacker {
        client,
        repo,
        source,
        snapshotter: &options.snapshotter,
    };
    let mut report = PullReport {
        name: source.name.clone(),
        manifest_digest: image.manifest.digest().clone(),
        present: 0,
        remote: 0,
        fetched: 0,
        fetched_bytes: 0,
    };
    for step in layer_steps(&image, &source.name, options.soci_index_digest.as_ref()) {
        let outcome = unpacker.unpack(&step).await?;
        match outcome {
            LayerOutcome::Present => report.present += 1,
            LayerOutcome::Remote => report.remote += 1,
            LayerOutcome::Fetched { downloaded } => {
                report.fetched += 1;
                report.fetched_bytes += downloaded;
            }
        }
        tracing::info!(layer = %step.layer.digest(), chain_id = step.chain_id, ?outcome, "layer done");
        progress(&LayerEvent {
            layer: step.layer,
            chain_id: step.chain_id,
            snapshotter: &options.snapshotter,
            outcome,
        });
    }
    record_image(client, &image, source, &options.snapshotter).await?;
    Ok(report)
}

/// The image being pulled: where it comes from and what containerd calls it.
#[derive(Debug, Clone)]
struct Source {
    /// The tag or digest to fetch (digest wins, as in Docker).
    object: String,
    /// The image record's name.
    name: String,
    /// Registry host (with port).
    host: String,
    /// Repository path.
    repository: String,
}

impl Source {
    fn parse(typed: &str) -> Result<Self, PullError> {
        let reference = ImageRef::parse(typed)?;
        let ImageRef::Registry {
            registry,
            repository,
            tag,
            digest,
        } = &reference
        else {
            return Err(PullError::NotRegistryReference {
                image: typed.to_owned(),
            });
        };
        let object = match (digest, tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        };
        Ok(Source {
            object,
            name: image_name(typed, &reference),
            host: registry.clone(),
            repository: repository.clone(),
        })
    }
}

/// The name containerd's `ctr` gives an image it pulls: the reference as typed when it names
/// a registry host and a tag or digest (`ctr` accepts no other), else the canonical form.
fn image_name(typed: &str, parsed: &ImageRef) -> String {
    let has_host = typed
        .split_once('/')
        .is_some_and(|(h, _)| h.contains('.') || h.contains(':') || h == "localhost");
    let last = typed.rsplit('/').next().unwrap_or(typed);
    let has_object = typed.contains('@') || last.contains(':');
    if has_host && has_object {
        typed.to_owned()
    } else {
        parsed.to_string()
    }
}

/// One index on the way to the image manifest: its descriptor, its bytes, the child followed.
struct IndexStep {
    index: Descriptor,
    bytes: Vec<u8>,
    child: Descriptor,
}

/// Everything read from the registry before containerd is written to.
struct ResolvedPull {
    /// The object the reference names (what the image record points to).
    top: Descriptor,
    /// The indexes from `top` down to the manifest (empty when `top` is the manifest).
    index_path: Vec<IndexStep>,
    manifest: Descriptor,
    manifest_bytes: Vec<u8>,
    config: Descriptor,
    config_bytes: Vec<u8>,
    layers: Vec<Descriptor>,
    /// One per layer, from the config.
    diff_ids: Vec<Digest>,
    /// One per layer.
    chain_ids: Vec<String>,
}

/// Resolves the image in the registry: the platform's manifest, the indexes on the way to
/// it, its config. What follows the walk runs on a blocking thread too, with the walk's
/// cache, so nothing is fetched twice.
async fn resolve(
    repo: &Repository,
    source: &Source,
    platform: &PlatformSelection,
) -> Result<ResolvedPull, PullError> {
    let (top, walked) = registry::images::resolve(repo, &source.object, platform).await?;
    let mut fetcher =
        registry::images::registry_fetcher(tokio::runtime::Handle::current(), repo.clone());
    fetcher.cache.extend(walked.fetched);
    fetcher
        .cache
        .insert(top.desc.digest().to_string(), top.bytes);
    let image = walked.images.into_iter().next();
    let name = source.name.clone();
    tokio::task::spawn_blocking(move || resolve_blocking(&mut fetcher, &name, top.desc, image))
        .await
        .map_err(|e| PullError::Task {
            image: source.name.clone(),
            reason: e.to_string(),
        })?
}

/// The rest of [`resolve`] once the platform's `image` was chosen: the index path, the
/// manifest's bytes, the config and its diff IDs.
fn resolve_blocking(
    fetcher: &mut CachingFetcher,
    name: &str,
    top: Descriptor,
    image: Option<ResolvedImage>,
) -> Result<ResolvedPull, PullError> {
    // The walk reports "no matching platform" itself; this is belt and braces.
    let image = image.ok_or_else(|| PullError::Unreachable {
        image: name.to_owned(),
        manifest: top.digest().clone(),
    })?;
    let manifest = image.manifest_desc;
    let index_path =
        index_path(fetcher, &top, manifest.digest(), 0)?.ok_or_else(|| PullError::Unreachable {
            image: name.to_owned(),
            manifest: manifest.digest().clone(),
        })?;
    let manifest_bytes = fetcher.fetch(&manifest, MAX_MANIFEST_SIZE as u64)?;
    let config = image.manifest.config().clone();
    let config_bytes = fetcher.fetch(&config, MAX_CONFIG_SIZE)?;
    let layers = image.manifest.layers().to_vec();
    let diff_ids = layer_diff_ids(name, &config, &config_bytes, layers.len())?;
    Ok(ResolvedPull {
        top,
        index_path,
        chain_ids: chain_ids(&diff_ids),
        manifest,
        manifest_bytes,
        config,
        config_bytes,
        layers,
        diff_ids,
    })
}

/// The diff IDs of image `image` (for errors) whose manifest lists `layers` layers, from its
/// config `config` (its `bytes`): one per layer, or the image is corrupt.
pub fn layer_diff_ids(
    image: &str,
    config: &Descriptor,
    bytes: &[u8],
    layers: usize,
) -> Result<Vec<Digest>, PullError> {
    let diff_ids = config_diff_ids(image, config, bytes)?;
    if diff_ids.len() != layers {
        return Err(PullError::LayerCountMismatch {
            image: image.to_owned(),
            layers,
            diff_ids: diff_ids.len(),
        });
    }
    Ok(diff_ids)
}

/// The `rootfs.diff_ids` of image config `config` (its `bytes`) of image `image` (for errors).
fn config_diff_ids(
    image: &str,
    config: &Descriptor,
    bytes: &[u8],
) -> Result<Vec<Digest>, PullError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|source| PullError::ConfigNotJson {
            image: image.to_owned(),
            config: config.digest().clone(),
            source,
        })?;
    let listed = value
        .pointer("/rootfs/diff_ids")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    listed
        .iter()
        // A non-string entry is left out; the layer count check then reports the image.
        .filter_map(serde_json::Value::as_str)
        .map(|d| {
            oci::digest::parse(d).map_err(|_| PullError::InvalidDiffId {
                image: image.to_owned(),
                value: d.to_owned(),
            })
        })
        .collect()
}

/// The indexes from `top` down to image manifest `target`; `None` when `target` is not
/// under `top`.
fn index_path(
    fetcher: &mut dyn ManifestFetcher,
    top: &Descriptor,
    target: &Digest,
    depth: usize,
) -> Result<Option<Vec<IndexStep>>, PullError> {
    if top.digest() == target {
        return Ok(Some(Vec::new()));
    }
    if depth > MAX_INDEX_DEPTH {
        return Ok(None);
    }
    let bytes = fetcher.fetch(top, MAX_MANIFEST_SIZE as u64)?;
    let ParsedManifest::Index(index) = oci::manifest::parse(&bytes, top.digest().as_ref())? else {
        return Ok(None);
    };
    for child in index.manifests() {
        if let Some(mut rest) = index_path(fetcher, child, target, depth + 1)? {
            rest.insert(
                0,
                IndexStep {
                    index: top.clone(),
                    bytes,
                    child: child.clone(),
                },
            );
            return Ok(Some(rest));
        }
    }
    Ok(None)
}

/// Stores the indexes, the manifest and the config, with the GC references containerd's
/// pull sets: index -> child (`m.0`), manifest -> config and layers (`config`, `l.<i>`).
async fn store_metadata(
    client: &Client,
    image: &ResolvedPull,
    source: &Source,
) -> Result<(), PullError> {
    for step in &image.index_path {
        let labels = HashMap::from([labels::index_gc_ref(step.child.digest())]);
        store_blob(client, &step.index, &step.bytes, labels, source).await?;
    }
    let labels = labels::manifest_gc_refs(
        image.config.digest().as_ref(),
        image.layers.iter().map(Descriptor::digest),
    );
    store_blob(
        client,
        &image.manifest,
        &image.manifest_bytes,
        labels,
        source,
    )
    .await?;
    store_blob(
        client,
        &image.config,
        &image.config_bytes,
        HashMap::new(),
        source,
    )
    .await?;
    Ok(())
}

/// Stores a blob held in memory unless containerd has it; labels it (with its
/// distribution source too) either way.
async fn store_blob(
    client: &Client,
    desc: &Descriptor,
    bytes: &[u8],
    mut labels: HashMap<String, String>,
    source: &Source,
) -> Result<(), PullError> {
    let digest = desc.digest().to_string();
    let existing = existing_labels(client, &digest).await?;
    let (k, v) = labels::distribution_source(existing.as_ref(), &source.host, &source.repository);
    labels.insert(k, v);
    if existing.is_some() {
        client.set_content_labels(&digest, &labels).await?;
        return Ok(());
    }
    let data = futures_util::stream::iter([Ok(bytes::Bytes::copy_from_slice(bytes))]);
    client
        .write_blob(&ref_key(desc), &digest, desc.size(), &labels, data)
        .await?;
    Ok(())
}

/// A blob's labels, or `None` when containerd does not have it.
async fn existing_labels(
    client: &Client,
    digest: &str,
) -> Result<Option<HashMap<String, String>>, PullError> {
    match client.content_info(digest).await {
        Ok(info) => Ok(Some(info.labels)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Labels the config with the top snapshot, which holds the unpacked image (through its
/// parents, all of it) for as long as the image exists, and writes the image record.
async fn record_image(
    client: &Client,
    image: &ResolvedPull,
    source: &Source,
    snapshotter: &str,
) -> Result<(), PullError> {
    if let Some(top_chain) = image.chain_ids.last() {
        let labels = HashMap::from([labels::snapshot_gc_ref(snapshotter, top_chain)]);
        client
            .set_content_labels(image.config.digest().as_ref(), &labels)
            .await?;
    }
    client
        .put_image(Image {
            name: source.name.clone(),
            labels: HashMap::new(),
            target: Some(ctd_descriptor(&image.top)),
            created_at: None,
            updated_at: None,
        })
        .await?;
    Ok(())
}

/// One layer to unpack.
struct LayerStep<'a> {
    layer: &'a Descriptor,
    diff_id: &'a Digest,
    chain_id: &'a str,
    /// The chain ID of the layer below ("" for the first).
    parent: &'a str,
    /// The labels of its Prepare and Commit.
    labels: LayerLabels,
}

/// The layers in order, each with what its unpack needs.
fn layer_steps<'a>(
    image: &'a ResolvedPull,
    image_ref: &'a str,
    soci_index_digest: Option<&'a Digest>,
) -> impl Iterator<Item = LayerStep<'a>> + 'a {
    let parents = std::iter::once("").chain(image.chain_ids.iter().map(String::as_str));
    // This layer and the ones above it, for the layer-list labels.
    let from_here = (0..image.layers.len()).filter_map(|i| image.layers.get(i..));
    from_here
        .zip(&image.diff_ids)
        .zip(&image.chain_ids)
        .zip(parents)
        .filter_map(move |(((layers, diff_id), chain_id), parent)| {
            Some(LayerStep {
                layer: layers.first()?,
                diff_id,
                chain_id,
                parent,
                labels: LayerLabels::for_layers(
                    image_ref,
                    image.manifest.digest(),
                    chain_id,
                    layers,
                    soci_index_digest,
                )?,
            })
        })
}

/// What unpacking a layer needs besides the layer.
struct Unpacker<'a> {
    client: &'a Client,
    repo: &'a Repository,
    source: &'a Source,
    snapshotter: &'a str,
}

impl Unpacker<'_> {
    /// Makes sure the layer's snapshot exists: present already, provided by the
    /// snapshotter, or fetched, applied and committed.
    async fn unpack(&self, step: &LayerStep<'_>) -> Result<LayerOutcome, PullError> {
        match self
            .client
            .stat_snapshot(self.snapshotter, step.chain_id)
            .await
        {
            Ok(_) => return Ok(LayerOutcome::Present),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let labels = step.labels.to_labels();
        let Some((key, mounts)) = self.prepare(step, &labels).await? else {
            return Ok(LayerOutcome::Remote);
        };
        let unpacked = self.fetch_and_apply(step, &key, mounts, &labels).await;
        if unpacked.is_err() {
            if let Err(e) = self.client.remove_snapshot(self.snapshotter, &key).await {
                tracing::warn!("removing snapshot {key:?} after a failed unpack: {e}");
            }
        }
        Ok(LayerOutcome::Fetched {
            downloaded: unpacked?,
        })
    }

    /// Prepares an active snapshot for the layer; `None` when the snapshotter answered that
    /// the committed snapshot exists (it provides the layer itself).
    async fn prepare(
        &self,
        step: &LayerStep<'_>,
        labels: &HashMap<String, String>,
    ) -> Result<Option<(String, Vec<Mount>)>, PullError> {
        for _ in 0..PREPARE_ATTEMPTS {
            let key = format!(
                "extract-{}-{:06x} {}",
                crate::client::unix_nanos() % 1_000_000_000,
                fastrand::u32(..) & 0xff_ffff,
                step.chain_id
            );
            let prepared = self
                .client
                .prepare_snapshot(self.snapshotter, &key, step.parent, labels.clone())
                .await;
            match prepared {
                Ok(mounts) => return Ok(Some((key, mounts))),
                Err(e) if e.is_already_exists() => {
                    if self.has_snapshot(step.chain_id).await? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.has_snapshot(step.chain_id).await? {
            return Ok(None);
        }
        Err(PullError::SnapshotMissing {
            layer: step.layer.digest().clone(),
            snapshotter: self.snapshotter.to_owned(),
            chain_id: step.chain_id.to_owned(),
        })
    }

    async fn has_snapshot(&self, name: &str) -> Result<bool, PullError> {
        match self.client.stat_snapshot(self.snapshotter, name).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Downloads the layer into the content store (unless it is there), applies it onto the
    /// prepared snapshot `key` and commits that. Returns the bytes downloaded.
    async fn fetch_and_apply(
        &self,
        step: &LayerStep<'_>,
        key: &str,
        mounts: Vec<Mount>,
        labels: &HashMap<String, String>,
    ) -> Result<u64, PullError> {
        let downloaded = self.download(step.layer).await?;
        let applied = self
            .client
            .apply_diff(ctd_descriptor(step.layer), mounts)
            .await?;
        if applied.digest != step.diff_id.as_ref() {
            return Err(PullError::DiffIdMismatch {
                layer: step.layer.digest().clone(),
                applied: applied.digest,
                diff_id: step.diff_id.clone(),
            });
        }
        let committed = self
            .client
            .commit_snapshot(self.snapshotter, step.chain_id, key, labels.clone())
            .await;
        match committed {
            Ok(()) => {}
            // Another pull committed the same layer meanwhile: ours is not needed.
            Err(e) if e.is_already_exists() => {
                self.client.remove_snapshot(self.snapshotter, key).await?;
            }
            Err(e) => return Err(e.into()),
        }
        let uncompressed = HashMap::from([labels::uncompressed(step.diff_id)]);
        self.client
            .set_content_labels(step.layer.digest().as_ref(), &uncompressed)
            .await?;
        Ok(downloaded)
    }

    /// Streams the layer blob from the registry into the content store unless containerd
    /// has it; records the distribution source either way. Returns the bytes downloaded.
    async fn download(&self, layer: &Descriptor) -> Result<u64, PullError> {
        let digest = layer.digest().to_string();
        let existing = existing_labels(self.client, &digest).await?;
        let source = HashMap::from([labels::distribution_source(
            existing.as_ref(),
            &self.source.host,
            &self.source.repository,
        )]);
        if existing.is_some() {
            self.client.set_content_labels(&digest, &source).await?;
            return Ok(0);
        }
        let blob =
            self.repo
                .get_blob(layer.digest())
                .await
                .map_err(|source| PullError::Download {
                    layer: layer.digest().clone(),
                    source: Box::new(source),
                })?;
        let stream = blob.stream.map_err(std::io::Error::other);
        let outcome = self
            .client
            .write_blob(&ref_key(layer), &digest, layer.size(), &source, stream)
            .await?;
        Ok(match outcome {
            WriteOutcome::Written => layer.size(),
            WriteOutcome::Existed => 0,
        })
    }
}

/// containerd's ingest reference for a blob (`<kind>-<digest>`, as its remotes package names
/// them), so a write interrupted by one pull is resumed or replaced by the next.
fn ref_key(desc: &Descriptor) -> String {
    let media = desc.media_type().to_string();
    let kind = if media.contains("index") || media.contains("manifest.list") {
        "index"
    } else if media.contains("manifest") {
        "manifest"
    } else if media.contains("layer") || media.contains("rootfs") {
        "layer"
    } else if media.contains("config") {
        "config"
    } else {
        "unknown"
    };
    format!("{kind}-{}", desc.digest())
}

/// containerd's form of a descriptor.
fn ctd_descriptor(desc: &Descriptor) -> CtdDescriptor {
    CtdDescriptor {
        media_type: desc.media_type().to_string(),
        digest: desc.digest().to_string(),
        size: i64::try_from(desc.size()).unwrap_or(i64::MAX),
        annotations: HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_containerd() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains.len(), 2);
        assert_eq!(chains[0], a);
        assert_eq!(
            chains[1],
            oci::digest::sha256(format!("{a} {b}").as_bytes()).to_string()
        );
        assert_ne!(chains[1], b);
        // Typed digests give the same answer as their strings.
        let typed = [
            oci::digest::parse(&a).unwrap(),
            oci::digest::parse(&b).unwrap(),
        ];
        assert_eq!(chain_ids(&typed), chains);
        assert!(chain_ids::<String>(&[]).is_empty());
    }

    #[test]
    fn names_are_kept_as_typed_when_ctr_would_accept_them() {
        let n = |s: &str| image_name(s, &ImageRef::parse(s).unwrap());
        assert_eq!(
            n("127.0.0.1:5000/busybox:latest"),
            "127.0.0.1:5000/busybox:latest"
        );
        assert_eq!(n("127.0.0.1:5000/busybox"), "127.0.0.1:5000/busybox:latest");
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            n("docker.io/library/busybox:1"),
            "docker.io/library/busybox:1"
        );
    }

    #[test]
    fn sources_name_the_object_to_fetch() {
        let s = Source::parse("127.0.0.1:5000/a/b").unwrap();
        assert_eq!(
            (s.object.as_str(), s.host.as_str(), s.repository.as_str()),
            ("latest", "127.0.0.1:5000", "a/b")
        );
        let digest = oci::digest::sha256(b"m");
        let s = Source::parse(&format!("h.io/r:t@{digest}")).unwrap();
        assert_eq!(s.object, digest.to_string());
        assert!(matches!(
            Source::parse("oci:/tmp/layout"),
            Err(PullError::NotRegistryReference { .. })
        ));
    }

    #[test]
    fn layer_steps_chain_parents_and_labels() {
        let layers: Vec<Descriptor> = (0..3u8)
            .map(|i| {
                Descriptor::new(
                    oci::MediaType::ImageLayerGzip,
                    10 + u64::from(i),
                    oci::digest::sha256(&[i]),
                )
            })
            .collect();
        let diff_ids: Vec<Digest> = (0..3u8).map(|i| oci::digest::sha256(&[i, i])).collect();
        let manifest = Descriptor::new(oci::MediaType::ImageManifest, 1, oci::digest::sha256(b"m"));
        let image = ResolvedPull {
            top: manifest.clone(),
            index_path: Vec::new(),
            manifest,
            manifest_bytes: Vec::new(),
            config: Descriptor::new(oci::MediaType::ImageConfig, 1, oci::digest::sha256(b"c")),
            config_bytes: Vec::new(),
            chain_ids: chain_ids(&diff_ids),
            layers,
            diff_ids,
        };
        let steps: Vec<LayerStep<'_>> = layer_steps(&image, "h/r:t", None).collect();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].parent, "");
        assert_eq!(steps[2].parent, image.chain_ids[1]);
        assert_eq!(steps[2].chain_id, image.chain_ids[2]);
        assert_eq!(steps[1].labels.image_layers.len(), 2);
        assert_eq!(steps[1].labels.layer_digest, *image.layers[1].digest());
        assert_eq!(steps[1].labels.layer_size, Some(11));
    }

    #[test]
    fn diff_ids_come_from_the_config() {
        let config = Descriptor::new(oci::MediaType::ImageConfig, 1, oci::digest::sha256(b"c"));
        let d = oci::digest::sha256(b"l");
        let json = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#);
        assert_eq!(
            config_diff_ids("i", &config, json.as_bytes()).unwrap(),
            vec![d]
        );
        assert!(config_diff_ids("i", &config, b"{}").unwrap().is_empty());
        assert!(matches!(
            config_diff_ids("i", &config, br#"{"rootfs":{"diff_ids":["sha256:x"]}}"#),
            Err(PullError::InvalidDiffId { .. })
        ));
        assert!(matches!(
            config_diff_ids("i", &config, b"not json"),
            Err(PullError::ConfigNotJson { .. })
        ));
    }

    #[test]
    fn ingest_references_name_the_kind() {
        let d = oci::digest::sha256(b"x");
        let key = |media| ref_key(&Descriptor::new(media, 1, d.clone()));
        assert_eq!(key(oci::MediaType::ImageIndex), format!("index-{d}"));
        assert_eq!(key(oci::MediaType::ImageManifest), format!("manifest-{d}"));
        assert_eq!(key(oci::MediaType::ImageLayerGzip), format!("layer-{d}"));
        assert_eq!(key(oci::MediaType::ImageConfig), format!("config-{d}"));
    }
}
