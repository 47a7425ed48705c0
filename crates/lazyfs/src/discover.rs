//! Finding the SOCI index of an image in a registry: the v2 binding first (an image index
//! made by `soci convert`), then v1 indexes through the referrers API or the tag schema.

use oci::soci_index::{self, IndexVersion, SociIndex};
use oci::{Descriptor, Digest, ImageManifest};
use registry::{ReferrersSource, Repository};
use serde_json::Value;

/// Largest SOCI index manifest read.
const MAX_INDEX_SIZE: u64 = 4 << 20;

/// A SOCI index found for an image manifest.
#[derive(Debug, Clone)]
pub struct FoundIndex {
    /// Digest of the SOCI index manifest.
    pub digest: Digest,
    /// The parsed index.
    pub index: SociIndex,
    /// How it was found: "image index" (v2), "referrers API" or "tag schema" (v1).
    pub found_through: &'static str,
}

/// Why no usable index was found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The image has no SOCI index at all.
    #[error("no SOCI index for {image} (manifest {manifest}); create one with `soci create {image} && soci push {image}`, or `soci convert {image} <new ref>` for a v2 image")]
    NotFound {
        /// The image reference as given.
        image: String,
        /// The image manifest digest.
        manifest: String,
    },
    /// No v2 index, and v1 discovery is switched off.
    #[error("no SOCI v2 index for {image} (manifest {manifest}), and v1 indexes are not looked up (enable them with [pull_modes.soci_v1] enable = true)")]
    NoV2Index {
        /// The image reference as given.
        image: String,
        /// The image manifest digest.
        manifest: String,
    },
    /// A registry operation failed.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// An index was found but is unusable.
    #[error("SOCI index {digest} of {image}: {message}")]
    Invalid {
        /// The image.
        image: String,
        /// Index digest.
        digest: String,
        /// What is wrong.
        message: String,
    },
}

/// Which kinds of SOCI index discovery may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// v1 indexes through the referrers API or the tag schema.
    pub v1: bool,
    /// v2 indexes bound to the image by an image index.
    pub v2: bool,
}

impl Default for Modes {
    fn default() -> Self {
        Modes { v1: true, v2: true }
    }
}

/// Finds the SOCI index of `manifest` (digest `manifest_digest`), reached through the
/// top-level object `top_bytes` of `image` (an image index for v2 images).
pub async fn find_index(
    repo: &Repository,
    image: &str,
    top_bytes: &[u8],
    manifest_digest: &Digest,
    manifest: &ImageManifest,
) -> Result<FoundIndex, DiscoverError> {
    find_index_in_modes(
        repo,
        image,
        top_bytes,
        manifest_digest,
        manifest,
        Modes::default(),
    )
    .await
}

/// [`find_index`] limited to the index versions `modes` allows.
pub async fn find_index_in_modes(
    repo: &Repository,
    image: &str,
    top_bytes: &[u8],
    manifest_digest: &Digest,
    manifest: &ImageManifest,
    modes: Modes,
) -> Result<FoundIndex, DiscoverError> {
    if modes.v2 {
        if let Some(digest) = v2_index_digest(top_bytes, manifest_digest, manifest) {
            let found = fetch_index(repo, image, &digest, "image index").await?;
            return Ok(found);
        }
    }
    if !modes.v1 {
        return Err(DiscoverError::NoV2Index {
            image: image.to_owned(),
            manifest: manifest_digest.to_string(),
        });
    }
    let refs = repo
        .referrers(manifest_digest, Some(soci_index::SOCI_INDEX_V1))
        .await?;
    let through = found_through(refs.source);
    // Several v1 indexes (rebuilt with other options): the last listed is the newest push.
    let mut last_error = None;
    for desc in refs.descriptors.iter().rev() {
        match fetch_index(repo, image, desc.digest(), through).await {
            Ok(found) if found.index.version == IndexVersion::V1 => {
                match found.index.subject.as_ref().map(Descriptor::digest) {
                    Some(subject) if subject == manifest_digest => return Ok(found),
                    _ => {
                        last_error = Some(DiscoverError::Invalid {
                            image: image.to_owned(),
                            digest: desc.digest().to_string(),
                            message: format!("its subject is not {manifest_digest}"),
                        })
                    }
                }
            }
            Ok(_) => {}
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| DiscoverError::NotFound {
        image: image.to_owned(),
        manifest: manifest_digest.to_string(),
    }))
}

