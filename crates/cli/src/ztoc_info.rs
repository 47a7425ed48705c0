//! `soci ztoc info` output: the same JSON keys and value meanings as AWS's soci.

use serde::Serialize;
use ztoc::{Checkpoints, Ztoc};

/// Top-level JSON object.
#[derive(Serialize)]
pub struct ZtocInfo {
    version: String,
    build_tool: String,
    size: u64,
    span_size: u64,
    num_spans: u64,
    num_files: usize,
    num_multi_span_files: usize,
    files: Option<Vec<FileInfo>>,
}

/// One TOC entry.
#[derive(Serialize)]
pub struct FileInfo {
    filename: String,
    offset: u64,
    size: u64,
    #[serde(rename = "type")]
    file_type: String,
    start_span: u64,
    end_span: u64,
}

/// Span holding uncompressed offset `offset`, computed as AWS does for this output: the last
/// checkpoint at or before it (gzip) or `offset / span_size` (tar), so a file's end span is
/// the span of its exclusive end offset.
fn span_id(z: &Ztoc, offset: u64) -> u64 {
    match &z.compression.checkpoints {
        Checkpoints::Gzip(zinfo) => (zinfo
            .checkpoints
            .partition_point(|c| c.uncompressed_offset <= offset)
            as u64)
            .saturating_sub(1),
        Checkpoints::Uncompressed { span_size, .. } => offset / span_size,
    }
}

/// Builds the info for a zTOC whose blob is `blob_size` bytes.
pub fn info(z: &Ztoc, blob_size: u64) -> ZtocInfo {
    let mut files: Vec<FileInfo> = z
        .toc
        .files
        .iter()
        .map(|f| FileInfo {
            filename: f.name.clone(),
            offset: f.uncompressed_offset,
            size: f.uncompressed_size,
            file_type: f.file_type.as_str().to_owned(),
            start_span: span_id(z, f.uncompressed_offset),
            end_span: span_id(z, f.uncompressed_offset + f.uncompressed_size),
        })
        .collect();
    files.sort_by_key(|f| f.offset);
    ZtocInfo {
        version: z.version.clone(),
        build_tool: z.build_tool_identifier.clone(),
        size: blob_size,
        span_size: z.span_size(),
        num_spans: z.span_count(),
        num_files: files.len(),
        num_multi_span_files: files.iter().filter(|f| f.start_span != f.end_span).count(),
        files: (!files.is_empty()).then_some(files),
    }
}
