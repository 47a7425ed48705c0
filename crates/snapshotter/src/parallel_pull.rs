//! Parallel pull and unpack (`[pull_modes.parallel_pull_unpack]`): layers the snapshotter
//! does not serve lazily are downloaded by the snapshotter itself, with several Range
//! requests at once, decompressed and unpacked into the snapshot directory as the bytes
//! arrive, and checked (layer digest and size, and the diff ID of the tar) before the
//! snapshot is committed. containerd is then told the snapshot exists, so it never downloads
//! the layer.
//!
//! containerd prepares the layers of an image one after another (each is the parent of the
//! next), so on the first such Prepare of an image every layer of it that is to be pulled is
//! started at once, within the configured limits, each into a staging directory of its own;
//! each Prepare then waits for its layer and moves the result into its snapshot. For an image
//! with a SOCI index that first Prepare is that of its first lazy layer: the layers to pull
//! (those the index has no zTOC for, such as small app layers) start while it is mounted.
//! Staging directories that no Prepare claims are removed after a while.
//!
//! With `discard_unpacked_layers = false` the compressed layer is also written, as it
//! arrives, to containerd's content store (in the namespace of the pull), where containerd's
//! own pull would have left it: the image's manifest references it, so containerd's GC keeps
//! it while the image exists and removes it with the image.

use crate::config::ParallelPullConfig;
use lazyfs::unpack::{unpack_layer_blob, LayerBlobError};
use oci::manifest::ParsedManifest;
use oci::reference::ImageRef;
use oci::{Descriptor, Digest};
use registry::blocking::{chunked_blob_reader, ChunkedDownload};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};

/// How long an unpacked layer waits in staging for its Prepare before it is removed.
const UNCLAIMED_AFTER: Duration = Duration::from_secs(600);
/// Largest image config read.
const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// Why a layer could not be pulled in parallel mode.
#[derive(Debug, thiserror::Error)]
pub enum ParallelPullError {
    /// The image or its layer could not be found or read from the registry.
    #[error("image {image}: {message}")]
    Image {
        /// The image reference.
        image: String,
        /// What went wrong, with its cause chain.
        message: String,
    },
    /// The layer's bytes did not unpack or are not the layer the image names.
    #[error("image {image}: {source}")]
    Layer {
        /// The image reference.
        image: String,
        /// The unpack or verification failure.
        #[source]
        source: LayerBlobError,
    },
    /// The staging or snapshot directory could not be written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A layer's pull outcome, shared by the job and the Prepare that waits for it.
type Outcome = Result<PathBuf, Arc<ParallelPullError>>;

/// One layer of an image job: its outcome once done.
struct LayerJob {
    done: Arc<OnceCell<Outcome>>,
    finished: Arc<tokio::sync::Notify>,
}

/// The pulls of one image's layers (by manifest digest), and what starting another takes.
struct ImageJob {
    layers: Mutex<HashMap<Digest, LayerJob>>,
    repo: registry::Repository,
    image: String,
    /// Every layer of the image with its diff ID.
    manifest_layers: Vec<(Descriptor, Digest)>,
    /// The image's share of the download and unpack limits.
    image_downloads: Option<Arc<Semaphore>>,
    image_unpacks: Option<Arc<Semaphore>>,
    content: Option<containerd::Client>,
}

/// A Prepare's layer, and what the snapshotter knows of the rest of its image.
pub struct PullRequest<'a> {
    /// The image reference.
    pub image: &'a str,
    /// Its manifest digest.
    pub manifest: &'a str,
    /// The layer to pull; `None` to start the image's job ahead of its layers' Prepares.
    pub layer: Option<&'a Digest>,
    /// Layers of the image served lazily (not pulled unless asked for).
    pub lazy: &'a std::collections::HashSet<Digest>,
    /// Chain IDs of committed snapshots that exist already (their layers are not pulled).
    pub existing: &'a std::collections::HashSet<String>,
    /// containerd namespace of the pull (where layer blobs are kept, when they are).
    pub namespace: &'a str,
}

