//! An image mounted from its layers at a directory, with a state directory that outlives the
//! server.
//!
//! [`mount_image`] serves each layer that has a zTOC lazily through FUSE ([`crate::serve`]),
//! downloads and unpacks each layer without one, and stacks them with overlayfs at the
//! directory ([`crate::overlay`]). What other processes need lives in a [`StateDir`] under the
//! data root, found from the mounted directory's path alone: `state.json` (who serves the
//! mount and what it mounted), `stats.json` (per-layer figures) and `reads.json` (what a
//! mount with a read log has seen read). So `soci mount --stats` reads the figures of a
//! server it did not start, and `soci unmount` cleans up after a server that was killed.

use crate::discover::FoundIndex;
use crate::layer::LocalBlobs;
use crate::overlay::{self, UpperDirs};
use crate::readlog::ReadLog;
use crate::serve::{
    serve_layer, BackgroundFetch, BackgroundGate, FuseOptions, LayerStats, LayerToServe,
    ServeError, ServeOptions, ServedLayer,
};
use crate::unpack::{unpack_layer_blob, LayerBlobError};
use crate::{CacheBudget, CacheTtls, SpanConfig};
use oci::{Descriptor, ImageManifest};
use registry::Repository;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// What the server records about a mount.
const STATE_FILE: &str = "state.json";
/// Per-layer figures, rewritten by the server every second and when asked.
const STATS_FILE: &str = "stats.json";
/// The [`ReadSummary`] of a mount with a read log.
const READS_FILE: &str = "reads.json";
/// Mountpoints (or unpacked contents) of the layers, one directory per layer.
const LAYERS_DIR: &str = "layers";

/// Why an image could not be mounted, or its state read, written or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum ImageMountError {
    /// A file or directory could not be created, read, written or removed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("creating", "reading", "writing", "removing").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A JSON file of the state directory could not be encoded or decoded.
    #[error("{action} {}", path.display())]
    Json {
        /// "reading" or "writing".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The mount has no statistics (its server never wrote them, or they were removed).
    #[error("no soci mount statistics for {} ({} is missing)", dir.display(), path.display())]
    NoStats {
        /// The mounted directory.
        dir: PathBuf,
        /// The statistics file that could not be read.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// A layer with a zTOC could not be served.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A layer without a zTOC could not be downloaded.
    #[error(transparent)]
    Download(Box<registry::Error>),
    /// A layer without a zTOC could not be unpacked.
    #[error(transparent)]
    Unpack(#[from] LayerBlobError),
    /// overlayfs could not be mounted over the layers.
    #[error("mounting overlayfs at {}", dir.display())]
    Overlay {
        /// The mount's directory.
        dir: PathBuf,
        /// What mount(2) said.
        #[source]
        source: io::Error,
    },
    /// The mount's directory is in use and was not unmounted (unmount it by force to detach it).
    #[error("{} is busy", dir.display())]
    Busy {
        /// The mount's directory.
        dir: PathBuf,
    },
    /// The mount's directory could not be unmounted.
    #[error("unmounting {}", path.display())]
    Unmount {
        /// The mount's directory.
        path: PathBuf,
        /// What umount2(2) said.
        #[source]
        source: io::Error,
    },
    /// A layer's FUSE mount, left by a server that died, could not be unmounted.
    #[error("unmounting layer {}", path.display())]
    UnmountLayer {
        /// The layer's mountpoint.
        path: PathBuf,
        /// What umount2(2) said.
        #[source]
        source: io::Error,
    },
}

impl From<registry::Error> for ImageMountError {
    /// Boxed because the registry's error is large and `Result`s of this type travel far.
    fn from(err: registry::Error) -> Self {
        ImageMountError::Download(Box::new(err))
    }
}

/// Result with [`ImageMountError`].
pub type Result<T> = std::result::Result<T, ImageMountError>;

/// What the server records about a mount (`state.json`), for `soci unmount` and `--stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountState {
    /// Process id of the server.
    pub pid: u32,
    /// The image as it was named.
    pub image: String,
    /// The mounted directory.
    pub dir: PathBuf,
    /// Digest of the SOCI index used.
    pub index_digest: String,
    /// How the index was found (see [`FoundIndex::found_through`]).
    pub found_through: String,
    /// The image's layers, bottom first.
    pub layers: Vec<LayerState>,
    /// overlayfs is mounted at `dir`.
    pub overlay_mounted: bool,
    /// Every layer is mounted, prefetched, and stacked at `dir`.
    pub ready: bool,
}

/// One layer of a [`MountState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerState {
    /// Layer digest.
    pub digest: String,
    /// Compressed size.
    pub size: u64,
    /// Served lazily through FUSE (false: unpacked).
    pub lazy: bool,
    /// Its FUSE mountpoint, or the directory it was unpacked to.
    pub path: PathBuf,
}

