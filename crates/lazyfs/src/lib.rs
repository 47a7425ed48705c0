//! The lazy layer filesystem: a container image layer served through FUSE from its zTOC,
//! fetching only the spans a reader touches.
//!
//! - [`spans::SpanManager`]: uncompressed range reads → span fetches (HTTP Range), verified,
//!   inflated and cached on local disk; background fill and prefetch.
//! - [`tree::Tree`]: the layer's inodes from the zTOC's table of contents, whiteouts in
//!   overlayfs form.
//! - [`fs::LayerFs`]: the read-only FUSE filesystem over both; [`passthrough`]: files whose
//!   data is local handed to the kernel's FUSE passthrough.
//! - [`serve`]: the one sequence that serves a remote layer (zTOC, FUSE mount, prefetch,
//!   background fetch), used by `soci mount` and the snapshotter's FUSE manager.
//! - [`image_mount`]: a whole image mounted at a directory (lazy and unpacked layers under
//!   overlayfs) with a state directory other processes read (`soci mount`, `soci unmount`).
//! - [`unpack`]: small layers without a zTOC, unpacked to a directory overlayfs can use.
//! - [`view`]: an image's layers read straight from their zTOCs, without a mount (`soci ls`,
//!   `soci cat`).
//! - [`discover`]: finding an image's SOCI index (v2 image index, referrers, tag schema).
//! - [`layer`], [`source`]: where a layer's compressed bytes come from (registry or file);
//!   [`windows`]: the checkpoint windows a lean zTOC leaves out, fetched from the full zTOC;
//!   [`prefetch_queue`]: one rank order for the prefetch requests of all layers.
//! - [`overlay`]: overlayfs and mountinfo helpers; [`readlog`]: what was read through a mount
//!   (learned prefetch lists); [`metrics`]: per-layer counters and their Prometheus text;
//!   [`error`]: the filesystem's error type.

pub mod discover;
pub mod error;
pub mod fs;
pub mod image_mount;
pub mod layer;
pub mod metrics;
pub mod overlay;
pub mod passthrough;
pub mod prefetch_queue;
pub mod readlog;
pub mod serve;
pub mod source;
pub mod spans;
pub mod tree;
pub mod unpack;
pub mod view;
pub mod windows;

pub use error::{Error, Result};
pub use fs::{CacheTtls, LayerFs, MountConfig};
pub use fuser::BackgroundSession;
pub use metrics::{prometheus_text, LayerMetrics, MetricsSnapshot};
pub use source::{Fetched, FileSource, RegistrySource, SpanSource};
pub use spans::{CacheBudget, DemandActivity, SpanConfig, SpanManager, WHOLE_FILE_BYTES};
pub use tree::Tree;
