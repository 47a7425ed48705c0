//! The zTOC data model, as plain Rust values.
//!
//! These mirror the flatbuffers tables of AWS's zTOC format (see `fbs/ztoc.fbs`); encoding and
//! decoding live in [`crate::codec`]. Span geometry (which compressed and uncompressed bytes a
//! span covers) lives here because every consumer needs it.

use crate::error::{Error, Result};
use crate::sha256::Sha256;
use crate::zinfo::GzipZinfo;
use std::fmt;
use std::ops::Range;

/// zTOC format version written by this crate.
pub const ZTOC_VERSION: &str = "0.9";

/// AWS's default span size: 4 MiB of uncompressed data between checkpoints (the build
/// options' default here; `soci` builds with `indexer::DEFAULT_SPAN_SIZE`).
pub const DEFAULT_SPAN_SIZE: u64 = 1 << 22;

/// A zTOC: the table of contents of one layer plus what is needed to decompress any span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ztoc {
    /// Format version ("0.9").
    pub version: String,
    /// Free text naming the tool that built the zTOC.
    pub build_tool_identifier: String,
    /// Size of the layer blob as stored in the registry.
    pub compressed_archive_size: u64,
    /// Size of the uncompressed tar stream.
    pub uncompressed_archive_size: u64,
    /// The files of the layer.
    pub toc: Toc,
    /// Compression algorithm, checkpoints and span digests.
    pub compression: CompressionInfo,
}

/// The table of contents: every tar entry that is a file system object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toc {
    /// Entries in tar order.
    pub files: Vec<FileMetadata>,
}

/// The kind of file system object a tar entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file (`reg`).
    Regular,
    /// Directory (`dir`).
    Directory,
    /// Symbolic link (`symlink`).
    Symlink,
    /// Hard link to an earlier entry (`hardlink`).
    Hardlink,
    /// Character device (`char`).
    Char,
    /// Block device (`block`).
    Block,
    /// Named pipe (`fifo`).
    Fifo,
}

impl FileType {
    /// The string stored in the zTOC.
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::Regular => "reg",
            FileType::Directory => "dir",
            FileType::Symlink => "symlink",
            FileType::Hardlink => "hardlink",
            FileType::Char => "char",
            FileType::Block => "block",
            FileType::Fifo => "fifo",
        }
    }

    /// Parses the string stored in the zTOC.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reg" => FileType::Regular,
            "dir" => FileType::Directory,
            "symlink" => FileType::Symlink,
            "hardlink" => FileType::Hardlink,
            "char" => FileType::Char,
            "block" => FileType::Block,
            "fifo" => FileType::Fifo,
            _ => return None,
        })
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One PAX record kept verbatim (extended attributes and other vendor records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// The PAX key, e.g. `SCHILY.xattr.user.foo`.
    pub key: String,
    /// The value.
    pub value: String,
}

/// Metadata of one file in the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    /// Normalized path inside the layer (no leading `/` or `./`, no `..`).
    pub name: String,
    /// Kind of object.
    pub file_type: FileType,
    /// Offset of the file's data in the uncompressed tar stream.
    pub uncompressed_offset: u64,
    /// Size of the data (0 for everything but regular files).
    pub uncompressed_size: u64,
    /// Target of a symlink or hardlink.
    pub linkname: String,
    /// Permission and mode bits as in the tar header.
    pub mode: i64,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name.
    pub uname: String,
    /// Group name.
    pub gname: String,
    /// Modification time, RFC 3339 with nanoseconds.
    pub mod_time: String,
    /// Device major number.
    pub devmajor: i64,
    /// Device minor number.
    pub devminor: i64,
    /// PAX records kept verbatim.
    pub xattrs: Vec<Xattr>,
}

impl FileMetadata {
    /// An entry `name` of kind `file_type` with no data, no owner and no times: the rest is
    /// filled in by who builds it (`FileMetadata { uncompressed_size: 10, ..new(..) }`).
    pub fn new(name: &str, file_type: FileType) -> Self {
        FileMetadata {
            name: name.to_owned(),
            file_type,
            uncompressed_offset: 0,
            uncompressed_size: 0,
            linkname: String::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mod_time: String::new(),
            devmajor: 0,
            devminor: 0,
            xattrs: Vec::new(),
        }
    }
}

