//! The v2 binding of `soci convert`: a new image index holding, for each image manifest, an
//! OCI copy annotated with its SOCI index digest, plus the SOCI index descriptors. Pure: the
//! caller fetches and writes (a registry, an OCI layout).

use crate::error::{Error, Result};
use oci::platform::Platform;
use oci::resolve::ResolvedImage;
use oci::soci_index;
use oci::{Descriptor, Digest};
use serde_json::{json, Map, Value};
use std::fmt;

/// Why an image is already SOCI-enabled (converting it again would nest indexes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SociEnabled {
    /// The image index lists a SOCI index v2 (this digest).
    HoldsIndex(String),
    /// An image manifest carries `com.amazon.soci.index-digest`.
    ManifestNames {
        /// The manifest.
        manifest: Digest,
        /// The SOCI index it names.
        index: String,
    },
}

impl fmt::Display for SociEnabled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SociEnabled::HoldsIndex(d) => write!(f, "it holds SOCI index {d}"),
            SociEnabled::ManifestNames { manifest, index } => {
                write!(f, "manifest {manifest} names SOCI index {index}")
            }
        }
    }
}

/// Whether the image (its top object `top_json` and the image manifests resolved from it) is
/// already SOCI-enabled, and why.
pub fn soci_enabled(top_json: &Value, images: &[ResolvedImage]) -> Option<SociEnabled> {
    if let Some(found) = soci_index::v2_index_entries(top_json).first() {
        return Some(SociEnabled::HoldsIndex(found.digest.to_string()));
    }
    images.iter().find_map(|image| {
        let index = image
            .manifest
            .annotations()
            .as_ref()
            .and_then(|a| a.get(soci_index::ANNOTATION_INDEX_DIGEST))?;
        Some(SociEnabled::ManifestNames {
            manifest: image.manifest_desc.digest().clone(),
            index: index.clone(),
        })
    })
}

