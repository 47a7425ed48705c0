//! The one build pipeline: an opened image's layers through the zTOC builder (or reused from
//! the local store), one SOCI index per image manifest, then one of three ends:
//! - [`create`]: v1 indexes kept in the local store and database (`soci create`; `soci push`
//!   publishes them later);
//! - [`publish_v1`]: v1 indexes pushed to the image's repository (the builder);
//! - [`convert`]: v2 indexes bound to the images by a new image index written to a
//!   [`Destination`] (`soci convert`, the builder's v2 mode).

use crate::binding::{self, V2Binding, V2Index};
use crate::destination::{self, Destination};
use crate::error::{Error, Result};
use crate::index::{self, BuiltIndex, BuiltIndexes};
use crate::local::LocalStore;
use crate::publish;
use crate::source::{ImageSource, OpenedImage};
use crate::ztocs::{self, LayerZtocs, Progress};
use crate::{CheckpointPolicy, Settings};
use bytes::Bytes;
use oci::db::IndexRecord;
use oci::soci_index::{self, IndexVersion};
use oci::{Descriptor, Digest};
use registry::Repository;
use std::collections::HashMap;
use std::sync::Arc;

/// Uploads in flight at once when publishing (as `soci push`'s default).
const UPLOAD_CONCURRENCY: usize = 3;

/// What a build reads and where it keeps what it makes.
pub struct Build<'a> {
    /// Where the image is read.
    pub source: &'a ImageSource,
    /// The image, resolved to the manifests to index.
    pub opened: &'a OpenedImage,
    /// What to build.
    pub settings: &'a Settings,
    /// The local store: zTOCs are reused from it and written to it (None: in memory only).
    pub local: Option<&'a LocalStore>,
    /// Told about layer progress.
    pub progress: Arc<dyn Progress>,
}

/// The zTOCs and indexes built.
#[derive(Debug, Clone)]
pub struct Built {
    /// Per layer: built, reused or skipped.
    pub ztocs: LayerZtocs,
    /// Per image: its index, or why it has none.
    pub indexes: BuiltIndexes,
}

/// The zTOCs of every layer, then the index of every image, as `version`.
pub async fn build(b: &Build<'_>, version: IndexVersion) -> Result<Built> {
    let settings = b.settings;
    if settings.span_size == 0 {
        return Err(Error::Settings("span_size must be positive".into()));
    }
    if settings.checkpoints == CheckpointPolicy::Reads && settings.prefetch.is_empty() {
        return Err(Error::Settings(
            "checkpoints around reads need a read set: a prefetch list of files or of the \
             byte ranges `soci mount --record-read-ranges` writes"
                .into(),
        ));
    }
    let images = &b.opened.images;
    let mut ztocs =
        ztocs::build_ztocs(b.source, images, settings, b.local, b.progress.clone()).await?;
    if settings.checkpoints == CheckpointPolicy::Reads {
        // The read set names files; their offsets come from the uniform zTOCs' TOCs.
        let hot = index::read_extents_by_layer(images, &ztocs, &settings.prefetch)?;
        let progress = b.progress.clone();
        ztocs::place_around_reads(b.source, &mut ztocs, &hot, settings, b.local, progress).await?;
    }
    let indexes = index::build_indexes(images, &ztocs, settings, version, &settings.prefetch)?;
    Ok(Built { ztocs, indexes })
}

/// `soci create`: v1 indexes for every image, stored and recorded in `local` under
/// `image_ref`. Fails (recording nothing) when an image has no layer to index.
pub async fn create(
    b: &Build<'_>,
    local: &LocalStore,
    image_ref: &str,
) -> Result<(Built, Vec<IndexRecord>)> {
    let built = build(b, IndexVersion::V1).await?;
    if let Some(image) = built.indexes.without_ztocs.first() {
        return Err(Error::NothingIndexed {
            image: format!("{image_ref} ({})", index::platform_text(image)),
        });
    }
    let location = b.source.location();
    let mut records = Vec::new();
    for idx in &built.indexes.indexes {
        let manifest = idx.image.manifest_desc.digest();
        records.push(local.record_index(idx, image_ref, manifest, &location)?);
    }
    Ok((built, records))
}

