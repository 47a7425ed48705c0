//! `soci mount IMAGE DIR` and `soci unmount DIR`: an image from a registry mounted lazily.
//!
//! Each layer with a zTOC becomes a FUSE mount served by this process; small layers without
//! one are downloaded and unpacked; overlayfs stacks them at DIR. Unless `--foreground` is
//! given, `soci mount` starts a detached copy of itself that serves the mounts, waits until it
//! reports the mount ready, and returns. Everything the server needs to be cleaned up lives in
//! a state directory under the data root, so `soci unmount` also cleans up after a server that
//! was killed.

use crate::remote::{self, RegistryArgs, Remote};
use anyhow::{bail, Context, Result};
use clap::Args;
use lazyfs::overlay::{self, UpperDirs};
use lazyfs::readlog::ReadLog;
use lazyfs::serve::{
    serve_layer, BackgroundFetch, BackgroundGate, FuseOptions, LayerStats, LayerToServe,
    ServeOptions, ServedLayer,
};
use lazyfs::{CacheBudget, CacheTtls, SpanConfig};
use oci::reference::ImageRef;
use oci::soci_index::SociIndex;
use oci::Descriptor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Retries of registry requests made by the mount server: a read blocked on a span fails with
/// EIO after about ten seconds of an unreachable registry instead of hanging for a minute.
const FETCH_RETRY: registry::retry::RetryPolicy = registry::retry::RetryPolicy {
    max_attempts: 4,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(2),
    max_elapsed: Duration::from_secs(10),
};

/// Environment variable marking the detached server (so it does not detach again).
const DETACHED_ENV: &str = "SOCI_MOUNT_SERVER";

#[derive(Args)]
pub struct MountArgs {
    /// Image in a registry: HOST/REPO[:TAG|@DIGEST].
    #[arg(required_unless_present = "stats")]
    image: Option<String>,
    /// Directory to mount at (created if missing).
    #[arg(required_unless_present = "stats")]
    dir: Option<PathBuf>,
    /// Print bytes fetched per layer for the image mounted at DIR, and exit.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["image", "dir", "rw", "foreground"])]
    stats: Option<PathBuf>,
    /// Writable mount: changes go to an upper directory under the data root and are
    /// discarded by `soci unmount`.
    #[arg(long)]
    rw: bool,
    /// Platform of a multi-platform image (default: this machine's).
    #[arg(long)]
    platform: Option<String>,
    /// Serve the mount from this process until interrupted, instead of detaching.
    #[arg(long)]
    foreground: bool,
    /// Fetch the rest of each lazy layer in the background at this many MB/s (0: unlimited).
    #[arg(long, default_value_t = 0.0, value_name = "MB/S")]
    background_fetch_rate: f64,
    /// Do not fetch layers in the background: only what is read is ever fetched.
    #[arg(long)]
    no_background_fetch: bool,
    /// Range requests in flight per layer.
    #[arg(long, default_value_t = 4)]
    fetch_concurrency: usize,
    /// Limit of the span cache under the data root, in MB (least recently used spans are
    /// deleted beyond it and the background fetch stops at it; 0: no limit).
    #[arg(long, default_value_t = 0, value_name = "MB")]
    cache_limit_mb: u64,
    /// Write the files read through the mount to FILE (a JSON list, first read first) when the
    /// mount ends or `--stats` is asked: a learned prefetch list for
    /// `soci create --prefetch-files-json FILE`.
    #[arg(long, value_name = "FILE")]
    record_reads: Option<PathBuf>,
    /// With --record-reads: also write the byte ranges read of each file to FILE, a JSON
    /// object `{"/path": [[start, end], ...]}` (end exclusive, kernel readahead included),
    /// for measuring how much of what was fetched a workload used.
    #[arg(long, value_name = "FILE", requires = "record_reads")]
    record_read_ranges: Option<PathBuf>,
    /// FUSE worker threads per layer (they mostly wait on the disk or the network).
    #[arg(long, default_value_t = 8)]
    fuse_threads: usize,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Args)]
