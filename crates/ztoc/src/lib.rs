//! SOCI zTOCs: build, encode, decode and use them.
//!
//! A zTOC describes one container image layer: the table of contents of its tar stream (every
//! file with the offset of its data) and, for gzip layers, checkpoints every few MiB of
//! uncompressed data from which decompression can resume. With it, a reader fetches and
//! inflates only the spans that hold the bytes it needs.
//!
//! This crate is pure: it reads from `Read`/`Seek` values and byte slices and does no network
//! or file-system work of its own.

pub mod build;
pub mod codec;
pub mod error;
pub mod extract;
#[allow(clippy::all, missing_docs, unused_imports, dead_code)]
#[rustfmt::skip]
mod fbs;
#[allow(clippy::all, missing_docs, unused_imports, dead_code)]
#[rustfmt::skip]
mod fbs_tar;
mod gzip;
mod inflate;
pub mod model;
pub mod sha256;
pub mod toc;
mod uncompressed_checkpoints;
pub mod zinfo;

pub use build::{build_ztoc, BuildOptions, DEFAULT_BUILD_TOOL};
pub use codec::{decode, encode};
pub use error::{Error, Result};
pub use extract::{extract_range, read_file, read_range, verify_spans};
pub use gzip::{GzipCheckpointer, GzipLayerIndex};
pub use inflate::WINDOW_SIZE;
pub use model::{
    Checkpoints, CompressionAlgorithm, CompressionInfo, FileMetadata, FileType, SpanDigest, SpanId,
    Toc, Xattr, Ztoc, DEFAULT_SPAN_SIZE, ZTOC_VERSION,
};