/// Runs parallel pulls for the snapshotter.
pub struct ParallelPuller {
    client: registry::Client,
    config: ParallelPullConfig,
    staging_root: PathBuf,
    downloads: Option<Arc<Semaphore>>,
    unpacks: Option<Arc<Semaphore>>,
    jobs: Mutex<HashMap<String, Arc<StartedJob>>>,
    /// containerd's socket, when layer blobs are kept in its content store.
    content_store: Option<PathBuf>,
}

/// An image's job once started, or why it could not start (shared by its Prepares).
type StartedJob = OnceCell<Result<Arc<ImageJob>, String>>;

/// The limit as a semaphore; a negative or zero limit means none (AWS's -1).
fn limit(n: i64) -> Option<Arc<Semaphore>> {
    usize::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .map(|n| Arc::new(Semaphore::new(n)))
}

impl ParallelPuller {
    /// A puller fetching with `client`, staging under `staging_root` (emptied now: what an
    /// earlier run left there was never claimed); with `discard_unpacked_layers` false, it
    /// keeps layer blobs in the content store of the containerd at `containerd_address`.
    pub fn new(
        client: registry::Client,
        config: ParallelPullConfig,
        staging_root: PathBuf,
        containerd_address: &Path,
    ) -> Self {
        let _ = std::fs::remove_dir_all(&staging_root);
        ParallelPuller {
            content_store: (!config.discard_unpacked_layers).then(|| containerd_address.to_owned()),
            client,
            downloads: limit(config.max_concurrent_downloads),
            unpacks: limit(config.max_concurrent_unpacks),
            config,
            staging_root,
            jobs: Mutex::new(HashMap::new()),
        }
    }

    /// Pulls the layer `request` names, starting every layer of the image that is to be
    /// pulled on the image's first request, and returns the staging directory holding it,
    /// unpacked and verified: move it into its snapshot with [`claim`]. A layer the job left
    /// out (it was to be served lazily) is started now. Returns `Ok(None)` when `request`
    /// names no layer of the image: pull it normally then.
    pub async fn pull_layer(
        &self,
        request: &PullRequest<'_>,
    ) -> Result<Option<PathBuf>, Arc<ParallelPullError>> {
        let job = self.image_job(request).await?;
        let Some(layer) = request.layer else {
            return Ok(None);
        };
        let (done, finished) = {
            let mut layers = job.layers.lock().unwrap_or_else(|p| p.into_inner());
            if !layers.contains_key(layer) {
                // Left out when the job started (to be served lazily), asked for now: its
                // lazy mount failed.
                let Some((desc, diff_id)) = job
                    .manifest_layers
                    .iter()
                    .find(|(d, _)| d.digest() == layer)
                else {
                    return Ok(None);
                };
                let started = self.start_layer(&job, desc, diff_id);
                layers.insert(layer.clone(), started);
            }
            match layers.get(layer) {
                Some(l) => (l.done.clone(), l.finished.clone()),
                None => return Ok(None),
            }
        };
        loop {
            let notified = finished.notified();
            if let Some(outcome) = done.get() {
                return outcome.clone().map(Some);
            }
            notified.await;
        }
    }

    /// Starts the job of the image `request` names unless it runs already (its layer, if
    /// any, is pulled too), without waiting for any layer: called on the Prepare of a layer
    /// served lazily, so the layers above it that are to be pulled are on their way (or
    /// done) when containerd prepares them, one after another, after the lazy ones. A
    /// layer this job leaves out (served lazily) joins it if [`ParallelPuller::pull_layer`]
    /// asks for it (its lazy mount failed).
    pub async fn start(&self, request: &PullRequest<'_>) {
        if let Err(e) = self.image_job(request).await {
            // Each Prepare of a layer to pull tries again, and reports what fails then.
            tracing::debug!(
                image = request.image,
                "starting the parallel pull early: {e}"
            );
        }
    }

