//! SOCI index manifests from zTOCs: one per image manifest that has at least one zTOC, with
//! its prefetch artifacts, in one place for the annotations and descriptor order, so
//! `soci create`, `soci convert` and the builder write the same bytes.

use crate::error::{Error, Result};
use crate::prefetch::{self, PrefetchPath};
use crate::ztocs::{LayerOutcome, LayerReads, LayerZtocs, ZtocBlob};
use crate::Settings;
use bytes::Bytes;
use oci::resolve::ResolvedImage;
use oci::soci_index::{self, IndexVersion, LeanDescriptor, PrefetchDescriptor, ZtocDescriptor};
use oci::{Descriptor, Digest};
use std::collections::{BTreeMap, BTreeSet};

/// One layer listed in an index.
#[derive(Debug, Clone)]
pub struct IndexedLayer {
    /// The layer's descriptor from the image manifest.
    pub layer: Descriptor,
    /// Its zTOC.
    pub ztoc: ZtocBlob,
    /// The zTOC came from the local store instead of being built now.
    pub reused: bool,
    /// For a reused zTOC, where its layer was read when it was built.
    pub recorded_source: Option<String>,
    /// The lean zTOC listed beside it (gzip layers, when [`Settings::lean_ztocs`] is on).
    pub lean: Option<LeanBlob>,
}

/// A lean zTOC made for one layer of an index (`ztoc::lean`): the zTOC without its windows,
/// but those of the spans the index's prefetch artifact lists for the layer.
#[derive(Debug, Clone)]
pub struct LeanBlob {
    /// Its digest.
    pub digest: Digest,
    /// Its bytes.
    pub bytes: Bytes,
}

impl IndexedLayer {
    /// Where the layer can be read again: as recorded for a reused zTOC, else `current`.
    pub fn source_or<'a>(&'a self, current: &'a str) -> &'a str {
        self.recorded_source.as_deref().unwrap_or(current)
    }
}

/// A prefetch artifact built for one layer.
#[derive(Debug, Clone)]
pub struct PrefetchBlob {
    /// Its descriptor as the index lists it.
    pub desc: PrefetchDescriptor,
    /// Its JSON.
    pub bytes: Vec<u8>,
    /// The spans it lists, in fetch order.
    pub spans: Vec<u64>,
}

/// A SOCI index built for one image manifest.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    /// The image manifest it indexes.
    pub image: ResolvedImage,
    /// v1 (with `subject`) or v2.
    pub version: IndexVersion,
    /// The index manifest's digest.
    pub digest: Digest,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The layers with a zTOC, in layer order.
    pub ztocs: Vec<IndexedLayer>,
    /// Prefetch artifacts, in layer order.
    pub prefetch: Vec<PrefetchBlob>,
    /// Span size the zTOCs were built with.
    pub span_size: u64,
    /// Minimum layer size used.
    pub min_layer_size: u64,
}

impl BuiltIndex {
    /// The image's platform as text (`os/arch[/variant]`), empty when unknown.
    pub fn platform(&self) -> String {
        platform_text(&self.image)
    }

    /// The blobs the index names (zTOCs, prefetch artifacts, lean zTOCs), to push before it.
    pub fn blobs(&self) -> Vec<(Digest, Bytes)> {
        let ztocs = self
            .ztocs
            .iter()
            .map(|z| (z.ztoc.digest.clone(), z.ztoc.bytes.clone()));
        let prefetch = self
            .prefetch
            .iter()
            .map(|p| (p.desc.digest.clone(), Bytes::from(p.bytes.clone())));
        let leans = self
            .ztocs
            .iter()
            .filter_map(|z| z.lean.as_ref())
            .map(|l| (l.digest.clone(), l.bytes.clone()));
        ztocs.chain(prefetch).chain(leans).collect()
    }
}

/// The indexes built for a set of images.
#[derive(Debug, Clone, Default)]
pub struct BuiltIndexes {
    /// One per image with at least one zTOC, in image order.
    pub indexes: Vec<BuiltIndex>,
    /// Images every layer of which was skipped (no index for them).
    pub without_ztocs: Vec<ResolvedImage>,
    /// Prefetch paths no indexed layer of an image holds: (image platform, path).
    pub prefetch_missing: Vec<(String, String)>,
}

