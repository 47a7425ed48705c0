//! `soci create`: build zTOCs for an image's layers (in parallel) and a SOCI index (v1).
//! Layers are read once, straight into the zTOC builder, from an OCI layout or streamed from a
//! registry; nothing of the image is stored locally. With `--prefetch-file`, the index also
//! lists prefetch artifacts: per layer, the spans holding the named files.

use crate::containerd::Client;
use crate::remote::{self, RegistryArgs, Remote};
use crate::{ContainerdArgs, ContentStoreKind, Local};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci::db::{IndexRecord, ZtocRecord};
use oci::layout::{OciLayout, PlatformSelection, ResolvedImage};
use oci::platform::Platform;
use oci::prefetch::PrefetchArtifact;
use oci::reference::ImageRef;
use oci::soci_index::{self, IndexVersion, PrefetchDescriptor, ZtocDescriptor};
use oci::{Descriptor, Digest};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The image-record label AWS's `soci create` sets so containerd's GC keeps the SOCI index
/// while the image exists.
const SOCI_INDEX_GC_LABEL: &str = "containerd.io/gc.ref.content.soci-index";

/// Arguments of `soci create`.
#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    index: IndexOptions,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Image to index: a registry reference (HOST/REPO[:TAG|@DIGEST]), or oci:DIR[:TAG] or
    /// oci:DIR@DIGEST for an OCI image layout.
    image: String,
}

/// An image found in containerd: blobs are read from its content store, and from the
/// image's registry for blobs it lacks (layers of a lazily pulled image).
pub(crate) struct ContainerdImage {
    /// Runtime driving the containerd client (and its blocking readers).
    rt: tokio::runtime::Runtime,
    /// The client, in the namespace given.
    pub client: Client,
    /// The image record's name.
    pub name: String,
    /// The registry to read missing blobs from, with its `docker://` label.
    registry: Option<(Box<Remote>, registry::Repository, String)>,
    /// Layers read from the registry because containerd lacked them.
    from_registry: AtomicUsize,
}

impl ContainerdImage {
    /// Looks `typed` (and its canonical form) up in containerd. `Ok(None)` when containerd
    /// is not reachable or has no such image, so the caller falls back to the registry.
    fn find(
        typed: &str,
        reference: &ImageRef,
        ctd: &ContainerdArgs,
        registry_args: &RegistryArgs,
    ) -> Result<Option<Self>> {
        let ImageRef::Registry { .. } = reference else {
            return Ok(None);
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let client = match rt.block_on(Client::connect(&ctd.address, &ctd.namespace)) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!("not reading {typed} from containerd: {e}");
                return Ok(None);
            }
        };
        let canonical = reference.to_string();
        let mut names = vec![typed.to_owned()];
        if canonical != typed {
            names.push(canonical);
        }
        for name in names {
            match rt.block_on(client.get_image(&name)) {
                Ok(_) => {
                    tracing::info!(
                        "reading image {name} from containerd's content store ({}, namespace {})",
                        ctd.address.display(),
                        ctd.namespace
                    );
                    let remote = Remote::new(registry_args)?;
                    let repo = remote.repository(reference)?;
                    let label = match reference {
                        ImageRef::Registry {
                            registry,
                            repository,
                            ..
                        } => format!("docker://{registry}/{repository}"),
                        ImageRef::OciLayout { .. } => String::new(),
                    };
                    return Ok(Some(ContainerdImage {
                        rt,
                        client,
                        name,
                        registry: Some((Box::new(remote), repo, label)),
                        from_registry: AtomicUsize::new(0),
                    }));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::info!("not reading {typed} from containerd: {e}");
                    return Ok(None);
                }
            }
        }
        tracing::info!(
            "containerd (namespace {}) has no image {typed}; reading it from the registry",
            ctd.namespace
        );
        Ok(None)
    }

    /// Reads a manifest, index or config: containerd first, then the registry.
    fn fetch(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        let digest = desc.digest().to_string();
        match self.rt.block_on(self.client.read_all(&digest, limit)) {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => match &self.registry {
                Some((remote, repo, _)) => {
                    let mut f = remote::fetcher(remote, repo, &[]);
                    Ok(oci::resolve::ManifestFetcher::fetch(&mut f, desc, limit)?)
                }
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let digest = desc.digest().to_string();
        if self.rt.block_on(self.client.has_content(&digest))? {
            return Ok(self.client.open_blocking(self.rt.handle(), &digest)?);
        }
        let Some((remote, repo, _)) = &self.registry else {
            bail!("layer {digest} is not in containerd's content store");
        };
        tracing::info!(
            "layer {digest} is not in containerd's content store; reading it from the registry"
        );
        self.from_registry.fetch_add(1, Ordering::Relaxed);
        remote::open_blob(remote, repo, desc)
    }
}

/// Reads manifests through a [`ContainerdImage`] for [`oci::resolve`].
struct ContainerdFetcher<'a>(&'a ContainerdImage);

