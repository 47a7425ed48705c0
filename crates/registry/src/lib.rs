//! OCI distribution client for soci-rs: authentication (basic, Docker config and credential
//! helpers, bearer tokens), TLS and plain HTTP, ranged blob reads, pushes with cross-repository
//! mounts, the referrers API with the tag-schema fallback, retries with backoff, and containerd
//! `hosts.toml` mirrors.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod error;
pub mod hosts;
pub mod notifications;
pub mod retry;

pub use client::{
    BlobPush, BlobStream, Client, ClientConfig, Manifest, PutManifest, RangeReply, Referrers,
    ReferrersSource, Repository,
};
pub use error::{error_chain, Context, Error, Result};
