//! `soci push`: publishing the v1 indexes `soci create` recorded locally. The newest index per
//! platform is pushed (as AWS's soci picks), after checking it still describes the image the
//! registry holds, with a policy for images that already have another SOCI index there.

use crate::error::{Error, Result};
use crate::local::LocalStore;
use crate::publish::{self, V1Pushed};
use bytes::Bytes;
use oci::db::IndexRecord;
use oci::platform::Platform;
use oci::resolve::ResolvedImage;
use oci::soci_index::{self, SociIndex};
use oci::{Descriptor, Digest};
use registry::Repository;
use std::collections::HashMap;

/// Largest SOCI index, zTOC or prefetch artifact read from containerd.
const MAX_ARTIFACT_SIZE: u64 = 1 << 30;

/// What to do when the registry already holds another SOCI index for the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingIndex {
    /// Push anyway (the caller warns).
    Warn,
    /// Do not push.
    Skip,
    /// Push without checking.
    Allow,
}

/// Where the recorded indexes' blobs are read (`soci --content-store`).
pub enum BlobStore<'a> {
    /// The local store.
    Local(&'a LocalStore),
    /// containerd's content store.
    Containerd(&'a containerd::Client),
}

impl BlobStore<'_> {
    /// One blob, verified against its digest; `what` names it in errors.
    async fn get(&self, digest: &Digest, what: &str) -> Result<Vec<u8>> {
        match self {
            BlobStore::Local(local) => local.store.get(digest).map_err(|e| {
                Error::Store(format!("reading {what} {digest} from the local store: {e}"))
            }),
            BlobStore::Containerd(client) => client
                .read_all(digest.as_ref(), MAX_ARTIFACT_SIZE)
                .await
                .map_err(|e| {
                    Error::Store(format!(
                        "reading {what} {digest} from containerd's content store (namespace \
                         {}): {e}; was it created with `soci --content-store containerd create`?",
                        client.namespace()
                    ))
                }),
        }
    }
}

/// The newest recorded v1 index per platform of `image_ref` (platforms in `wanted`, or all
/// with `None`), sorted by platform.
pub fn newest_recorded(
    local: &LocalStore,
    image_ref: &str,
    wanted: Option<&[Platform]>,
) -> Result<Vec<IndexRecord>> {
    let mut newest: HashMap<String, IndexRecord> = HashMap::new();
    for rec in local.db.list_indexes()? {
        if rec.image_ref != image_ref || rec.media_type != soci_index::SOCI_INDEX_V1 {
            continue;
        }
        let keep = wanted.is_none_or(|ws| {
            Platform::parse(&rec.platform).is_ok_and(|p| ws.iter().any(|w| w.matches(&p)))
        });
        let newer = newest
            .get(&rec.platform)
            .is_none_or(|old| old.created < rec.created);
        if keep && newer {
            newest.insert(rec.platform.clone(), rec);
        }
    }
    let mut out: Vec<IndexRecord> = newest.into_values().collect();
    out.sort_by(|a, b| a.platform.cmp(&b.platform));
    Ok(out)
}

/// The image manifest of `images` (the image as the registry has it now) that `record` was
/// built for; an error naming both when the image has changed since. `image` names it.
pub fn manifest_for<'a>(
    record: &IndexRecord,
    images: &'a [ResolvedImage],
    image: &str,
) -> Result<&'a Descriptor> {
    if let Some(found) = images
        .iter()
        .find(|i| i.manifest_desc.digest().to_string() == record.manifest_digest)
    {
        return Ok(&found.manifest_desc);
    }
    let now: Vec<String> = images
        .iter()
        .map(|i| {
            format!(
                "{} ({})",
                i.manifest_desc.digest(),
                crate::index::platform_text(i)
            )
        })
        .collect();
    Err(Error::Refused(format!(
        "refusing to push SOCI index {}: it was built for image manifest {} ({}), but {image} \
         now points at {}; rebuild it with `soci create {image}`",
        record.digest,
        record.manifest_digest,
        record.platform,
        now.join(", ")
    )))
}

/// What pushing one recorded index did.
#[derive(Debug, Clone)]
pub enum PushOutcome {
    /// Not pushed: the registry has other SOCI indexes for the image (policy Skip).
    Skipped {
        /// Those indexes.
        others: Vec<Digest>,
    },
    /// Pushed.
    Pushed {
        /// Blobs and how the index is found.
        pushed: V1Pushed,
        /// Other SOCI indexes the registry held for the image (pushed anyway).
        others: Vec<Digest>,
        /// The registry held this very index already.
        already: bool,
    },
}

/// Pushes the recorded index `record` of image manifest `manifest` to `repo`, its blobs read
/// from `blobs`, `concurrency` uploads at once.
pub async fn push_recorded(
    repo: &Repository,
    record: &IndexRecord,
    manifest: &Descriptor,
    blobs: &BlobStore<'_>,
    existing: ExistingIndex,
    concurrency: usize,
) -> Result<PushOutcome> {
    let index_digest = oci::digest::parse(&record.digest)?;
    let index_bytes = blobs.get(&index_digest, "SOCI index").await?;
    let index = soci_index::parse_index_manifest(&index_bytes, &record.digest)?;
    if index.subject.as_ref().map(Descriptor::digest) != Some(manifest.digest()) {
        return Err(Error::Refused(format!(
            "refusing to push SOCI index {}: its subject is not image manifest {}",
            record.digest,
            manifest.digest()
        )));
    }
    let listed = repo
        .referrers(manifest.digest(), Some(soci_index::SOCI_INDEX_V1))
        .await?;
    let already = listed
        .descriptors
        .iter()
        .any(|d| d.digest() == &index_digest);
    let others: Vec<Digest> = listed
        .descriptors
        .iter()
        .map(|d| d.digest().clone())
        .filter(|d| d != &index_digest)
        .collect();
    if existing == ExistingIndex::Skip && !others.is_empty() {
        return Ok(PushOutcome::Skipped { others });
    }
    let referenced = index_blobs(&index, blobs).await?;
    let pushed = publish::publish_v1(
        repo,
        manifest.digest(),
        Bytes::from(index_bytes),
        &index,
        referenced,
        concurrency,
    )
    .await?;
    Ok(PushOutcome::Pushed {
        pushed,
        others,
        already,
    })
}

/// The blobs an index names (zTOCs, prefetch artifacts, lean zTOCs), read from `blobs`.
async fn index_blobs(index: &SociIndex, blobs: &BlobStore<'_>) -> Result<Vec<(Digest, Bytes)>> {
    let mut out = Vec::new();
    for (digest, what) in index.blobs() {
        out.push((digest.clone(), Bytes::from(blobs.get(digest, what).await?)));
    }
    Ok(out)
}
