//! Typed errors of the indexer. Each names the thing involved and what to do about it, and
//! says whether trying again later may help ([`Error::is_transient`]).

use oci::Digest;

/// Everything that can go wrong while building or publishing SOCI indexes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the registry failed; the registry error names the operation and repository.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// An OCI-level problem: a manifest that cannot be parsed, no matching platform, …
    #[error(transparent)]
    Oci(#[from] oci::Error),
    /// The zTOC builder rejected a layer (not a tar, broken gzip, hostile headers).
    #[error("indexing layer {layer} ({media_type}): {source}; the layer cannot be indexed")]
    Ztoc {
        /// The layer.
        layer: Digest,
        /// Its media type.
        media_type: String,
        /// What the builder reported.
        source: ztoc::Error,
    },
    /// The layer bytes streamed do not hash to (or are not as long as) the layer descriptor.
    #[error(
        "the layer blob {layer} does not match its descriptor (digest {actual}, {actual_size} \
         bytes; expected {layer}, {expected_size} bytes): the image is corrupt"
    )]
    LayerMismatch {
        /// The layer as the manifest names it.
        layer: Digest,
        /// Size the manifest declares.
        expected_size: u64,
        /// Digest of the bytes that arrived.
        actual: Digest,
        /// Number of bytes that arrived.
        actual_size: u64,
    },
    /// Reading a layer's bytes broke off (connection lost and not resumable).
    #[error("reading layer {layer} from the registry: {source}")]
    LayerRead {
        /// The layer.
        layer: Digest,
        /// The cause.
        source: std::io::Error,
    },
    /// A manifest or index is not what SOCI can work with (invalid JSON, odd descriptor).
    #[error("invalid image {what}: {reason}")]
    InvalidImage {
        /// The manifest or index.
        what: String,
        /// Why.
        reason: String,
    },
    /// A settings value no index can be built with.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// A blocking task died (a panic in the zTOC builder): a bug, not the image.
    #[error("{what}: the task failed: {reason}")]
    Task {
        /// What the task was doing (the layer being indexed, the image being resolved).
        what: String,
        /// The panic or cancellation.
        reason: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when trying again later may succeed: registry transport errors, 5xx, 408, 429
    /// (see [`registry::retry::retryable_status`]) and a layer stream that broke off. False
    /// for corrupt images, 4xx refusals, unauthorized, digest mismatches.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Registry(e) => registry_transient(e),
            Error::Oci(e) => oci_transient(e),
            Error::LayerRead { source, .. } => io_transient(source),
            Error::Ztoc { source, .. } => ztoc_transient(source),
            Error::LayerMismatch { .. }
            | Error::InvalidImage { .. }
            | Error::Settings(_)
            | Error::Task { .. } => false,
        }
    }
}

fn registry_transient(e: &registry::Error) -> bool {
    match e {
        registry::Error::Transport { .. } => true,
        registry::Error::Status { status, .. } => registry::retry::retryable_status(*status),
        registry::Error::Oci(e) => oci_transient(e),
        _ => false,
    }
}

fn oci_transient(e: &oci::Error) -> bool {
    match e {
        // Registry errors reach us wrapped when oci::resolve fetched through a registry.
        oci::Error::Remote(inner) => match inner.downcast_ref::<registry::Error>() {
            Some(r) => registry_transient(r),
            None => false,
        },
        _ => false,
    }
}

/// An I/O error from a layer stream: the stream hands over registry errors (a resume that
/// ran out of attempts) inside `io::Error::other`; anything else from the network is a
/// broken connection.
fn io_transient(e: &std::io::Error) -> bool {
    match e
        .get_ref()
        .and_then(|i| i.downcast_ref::<registry::Error>())
    {
        Some(r) => registry_transient(r),
        None => true,
    }
}

/// The zTOC builder reports read errors of its input as I/O errors; only those can be
/// transient (a broken layer stream), never a format error.
fn ztoc_transient(e: &ztoc::Error) -> bool {
    match e {
        ztoc::Error::Io(io) => io_transient(io),
        _ => false,
    }
}
