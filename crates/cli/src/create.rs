//! `soci create`: zTOCs for an image's layers and a SOCI index (v1) per image manifest, kept
//! in the local store for `soci push`. The work is `indexer::pipeline::create`; this parses the
//! flags, shows progress and prints what was built.

use crate::remote::{RegistryArgs, Remote};
use crate::{ContainerdArgs, ContentStoreKind};
use anyhow::{Context, Result};
use clap::Args;
use indexer::index::BuiltIndex;
use indexer::local::LocalStore;
use indexer::pipeline::{self, Build, Built};
use indexer::prefetch::PrefetchList;
use indexer::ztocs::{LayerOutcome, Progress};
use indexer::{CheckpointPolicy, ImageSource, Settings};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use oci::layout::PlatformSelection;
use oci::platform::Platform;
use oci::reference::ImageRef;
use oci::{Descriptor, Digest};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// `--checkpoints` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checkpoints {
    /// Every --span-size bytes.
    Uniform,
    /// Around the prefetch list's reads.
    Reads,
}

/// Indexing flags shared by `soci create` and `soci convert`.
#[derive(Args)]
pub(crate) struct IndexOptions {
    /// Uncompressed bytes between gzip checkpoints; smaller spans mean finer-grained fetches
    /// and larger zTOCs. With `--checkpoints reads`, the longest span away from the reads.
    /// The default is 1 MiB (AWS's CLI uses 4 MiB: `--span-size 4194304`); see README
    /// "Span size".
    #[arg(long, default_value_t = indexer::DEFAULT_SPAN_SIZE)]
    pub span_size: u64,
    /// Where gzip checkpoints go. `uniform`: every --span-size bytes, as AWS's CLI does.
    /// `reads`: around the read set given with --prefetch-files-json / --prefetch-file (best:
    /// the byte ranges `soci mount --record-read-ranges` recorded), so a start fetches little
    /// more than it reads; a layer is streamed a second time for this. Either way the zTOCs
    /// are ordinary SOCI zTOCs that AWS's snapshotter reads.
    #[arg(long, value_enum, default_value = "uniform")]
    pub checkpoints: Checkpoints,
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
    /// List no lean zTOC beside each gzip zTOC. A lean zTOC is the zTOC without its 32 KiB
    /// checkpoint windows (gzip-compressed; the windows of prefetched spans kept): soci-rs's
    /// snapshotter fetches it instead of the zTOC before a layer's first read, and each
    /// window only when a read needs one it cannot make from bytes it already has. AWS's
    /// snapshotter passes over it (and downloads it, as it downloads every blob of an index).
    #[arg(long)]
    pub no_lean_ztocs: bool,
}

impl IndexOptions {
    /// The pipeline's settings from the flags; reads the prefetch list (warning about entries
    /// it ignores). Values no index can be built with are refused before any other work.
    pub(crate) fn settings(&self) -> Result<Settings> {
        if self.span_size == 0 {
            anyhow::bail!("--span-size must be positive");
        }
        let no_read_set = self.prefetch_file.is_empty() && self.prefetch_files_json.is_none();
        if self.checkpoints == Checkpoints::Reads && no_read_set {
            anyhow::bail!(
                "--checkpoints reads needs a read set: give --prefetch-files-json FILE (the \
                 ranges `soci mount --record-read-ranges` writes) or --prefetch-file PATH"
            );
        }
        let json = match &self.prefetch_files_json {
            Some(file) => Some(
                std::fs::read(file)
                    .with_context(|| format!("reading --prefetch-files-json {}", file.display()))?,
            ),
            None => None,
        };
        let what = self
            .prefetch_files_json
            .as_ref()
            .map(|f| format!("--prefetch-files-json {}", f.display()))
            .unwrap_or_default();
        let list = PrefetchList::parse(&self.prefetch_file, json.as_deref().map(|j| (j, &*what)))?;
        for p in &list.ignored {
            eprintln!("warning: prefetch path {p:?} names the root directory, not a file; ignored");
        }
        Ok(Settings {
            span_size: self.span_size,
            min_layer_size: self.min_layer_size,
            platforms: self.selection()?,
            layer_concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            force: self.force,
            prefetch: list.paths,
            checkpoints: match self.checkpoints {
                Checkpoints::Uniform => CheckpointPolicy::Uniform,
                Checkpoints::Reads => CheckpointPolicy::Reads,
            },
            lean_ztocs: !self.no_lean_ztocs,
            ..Settings::default()
        })
    }

