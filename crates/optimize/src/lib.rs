//! `soci optimize`: run an image's workload once lazily, learn what it reads, and build the
//! index that fits those reads.
//!
//! 1. [`learn`]: zTOCs with uniform checkpoints are built in memory (nothing is published),
//!    the image is mounted lazily from them ([`lazyfs::image_mount`], a writable overlay
//!    whose changes are thrown away), and the workload runs chrooted in it ([`workload`])
//!    until it prints its ready line or exits; the mount's read log gives the byte ranges
//!    of every file read.
//! 2. [`publish`]: the index is built again with checkpoints around those ranges
//!    ([`indexer::CheckpointPolicy::Reads`]) and a prefetch artifact for exactly their spans,
//!    then kept in the local store, pushed (v1) or written as a converted image (v2).
//!
//! The image itself never changes. When the workload fails or never gets ready, nothing is
//! published.

pub mod workload;

use indexer::destination::Destination;
use indexer::local::LocalStore;
use indexer::pipeline::{self, Build, Built, Converted};
use indexer::prefetch::PrefetchList;
use indexer::ztocs::Progress;
use indexer::{CheckpointPolicy, ImageSource, OpenedImage, Settings};
use lazyfs::discover::FoundIndex;
use lazyfs::image_mount::{mount_image, ImageToMount, MountOptions, StateDir};
use lazyfs::layer::LocalBlobs;
use oci::db::IndexRecord;
use oci::run_config::RunConfig;
use oci::soci_index::IndexVersion;
use oci::Digest;
use registry::Repository;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
pub use workload::{Finished, Workload, WorkloadError};