impl oci::resolve::ManifestFetcher for ContainerdFetcher<'_> {
    fn fetch(&mut self, desc: &Descriptor, limit: u64) -> oci::Result<Vec<u8>> {
        self.0
            .fetch(desc, limit)
            .map_err(|e| oci::Error::Remote(e.into()))
    }
}

/// Where layers are read from.
pub(crate) enum Source {
    Layout {
        layout: Box<OciLayout>,
        dir: PathBuf,
    },
    Registry {
        remote: Box<Remote>,
        repo: registry::Repository,
        label: String,
    },
    Containerd(Box<ContainerdImage>),
}

/// An image reference opened for reading.
pub(crate) struct Opened {
    pub source: Source,
    /// The reference's top descriptor (image manifest or index).
    pub top: Descriptor,
    /// That object's bytes, verified against its digest.
    pub top_bytes: Vec<u8>,
    /// The image manifests selected.
    pub images: Vec<ResolvedImage>,
}

impl Source {
    /// Opens an image (registry reference or OCI layout) and selects its platform manifests.
    pub(crate) fn open(
        reference: &ImageRef,
        registry_args: &RegistryArgs,
        selection: &PlatformSelection,
    ) -> Result<Opened> {
        match reference {
            ImageRef::OciLayout { dir, tag, digest } => {
                let dir = std::fs::canonicalize(dir)
                    .with_context(|| format!("OCI layout {} not found", dir.display()))?;
                let layout = OciLayout::open(&dir)?;
                let top = layout.resolve(tag.as_deref(), digest.as_ref())?;
                let images = layout.image_manifests(&top, selection)?;
                let top_bytes = layout.read_blob(&top, oci::manifest::MAX_MANIFEST_SIZE as u64)?;
                Ok(Opened {
                    source: Source::Layout {
                        layout: Box::new(layout),
                        dir,
                    },
                    top,
                    top_bytes,
                    images,
                })
            }
            ImageRef::Registry {
                registry,
                repository,
                ..
            } => {
                let remote = Remote::new(registry_args)?;
                let repo = remote.repository(reference)?;
                let (top, top_bytes, images) =
                    remote::resolve_images(&remote, &repo, reference, selection)?;
                let label = format!("docker://{registry}/{repository}");
                Ok(Opened {
                    source: Source::Registry {
                        remote: Box::new(remote),
                        repo,
                        label,
                    },
                    top,
                    top_bytes,
                    images,
                })
            }
        }
    }

    /// Like [`Source::open`], but a registry reference that names an image in containerd
    /// (`ctr images pull REF`) is read from containerd's content store.
    pub(crate) fn open_preferring_containerd(
        typed: &str,
        reference: &ImageRef,
        registry_args: &RegistryArgs,
        ctd: &ContainerdArgs,
        selection: &PlatformSelection,
    ) -> Result<Opened> {
        let Some(image) = ContainerdImage::find(typed, reference, ctd, registry_args)? else {
            return Self::open(reference, registry_args, selection);
        };
        let record = image.rt.block_on(image.client.get_image(&image.name))?;
        let target = record
            .target
            .with_context(|| format!("containerd's image {} has no target", image.name))?;
        let top = Descriptor::new(
            oci::MediaType::from(target.media_type.as_str()),
            u64::try_from(target.size).unwrap_or(0),
            crate::digest_arg(&target.digest)
                .with_context(|| format!("containerd's image {} target", image.name))?,
        );
        let top_bytes = image.fetch(&top, oci::manifest::MAX_MANIFEST_SIZE as u64)?;
        let images = oci::resolve::image_manifests(
            &mut ContainerdFetcher(&image),
            &image.name,
            &top,
            selection,
        )?;
        Ok(Opened {
            source: Source::Containerd(Box::new(image)),
            top,
            top_bytes,
            images,
        })
    }

    /// Reads a manifest, index or config, verified against its digest.
    pub(crate) fn fetch(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        match self {
            Source::Containerd(c) => c.fetch(desc, oci::manifest::MAX_MANIFEST_SIZE as u64),
            Source::Layout { layout, .. } => {
                Ok(layout.read_blob(desc, oci::manifest::MAX_MANIFEST_SIZE as u64)?)
            }
            Source::Registry { remote, repo, .. } => {
                let mut f = remote::fetcher(remote, repo, &[]);
                Ok(oci::resolve::ManifestFetcher::fetch(
                    &mut f,
                    desc,
                    oci::manifest::MAX_MANIFEST_SIZE as u64,
                )?)
            }
        }
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        match self {
            Source::Layout { layout, .. } => Ok(Box::new(layout.open_blob(desc.digest())?)),
            Source::Registry { remote, repo, .. } => remote::open_blob(remote, repo, desc),
            Source::Containerd(c) => c.open_blob(desc),
        }
    }

    /// Where the layer can be read again; recorded with each zTOC.
    fn label(&self) -> String {
        match self {
            Source::Layout { dir, .. } => dir.display().to_string(),
            Source::Registry { label, .. } => label.clone(),
            // Where the layer can be read again later: the image's registry.
            Source::Containerd(c) => c
                .registry
                .as_ref()
                .map(|(_, _, label)| label.clone())
                .unwrap_or_default(),
        }
    }
}