/// What a mount with a read log has seen read (`reads.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadSummary {
    /// Files read.
    pub files: u64,
    /// Distinct bytes of those files read (kernel readahead included).
    pub bytes: u64,
}

/// The figures of a mount, as its state directory holds them.
#[derive(Debug, Clone)]
pub struct MountStats {
    /// Per layer, bottom first.
    pub layers: Vec<LayerStats>,
    /// What was read, for mounts with a read log.
    pub reads: Option<ReadSummary>,
}

/// How [`MountState::stop_server`] ended the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStop {
    /// It was not running.
    NotRunning,
    /// It stopped when asked (SIGTERM).
    Stopped,
    /// It did not stop within the grace period and was killed (SIGKILL).
    Killed,
}

impl MountState {
    /// True while the server process exists.
    pub fn server_alive(&self) -> bool {
        signal(self.pid, 0)
    }

    /// Asks the server to stop (SIGTERM), which unmounts its layers and writes its final
    /// statistics; kills it if it has not stopped after `grace`.
    pub fn stop_server(&self, grace: Duration) -> ServerStop {
        if !signal(self.pid, libc::SIGTERM) {
            return ServerStop::NotRunning;
        }
        let deadline = Instant::now() + grace;
        while self.server_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.server_alive() {
            return ServerStop::Stopped;
        }
        signal(self.pid, libc::SIGKILL);
        // The kernel ends the FUSE sessions of a killed process shortly after.
        std::thread::sleep(Duration::from_millis(200));
        ServerStop::Killed
    }
}

/// Sends `sig` to `pid` (0: only checks it exists); true when the process exists. Refuses
/// pids that kill(2) reads as process groups, since they come from a file on disk.
fn signal(pid: u32, sig: libc::c_int) -> bool {
    match libc::pid_t::try_from(pid) {
        // SAFETY: plain kill(2) to one process named by a positive pid.
        Ok(pid) if pid > 0 => unsafe { libc::kill(pid, sig) == 0 },
        _ => false,
    }
}

/// The state directory of the mount at a directory: `<data root>/mounts/<id>`, where the id
/// is the start of the SHA-256 of the directory's path, so any process finds it from the
/// path alone.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    path: PathBuf,
}

impl StateDir {
    /// The state directory of a mount at `dir` (canonical) under `data_root`.
    pub fn for_mount(data_root: &Path, dir: &Path) -> Self {
        let id = oci::digest::sha256(dir.as_os_str().as_encoded_bytes()).to_string();
        let hex = id.trim_start_matches("sha256:");
        let short = hex.get(..16).unwrap_or(hex);
        StateDir {
            dir: dir.to_owned(),
            path: data_root.join("mounts").join(short),
        }
    }