/// Why an image could not be optimized.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building, storing or publishing the index failed.
    #[error(transparent)]
    Index(Box<indexer::Error>),
    /// The image config could not be read.
    #[error("reading the image config: {0}")]
    Config(#[source] oci::Error),
    /// The image could not be mounted, or its mount not cleaned up.
    #[error("mounting the image to run the workload")]
    Mount(#[from] lazyfs::image_mount::ImageMountError),
    /// The workload did not run or did not get ready.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// Not exactly one image (platform) was selected.
    #[error("{0}")]
    Platforms(String),
    /// The workload read nothing through the lazy layers, so there is nothing to fit.
    #[error("the workload read no file of the lazily served layers (every layer is below the minimum layer size, or it reads only small layers); nothing to optimize")]
    NothingRead,
    /// The working directory could not be made or removed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl From<indexer::Error> for Error {
    /// Boxed: the indexer's error is large and this one travels up to the CLI.
    fn from(err: indexer::Error) -> Self {
        Error::Index(Box::new(err))
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Where the optimized index goes.
pub enum Publication {
    /// Kept in the local store as `soci create` keeps an index, for `soci push`.
    Local,
    /// Kept locally and pushed as a v1 index (referrers) to the image's repository.
    Push,
    /// A converted image (v2) written to the destination, named `dest_ref`.
    Convert {
        /// Where it is written.
        dest: Destination,
        /// Its normalized reference (recorded in the local store).
        dest_ref: String,
    },
}

/// What to optimize and how.
pub struct Request<'a> {
    /// The image's normalized reference (recorded with the index).
    pub image_ref: &'a str,
    /// Its repository (layers are served lazily from it while the workload runs).
    pub repo: &'a Repository,
    /// The image, read from `repo`.
    pub source: &'a ImageSource,
    /// The image's manifests, with exactly one platform selected.
    pub opened: &'a OpenedImage,
    /// Span size, minimum layer size, platforms; `checkpoints` and `prefetch` are set here.
    pub settings: &'a Settings,
    /// The local store (zTOCs are reused from it and the index is recorded in it).
    pub local: &'a LocalStore,
    /// The data root: the mount's state and span cache live under it.
    pub data_root: PathBuf,
    /// Arguments replacing the image's `Cmd` (none: entrypoint and cmd of the image).
    pub args: Vec<String>,
    /// Done when a line of the workload's output contains this (`None`: when it exits 0).
    pub ready_line: Option<String>,
    /// Longest wait for the workload.
    pub timeout: Duration,
    /// Ctrl-C and SIGTERM: what the caller's signal handler tells [`optimize`].
    pub interrupt: Arc<Interrupt>,
    /// Where the index goes.
    pub publication: Publication,
    /// Progress of the zTOC builds.
    pub progress: Arc<dyn Progress>,
}

/// Interruption of a run: while the image is mounted for the workload, a request stops the
/// workload and the mount is cleaned up before [`optimize`] fails; at other times nothing is
/// mounted and the caller may simply exit.
#[derive(Debug, Default)]
pub struct Interrupt {
    requested: Arc<AtomicBool>,
    mounted: AtomicBool,
}

impl Interrupt {
    /// Asks the run to stop. True when it will stop by itself (the workload is running or
    /// being mounted, and its mount must be cleaned up); false when the caller should exit.
    pub fn request(&self) -> bool {
        self.requested.store(true, Ordering::SeqCst);
        self.mounted.load(Ordering::SeqCst)
    }
}

/// What one lazy run of the workload read.
#[derive(Debug, Clone)]
pub struct Learned {
    /// The command run.
    pub command: Vec<String>,
    /// How it ended.
    pub finished: Finished,
    /// Byte ranges read of each file, files in the order of their first read.
    pub reads: Vec<(String, Vec<(u64, u64)>)>,
    /// Bytes fetched from the registry during the run (layers unpacked whole included).
    pub bytes_fetched: u64,
}

impl Learned {
    /// Distinct bytes of file data read (kernel readahead included).
    pub fn bytes_read(&self) -> u64 {
        self.reads
            .iter()
            .flat_map(|(_, r)| r.iter().map(|(a, b)| b.saturating_sub(*a)))
            .sum()
    }
}

/// What was published.
pub enum Published {
    /// Kept in the local store only.
    Local(Vec<IndexRecord>),
    /// Kept locally and pushed: the manifests written.
    Pushed(Vec<IndexRecord>, Vec<Digest>),
    /// The converted image written.
    Converted(Box<Converted>),
}

/// The outcome of [`optimize`].
pub struct Optimized {
    /// What the workload read.
    pub learned: Learned,
    /// The index built around those reads.
    pub built: Built,
    /// Where it went.
    pub published: Published,
}

/// Learns the workload's reads, then builds and publishes the index around them. Blocks on
/// `runtime`: call it from a plain thread.
pub fn optimize(req: &Request<'_>, runtime: &Handle) -> Result<Optimized> {
    let learned = learn(req, runtime)?;
    if learned.reads.is_empty() {
        return Err(Error::NothingRead);
    }
    let (built, published) = runtime.block_on(publish(req, &learned))?;
    Ok(Optimized {
        learned,
        built,
        published,
    })
}

/// Step 1: uniform zTOCs in memory, a lazy mount of them, one run of the workload.
pub fn learn(req: &Request<'_>, runtime: &Handle) -> Result<Learned> {
    let uniform = Settings {
        checkpoints: CheckpointPolicy::Uniform,
        prefetch: Vec::new(),
        ..req.settings.clone()
    };
    let build = build_of(req, &uniform);
    let built = runtime.block_on(pipeline::build(&build, IndexVersion::V1))?;
    let index = single_index(&built)?;
    let config = runtime.block_on(
        req.source
            .fetch(index.image.manifest.config(), oci::resolve::MAX_CONFIG_SIZE),
    )?;
    let run = RunConfig::parse(&config, index.image.manifest.config().digest().as_ref())
        .map_err(Error::Config)?;
    let found = FoundIndex {
        digest: index.digest.clone(),
        index: oci::soci_index::parse_index_manifest(&index.bytes, index.digest.as_ref())
            .map_err(|e| Error::from(indexer::Error::from(e)))?,
        found_through: "built by soci optimize",
    };
    let local = LocalBlobs::new(index.blobs());
    let what = ImageToMount {
        image: req.image_ref,
        manifest: &index.image.manifest,
        index: &found,
        repo: req.repo,
        local: &local,
    };
    let workload = Workload {
        argv: run.command(&req.args),
        env: run.env.clone(),
        working_dir: run.working_dir.clone(),
        user: run.user.clone(),
        ready_line: req.ready_line.clone(),
        timeout: req.timeout,
        interrupted: req.interrupt.requested.clone(),
    };
    run_mounted(req, what, &workload, runtime)
}

/// Mounts `what`, runs the workload in it, and unmounts it whatever happened.
fn run_mounted(
    req: &Request<'_>,
    what: ImageToMount<'_>,
    workload: &Workload,
    runtime: &Handle,
) -> Result<Learned> {
    if workload.argv.is_empty() {
        return Err(WorkloadError::NoCommand.into());
    }
    let dir = req
        .data_root
        .join("optimize")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        action: "creating",
        path: dir.clone(),
        source,
    })?;
    let state = StateDir::for_mount(&req.data_root, &dir);
    req.interrupt.mounted.store(true, Ordering::SeqCst);
    let learned = mount_and_run(req, what, workload, runtime, &dir, &state);
    req.interrupt.mounted.store(false, Ordering::SeqCst);
    learned
}