/// What happened to one layer.
pub(crate) enum LayerOutcome {
    Built(ZtocRecord),
    Reused(ZtocRecord),
    Skipped(String),
}

struct LayerJob {
    desc: Descriptor,
}

pub fn run(root: &Path, ctd: &ContainerdArgs, args: CreateArgs) -> Result<()> {
    args.index.check()?;
    let prefetch = args.index.prefetch_paths()?;
    let reference = ImageRef::parse(&args.image)?;
    let selection = args.index.selection()?;
    let image_ref = crate::normalize_ref(&args.image)?;
    let Opened { source, images, .. } = Source::open_preferring_containerd(
        &args.image,
        &reference,
        &args.registry,
        ctd,
        &selection,
    )?;
    let from = match &source {
        Source::Containerd(c) => format!(
            "containerd's content store (image {}, namespace {})",
            c.name, ctd.namespace
        ),
        Source::Registry { label, .. } => format!("the registry ({label})"),
        Source::Layout { dir, .. } => format!("the OCI layout {}", dir.display()),
    };
    tracing::info!("reading {image_ref} from {from}");
    let local = Local::open(root)?;
    let by_layer = index_layers(&source, &local, &images, &args.index)?;
    if let Source::Containerd(c) = &source {
        let n = c.from_registry.load(Ordering::Relaxed);
        if n > 0 {
            println!(
                "{n} layer(s) were not in containerd's content store and were read from the registry"
            );
        }
    }
    let mut written = Vec::new();
    for image in &images {
        written.push(write_index(
            &local, image, &by_layer, &image_ref, &prefetch, &args, &from,
        )?);
    }
    if ctd.content_store == ContentStoreKind::Containerd {
        let (rt, client, image_name) = match &source {
            Source::Containerd(c) => (None, c.client.clone(), Some(c.name.clone())),
            _ => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .context("starting the async runtime")?;
                let client = rt
                    .block_on(Client::connect(&ctd.address, &ctd.namespace))
                    .context("--content-store containerd")?;
                (Some(rt), client, None)
            }
        };
        let handle = match (&rt, &source) {
            (Some(rt), _) => rt.handle().clone(),
            (None, Source::Containerd(c)) => c.rt.handle().clone(),
            (None, _) => bail!("internal error: no runtime for containerd"),
        };
        export_to_containerd(&handle, &client, &local, &written, image_name.as_deref())?;
    }
    Ok(())
}

/// Copies SOCI indexes (with their zTOCs and prefetch artifacts) from the local store into
/// containerd's content store. Each index manifest blob carries GC references to its blobs
/// (`containerd.io/gc.ref.content.l.<i>`, `…config`), and the image record, when containerd
/// has the image, references the index (`containerd.io/gc.ref.content.soci-index`, AWS's
/// label), so containerd's garbage collector keeps them exactly as long as the image.
fn export_to_containerd(
    rt: &tokio::runtime::Handle,
    client: &Client,
    local: &Local,
    indexes: &[(Digest, Vec<u8>)],
    image_name: Option<&str>,
) -> Result<()> {
    let lease = rt.block_on(client.create_lease(std::time::Duration::from_secs(3600)))?;
    let leased = client.with_lease(&lease);
    let result = (|| -> Result<()> {
        let mut image_labels = HashMap::new();
        for (n, (digest, bytes)) in indexes.iter().enumerate() {
            let index = soci_index::parse_index_manifest(bytes, digest.as_ref())?;
            let mut labels = HashMap::from([(
                "containerd.io/gc.ref.content.config".to_owned(),
                soci_index::EMPTY_CONFIG_DIGEST.to_owned(),
            )]);
            let blobs: Vec<&Digest> = index
                .ztocs
                .iter()
                .map(|z| &z.digest)
                .chain(index.prefetch.iter().map(|p| &p.digest))
                .collect();
            for (i, blob) in blobs.iter().enumerate() {
                labels.insert(
                    format!("containerd.io/gc.ref.content.l.{i}"),
                    blob.to_string(),
                );
                let data = local
                    .store
                    .get(blob)
                    .with_context(|| format!("reading {blob} from the local store"))?;
                rt.block_on(leased.write_bytes(&format!("soci-{blob}"), &data, &HashMap::new()))?;
            }
            rt.block_on(leased.write_bytes(
                &format!("soci-{}", soci_index::EMPTY_CONFIG_DIGEST),
                soci_index::EMPTY_CONFIG,
                &HashMap::new(),
            ))?;
            rt.block_on(leased.write_bytes(&format!("soci-{digest}"), bytes, &labels))?;
            let key = if n == 0 {
                SOCI_INDEX_GC_LABEL.to_owned()
            } else {
                format!("{SOCI_INDEX_GC_LABEL}.{n}")
            };
            image_labels.insert(key, digest.to_string());
            println!(
                "soci index {digest} and its {} blob(s) stored in containerd's content store (namespace {})",
                blobs.len(),
                client.namespace()
            );
        }
        match image_name {
            Some(name) => rt.block_on(leased.set_image_labels(name, &image_labels))?,
            None => eprintln!(
                "warning: containerd has no image record for this reference, so nothing keeps                  the SOCI index from containerd's garbage collection; pull the image into                  containerd first (ctr images pull / soci image rpull)"
            ),
        }
        Ok(())
    })();
    if let Err(e) = rt.block_on(client.delete_lease(&lease)) {
        tracing::warn!("deleting lease {lease}: {e}");
    }
    result
}