/// Publishes v1 indexes to `repo`: per index its blobs, the manifest, and the referrers tag
/// schema when the registry does not take the subject. Returns every manifest written.
pub async fn publish_v1(repo: &Repository, indexes: &[BuiltIndex]) -> Result<Vec<Digest>> {
    let mut written = Vec::new();
    for b in indexes {
        let parsed = soci_index::parse_index_manifest(&b.bytes, b.digest.as_ref())?;
        let pushed = publish::publish_v1(
            repo,
            b.image.manifest_desc.digest(),
            Bytes::from(b.bytes.clone()),
            &parsed,
            b.blobs(),
            UPLOAD_CONCURRENCY,
        )
        .await?;
        written.extend(pushed.pushed_manifests(&b.digest));
    }
    Ok(written)
}

/// A converted image written.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The zTOCs and v2 indexes built.
    pub built: Built,
    /// The new image index's digest.
    pub index_digest: Digest,
    /// Every manifest and index written to the destination, in order.
    pub written: Vec<Digest>,
    /// The index records made, when a local store was given: `(record, manifest copy)`.
    pub records: Vec<IndexRecord>,
}

/// `soci convert`: v2 indexes for the images, bound to annotated copies of their manifests
/// by a new image index written to `dest`; recorded in the local store (if any) under
/// `dest_ref`. Refuses images that are SOCI-enabled already (that would nest indexes).
pub async fn convert(b: &Build<'_>, dest: &Destination, dest_ref: &str) -> Result<Converted> {
    let opened = b.opened;
    if let Some(found) = binding::soci_enabled(&opened.top_json, &opened.images) {
        return Err(Error::AlreadySociEnabled(found.to_string()));
    }
    let built = build(b, IndexVersion::V2).await?;
    if built.indexes.indexes.is_empty() {
        return Err(Error::NothingIndexed {
            image: dest_ref.to_owned(),
        });
    }
    let binding = bind(b.source, opened, &built.indexes.indexes).await?;
    let written =
        destination::write_binding(dest, b.source, &binding, &built.indexes.indexes).await?;
    let mut records = Vec::new();
    if let Some(local) = b.local {
        let location = b.source.location();
        for (idx, copy) in bound_copies(&binding, &built.indexes.indexes) {
            records.push(local.record_index(idx, dest_ref, copy, &location)?);
        }
    }
    Ok(Converted {
        built,
        index_digest: binding.index_digest,
        written,
        records,
    })
}

/// Assembles the binding, first reading every image manifest the top index lists (the
/// binding copies them all, selected or not).
async fn bind(
    source: &ImageSource,
    opened: &OpenedImage,
    indexes: &[BuiltIndex],
) -> Result<V2Binding> {
    let mut manifests: HashMap<String, Vec<u8>> = opened.fetched.clone();
    for desc in listed_manifests(&opened.top_json) {
        if let std::collections::hash_map::Entry::Vacant(slot) =
            manifests.entry(desc.digest().to_string())
        {
            let limit = oci::manifest::MAX_MANIFEST_SIZE as u64;
            slot.insert(source.fetch(&desc, limit).await?);
        }
    }
    let v2: Vec<V2Index> = indexes
        .iter()
        .map(|b| V2Index::new(&b.image, &b.digest, b.bytes.len() as u64))
        .collect();
    let fetch = |d: &Descriptor| {
        manifests
            .get(&d.digest().to_string())
            .cloned()
            .ok_or_else(|| Error::InvalidImage {
                what: d.digest().to_string(),
                reason: "a manifest the image index lists could not be read".into(),
            })
    };
    binding::v2_binding(
        &opened.top.desc,
        &opened.top_json,
        &opened.images,
        &v2,
        fetch,
    )
}

/// The image manifest descriptors an image index lists (none for a bare manifest).
fn listed_manifests(top_json: &serde_json::Value) -> Vec<Descriptor> {
    let entries = top_json.get("manifests").and_then(|m| m.as_array());
    entries
        .into_iter()
        .flatten()
        .filter_map(|e| serde_json::from_value::<Descriptor>(e.clone()).ok())
        .filter(|d| {
            let media = d.media_type().to_string();
            media == oci::manifest::OCI_MANIFEST || media == oci::manifest::DOCKER_MANIFEST
        })
        .collect()
}

/// Each index with the digest of the manifest copy the binding bound it to.
fn bound_copies<'a>(
    binding: &'a V2Binding,
    indexes: &'a [BuiltIndex],
) -> Vec<(&'a BuiltIndex, &'a Digest)> {
    binding
        .steps
        .iter()
        .filter_map(|step| match step {
            binding::BindingStep::Copy {
                digest,
                index: Some(i),
                ..
            } => indexes.get(*i).map(|idx| (idx, digest)),
            _ => None,
        })
        .collect()
}
