//! `soci create`: build zTOCs for an image's layers (in parallel) and a SOCI index (v1).
//! Layers are read once, straight into the zTOC builder, from an OCI layout or streamed from a
//! registry; nothing of the image is stored locally.

use crate::remote::{self, RegistryArgs, Remote};
use crate::Local;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci::db::{IndexRecord, ZtocRecord};
use oci::layout::{OciLayout, PlatformSelection, ResolvedImage};
use oci::manifest::LayerCompression;
use oci::platform::Platform;
use oci::reference::ImageRef;
use oci::soci_index::{self, IndexVersion, ZtocDescriptor};
use oci::{Descriptor, Digest};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

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

    /// Reads a manifest, index or config, verified against its digest.
    pub(crate) fn fetch(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        match self {
            Source::Layout { layout, .. } => {
                Ok(layout.read_blob(desc, oci::manifest::MAX_MANIFEST_SIZE as u64)?)
            }
            Source::Registry { remote, repo, .. } => {
                let mut f = remote::RegistryFetcher {
                    rt: &remote.rt,
                    repo,
                    cache: HashMap::new(),
                };
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
        }
    }

    /// Where the layer can be read again; recorded with each zTOC.
    fn label(&self) -> String {
        match self {
            Source::Layout { dir, .. } => dir.display().to_string(),
            Source::Registry { label, .. } => label.clone(),
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
    compression: LayerCompression,
}

pub fn run(root: &Path, args: CreateArgs) -> Result<()> {
    args.index.check()?;
    let reference = ImageRef::parse(&args.image)?;
    let selection = args.index.selection()?;
    let image_ref = crate::normalize_ref(&args.image)?;
    let Opened { source, images, .. } = Source::open(&reference, &args.registry, &selection)?;
    let local = Local::open(root)?;
    let by_layer = index_layers(&source, &local, &images, &args.index)?;
    for image in &images {
        write_index(&local, image, &by_layer, &image_ref, &args)?;
    }
    Ok(())
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
}

impl IndexOptions {
    /// Rejects values no index can be built with, before any network or disk work.
    pub(crate) fn check(&self) -> Result<()> {
        if self.span_size == 0 {
            bail!("--span-size must be positive");
        }
        Ok(())
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
                    compression: LayerCompression::of(layer.media_type()),
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
                if let Some(reason) = job.compression.skip_reason() {
                    return Ok(LayerOutcome::Skipped(reason));
                }
                if size < opts.min_layer_size {
                    return Ok(LayerOutcome::Skipped(format!(
                        "size {size} is less than min-layer-size {}",
                        opts.min_layer_size
                    )));
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
                ztocs.push(ZtocDescriptor {
                    digest: oci::digest::parse(&z.digest)?,
                    size: z.size,
                    layer_digest: layer.digest().clone(),
                    layer_media_type: layer.media_type().to_string(),
                    span_size: Some(span_size),
                });
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

/// Prints the per-layer lines for one image and records its SOCI index.
fn write_index(
    local: &Local,
    image: &ResolvedImage,
    by_layer: &HashMap<String, LayerOutcome>,
    image_ref: &str,
    args: &CreateArgs,
) -> Result<()> {
    let (ztocs, records) = image_ztocs(image, by_layer, args.index.span_size)?;
    let platform = image
        .platform
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default();
    if ztocs.is_empty() {
        bail!(
            "no zTOCs were created for {image_ref} ({platform}): every layer was skipped; \
             lower --min-layer-size to index small layers"
        );
    }
    let annotations = BTreeMap::from([(
        soci_index::ANNOTATION_BUILD_TOOL.to_owned(),
        ztoc::DEFAULT_BUILD_TOOL.to_owned(),
    )]);
    let (bytes, _) = soci_index::build_index_manifest(
        IndexVersion::V1,
        Some(&image.manifest_desc),
        &ztocs,
        &annotations,
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
        "soci index {index_digest} created for {image_ref} ({})",
        record.platform
    );
    Ok(())
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
    let algorithm = match job.compression {
        LayerCompression::Gzip => ztoc::CompressionAlgorithm::Gzip,
        _ => ztoc::CompressionAlgorithm::Uncompressed,
    };
    let file = source.open_blob(desc)?;
    let mut reader = oci::digest::DigestingReader::new(ProgressReader { inner: file, bar });
    let options = ztoc::BuildOptions {
        span_size,
        ..Default::default()
    };
    let built = ztoc::build_ztoc(
        BufReader::with_capacity(1 << 20, &mut reader),
        algorithm,
        &options,
    );
    // Drain anything the builder did not need (it reads gzip to the end, but a plain tar may
    // carry padding after its end-of-archive marker) so the digest covers the whole blob.
    std::io::copy(&mut reader, &mut std::io::sink())?;
    let (actual, size) = reader.finish();
    if &actual != desc.digest() || size != desc.size() {
        bail!(
            "the layer blob from {} does not match its descriptor (digest {actual}, {size} bytes; expected {}, {} bytes): the image is corrupt",
            source.label(),
            desc.digest(),
            desc.size()
        );
    }
    let z = built.with_context(|| format!("indexing {}", job.desc.media_type()))?;
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