/// One entry of the prefetch list: a TOC name and, when known, the byte ranges of the file
/// that were read (`None`: the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrefetchPath {
    /// Normalized TOC name.
    pub name: String,
    /// `[start, end)` byte ranges within the file, or `None` for all of it.
    pub ranges: Option<Vec<(u64, u64)>>,
}

/// The two forms `--prefetch-files-json` takes.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum PrefetchList {
    /// `["/path", ...]`.
    Paths(Vec<String>),
    /// `{"/path": [[start, end], ...], ...}`.
    Ranges(BTreeMap<String, Vec<(u64, u64)>>),
}

/// Indexing flags shared by `soci create` and `soci convert`.
#[derive(Args)]
pub(crate) struct IndexOptions {
    /// Uncompressed bytes between gzip checkpoints; smaller spans mean finer-grained fetches
    /// and larger zTOCs.
    #[arg(long, default_value_t = ztoc::DEFAULT_SPAN_SIZE)]
    pub span_size: u64,
    /// Layers smaller than this get no zTOC (they are fetched whole at run time).
    #[arg(long, default_value_t = 10 << 20)]
    pub min_layer_size: u64,
    /// Platform(s) to index, os/arch[/variant] (default: this machine's, or the image's own
    /// platform for a single-platform image).
    #[arg(long, short = 'p', conflicts_with = "all_platforms")]
    pub platform: Vec<String>,
    /// Index every platform of a multi-platform image.
    #[arg(long)]
    pub all_platforms: bool,
    /// Rebuild zTOCs even when one already exists for a layer.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// A file to prefetch when a container starts, as a path in the image (leading `/`
    /// optional). The topmost indexed layer holding it gets a prefetch artifact listing the
    /// spans of its data, stored with the index. Repeat the flag (or separate paths with
    /// commas) for several files; paths not found in any indexed layer are warned about.
    #[arg(long = "prefetch-file", value_name = "PATH", value_delimiter = ',')]
    pub prefetch_file: Vec<String>,
    /// A JSON file listing what to prefetch, used together with any --prefetch-file paths:
    /// an array of paths (`["/app/config.json"]`, as `soci mount --record-reads` writes), or
    /// an object of path -> byte ranges read (`{"/app/model.bin": [[0, 8388608]]}`, as
    /// `soci mount --record-read-ranges` writes), which prefetches only the spans of those
    /// ranges instead of whole files.
    #[arg(long, value_name = "FILE")]
    pub prefetch_files_json: Option<PathBuf>,
}

impl IndexOptions {
    /// Rejects values no index can be built with, before any network or disk work.
    pub(crate) fn check(&self) -> Result<()> {
        if self.span_size == 0 {
            bail!("--span-size must be positive");
        }
        Ok(())
    }

    /// What to prefetch, from `--prefetch-file` and `--prefetch-files-json` (in that
    /// order): paths trimmed, blanks dropped, normalized as TOC names are (no leading `/`,
    /// `.` and `..` resolved) and without repeats; a path listed whole and with ranges is
    /// prefetched whole, ranges listed twice are combined.
    pub(crate) fn prefetch_paths(&self) -> Result<Vec<PrefetchPath>> {
        // As given, names not normalized yet.
        let whole = |name: String| PrefetchPath { name, ranges: None };
        let mut raw: Vec<PrefetchPath> = self.prefetch_file.iter().cloned().map(whole).collect();
        if let Some(file) = &self.prefetch_files_json {
            let bytes = std::fs::read(file)
                .with_context(|| format!("reading --prefetch-files-json {}", file.display()))?;
            let listed: PrefetchList = serde_json::from_slice(&bytes).map_err(|_| {
                anyhow::anyhow!(
                    "--prefetch-files-json {}: expected a JSON array of path strings, or an \
                     object of path -> [[start, end], ...] byte ranges",
                    file.display()
                )
            })?;
            match listed {
                PrefetchList::Paths(paths) => raw.extend(paths.into_iter().map(whole)),
                PrefetchList::Ranges(by_path) => {
                    raw.extend(by_path.into_iter().map(|(name, r)| PrefetchPath {
                        name,
                        ranges: Some(r),
                    }))
                }
            }
        }
        let mut paths: Vec<PrefetchPath> = Vec::new();
        for PrefetchPath { name: p, ranges } in raw.iter().filter(|e| !e.name.trim().is_empty()) {
            let name = ztoc::toc::normalize_name(p.trim());
            if name.is_empty() {
                eprintln!(
                    "warning: prefetch path {p:?} names the root directory, not a file; ignored"
                );
                continue;
            }
            match paths.iter_mut().find(|e| e.name == name) {
                None => paths.push(PrefetchPath {
                    name,
                    ranges: ranges.clone(),
                }),
                Some(existing) => match (&mut existing.ranges, ranges) {
                    (Some(mine), Some(more)) => mine.extend(more.iter().copied()),
                    (Some(_), None) => existing.ranges = None,
                    (None, _) => {}
                },
            }
        }
        Ok(paths)
    }

