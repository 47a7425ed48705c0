//! SOCI index manifests: OCI image manifests used as artifacts, one layer per zTOC.

use crate::error::{Error, Result};
use crate::manifest::{self, ParsedManifest};
use oci_spec::image::{Descriptor, Digest, ImageManifest, MediaType};
use serde::Serialize;
use std::collections::BTreeMap;

/// Media type (and artifact type) of a v1 SOCI index.
pub const SOCI_INDEX_V1: &str = "application/vnd.amazon.soci.index.v1+json";
/// Media type (and artifact type) of a v2 SOCI index.
pub const SOCI_INDEX_V2: &str = "application/vnd.amazon.soci.index.v2+json";
/// Media type of a prefetch artifact.
pub const SOCI_PREFETCH_V1: &str = "application/vnd.amazon.soci.prefetch.v1+json";
/// Media type of a zTOC layer in a SOCI index.
pub const ZTOC_MEDIA_TYPE: &str = "application/octet-stream";
/// Media type of a lean zTOC (ours: a zTOC without its checkpoint windows, see
/// `ztoc::lean`); AWS's readers map zTOCs by [`ZTOC_MEDIA_TYPE`] and pass over it.
pub const LEAN_ZTOC_MEDIA_TYPE: &str = "application/vnd.soci-rs.ztoc.lean.v1+gzip";
/// Lean zTOC annotation: the digest of the zTOC it was made from.
pub const ANNOTATION_ZTOC_DIGEST: &str = "dev.soci-rs.ztoc-digest";
/// Layer annotation: digest of the image layer the zTOC indexes.
pub const ANNOTATION_LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";
/// Layer annotation: media type of the image layer the zTOC indexes.
pub const ANNOTATION_LAYER_MEDIA_TYPE: &str = "com.amazon.soci.image-layer-mediaType";
/// Index annotation: the tool that built the index.
pub const ANNOTATION_BUILD_TOOL: &str = "com.amazon.soci.build-tool-identifier";
/// Index annotation: span size used.
pub const ANNOTATION_SPAN_SIZE: &str = "com.amazon.soci.span-size";
/// Index annotation: xattrs disabled.
pub const ANNOTATION_DISABLE_XATTRS: &str = "com.amazon.soci.disable-xattrs";
/// v2 binding: on an image manifest descriptor, its SOCI index.
pub const ANNOTATION_INDEX_DIGEST: &str = "com.amazon.soci.index-digest";
/// v2 binding: on a SOCI index descriptor, its image manifest.
pub const ANNOTATION_IMAGE_MANIFEST_DIGEST: &str = "com.amazon.soci.image-manifest-digest";
/// The empty JSON config blob.
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Digest of [`EMPTY_CONFIG`].
pub const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// SOCI index manifest version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexVersion {
    /// v1: bound to its image by `subject`, found through referrers.
    V1,
    /// v2: bound by an image index built by `soci convert`.
    V2,
}

impl IndexVersion {
    /// The media type / artifact type string.
    pub fn media_type(self) -> &'static str {
        match self {
            IndexVersion::V1 => SOCI_INDEX_V1,
            IndexVersion::V2 => SOCI_INDEX_V2,
        }
    }
}

/// A zTOC as listed in a SOCI index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZtocDescriptor {
    /// Digest of the zTOC blob.
    pub digest: Digest,
    /// Size of the zTOC blob.
    pub size: u64,
    /// Digest of the image layer it indexes.
    pub layer_digest: Digest,
    /// Media type of that layer.
    pub layer_media_type: String,
    /// Span size the zTOC was built with (annotation `com.amazon.soci.span-size`).
    pub span_size: Option<u64>,
    /// The lean zTOC made from it, when the index lists one.
    pub lean: Option<LeanDescriptor>,
}

/// A lean zTOC as listed in a SOCI index (after the prefetch artifacts, annotated with the
/// layer and the zTOC it was made from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeanDescriptor {
    /// Digest of the lean zTOC blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// A prefetch artifact as listed in a SOCI index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchDescriptor {
    /// Digest of the artifact blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The image layer whose spans it lists.
    pub layer_digest: Digest,
}

