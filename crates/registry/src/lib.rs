//! OCI distribution client for soci-rs: authentication (basic, Docker config and credential
//! helpers, bearer tokens), TLS and plain HTTP, ranged blob reads, pushes with cross-repository
//! mounts, the referrers API with the tag-schema fallback, retries with backoff, and containerd
//! `hosts.toml` mirrors.
//!
//! Modules:
//! - [`client`]: [`Client`] and [`Repository`], every registry operation;
//! - [`auth`]: the `WWW-Authenticate` challenge and bearer token flow;
//! - [`credentials`]: `--user`, Docker's `config.json` and credential helpers;
//! - [`keychain`]: credentials handed over at run time (CRI pulls), by repository;
//! - [`hosts`]: containerd's `hosts.toml` (mirrors, per-host TLS);
//! - [`retry`]: the retry policy and which answers are worth retrying;
//! - [`images`]: a reference to the image manifests of the platforms asked for;
//! - [`blocking`]: blocking readers over blob streams and Range reads, for synchronous code;
//! - [`notifications`]: distribution's webhook envelopes (parsed, never trusted);
//! - [`error`]: typed errors naming the operation, registry and repository.

pub mod auth;
pub mod blocking;
pub mod client;
pub mod credentials;
pub mod error;
pub mod hosts;
pub mod images;
pub mod keychain;
pub mod notifications;
pub mod retry;

pub use client::{
    BlobPush, BlobStream, Client, ClientConfig, Manifest, PutManifest, RangeReply, Referrers,
    ReferrersSource, Repository,
};
pub use error::{error_chain, Context, Error, Result};
pub use keychain::{Keychain, KeychainEntry};