/// Builds the index of each of `images` from `ztocs`, listing prefetch artifacts for
/// `prefetch` paths.
pub fn build_indexes(
    images: &[ResolvedImage],
    ztocs: &LayerZtocs,
    settings: &Settings,
    version: IndexVersion,
    prefetch: &[PrefetchPath],
) -> Result<BuiltIndexes> {
    let mut out = BuiltIndexes::default();
    for image in images {
        let layers = indexed_layers(image, ztocs)?;
        if layers.is_empty() {
            out.without_ztocs.push(image.clone());
            continue;
        }
        let (artifacts, missing) = image_prefetch(&layers, prefetch)?;
        out.prefetch_missing
            .extend(missing.into_iter().map(|p| (platform_text(image), p)));
        out.indexes
            .push(build_index(image, layers, artifacts, settings, version)?);
    }
    Ok(out)
}

/// The layers of `image` that have a zTOC, in layer order.
fn indexed_layers(image: &ResolvedImage, ztocs: &LayerZtocs) -> Result<Vec<IndexedLayer>> {
    let mut out = Vec::new();
    for layer in image.manifest.layers() {
        let indexed = match ztocs.by_layer.get(layer.digest()) {
            Some(LayerOutcome::Built(z)) => IndexedLayer {
                layer: layer.clone(),
                ztoc: z.clone(),
                reused: false,
                recorded_source: None,
                lean: None,
            },
            Some(LayerOutcome::Reused(r)) => IndexedLayer {
                layer: layer.clone(),
                ztoc: r.ztoc.clone(),
                reused: true,
                recorded_source: r.source.clone(),
                lean: None,
            },
            Some(LayerOutcome::Skipped(_)) => continue,
            None => {
                return Err(Error::InvalidImage {
                    what: layer.digest().to_string(),
                    reason: "the layer was not processed".into(),
                })
            }
        };
        out.push(indexed);
    }
    Ok(out)
}

/// The index manifest of one image.
fn build_index(
    image: &ResolvedImage,
    mut layers: Vec<IndexedLayer>,
    prefetch: Vec<PrefetchBlob>,
    settings: &Settings,
    version: IndexVersion,
) -> Result<BuiltIndex> {
    if settings.lean_ztocs {
        for l in &mut layers {
            let hot = prefetch
                .iter()
                .find(|p| &p.desc.layer_digest == l.layer.digest())
                .map_or(&[][..], |p| &p.spans[..]);
            l.lean = lean_ztoc(l, hot)?;
        }
    }
    let descs: Vec<ZtocDescriptor> = layers
        .iter()
        .map(|l| ZtocDescriptor {
            lean: l.lean.as_ref().map(|b| LeanDescriptor {
                digest: b.digest.clone(),
                size: b.bytes.len() as u64,
            }),
            ..ztoc_descriptor(
                &l.layer,
                l.ztoc.digest.clone(),
                l.ztoc.bytes.len() as u64,
                settings.span_size,
            )
        })
        .collect();
    let prefetch_descs: Vec<PrefetchDescriptor> = prefetch.iter().map(|p| p.desc.clone()).collect();
    let subject = (version == IndexVersion::V1).then_some(&image.manifest_desc);
    let (bytes, digest) = index_manifest(
        version,
        subject,
        &descs,
        &prefetch_descs,
        &settings.build_tool,
    )?;
    Ok(BuiltIndex {
        image: image.clone(),
        version,
        digest,
        bytes,
        ztocs: layers,
        prefetch,
        span_size: settings.span_size,
        min_layer_size: settings.min_layer_size,
    })
}

/// The lean zTOC of a gzip layer's zTOC (`None` for a plain tar layer, whose zTOC holds no
/// windows), carrying the windows of the `hot` spans (a prefetch list's) that a reader cannot
/// make from the other hot spans' bytes.
fn lean_ztoc(layer: &IndexedLayer, hot: &[u64]) -> Result<Option<LeanBlob>> {
    let fail = |source| Error::Ztoc {
        layer: layer.layer.digest().clone(),
        media_type: layer.layer.media_type().to_string(),
        source,
    };
    let ztoc = ztoc::decode(&layer.ztoc.bytes).map_err(fail)?;
    if ztoc.compression.algorithm() != ztoc::CompressionAlgorithm::Gzip {
        return Ok(None);
    }
    let hot: BTreeSet<u64> = hot.iter().copied().collect();
    let inline = hot
        .iter()
        .copied()
        .filter(|&s| !window_made_from(&ztoc, s, &hot))
        .collect();
    let bytes = Bytes::from(ztoc::lean::encode_lean(&layer.ztoc.bytes, &inline).map_err(fail)?);
    Ok(Some(LeanBlob {
        digest: oci::digest::sha256(&bytes),
        bytes,
    }))
}