    /// Where the state directory is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mounted directory it belongs to.
    pub fn mount_dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the state directory (and its parents) if missing.
    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.path).map_err(io_error("creating", &self.path))
    }

    /// The recorded state of the mount; `None` when nothing was mounted here.
    pub fn read_state(&self) -> Result<Option<MountState>> {
        let path = self.path.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(json_error("reading", &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &path)(e)),
        }
    }

    /// True when the server wrote statistics.
    pub fn has_stats(&self) -> bool {
        self.path.join(STATS_FILE).exists()
    }

    /// The figures the server last wrote (see [`StateDir::refresh_stats`] for current ones).
    pub fn read_stats(&self) -> Result<MountStats> {
        let path = self.path.join(STATS_FILE);
        let bytes = std::fs::read(&path).map_err(|source| ImageMountError::NoStats {
            dir: self.dir.clone(),
            path: path.clone(),
            source,
        })?;
        let layers = serde_json::from_slice(&bytes).map_err(json_error("reading", &path))?;
        // Only mounts with a read log write what was read.
        let reads_path = self.path.join(READS_FILE);
        let reads = match std::fs::read(&reads_path) {
            Ok(bytes) => {
                Some(serde_json::from_slice(&bytes).map_err(json_error("reading", &reads_path))?)
            }
            Err(_) => None,
        };
        Ok(MountStats { layers, reads })
    }

    /// Asks a running server to write its statistics now (SIGUSR1), and waits (at most two
    /// seconds) until it has; does nothing when no server runs.
    pub fn refresh_stats(&self) -> Result<()> {
        let Some(state) = self.read_state()? else {
            return Ok(());
        };
        let path = self.path.join(STATS_FILE);
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let before = modified(&path);
        if !signal(state.pid, libc::SIGUSR1) {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while modified(&path) == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Unmounts the overlay at the mount's directory, if mounted. A busy mount is an
    /// [`ImageMountError::Busy`] unless `force`, which detaches it (like `umount -l`).
    pub fn unmount_overlay(&self, force: bool) -> Result<()> {
        let dir = &self.dir;
        if !overlay::is_mounted(dir) {
            return Ok(());
        }
        match overlay::unmount(dir, false) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && !force => {
                Err(ImageMountError::Busy { dir: dir.clone() })
            }
            Err(_) => overlay::unmount(dir, true).map_err(|source| ImageMountError::Unmount {
                path: dir.clone(),
                source,
            }),
        }
    }

    /// Cleans up after a server that stopped or died: detaches the FUSE mounts it left
    /// ("transport endpoint is not connected") and removes the state directory.
    pub fn clean_up(&self, state: &MountState) -> Result<()> {
        for layer in &state.layers {
            if overlay::is_mounted(&layer.path) {
                overlay::unmount(&layer.path, true).map_err(|source| {
                    ImageMountError::UnmountLayer {
                        path: layer.path.clone(),
                        source,
                    }
                })?;
            }
        }
        self.remove()
    }

    /// Removes the state directory and everything in it.
    pub fn remove(&self) -> Result<()> {
        std::fs::remove_dir_all(&self.path).map_err(io_error("removing", &self.path))
    }

    /// Removes what a mount that failed half-way left (its layer directories and state), so
    /// nothing claims the directory is mounted; other files, such as a server log, stay.
    pub fn discard_failed_mount(&self) {
        let _ = std::fs::remove_dir_all(self.path.join(LAYERS_DIR));
        let _ = std::fs::remove_file(self.path.join(STATE_FILE));
    }
}

/// The image to mount: its layers and where they come from.
#[derive(Clone, Copy)]
pub struct ImageToMount<'a> {
    /// The image as it was named (recorded in the state).
    pub image: &'a str,
    /// Its image manifest (the platform's, for a multi-platform image).
    pub manifest: &'a ImageManifest,
    /// Its SOCI index.
    pub index: &'a FoundIndex,
    /// The repository holding its layers, zTOCs and prefetch artifacts.
    pub repo: &'a Repository,
    /// zTOCs and prefetch artifacts of the index held in memory instead of the repository
    /// (an index built and not published: `soci optimize`); usually none.
    pub local: &'a LocalBlobs,
}

