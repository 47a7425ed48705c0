//! `soci`: build and inspect SOCI indexes. Commands and flags follow AWS's `soci` CLI.

mod containerd;
mod convert;
mod create;
mod discover;
mod image;
mod inspect;
mod mount;
mod push;
mod remote;
mod table;
mod ztoc_info;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use oci::db::{IndexRecord, MetadataDb, ZtocRecord};
use oci::store::ContentStore;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    Index(IndexCommand),
    /// List and inspect zTOCs, and extract files through them.
    #[command(subcommand)]
    Ztoc(ZtocCommand),
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
    /// Unmount an image mounted with `soci mount` and stop its server.
    Unmount(mount::UnmountArgs),
    /// List a directory of an image in a registry, through its SOCI index (nothing is pulled).
    Ls(inspect::LsArgs),
    /// Print a file of an image in a registry, fetching only the spans that hold it.
    Cat(inspect::CatArgs),
}

#[derive(Subcommand)]
enum IndexCommand {
    /// List SOCI indexes.
    #[command(visible_alias = "ls")]
    List(IndexListArgs),
    /// Print a SOCI index manifest.
    Info {
        /// Digest of the SOCI index.
        digest: String,
    },
    /// Remove SOCI indexes (and zTOCs no other index uses).
    #[command(visible_alias = "remove")]
    Rm {
        /// Digests of the indexes to remove.
        digests: Vec<String>,
        /// Remove every index built for this image reference instead.
        #[arg(long = "ref")]
        image_ref: Option<String>,
    },
}

#[derive(Args)]
struct IndexListArgs {
    /// Only indexes built for this image reference.
    #[arg(long = "ref", conflicts_with = "remote")]
    image_ref: Option<String>,
    /// List the SOCI indexes a registry holds for this image (v2 bindings in its image index,
    /// v1 indexes through the referrers API or the sha256-<digest> tag schema) instead of the
    /// local ones.
    #[arg(long, value_name = "IMAGE")]
    remote: Option<String>,
    #[command(flatten)]
    registry: remote::RegistryArgs,
    /// Only indexes for these platforms (os/arch[/variant]).
    #[arg(long, short = 'p')]
    platform: Vec<String>,
    /// Print digests only.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ZtocCommand {
    /// List zTOCs.
    #[command(visible_alias = "ls")]
    List(ZtocListArgs),
    /// Print a zTOC's contents as JSON.
    Info {
        /// Digest of the zTOC.
        digest: String,
    },
    /// Extract one file from a layer, reading only the spans that hold it.
    GetFile {
        /// Digest of the zTOC.
        digest: String,
        /// Path of the file inside the layer.
        path: String,
        /// Write the file here instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Layer blob to read (default: where `soci create` found the layer).
        #[arg(long)]
        layer: Option<PathBuf>,
        /// Print how many spans and bytes were read to standard error.
        #[arg(long)]
        stats: bool,
        /// Registry access, for zTOCs built from an image in a registry (the layer's spans
        /// are then fetched with HTTP Range requests).
        #[command(flatten)]
        registry: remote::RegistryArgs,
    },
}

