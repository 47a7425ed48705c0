//! Errors of the OCI crate; each names the object involved and, where possible, the fix.

use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong in this crate.
#[derive(Debug, Error)]
pub enum Error {
    /// Fetching from elsewhere (a registry) failed; the source says where and why.
    #[error(transparent)]
    Remote(Box<dyn std::error::Error + Send + Sync>),
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The text given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A platform string could not be parsed.
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64")]
    InvalidPlatform(String),
    /// A digest string could not be parsed.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    /// Not an OCI image layout.
    #[error("{dir} is not an OCI image layout: {reason}")]
    NotALayout {
        /// The directory.
        dir: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A tag or digest is not in the layout's index.json.
    #[error("{wanted} not found in OCI layout {dir}; available: {available}")]
    NotInLayout {
        /// What was asked for.
        wanted: String,
        /// The layout.
        dir: PathBuf,
        /// Tags (or digests) that exist.
        available: String,
    },
    /// A blob is missing.
    #[error("blob {digest} not found in {location}")]
    BlobNotFound {
        /// The blob.
        digest: String,
        /// Where it was looked for.
        location: String,
    },
    /// A blob's content does not match its digest or declared size.
    #[error("blob {digest} in {location} is corrupt: {reason}")]
    BlobCorrupt {
        /// The blob.
        digest: String,
        /// Where it is.
        location: String,
        /// Digest or size mismatch details.
        reason: String,
    },
    /// A manifest or index could not be understood.
    #[error("invalid manifest {what}: {reason}")]
    InvalidManifest {
        /// Which manifest.
        what: String,
        /// Why.
        reason: String,
    },
    /// No manifest matches the requested platform.
    #[error("no image for platform {wanted} in {image}; available: {available}")]
    NoMatchingPlatform {
        /// Requested platform.
        wanted: String,
        /// The image.
        image: String,
        /// Platforms present.
        available: String,
    },
    /// Not a SOCI index manifest.
    #[error("{0} is not a SOCI index manifest")]
    NotASociIndex(String),
    /// The metadata database failed.
    #[error("metadata database {path}: {reason}")]
    Database {
        /// Database file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A record was not found in the metadata database.
    #[error("{kind} {digest} not found; `soci {kind} list` shows what exists")]
    NotFound {
        /// "index" or "ztoc".
        kind: &'static str,
        /// The digest asked for.
        digest: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds a closure mapping an I/O error to [`Error::Io`].
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}