/// A parsed SOCI index.
#[derive(Debug, Clone)]
pub struct SociIndex {
    /// v1 or v2.
    pub version: IndexVersion,
    /// The image manifest it indexes (v1 only).
    pub subject: Option<Descriptor>,
    /// zTOCs, in image layer order.
    pub ztocs: Vec<ZtocDescriptor>,
    /// Prefetch artifacts, at most one per layer.
    pub prefetch: Vec<PrefetchDescriptor>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

impl SociIndex {
    /// Every blob the index names besides its config, with what it is (`zTOC`, `lean zTOC`,
    /// `prefetch artifact`): what a push or a copy of the index must carry with it.
    pub fn blobs(&self) -> Vec<(&Digest, &'static str)> {
        let ztocs = self.ztocs.iter().map(|z| (&z.digest, "zTOC"));
        let prefetch = self
            .prefetch
            .iter()
            .map(|p| (&p.digest, "prefetch artifact"));
        let leans = self
            .ztocs
            .iter()
            .filter_map(|z| z.lean.as_ref())
            .map(|l| (&l.digest, "lean zTOC"));
        ztocs.chain(prefetch).chain(leans).collect()
    }
}

// Our own serialization structs keep the JSON byte-for-byte deterministic (field order and
// omitted empties), so the same input always yields the same index digest.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireDescriptor<'a> {
    media_type: &'a str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'a str, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireManifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    artifact_type: &'a str,
    config: WireDescriptor<'a>,
    layers: Vec<WireDescriptor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<WireDescriptor<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// Builds a SOCI index manifest; returns its JSON bytes and digest.
///
/// `subject` is required for v1 and ignored for v2.
pub fn build_index_manifest(
    version: IndexVersion,
    subject: Option<&Descriptor>,
    ztocs: &[ZtocDescriptor],
    annotations: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Digest)> {
    build_index_manifest_with_prefetch(version, subject, ztocs, &[], annotations)
}

/// Like [`build_index_manifest`], with prefetch artifacts listed after the zTOCs, and then
/// the lean zTOCs of the zTOCs that have one.
pub fn build_index_manifest_with_prefetch(
    version: IndexVersion,
    subject: Option<&Descriptor>,
    ztocs: &[ZtocDescriptor],
    prefetch: &[PrefetchDescriptor],
    annotations: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Digest)> {
    let media = version.media_type();
    let subject = match (version, subject) {
        (IndexVersion::V1, Some(s)) => Some(WireDescriptor {
            media_type: media_type_str(s.media_type()),
            digest: s.digest().to_string(),
            size: s.size(),
            annotations: None,
        }),
        (IndexVersion::V1, None) => {
            return Err(Error::InvalidManifest {
                what: "SOCI index v1".into(),
                reason: "a v1 index needs the image manifest as its subject".into(),
            })
        }
        (IndexVersion::V2, _) => None,
    };
    let manifest = WireManifest {
        schema_version: 2,
        media_type: "application/vnd.oci.image.manifest.v1+json",
        artifact_type: media,
        config: WireDescriptor {
            media_type: media,
            digest: EMPTY_CONFIG_DIGEST.into(),
            size: 2,
            annotations: None,
        },
        layers: ztocs
            .iter()
            .map(|z| WireDescriptor {
                media_type: ZTOC_MEDIA_TYPE,
                digest: z.digest.to_string(),
                size: z.size,
                annotations: Some(
                    [
                        Some((ANNOTATION_LAYER_DIGEST, z.layer_digest.to_string())),
                        Some((ANNOTATION_LAYER_MEDIA_TYPE, z.layer_media_type.clone())),
                        z.span_size.map(|s| (ANNOTATION_SPAN_SIZE, s.to_string())),
                    ]
                    .into_iter()
                    .flatten()
                    .collect(),
                ),
            })
            .chain(prefetch.iter().map(|p| WireDescriptor {
                media_type: SOCI_PREFETCH_V1,
                digest: p.digest.to_string(),
                size: p.size,
                annotations: Some(BTreeMap::from([(
                    ANNOTATION_LAYER_DIGEST,
                    p.layer_digest.to_string(),
                )])),
            }))
            .chain(ztocs.iter().filter_map(|z| {
                let lean = z.lean.as_ref()?;
                Some(WireDescriptor {
                    media_type: LEAN_ZTOC_MEDIA_TYPE,
                    digest: lean.digest.to_string(),
                    size: lean.size,
                    annotations: Some(BTreeMap::from([
                        (ANNOTATION_LAYER_DIGEST, z.layer_digest.to_string()),
                        (ANNOTATION_ZTOC_DIGEST, z.digest.to_string()),
                    ])),
                })
            }))
            .collect(),
        subject,
        annotations: annotations.clone(),
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::InvalidManifest {
        what: "SOCI index".into(),
        reason: e.to_string(),
    })?;
    let digest = crate::digest::sha256(&bytes);
    Ok((bytes, digest))
}

fn media_type_str(m: &MediaType) -> &'static str {
    match m {
        MediaType::ImageManifest => "application/vnd.oci.image.manifest.v1+json",
        MediaType::Other(s) if s == manifest::DOCKER_MANIFEST => manifest::DOCKER_MANIFEST,
        _ => "application/vnd.oci.image.manifest.v1+json",
    }
}

