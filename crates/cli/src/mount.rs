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
use lazyfs::image_mount::{
    mount_image, ImageMountError, ImageToMount, MountOptions, MountStats, MountedImage, ServerStop,
    StateDir,
};
use lazyfs::overlay;
use oci::reference::ImageRef;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Retries of registry requests made by the mount server: a read blocked on a span fails with
/// EIO after about ten seconds of an unreachable registry instead of hanging for a minute.
pub(crate) const FETCH_RETRY: registry::retry::RetryPolicy = registry::retry::RetryPolicy {
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
    /// Serve every read through this process: no FUSE passthrough. By default (Linux 6.9+)
    /// an open of a file of 128 KiB or more whose data is all local is handed to the kernel,
    /// which then reads a per-file copy in the span cache directly.
    #[arg(long)]
    no_passthrough: bool,
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

pub fn run(root: &Path, args: MountArgs) -> Result<()> {
    if let Some(dir) = &args.stats {
        let dir = std::fs::canonicalize(dir).with_context(|| format!("{}", dir.display()))?;
        let state = StateDir::for_mount(root, &dir);
        state.refresh_stats()?;
        return print_stats(&state.read_stats()?);
    }
    let (Some(image), Some(dir)) = (args.image.clone(), args.dir.clone()) else {
        bail!("soci mount needs IMAGE and DIR");
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let state = StateDir::for_mount(root, &dir);
    refuse_mounted(&state)?;
    if args.foreground || std::env::var_os(DETACHED_ENV).is_some() {
        let served = serve(root, &args, &image, &state);
        // Without a detached parent to show the server's log, nothing of a failed mount stays.
        if served.is_err() && std::env::var_os(DETACHED_ENV).is_none() {
            let _ = state.remove();
        }
        served
    } else {
        detach(&image, &state)
    }
}

/// Fails when the directory is mounted already, by soci or otherwise.
fn refuse_mounted(state: &StateDir) -> Result<()> {
    let dir = state.mount_dir().display();
    if let Some(s) = state.read_state()? {
        if s.server_alive() {
            bail!(
                "{dir} is already mounted by soci (server pid {}); run `soci unmount {dir}` first",
                s.pid
            );
        }
        bail!("a previous mount at {dir} was not cleaned up (its server is gone); run `soci unmount {dir}`");
    }
    if overlay::is_mounted(state.mount_dir()) {
        bail!("{dir} is already a mount point");
    }
    Ok(())
}

/// Starts the server as a detached copy of this command and waits for it to be ready.
fn detach(image: &str, state: &StateDir) -> Result<()> {
    state.create()?;
    let log_path = state.path().join("server.log");
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
        if let Some(s) = state.read_state()? {
            if s.ready {
                let lazy = s.layers.iter().filter(|l| l.lazy).count();
                println!(
                    "mounted {image} at {}: {} layers ({lazy} lazy, {} unpacked), SOCI index {} (found through {}), server pid {}, ready in {:.2} s",
                    s.dir.display(),
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
            let _ = state.remove();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("mounting {image} failed ({status}):\n{}", tail.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mounts the image and serves it until SIGTERM or SIGINT.
fn serve(root: &Path, args: &MountArgs, image: &str, state: &StateDir) -> Result<()> {
    let remote = Remote::with_retry(&args.registry, FETCH_RETRY)?;
    let reference = ImageRef::parse(image)?;
    let repo = remote.repository(&reference)?;
    let (resolved, found) =
        remote::resolve_indexed_image(&remote, &repo, &reference, image, args.platform.as_deref())?;
    tracing::info!(index = %found.digest, through = found.found_through, "using SOCI index");
    let what = ImageToMount {
        image,
        manifest: &resolved.manifest,
        index: &found,
        repo: &repo,
        local: &lazyfs::layer::LocalBlobs::default(),
    };
    let mounted = mount_image(what, state, &mount_options(root, args), remote.rt.handle())?;
    if std::env::var_os(DETACHED_ENV).is_none() {
        eprintln!(
            "mounted {image} at {}; serving until interrupted (Ctrl-C)",
            state.mount_dir().display()
        );
    }
    serve_until_stopped(&remote, &mounted)?;
    Ok(mounted.unmount()?)
}

/// How the image is mounted, from the flags.
fn mount_options(root: &Path, args: &MountArgs) -> MountOptions {
    MountOptions {
        writable: args.rw,
        cache_root: root.join("cache"),
        cache_limit: (args.cache_limit_mb > 0)
            .then_some(args.cache_limit_mb.saturating_mul(1_000_000)),
        fetch_concurrency: args.fetch_concurrency,
        fuse_threads: args.fuse_threads,
        background_fetch_mb_per_sec: (!args.no_background_fetch)
            .then_some(args.background_fetch_rate),
        record_reads: args.record_reads.clone(),
        record_read_ranges: args.record_read_ranges.clone(),
        log_reads: false,
        passthrough: (!args.no_passthrough).then(|| lazyfs::passthrough::PassthroughConfig {
            ids_dir: root.join("passthrough"),
            enabled: true,
            table: None,
        }),
    }
}

/// Serves until SIGTERM or SIGINT, writing the statistics every second and when
/// `soci mount --stats` asks (SIGUSR1).
fn serve_until_stopped(remote: &Remote, mounted: &MountedImage) -> Result<()> {
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
                _ = tick.tick() => mounted.write_stats(),
                _ = usr1.recv() => {
                    mounted.write_reads();
                    mounted.write_stats();
                }
            }
        }
        Ok::<_, std::io::Error>(())
    })?;
    Ok(())
}

/// Prints the per-layer figures of a mount and, with a read log, how much of what was
/// fetched was read.
fn print_stats(stats: &MountStats) -> Result<()> {
    let mut rows = vec![[
        "LAYER",
        "MODE",
        "SIZE",
        "FETCHED",
        "FETCHED %",
        "SPANS CACHED",
        "REQUESTS",
        "WINDOWS FETCHED",
        "VERIFY FAILURES",
    ]
    .map(String::from)
    .to_vec()];
    let (mut size, mut fetched) = (0u64, 0u64);
    for s in &stats.layers {
        size += s.size;
        fetched += s.metrics.bytes_fetched;
        rows.push(vec![
            s.digest.clone(),
            if s.lazy { "lazy" } else { "unpacked" }.into(),
            s.size.to_string(),
            s.metrics.bytes_fetched.to_string(),
            percent(s.metrics.bytes_fetched, s.size),
            if s.lazy {
                format!("{}/{}", s.spans_cached, s.spans_total)
            } else {
                "-".into()
            },
            s.metrics.fetch_requests.to_string(),
            // Checkpoint windows fetched from the zTOC (lean zTOCs), and their bytes.
            match s.metrics.windows_fetched {
                0 => "-".into(),
                n => format!("{n} ({} bytes)", s.metrics.window_bytes_fetched),
            },
            s.metrics.verification_failures.to_string(),
        ]);
    }
    print!("{}", crate::table::render(&rows));
    println!(
        "total: {fetched} of {size} bytes fetched ({}%)",
        percent(fetched, size)
    );
    if let Some(r) = &stats.reads {
        println!(
            "read through the mount: {} bytes of {} files ({:.2} bytes fetched per byte read)",
            r.bytes,
            r.files,
            fetched as f64 / r.bytes.max(1) as f64
        );
    }
    Ok(())
}

/// `part` as a percentage of `whole`, one decimal.
fn percent(part: u64, whole: u64) -> String {
    format!("{:.1}", 100.0 * part as f64 / whole.max(1) as f64)
}

pub fn unmount(root: &Path, args: UnmountArgs) -> Result<()> {
    let dir =
        std::fs::canonicalize(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    let state = StateDir::for_mount(root, &dir);
    let Some(s) = state.read_state()? else {
        bail!("nothing is mounted by soci at {}", dir.display());
    };
    match state.unmount_overlay(args.force) {
        Err(ImageMountError::Busy { .. }) => bail!(
            "{} is busy (a process has files open or runs there); stop it, or use `soci unmount --force` to detach the mount now",
            dir.display()
        ),
        other => other?,
    }
    if s.stop_server(Duration::from_secs(10)) == ServerStop::Killed {
        eprintln!(
            "the mount server (pid {}) did not stop in 10 s; it was killed",
            s.pid
        );
    }
    if state.has_stats() {
        print_stats(&state.read_stats()?)?;
    }
    state.clean_up(&s)?;
    println!("unmounted {}", dir.display());
    Ok(())
}
