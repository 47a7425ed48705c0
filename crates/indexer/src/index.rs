//! Building SOCI index manifests from zTOCs: one place for the annotations and descriptor
//! order, so `soci create`, `soci convert` and the builder write the same bytes.

use crate::error::Result;
use oci::resolve::ResolvedImage;
use oci::soci_index::{self, IndexVersion, PrefetchDescriptor, ZtocDescriptor};
use oci::{Descriptor, Digest};
use std::collections::BTreeMap;

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
