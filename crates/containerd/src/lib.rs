//! containerd for soci-rs, over its gRPC API (containerd 1.6 and later).
//!
//! Modules:
//! - [`client`]: the gRPC client: content store reads and writes, content labels, image
//!   records, leases, snapshots and the diff service, with typed errors.
//! - [`labels`]: the label policy: the labels a pull puts on each layer's Prepare for a
//!   remote snapshotter (built and parsed in one place, so the puller and the snapshotter
//!   agree by construction), and containerd's garbage-collection and distribution labels.
//! - [`pull`](mod@pull): `soci image rpull` as a library: resolve an image in its registry, store its
//!   metadata in containerd, prepare each layer through a (remote) snapshotter, fetch and
//!   apply the layers it does not provide, and record the image.
//! - [`export`]: storing SOCI indexes, zTOCs and prefetch artifacts in containerd's content
//!   store, referenced so containerd's garbage collector keeps them as long as the image.

pub mod client;
pub mod export;
pub mod labels;
pub mod pull;

pub use client::{
    Client, ContentInfo, Error, Image, Result, WriteOutcome, DEFAULT_ADDRESS, DEFAULT_NAMESPACE,
};
pub use export::{export_soci_indexes, ExportError, ExportReport, ExportedIndex};
pub use labels::{LabelError, LayerLabels};
pub use pull::{chain_ids, pull, LayerEvent, LayerOutcome, PullError, PullOptions, PullReport};
