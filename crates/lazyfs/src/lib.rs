//! The lazy layer filesystem: a container image layer served through FUSE from its zTOC,
//! fetching only the spans a reader touches.
//!
//! - [`spans::SpanManager`]: uncompressed range reads → span fetches (HTTP Range), verified,
//!   inflated and cached on local disk; background fill and prefetch.
//! - [`tree::Tree`]: the layer's inodes from the zTOC's table of contents, whiteouts in
//!   overlayfs form.
//! - [`fs::LayerFs`]: the read-only FUSE filesystem over both.
//! - [`serve`]: the one sequence that serves a remote layer (zTOC, FUSE mount, prefetch,
//!   background fetch), used by `soci mount` and the snapshotter's FUSE manager.
//! - [`unpack`]: small layers without a zTOC, unpacked to a directory overlayfs can use.

pub mod discover;
pub mod error;
pub mod fs;
pub mod layer;
pub mod metrics;
pub mod overlay;
pub mod readlog;
pub mod serve;
pub mod source;
pub mod spans;
pub mod tree;
pub mod unpack;
pub mod view;

pub use error::{Error, Result};
pub use fs::{CacheTtls, LayerFs, MountConfig};
pub use fuser::BackgroundSession;
pub use metrics::{prometheus_text, LayerMetrics, MetricsSnapshot};
pub use source::{Fetched, FileSource, RegistrySource, SpanSource};
pub use spans::{CacheBudget, DemandActivity, SpanConfig, SpanManager};
pub use tree::Tree;
