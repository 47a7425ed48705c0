//! `soci`: build and inspect SOCI indexes. Commands and flags follow AWS's `soci` CLI.

mod convert;
mod create;
mod image;
mod index_cmd;
mod inspect;
mod mount;
mod optimize;
mod push;
mod remote;
mod table;
mod ztoc_cmd;
mod ztoc_info;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Default data root, shared with the snapshotter daemon.
const DEFAULT_ROOT: &str = "/var/lib/soci-snapshotter-grpc";

#[derive(Parser)]
#[command(
    name = "soci",
    version,
    about = "Build and inspect SOCI (Seekable OCI) indexes for lazy-loading container images",
    long_about = "Build and inspect SOCI (Seekable OCI) indexes.\n\n\
        A SOCI index holds one zTOC per large layer of an image: the layer's file table with \
        offsets and gzip checkpoints every span, so a snapshotter can fetch only the parts of a \
        layer a container reads. Indexes are built without changing the image."
)]
struct Cli {
    /// Data root holding the content store and the metadata database.
    #[arg(long, global = true, env = "SOCI_ROOT", default_value = DEFAULT_ROOT)]
    root: PathBuf,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    #[command(flatten)]
    containerd: ContainerdArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where SOCI indexes and zTOCs are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ContentStoreKind {
    /// The local store under --root.
    Soci,
    /// containerd's content store (also keeps the local records under --root).
    Containerd,
}

/// containerd connection flags, global like AWS's (`--address`, `--namespace`,
/// `--content-store`).
#[derive(Args, Clone, Debug)]
pub(crate) struct ContainerdArgs {
    /// containerd's gRPC socket.
    #[arg(
        long,
        short = 'a',
        global = true,
        env = "CONTAINERD_ADDRESS",
        default_value = containerd::DEFAULT_ADDRESS
    )]
    pub address: PathBuf,
    /// containerd namespace.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "CONTAINERD_NAMESPACE",
        default_value = containerd::DEFAULT_NAMESPACE
    )]
    pub namespace: String,
    /// Content store for SOCI indexes and zTOCs that `soci create` writes and `soci push`
    /// reads: soci (local, under --root) or containerd (containerd's content store, where
    /// containerd's garbage collector keeps them while the image exists).
    #[arg(long, global = true, value_enum, default_value = "soci")]
    pub content_store: ContentStoreKind,
}

#[derive(Subcommand)]
enum Command {
    /// Create a SOCI index for an image in a registry (HOST/REPO:TAG) or an OCI layout
    /// (oci:DIR[:TAG]); layers are streamed once and nothing of the image is stored.
    Create(create::CreateArgs),
    /// Push an image's SOCI index (v1) and zTOCs to the image's repository, discoverable
    /// through the referrers API or the sha256-<digest> tag schema.
    Push(push::PushArgs),
    /// Convert an image into a SOCI-enabled image (SOCI index manifest v2): a new image
    /// index binding each image manifest to its SOCI index; layers are shared, not copied.
    Convert(convert::ConvertArgs),
    /// List, inspect and remove SOCI indexes.
    #[command(subcommand)]
    Index(index_cmd::IndexCommand),
    /// List and inspect zTOCs, and extract files through them.
    #[command(subcommand)]
    Ztoc(ztoc_cmd::ZtocCommand),
    /// Rebuild the metadata database from the content store.
    RebuildDb,
    /// Images in containerd (`soci image rpull`).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Mount an image from a registry lazily: files are fetched as they are read.
    ///
    /// The image's SOCI index is found in the registry (a v2 image from `soci convert`, else a
    /// v1 index pushed with `soci push`, through the referrers API or the sha256-<digest> tag).
    /// Layers with a zTOC are mounted through FUSE and only the spans a process reads are
    /// fetched, with HTTP Range requests; small layers are downloaded and unpacked. overlayfs
    /// stacks the layers at DIR, so `chroot DIR ...` works.
    ///
    /// Every span is checked against its digest from the zTOC before use; a span that fails,
    /// or a registry unreachable for about ten seconds, makes the read fail with EIO (spans
    /// already fetched keep being served from the cache under the data root).
    ///
    /// The mount is served by a background process; `soci unmount DIR` ends it, and
    /// `soci mount --stats DIR` prints bytes fetched per layer.
    Mount(mount::MountArgs),
    /// Learn what an image's workload reads and build an index that fits it.
    ///
    /// The image's layers get zTOCs with uniform checkpoints (kept in memory), the image is
    /// mounted lazily from them, and the workload (the image's entrypoint and cmd, or CMD)
    /// runs once, chrooted in the mount with its own /proc, until a line of its output
    /// contains --ready-line TEXT (or it exits). The byte ranges it read then place the
    /// checkpoints of the final index (short spans around the reads, long ones elsewhere)
    /// and its prefetch artifacts, so a start fetches little more than it reads. The image
    /// never changes; zTOCs stay readable by AWS's snapshotter. The index is kept locally
    /// (for `soci push`), pushed with --push (v1), or written as a converted image with
    /// --convert DST (v2). Nothing is published when the workload fails or never gets ready.
    Optimize(optimize::OptimizeArgs),
    /// Unmount an image mounted with `soci mount` and stop its server.
    Unmount(mount::UnmountArgs),
    /// List a directory of an image in a registry, through its SOCI index (nothing is pulled).
    Ls(inspect::LsArgs),
    /// Print a file of an image in a registry, fetching only the spans that hold it.
    Cat(inspect::CatArgs),
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(cli) {
        // A reader that stopped early (`soci ls … | head`) is not an error.
        let broken_pipe = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        });
        if broken_pipe {
            std::process::exit(0);
        }
        eprintln!("soci: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Create(args) => create::run(&cli.root, &cli.containerd, args),
        Command::Push(args) => push::run(&cli.root, &cli.containerd, args),
        Command::Image(cmd) => image::run(&cli.containerd, cmd),
        Command::Convert(args) => convert::run(&cli.root, args),
        Command::Mount(args) => mount::run(&cli.root, args),
        Command::Optimize(args) => optimize::run(&cli.root, args),
        Command::Unmount(args) => mount::unmount(&cli.root, args),
        Command::Ls(args) => inspect::ls(&cli.root, args),
        Command::Cat(args) => inspect::cat(&cli.root, args),
        Command::Index(cmd) => index_cmd::run(&cli.root, cmd),
        Command::Ztoc(cmd) => ztoc_cmd::run(&cli.root, cmd),
        Command::RebuildDb => {
            let local = indexer::local::LocalStore::open(&cli.root)?;
            let summary = local.db.rebuild(&local.store)?;
            println!(
                "rebuilt the database from {}: {} indexes, {} ztocs ({} stale records dropped)",
                cli.root.display(),
                summary.indexes,
                summary.ztocs,
                summary.dropped
            );
            Ok(())
        }
    }
}

fn digest_arg(s: &str) -> Result<oci::Digest> {
    oci::digest::parse(s)
        .with_context(|| format!("{s:?} is not a digest (expected sha256:<64 hex digits>)"))
}

fn index_version(media_type: &str) -> &'static str {
    if media_type == oci::soci_index::SOCI_INDEX_V2 {
        "v2"
    } else {
        "v1"
    }
}

/// Canonical form of an image reference, as stored in index records.
pub(crate) fn normalize_ref(r: &str) -> Result<String> {
    let parsed = oci::reference::ImageRef::parse(r)?;
    Ok(match parsed {
        oci::reference::ImageRef::OciLayout { dir, tag, digest } => {
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            oci::reference::ImageRef::OciLayout { dir, tag, digest }.to_string()
        }
        other => other.to_string(),
    })
}