pub struct UnmountArgs {
    /// The directory given to `soci mount`.
    dir: PathBuf,
    /// Detach the mount even if processes still use it (like `umount -l`).
    #[arg(long, short = 'f')]
    force: bool,
}

/// What the server records about a mount, for `soci unmount` and `--stats`.
#[derive(Serialize, Deserialize)]
struct MountState {
    pid: u32,
    image: String,
    dir: PathBuf,
    index_digest: String,
    found_through: String,
    layers: Vec<LayerState>,
    overlay_mounted: bool,
    ready: bool,
}

#[derive(Serialize, Deserialize, Clone)]
struct LayerState {
    digest: String,
    size: u64,
    lazy: bool,
    path: PathBuf,
}

/// What a mount with `--record-reads` has seen read, for `--stats`.
#[derive(Serialize, Deserialize)]
struct ReadSummary {
    /// Files read.
    files: u64,
    /// Distinct bytes of those files read (kernel readahead included).
    bytes: u64,
}

fn state_dir(root: &Path, dir: &Path) -> PathBuf {
    let id = oci::digest::sha256(dir.as_os_str().as_encoded_bytes()).to_string();
    let hex = id.trim_start_matches("sha256:");
    root.join("mounts").join(&hex[..16])
}

fn read_state(state_dir: &Path) -> Result<Option<MountState>> {
    let path = state_dir.join("state.json");
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

pub fn run(root: &Path, args: MountArgs) -> Result<()> {
    if let Some(dir) = &args.stats {
        let dir = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
        let state = state_dir(root, &dir);
        refresh_stats(&state)?;
        return print_stats(&state, &dir);
    }
    let (Some(image), Some(dir)) = (args.image.clone(), args.dir.clone()) else {
        bail!("soci mount needs IMAGE and DIR");
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let state = state_dir(root, &dir);
    if let Some(s) = read_state(&state)? {
        if process_alive(s.pid) {
            bail!(
                "{} is already mounted by soci (server pid {}); run `soci unmount {}` first",
                dir.display(),
                s.pid,
                dir.display()
            );
        }
        bail!(
            "a previous mount at {} was not cleaned up (its server is gone); run `soci unmount {}`",
            dir.display(),
            dir.display()
        );
    }
    if overlay::is_mounted(&dir) {
        bail!("{} is already a mount point", dir.display());
    }
    if args.foreground || std::env::var_os(DETACHED_ENV).is_some() {
        serve(root, &args, &image, &dir, &state)
    } else {
        detach(&image, &dir, &state)
    }
}

/// Starts the server as a detached copy of this command and waits for it to be ready.
fn detach(image: &str, dir: &Path, state: &Path) -> Result<()> {
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let log_path = state.join("server.log");
    let log = std::fs::File::create(&log_path)?;
    let exe = std::env::current_exe().context("finding the soci executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(DETACHED_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it only detaches the child from our terminal
    // session so that it outlives this command.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the mount server")?;
    let started = Instant::now();
    loop {
        if let Some(s) = read_state(state)? {
            if s.ready {
                let lazy = s.layers.iter().filter(|l| l.lazy).count();
                println!(
                    "mounted {image} at {}: {} layers ({lazy} lazy, {} unpacked), SOCI index {} (found through {}), server pid {}, ready in {:.2} s",
                    dir.display(),
                    s.layers.len(),
                    s.layers.len() - lazy,
                    s.index_digest,
                    s.found_through,
                    s.pid,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let _ = std::fs::remove_dir_all(state);
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("mounting {image} failed ({status}):\n{}", tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Holds what must be undone when the server stops, in reverse order of creation.
struct Mounted {
    dir: PathBuf,
    overlay: bool,
    layers: Vec<MountedLayer>,
}

impl Drop for Mounted {
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

/// One layer of the image as this server mounts it: served lazily, or unpacked at `path`.
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

fn serve(root: &Path, args: &MountArgs, image: &str, dir: &Path, state: &Path) -> Result<()> {
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    // Figures of an earlier mount at this directory must not be shown for this one.
    let _ = std::fs::remove_file(state.join("reads.json"));
    // A mount that fails half-way leaves nothing behind.
    let result = serve_inner(root, args, image, dir, state);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(state.join("layers"));
        let _ = std::fs::remove_file(state.join("state.json"));
        if std::env::var_os(DETACHED_ENV).is_none() {
            let _ = std::fs::remove_dir_all(state);
        }
    }
    result
}

fn serve_inner(root: &Path, args: &MountArgs, image: &str, dir: &Path, state: &Path) -> Result<()> {
    let remote = Remote::with_retry(&args.registry, FETCH_RETRY)?;
    let reference = ImageRef::parse(image)?;
    let repo = remote.repository(&reference)?;
    let (resolved, found) =
        remote::resolve_indexed_image(&remote, &repo, &reference, image, args.platform.as_deref())?;
    tracing::info!(index = %found.digest, through = found.found_through, "using SOCI index");

    let read_log = args.record_reads.as_ref().map(|_| ReadLog::new());
    // Background fetches start once the mount is ready: they must not slow the prefetch.
    let gate = BackgroundGate::closed();
    let options = serve_options(root, args, &remote, read_log.clone(), &gate);
    let mut mounted = Mounted {
        dir: dir.to_owned(),
        overlay: false,
        layers: Vec::new(),
    };
    for (i, layer) in resolved.manifest.layers().iter().enumerate() {
        let path = state.join("layers").join(i.to_string());
        let mounted_layer = mount_layer(&remote, &repo, &found.index, layer, path, &options)?;
        mounted.layers.push(mounted_layer);
    }
    // The prefetch artifacts' spans are fetched (all layers at once) before the mount is
    // reported ready; a failure costs speed, not correctness.
    remote.rt.block_on(futures_util::future::join_all(
        mounted
            .layers
            .iter_mut()
            .filter_map(|l| l.served.as_mut())
            .map(ServedLayer::wait_prefetch),
    ));
    mount_overlay(args.rw, state, &mut mounted)?;

    let mut mount_state = MountState {
        pid: std::process::id(),
        image: image.to_owned(),
        dir: dir.to_owned(),
        index_digest: found.digest.to_string(),
        found_through: found.found_through.to_owned(),
        layers: mounted.layers.iter().map(MountedLayer::state).collect(),
        overlay_mounted: true,
        ready: true,
    };
    write_json(&state.join("state.json"), &mount_state)?;
    gate.open();
    if std::env::var_os(DETACHED_ENV).is_none() {
        eprintln!(
            "mounted {image} at {}; serving until interrupted (Ctrl-C)",
            dir.display()
        );
    }

    let outputs = Outputs {
        args,
        state,
        read_log: read_log.as_deref(),
    };
    serve_until_stopped(&remote, &mounted.layers, &outputs)?;
    outputs.write_reads();
    outputs.write_stats(&mounted.layers);
    tracing::info!("stopping: unmounting {}", dir.display());
    drop(mounted);
    mount_state.overlay_mounted = false;
    mount_state.ready = false;
    write_json(&state.join("state.json"), &mount_state)?;
    Ok(())
}

/// How this server's lazy layers are served, from its flags.
fn serve_options(
    root: &Path,
    args: &MountArgs,
    remote: &Remote,
    read_log: Option<Arc<ReadLog>>,
    gate: &BackgroundGate,
) -> ServeOptions {
    let limit = (args.cache_limit_mb > 0).then_some(args.cache_limit_mb.saturating_mul(1_000_000));
    ServeOptions {
        cache_root: root.join("cache"),
        spans: SpanConfig {
            fetch_concurrency: args.fetch_concurrency.max(1),
            ..SpanConfig::default()
        },
        budget: CacheBudget::new(limit),
        fuse: FuseOptions {
            threads: args.fuse_threads,
            ttls: CacheTtls::default(),
            read_log,
        },
        background: if args.no_background_fetch {
            BackgroundFetch::Off
        } else {
            BackgroundFetch::at_mb_per_sec(args.background_fetch_rate, Some(gate.clone()))
        },
        runtime: remote.rt.handle().clone(),
    }
}

/// Mounts one image layer at `path`: lazily when the index has its zTOC, otherwise
/// downloaded whole and unpacked there.
fn mount_layer(
    remote: &Remote,
    repo: &registry::Repository,
    index: &SociIndex,
    layer: &Descriptor,
    path: PathBuf,
    options: &ServeOptions,
) -> Result<MountedLayer> {
    std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    let digest = layer.digest();
    let served = match index.ztocs.iter().find(|z| &z.layer_digest == digest) {
        Some(ztoc) => {
            let what = LayerToServe {
                repo,
                layer,
                ztoc,
                prefetch: index.prefetch.iter().find(|p| &p.layer_digest == digest),
            };
            Some(serve_layer(what, &path, options)?)
        }
        None => {
            let blob = remote::open_blob(remote, repo, layer)?;
            lazyfs::unpack::unpack_layer_blob(blob, layer, &path)?;
            None
        }
    };
    Ok(MountedLayer {
        desc: layer.clone(),
        path,
        served,
    })
}

/// Stacks the mounted layers with overlayfs at the mount's directory.
fn mount_overlay(rw: bool, state: &Path, mounted: &mut Mounted) -> Result<()> {
    let lowers: Vec<PathBuf> = mounted
        .layers
        .iter()
        .rev()
        .map(|l| l.path.clone())
        .collect();
    let upper = rw.then(|| UpperDirs {
        upper: state.join("upper"),
        work: state.join("work"),
    });
    if let Some(u) = &upper {
        std::fs::create_dir_all(&u.upper)?;
        std::fs::create_dir_all(&u.work)?;
    }
    overlay::mount_overlay(&mounted.dir, &lowers, upper.as_ref())
        .with_context(|| format!("mounting overlayfs at {}", mounted.dir.display()))?;
    mounted.overlay = true;
    Ok(())
}

/// Serves until SIGTERM or SIGINT, writing the statistics every second and when
/// `soci mount --stats` asks (SIGUSR1).
fn serve_until_stopped(remote: &Remote, layers: &[MountedLayer], outputs: &Outputs) -> Result<()> {
    remote.rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // `soci mount --stats` asks for figures that are current, not up to a second old.
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => outputs.write_stats(layers),
                _ = usr1.recv() => {
                    outputs.write_reads();
                    outputs.write_stats(layers);
                }
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}

/// The files the server writes for `--stats` and `--record-reads`.
struct Outputs<'a> {
    args: &'a MountArgs,
    state: &'a Path,
    read_log: Option<&'a ReadLog>,
}

impl Outputs<'_> {
    /// Per-layer figures for `soci mount --stats` (best effort: they are rewritten soon).
    fn write_stats(&self, layers: &[MountedLayer]) {
        let stats: Vec<LayerStats> = layers.iter().map(MountedLayer::stats).collect();
        let _ = write_json(&self.state.join("stats.json"), &stats);
    }

    /// The read list (and ranges) of `--record-reads`; a failure is logged.
    fn write_reads(&self) {
        let (Some(path), Some(log)) = (&self.args.record_reads, self.read_log) else {
            return;
        };
        if let Err(e) = self.try_write_reads(path, log) {
            tracing::warn!("writing the read list: {e:#}");
        }
    }

    fn try_write_reads(&self, path: &Path, log: &ReadLog) -> Result<()> {
        let paths = log.paths();
        write_json(path, &paths)?;
        let summary = ReadSummary {
            files: paths.len() as u64,
            bytes: log.bytes_read(),
        };
        write_json(&self.state.join("reads.json"), &summary)?;
        if let Some(file) = &self.args.record_read_ranges {
            let by_path: serde_json::Map<String, serde_json::Value> = log
                .ranges()
                .into_iter()
                .map(|(p, r)| (p, serde_json::json!(r)))
                .collect();
            write_json(file, &by_path)?;
        }
        Ok(())
    }
}

/// Asks a running server to write its statistics now, and waits (briefly) until it has.
fn refresh_stats(state: &Path) -> Result<()> {
    let Some(s) = read_state(state)? else {
        return Ok(());
    };
    if !process_alive(s.pid) {
        return Ok(());
    }
    let path = state.join("stats.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let before = modified(&path);
    // SAFETY: plain kill(2) to the server this state file names.
    unsafe { libc::kill(s.pid as libc::pid_t, libc::SIGUSR1) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while modified(&path) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn print_stats(state: &Path, dir: &Path) -> Result<()> {
    let path = state.join("stats.json");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "no soci mount statistics for {} ({} is missing)",
            dir.display(),
            path.display()
        )
    })?;
    let stats: Vec<LayerStats> = serde_json::from_slice(&bytes)?;
    let mut rows = vec![[
        "LAYER",
        "MODE",
        "SIZE",
        "FETCHED",
        "FETCHED %",
        "SPANS CACHED",
        "REQUESTS",
        "VERIFY FAILURES",
    ]
    .map(String::from)
    .to_vec()];
    let (mut size, mut fetched) = (0u64, 0u64);
    for s in &stats {
        size += s.size;
        fetched += s.metrics.bytes_fetched;
        rows.push(vec![
            s.digest.clone(),
            if s.lazy { "lazy" } else { "unpacked" }.into(),
            s.size.to_string(),
            s.metrics.bytes_fetched.to_string(),
            format!(
                "{:.1}",
                100.0 * s.metrics.bytes_fetched as f64 / s.size.max(1) as f64
            ),
            if s.lazy {
                format!("{}/{}", s.spans_cached, s.spans_total)
            } else {
                "-".into()
            },
            s.metrics.fetch_requests.to_string(),
            s.metrics.verification_failures.to_string(),
        ]);
    }
    print!("{}", crate::table::render(&rows));
    println!(
        "total: {fetched} of {size} bytes fetched ({:.1}%)",
        100.0 * fetched as f64 / size.max(1) as f64
    );
    // Only mounts with --record-reads keep the byte ranges read.
    if let Ok(bytes) = std::fs::read(state.join("reads.json")) {
        let r: ReadSummary = serde_json::from_slice(&bytes)?;
        println!(
            "read through the mount: {} bytes of {} files ({:.2} bytes fetched per byte read)",
            r.bytes,
            r.files,
            fetched as f64 / r.bytes.max(1) as f64
        );
    }
    Ok(())
}

pub fn unmount(root: &Path, args: UnmountArgs) -> Result<()> {
    let dir =
        std::fs::canonicalize(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    let state = state_dir(root, &dir);
    let Some(s) = read_state(&state)? else {
        bail!("nothing is mounted by soci at {}", dir.display());
    };
    if overlay::is_mounted(&dir) {
        if let Err(e) = overlay::unmount(&dir, false) {
            if e.raw_os_error() == Some(libc::EBUSY) && !args.force {
                bail!("{} is busy (a process has files open or runs there); stop it, or use `soci unmount --force` to detach the mount now", dir.display());
            }
            overlay::unmount(&dir, true)
                .with_context(|| format!("unmounting {}", dir.display()))?;
        }
    }
    if process_alive(s.pid) {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(s.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(s.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if process_alive(s.pid) {
            eprintln!(
                "the mount server (pid {}) did not stop in 10 s; killing it",
                s.pid
            );
            // SAFETY: plain kill(2).
            unsafe { libc::kill(s.pid as libc::pid_t, libc::SIGKILL) };
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // A server that died leaves its FUSE mounts behind ("transport endpoint is not connected").
    for l in &s.layers {
        if overlay::is_mounted(&l.path) {
            overlay::unmount(&l.path, true)
                .with_context(|| format!("unmounting layer {}", l.path.display()))?;
        }
    }
    if state.join("stats.json").exists() {
        print_stats(&state, &dir)?;
    }
    std::fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
    println!("unmounted {}", dir.display());
    Ok(())
}