#[derive(Args)]
struct ZtocListArgs {
    /// Only this zTOC.
    #[arg(long)]
    ztoc_digest: Option<String>,
    /// Only zTOCs of indexes built for this image reference.
    #[arg(long)]
    image_ref: Option<String>,
    /// Print digests only.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The local store and database under the data root.
pub(crate) struct Local {
    pub store: ContentStore,
    pub db: MetadataDb,
}

impl Local {
    pub(crate) fn open(root: &Path) -> Result<Self> {
        let store = ContentStore::open(root)
            .with_context(|| format!("opening the content store under {}", root.display()))?;
        let db = MetadataDb::open(&root.join("soci.db"))?;
        Ok(Self { store, db })
    }
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
        Command::Unmount(args) => mount::unmount(&cli.root, args),
        Command::Ls(args) => inspect::ls(&cli.root, args),
        Command::Cat(args) => inspect::cat(&cli.root, args),
        Command::Index(cmd) => index(&cli.root, cmd),
        Command::Ztoc(cmd) => ztoc_cmd(&cli.root, cmd),
        Command::RebuildDb => {
            let local = Local::open(&cli.root)?;
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

/// Newest first, like AWS's listing.
fn sorted_indexes(mut v: Vec<IndexRecord>) -> Vec<IndexRecord> {
    v.sort_by(|a, b| b.created.cmp(&a.created).then(a.digest.cmp(&b.digest)));
    v
}

fn index(root: &Path, cmd: IndexCommand) -> Result<()> {
    let local = Local::open(root)?;
    match cmd {
        IndexCommand::List(args) if args.remote.is_some() => discover::run(&args),
        IndexCommand::List(args) => {
            let platforms: Vec<oci::platform::Platform> = args
                .platform
                .iter()
                .map(|p| oci::platform::Platform::parse(p))
                .collect::<Result<_, _>>()?;
            let wanted_ref = args.image_ref.as_deref().map(normalize_ref).transpose()?;
            let rows: Vec<IndexRecord> = sorted_indexes(local.db.list_indexes()?)
                .into_iter()
                .filter(|i| wanted_ref.as_ref().is_none_or(|r| &i.image_ref == r))
                .filter(|i| {
                    platforms.is_empty()
                        || oci::platform::Platform::parse(&i.platform)
                            .is_ok_and(|p| platforms.iter().any(|w| w.matches(&p)))
                })
                .collect();
            let mut out = std::io::stdout().lock();
            if args.json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else if args.quiet {
                for r in &rows {
                    writeln!(out, "{}", r.digest)?;
                }
            } else {
                let mut table = vec![[
                    "DIGEST",
                    "SIZE",
                    "IMAGE REF",
                    "PLATFORM",
                    "MEDIA TYPE",
                    "MANIFEST VERSION",
                    "CREATED",
                ]
                .map(String::from)
                .to_vec()];
                for r in &rows {
                    table.push(vec![
                        r.digest.clone(),
                        r.size.to_string(),
                        r.image_ref.clone(),
                        r.platform.clone(),
                        "application/vnd.oci.image.manifest.v1+json".into(),
                        index_version(&r.media_type).into(),
                        table::age(&r.created),
                    ]);
                }
                write!(out, "{}", table::render(&table))?;
            }
            Ok(())
        }
        IndexCommand::Info { digest } => {
            let d = digest_arg(&digest)?;
            if local.db.get_index(&d)?.is_none() {
                if local.db.get_ztoc(&d)?.is_some() {
                    bail!("{digest} is a zTOC, not a SOCI index; use `soci ztoc info {digest}`");
                }
                bail!("SOCI index {digest} not found; `soci index list` shows what exists");
            }
            let bytes = local.store.get(&d)?;
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).context("the stored index is not JSON")?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        IndexCommand::Rm { digests, image_ref } => {
            let targets: Vec<oci::Digest> = match (&image_ref, digests.is_empty()) {
                (Some(_), false) => bail!("give either index digests or --ref, not both"),
                (None, true) => bail!("name the indexes to remove (digests) or use --ref IMAGE"),
                (Some(r), true) => {
                    let r = normalize_ref(r)?;
                    local
                        .db
                        .list_indexes()?
                        .into_iter()
                        .filter(|i| i.image_ref == r)
                        .map(|i| digest_arg(&i.digest))
                        .collect::<Result<_>>()?
                }
                (None, false) => digests
                    .iter()
                    .map(|d| digest_arg(d))
                    .collect::<Result<_>>()?,
            };
            for d in targets {
                let orphans = local.db.remove_index(&d)?;
                local.store.delete(&d)?;
                for z in &orphans {
                    local.store.delete(&digest_arg(z)?)?;
                }
                println!(
                    "removed index {d} ({} ztocs no longer used were removed)",
                    orphans.len()
                );
            }
            Ok(())
        }
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

fn ztoc_cmd(root: &Path, cmd: ZtocCommand) -> Result<()> {
    let local = Local::open(root)?;
    match cmd {
        ZtocCommand::List(args) => {
            let mut rows = local.db.list_ztocs()?;
            if let Some(r) = &args.image_ref {
                let r = normalize_ref(r)?;
                let of_image: std::collections::HashSet<String> = local
                    .db
                    .list_indexes()?
                    .into_iter()
                    .filter(|i| i.image_ref == r)
                    .flat_map(|i| i.ztocs)
                    .collect();
                rows.retain(|z| of_image.contains(&z.digest));
            }
            if let Some(d) = &args.ztoc_digest {
                rows.retain(|z| &z.digest == d);
                if rows.is_empty() {
                    bail!(
                        "zTOC {d} does not exist{}",
                        if args.image_ref.is_some() {
                            " or is not part of that image's indexes"
                        } else {
                            ""
                        }
                    );
                }
            }
            rows.sort_by(|a, b| a.digest.cmp(&b.digest));
            let mut out = std::io::stdout().lock();
            if args.json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else if args.quiet {
                for z in &rows {
                    writeln!(out, "{}", z.digest)?;
                }
            } else {
                let mut table = vec![vec![
                    "DIGEST".to_owned(),
                    "SIZE".into(),
                    "LAYER DIGEST".into(),
                ]];
                table.extend(
                    rows.iter().map(|z| {
                        vec![z.digest.clone(), z.size.to_string(), z.layer_digest.clone()]
                    }),
                );
                write!(out, "{}", table::render(&table))?;
            }
            Ok(())
        }
        ZtocCommand::Info { digest } => {
            let (_, bytes, z) = load_ztoc(&local, &digest_arg(&digest)?)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&ztoc_info::info(&z, bytes.len() as u64))?
            );
            Ok(())
        }
        ZtocCommand::GetFile {
            digest,
            path,
            output,
            layer,
            stats,
            registry,
        } => {
            let (record, _, z) = load_ztoc(&local, &digest_arg(&digest)?)?;
            let file = resolve_file(&z, &path)?;
            let layer_digest = digest_arg(&record.layer_digest)?;
            let registry_source = record
                .source
                .as_deref()
                .and_then(|s| s.strip_prefix("docker://"))
                .filter(|_| layer.is_none());
            let (data, read) = if let Some(location) = registry_source {
                let (host, repository) = location
                    .split_once('/')
                    .with_context(|| format!("bad layer location {location:?}"))?;
                let remote = remote::Remote::new(&registry)?;
                let repo = remote.client.repository(host, repository)?;
                let mut blob =
                    remote::RangeReader::new(&remote, &repo, layer_digest, record.layer_size);
                let data = ztoc::read_file(&z, &mut blob, file)
                    .with_context(|| format!("extracting {path} from layer in {location}"))?;
                (data, blob.fetched)
            } else {
                let layer_path = match layer {
                    Some(p) => p,
                    None => {
                        let source = record.source.as_deref().with_context(|| {
                            format!("zTOC {digest} has no known layer location; pass the layer blob with --layer FILE")
                        })?;
                        Path::new(source)
                            .join("blobs")
                            .join("sha256")
                            .join(layer_digest.digest())
                    }
                };
                let mut blob = CountingFile::open(&layer_path)?;
                let data = ztoc::read_file(&z, &mut blob, file).with_context(|| {
                    format!("extracting {path} from layer {}", layer_path.display())
                })?;
                (data, blob.read)
            };
            match output {
                Some(out) => {
                    // Write next to the target, then rename: a failed extraction never
                    // leaves a truncated file behind.
                    let tmp = out.with_extension("soci-partial");
                    std::fs::write(&tmp, &data)
                        .with_context(|| format!("writing {}", tmp.display()))?;
                    std::fs::rename(&tmp, &out)
                        .with_context(|| format!("writing {}", out.display()))?;
                }
                None => std::io::stdout().lock().write_all(&data)?,
            }
            if stats {
                let (first, last) = if file.uncompressed_size == 0 {
                    (0, 0)
                } else {
                    z.spans_for_range(
                        &(file.uncompressed_offset
                            ..file.uncompressed_offset + file.uncompressed_size),
                    )?
                };
                eprintln!(
                    "{path}: {} bytes from spans {first}..={last} of {}; read {} of {} compressed layer bytes ({:.2}%)",
                    data.len(),
                    z.span_count(),
                    read,
                    z.compressed_archive_size,
                    100.0 * read as f64 / z.compressed_archive_size.max(1) as f64
                );
            }
            Ok(())
        }
    }
}

/// Finds `path` in the TOC, following hard and symbolic links (bounded) like AWS's get-file.
fn resolve_file<'a>(z: &'a ztoc::Ztoc, path: &str) -> Result<&'a ztoc::FileMetadata> {
    let mut current = path.to_owned();
    for _ in 0..40 {
        let f = z
            .find_file(&current)
            .with_context(|| format!("{current:?} is not in this layer"))?;
        match f.file_type {
            ztoc::FileType::Regular => return Ok(f),
            ztoc::FileType::Hardlink => current = f.linkname.clone(),
            ztoc::FileType::Symlink => {
                current = if f.linkname.starts_with('/') {
                    f.linkname.clone()
                } else {
                    let parent = f.name.rsplit_once('/').map_or("", |(p, _)| p);
                    format!("{parent}/{}", f.linkname)
                };
            }
            other => bail!("{current:?} is a {other}, not a regular file"),
        }
    }
    bail!("{path:?}: too many levels of links")
}

/// Looks a zTOC up once: its record, its verified blob, and the decoded zTOC.
fn load_ztoc(local: &Local, d: &oci::Digest) -> Result<(ZtocRecord, Vec<u8>, ztoc::Ztoc)> {
    let Some(record) = local.db.get_ztoc(d)? else {
        if local.db.get_index(d)?.is_some() {
            bail!("{d} is a SOCI index, not a zTOC; use `soci index info {d}`");
        }
        bail!("zTOC {d} not found; `soci ztoc list` shows what exists");
    };
    let bytes = local.store.get(d)?;
    let z = ztoc::decode(&bytes).with_context(|| format!("decoding zTOC {d}"))?;
    Ok((record, bytes, z))
}

/// A layer file that counts the bytes read from it (for `--stats`).
struct CountingFile {
    file: std::fs::File,
    read: u64,
}

impl CountingFile {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening layer blob {}", path.display()))?;
        Ok(Self { file, read: 0 })
    }
}

impl std::io::Read for CountingFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for CountingFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}
