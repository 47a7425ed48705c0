//! `soci optimize IMAGE [-- CMD ARGS]`: run the image's workload once lazily, learn what it
//! reads, and build (and publish) an index with checkpoints around those reads and a prefetch
//! artifact for them. The work is `optimize::optimize`; this parses the flags and prints.

use crate::create::{print_index_layers, Bars};
use crate::remote::{RegistryArgs, Remote};
use anyhow::{bail, Context, Result};
use clap::Args;
use indexer::local::LocalStore;
use indexer::{ImageSource, Settings};
use oci::layout::PlatformSelection;
use oci::platform::Platform;
use oci::reference::ImageRef;
use optimize::{Interrupt, Optimized, Publication, Published, Request};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Cold spans of an optimized index: long, since only misses and background fetches read
/// them, and every checkpoint costs a 32 KiB window in the zTOC fetched before the first read.
const OPTIMIZED_SPAN_SIZE: u64 = 8 << 20;

/// Arguments of `soci optimize`.
#[derive(Args)]
pub struct OptimizeArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// The workload is ready (and is stopped) once a line of its output (stdout or stderr)
    /// contains TEXT. Without it, the workload must exit successfully.
    #[arg(long, value_name = "TEXT")]
    ready_line: Option<String>,
    /// Seconds the workload may take to get ready (or exit).
    #[arg(long, default_value_t = 300, value_name = "S")]
    timeout: u64,
    /// Write a converted image (SOCI index v2) to DST (HOST/REPO:TAG on the same registry),
    /// as `soci convert` does.
    #[arg(long, value_name = "DST", conflicts_with = "push")]
    convert: Option<String>,
    /// Push the index (v1) to the image's repository, as `soci push` does. Without --push or
    /// --convert the index is kept in the local store for `soci push`.
    #[arg(long)]
    push: bool,
    /// Longest span (uncompressed bytes between checkpoints) away from what the workload
    /// reads; spans around the reads are as short as the gzip stream allows.
    #[arg(long, default_value_t = OPTIMIZED_SPAN_SIZE)]
    span_size: u64,
    /// Layers smaller than this get no zTOC (they are fetched whole at run time).
    #[arg(long, default_value_t = 10 << 20)]
    min_layer_size: u64,
    /// Platform of a multi-platform image (default: this machine's).
    #[arg(long, short = 'p')]
    platform: Option<String>,
    /// Also write the byte ranges the workload read to FILE (`{"/path": [[start, end]]}`,
    /// as `soci mount --record-read-ranges` writes), for `soci create --prefetch-files-json`.
    #[arg(long, value_name = "FILE")]
    record_read_ranges: Option<PathBuf>,
    /// List no lean zTOCs in the index (see `soci create --help`).
    #[arg(long)]
    no_lean_ztocs: bool,
    /// Image in a registry: HOST/REPO[:TAG|@DIGEST]. It is never changed.
    image: String,
    /// The command to run instead of the image's cmd (after its entrypoint, as `docker run
    /// IMAGE ARGS` does). Default: the image's entrypoint and cmd.
    #[arg(last = true, value_name = "CMD")]
    args: Vec<String>,
}