/// One v2 SOCI index built for an image manifest.
#[derive(Debug, Clone)]
pub struct V2Index {
    /// The original image manifest it indexes.
    pub manifest: Digest,
    /// The image's platform.
    pub platform: Option<Platform>,
    /// The SOCI index manifest's digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

impl V2Index {
    /// The entry for `image`'s SOCI index `digest` of `size` bytes.
    pub fn new(image: &ResolvedImage, digest: &Digest, size: u64) -> V2Index {
        V2Index {
            manifest: image.manifest_desc.digest().clone(),
            platform: image.platform.clone(),
            digest: digest.clone(),
            size,
        }
    }
}

/// One entry of the new image index, in order, with what the caller must write for it.
#[derive(Debug, Clone)]
pub enum BindingStep {
    /// Kept as it is (not an image manifest, or a manifest without an index that needs no
    /// rewrite): present already in the same repository; copied into another one. `bytes` are
    /// the manifest's when it was fetched.
    Unchanged {
        /// The entry.
        desc: Descriptor,
        /// Its bytes, when fetched.
        bytes: Option<Vec<u8>>,
    },
    /// An OCI copy of an image manifest, to be written before the SOCI index (if any) and the
    /// new image index.
    Copy {
        /// The original manifest's descriptor.
        original: Descriptor,
        /// The copy's digest.
        digest: Digest,
        /// The copy's bytes.
        bytes: Vec<u8>,
        /// Position in the `indexes` given of the SOCI index bound to it, if any.
        index: Option<usize>,
    },
}

/// The new image index and what goes into the registry with it.
#[derive(Debug, Clone)]
pub struct V2Binding {
    /// The entries, in the new index's order (the SOCI index entries follow at the end).
    pub steps: Vec<BindingStep>,
    /// The new image index.
    pub index_bytes: Vec<u8>,
    /// Its digest.
    pub index_digest: Digest,
}

/// Assembles the new image index of a converted image. `top`/`top_json` is the image's top
/// object, `images` the image manifests resolved from it, `indexes` the SOCI indexes built
/// for some of them, and `fetch` reads a manifest's bytes (verified) by descriptor.
///
/// Manifest copies are OCI manifests with an OCI config type (registries dislike Docker
/// manifests next to OCI artifacts in one index, and AWS's convert does the same), annotated
/// with `com.amazon.soci.index-digest`; each SOCI index entry carries
/// `com.amazon.soci.image-manifest-digest` naming the copy, and the platform.
pub fn v2_binding<E: From<Error>>(
    top: &Descriptor,
    top_json: &Value,
    images: &[ResolvedImage],
    indexes: &[V2Index],
    mut fetch: impl FnMut(&Descriptor) -> Result<Vec<u8>, E>,
) -> Result<V2Binding, E> {
    let top_is_index = top_json.get("manifests").is_some();
    let mut entries: Vec<Value> = if top_is_index {
        top_json["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        let mut d = to_value(top)?;
        // A bare manifest has no platform in its descriptor; runtimes need it in an index.
        if let Some(p) = images.first().and_then(|i| i.platform.as_ref()) {
            d["platform"] = platform_json(p);
        }
        vec![d]
    };
    let mut steps = Vec::new();
    let mut soci_entries = Vec::new();
    for entry in entries.iter_mut() {
        let desc: Descriptor =
            serde_json::from_value(entry.clone()).map_err(|e| Error::InvalidImage {
                what: top.digest().to_string(),
                reason: format!("the image index has an invalid descriptor: {e}"),
            })?;
        let media = desc.media_type().to_string();
        let is_manifest =
            media == oci::manifest::OCI_MANIFEST || media == oci::manifest::DOCKER_MANIFEST;
        if !is_manifest {
            steps.push(BindingStep::Unchanged { desc, bytes: None });
            continue;
        }
        let bytes = fetch(&desc)?;
        let bound = indexes.iter().position(|b| &b.manifest == desc.digest());
        if bound.is_none() && media != oci::manifest::DOCKER_MANIFEST {
            steps.push(BindingStep::Unchanged {
                desc,
                bytes: Some(bytes),
            });
            continue;
        }
        let mut manifest: Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidImage {
                what: desc.digest().to_string(),
                reason: format!("manifest is not valid JSON: {e}"),
            })?;
        manifest["mediaType"] = json!(oci::manifest::OCI_MANIFEST);
        if manifest["config"]["mediaType"].as_str()
            == Some("application/vnd.docker.container.image.v1+json")
        {
            manifest["config"]["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
        }
        let not_object = |what: &Digest| Error::InvalidImage {
            what: what.to_string(),
            reason: "not a JSON object".to_owned(),
        };
        if let Some(b) = bound.map(|i| &indexes[i]) {
            annotate(
                &mut manifest,
                soci_index::ANNOTATION_INDEX_DIGEST,
                &b.digest,
            )
            .ok_or_else(|| not_object(desc.digest()))?;
        }
        let new_bytes = serde_json::to_vec(&manifest).map_err(|e| json_error(desc.digest(), e))?;
        let new_digest = oci::digest::sha256(&new_bytes);
        entry["mediaType"] = json!(oci::manifest::OCI_MANIFEST);
        entry["digest"] = json!(new_digest.to_string());
        entry["size"] = json!(new_bytes.len());
        if let Some(b) = bound.map(|i| &indexes[i]) {
            annotate(entry, soci_index::ANNOTATION_INDEX_DIGEST, &b.digest)
                .ok_or_else(|| not_object(top.digest()))?;
            let mut soci = json!({
                "mediaType": oci::manifest::OCI_MANIFEST,
                "digest": b.digest.to_string(),
                "size": b.size,
                "artifactType": soci_index::SOCI_INDEX_V2,
                "annotations": { soci_index::ANNOTATION_IMAGE_MANIFEST_DIGEST: new_digest.to_string() },
            });
            if let Some(p) = &b.platform {
                soci["platform"] = platform_json(p);
            }
            soci_entries.push(soci);
        }
        steps.push(BindingStep::Copy {
            original: desc,
            digest: new_digest,
            bytes: new_bytes,
            index: bound,
        });
    }
    entries.extend(soci_entries);
    let mut index = if top_is_index {
        top_json.clone()
    } else {
        json!({"schemaVersion": 2})
    };
    index["mediaType"] = json!(oci::manifest::OCI_INDEX);
    index["manifests"] = Value::Array(entries);
    let index_bytes = serde_json::to_vec(&index).map_err(|e| json_error(top.digest(), e))?;
    let index_digest = oci::digest::sha256(&index_bytes);
    Ok(V2Binding {
        steps,
        index_bytes,
        index_digest,
    })
}

fn to_value(desc: &Descriptor) -> Result<Value> {
    serde_json::to_value(desc).map_err(|e| json_error(desc.digest(), e))
}

fn json_error(what: &Digest, e: serde_json::Error) -> Error {
    Error::InvalidImage {
        what: what.to_string(),
        reason: format!("cannot be written as JSON: {e}"),
    }
}

/// Sets `annotations[key] = value` on a JSON object (manifest or descriptor); `None` when
/// `target` is not an object.
pub fn annotate(target: &mut Value, key: &str, value: &Digest) -> Option<()> {
    let annotations = target
        .as_object_mut()?
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    annotations[key] = json!(value.to_string());
    Some(())
}

/// A platform as an OCI descriptor's `platform` object.
pub fn platform_json(p: &Platform) -> Value {
    let mut v = json!({"architecture": p.architecture, "os": p.os});
    if let Some(variant) = &p.variant {
        v["variant"] = json!(variant);
    }
    v
}
