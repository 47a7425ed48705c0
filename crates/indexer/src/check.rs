//! The one decision both [`crate::skip_reason`] and [`crate::index_image`] make: is this
//! image ours, not an image, too small, without anything to index, or indexed already — and
//! if not, what to build.

use crate::binding::{self, SociEnabled};
use crate::error::{Error, Result};
use crate::layer::layer_skip_reason;
use crate::source::{self, ImageSource, OpenedImage};
use crate::ztocs::distinct_layers;
use crate::{Publish, Settings, SkipReason};
use oci::resolve::ResolvedImage;
use oci::soci_index;
use oci::{Descriptor, Digest};
use registry::images::Top;
use registry::Repository;
use serde_json::Value;

/// What to build for an image that is not skipped.
pub(crate) struct Plan {
    /// The image, resolved to the manifests selected.
    pub opened: OpenedImage,
    /// For V2: the destination tag.
    pub dest_tag: Option<String>,
}

/// The decision.
pub(crate) enum Check {
    /// Nothing to do, for this reason.
    Skip(SkipReason),
    /// Build this.
    Build(Box<Plan>),
}

const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// True for a referrers tag-schema tag: `sha256-` and 64 lowercase hex digits.
pub fn is_referrers_tag(tag: &str) -> bool {
    tag.strip_prefix("sha256-").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The destination tag of a V2 conversion of `tag`.
pub(crate) fn dest_tag(pattern: &str, tag: &str) -> String {
    pattern.replace("{tag}", tag)
}

fn validate(settings: &Settings, publish: &Publish) -> Result<()> {
    if settings.span_size == 0 {
        return Err(Error::Settings("span_size must be positive".into()));
    }
    if let Publish::V2 { tag_pattern } = publish {
        // Without `{tag}` every image would be converted into one tag; with nothing else the
        // conversion would overwrite its own source.
        if !tag_pattern.contains("{tag}") || tag_pattern == "{tag}" {
            return Err(Error::Settings(format!(
                "tag pattern {tag_pattern:?} must contain {{tag}} and something besides, e.g. \"{{tag}}-soci\""
            )));
        }
    }
    Ok(())
}

/// Decides what to do with `source` (an image in `repo`). Reads manifests, configs and
/// referrers, never a layer.
pub(crate) async fn check(
    source: &ImageSource,
    repo: &Repository,
    tag: Option<&str>,
    settings: &Settings,
    publish: &Publish,
) -> Result<Check> {
    validate(settings, publish)?;
    let reference = match source {
        ImageSource::Registry { reference, .. } => reference.as_str(),
        _ => {
            return Err(Error::Settings(
                "the builder reads images from registries".into(),
            ))
        }
    };
    for t in tag.into_iter().chain(std::iter::once(reference)) {
        if is_referrers_tag(t) {
            return Ok(Check::Skip(SkipReason::OwnArtifact(format!(
                "referrers tag-schema index (tag {t})"
            ))));
        }
    }
    let top = source.open_top().await?;
    let top_json = source::top_json(&top.bytes, top.desc.digest())?;
    if let Some(reason) = classify_top(&top, &top_json) {
        return Ok(Check::Skip(reason));
    }
    let dest_tag = match (publish, tag) {
        (Publish::V2 { .. }, None) => return Ok(Check::Skip(SkipReason::NoTag)),
        (Publish::V2 { tag_pattern }, Some(t)) => Some(dest_tag(tag_pattern, t)),
        (Publish::V1, _) => None,
    };
    let opened = match source.resolve_top(top, &settings.platforms).await {
        Ok(opened) => opened,
        Err(Error::Oci(oci::Error::NoMatchingPlatform { available, .. }))
            if available.is_empty() =>
        {
            // Nothing runnable at all (an index of attestations, say).
            return Ok(Check::Skip(SkipReason::NotAnImage(
                "an index without image manifests".into(),
            )));
        }
        Err(Error::Oci(e @ oci::Error::NoMatchingPlatform { .. })) => {
            return Ok(Check::Skip(SkipReason::NoSelectedPlatform(e.to_string())));
        }
        Err(e) => return Err(e),
    };
    match decide(repo, &opened, settings, dest_tag.as_deref()).await? {
        Some(reason) => Ok(Check::Skip(reason)),
        None => Ok(Check::Build(Box::new(Plan { opened, dest_tag }))),
    }
}

/// The checks that need the image manifests: converted already, too small, nothing to
/// index, indexed already.
async fn decide(
    repo: &Repository,
    opened: &OpenedImage,
    settings: &Settings,
    dest_tag: Option<&str>,
) -> Result<Option<SkipReason>> {
    let images = &opened.images;
    if let Some(found @ SociEnabled::ManifestNames { .. }) =
        binding::soci_enabled(&opened.top_json, images)
    {
        return Ok(Some(SkipReason::OwnArtifact(format!(
            "SOCI-enabled image ({found})"
        ))));
    }
    let distinct = distinct_layers(images);
    let size: u64 = distinct.iter().map(|d| d.size()).sum();
    if size < settings.min_image_size {
        return Ok(Some(SkipReason::TooSmall {
            size,
            min: settings.min_image_size,
        }));
    }
    let layers: Vec<Descriptor> = distinct
        .into_iter()
        .filter(|d| layer_skip_reason(d, settings.min_layer_size).is_none())
        .collect();
    if layers.is_empty() {
        return Ok(Some(SkipReason::NothingToIndex));
    }
    // Only images with something to index get an index, so only they must have one.
    let indexed: Vec<&ResolvedImage> = images
        .iter()
        .filter(|i| {
            i.manifest
                .layers()
                .iter()
                .any(|l| layers.iter().any(|d| d.digest() == l.digest()))
        })
        .collect();
    let already = match dest_tag {
        None => v1_indexed(repo, &indexed).await?,
        Some(dest) => v2_indexed(repo, dest, &indexed).await?,
    };
    Ok(already.map(SkipReason::AlreadyIndexed))
}

/// Own artifacts and non-images recognisable from the top object alone.
fn classify_top(top: &Top, json: &Value) -> Option<SkipReason> {
    let media = top.desc.media_type().to_string();
    let str_at = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let is_soci = |t: &Option<String>| {
        t.as_deref()
            .is_some_and(|t| t == soci_index::SOCI_INDEX_V1 || t == soci_index::SOCI_INDEX_V2)
    };
    let own = |s: String| Some(SkipReason::OwnArtifact(s));
    let known = [
        oci::manifest::OCI_MANIFEST,
        oci::manifest::DOCKER_MANIFEST,
        oci::manifest::OCI_INDEX,
        oci::manifest::DOCKER_MANIFEST_LIST,
    ];
    if !known.contains(&media.as_str()) {
        return Some(SkipReason::NotAnImage(format!(
            "manifest media type {media}"
        )));
    }
    // The JSON decides, not the Content-Type (a registry may send a generic one).
    match json.get("manifests").is_some() {
        false => {
            let artifact = str_at(json, "artifactType");
            let config = json.get("config").and_then(|c| str_at(c, "mediaType"));
            if is_soci(&artifact) || is_soci(&config) {
                let t = artifact.or(config).unwrap_or_default();
                return own(format!("SOCI index manifest ({t})"));
            }
            if let Some(index) = json
                .get("annotations")
                .and_then(|a| str_at(a, soci_index::ANNOTATION_INDEX_DIGEST))
            {
                return own(format!(
                    "SOCI-enabled manifest copy (names SOCI index {index})"
                ));
            }
            if let Some(t) = artifact {
                return Some(SkipReason::NotAnImage(format!("artifact of type {t}")));
            }
            match config {
                Some(c) if IMAGE_CONFIGS.contains(&c.as_str()) => None,
                Some(c) => Some(SkipReason::NotAnImage(format!("config media type {c}"))),
                None => Some(SkipReason::NotAnImage("a manifest without config".into())),
            }
        }
        true => {
            if let Some(found) = binding::soci_enabled(json, &[]) {
                return own(format!("SOCI-enabled image index ({found})"));
            }
            let entries = json.get("manifests").and_then(Value::as_array);
            for entry in entries.into_iter().flatten() {
                if str_at(entry, "artifactType").as_deref() == Some(soci_index::SOCI_INDEX_V1) {
                    let d = str_at(entry, "digest").unwrap_or_default();
                    return own(format!("referrers tag-schema index (lists SOCI index {d})"));
                }
                if let Some(index) = entry
                    .get("annotations")
                    .and_then(|a| str_at(a, soci_index::ANNOTATION_INDEX_DIGEST))
                {
                    return own(format!(
                        "SOCI-enabled image index (an entry names SOCI index {index})"
                    ));
                }
            }
            None
        }
    }
}

/// `Some(manifests)` when the referrers of every image list a v1 SOCI index.
async fn v1_indexed(repo: &Repository, images: &[&ResolvedImage]) -> Result<Option<Vec<Digest>>> {
    let mut digests = Vec::new();
    for image in images {
        let digest = image.manifest_desc.digest();
        let referrers = repo
            .referrers(digest, Some(soci_index::SOCI_INDEX_V1))
            .await?;
        if referrers.descriptors.is_empty() {
            return Ok(None);
        }
        digests.push(digest.clone());
    }
    Ok(Some(digests))
}

/// `Some(manifests)` when `dest` is a SOCI-enabled index holding, for every image, an
/// annotated copy of its manifest (same config and layers) and the SOCI index bound to it.
async fn v2_indexed(
    repo: &Repository,
    dest: &str,
    images: &[&ResolvedImage],
) -> Result<Option<Vec<Digest>>> {
    let existing = match repo.get_manifest(dest).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Ok(json) = serde_json::from_slice::<Value>(&existing.bytes) else {
        return Ok(None);
    };
    let entries: Vec<Descriptor> = json
        .get("manifests")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| serde_json::from_value(e.clone()).ok())
        .collect();
    let annotation = |d: &Descriptor, key: &str| -> Option<String> {
        d.annotations().as_ref().and_then(|a| a.get(key)).cloned()
    };
    // Copies with a SOCI index entry that names them.
    let bound: Vec<&Descriptor> = entries
        .iter()
        .filter(|copy| {
            annotation(copy, soci_index::ANNOTATION_INDEX_DIGEST).is_some_and(|index| {
                entries.iter().any(|s| {
                    s.digest().to_string() == index
                        && annotation(s, soci_index::ANNOTATION_IMAGE_MANIFEST_DIGEST)
                            .is_some_and(|m| m == copy.digest().to_string())
                })
            })
        })
        .collect();
    let mut digests = Vec::new();
    for image in images {
        let mut found = false;
        for copy in &bound {
            let bytes = repo.get_manifest(copy.digest().as_ref()).await?.bytes;
            if let Ok(oci::manifest::ParsedManifest::Image(m)) =
                oci::manifest::parse(&bytes, copy.digest().as_ref())
            {
                if same_content(&m, &image.manifest) {
                    found = true;
                    break;
                }
            }
        }
        if !found {
            return Ok(None);
        }
        digests.push(image.manifest_desc.digest().clone());
    }
    Ok(Some(digests))
}