/// A SOCI index v2 listed in an image index: the binding `soci convert` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2IndexEntry {
    /// The SOCI index manifest's digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// The platform of its descriptor, when given.
    pub platform: Option<crate::platform::Platform>,
    /// The (annotated copy of the) image manifest it indexes, from
    /// `com.amazon.soci.image-manifest-digest`.
    pub image_manifest: Option<Digest>,
}

/// The SOCI index v2 entries (`artifactType` [`SOCI_INDEX_V2`]) of an image index's JSON, in
/// order; entries without a valid digest are left out, and an image manifest's JSON (no
/// `manifests`) has none. The one scan of a binding that discovery, listing and the
/// already-converted check share.
pub fn v2_index_entries(top_json: &serde_json::Value) -> Vec<V2IndexEntry> {
    fn str_at<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a str> {
        v.get(key).and_then(|s| s.as_str())
    }
    let entries = top_json.get("manifests").and_then(|m| m.as_array());
    entries
        .into_iter()
        .flatten()
        .filter(|m| str_at(m, "artifactType") == Some(SOCI_INDEX_V2))
        .filter_map(|m| {
            let digest = crate::digest::parse(str_at(m, "digest")?).ok()?;
            let platform = m.get("platform").and_then(|p| {
                let variant = str_at(p, "variant");
                let platform = format!("{}/{}", str_at(p, "os")?, str_at(p, "architecture")?);
                let text = match variant {
                    Some(v) => format!("{platform}/{v}"),
                    None => platform,
                };
                crate::platform::Platform::parse(&text).ok()
            });
            let image_manifest = m
                .get("annotations")
                .and_then(|a| str_at(a, ANNOTATION_IMAGE_MANIFEST_DIGEST))
                .and_then(|d| crate::digest::parse(d).ok());
            Some(V2IndexEntry {
                digest,
                size: m.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
                platform,
                image_manifest,
            })
        })
        .collect()
}