    /// Which platforms to use, from `--platform` / `--all-platforms`.
    fn selection(&self) -> Result<PlatformSelection> {
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

pub fn run(root: &Path, ctd: &ContainerdArgs, args: CreateArgs) -> Result<()> {
    let settings = args.index.settings()?;
    let reference = ImageRef::parse(&args.image)?;
    let image_ref = crate::normalize_ref(&args.image)?;
    let remote = Remote::new(&args.registry)?;
    remote.rt.block_on(async {
        let source = open_source(&remote, &args.image, &reference, ctd).await?;
        let opened = source.open(&settings.platforms).await?;
        let from = source.describe();
        tracing::info!("reading {image_ref} from {from}");
        let local = LocalStore::open(root)?;
        let build = terminal_build(&source, &opened, &settings, &local);
        let (built, records) = pipeline::create(&build, &local, &image_ref)
            .await
            .context("indexing failed; no SOCI index was created")?;
        let from_registry = source.layers_from_registry();
        if from_registry > 0 {
            println!(
                "{from_registry} layer(s) were not in containerd's content store and were read from the registry"
            );
        }
        print_prefetch_missing(&built, &image_ref);
        for (index, record) in built.indexes.indexes.iter().zip(&records) {
            print_index_layers(index, &built);
            println!(
                "soci index {} created for {image_ref} ({}), read from {from}",
                record.digest, record.platform
            );
        }
        if ctd.content_store == ContentStoreKind::Containerd {
            export(&local, &source, &built.indexes.indexes, ctd).await?;
        }
        Ok(())
    })
}

/// The image's source: an OCI layout, or a registry image read from containerd's content
/// store when containerd has it (`ctr images pull REF` / `soci image rpull REF`).
async fn open_source(
    remote: &Remote,
    typed: &str,
    reference: &ImageRef,
    ctd: &ContainerdArgs,
) -> Result<ImageSource> {
    match reference {
        ImageRef::OciLayout { dir, tag, digest } => {
            Ok(ImageSource::layout(dir, tag.clone(), digest.clone())?)
        }
        ImageRef::Registry { .. } => {
            let repo = remote.repository(reference)?;
            let canonical = reference.to_string();
            let mut names = vec![typed.to_owned()];
            if canonical != typed {
                names.push(canonical);
            }
            let tag_or_digest = crate::remote::reference_of(reference);
            Ok(ImageSource::registry_or_containerd(
                repo,
                &tag_or_digest,
                &names,
                &ctd.address,
                &ctd.namespace,
            )
            .await)
        }
    }
}

/// A build kept in `local`, with progress bars on a terminal.
pub(crate) fn terminal_build<'a>(
    source: &'a ImageSource,
    opened: &'a indexer::OpenedImage,
    settings: &'a Settings,
    local: &'a LocalStore,
) -> Build<'a> {
    Build {
        source,
        opened,
        settings,
        local: Some(local),
        progress: Bars::shared(),
    }
}

/// `--content-store containerd`: the indexes also go into containerd's content store, held
/// by the image record when containerd has the image.
async fn export(
    local: &LocalStore,
    source: &ImageSource,
    indexes: &[BuiltIndex],
    ctd: &ContainerdArgs,
) -> Result<()> {
    let (client, image) = match source {
        ImageSource::Containerd(c) => (c.client.clone(), Some(c.name.clone())),
        _ => (
            containerd::Client::connect(&ctd.address, &ctd.namespace)
                .await
                .context("--content-store containerd")?,
            None,
        ),
    };
    let report = local
        .export_to_containerd(&client, indexes, image.as_deref())
        .await?;
    for i in &report.indexes {
        println!(
            "soci index {} and its {} blob(s) stored in containerd's content store (namespace {})",
            i.digest,
            i.blobs,
            client.namespace()
        );
    }
    if report.image.is_none() {
        eprintln!(
            "warning: containerd has no image record for this reference, so nothing keeps the \
             SOCI index from containerd's garbage collection; pull the image into containerd \
             first (ctr images pull / soci image rpull)"
        );
    }
    Ok(())
}

/// One line per layer of the image: its zTOC (built, or already there) or why it has none;
/// then one per prefetch artifact.
pub(crate) fn print_index_layers(index: &BuiltIndex, built: &Built) {
    for layer in index.image.manifest.layers() {
        print_layer(layer, built.ztocs.by_layer.get(layer.digest()));
    }
    for p in &index.prefetch {
        println!(
            "layer {} -> prefetch {} ({} spans)",
            p.desc.layer_digest,
            p.desc.digest,
            p.spans.len()
        );
    }
}

/// One layer's line.
fn print_layer(layer: &Descriptor, outcome: Option<&LayerOutcome>) {
    let digest = layer.digest();
    match outcome {
        Some(LayerOutcome::Built(z)) => println!("layer {digest} -> ztoc {}", z.digest),
        Some(LayerOutcome::Reused(r)) => {
            println!("layer {digest} -> ztoc {} (already exists)", r.ztoc.digest)
        }
        Some(LayerOutcome::Skipped(reason)) => {
            println!("layer {digest} -> ztoc skipped ({reason})")
        }
        None => println!("layer {digest} -> not processed"),
    }
}

/// Warns about prefetch paths no indexed layer holds.
pub(crate) fn print_prefetch_missing(built: &Built, image: &str) {
    for (platform, path) in &built.indexes.prefetch_missing {
        eprintln!(
            "warning: prefetch file /{path} is not in any indexed layer of {image} ({platform}); it is not prefetched"
        );
    }
}

/// A progress bar per layer being indexed, on a terminal (indicatif hides them otherwise).
pub(crate) struct Bars {
    all: MultiProgress,
    style: ProgressStyle,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    /// No bars yet, as the pipeline takes them.
    pub(crate) fn shared() -> Arc<dyn Progress> {
        let style = ProgressStyle::with_template(
            "{prefix:.bold} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        Arc::new(Bars {
            all: MultiProgress::new(),
            style,
            bars: Mutex::new(HashMap::new()),
        })
    }
}

impl Progress for Bars {
    fn layer_started(&self, layer: &Descriptor) {
        let bar = self.all.add(ProgressBar::new(layer.size()));
        bar.set_style(self.style.clone());
        bar.set_prefix(layer.digest().digest().chars().take(12).collect::<String>());
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(layer.digest().clone(), bar);
        }
    }

    fn layer_read(&self, layer: &Descriptor, bytes: u64) {
        if let Some(bar) = self
            .bars
            .lock()
            .ok()
            .and_then(|b| b.get(layer.digest()).cloned())
        {
            bar.inc(bytes);
        }
    }

    fn layer_finished(&self, layer: &Descriptor) {
        if let Some(bar) = self
            .bars
            .lock()
            .ok()
            .and_then(|mut b| b.remove(layer.digest()))
        {
            bar.finish_and_clear();
        }
    }
}