/// How the layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionAlgorithm {
    /// gzip (one or more members).
    Gzip,
    /// A plain tar.
    Uncompressed,
}

impl CompressionAlgorithm {
    /// Lower-case name used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CompressionAlgorithm::Gzip => "gzip",
            CompressionAlgorithm::Uncompressed => "uncompressed",
        }
    }
}

/// The checkpoints that let a reader start decompressing at any span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoints {
    /// gzip checkpoints with 32 KiB windows.
    Gzip(GzipZinfo),
    /// Plain tar: spans are fixed-size byte ranges of the blob.
    Uncompressed {
        /// Span size in bytes.
        span_size: u64,
        /// Size of the blob the spans cut up (may exceed `uncompressed_archive_size`, which
        /// stops at the tar end-of-archive marker in AWS-built zTOCs).
        size: u64,
    },
}

/// `sha256:<hex>` of a span's compressed bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpanDigest(String);

impl SpanDigest {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(bytes);
        Self::from_hasher(h)
    }

    /// Finishes a running SHA-256.
    pub fn from_hasher(hasher: Sha256) -> Self {
        SpanDigest(format!("sha256:{}", hex::encode(hasher.finalize())))
    }

    /// Wraps a digest string read from a zTOC, checking its form.
    pub fn parse(s: &str) -> Result<Self> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| Error::InvalidZtoc(format!("span digest {s:?} is not sha256:<hex>")))?;
        if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidZtoc(format!(
                "span digest {s:?} is not sha256:<64 hex digits>"
            )));
        }
        Ok(SpanDigest(s.to_ascii_lowercase()))
    }

    /// The `sha256:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpanDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compression algorithm, checkpoints and span digests of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionInfo {
    /// Checkpoints (which also determine the algorithm).
    pub checkpoints: Checkpoints,
    /// One digest per span; `max_span_id` in the encoded form is `len() - 1`.
    pub span_digests: Vec<SpanDigest>,
}

impl CompressionInfo {
    /// The compression algorithm.
    pub fn algorithm(&self) -> CompressionAlgorithm {
        match self.checkpoints {
            Checkpoints::Gzip(_) => CompressionAlgorithm::Gzip,
            Checkpoints::Uncompressed { .. } => CompressionAlgorithm::Uncompressed,
        }
    }
}

/// Index of a span within a layer.
pub type SpanId = u64;

/// The checkpoint span `span` resumes from. The span count comes from the span digests, so a
/// zTOC value with fewer checkpoints than digests (decoding refuses one; a value built by hand
/// may hold one) is an error here, not a panic.
pub(crate) fn checkpoint(z: &GzipZinfo, span: SpanId) -> Result<&crate::zinfo::Checkpoint> {
    usize::try_from(span)
        .ok()
        .and_then(|i| z.checkpoints.get(i))
        .ok_or_else(|| {
            Error::InvalidZtoc(format!(
                "span {span} has no checkpoint ({} checkpoints)",
                z.checkpoints.len()
            ))
        })
}

impl Ztoc {
    /// Number of spans.
    pub fn span_count(&self) -> u64 {
        self.compression.span_digests.len() as u64
    }

    /// Uncompressed span size the zTOC was built with.
    pub fn span_size(&self) -> u64 {
        match &self.compression.checkpoints {
            Checkpoints::Gzip(z) => z.span_size,
            Checkpoints::Uncompressed { span_size, .. } => *span_size,
        }
    }

    fn check_span(&self, span: SpanId) -> Result<()> {
        if span < self.span_count() {
            Ok(())
        } else {
            Err(Error::NoSuchSpan {
                span,
                count: self.span_count(),
            })
        }
    }

    /// The uncompressed bytes `span` decodes to.
    pub fn span_uncompressed_range(&self, span: SpanId) -> Result<Range<u64>> {
        self.check_span(span)?;
        let end_of_layer = self.uncompressed_archive_size;
        Ok(match &self.compression.checkpoints {
            Checkpoints::Gzip(z) => {
                let start = checkpoint(z, span)?.uncompressed_offset;
                let end = z
                    .checkpoints
                    .get(span as usize + 1)
                    .map_or(end_of_layer, |c| c.uncompressed_offset);
                start..end
            }
            Checkpoints::Uncompressed { span_size, size } => {
                let start = span.checked_mul(*span_size).ok_or_else(|| {
                    Error::InvalidZtoc(format!("span {span} of {span_size} bytes overflows"))
                })?;
                start..start.saturating_add(*span_size).min(*size)
            }
        })
    }