    /// Which platforms to use, from `--platform` / `--all-platforms`.
    pub(crate) fn selection(&self) -> Result<PlatformSelection> {
        Ok(if self.all_platforms {
            PlatformSelection::All
        } else if self.platform.is_empty() {
            PlatformSelection::Host
        } else {
            PlatformSelection::Some(
                self.platform
                    .iter()
                    .map(|p| Platform::parse(p))
                    .collect::<Result<_, _>>()?,
            )
        })
    }
}

/// Builds (or reuses) a zTOC for every distinct layer of `images`, in parallel, each layer
/// streamed once. zTOC blobs land in the local store; nothing is recorded in the database.
pub(crate) fn index_layers(
    source: &Source,
    local: &Local,
    images: &[ResolvedImage],
    opts: &IndexOptions,
) -> Result<HashMap<String, LayerOutcome>> {
    opts.check()?;
    // Each distinct layer is indexed once, even if several platforms share it.
    let mut jobs: Vec<LayerJob> = Vec::new();
    for image in images {
        for layer in image.manifest.layers() {
            if !jobs.iter().any(|j| j.desc.digest() == layer.digest()) {
                jobs.push(LayerJob {
                    desc: layer.clone(),
                });
            }
        }
    }
    let existing = |layer: &Digest| -> Result<Option<ZtocRecord>> {
        Ok(local.db.find_ztocs_by_layer(layer)?.into_iter().find(|z| {
            z.span_size == opts.span_size
                && oci::digest::parse(&z.digest).is_ok_and(|d| local.store.exists(&d))
        }))
    };

    let progress = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:.bold} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let outcomes: Vec<Result<LayerOutcome>> = pool.install(|| {
        jobs.par_iter()
            .map(|job| {
                let size = job.desc.size();
                if let Some(reason) =
                    indexer::layer::layer_skip_reason(&job.desc, opts.min_layer_size)
                {
                    return Ok(LayerOutcome::Skipped(reason));
                }
                if !opts.force {
                    if let Some(found) = existing(job.desc.digest())? {
                        return Ok(LayerOutcome::Reused(found));
                    }
                }
                let bar = progress.add(ProgressBar::new(size));
                bar.set_style(style.clone());
                bar.set_prefix(short(job.desc.digest()));
                let result = build_layer(source, local, job, opts.span_size, &bar);
                bar.finish_and_clear();
                result.map(LayerOutcome::Built)
            })
            .collect()
    });
    let mut by_layer: HashMap<String, LayerOutcome> = HashMap::new();
    let mut failures = Vec::new();
    for (job, outcome) in jobs.iter().zip(outcomes) {
        match outcome {
            Ok(o) => {
                by_layer.insert(job.desc.digest().to_string(), o);
            }
            Err(e) => failures.push(format!("layer {}: {e:#}", job.desc.digest())),
        }
    }
    if !failures.is_empty() {
        // zTOC blobs already written stay in the store unlisted (blobs are immutable and
        // content-addressed, so they are reused by the next run); nothing was recorded.
        bail!(
            "indexing failed; no SOCI index was created:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(by_layer)
}

/// Prints the per-layer lines for one image and returns its zTOCs in layer order (empty when
/// every layer was skipped).
pub(crate) fn image_ztocs(
    image: &ResolvedImage,
    by_layer: &HashMap<String, LayerOutcome>,
    span_size: u64,
) -> Result<(Vec<ZtocDescriptor>, Vec<ZtocRecord>)> {
    let mut ztocs = Vec::new();
    let mut records = Vec::new();
    for layer in image.manifest.layers() {
        let digest = layer.digest().to_string();
        match by_layer.get(&digest) {
            Some(LayerOutcome::Built(z)) | Some(LayerOutcome::Reused(z)) => {
                let reused = matches!(by_layer.get(&digest), Some(LayerOutcome::Reused(_)));
                println!(
                    "layer {digest} -> ztoc {}{}",
                    z.digest,
                    if reused { " (already exists)" } else { "" }
                );
                ztocs.push(indexer::index::ztoc_descriptor(
                    layer,
                    oci::digest::parse(&z.digest)?,
                    z.size,
                    span_size,
                ));
                records.push(z.clone());
            }
            Some(LayerOutcome::Skipped(reason)) => {
                println!("layer {digest} -> ztoc skipped ({reason})")
            }
            None => bail!("internal error: layer {digest} was not processed"),
        }
    }
    Ok((ztocs, records))
}

/// Prints the per-layer lines for one image and records its SOCI index; returns the index's
/// digest and bytes.
fn write_index(
    local: &Local,
    image: &ResolvedImage,
    by_layer: &HashMap<String, LayerOutcome>,
    image_ref: &str,
    prefetch_paths: &[PrefetchPath],
    args: &CreateArgs,
    from: &str,
) -> Result<(Digest, Vec<u8>)> {
    let (ztocs, records) = image_ztocs(image, by_layer, args.index.span_size)?;
    let platform = indexer::index::platform_text(image);
    if ztocs.is_empty() {
        bail!(
            "no zTOCs were created for {image_ref} ({platform}): every layer was skipped; \
             lower --min-layer-size to index small layers"
        );
    }
    let prefetch = image_prefetch(
        local,
        image,
        by_layer,
        prefetch_paths,
        &format!("{image_ref} ({platform})"),
    )?;
    let (bytes, _) = indexer::index::index_manifest(
        IndexVersion::V1,
        Some(&image.manifest_desc),
        &ztocs,
        &prefetch,
        ztoc::DEFAULT_BUILD_TOOL,
    )?;
    let index_digest = local.store.put_bytes(&bytes)?;
    let record = IndexRecord {
        digest: index_digest.to_string(),
        size: bytes.len() as u64,
        image_ref: image_ref.to_owned(),
        platform,
        media_type: soci_index::SOCI_INDEX_V1.to_owned(),
        manifest_digest: image.manifest_desc.digest().to_string(),
        created: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        ztocs: records.iter().map(|z| z.digest.clone()).collect(),
        span_size: args.index.span_size,
        min_layer_size: args.index.min_layer_size,
    };
    local.db.put_index(&record, &records)?;
    println!(
        "soci index {index_digest} created for {image_ref} ({}), read from {from}",
        record.platform
    );
    Ok((index_digest, bytes))
}

/// Builds the prefetch artifacts of one image for `paths` (normalized TOC names), stores them
/// in the local content store, prints one line per artifact, and returns their descriptors in
/// layer order (empty without paths). Each path is looked up from the top layer down in the
/// layers that have a zTOC; the first one listing it contributes the spans of the file's
/// data. Paths found nowhere are warned about on stderr, naming `what` (the image).
pub(crate) fn image_prefetch(
    local: &Local,
    image: &ResolvedImage,
    by_layer: &HashMap<String, LayerOutcome>,
    paths: &[PrefetchPath],
    what: &str,
) -> Result<Vec<PrefetchDescriptor>> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    // The indexed layers, bottom first, with their decoded zTOCs.
    let mut layers: Vec<(Digest, ztoc::Ztoc)> = Vec::new();
    for layer in image.manifest.layers() {
        let Some(LayerOutcome::Built(z) | LayerOutcome::Reused(z)) =
            by_layer.get(&layer.digest().to_string())
        else {
            continue;
        };
        let digest = oci::digest::parse(&z.digest)?;
        let bytes = local
            .store
            .get(&digest)
            .with_context(|| format!("reading zTOC {digest} from the local store"))?;
        let decoded = ztoc::decode(&bytes).with_context(|| format!("decoding zTOC {digest}"))?;
        layers.push((layer.digest().clone(), decoded));
    }
    let tocs: Vec<&ztoc::Ztoc> = layers.iter().map(|(_, z)| z).collect();
    let (ranges, missing) = prefetch_ranges(&tocs, paths);
    for path in &missing {
        eprintln!(
            "warning: prefetch file /{path} is not in any indexed layer of {what}; it is not prefetched"
        );
    }
    let mut out = Vec::new();
    for (i, layer_ranges) in ranges {
        let layer_digest = &layers[i].0;
        let artifact = PrefetchArtifact::from_ranges(layer_ranges);
        let json = artifact.to_json();
        let digest = local.store.put_bytes(&json)?;
        println!(
            "layer {layer_digest} -> prefetch {digest} ({} spans)",
            artifact.spans().len()
        );
        out.push(PrefetchDescriptor {
            digest,
            size: json.len() as u64,
            layer_digest: layer_digest.clone(),
        });
    }
    Ok(out)
}