/// A manifest copy describes the same image: same config and layers.
fn same_content(a: &oci::ImageManifest, b: &oci::ImageManifest) -> bool {
    a.config().digest() == b.config().digest()
        && a.layers().len() == b.layers().len()
        && a.layers()
            .iter()
            .zip(b.layers())
            .all(|(x, y)| x.digest() == y.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_tags_are_sha256_dash_64_lowercase_hex() {
        let hex = "a".repeat(64);
        assert!(is_referrers_tag(&format!("sha256-{hex}")));
        assert!(!is_referrers_tag(&format!("sha256-{}", "A".repeat(64))));
        assert!(!is_referrers_tag(&format!("sha256-{}", "a".repeat(63))));
        assert!(!is_referrers_tag(&format!("sha256:{hex}")));
        assert!(!is_referrers_tag("v1-soci"));
    }

    #[test]
    fn tag_patterns_need_the_tag_and_more() {
        let v2 = |p: &str| Publish::V2 {
            tag_pattern: p.into(),
        };
        let s = Settings::default();
        assert!(validate(&s, &v2("{tag}-soci")).is_ok());
        assert!(validate(&s, &v2("soci")).is_err());
        assert!(validate(&s, &v2("{tag}")).is_err());
        assert_eq!(dest_tag("{tag}-soci", "v1"), "v1-soci");
        let zero = Settings {
            span_size: 0,
            ..Default::default()
        };
        assert!(validate(&zero, &Publish::V1).is_err());
    }
}