    /// The job of an image, started on first use.
    async fn image_job(
        &self,
        request: &PullRequest<'_>,
    ) -> Result<Arc<ImageJob>, Arc<ParallelPullError>> {
        let (image, manifest) = (request.image, request.manifest);
        let cell = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            jobs.entry(manifest.to_owned()).or_default().clone()
        };
        let started = cell
            .get_or_init(|| async {
                self.start_image(request)
                    .await
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await
            .clone();
        if started.is_err() {
            // A failed lookup (registry down) is tried again by the next Prepare.
            self.jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(manifest);
        }
        started.map_err(|message| {
            Arc::new(ParallelPullError::Image {
                image: image.to_owned(),
                message,
            })
        })
    }

    /// Reads the image's manifest and config and starts a task per layer to pull.
    async fn start_image(&self, request: &PullRequest<'_>) -> Result<ImageJob, ParallelPullError> {
        let (image, manifest_digest) = (request.image, request.manifest);
        let fail = |message: String| ParallelPullError::Image {
            image: image.to_owned(),
            message,
        };
        let repo = repository(&self.client, image).map_err(fail)?;
        let digest = oci::digest::parse(manifest_digest)
            .map_err(|e| fail(format!("manifest digest: {e}")))?;
        let fetched = repo
            .get_manifest(digest.as_ref())
            .await
            .map_err(|e| fail(registry::error_chain(&e)))?;
        let manifest = match oci::manifest::parse(&fetched.bytes, &format!("manifest {digest}"))
            .map_err(|e| fail(e.to_string()))?
        {
            ParsedManifest::Image(m) => *m,
            ParsedManifest::Index(_) => {
                return Err(fail(format!("{digest} is not an image manifest")))
            }
        };
        // The registry client checks the manifest's and the config's digests and sizes.
        let config = manifest.config();
        let config_bytes = repo
            .get_blob_bytes(config.digest(), MAX_CONFIG_SIZE)
            .await
            .map_err(|e| fail(registry::error_chain(&e)))?;
        let diff_ids =
            containerd::pull::layer_diff_ids(image, config, &config_bytes, manifest.layers().len())
                .map_err(|e| fail(e.to_string()))?;
        let chain_ids = containerd::chain_ids(&diff_ids);
        let job = ImageJob {
            layers: Mutex::new(HashMap::new()),
            repo,
            image: image.to_owned(),
            manifest_layers: manifest.layers().iter().cloned().zip(diff_ids).collect(),
            // Layers of one image share its per-image limits.
            image_downloads: limit(self.config.max_concurrent_downloads_per_image),
            image_unpacks: limit(self.config.max_concurrent_unpacks_per_image),
            content: self.content_store_client(request.namespace).await,
        };
        let mut layers = HashMap::new();
        for ((desc, diff_id), chain_id) in job.manifest_layers.iter().zip(chain_ids) {
            let wanted = request.layer == Some(desc.digest())
                || !(request.lazy.contains(desc.digest()) || request.existing.contains(&chain_id));
            if wanted && !layers.contains_key(desc.digest()) {
                layers.insert(desc.digest().clone(), self.start_layer(&job, desc, diff_id));
            }
        }
        if request.layer.is_none() {
            tracing::info!(
                image,
                layers = layers.len(),
                "parallel pull started early, on the Prepare of a lazy layer"
            );
        } else {
            tracing::info!(image, layers = layers.len(), "parallel pull started");
        }
        *job.layers.lock().unwrap_or_else(|p| p.into_inner()) = layers;
        Ok(job)
    }

    /// Starts pulling layer `desc` (of diff ID `diff_id`) of the image of `job`.
    fn start_layer(&self, job: &ImageJob, desc: &Descriptor, diff_id: &Digest) -> LayerJob {
        let staging = self
            .staging_root
            .join(format!("{}-{}", desc.digest().digest(), unique()));
        let layer = LayerJob {
            done: Arc::new(OnceCell::new()),
            finished: Arc::new(tokio::sync::Notify::new()),
        };
        let task = LayerTask {
            repo: job.repo.clone(),
            image: job.image.clone(),
            desc: desc.clone(),
            diff_id: diff_id.clone(),
            staging,
            download: self.download_limits(job.image_downloads.clone()),
            unpacks: [self.unpacks.clone(), job.image_unpacks.clone()],
            done: layer.done.clone(),
            finished: layer.finished.clone(),
            content: job.content.clone(),
        };
        tokio::spawn(task.run());
        layer
    }

    /// A client of containerd's content store in `namespace`, when layer blobs are kept.
    /// Not reaching containerd is a warning: the layers are still pulled, only not kept.
    async fn content_store_client(&self, namespace: &str) -> Option<containerd::Client> {
        let address = self.content_store.as_ref()?;
        match containerd::Client::connect(address, namespace).await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(address = %address.display(), "layer blobs are not kept in containerd's content store (discard_unpacked_layers = false): {e}");
                None
            }
        }
    }

    fn download_limits(&self, image: Option<Arc<Semaphore>>) -> DownloadLimits {
        DownloadLimits {
            chunk_size: self.config.chunk_size(),
            per_image: self
                .config
                .max_concurrent_downloads_per_image
                .try_into()
                .ok()
                .filter(|n: &usize| *n > 0),
            permits: [self.downloads.clone(), image],
        }
    }
}

