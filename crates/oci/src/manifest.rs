//! Parsing image manifests and indexes (OCI and Docker schema 2), and classifying layers.

use crate::error::{Error, Result};
use oci_spec::image::{ImageIndex, ImageManifest, MediaType};

/// Largest manifest or index we parse (registries commonly cap at 4 MiB too).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign (non-distributable) gzip layer media type.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker uncompressed layer media type.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// A parsed manifest: either one image or an index of images.
#[derive(Debug, Clone)]
pub enum ParsedManifest {
    /// An image manifest (OCI or Docker schema 2).
    Image(Box<ImageManifest>),
    /// An image index or Docker manifest list.
    Index(Box<ImageIndex>),
}

/// Parses manifest bytes; `what` names the manifest in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<ParsedManifest> {
    let invalid = |reason: String| Error::InvalidManifest {
        what: what.to_owned(),
        reason,
    };
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(invalid(format!(
            "{} bytes is larger than the {MAX_MANIFEST_SIZE}-byte limit",
            bytes.len()
        )));
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Err(invalid("Docker schema 1 manifests are deprecated and not supported; re-push the image with a current client".into()));
    }
    let media_type = value
        .get("mediaType")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let is_index = match media_type.as_str() {
        "application/vnd.oci.image.index.v1+json" | DOCKER_MANIFEST_LIST => true,
        "application/vnd.oci.image.manifest.v1+json" | DOCKER_MANIFEST => false,
        "" => value.get("manifests").is_some(),
        other => return Err(invalid(format!("unsupported media type {other}"))),
    };
    if is_index {
        serde_json::from_value(value)
            .map(ParsedManifest::Index)
            .map_err(|e| invalid(format!("bad image index: {e}")))
    } else {
        serde_json::from_value(value)
            .map(ParsedManifest::Image)
            .map_err(|e| invalid(format!("bad image manifest: {e}")))
    }
}

/// How a layer is compressed, judged from its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerCompression {
    /// gzip-compressed tar.
    Gzip,
    /// Plain tar.
    Uncompressed,
    /// zstd-compressed tar (not indexable).
    Zstd,
    /// Anything else (not a layer SOCI can index).
    Unknown(String),
}

impl LayerCompression {
    /// Classifies a layer media type.
    pub fn of(media_type: &MediaType) -> Self {
        let s = media_type.to_string();
        match s.as_str() {
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | DOCKER_LAYER_GZIP
            | DOCKER_FOREIGN_LAYER_GZIP => LayerCompression::Gzip,
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | DOCKER_LAYER_TAR => LayerCompression::Uncompressed,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                LayerCompression::Zstd
            }
            _ => LayerCompression::Unknown(s),
        }
    }

    /// Why a layer of this kind is skipped, or `None` if it can be indexed.
    pub fn skip_reason(&self) -> Option<String> {
        match self {
            LayerCompression::Gzip | LayerCompression::Uncompressed => None,
            LayerCompression::Zstd => {
                Some("is zstd-compressed; SOCI indexes gzip and uncompressed layers only".into())
            }
            LayerCompression::Unknown(mt) => Some(format!(
                "has media type {mt}, which is not a gzip or uncompressed tar layer"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_docker_and_rejects_schema1() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}},"layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","size":5,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}}]}}"#
        );
        let ParsedManifest::Image(m) = parse(docker.as_bytes(), "x").unwrap() else {
            panic!()
        };
        assert_eq!(
            LayerCompression::of(m.layers()[0].media_type()),
            LayerCompression::Gzip
        );
        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse(index.as_bytes(), "x").unwrap(),
            ParsedManifest::Index(_)
        ));
        let err = parse(br#"{"schemaVersion":1}"#, "x").unwrap_err();
        assert!(err.to_string().contains("schema 1"));
        assert!(parse(b"not json", "x").is_err());
        assert!(LayerCompression::of(&MediaType::ImageLayerZstd)
            .skip_reason()
            .unwrap()
            .contains("zstd"));
    }
}
