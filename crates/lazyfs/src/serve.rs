//! Serving one remote layer: the single sequence `soci mount` and the snapshotter's FUSE
//! manager both run. [`serve_layer`] fetches the layer's zTOC, mounts it through FUSE, starts
//! the prefetch of its prefetch artifact and the background fetch of the rest, and returns a
//! [`ServedLayer`] that owns all of it: dropping the handle aborts the tasks and unmounts.

use crate::fs::{CacheTtls, MountedSession};
use crate::layer::{LayerError, LocalBlobs, RemoteLayer};
use crate::metrics::MetricsSnapshot;
use crate::readlog::ReadLog;
use crate::spans::{CacheBudget, SpanConfig};
use fuser::BackgroundSession;
use oci::soci_index::{PrefetchDescriptor, ZtocDescriptor};
use oci::Descriptor;
use registry::Repository;
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The layer to serve and where its bytes and metadata come from.
#[derive(Clone, Copy)]
pub struct LayerToServe<'a> {
    /// The repository holding the layer, its zTOC and its prefetch artifact.
    pub repo: &'a Repository,
    /// zTOCs and prefetch artifacts used instead of the repository's (usually none).
    pub local: &'a LocalBlobs,
    /// The layer's descriptor from the image manifest.
    pub layer: &'a Descriptor,
    /// Its zTOC, from the SOCI index.
    pub ztoc: &'a ZtocDescriptor,
    /// Its prefetch artifact, if the SOCI index has one.
    pub prefetch: Option<&'a PrefetchDescriptor>,
}

/// How the FUSE mount is run.
#[derive(Clone, Default)]
pub struct FuseOptions {
    /// Worker threads (they mostly wait on the disk or the network); 0 means 1.
    pub threads: usize,
    /// How long the kernel caches attributes, entries and misses.
    pub ttls: CacheTtls,
    /// Where first reads of files are noted (`soci mount --record-reads`); no passthrough
    /// while one is set.
    pub read_log: Option<Arc<ReadLog>>,
    /// FUSE passthrough of files whose data is local (see [`crate::passthrough`]); `None`:
    /// none.
    pub passthrough: Option<crate::passthrough::PassthroughConfig>,
}

/// Whether the rest of the layer is fetched while nobody reads it.
#[derive(Clone)]
pub enum BackgroundFetch {
    /// Only what is read or prefetched is ever fetched.
    Off,
    /// Fetch every span, waiting for silence of on-demand reads (the span config's
    /// `activity` and `background_silence`).
    On {
        /// Compressed bytes per second at most (`None`: unlimited).
        bytes_per_sec: Option<u64>,
        /// Start only once this gate opens (`None`: at once).
        start: Option<BackgroundGate>,
    },
}

impl BackgroundFetch {
    /// On at `mb_per_sec` megabytes (10^6 bytes) per second; 0, a negative rate or NaN mean
    /// unlimited, as the `background_fetch_rate` settings of the CLI and the config say.
    pub fn at_mb_per_sec(mb_per_sec: f64, start: Option<BackgroundGate>) -> Self {
        BackgroundFetch::On {
            bytes_per_sec: (mb_per_sec > 0.0).then_some((mb_per_sec * 1e6) as u64),
            start,
        }
    }
}

/// Holds background fetches back until opened. `soci mount` opens it once every layer's
/// prefetch is done and the mount is reported ready, so background spans never compete with
/// what the start-up is waiting for. Clones share the gate.
#[derive(Clone)]
pub struct BackgroundGate {
    open: Arc<watch::Sender<bool>>,
}

