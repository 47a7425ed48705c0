//! OCI plumbing for soci-rs: image references, OCI image layouts, manifests (OCI and Docker
//! schema 2), platform matching, SOCI index manifests, and the local content store plus the
//! metadata database that `soci index list` and `soci ztoc list` read.
//!
//! Modules:
//! - [`reference`](mod@reference): image references (registry and `oci:` layouts);
//! - [`digest`]: parsing, computing and verifying digests;
//! - [`manifest`]: image manifests and indexes, and which layers SOCI can index;
//! - [`platform`]: platforms and containerd's matching;
//! - [`resolve`]: from a top descriptor to the image manifests of the platforms asked for;
//! - [`run_config`]: the process an image config describes (entrypoint, cmd, env, user);
//! - [`layout`]: reading OCI image layouts;
//! - [`soci_index`]: SOCI index manifests (v1, v2) and the v2 binding scan;
//! - [`prefetch`]: prefetch artifacts;
//! - [`store`]: the local content store; [`db`]: the metadata database;
//! - [`error`]: typed errors.

pub mod db;
pub mod digest;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod prefetch;
pub mod reference;
pub mod resolve;
pub mod run_config;
pub mod soci_index;
pub mod store;

pub use error::{Error, Result};
pub use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