/// How an image is mounted and served (the flags of `soci mount`).
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Writable: changes go to overlayfs upper and work directories in the state directory.
    pub writable: bool,
    /// Span caches live here, shared with every other user (`<data root>/cache`).
    pub cache_root: PathBuf,
    /// Bytes the span cache may hold (`None`: no limit); the background fetch stops at it.
    pub cache_limit: Option<u64>,
    /// Range requests in flight per layer (0 means 1).
    pub fetch_concurrency: usize,
    /// FUSE worker threads per layer (0 means 1).
    pub fuse_threads: usize,
    /// Fetch the rest of each lazy layer in the background at this many MB/s (0: unlimited),
    /// once the mount is ready; `None`: only what is read is ever fetched.
    pub background_fetch_mb_per_sec: Option<f64>,
    /// Write the files read through the mount here (a JSON list, first read first).
    pub record_reads: Option<PathBuf>,
    /// With `record_reads`: also write the byte ranges read of each file here, a JSON object
    /// `{"/path": [[start, end], ...]}` (end exclusive).
    pub record_read_ranges: Option<PathBuf>,
    /// Keep a read log for [`MountedImage::read_ranges`] even without `record_reads`.
    pub log_reads: bool,
    /// FUSE passthrough of files whose data is local (see [`crate::passthrough`]); ignored
    /// while reads are recorded.
    pub passthrough: Option<crate::passthrough::PassthroughConfig>,
}

/// An image mounted at its directory and being served. Dropping it unmounts the overlay and
/// every layer; [`MountedImage::unmount`] also writes the final outputs and state.
pub struct MountedImage {
    state_dir: StateDir,
    state: MountState,
    read_log: Option<Arc<ReadLog>>,
    record_reads: Option<PathBuf>,
    record_read_ranges: Option<PathBuf>,
    mounts: Mounts,
}

/// Mounts `what` at the mount directory of `state_dir`: every layer (lazily when the SOCI
/// index has its zTOC, otherwise downloaded and unpacked), then, once their prefetch is
/// done, overlayfs over them. Records the state as ready and lets the background fetches
/// start before returning.
///
/// Blocks on `runtime` (zTOC fetches, downloads, FUSE handshakes): call it from a plain
/// thread. A failure leaves no mount and no state behind.
pub fn mount_image(
    what: ImageToMount<'_>,
    state_dir: &StateDir,
    options: &MountOptions,
    runtime: &Handle,
) -> Result<MountedImage> {
    state_dir.create()?;
    // Figures of an earlier mount at this directory must not be shown for this one.
    let _ = std::fs::remove_file(state_dir.path.join(READS_FILE));
    // The partly built mount is dropped (unmounted) before its directories are removed.
    let mounted = try_mount(what, state_dir, options, runtime);
    if mounted.is_err() {
        state_dir.discard_failed_mount();
    }
    mounted
}

fn try_mount(
    what: ImageToMount<'_>,
    state_dir: &StateDir,
    options: &MountOptions,
    runtime: &Handle,
) -> Result<MountedImage> {
    let read_log = (options.log_reads || options.record_reads.is_some()).then(ReadLog::new);
    // Background fetches start once the mount is ready: they must not slow the prefetch.
    let gate = BackgroundGate::closed();
    let serve = serve_options(options, read_log.clone(), &gate, runtime);
    let mut mounts = Mounts {
        dir: state_dir.dir.clone(),
        overlay: false,
        layers: Vec::new(),
    };
    for (i, layer) in what.manifest.layers().iter().enumerate() {
        let path = state_dir.path.join(LAYERS_DIR).join(i.to_string());
        mounts.layers.push(mount_layer(what, layer, path, &serve)?);
    }
    // The prefetch artifacts' spans are fetched (all layers at once) before the mount is
    // reported ready; a failure costs speed, not correctness.
    runtime.block_on(futures_util::future::join_all(
        mounts
            .layers
            .iter_mut()
            .filter_map(|l| l.served.as_mut())
            .map(ServedLayer::wait_prefetch),
    ));
    mounts.mount_overlay(options.writable.then(|| upper_dirs(state_dir)))?;
    let state = ready_state(what, &state_dir.dir, &mounts);
    write_json(&state_dir.path.join(STATE_FILE), &state)?;
    gate.open();
    Ok(MountedImage {
        state_dir: state_dir.clone(),
        state,
        read_log,
        record_reads: options.record_reads.clone(),
        record_read_ranges: options.record_read_ranges.clone(),
        mounts,
    })
}