/// Whether the window of `span` is made of bytes of the spans `have` (every span holding
/// the 32 KiB before it is there).
fn window_made_from(z: &ztoc::Ztoc, span: u64, have: &BTreeSet<u64>) -> bool {
    let Ok(out) = z.span_uncompressed_range(span).map(|r| r.start) else {
        return false;
    };
    let source = ztoc::lean::window_source_range(out);
    if source.is_empty() {
        return true;
    }
    match (z.span_of(source.start), z.span_of(source.end - 1)) {
        (Ok(a), Ok(b)) => (a..=b).all(|s| have.contains(&s)),
        _ => false,
    }
}

/// The prefetch artifacts of one image for `paths`, in layer order, and the paths no
/// indexed layer holds. Each path is looked up from the top layer down.
fn image_prefetch(
    layers: &[IndexedLayer],
    paths: &[PrefetchPath],
) -> Result<(Vec<PrefetchBlob>, Vec<String>)> {
    if paths.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let decoded = decode_layers(layers)?;
    let tocs: Vec<&ztoc::Ztoc> = decoded.iter().collect();
    let (ranges, missing) = prefetch::prefetch_ranges(&tocs, paths);
    let mut out = Vec::new();
    for (i, layer_ranges) in ranges {
        let Some(layer) = layers.get(i) else {
            continue;
        };
        let (artifact, json) = prefetch::artifact(layer_ranges);
        out.push(PrefetchBlob {
            desc: PrefetchDescriptor {
                digest: oci::digest::sha256(&json),
                size: json.len() as u64,
                layer_digest: layer.layer.digest().clone(),
            },
            bytes: json,
            spans: artifact.spans(),
        });
    }
    Ok((out, missing))
}

/// The zTOCs of `layers`, decoded.
fn decode_layers(layers: &[IndexedLayer]) -> Result<Vec<ztoc::Ztoc>> {
    layers
        .iter()
        .map(|l| {
            ztoc::decode(&l.ztoc.bytes).map_err(|source| Error::Ztoc {
                layer: l.layer.digest().clone(),
                media_type: l.layer.media_type().to_string(),
                source,
            })
        })
        .collect()
}

/// Per layer digest, the layer and the tar-stream ranges of `paths` it serves in any of
/// `images` (each path from the topmost indexed layer holding it, as prefetch finds it).
pub fn read_extents_by_layer(
    images: &[ResolvedImage],
    ztocs: &LayerZtocs,
    paths: &[PrefetchPath],
) -> Result<LayerReads> {
    let mut out = LayerReads::new();
    for image in images {
        let layers = indexed_layers(image, ztocs)?;
        let decoded = decode_layers(&layers)?;
        let tocs: Vec<&ztoc::Ztoc> = decoded.iter().collect();
        let (extents, _) = prefetch::read_extents(&tocs, paths);
        for (i, ranges) in extents {
            let Some(l) = layers.get(i) else { continue };
            out.entry(l.layer.digest().clone())
                .or_insert_with(|| (l.layer.clone(), Vec::new()))
                .1
                .extend(ranges);
        }
    }
    Ok(out)
}

/// The descriptor of a zTOC of `ztoc_size` bytes with digest `ztoc` built for `layer` with
/// `span_size`, as listed in a SOCI index.
pub fn ztoc_descriptor(
    layer: &Descriptor,
    ztoc: Digest,
    ztoc_size: u64,
    span_size: u64,
) -> ZtocDescriptor {
    ZtocDescriptor {
        digest: ztoc,
        size: ztoc_size,
        layer_digest: layer.digest().clone(),
        layer_media_type: layer.media_type().to_string(),
        span_size: Some(span_size),
        lean: None,
    }
}

/// Builds a SOCI index manifest (v1 with `subject`, or v2) listing `ztocs` then `prefetch`,
/// annotated with `build_tool`; returns its bytes and digest. Without prefetch artifacts
/// this is byte-for-byte the plain index.
pub fn index_manifest(
    version: IndexVersion,
    subject: Option<&Descriptor>,
    ztocs: &[ZtocDescriptor],
    prefetch: &[PrefetchDescriptor],
    build_tool: &str,
) -> Result<(Vec<u8>, Digest)> {
    let annotations = BTreeMap::from([(
        soci_index::ANNOTATION_BUILD_TOOL.to_owned(),
        build_tool.to_owned(),
    )]);
    Ok(soci_index::build_index_manifest_with_prefetch(
        version,
        subject,
        ztocs,
        prefetch,
        &annotations,
    )?)
}

/// A platform as text (`os/arch[/variant]`), empty when unknown, as `soci` records it.
pub fn platform_text(image: &ResolvedImage) -> String {
    image
        .platform
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default()
}