/// The v2 binding: the manifest copy's `com.amazon.soci.index-digest` annotation, or a SOCI
/// index descriptor in the image index naming this manifest.
fn v2_index_digest(
    top_bytes: &[u8],
    manifest_digest: &Digest,
    manifest: &ImageManifest,
) -> Option<Digest> {
    if let Some(d) = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(soci_index::ANNOTATION_INDEX_DIGEST))
        .and_then(|d| oci::digest::parse(d).ok())
    {
        return Some(d);
    }
    let top: Value = serde_json::from_slice(top_bytes).ok()?;
    soci_index::v2_index_entries(&top)
        .into_iter()
        .find(|e| e.image_manifest.as_ref() == Some(manifest_digest))
        .map(|e| e.digest)
}

/// How a v1 index was found, as people read it.
fn found_through(source: ReferrersSource) -> &'static str {
    match source {
        ReferrersSource::Api => "referrers API",
        ReferrersSource::TagSchema => "tag schema",
    }
}

/// One SOCI index a registry holds for an image, as `soci index list --remote` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedIndex {
    /// The index manifest's digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// The image's platform (`os/arch[/variant]`, empty when unknown).
    pub platform: String,
    /// "v1" or "v2".
    pub version: &'static str,
    /// The image manifest it indexes.
    pub image_manifest: String,
    /// How it was found: "image index" (v2), "referrers API" or "tag schema" (v1).
    pub found_through: &'static str,
}

/// Every SOCI index of an image: the v2 entries of its top object `top_bytes`, then the v1
/// referrers of each of `images`.
pub async fn list_indexes(
    repo: &Repository,
    top_bytes: &[u8],
    images: &[oci::resolve::ResolvedImage],
) -> Result<Vec<ListedIndex>, DiscoverError> {
    let top: Value = serde_json::from_slice(top_bytes).unwrap_or(Value::Null);
    let mut found: Vec<ListedIndex> = soci_index::v2_index_entries(&top)
        .into_iter()
        .map(|e| ListedIndex {
            digest: e.digest.to_string(),
            size: e.size,
            platform: e.platform.map(|p| p.to_string()).unwrap_or_default(),
            version: "v2",
            image_manifest: e.image_manifest.map(|m| m.to_string()).unwrap_or_default(),
            found_through: "image index",
        })
        .collect();
    for image in images {
        let manifest = image.manifest_desc.digest();
        let refs = repo
            .referrers(manifest, Some(soci_index::SOCI_INDEX_V1))
            .await?;
        let through = found_through(refs.source);
        found.extend(refs.descriptors.iter().map(|d| {
            ListedIndex {
                digest: d.digest().to_string(),
                size: d.size(),
                platform: image
                    .platform
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                version: "v1",
                image_manifest: manifest.to_string(),
                found_through: through,
            }
        }));
    }
    Ok(found)
}

/// Fetches the SOCI index `digest` named by the user (e.g. `--soci-index-digest`); for a v1
/// index, its subject must be `manifest_digest`.
pub async fn fetch_given_index(
    repo: &Repository,
    image: &str,
    digest: &Digest,
    manifest_digest: &Digest,
) -> Result<FoundIndex, DiscoverError> {
    let found = fetch_index(repo, image, digest, "given digest").await?;
    if let Some(subject) = found.index.subject.as_ref().map(Descriptor::digest) {
        if subject != manifest_digest {
            return Err(DiscoverError::Invalid {
                image: image.to_owned(),
                digest: digest.to_string(),
                message: format!("it indexes {subject}, not {manifest_digest}"),
            });
        }
    }
    Ok(found)
}

async fn fetch_index(
    repo: &Repository,
    image: &str,
    digest: &Digest,
    through: &'static str,
) -> Result<FoundIndex, DiscoverError> {
    let manifest = repo.get_manifest(digest.as_ref()).await?;
    if manifest.bytes.len() as u64 > MAX_INDEX_SIZE {
        return Err(DiscoverError::Invalid {
            image: image.to_owned(),
            digest: digest.to_string(),
            message: format!(
                "{} bytes is over the {MAX_INDEX_SIZE} byte limit",
                manifest.bytes.len()
            ),
        });
    }
    let index = soci_index::parse_index_manifest(&manifest.bytes, &format!("SOCI index {digest}"))
        .map_err(|e| DiscoverError::Invalid {
            image: image.to_owned(),
            digest: digest.to_string(),
            message: e.to_string(),
        })?;
    Ok(FoundIndex {
        digest: digest.clone(),
        index,
        found_through: through,
    })
}
