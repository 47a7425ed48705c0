//! Errors of the registry client. Every error that comes from talking to a registry names the
//! operation, the registry and the repository, so a failure in CI logs says what to fix.

use std::fmt;
use thiserror::Error;

/// The operation, registry and repository an error happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// What was being done, e.g. "GET manifest latest".
    pub op: String,
    /// Registry host as the user named it (`127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    /// Repository path.
    pub repository: String,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}/{})", self.op, self.registry, self.repository)
    }
}

/// Everything that can go wrong while talking to a registry.
#[derive(Debug, Error)]
pub enum Error {
    /// The manifest (tag or digest) does not exist.
    #[error("manifest unknown: {reference}")]
    ManifestUnknown {
        /// `registry/repository:tag` or `…@digest`.
        reference: String,
    },
    /// A blob does not exist.
    #[error("{ctx}: blob unknown: {digest}")]
    BlobUnknown {
        /// Where.
        ctx: Context,
        /// The blob.
        digest: String,
    },
    /// The registry refused our credentials (or wanted some and we had none).
    #[error("{ctx}: unauthorized ({status}): {message}; credentials: {credential_source}")]
    Unauthorized {
        /// Where.
        ctx: Context,
        /// 401 or 403.
        status: u16,
        /// The registry's own message, if any.
        message: String,
        /// How credentials were looked up (flag, Docker config, helper, none).
        credential_source: String,
    },
    /// The registry answered with an unexpected status.
    #[error("{ctx}: registry answered {status}: {message}")]
    Status {
        /// Where.
        ctx: Context,
        /// HTTP status.
        status: u16,
        /// Error code/message from the body, or the status text.
        message: String,
    },
    /// The request did not get an answer (connection refused, reset, timeout), after retries.
    #[error("{ctx}: {message} (after {attempts} attempt(s))")]
    Transport {
        /// Where.
        ctx: Context,
        /// What the HTTP stack reported, with its causes.
        message: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// Content fetched by digest does not hash to that digest.
    #[error("{ctx}: content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Where.
        ctx: Context,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The registry's answer breaks the protocol (bad header, wrong range, oversized manifest…).
    #[error("{ctx}: invalid answer from registry: {reason}")]
    Protocol {
        /// Where.
        ctx: Context,
        /// What was wrong.
        reason: String,
    },
    /// Credential lookup failed (bad Docker config, failing helper…).
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
    /// Registry host configuration (`hosts.toml`) is invalid.
    #[error(transparent)]
    Hosts(#[from] crate::hosts::HostsError),
    /// TLS or HTTP client set-up failed (e.g. an unreadable CA file).
    #[error("setting up the HTTP client for {host}: {reason}")]
    ClientSetup {
        /// Host being configured.
        host: String,
        /// Why it failed.
        reason: String,
    },
    /// An OCI-level problem (bad manifest JSON, bad digest).
    #[error(transparent)]
    Oci(#[from] oci::Error),
    /// A blocking task (walking an image's manifests) died: a bug, not the registry.
    #[error("{what}: the task failed: {reason}")]
    Task {
        /// What the task was doing.
        what: String,
        /// The panic or cancellation.
        reason: String,
    },
}

/// Result with this crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the thing asked for does not exist (manifest or blob unknown, or a 404).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::ManifestUnknown { .. }
                | Error::BlobUnknown { .. }
                | Error::Status { status: 404, .. }
        )
    }
}

/// Renders an error with its chain of causes, which `reqwest` hides behind one line otherwise.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
