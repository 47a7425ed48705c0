//! `soci create`: build zTOCs for an image's layers (in parallel) and a SOCI index (v1).

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
use std::path::Path;

/// Arguments of `soci create`.
#[derive(Args)]
pub struct CreateArgs {
    /// Uncompressed bytes between gzip checkpoints; smaller spans mean finer-grained fetches
    /// and larger zTOCs.
    #[arg(long, default_value_t = ztoc::DEFAULT_SPAN_SIZE)]
    span_size: u64,
    /// Layers smaller than this get no zTOC (they are fetched whole at run time).
    #[arg(long, default_value_t = 10 << 20)]
    min_layer_size: u64,
    /// Platform(s) to index, os/arch[/variant] (default: this machine's).
    #[arg(long, short = 'p', conflicts_with = "all_platforms")]
    platform: Vec<String>,
    /// Index every platform of a multi-platform image.
    #[arg(long)]
    all_platforms: bool,
    /// Rebuild zTOCs even when one already exists for a layer.
    #[arg(long, short = 'f')]
    force: bool,
    /// Image to index: oci:DIR[:TAG] or oci:DIR@DIGEST (an OCI image layout).
    image: String,
}

/// What happened to one layer.
enum LayerOutcome {
    Built(ZtocRecord),
    Reused(ZtocRecord),
    Skipped(String),
}

struct LayerJob {
    desc: Descriptor,
    compression: LayerCompression,
}

pub fn run(root: &Path, args: CreateArgs) -> Result<()> {
    if args.span_size == 0 {
        bail!("--span-size must be positive");
    }
    let reference = ImageRef::parse(&args.image)?;
    let ImageRef::OciLayout { dir, tag, digest } = &reference else {
        bail!(
            "{} is a registry reference; this version indexes OCI image layouts only \
             (copy the image with `skopeo copy docker://{0} oci:DIR:TAG`, then `soci create oci:DIR:TAG`)",
            args.image
        );
    };
    let dir = std::fs::canonicalize(dir)
        .with_context(|| format!("OCI layout {} not found", dir.display()))?;
    let image_ref = crate::normalize_ref(&args.image)?;
    let layout = OciLayout::open(&dir)?;
    let top = layout.resolve(tag.as_deref(), digest.as_ref())?;
    let selection = if args.all_platforms {
        PlatformSelection::All
    } else if args.platform.is_empty() {
        PlatformSelection::Host
    } else {
        PlatformSelection::Some(
            args.platform
                .iter()
                .map(|p| Platform::parse(p))
                .collect::<Result<_, _>>()?,
        )
    };
    let images = layout.image_manifests(&top, &selection)?;
    let local = Local::open(root)?;

    // Each distinct layer is indexed once, even if several platforms share it.
    let mut jobs: Vec<LayerJob> = Vec::new();
    for image in &images {
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
            z.span_size == args.span_size
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
                if size < args.min_layer_size {
                    return Ok(LayerOutcome::Skipped(format!(
                        "size {size} is less than min-layer-size {}",
                        args.min_layer_size
                    )));
                }
                if !args.force {
                    if let Some(found) = existing(job.desc.digest())? {
                        return Ok(LayerOutcome::Reused(found));
                    }
                }
                let bar = progress.add(ProgressBar::new(size));
                bar.set_style(style.clone());
                bar.set_prefix(short(job.desc.digest()));
                let result = build_layer(&layout, &local, job, args.span_size, &bar, &dir);
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

    for image in &images {
        write_index(&local, image, &by_layer, &image_ref, &args)?;
    }
    Ok(())
}

/// Prints the per-layer lines for one image and records its SOCI index.
fn write_index(
    local: &Local,
    image: &ResolvedImage,
    by_layer: &HashMap<String, LayerOutcome>,
    image_ref: &str,
    args: &CreateArgs,
) -> Result<()> {
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
                    span_size: Some(args.span_size),
                });
                records.push(z.clone());
            }
            Some(LayerOutcome::Skipped(reason)) => {
                println!("layer {digest} -> ztoc skipped ({reason})")
            }
            None => bail!("internal error: layer {digest} was not processed"),
        }
    }
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
        span_size: args.span_size,
        min_layer_size: args.min_layer_size,
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
    layout: &OciLayout,
    local: &Local,
    job: &LayerJob,
    span_size: u64,
    bar: &ProgressBar,
    layout_dir: &Path,
) -> Result<ZtocRecord> {
    let desc = &job.desc;
    let algorithm = match job.compression {
        LayerCompression::Gzip => ztoc::CompressionAlgorithm::Gzip,
        _ => ztoc::CompressionAlgorithm::Uncompressed,
    };
    let file = layout.open_blob(desc.digest())?;
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
            "the blob in {} does not match its descriptor (digest {actual}, {size} bytes; expected {}, {} bytes): the layout is corrupt",
            layout_dir.display(),
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
        source: Some(layout_dir.display().to_string()),
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
