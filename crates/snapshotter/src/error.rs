//! Errors of the library's entry points: opening the state, running the daemon, running the
//! FUSE manager. The binary renders them; the library never uses `anyhow`.

use crate::manager::ManagerError;
use crate::metadata::MetadataError;
use std::path::PathBuf;

/// Why the snapshotter's state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A directory of the state could not be created.
    #[error("creating {}: {source}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The snapshot table could not be read.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// Why the FUSE manager process stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ManagerRunError {
    /// A step of starting or serving failed.
    #[error("{what}: {source}")]
    Io {
        /// The step: "creating /var/lib/…", "listening on …".
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The snapshotter's state could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The FUSE manager could not be started (or its mounts restored).
    #[error("starting the FUSE manager: {0}")]
    Manager(#[source] ManagerError),
    /// A step of starting failed (sockets, signals, the metrics endpoint).
    #[error("{what}: {source}")]
    Io {
        /// The step: "listening on …".
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("another soci-snapshotter-grpc is listening on {}; stop it first or pass another --address", socket.display())]
    SocketInUse {
        /// The gRPC socket.
        socket: PathBuf,
    },
    /// The gRPC server failed.
    #[error("serving gRPC: {0}")]
    Grpc(#[source] tonic::transport::Error),
}

impl ManagerRunError {
    /// Names the step an I/O error belongs to, for `map_err`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| ManagerRunError::Io { what, source }
    }
}

impl DaemonError {
    /// Names the step an I/O error belongs to, for `map_err`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| DaemonError::Io { what, source }
    }
}