/// The state of a mount that is ready, served by this process.
fn ready_state(what: ImageToMount<'_>, dir: &Path, mounts: &Mounts) -> MountState {
    MountState {
        pid: std::process::id(),
        image: what.image.to_owned(),
        dir: dir.to_owned(),
        index_digest: what.index.digest.to_string(),
        found_through: what.index.found_through.to_owned(),
        layers: mounts.layers.iter().map(MountedLayer::state).collect(),
        overlay_mounted: true,
        ready: true,
    }
}

/// Where overlayfs writes for a writable mount: in the state directory, so that unmounting
/// discards the changes.
fn upper_dirs(state_dir: &StateDir) -> UpperDirs {
    UpperDirs {
        upper: state_dir.path.join("upper"),
        work: state_dir.path.join("work"),
    }
}

/// How the lazy layers of a mount are served.
fn serve_options(
    options: &MountOptions,
    read_log: Option<Arc<ReadLog>>,
    gate: &BackgroundGate,
    runtime: &Handle,
) -> ServeOptions {
    ServeOptions {
        cache_root: options.cache_root.clone(),
        spans: SpanConfig {
            fetch_concurrency: options.fetch_concurrency.max(1),
            ..SpanConfig::default()
        },
        budget: CacheBudget::new(options.cache_limit),
        fuse: FuseOptions {
            threads: options.fuse_threads,
            ttls: CacheTtls::default(),
            read_log,
            passthrough: options.passthrough.clone(),
        },
        background: match options.background_fetch_mb_per_sec {
            None => BackgroundFetch::Off,
            Some(rate) => BackgroundFetch::at_mb_per_sec(rate, Some(gate.clone())),
        },
        runtime: runtime.clone(),
    }
}

/// Mounts one image layer at `path`: lazily when the index has its zTOC, otherwise
/// downloaded whole and unpacked there.
fn mount_layer(
    what: ImageToMount<'_>,
    layer: &Descriptor,
    path: PathBuf,
    serve: &ServeOptions,
) -> Result<MountedLayer> {
    std::fs::create_dir_all(&path).map_err(io_error("creating", &path))?;
    let digest = layer.digest();
    let index = &what.index.index;
    let served = match index.ztocs.iter().find(|z| &z.layer_digest == digest) {
        Some(ztoc) => {
            let to_serve = LayerToServe {
                repo: what.repo,
                local: what.local,
                layer,
                ztoc,
                prefetch: index.prefetch.iter().find(|p| &p.layer_digest == digest),
            };
            Some(serve_layer(to_serve, &path, serve)?)
        }
        None => {
            let blob = serve
                .runtime
                .block_on(registry::blocking::blob_reader(what.repo, layer))?;
            unpack_layer_blob(blob, layer, None, &path)?;
            None
        }
    };
    Ok(MountedLayer {
        desc: layer.clone(),
        path,
        served,
    })
}

impl MountedImage {
    /// The state recorded for the mount.
    pub fn state(&self) -> &MountState {
        &self.state
    }

    /// The byte ranges of each file read so far (kernel readahead included), files in the
    /// order of their first read; `None` for a mount without a read log.
    pub fn read_ranges(&self) -> Option<Vec<(String, crate::readlog::Ranges)>> {
        self.read_log.as_ref().map(|log| log.ranges())
    }

    /// Bytes fetched so far over every layer (unpacked layers count whole).
    pub fn bytes_fetched(&self) -> u64 {
        self.mounts
            .layers
            .iter()
            .map(|l| l.stats().metrics.bytes_fetched)
            .sum()
    }

