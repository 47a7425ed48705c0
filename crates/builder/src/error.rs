//! Errors of the builder library. Each names the thing (file and key, database, job) and, where
//! there is one, the fix.

use std::path::PathBuf;

/// Everything the builder library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is unreadable or invalid.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// The job database failed.
    #[error("job database {}: {reason}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A registry request failed (boxed: registry errors are large and rare).
    #[error(transparent)]
    Registry(Box<registry::Error>),
    /// Building or publishing an index failed.
    #[error(transparent)]
    Indexer(Box<indexer::Error>),
    /// Talking to a running builder service failed.
    #[error("builder service at {url}: {reason}")]
    Service {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A request to queue a job is invalid.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<registry::Error> for Error {
    fn from(e: registry::Error) -> Self {
        Error::Registry(Box::new(e))
    }
}

impl From<indexer::Error> for Error {
    fn from(e: indexer::Error) -> Self {
        Error::Indexer(Box::new(e))
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
