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
    #[error("reading layer {layer}: {source}")]
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
    /// containerd failed (reading an image from its content store, storing indexes there).
    #[error(transparent)]
    Containerd(#[from] containerd::Error),
    /// Storing indexes in containerd's content store failed.
    #[error(transparent)]
    Export(#[from] containerd::ExportError),
    /// Several layers failed to index; each error names its layer.
    #[error("{} layers failed:\n  {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Layers(Vec<Error>),
    /// Every layer of an image was skipped (too small, or not gzip or tar).
    #[error(
        "no zTOCs were created for {image}: every layer was skipped; lower --min-layer-size to \
         index small layers"
    )]
    NothingIndexed {
        /// The image (reference and platform).
        image: String,
    },
    /// The image to convert is converted already.
    #[error("it is already a SOCI-enabled image ({0}); convert the original image instead")]
    AlreadySociEnabled(String),
    /// A blob recorded locally cannot be read (from the local store or containerd's).
    #[error("{0}")]
    Store(String),
    /// A push that would publish an index for another image than the registry holds.
    #[error("{0}")]
    Refused(String),
    /// The destination of a conversion cannot take the converted image.
    #[error("{0}")]
    Destination(String),
    /// Reading or writing a local file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, to which path.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
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
            // Retrying helps only when every layer failed for a passing reason.
            Error::Layers(all) => all.iter().all(Error::is_transient),
            Error::Containerd(e) => matches!(
                e,
                containerd::Error::Unavailable { .. } | containerd::Error::Connect { .. }
            ),
            Error::LayerMismatch { .. }
            | Error::InvalidImage { .. }
            | Error::Settings(_)
            | Error::Destination(_)
            | Error::Store(_)
            | Error::Export(_)
            | Error::Refused(_)
            | Error::NothingIndexed { .. }
            | Error::AlreadySociEnabled(_)
            | Error::Io { .. }
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
        // A source's own error, handed through the synchronous walk of oci::resolve.
        oci::Error::Remote(inner) => {
            if let Some(r) = inner.downcast_ref::<registry::Error>() {
                registry_transient(r)
            } else if let Some(i) = inner.downcast_ref::<Error>() {
                i.is_transient()
            } else {
                false
            }
        }
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