    /// Writes the per-layer figures to the state directory. Best effort: they are rewritten
    /// soon, and a reader keeps the previous ones meanwhile.
    pub fn write_stats(&self) {
        let stats: Vec<LayerStats> = self.mounts.layers.iter().map(MountedLayer::stats).collect();
        let _ = write_json(&self.state_dir.path.join(STATS_FILE), &stats);
    }

    /// Writes the read list (and ranges) of a mount with a read log, and its summary; a
    /// failure is logged, since a missing list must not stop the server.
    pub fn write_reads(&self) {
        let (Some(path), Some(log)) = (&self.record_reads, &self.read_log) else {
            return;
        };
        if let Err(e) = self.try_write_reads(path, log) {
            tracing::warn!("writing the read list: {}", with_sources(&e));
        }
    }

    fn try_write_reads(&self, path: &Path, log: &ReadLog) -> Result<()> {
        let paths = log.paths();
        write_json(path, &paths)?;
        let summary = ReadSummary {
            files: paths.len() as u64,
            bytes: log.bytes_read(),
        };
        write_json(&self.state_dir.path.join(READS_FILE), &summary)?;
        if let Some(file) = &self.record_read_ranges {
            write_json(file, &crate::readlog::RangesByPath(&log.ranges()))?;
        }
        Ok(())
    }

    /// Ends the mount: writes the final read list and figures, unmounts the overlay and the
    /// layers, and records the mount as no longer ready (the state directory stays for
    /// `soci unmount` to show the figures and remove it).
    pub fn unmount(self) -> Result<()> {
        self.write_reads();
        self.write_stats();
        let MountedImage {
            state_dir,
            mut state,
            mounts,
            ..
        } = self;
        tracing::info!("stopping: unmounting {}", state.dir.display());
        drop(mounts);
        state.overlay_mounted = false;
        state.ready = false;
        write_json(&state_dir.path.join(STATE_FILE), &state)
    }
}

/// What must be undone when the mount ends, in reverse order of creation.
struct Mounts {
    dir: PathBuf,
    overlay: bool,
    layers: Vec<MountedLayer>,
}

impl Mounts {
    /// Stacks the layers with overlayfs at the mount's directory (writable with `upper`).
    fn mount_overlay(&mut self, upper: Option<UpperDirs>) -> Result<()> {
        let lowers: Vec<PathBuf> = self.layers.iter().rev().map(|l| l.path.clone()).collect();
        if let Some(u) = &upper {
            std::fs::create_dir_all(&u.upper).map_err(io_error("creating", &u.upper))?;
            std::fs::create_dir_all(&u.work).map_err(io_error("creating", &u.work))?;
        }
        overlay::mount_overlay(&self.dir, &lowers, upper.as_ref()).map_err(|source| {
            ImageMountError::Overlay {
                dir: self.dir.clone(),
                source,
            }
        })?;
        self.overlay = true;
        Ok(())
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        if self.overlay {
            if let Err(e) = overlay::unmount(&self.dir, false) {
                tracing::warn!("unmounting {}: {e}; detaching it", self.dir.display());
                let _ = overlay::unmount(&self.dir, true);
            }
        }
        // Dropping a served layer ends its tasks and unmounts its FUSE mount.
        self.layers.clear();
    }
}

/// One layer of the image as mounted: served lazily, or unpacked at `path`.
struct MountedLayer {
    desc: Descriptor,
    path: PathBuf,
    served: Option<ServedLayer>,
}

impl MountedLayer {
    fn state(&self) -> LayerState {
        LayerState {
            digest: self.desc.digest().to_string(),
            size: self.desc.size(),
            lazy: self.served.is_some(),
            path: self.path.clone(),
        }
    }

