//! zTOCs for the distinct layers of the images being indexed: each layer is streamed once from
//! its source through the zTOC builder (several at once, each on a blocking thread), or reused
//! from the local store when a zTOC built with the same settings is there already.

use crate::error::{Error, Result};
use crate::layer::{build_layer_ztoc, layer_skip_reason};
use crate::local::{LocalStore, ReusedZtoc};
use crate::source::ImageSource;
use crate::Settings;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use oci::resolve::ResolvedImage;
use oci::{Descriptor, Digest};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

/// Told how layer builds go, to show progress (the CLI's bars); every method has a no-op
/// default. Called from blocking threads, hence `Send + Sync`.
pub trait Progress: Send + Sync {
    /// `layer` starts streaming through the builder.
    fn layer_started(&self, _layer: &Descriptor) {}
    /// `bytes` more of `layer` were read.
    fn layer_read(&self, _layer: &Descriptor, _bytes: u64) {}
    /// `layer` is done, built or failed.
    fn layer_finished(&self, _layer: &Descriptor) {}
}

/// Progress nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {}

/// An encoded zTOC.
#[derive(Debug, Clone)]
pub struct ZtocBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its bytes.
    pub bytes: Bytes,
    /// Its checkpoint placement's key when not uniform ([`LayerPlacement::key`]).
    pub placement: Option<String>,
}

impl ZtocBlob {
    /// The blob of `bytes`, built with uniform checkpoints.
    pub fn new(bytes: Bytes) -> Self {
        ZtocBlob {
            digest: oci::digest::sha256(&bytes),
            bytes,
            placement: None,
        }
    }
}

/// The checkpoint placement one layer is built with.
#[derive(Debug, Clone, Default)]
pub struct LayerPlacement {
    /// Where the checkpoints go.
    pub placement: ztoc::Placement,
    /// What the local store records, so a zTOC is reused only for the same placement:
    /// `None` for uniform, `reads:<sha256 of the merged read ranges>` around reads.
    pub key: Option<String>,
}

impl LayerPlacement {
    /// Spans around `ranges` of the layer's tar stream (merged as
    /// [`ztoc::placement::merge_ranges`] does with `merge_gap`).
    pub fn around_reads(ranges: &[(u64, u64)], merge_gap: u64) -> Self {
        let merged = ztoc::placement::merge_ranges(ranges, merge_gap);
        let text: Vec<String> = merged.iter().map(|(s, e)| format!("{s}-{e}")).collect();
        let key = format!("reads:{}", oci::digest::sha256(text.join(",").as_bytes()));
        LayerPlacement {
            placement: ztoc::Placement::around_ranges(&merged, 0),
            key: Some(key),
        }
    }
}

/// What happened to one layer.
#[derive(Debug, Clone)]
pub enum LayerOutcome {
    /// A zTOC was built from the layer's bytes.
    Built(ZtocBlob),
    /// A zTOC built earlier with the same span size was found in the local store.
    Reused(ReusedZtoc),
    /// The layer gets no zTOC, for this reason (too small, not gzip or tar).
    Skipped(String),
}

impl LayerOutcome {
    /// The zTOC, unless the layer was skipped.
    pub fn ztoc(&self) -> Option<&ZtocBlob> {
        match self {
            LayerOutcome::Built(z) => Some(z),
            LayerOutcome::Reused(r) => Some(&r.ztoc),
            LayerOutcome::Skipped(_) => None,
        }
    }
}

/// The zTOCs of every distinct layer of a set of images.
#[derive(Debug, Clone, Default)]
pub struct LayerZtocs {
    /// What happened to each layer, by layer digest.
    pub by_layer: HashMap<Digest, LayerOutcome>,
    /// Layer bytes streamed through the builder.
    pub bytes_read: u64,
    /// Wall time of streaming and building.
    pub seconds: f64,
}

/// The distinct layers of `images`, in first-seen order (platforms often share layers).
pub fn distinct_layers(images: &[ResolvedImage]) -> Vec<Descriptor> {
    let mut distinct: Vec<Descriptor> = Vec::new();
    for layer in images.iter().flat_map(|i| i.manifest.layers()) {
        if !distinct.iter().any(|d| d.digest() == layer.digest()) {
            distinct.push(layer.clone());
        }
    }
    distinct
}

/// Builds (or with `local` and without `settings.force`, reuses) a zTOC with uniform
/// checkpoints for every distinct layer of `images`, `settings.layer_concurrency` at once.
/// Built zTOCs are written to `local` when given. Every layer is tried; when any fails, the
/// error names each failure.
pub async fn build_ztocs(
    source: &ImageSource,
    images: &[ResolvedImage],
    settings: &Settings,
    local: Option<&LocalStore>,
    progress: Arc<dyn Progress>,
) -> Result<LayerZtocs> {
    let layers = distinct_layers(images)
        .into_iter()
        .map(|layer| (layer, LayerPlacement::default()))
        .collect();
    build_layers(source, layers, settings, local, progress).await
}

