//! Errors of the zTOC crate. Every variant says what was wrong and, where it helps, what to do.

use thiserror::Error;

/// Everything that can go wrong while building, decoding or using a zTOC.
#[derive(Debug, Error)]
pub enum Error {
    /// Reading the layer stream failed.
    #[error("reading the layer: {0}")]
    Io(#[from] std::io::Error),

    /// The layer is not a gzip stream although it was declared as one.
    #[error("the layer is not gzip-compressed (it starts with {magic}); {hint}")]
    NotGzip {
        /// The first bytes, in hex.
        magic: String,
        /// What the bytes look like, and what to do.
        hint: &'static str,
    },

    /// The gzip/deflate data is corrupt.
    #[error("corrupt gzip data at compressed offset {offset}: {message}")]
    CorruptGzip {
        /// Compressed offset where inflate gave up.
        offset: u64,
        /// zlib's message.
        message: String,
    },

    /// The compressed stream ended before the gzip/deflate stream was complete.
    #[error(
        "the gzip stream is truncated: it ends at compressed byte {offset} inside a deflate stream"
    )]
    TruncatedGzip {
        /// Bytes read before the end.
        offset: u64,
    },

    /// Unexpected bytes after the last gzip member.
    #[error("unexpected data after the end of the gzip stream at compressed offset {offset} (not a gzip member)")]
    TrailingGarbage {
        /// Offset of the first unexpected byte.
        offset: u64,
    },

    /// A tar header or record could not be parsed.
    #[error("invalid tar stream near uncompressed offset {offset}: {message}")]
    Tar {
        /// Uncompressed offset of the problem (approximate: the start of the current header).
        offset: u64,
        /// What was wrong.
        message: String,
    },

    /// The tar stream ended before an entry's data did.
    #[error("tar entry {name:?} claims {size} bytes of data at offset {offset}, past the end of the layer ({end} bytes)")]
    TarEntryPastEnd {
        /// The entry's name.
        name: String,
        /// Claimed size.
        size: u64,
        /// Data offset.
        offset: u64,
        /// Actual stream length.
        end: u64,
    },

    /// GNU sparse files cannot be described with one contiguous data range.
    #[error("tar entry {name:?} is a GNU sparse file; SOCI cannot index sparse tar entries (rebuild the layer without --sparse)")]
    SparseEntry {
        /// The entry's name.
        name: String,
    },

    /// A zTOC could not be decoded.
    #[error("invalid zTOC: {0}")]
    InvalidZtoc(String),

    /// A checkpoint (zinfo) blob could not be decoded.
    #[error("invalid checkpoint data: {0}")]
    InvalidZinfo(String),

    /// A span id outside the zTOC was asked for.
    #[error("span {span} does not exist (the zTOC has {count} spans)")]
    NoSuchSpan {
        /// Requested span.
        span: u64,
        /// Number of spans.
        count: u64,
    },

    /// A byte range outside the layer was asked for.
    #[error("range {start}..{end} is outside the uncompressed layer ({size} bytes)")]
    RangeOutOfBounds {
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
        /// Uncompressed size.
        size: u64,
    },

    /// The compressed bytes given for extraction were too few or did not decode.
    #[error("extracting spans {first}..={last}: {message}")]
    Extract {
        /// First span.
        first: u64,
        /// Last span.
        last: u64,
        /// What went wrong.
        message: String,
    },

    /// A span's bytes do not match the digest recorded in the zTOC.
    #[error("span {span} failed verification: expected {expected}, got {actual}")]
    SpanDigestMismatch {
        /// Span id.
        span: u64,
        /// Digest in the zTOC.
        expected: String,
        /// Digest of the bytes given.
        actual: String,
    },

    /// A parameter was out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),

    /// A path does not lead to a regular file of the layer.
    #[error("{path:?}: {reason}")]
    NotARegularFile {
        /// The path asked for.
        path: String,
        /// Why: not in this layer, another kind of entry, or too many levels of links.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