/// Moves the unpacked layer in `staging` to `dest`, a snapshot's content directory (which
/// must not exist or be empty), creating its parent.
pub fn claim(staging: &Path, dest: &Path) -> Result<(), ParallelPullError> {
    let _ = std::fs::remove_dir(dest);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ParallelPullError::Io {
            what: "creating",
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::rename(staging, dest).map_err(|source| ParallelPullError::Io {
        what: "moving the unpacked layer to",
        path: dest.to_owned(),
        source,
    })
}

/// A process-unique suffix for staging directories.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}.{n}", std::process::id())
}

/// The repository of registry reference `image`.
fn repository(client: &registry::Client, image: &str) -> Result<registry::Repository, String> {
    match ImageRef::parse(image).map_err(|e| e.to_string())? {
        ImageRef::Registry {
            registry,
            repository,
            ..
        } => client
            .repository(&registry, &repository)
            .map_err(|e| registry::error_chain(&e)),
        _ => Err(format!("{image} is not a registry reference")),
    }
}

/// Download limits of one layer: its chunk size, Range requests of the layer at once, and
/// the shared permits (all images, this image) each request holds.
struct DownloadLimits {
    chunk_size: Option<u64>,
    per_image: Option<usize>,
    permits: [Option<Arc<Semaphore>>; 2],
}

/// The pull of one layer into its staging directory.
struct LayerTask {
    repo: registry::Repository,
    image: String,
    desc: Descriptor,
    diff_id: Digest,
    staging: PathBuf,
    download: DownloadLimits,
    unpacks: [Option<Arc<Semaphore>>; 2],
    done: Arc<OnceCell<Outcome>>,
    finished: Arc<tokio::sync::Notify>,
    /// containerd's content store, when the blob is kept there too.
    content: Option<containerd::Client>,
}

/// A reader that hands every chunk it reads to a channel as well (the content store write).
struct TeeReader<R> {
    inner: R,
    copy: Option<tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>>,
}

impl<R: std::io::Read> std::io::Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let (Some(copy), Some(bytes)) = (&self.copy, buf.get(..n)) {
            if n > 0
                && copy
                    .blocking_send(Ok(bytes::Bytes::copy_from_slice(bytes)))
                    .is_err()
            {
                // The write ended (it failed and said why): unpacking goes on without it.
                self.copy = None;
            }
        }
        Ok(n)
    }
}

impl<R> TeeReader<R> {
    /// Ends the copy: on success the write commits (containerd checks digest and size); on
    /// failure it is aborted, so no partial or unverified blob is committed.
    fn finish(&mut self, ok: bool) {
        if let Some(copy) = self.copy.take() {
            if !ok {
                let _ =
                    copy.blocking_send(Err(std::io::Error::other("the layer failed to unpack")));
            }
        }
    }
}

