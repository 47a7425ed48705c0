//! One layer through the zTOC builder, its digest and size verified as it goes by; and which
//! layers get no zTOC.

use crate::error::{Error, Result};
use oci::manifest::LayerCompression;
use oci::Descriptor;
use std::io::{BufReader, Read};

/// Why a layer gets no zTOC under `min_layer_size`, or `None` when it is indexed: the same
/// words `soci create` prints after "ztoc skipped".
pub fn layer_skip_reason(layer: &Descriptor, min_layer_size: u64) -> Option<String> {
    if let Some(reason) = LayerCompression::of(layer.media_type()).skip_reason() {
        return Some(reason);
    }
    let size = layer.size();
    (size < min_layer_size)
        .then(|| format!("size {size} is less than min-layer-size {min_layer_size}"))
}

/// Builds the zTOC of one layer from `reader` (the whole layer blob), verifying the blob
/// against `layer`'s digest and size. Whatever the builder does not need is read and hashed
/// too, so a blob with extra bytes is caught. The mismatch wins over a builder error: a
/// corrupt blob is reported as corrupt, not as a broken tar.
pub fn build_layer_ztoc<R: Read>(
    reader: R,
    layer: &Descriptor,
    options: &ztoc::BuildOptions,
) -> Result<ztoc::Ztoc> {
    let algorithm = match LayerCompression::of(layer.media_type()) {
        LayerCompression::Gzip => ztoc::CompressionAlgorithm::Gzip,
        _ => ztoc::CompressionAlgorithm::Uncompressed,
    };
    let mut reader = oci::digest::DigestingReader::new(reader);
    let built = ztoc::build_ztoc(
        BufReader::with_capacity(1 << 20, &mut reader),
        algorithm,
        options,
    );
    // Drain anything the builder did not need (it reads gzip to the end, but a plain tar may
    // carry padding after its end-of-archive marker) so the digest covers the whole blob.
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|source| Error::LayerRead {
        layer: layer.digest().clone(),
        source,
    })?;
    let (actual, actual_size) = reader.finish();
    if &actual != layer.digest() || actual_size != layer.size() {
        return Err(Error::LayerMismatch {
            layer: layer.digest().clone(),
            expected_size: layer.size(),
            actual,
            actual_size,
        });
    }
    built.map_err(|source| Error::Ztoc {
        layer: layer.digest().clone(),
        media_type: layer.media_type().to_string(),
        source,
    })
}