/// Per layer digest: the layer and the tar-stream ranges `[start, end)` read from it.
pub type LayerReads = HashMap<Digest, (Descriptor, Vec<(u64, u64)>)>;

/// Rebuilds the zTOCs in `ztocs` of the layers `hot` names (by digest, with the tar-stream
/// ranges read from each) with spans around those reads; cold regions keep spans of up to
/// `settings.span_size`. Other layers keep their zTOCs.
pub async fn place_around_reads(
    source: &ImageSource,
    ztocs: &mut LayerZtocs,
    hot: &LayerReads,
    settings: &Settings,
    local: Option<&LocalStore>,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let layers = hot
        .values()
        .filter(|(layer, _)| matches!(ztocs.by_layer.get(layer.digest()), Some(o) if o.ztoc().is_some()))
        .map(|(layer, ranges)| {
            let placement = LayerPlacement::around_reads(ranges, ztoc::placement::DEFAULT_MERGE_GAP);
            (layer.clone(), placement)
        })
        .collect();
    let placed = build_layers(source, layers, settings, local, progress).await?;
    ztocs.bytes_read += placed.bytes_read;
    ztocs.seconds += placed.seconds;
    ztocs.by_layer.extend(placed.by_layer);
    Ok(())
}

/// Builds or reuses a zTOC for each of `layers` with its placement.
async fn build_layers(
    source: &ImageSource,
    layers: Vec<(Descriptor, LayerPlacement)>,
    settings: &Settings,
    local: Option<&LocalStore>,
    progress: Arc<dyn Progress>,
) -> Result<LayerZtocs> {
    let started = Instant::now();
    let results: Vec<(Descriptor, Result<(LayerOutcome, u64)>)> =
        stream::iter(layers.into_iter().map(|(layer, placement)| {
            let progress = progress.clone();
            async move {
                let outcome =
                    layer_outcome(source, &layer, &placement, settings, local, progress).await;
                (layer, outcome)
            }
        }))
        .buffer_unordered(settings.layer_concurrency.max(1))
        .collect()
        .await;
    let mut out = LayerZtocs::default();
    let mut failures = Vec::new();
    for (layer, result) in results {
        match result {
            Ok((outcome, read)) => {
                out.bytes_read += read;
                out.by_layer.insert(layer.digest().clone(), outcome);
            }
            Err(e) => failures.push(e),
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    match failures.len() {
        0 => Ok(out),
        1 => Err(failures.remove(0)),
        _ => Err(Error::Layers(failures)),
    }
}

/// One layer: skipped, reused or built (then stored in `local`); with the bytes streamed.
async fn layer_outcome(
    source: &ImageSource,
    layer: &Descriptor,
    placement: &LayerPlacement,
    settings: &Settings,
    local: Option<&LocalStore>,
    progress: Arc<dyn Progress>,
) -> Result<(LayerOutcome, u64)> {
    if let Some(reason) = layer_skip_reason(layer, settings.min_layer_size) {
        return Ok((LayerOutcome::Skipped(reason), 0));
    }
    if let (Some(local), false) = (local, settings.force) {
        let key = placement.key.as_deref();
        if let Some(found) = local.reusable_ztoc(layer.digest(), settings.span_size, key)? {
            return Ok((LayerOutcome::Reused(found), 0));
        }
    }
    let reader = source.open_layer(layer).await?;
    progress.layer_started(layer);
    let built = build_blocking(reader, layer, placement, settings, progress.clone()).await;
    progress.layer_finished(layer);
    let blob = built?;
    if let Some(local) = local {
        local.put_blob(&blob.bytes)?;
    }
    Ok((LayerOutcome::Built(blob), layer.size()))
}

/// Runs the zTOC builder over `reader` on a blocking thread.
async fn build_blocking(
    reader: Box<dyn Read + Send>,
    layer: &Descriptor,
    placement: &LayerPlacement,
    settings: &Settings,
    progress: Arc<dyn Progress>,
) -> Result<ZtocBlob> {
    let options = ztoc::BuildOptions {
        span_size: settings.span_size,
        placement: placement.placement.clone(),
        build_tool_identifier: settings.build_tool.clone(),
    };
    let key = placement.key.clone();
    let what = format!("indexing layer {}", layer.digest());
    let layer = layer.clone();
    tokio::task::spawn_blocking(move || {
        let reader = ProgressReader {
            inner: reader,
            layer: &layer,
            progress: progress.as_ref(),
        };
        let z = build_layer_ztoc(reader, &layer, &options)?;
        Ok(ZtocBlob {
            placement: key,
            ..ZtocBlob::new(Bytes::from(ztoc::encode(&z)))
        })
    })
    .await
    .map_err(|e| Error::Task {
        what,
        reason: e.to_string(),
    })?
}

/// Tells a [`Progress`] about the bytes read.
struct ProgressReader<'a, R> {
    inner: R,
    layer: &'a Descriptor,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.layer_read(self.layer, n as u64);
        Ok(n)
    }
}