    fn stats(&self) -> LayerStats {
        self.served
            .as_ref()
            .map_or_else(|| LayerStats::unpacked(&self.desc), ServedLayer::stats)
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file, so a reader never sees
/// half a file.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(json_error("writing", path))?;
    std::fs::write(&tmp, bytes).map_err(io_error("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error("writing", path))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageMountError {
    let path = path.to_owned();
    move |source| ImageMountError::Io {
        action,
        path,
        source,
    }
}

fn json_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(serde_json::Error) -> ImageMountError {
    let path = path.to_owned();
    move |source| ImageMountError::Json {
        action,
        path,
        source,
    }
}

/// An error and its causes on one line, for a log.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pid: u32) -> MountState {
        MountState {
            pid,
            image: "registry.example/app:1".into(),
            dir: "/mnt/app".into(),
            index_digest: "sha256:00".into(),
            found_through: "referrers API".into(),
            layers: vec![LayerState {
                digest: "sha256:11".into(),
                size: 5,
                lazy: true,
                path: "/nonexistent/layers/0".into(),
            }],
            overlay_mounted: true,
            ready: true,
        }
    }

    #[test]
    fn state_dir_is_found_from_the_path_alone() {
        let a = StateDir::for_mount(Path::new("/root"), Path::new("/mnt/a"));
        let b = StateDir::for_mount(Path::new("/root"), Path::new("/mnt/a"));
        let c = StateDir::for_mount(Path::new("/root"), Path::new("/mnt/b"));
        assert_eq!(a.path(), b.path());
        assert_ne!(a.path(), c.path());
        assert!(a.path().starts_with("/root/mounts"));
        let name = a.path().file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert_eq!(name.len(), 16);
    }

    #[test]
    fn state_round_trips_and_missing_state_is_none() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::for_mount(tmp.path(), Path::new("/mnt/app"));
        assert!(dir.read_state().expect("no state").is_none());
        dir.create().expect("create");
        write_json(&dir.path().join(STATE_FILE), &state(42)).expect("write");
        let read = dir.read_state().expect("read").expect("some");
        assert_eq!(read.pid, 42);
        assert_eq!(read.layers.len(), 1);
        dir.discard_failed_mount();
        assert!(dir.read_state().expect("read").is_none());
        dir.remove().expect("remove");
        assert!(!dir.path().exists());
    }

    #[test]
    fn missing_stats_name_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::for_mount(tmp.path(), Path::new("/mnt/app"));
        assert!(!dir.has_stats());
        let err = dir.read_stats().expect_err("no stats");
        assert!(matches!(err, ImageMountError::NoStats { .. }), "{err}");
        assert!(err.to_string().contains("stats.json is missing"), "{err}");
    }

    #[test]
    fn stats_and_read_summary_are_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::for_mount(tmp.path(), Path::new("/mnt/app"));
        dir.create().expect("create");
        let layer = Descriptor::new(
            oci::MediaType::ImageLayerGzip,
            7,
            oci::digest::sha256(b"layer"),
        );
        write_json(
            &dir.path().join(STATS_FILE),
            &vec![LayerStats::unpacked(&layer)],
        )
        .expect("write");
        let stats = dir.read_stats().expect("stats");
        assert_eq!(stats.layers, vec![LayerStats::unpacked(&layer)]);
        assert!(stats.reads.is_none());
        let summary = ReadSummary { files: 2, bytes: 9 };
        write_json(&dir.path().join(READS_FILE), &summary).expect("write");
        let reads = dir.read_stats().expect("stats").reads.expect("reads");
        assert_eq!((reads.files, reads.bytes), (2, 9));
    }

    #[test]
    fn pids_that_name_process_groups_are_never_signalled() {
        // kill(0) and kill(-1) would reach many processes: a corrupt state file must not.
        assert!(!state(0).server_alive());
        assert!(!state(u32::MAX).server_alive());
        assert_eq!(state(0).stop_server(Duration::ZERO), ServerStop::NotRunning);
        assert!(state(std::process::id()).server_alive());
    }

    #[test]
    fn clean_up_removes_the_directory_of_a_dead_server() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::for_mount(tmp.path(), Path::new("/mnt/app"));
        dir.create().expect("create");
        dir.clean_up(&state(0)).expect("clean up");
        assert!(!dir.path().exists());
    }
}