/// Inclusive span ranges per layer position (bottom first).
type LayerRanges = BTreeMap<usize, Vec<(u64, u64)>>;

/// For each of `paths`, finds the topmost of `layers` (bottom first) whose TOC has an entry
/// of exactly that name and takes the span range of its data, or of each byte range given.
/// Returns the ranges per layer position (ascending) and the paths no layer has.
fn prefetch_ranges(layers: &[&ztoc::Ztoc], paths: &[PrefetchPath]) -> (LayerRanges, Vec<String>) {
    let mut ranges = LayerRanges::new();
    let mut missing = Vec::new();
    for path in paths {
        let found = layers.iter().enumerate().rev().find_map(|(i, z)| {
            if z.span_count() == 0 {
                return None;
            }
            let file = toc_file(z, &path.name)?;
            let spans = match &path.ranges {
                None => vec![file_span_range(z, file)],
                Some(read) => read
                    .iter()
                    .filter_map(|&(start, end)| byte_span_range(z, file, start, end))
                    .collect(),
            };
            Some((i, spans))
        });
        match found {
            Some((i, spans)) => ranges.entry(i).or_default().extend(spans),
            None => missing.push(path.name.clone()),
        }
    }
    (ranges, missing)
}

/// The TOC entry holding the data of `name`: the last entry of that name (as when the layer
/// is unpacked), or for a hard link the entry it links to (a hard link's own entry has no
/// data, and a read list may name a file by any of its links).
fn toc_file<'a>(z: &'a ztoc::Ztoc, name: &str) -> Option<&'a ztoc::FileMetadata> {
    let mut file = z.toc.files.iter().rev().find(|f| f.name == name)?;
    // Links to links are not made by tar, but a bound keeps a hostile TOC from looping.
    for _ in 0..8 {
        if file.file_type != ztoc::FileType::Hardlink {
            break;
        }
        let target = ztoc::toc::normalize_name(&file.linkname);
        file = z.toc.files.iter().rev().find(|f| f.name == target)?;
    }
    Some(file)
}