impl BackgroundGate {
    /// A closed gate.
    pub fn closed() -> Self {
        BackgroundGate {
            open: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Opens the gate: every background fetch waiting on it starts.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Resolves once the gate is open.
    async fn opened(&self) {
        let mut rx = self.open.subscribe();
        // The sender lives in `self`, so the wait can only end by the gate opening.
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// Everything about serving that is not the layer itself.
#[derive(Clone)]
pub struct ServeOptions {
    /// Span caches live under `cache_root/<zTOC hex>`, shared with every other user.
    pub cache_root: PathBuf,
    /// Fetch tunables; layers built from clones share its `DemandActivity`.
    pub spans: SpanConfig,
    /// The disk budget shared by the layers of this process.
    pub budget: Arc<CacheBudget>,
    /// The FUSE mount.
    pub fuse: FuseOptions,
    /// Whether and how fast the rest of the layer is fetched.
    pub background: BackgroundFetch,
    /// The runtime fetches, prefetch and background fetch run on.
    pub runtime: tokio::runtime::Handle,
}

/// Why a layer could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The zTOC could not be fetched or used, or the span cache could not be opened.
    #[error(transparent)]
    Open(Box<LayerError>),
    /// The mountpoint could not be created.
    #[error("creating the mountpoint {}: {source}", path.display())]
    Mountpoint {
        /// The mountpoint.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The FUSE mount failed.
    #[error("mounting layer {layer} at {}: {source}", mountpoint.display())]
    Mount {
        /// Layer digest.
        layer: String,
        /// The mountpoint.
        mountpoint: PathBuf,
        /// What the FUSE handshake said.
        #[source]
        source: std::io::Error,
    },
}

impl From<LayerError> for ServeError {
    fn from(e: LayerError) -> Self {
        // Boxed: a registry error is large, and this error travels through every caller.
        ServeError::Open(Box::new(e))
    }
}

/// How a layer's prefetch ended. A failure costs speed, not correctness (reads fetch on
/// demand), so it is an outcome, logged as a warning, not an error of the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefetchOutcome {
    /// The SOCI index has no prefetch artifact for the layer.
    NoArtifact,
    /// Every span the artifact lists is on local disk.
    Fetched {
        /// Spans the artifact listed.
        spans: usize,
    },
    /// It failed (already logged); reads fetch on demand.
    Failed(String),
}

/// Figures of one layer of a mount (`soci mount --stats`, the server's `stats.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Layer digest.
    pub digest: String,
    /// Compressed size.
    pub size: u64,
    /// Served lazily (false: downloaded whole and unpacked).
    pub lazy: bool,
    /// Spans of the layer (0 when unpacked).
    pub spans_total: u64,
    /// Spans on local disk.
    pub spans_cached: u64,
    /// Fetch and read counters.
    #[serde(flatten)]
    pub metrics: MetricsSnapshot,
}

impl LayerStats {
    /// The figures of a layer that was downloaded whole and unpacked: all of it fetched.
    pub fn unpacked(layer: &Descriptor) -> Self {
        LayerStats {
            digest: layer.digest().to_string(),
            size: layer.size(),
            lazy: false,
            spans_total: 0,
            spans_cached: 0,
            metrics: MetricsSnapshot {
                bytes_fetched: layer.size(),
                ..Default::default()
            },
        }
    }
}

/// A layer being served: its FUSE session and its prefetch and background tasks. Dropping it
/// aborts the tasks and ends the FUSE session (which unmounts what is still mounted).
pub struct ServedLayer {
    layer: Arc<RemoteLayer>,
    mountpoint: PathBuf,
    prefetch: Option<JoinHandle<PrefetchOutcome>>,
    prefetched: PrefetchOutcome,
    background: Option<JoinHandle<()>>,
    /// The connection's `/dev/fuse` descriptor, for handing to a keeper and for resends.
    device: Option<OwnedFd>,
    /// Declared last: the session ends after the tasks were aborted.
    session: Option<BackgroundSession>,
}

/// Fetches the zTOC of `what`, mounts the layer read-only at `mountpoint` (created if
/// missing), and starts its prefetch and background fetch on `options.runtime`.
///
/// Blocks on the zTOC fetch and the FUSE handshake: call it from a plain thread (or
/// `spawn_blocking`), never from a task on the runtime.
pub fn serve_layer(
    what: LayerToServe<'_>,
    mountpoint: &Path,
    options: &ServeOptions,
) -> Result<ServedLayer, ServeError> {
    let layer = open_layer(what, options)?;
    std::fs::create_dir_all(mountpoint).map_err(|source| ServeError::Mountpoint {
        path: mountpoint.to_owned(),
        source,
    })?;
    let mounted = layer
        .mount(mountpoint, options.runtime.clone(), &options.fuse)
        .map_err(|source| mount_error(what, mountpoint, source))?;
    Ok(ServedLayer::start(
        Arc::new(layer),
        Some(mounted),
        mountpoint,
        what,
        options,
    ))
}

/// Takes over the live FUSE connection `device` of the layer `what` mounted at `mountpoint`
/// by a server that is gone: opens the layer as [`serve_layer`] does (the zTOC from the span
/// cache directory when kept there), serves the connection, and restarts prefetch and
/// background fetch. Call [`ServedLayer::resend_interrupted`] on the result: the kernel then
/// resends what the dead server had read and not answered. Blocks like [`serve_layer`].
pub fn resume_layer(
    what: LayerToServe<'_>,
    mountpoint: &Path,
    device: OwnedFd,
    options: &ServeOptions,
) -> Result<ServedLayer, ServeError> {
    let layer = open_layer(what, options)?;
    let resumed = layer
        .resume(device, mountpoint, options.runtime.clone(), &options.fuse)
        .map_err(|source| mount_error(what, mountpoint, source))?;
    Ok(ServedLayer::start(
        Arc::new(layer),
        Some(resumed),
        mountpoint,
        what,
        options,
    ))
}

fn open_layer(what: LayerToServe<'_>, options: &ServeOptions) -> Result<RemoteLayer, ServeError> {
    Ok(options.runtime.block_on(RemoteLayer::open(
        what.repo,
        what.local,
        what.layer,
        what.ztoc,
        &options.cache_root,
        options.spans.clone(),
        options.budget.clone(),
    ))?)
}

fn mount_error(what: LayerToServe<'_>, mountpoint: &Path, source: std::io::Error) -> ServeError {
    ServeError::Mount {
        layer: what.layer.digest().to_string(),
        mountpoint: mountpoint.to_owned(),
        source,
    }
}

impl ServedLayer {
    /// Starts the prefetch and background tasks of an opened layer served by `mounted`
    /// (`None` in tests that need no FUSE).
    fn start(
        layer: Arc<RemoteLayer>,
        mounted: Option<MountedSession>,
        mountpoint: &Path,
        what: LayerToServe<'_>,
        options: &ServeOptions,
    ) -> Self {
        let (session, device) = match mounted {
            Some(m) => (Some(m.session), Some(m.device)),
            None => (None, None),
        };
        let prefetch = what.prefetch.map(|artifact| {
            let (layer, artifact) = (layer.clone(), artifact.clone());
            let (repo, local) = (what.repo.clone(), what.local.clone());
            options
                .runtime
                .spawn(async move { prefetch(&layer, (&repo, &local), &artifact).await })
        });
        let background = match &options.background {
            BackgroundFetch::Off => None,
            BackgroundFetch::On {
                bytes_per_sec,
                start,
            } => {
                let (spans, rate, start) = (layer.spans.clone(), *bytes_per_sec, start.clone());
                let mounted_at = session.is_some().then(|| mountpoint.to_owned());
                Some(options.runtime.spawn(async move {
                    if let Some(gate) = start {
                        gate.opened().await;
                    }
                    spans.background_fetch(rate).await;
                    if let (true, Some(at)) = (spans.is_complete(), mounted_at) {
                        crate::fs::set_complete_readahead(&at);
                    }
                }))
            }
        };
        ServedLayer {
            layer,
            mountpoint: mountpoint.to_owned(),
            prefetch,
            prefetched: PrefetchOutcome::NoArtifact,
            background,
            device,
            session,
        }
    }

    /// The mount's `/dev/fuse` descriptor: a duplicate held by another process keeps the
    /// mount alive when this one dies.
    pub fn device(&self) -> Option<BorrowedFd<'_>> {
        self.device.as_ref().map(|d| d.as_fd())
    }

    /// Asks the kernel to resend the requests a dead server of this connection read and
    /// never answered (see [`crate::fs::resend_interrupted`]).
    pub fn resend_interrupted(&self) -> std::io::Result<()> {
        match self.device() {
            Some(device) => crate::fs::resend_interrupted(device),
            None => Ok(()),
        }
    }

    /// The layer's descriptor.
    pub fn layer(&self) -> &Descriptor {
        &self.layer.layer
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Spans of the layer, and how many are on local disk.
    pub fn progress(&self) -> (u64, u64) {
        self.layer.spans.progress()
    }

    /// The layer's fetch and read counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.layer.spans.metrics().snapshot()
    }

    /// The layer's figures now.
    pub fn stats(&self) -> LayerStats {
        let (spans_total, spans_cached) = self.progress();
        LayerStats {
            digest: self.layer().digest().to_string(),
            size: self.layer().size(),
            lazy: true,
            spans_total,
            spans_cached,
            metrics: self.metrics(),
        }
    }

    /// Waits for the prefetch to end (at once without a prefetch artifact) and says how it
    /// ended; asking again gives the same answer. Cancel-safe.
    pub async fn wait_prefetch(&mut self) -> PrefetchOutcome {
        if let Some(task) = self.prefetch.as_mut() {
            let outcome = task.await.unwrap_or_else(|e| {
                PrefetchOutcome::Failed(format!("the prefetch task ended early: {e}"))
            });
            self.prefetch = None;
            self.prefetched = outcome;
        }
        self.prefetched.clone()
    }

    /// Stops the tasks and unmounts now; a busy mount (an overlay still uses it) is detached
    /// so the kernel ends it once the last user goes.
    pub fn unmount(mut self) {
        self.abort_tasks();
        let mountpoint = &self.mountpoint;
        if crate::overlay::is_mounted(mountpoint) {
            if let Err(e) = crate::overlay::unmount(mountpoint, false) {
                tracing::info!(mountpoint = %mountpoint.display(), "busy ({e}); detaching");
                let _ = crate::overlay::unmount(mountpoint, true);
            }
        }
        // The session's own unmount finds nothing left to do.
        drop(self.session.take());
    }

    fn abort_tasks(&self) {
        if let Some(task) = &self.prefetch {
            task.abort();
        }
        if let Some(task) = &self.background {
            task.abort();
        }
    }
}

impl Drop for ServedLayer {
    fn drop(&mut self) {
        self.abort_tasks();
    }
}

/// Fetches the spans of a prefetch artifact; failures are warnings.
async fn prefetch(
    layer: &RemoteLayer,
    (repo, local): (&Repository, &LocalBlobs),
    artifact: &PrefetchDescriptor,
) -> PrefetchOutcome {
    match layer.prefetch(repo, local, artifact).await {
        Ok(spans) => {
            tracing::info!(layer = %layer.layer.digest(), spans, "prefetched");
            PrefetchOutcome::Fetched { spans }
        }
        Err(e) => {
            let message = registry::error_chain(&e);
            tracing::warn!(layer = %layer.layer.digest(), "prefetch failed, reads fetch on demand: {message}");
            PrefetchOutcome::Failed(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LayerMetrics;
    use crate::source::FileSource;
    use crate::spans::SpanManager;
    use crate::tree::Tree;
    use std::time::Duration;

    /// A 3-span gzip layer read from a local file, opened as `serve_layer` opens one (without
    /// the registry and without FUSE, which the CLI's mount tests cover).
    struct Local {
        _dir: tempfile::TempDir,
        layer: Arc<RemoteLayer>,
        ztoc: ZtocDescriptor,
        repo: Repository,
    }

    fn local_layer() -> Local {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = testutil::ImageSpec {
            os: "linux".into(),
            arch: "amd64".into(),
            layers: vec![testutil::LayerSpec {
                compression: testutil::Compression::Gzip,
                entries: vec![testutil::EntrySpec::File(testutil::FileSpec {
                    path: "data".into(),
                    data: testutil::noisy(3_000_000, 5),
                    mode: 0o644,
                })],
            }],
        };
        let built = testutil::write_oci_layout(&dir.path().join("layout"), "latest", &[spec]);
        let info = &built[0].layers[0];
        let blob = dir
            .path()
            .join("layout/blobs/sha256")
            .join(info.digest.trim_start_matches("sha256:"));
        let ztoc = ztoc::build_ztoc(
            std::fs::File::open(&blob).expect("blob"),
            ztoc::CompressionAlgorithm::Gzip,
            &ztoc::BuildOptions {
                span_size: 1 << 20,
                ..Default::default()
            },
        )
        .expect("zTOC");
        let digest = oci::digest::parse(&info.digest).expect("digest");
        let descriptor = Descriptor::new(oci::MediaType::ImageLayerGzip, info.size, digest.clone());
        let spans = SpanManager::new(
            info.digest.clone(),
            Arc::new(ztoc.clone()),
            Box::new(FileSource::open(blob).expect("open blob")),
            dir.path().join("cache"),
            SpanConfig::default(),
            Arc::new(LayerMetrics::default()),
            CacheBudget::new(None),
        )
        .expect("span manager");
        let layer = RemoteLayer {
            layer: descriptor,
            tree: Arc::new(Tree::build(&ztoc.toc.files)),
            spans,
        };
        let ztoc_desc = ZtocDescriptor {
            digest: digest.clone(),
            size: 1,
            layer_digest: digest,
            layer_media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            span_size: None,
            lean: None,
        };
        // Nothing listens there: a fetch through it fails, which is what prefetch tests want.
        let repo = registry::Client::new(registry::ClientConfig::default())
            .repository("127.0.0.1:9", "none")
            .expect("repository");
        Local {
            _dir: dir,
            layer: Arc::new(layer),
            ztoc: ztoc_desc,
            repo,
        }
    }

    fn options(background: BackgroundFetch) -> ServeOptions {
        ServeOptions {
            cache_root: PathBuf::from("/nonexistent"),
            spans: SpanConfig::default(),
            budget: CacheBudget::new(None),
            fuse: FuseOptions::default(),
            background,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    fn started(
        l: &Local,
        prefetch: Option<&PrefetchDescriptor>,
        background: BackgroundFetch,
    ) -> ServedLayer {
        let local = LocalBlobs::default();
        let what = LayerToServe {
            repo: &l.repo,
            local: &local,
            layer: &l.layer.layer,
            ztoc: &l.ztoc,
            prefetch,
        };
        ServedLayer::start(
            l.layer.clone(),
            None,
            Path::new("/mnt"),
            what,
            &options(background),
        )
    }

    async fn wait_complete(served: &ServedLayer) {
        for _ in 0..500 {
            let (total, cached) = served.progress();
            if total == cached {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("background fetch did not finish: {:?}", served.progress());
    }

    #[tokio::test]
    async fn background_fetch_waits_for_its_gate_then_fills_the_layer() {
        let l = local_layer();
        let gate = BackgroundGate::closed();
        let mut served = started(
            &l,
            None,
            BackgroundFetch::at_mb_per_sec(0.0, Some(gate.clone())),
        );
        assert_eq!(served.wait_prefetch().await, PrefetchOutcome::NoArtifact);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (total, cached) = served.progress();
        assert!(total >= 3, "{total} spans");
        assert_eq!(cached, 0, "nothing is fetched before the gate opens");
        gate.open();
        wait_complete(&served).await;
        let stats = served.stats();
        assert!(stats.lazy);
        assert_eq!((stats.spans_total, stats.spans_cached), (total, total));
        assert_eq!(stats.metrics.spans_fetched, total);
        assert_eq!(stats.digest, l.layer.layer.digest().to_string());
    }

    #[tokio::test]
    async fn dropping_the_handle_aborts_the_background_fetch() {
        let l = local_layer();
        let gate = BackgroundGate::closed();
        let served = started(
            &l,
            None,
            BackgroundFetch::at_mb_per_sec(0.0, Some(gate.clone())),
        );
        drop(served);
        gate.open();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(l.layer.spans.progress().1, 0);
    }

    #[tokio::test]
    async fn a_failed_prefetch_is_an_outcome_and_the_layer_is_still_served() {
        let l = local_layer();
        let artifact = PrefetchDescriptor {
            digest: l.ztoc.digest.clone(),
            // Refused before any request: the test needs no registry.
            size: oci::prefetch::MAX_PREFETCH_SIZE + 1,
            layer_digest: l.ztoc.layer_digest.clone(),
        };
        let mut served = started(&l, Some(&artifact), BackgroundFetch::Off);
        let outcome = served.wait_prefetch().await;
        let PrefetchOutcome::Failed(message) = &outcome else {
            panic!("{outcome:?}");
        };
        assert!(message.contains("prefetch artifact"), "{message}");
        // Asked again, the same answer (the task is gone).
        assert_eq!(served.wait_prefetch().await, outcome);
        let bytes = l.layer.spans.read(0..1000).await.expect("read");
        assert_eq!(bytes.len(), 1000);
        // Off means off: only the span read is on disk.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(served.progress().1, 1);
    }

    #[test]
    fn rates_and_unpacked_stats() {
        let rate = |mb| match BackgroundFetch::at_mb_per_sec(mb, None) {
            BackgroundFetch::On { bytes_per_sec, .. } => bytes_per_sec,
            BackgroundFetch::Off => panic!("off"),
        };
        assert_eq!(rate(2.5), Some(2_500_000));
        assert_eq!(rate(0.0), None);
        assert_eq!(rate(-1.0), None);
        assert_eq!(rate(f64::NAN), None);
        let layer = Descriptor::new(
            oci::MediaType::ImageLayerGzip,
            1234,
            oci::digest::sha256(b"layer"),
        );
        let stats = LayerStats::unpacked(&layer);
        assert!(!stats.lazy);
        assert_eq!(stats.metrics.bytes_fetched, 1234);
        // stats.json keeps the counters flat next to the layer's figures.
        let json = serde_json::to_value(&stats).expect("json");
        assert_eq!(json["bytes_fetched"], 1234);
        assert_eq!(json["spans_total"], 0);
        let back: LayerStats = serde_json::from_value(json).expect("parse");
        assert_eq!(back, stats);
    }
}