/// The mount at `dir` (state in `state`), the run, the unmount.
fn mount_and_run(
    req: &Request<'_>,
    what: ImageToMount<'_>,
    workload: &Workload,
    runtime: &Handle,
    dir: &std::path::Path,
    state: &StateDir,
) -> Result<Learned> {
    let options = MountOptions {
        writable: true,
        cache_root: req.data_root.join("cache"),
        cache_limit: None,
        fetch_concurrency: 4,
        fuse_threads: 8,
        background_fetch_mb_per_sec: None,
        record_reads: None,
        record_read_ranges: None,
        log_reads: true,
        // The read log must see every read.
        passthrough: None,
    };
    let mounted = mount_image(what, state, &options, runtime)?;
    tracing::info!(command = ?workload.argv, "running the workload in the lazy mount");
    let finished = workload::run_in(dir, workload);
    let reads = mounted.read_ranges().unwrap_or_default();
    let bytes_fetched = mounted.bytes_fetched();
    let unmounted = mounted.unmount();
    let _ = state.remove();
    let _ = std::fs::remove_dir(dir);
    let finished = finished?;
    unmounted?;
    Ok(Learned {
        command: workload.argv.clone(),
        finished,
        reads,
        bytes_fetched,
    })
}

/// Step 2: the index around `learned`'s reads, kept, pushed or converted.
pub async fn publish(req: &Request<'_>, learned: &Learned) -> Result<(Built, Published)> {
    let settings = Settings {
        checkpoints: CheckpointPolicy::Reads,
        prefetch: PrefetchList::from_read_ranges(learned.reads.clone()).paths,
        ..req.settings.clone()
    };
    let build = build_of(req, &settings);
    match &req.publication {
        Publication::Local => {
            let (built, records) = pipeline::create(&build, req.local, req.image_ref).await?;
            Ok((built, Published::Local(records)))
        }
        Publication::Push => {
            let (built, records) = pipeline::create(&build, req.local, req.image_ref).await?;
            let written = pipeline::publish_v1(req.repo, &built.indexes.indexes).await?;
            Ok((built, Published::Pushed(records, written)))
        }
        Publication::Convert { dest, dest_ref } => {
            let converted = pipeline::convert(&build, dest, dest_ref).await?;
            let built = converted.built.clone();
            Ok((built, Published::Converted(Box::new(converted))))
        }
    }
}

fn build_of<'a>(req: &'a Request<'_>, settings: &'a Settings) -> Build<'a> {
    Build {
        source: req.source,
        opened: req.opened,
        settings,
        local: Some(req.local),
        progress: req.progress.clone(),
    }
}

/// The one index of a build for one platform.
fn single_index(built: &Built) -> Result<&indexer::index::BuiltIndex> {
    match (
        &built.indexes.indexes[..],
        built.indexes.without_ztocs.first(),
    ) {
        ([one], None) => Ok(one),
        (_, Some(image)) => Err(Error::Platforms(format!(
            "no layer of the image ({}) is large enough for a zTOC (see --min-layer-size); \
             it has nothing to load lazily",
            indexer::index::platform_text(image)
        ))),
        (many, None) => Err(Error::Platforms(format!(
            "{} platforms were selected; optimize one at a time with --platform",
            many.len()
        ))),
    }
}