/// The inclusive spans holding bytes `[start, end)` of a file's data (clipped to the file),
/// or `None` when nothing of the file is in that range.
fn byte_span_range(
    z: &ztoc::Ztoc,
    file: &ztoc::FileMetadata,
    start: u64,
    end: u64,
) -> Option<(u64, u64)> {
    let end = end.min(file.uncompressed_size);
    if start >= end {
        return None;
    }
    let last = z.span_count().checked_sub(1)?;
    let span = |offset: u64| z.span_of(offset).unwrap_or(last).min(last);
    let first = span(file.uncompressed_offset.saturating_add(start));
    Some((
        first,
        span(file.uncompressed_offset.saturating_add(end - 1)).max(first),
    ))
}

/// The inclusive spans holding a file's data: the span of its first byte to that of its last
/// (just the first for an empty file), clamped to the layer's last span.
fn file_span_range(z: &ztoc::Ztoc, file: &ztoc::FileMetadata) -> (u64, u64) {
    let last = z.span_count().saturating_sub(1);
    let span = |offset: u64| z.span_of(offset).unwrap_or(last).min(last);
    let start = span(file.uncompressed_offset);
    let end = match file.uncompressed_size {
        0 => start,
        size => span(file.uncompressed_offset.saturating_add(size - 1)).max(start),
    };
    (start, end)
}

/// Streams one layer blob once through the zTOC builder, verifying its digest and size.
fn build_layer(
    source: &Source,
    local: &Local,
    job: &LayerJob,
    span_size: u64,
    bar: &ProgressBar,
) -> Result<ZtocRecord> {
    let desc = &job.desc;
    let file = source.open_blob(desc)?;
    let options = ztoc::BuildOptions {
        span_size,
        ..Default::default()
    };
    let z = indexer::build_layer_ztoc(ProgressReader { inner: file, bar }, desc, &options)
        .with_context(|| format!("reading the layer from {}", source.label()))?;
    let bytes = ztoc::encode(&z);
    let digest = local.store.put_bytes(&bytes)?;
    Ok(ZtocRecord {
        digest: digest.to_string(),
        size: bytes.len() as u64,
        layer_digest: desc.digest().to_string(),
        layer_media_type: desc.media_type().to_string(),
        layer_size: desc.size(),
        span_size,
        source: Some(source.label()),
    })
}

fn short(d: &Digest) -> String {
    d.digest().chars().take(12).collect()
}