impl LayerTask {
    async fn run(self) {
        let outcome = self.pull().await.map_err(Arc::new);
        match &outcome {
            Ok(_) => {
                tracing::info!(image = %self.image, layer = %self.desc.digest(), "layer pulled and unpacked in parallel mode");
                let staging = self.staging.clone();
                // Nobody claimed it (the image was removed, or the pull was abandoned).
                tokio::spawn(async move {
                    tokio::time::sleep(UNCLAIMED_AFTER).await;
                    let _ = tokio::fs::remove_dir_all(&staging).await;
                });
            }
            Err(e) => {
                tracing::error!(image = %self.image, layer = %self.desc.digest(), "parallel pull failed: {e}");
                let _ = std::fs::remove_dir_all(&self.staging);
            }
        }
        let _ = self.done.set(outcome);
        self.finished.notify_waiters();
    }

    /// Writes the layer blob arriving on `rx` to containerd's content store, labelled with
    /// where it came from, as containerd's pull labels it.
    fn keep_blob(
        &self,
        client: containerd::Client,
        rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    ) -> impl std::future::Future<Output = Result<(), containerd::Error>> + Send + 'static {
        let digest = self.desc.digest().to_string();
        let size = self.desc.size();
        let labels = HashMap::from([containerd::labels::distribution_source(
            None,
            self.repo.registry(),
            self.repo.name(),
        )]);
        async move {
            let reference = format!("layer-{digest}");
            let data = tokio_stream::wrappers::ReceiverStream::new(rx);
            client
                .write_blob(&reference, &digest, size, &labels, data)
                .await
                .map(|_| ())
        }
    }

    async fn pull(&self) -> Result<PathBuf, ParallelPullError> {
        let unpacks: Vec<_> = self.unpacks.iter().flatten().cloned().collect();
        let _unpack = registry::blocking::hold_permits(&unpacks).await;
        std::fs::create_dir_all(&self.staging).map_err(|source| ParallelPullError::Io {
            what: "creating",
            path: self.staging.clone(),
            source,
        })?;
        let how = ChunkedDownload {
            chunk_size: self.download.chunk_size.unwrap_or(u64::MAX),
            concurrency: self.download.per_image.unwrap_or(8),
            permits: self.download.permits.iter().flatten().cloned().collect(),
        };
        let blob = chunked_blob_reader(&self.repo, &self.desc, how)
            .await
            .map_err(|e| ParallelPullError::Image {
                image: self.image.clone(),
                message: registry::error_chain(&e),
            })?;
        let (desc, diff_id, staging) = (
            self.desc.clone(),
            self.diff_id.clone(),
            self.staging.clone(),
        );
        let (copy, write) = match &self.content {
            Some(client) => {
                let (tx, rx) = tokio::sync::mpsc::channel(16);
                (
                    Some(tx),
                    Some(tokio::spawn(self.keep_blob(client.clone(), rx))),
                )
            }
            None => (None, None),
        };
        let unpacked = tokio::task::spawn_blocking(move || {
            let mut tee = TeeReader { inner: blob, copy };
            let result = unpack_layer_blob(&mut tee, &desc, Some(&diff_id), &staging);
            tee.finish(result.is_ok());
            result
        })
        .await;
        if let Some(write) = write {
            let kept = match write.await {
                Ok(written) => written.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = kept {
                tracing::warn!(image = %self.image, layer = %self.desc.digest(), "layer blob not kept in containerd's content store: {e}");
            }
        }
        unpacked
            .map_err(|e| ParallelPullError::Image {
                image: self.image.clone(),
                message: format!("unpack task: {e}"),
            })?
            .map_err(|source| ParallelPullError::Layer {
                image: self.image.clone(),
                source,
            })?;
        Ok(self.staging.clone())
    }
}
