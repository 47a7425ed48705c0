//! OCI plumbing for soci-rs: image references, OCI image layouts, manifests (OCI and Docker
//! schema 2), platform matching, SOCI index manifests, and the local content store plus the
//! metadata database that `soci index list` and `soci ztoc list` read.

pub mod db;
pub mod digest;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod platform;
pub mod prefetch;
pub mod reference;
pub mod resolve;
pub mod soci_index;
pub mod store;

pub use error::{Error, Result};
pub use oci_spec::image::{Descriptor, Digest, ImageIndex, ImageManifest, MediaType};