/// Parses a SOCI index manifest (v1 or v2); anything else is an error naming `what`.
pub fn parse_index_manifest(bytes: &[u8], what: &str) -> Result<SociIndex> {
    let manifest: ImageManifest = match manifest::parse(bytes, what)? {
        ParsedManifest::Image(m) => *m,
        ParsedManifest::Index(_) => return Err(Error::NotASociIndex(what.to_owned())),
    };
    let kind = manifest
        .artifact_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_else(|| manifest.config().media_type().to_string());
    let version = match kind.as_str() {
        SOCI_INDEX_V1 => IndexVersion::V1,
        SOCI_INDEX_V2 => IndexVersion::V2,
        _ => return Err(Error::NotASociIndex(what.to_owned())),
    };
    let mut ztocs = Vec::new();
    let mut prefetch = Vec::new();
    let mut leans = BTreeMap::new();
    for layer in manifest.layers() {
        let media_type = layer.media_type().to_string();
        if media_type == LEAN_ZTOC_MEDIA_TYPE {
            // Ours and optional: one without a readable zTOC digest is passed over, and
            // the full zTOC serves instead.
            let of = layer
                .annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_ZTOC_DIGEST))
                .and_then(|d| crate::digest::parse(d).ok());
            if let Some(of) = of {
                leans.insert(
                    of.to_string(),
                    LeanDescriptor {
                        digest: layer.digest().clone(),
                        size: layer.size(),
                    },
                );
            }
            continue;
        }
        if media_type == SOCI_PREFETCH_V1 {
            let layer_digest = layer
                .annotations()
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_LAYER_DIGEST))
                .ok_or_else(|| Error::InvalidManifest {
                    what: what.to_owned(),
                    reason: format!(
                        "prefetch artifact {} has no {ANNOTATION_LAYER_DIGEST} annotation",
                        layer.digest()
                    ),
                })?;
            prefetch.push(PrefetchDescriptor {
                digest: layer.digest().clone(),
                size: layer.size(),
                layer_digest: crate::digest::parse(layer_digest)?,
            });
            continue;
        }
        if media_type != ZTOC_MEDIA_TYPE {
            continue; // future additions
        }
        let annotations = layer.annotations().clone().unwrap_or_default();
        let layer_digest =
            annotations
                .get(ANNOTATION_LAYER_DIGEST)
                .ok_or_else(|| Error::InvalidManifest {
                    what: what.to_owned(),
                    reason: format!(
                        "zTOC {} has no {ANNOTATION_LAYER_DIGEST} annotation",
                        layer.digest()
                    ),
                })?;
        ztocs.push(ZtocDescriptor {
            digest: layer.digest().clone(),
            size: layer.size(),
            layer_digest: crate::digest::parse(layer_digest)?,
            layer_media_type: annotations
                .get(ANNOTATION_LAYER_MEDIA_TYPE)
                .cloned()
                .unwrap_or_default(),
            span_size: annotations
                .get(ANNOTATION_SPAN_SIZE)
                .and_then(|s| s.parse().ok()),
            lean: None,
        });
    }
    for z in &mut ztocs {
        z.lean = leans.get(&z.digest.to_string()).cloned();
    }
    Ok(SociIndex {
        version,
        subject: manifest.subject().clone(),
        ztocs,
        prefetch,
        annotations: manifest
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn v2_entries_are_the_soci_index_descriptors_of_an_image_index() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let top = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d('a'), "size": 10},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d('b'), "size": 20,
                 "artifactType": SOCI_INDEX_V2,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                 "annotations": {ANNOTATION_IMAGE_MANIFEST_DIGEST: d('a')}},
                {"artifactType": SOCI_INDEX_V2, "digest": "not a digest"},
                {"artifactType": SOCI_INDEX_V2, "digest": d('c'), "platform": {"os": "linux"}},
            ]
        });
        let entries = v2_index_entries(&top);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].digest.to_string(), d('b'));
        assert_eq!(entries[0].size, 20);
        assert_eq!(
            entries[0].platform,
            Some(crate::platform::Platform::new("linux", "arm64", None))
        );
        assert_eq!(
            entries[0].image_manifest.as_ref().map(|m| m.to_string()),
            Some(d('a'))
        );
        // A platform without an architecture is no platform; no size means 0.
        assert_eq!((entries[1].platform.clone(), entries[1].size), (None, 0));
        assert!(v2_index_entries(&serde_json::json!({"layers": []})).is_empty());
        assert!(v2_index_entries(&serde_json::json!("manifests")).is_empty());
    }

    #[test]
    fn build_parse_round_trip_is_deterministic() {
        let d = Digest::from_str(EMPTY_CONFIG_DIGEST).unwrap();
        let subject = Descriptor::new(MediaType::ImageManifest, 1234, d.clone());
        let ztocs = vec![ZtocDescriptor {
            digest: d.clone(),
            size: 99,
            layer_digest: d.clone(),
            layer_media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            span_size: Some(4_194_304),
            lean: None,
        }];
        let ann = BTreeMap::from([(ANNOTATION_BUILD_TOOL.to_owned(), "soci-rs".to_owned())]);
        let (a, da) = build_index_manifest(IndexVersion::V1, Some(&subject), &ztocs, &ann).unwrap();
        let (b, db) = build_index_manifest(IndexVersion::V1, Some(&subject), &ztocs, &ann).unwrap();
        assert_eq!((a.clone(), da), (b, db));
        let json: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(json["config"]["mediaType"], SOCI_INDEX_V1);
        assert_eq!(json["artifactType"], SOCI_INDEX_V1);
        assert_eq!(json["subject"]["size"], 1234);
        let parsed = parse_index_manifest(&a, "test").unwrap();
        assert_eq!(parsed.version, IndexVersion::V1);
        assert_eq!(parsed.ztocs, ztocs);
        assert_eq!(parsed.subject.unwrap().size(), 1234);
        assert!(build_index_manifest(IndexVersion::V1, None, &ztocs, &ann).is_err());
        let (v2, _) = build_index_manifest(IndexVersion::V2, None, &ztocs, &ann).unwrap();
        assert_eq!(
            parse_index_manifest(&v2, "v2").unwrap().version,
            IndexVersion::V2
        );
        assert!(parse_index_manifest(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#, "img").is_err());
    }

    /// A v2 index manifest of `ztocs` and `prefetch`, without annotations.
    fn v2_manifest(ztocs: &[ZtocDescriptor], prefetch: &[PrefetchDescriptor]) -> Vec<u8> {
        build_index_manifest_with_prefetch(
            IndexVersion::V2,
            None,
            ztocs,
            prefetch,
            &BTreeMap::new(),
        )
        .unwrap()
        .0
    }

    #[test]
    fn prefetch_artifacts_round_trip_after_the_ztocs() {
        let d = Digest::from_str(EMPTY_CONFIG_DIGEST).unwrap();
        let ztocs = vec![ZtocDescriptor {
            digest: d.clone(),
            size: 99,
            layer_digest: d.clone(),
            layer_media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            span_size: None,
            lean: None,
        }];
        let prefetch = vec![PrefetchDescriptor {
            digest: d.clone(),
            size: 60,
            layer_digest: d.clone(),
        }];
        let bytes = v2_manifest(&ztocs, &prefetch);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["layers"][1]["mediaType"], SOCI_PREFETCH_V1);
        let parsed = parse_index_manifest(&bytes, "t").unwrap();
        assert_eq!(parsed.ztocs, ztocs);
        assert_eq!(parsed.prefetch, prefetch);
    }

    #[test]
    fn lean_ztocs_come_last_and_attach_to_their_ztoc() {
        let d =
            |c: char| Digest::from_str(&format!("sha256:{}", c.to_string().repeat(64))).unwrap();
        let ztoc = |z: char, lean: Option<char>| ZtocDescriptor {
            digest: d(z),
            size: 99,
            layer_digest: d('f'),
            layer_media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            span_size: None,
            lean: lean.map(|l| LeanDescriptor {
                digest: d(l),
                size: 7,
            }),
        };
        let ztocs = vec![ztoc('a', Some('b')), ztoc('c', None)];
        let prefetch = vec![PrefetchDescriptor {
            digest: d('e'),
            size: 60,
            layer_digest: d('f'),
        }];
        let bytes = v2_manifest(&ztocs, &prefetch);
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let layers = json["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 4);
        assert_eq!(layers[3]["mediaType"], LEAN_ZTOC_MEDIA_TYPE);
        assert_eq!(
            layers[3]["annotations"][ANNOTATION_ZTOC_DIGEST],
            d('a').to_string()
        );
        let parsed = parse_index_manifest(&bytes, "t").unwrap();
        assert_eq!(parsed.ztocs, ztocs);
        // Without its zTOC digest a lean zTOC is passed over; the zTOC still serves.
        let text = String::from_utf8(bytes)
            .unwrap()
            .replace(ANNOTATION_ZTOC_DIGEST, "something.else");
        let parsed = parse_index_manifest(text.as_bytes(), "t").unwrap();
        assert_eq!(parsed.ztocs[0].lean, None);
        assert_eq!(parsed.ztocs.len(), 2);
    }
}
