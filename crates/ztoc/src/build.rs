//! Builds a zTOC from a layer in one pass over its bytes.

use crate::error::{Error, Result};
use crate::gzip::GzipCheckpointer;
use crate::model::{
    Checkpoints, CompressionAlgorithm, CompressionInfo, SpanDigest, Ztoc, DEFAULT_SPAN_SIZE,
    ZTOC_VERSION,
};
use crate::placement::Placement;
use crate::sha256::Sha256;
use crate::toc::read_toc;
use std::io::{self, Read};

/// Build tool identifier written into zTOCs and index annotations by default.
pub const DEFAULT_BUILD_TOOL: &str = concat!("soci-rs v", env!("CARGO_PKG_VERSION"));

/// Options for [`build_ztoc`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Uncompressed bytes per span (checkpoint distance); with a non-uniform placement, the
    /// longest a span may be.
    pub span_size: u64,
    /// Where gzip checkpoints go (plain-tar layers always get fixed spans of `span_size`).
    pub placement: Placement,
    /// Free text stored as `build_tool_identifier`.
    pub build_tool_identifier: String,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            span_size: DEFAULT_SPAN_SIZE,
            placement: Placement::Uniform,
            build_tool_identifier: DEFAULT_BUILD_TOOL.to_owned(),
        }
    }
}

/// Reads a layer blob once, from start to end, and returns its zTOC.
///
/// For gzip the tar walker reads the uncompressed stream straight out of the checkpoint
/// builder, which hashes spans as the compressed bytes pass; nothing is read twice.
pub fn build_ztoc<R: Read>(
    layer: R,
    algorithm: CompressionAlgorithm,
    options: &BuildOptions,
) -> Result<Ztoc> {
    if options.span_size == 0 {
        return Err(Error::InvalidParameter("span size must be positive".into()));
    }
    let (toc, compressed_size, uncompressed_size, compression) = match algorithm {
        CompressionAlgorithm::Gzip => {
            let mut reader =
                GzipCheckpointer::with_placement(layer, options.span_size, &options.placement)?;
            let toc = read_toc(&mut reader)?;
            let index = reader.finish()?;
            (
                toc,
                index.compressed_size,
                index.uncompressed_size,
                CompressionInfo {
                    checkpoints: Checkpoints::Gzip(index.zinfo),
                    span_digests: index.span_digests,
                },
            )
        }
        CompressionAlgorithm::Uncompressed => {
            let mut reader = PlainSpanHasher::new(layer, options.span_size);
            let toc = read_toc(&mut reader)?;
            io::copy(&mut reader, &mut io::sink())?;
            let (size, span_digests) = reader.finish();
            (
                toc,
                size,
                size,
                CompressionInfo {
                    checkpoints: Checkpoints::Uncompressed {
                        span_size: options.span_size,
                        size,
                    },
                    span_digests,
                },
            )
        }
    };
    Ok(Ztoc {
        version: ZTOC_VERSION.to_owned(),
        build_tool_identifier: options.build_tool_identifier.clone(),
        compressed_archive_size: compressed_size,
        uncompressed_archive_size: uncompressed_size,
        toc,
        compression,
    })
}

/// Passes a plain tar through while hashing every `span_size` bytes as one span.
struct PlainSpanHasher<R> {
    inner: R,
    span_size: u64,
    in_span: u64,
    total: u64,
    hasher: Sha256,
    digests: Vec<SpanDigest>,
}

impl<R: Read> PlainSpanHasher<R> {
    fn new(inner: R, span_size: u64) -> Self {
        Self {
            inner,
            span_size,
            in_span: 0,
            total: 0,
            hasher: Sha256::new(),
            digests: Vec::new(),
        }
    }

    /// Total size and span digests; an empty stream still has one (empty) span.
    fn finish(mut self) -> (u64, Vec<SpanDigest>) {
        if self.in_span > 0 || self.digests.is_empty() {
            self.digests.push(SpanDigest::from_hasher(self.hasher));
        }
        (self.total, self.digests)
    }
}

impl<R: Read> Read for PlainSpanHasher<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let room = (self.span_size - self.in_span).min(rest.len() as u64) as usize;
            self.hasher.update(&rest[..room]);
            self.in_span += room as u64;
            rest = &rest[room..];
            if self.in_span == self.span_size {
                let done = std::mem::take(&mut self.hasher);
                self.digests.push(SpanDigest::from_hasher(done));
                self.in_span = 0;
            }
        }
        self.total += n as u64;
        Ok(n)
    }
}