    /// The compressed bytes of `span` in the layer blob: what is fetched and hashed.
    ///
    /// For gzip, a span whose checkpoint has `bits != 0` starts one byte early (that byte holds
    /// the first bits of the span), and every span ends at the next checkpoint's input offset,
    /// so neighbouring spans may share one byte.
    pub fn span_compressed_range(&self, span: SpanId) -> Result<Range<u64>> {
        self.check_span(span)?;
        Ok(match &self.compression.checkpoints {
            Checkpoints::Gzip(z) => {
                let start = checkpoint(z, span)?.span_start();
                let end = z
                    .checkpoints
                    .get(span as usize + 1)
                    .map_or(self.compressed_archive_size, |c| c.compressed_offset);
                start..end
            }
            Checkpoints::Uncompressed { .. } => self.span_uncompressed_range(span)?,
        })
    }

    /// The span holding uncompressed offset `offset` (which must be inside the layer).
    pub fn span_of(&self, offset: u64) -> Result<SpanId> {
        if offset >= self.uncompressed_archive_size {
            return Err(Error::RangeOutOfBounds {
                start: offset,
                end: offset + 1,
                size: self.uncompressed_archive_size,
            });
        }
        Ok(match &self.compression.checkpoints {
            Checkpoints::Gzip(z) => {
                let after = z
                    .checkpoints
                    .partition_point(|c| c.uncompressed_offset <= offset);
                (after.saturating_sub(1) as u64).min(self.span_count().saturating_sub(1))
            }
            Checkpoints::Uncompressed { span_size, .. } => {
                (offset / (*span_size).max(1)).min(self.span_count().saturating_sub(1))
            }
        })
    }

    /// The spans `[first, last]` that hold the uncompressed bytes `range` (non-empty).
    pub fn spans_for_range(&self, range: &Range<u64>) -> Result<(SpanId, SpanId)> {
        if range.start >= range.end || range.end > self.uncompressed_archive_size {
            return Err(Error::RangeOutOfBounds {
                start: range.start,
                end: range.end,
                size: self.uncompressed_archive_size,
            });
        }
        Ok((self.span_of(range.start)?, self.span_of(range.end - 1)?))
    }

    /// Finds a file by its normalized name (leading `/` or `./` in `path` are ignored).
    pub fn find_file(&self, path: &str) -> Option<&FileMetadata> {
        let wanted = crate::toc::normalize_name(path);
        self.toc.files.iter().rev().find(|f| f.name == wanted)
    }

    /// The regular file `path` names, following hard and symbolic links within the layer
    /// (at most 40, as the kernel does), like AWS's `ztoc get-file`.
    pub fn resolve_regular_file(&self, path: &str) -> Result<&FileMetadata> {
        let fail = |current: &str, reason: String| Error::NotARegularFile {
            path: current.to_owned(),
            reason,
        };
        let mut current = path.to_owned();
        for _ in 0..40 {
            let f = self
                .find_file(&current)
                .ok_or_else(|| fail(&current, "is not in this layer".into()))?;
            current = match f.file_type {
                FileType::Regular => return Ok(f),
                FileType::Hardlink => f.linkname.clone(),
                FileType::Symlink if f.linkname.starts_with('/') => f.linkname.clone(),
                FileType::Symlink => {
                    let parent = f.name.rsplit_once('/').map_or("", |(p, _)| p);
                    format!("{parent}/{}", f.linkname)
                }
                other => return Err(fail(&current, format!("is a {other}, not a regular file"))),
            };
        }
        Err(fail(path, "too many levels of links".into()))
    }

    /// Checks that a span's compressed bytes match the digest recorded for it.
    pub fn verify_span(&self, span: SpanId, compressed: &[u8]) -> Result<()> {
        self.check_span(span)?;
        let expected =
            self.compression
                .span_digests
                .get(span as usize)
                .ok_or(Error::NoSuchSpan {
                    span,
                    count: self.span_count(),
                })?;
        let actual = SpanDigest::of(compressed);
        if &actual == expected {
            Ok(())
        } else {
            Err(Error::SpanDigestMismatch {
                span,
                expected: expected.to_string(),
                actual: actual.to_string(),
            })
        }
    }
}