pub fn run(root: &Path, args: OptimizeArgs) -> Result<()> {
    if args.span_size == 0 {
        bail!("--span-size must be positive");
    }
    let reference = ImageRef::parse(&args.image)?;
    if matches!(reference, ImageRef::OciLayout { .. }) {
        bail!("soci optimize runs the image lazily from a registry; push the layout first (e.g. skopeo copy oci:DIR docker://HOST/REPO:TAG)");
    }
    let image_ref = crate::normalize_ref(&args.image)?;
    let remote = Remote::with_retry(&args.registry, crate::mount::FETCH_RETRY)?;
    let repo = remote.repository(&reference)?;
    let publication = match &args.convert {
        Some(dst) => {
            let (dest, dest_ref) =
                crate::convert::registry_destination(&remote, &reference, &repo, dst)?;
            Publication::Convert { dest, dest_ref }
        }
        None if args.push => Publication::Push,
        None => Publication::Local,
    };
    let settings = Settings {
        span_size: args.span_size,
        min_layer_size: args.min_layer_size,
        platforms: match &args.platform {
            Some(p) => PlatformSelection::Some(vec![Platform::parse(p)?]),
            None => PlatformSelection::Host,
        },
        layer_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
        lean_ztocs: !args.no_lean_ztocs,
        ..Settings::default()
    };
    let source = ImageSource::registry(repo.clone(), &crate::remote::reference_of(&reference));
    let opened = remote.rt.block_on(source.open(&settings.platforms))?;
    let local = LocalStore::open(root)?;
    let interrupt = Arc::new(Interrupt::default());
    remote.rt.spawn(stop_on_signal(interrupt.clone()));
    let request = Request {
        image_ref: &image_ref,
        repo: &repo,
        source: &source,
        opened: &opened,
        settings: &settings,
        local: &local,
        data_root: root.to_owned(),
        args: args.args.clone(),
        ready_line: args.ready_line.clone(),
        timeout: Duration::from_secs(args.timeout),
        interrupt,
        publication,
        progress: Bars::shared(),
    };
    eprintln!("learning what {image_ref} reads: building zTOCs, then running it lazily");
    let optimized = optimize::optimize(&request, remote.rt.handle())
        .with_context(|| format!("optimizing {image_ref}; nothing was published"))?;
    if let Some(file) = &args.record_read_ranges {
        write_ranges(file, &optimized)?;
    }
    print_result(&optimized, &image_ref);
    Ok(())
}

/// Ctrl-C or SIGTERM: the workload is stopped and its mount cleaned up (the run then fails
/// with nothing published); with nothing mounted, the process exits at once, as by default.
async fn stop_on_signal(interrupt: Arc<Interrupt>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if !interrupt.request() {
            eprintln!("interrupted; nothing was published");
            std::process::exit(130);
        }
        eprintln!("interrupted: stopping the workload and unmounting");
    }
}

/// The learned ranges as `soci mount --record-read-ranges` writes them.
fn write_ranges(file: &Path, optimized: &Optimized) -> Result<()> {
    let json = serde_json::to_vec_pretty(&lazyfs::readlog::RangesByPath(&optimized.learned.reads))?;
    std::fs::write(file, json).with_context(|| format!("writing {}", file.display()))
}

fn print_result(optimized: &Optimized, image_ref: &str) {
    let learned = &optimized.learned;
    let how = if learned.finished.ready {
        "printed its ready line"
    } else {
        "exited successfully"
    };
    println!(
        "workload {:?} {how} after {:.2} s: read {} bytes of {} files, {} bytes fetched",
        learned.command.join(" "),
        learned.finished.elapsed.as_secs_f64(),
        learned.bytes_read(),
        learned.reads.len(),
        learned.bytes_fetched
    );
    for index in &optimized.built.indexes.indexes {
        print_index_layers(index, &optimized.built);
    }
    match &optimized.published {
        Published::Local(records) => {
            for r in records {
                println!(
                    "soci index {} created for {image_ref} ({}); push it with `soci push {image_ref}`",
                    r.digest, r.platform
                );
            }
        }
        Published::Pushed(records, written) => {
            for r in records {
                println!(
                    "soci index {} pushed for {image_ref} ({})",
                    r.digest, r.platform
                );
            }
            for d in written {
                println!("wrote manifest {d}");
            }
        }
        Published::Converted(c) => {
            for rec in &c.records {
                println!(
                    "soci index {} (v2) for {} -> manifest {}",
                    rec.digest, rec.platform, rec.manifest_digest
                );
            }
            println!("converted image {} written", c.index_digest);
        }
    }
}
