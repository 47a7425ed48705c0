//! Publishing SOCI indexes to a registry. v1 (`soci push`): the blobs, then the index
//! manifest, then the referrers tag schema when the registry did not take the subject itself.

use crate::error::Result;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci::soci_index::{self, SociIndex};
use oci::{Descriptor, Digest};
use registry::{BlobPush, Repository};

/// One blob pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPushed {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: usize,
    /// Whether it was already there, mounted or uploaded.
    pub result: BlobPush,
}

/// How a v1 index was made discoverable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Referrer {
    /// The registry processed the `subject` itself: its referrers API lists the index.
    RegistryApi,
    /// The registry has no referrers API; the index was added to (or already was in) the
    /// tag-schema index `tag`.
    TagSchema {
        /// `sha256-<hex of the image manifest digest>`.
        tag: String,
        /// False when the tag-schema index already listed it (nothing was written).
        added: bool,
        /// Digest of the tag-schema index written, when the registry told.
        written: Option<Digest>,
    },
}

/// What publishing one v1 index did.
#[derive(Debug, Clone)]
pub struct V1Pushed {
    /// The blobs, the empty config first, in the order given.
    pub blobs: Vec<BlobPushed>,
    /// How the index is found.
    pub referrer: Referrer,
}

impl V1Pushed {
    /// The manifests and indexes written: the index itself and the tag-schema index.
    pub fn pushed_manifests(&self, index: &Digest) -> Vec<Digest> {
        let mut out = vec![index.clone()];
        if let Referrer::TagSchema {
            written: Some(d), ..
        } = &self.referrer
        {
            out.push(d.clone());
        }
        out
    }
}

/// The empty JSON config every SOCI index manifest references, as a blob to push.
pub fn empty_config_blob() -> Result<(Digest, Bytes)> {
    Ok((
        oci::digest::parse(soci_index::EMPTY_CONFIG_DIGEST)?,
        Bytes::from_static(soci_index::EMPTY_CONFIG),
    ))
}

/// Pushes `blobs` with up to `concurrency` uploads in flight; results in the order given.
pub async fn push_blobs(
    repo: &Repository,
    blobs: Vec<(Digest, Bytes)>,
    concurrency: usize,
) -> Result<Vec<BlobPushed>> {
    let pushed: Vec<BlobPushed> =
        stream::iter(blobs.into_iter().map(|(digest, bytes)| async move {
            let size = bytes.len();
            let result = repo.push_blob(&digest, bytes, &[]).await?;
            Ok::<_, registry::Error>(BlobPushed {
                digest,
                size,
                result,
            })
        }))
        .buffered(concurrency.max(1))
        .try_collect()
        .await?;
    Ok(pushed)
}

/// Publishes one v1 SOCI index of image manifest `subject`: the empty config and `blobs`
/// (its zTOCs and prefetch artifacts) first, the index manifest `index_bytes` last — a
/// registry never holds an index whose blobs are missing — then, unless the registry
/// handled the subject, the index is added to the referrers tag schema.
pub async fn publish_v1(
    repo: &Repository,
    subject: &Digest,
    index_bytes: Bytes,
    index: &SociIndex,
    blobs: Vec<(Digest, Bytes)>,
    concurrency: usize,
) -> Result<V1Pushed> {
    let mut all = vec![empty_config_blob()?];
    all.extend(blobs);
    let blobs = push_blobs(repo, all, concurrency).await?;
    let index_digest = oci::digest::sha256(&index_bytes);
    let size = index_bytes.len() as u64;
    let put = repo
        .put_manifest(
            index_digest.as_ref(),
            oci::manifest::OCI_MANIFEST,
            index_bytes,
        )
        .await?;
    let referrer = if put.subject_handled {
        Referrer::RegistryApi
    } else {
        let desc = referrer_descriptor(&index_digest, size, index);
        let added = repo.add_referrer_to_tag_schema(subject, &desc).await?;
        let tag = registry::client::referrers_tag(subject);
        // The builder must recognise the tag-schema index's own notification; the registry
        // names the digest of what the tag now holds.
        let written = if added {
            repo.head_manifest(&tag).await?.and_then(|(d, _)| d)
        } else {
            None
        };
        Referrer::TagSchema {
            tag,
            added,
            written,
        }
    };
    Ok(V1Pushed { blobs, referrer })
}

/// The descriptor of a SOCI index as listed in a referrers index: OCI manifest media type,
/// its artifact type, and its annotations (clients filter on both).
pub fn referrer_descriptor(digest: &Digest, size: u64, index: &SociIndex) -> Descriptor {
    let mut d = Descriptor::new(oci::MediaType::ImageManifest, size, digest.clone());
    d.set_artifact_type(Some(oci::MediaType::from(index.version.media_type())));
    if !index.annotations.is_empty() {
        d.set_annotations(Some(index.annotations.clone().into_iter().collect()));
    }
    d
}
