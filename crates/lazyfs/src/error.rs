//! Errors of the lazy filesystem.

use ztoc::SpanId;

/// Why bytes of a lazily loaded layer could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The remote (or local) blob could not be read.
    #[error("layer {layer}: fetching compressed bytes {start}-{end} (spans {first}-{last}) failed: {message}")]
    Fetch {
        /// Layer digest.
        layer: String,
        /// First span of the request.
        first: SpanId,
        /// Last span of the request.
        last: SpanId,
        /// Compressed start offset.
        start: u64,
        /// Compressed end offset (exclusive).
        end: u64,
        /// The underlying error, rendered.
        message: String,
    },
    /// Fetched span bytes did not match the digest recorded in the zTOC.
    #[error("layer {layer}: span {span} failed verification: {message}")]
    Verification {
        /// Layer digest.
        layer: String,
        /// The span.
        span: SpanId,
        /// Expected and actual digests.
        message: String,
    },
    /// Verified bytes could not be decompressed (a zTOC that does not match its layer).
    #[error("layer {layer}: span {span} could not be decompressed: {message}")]
    Inflate {
        /// Layer digest.
        layer: String,
        /// The span.
        span: SpanId,
        /// What zlib said.
        message: String,
    },
    /// The whole-blob download used when the registry ignores ranges failed.
    #[error("layer {layer}: downloading the whole blob failed: {message}")]
    WholeBlob {
        /// Layer digest.
        layer: String,
        /// What went wrong.
        message: String,
    },
    /// The local span cache could not be read or written.
    #[error("layer {layer}: span cache {path}: {source}")]
    Cache {
        /// Layer digest.
        layer: String,
        /// File involved.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A zTOC inconsistency (offsets outside the layer and the like).
    #[error("layer {layer}: {source}")]
    Ztoc {
        /// Layer digest.
        layer: String,
        /// The zTOC error.
        #[source]
        source: ztoc::Error,
    },
    /// A fetch task ended without reporting (runtime shutting down).
    #[error("layer {layer}: fetch of spans {first}-{last} was abandoned")]
    Abandoned {
        /// Layer digest.
        layer: String,
        /// First span.
        first: SpanId,
        /// Last span.
        last: SpanId,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