/// Advances a progress bar as bytes are read.
struct ProgressReader<'a, R> {
    inner: R,
    bar: &'a ProgressBar,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An uncompressed-layer zTOC of `size` bytes in spans of 100, listing `files`
    /// (name, data offset, size).
    fn ztoc_with(size: u64, files: &[(&str, u64, u64)]) -> ztoc::Ztoc {
        ztoc::Ztoc {
            version: ztoc::ZTOC_VERSION.into(),
            build_tool_identifier: "test".into(),
            compressed_archive_size: size,
            uncompressed_archive_size: size,
            toc: ztoc::Toc {
                files: files
                    .iter()
                    .map(|&(name, offset, len)| ztoc::FileMetadata {
                        name: name.into(),
                        file_type: ztoc::FileType::Regular,
                        uncompressed_offset: offset,
                        uncompressed_size: len,
                        linkname: String::new(),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                        uname: String::new(),
                        gname: String::new(),
                        mod_time: String::new(),
                        devmajor: 0,
                        devminor: 0,
                        xattrs: Vec::new(),
                    })
                    .collect(),
            },
            compression: ztoc::CompressionInfo {
                checkpoints: ztoc::Checkpoints::Uncompressed {
                    span_size: 100,
                    size,
                },
                span_digests: (0..size.div_ceil(100))
                    .map(|i| ztoc::SpanDigest::of(&i.to_le_bytes()))
                    .collect(),
            },
        }
    }

    #[test]
    fn a_file_covers_the_spans_of_its_first_to_its_last_byte() {
        let z = ztoc_with(
            1000,
            &[
                ("a", 150, 50),    // 150..200: span 1 only (200 is not its byte)
                ("b", 199, 2),     // 199..201: spans 1-2
                ("empty", 300, 0), // start span only
                ("end", 990, 0),   // empty at the very end
                ("past", 1200, 5), // beyond the layer: clamped to the last span
            ],
        );
        let range = |name: &str| file_span_range(&z, z.find_file(name).unwrap());
        assert_eq!(range("a"), (1, 1));
        assert_eq!(range("b"), (1, 2));
        assert_eq!(range("empty"), (3, 3));
        assert_eq!(range("end"), (9, 9));
        assert_eq!(range("past"), (9, 9));
    }

    #[test]
    fn byte_ranges_cover_only_the_spans_read() {
        // Spans of 100 bytes; "model" is 150..950 (spans 1-9).
        let mut z = ztoc_with(1000, &[("model", 150, 800), ("link", 0, 0)]);
        let link = z.toc.files.iter_mut().find(|f| f.name == "link").unwrap();
        link.file_type = ztoc::FileType::Hardlink;
        link.linkname = "/model".into();
        let read = |name: &str, ranges: Vec<(u64, u64)>| PrefetchPath {
            name: name.into(),
            ranges: Some(ranges),
        };
        let paths = [
            // Its first 40 bytes (150..190: span 1), and 400..460 (550..610: spans 5-6).
            read("model", vec![(0, 40), (400, 460)]),
            // Past the end of the file, or empty: nothing.
            read("model", vec![(900, 1000), (7, 7)]),
            // Through the hard link: bytes 790..800 (940..950: span 9).
            read("link", vec![(790, 2000)]),
        ];
        let (ranges, missing) = prefetch_ranges(&[&z], &paths);
        assert!(missing.is_empty());
        assert_eq!(ranges[&0], [(1, 1), (5, 6), (9, 9)]);
    }

    #[test]
    fn the_topmost_indexed_layer_holding_a_path_wins() {
        let bottom = ztoc_with(1000, &[("etc/x", 0, 10), ("usr/y", 500, 250)]);
        let top = ztoc_with(300, &[("etc/x", 120, 100), ("etc/z", 0, 1)]);
        let paths: Vec<String> = ["etc/x", "usr/y", "etc/z", "nope"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let paths: Vec<PrefetchPath> = paths
            .into_iter()
            .map(|name| PrefetchPath { name, ranges: None })
            .collect();
        let (ranges, missing) = prefetch_ranges(&[&bottom, &top], &paths);
        assert_eq!(
            ranges,
            BTreeMap::from([(0, vec![(5, 7)]), (1, vec![(1, 2), (0, 0)])])
        );
        assert_eq!(missing, ["nope"]);
        let artifact = PrefetchArtifact::from_ranges(ranges[&1].clone());
        assert_eq!(artifact.spans(), [0, 1, 2]);
    }

    #[test]
    fn prefetch_paths_are_normalized_and_merged_with_the_json_list() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("p.json");
        std::fs::write(
            &json,
            r#"["/opt/data.bin", " ", "usr//bin/./small", "/x/../etc/c"]"#,
        )
        .unwrap();
        let opts = IndexOptions {
            span_size: 1,
            min_layer_size: 0,
            platform: Vec::new(),
            all_platforms: false,
            force: false,
            prefetch_file: vec!["/usr/bin/small".into(), "".into()],
            prefetch_files_json: Some(json.clone()),
        };
        let whole = |name: &str| PrefetchPath {
            name: name.into(),
            ranges: None,
        };
        assert_eq!(
            opts.prefetch_paths().unwrap(),
            [
                whole("usr/bin/small"),
                whole("opt/data.bin"),
                whole("etc/c")
            ]
        );
        // The byte-range form: ranges of one path are combined, and a path also listed
        // whole (by --prefetch-file) is prefetched whole.
        std::fs::write(
            &json,
            r#"{"/opt/model.bin": [[0, 10]], "opt//model.bin": [[50, 60]], "/usr/bin/small": [[0, 1]]}"#,
        )
        .unwrap();
        assert_eq!(
            opts.prefetch_paths().unwrap(),
            [
                whole("usr/bin/small"),
                PrefetchPath {
                    name: "opt/model.bin".into(),
                    ranges: Some(vec![(0, 10), (50, 60)])
                }
            ]
        );
        std::fs::write(&json, r#"{"files": ["a"]}"#).unwrap();
        let err = format!("{:#}", opts.prefetch_paths().unwrap_err());
        assert!(err.contains("JSON array"), "{err}");
    }
}
