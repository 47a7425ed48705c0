//! Encoding and decoding of zTOCs as flatbuffers (AWS's wire format).
//!
//! Decoding treats the bytes as untrusted: the flatbuffer is verified by planus, and every
//! value is then checked for consistency (span counts, offsets, sizes) so that later span
//! arithmetic cannot overflow or index out of bounds.

use crate::error::{Error, Result};
use crate::fbs::ztoc as fb;
use crate::model::{
    Checkpoints, CompressionInfo, FileMetadata, FileType, SpanDigest, Toc, Xattr, Ztoc,
};
use crate::zinfo::GzipZinfo;
use planus::ReadAsRoot;

/// Largest span count we accept; 2^20 spans of 4 MiB is 4 TiB of layer.
const MAX_SPANS: usize = 1 << 20;

/// Serializes a zTOC to its flatbuffers bytes.
pub fn encode(ztoc: &Ztoc) -> Vec<u8> {
    let files = ztoc
        .toc
        .files
        .iter()
        .map(|f| fb::FileMetadata {
            name: Some(f.name.clone()),
            type_: Some(f.file_type.as_str().to_owned()),
            uncompressed_offset: f.uncompressed_offset as i64,
            uncompressed_size: f.uncompressed_size as i64,
            linkname: non_empty(&f.linkname),
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            uname: non_empty(&f.uname),
            gname: non_empty(&f.gname),
            mod_time: Some(f.mod_time.clone()),
            devmajor: f.devmajor,
            devminor: f.devminor,
            xattrs: if f.xattrs.is_empty() {
                None
            } else {
                Some(
                    f.xattrs
                        .iter()
                        .map(|x| fb::Xattr {
                            key: Some(x.key.clone()),
                            value: Some(x.value.clone()),
                        })
                        .collect(),
                )
            },
        })
        .collect();
    let (algorithm, checkpoints) = match &ztoc.compression.checkpoints {
        Checkpoints::Gzip(z) => (fb::CompressionAlgorithm::Gzip, z.encode()),
        Checkpoints::Uncompressed { span_size, size } => (
            fb::CompressionAlgorithm::Uncompressed,
            crate::uncompressed_checkpoints::encode(*span_size, *size),
        ),
    };
    let value = fb::Ztoc {
        version: Some(ztoc.version.clone()),
        build_tool_identifier: Some(ztoc.build_tool_identifier.clone()),
        compressed_archive_size: ztoc.compressed_archive_size as i64,
        uncompressed_archive_size: ztoc.uncompressed_archive_size as i64,
        toc: Some(Box::new(fb::Toc {
            metadata: Some(files),
        })),
        compression_info: Some(Box::new(fb::CompressionInfo {
            compression_algorithm: algorithm,
            max_span_id: ztoc.compression.span_digests.len() as i32 - 1,
            span_digests: Some(
                ztoc.compression
                    .span_digests
                    .iter()
                    .map(|d| d.as_str().to_owned())
                    .collect(),
            ),
            checkpoints: Some(checkpoints),
        })),
    };
    let mut builder = planus::Builder::new();
    builder.finish(&value, None).to_vec()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// Parses and validates a zTOC.
pub fn decode(bytes: &[u8]) -> Result<Ztoc> {
    decode_with(bytes, true)
}

/// Decodes a zTOC as [`decode`] does, but leaves the gzip checkpoints' windows empty (see
/// [`GzipZinfo::decode_without_windows`]): for a reader that gets them elsewhere.
pub fn decode_without_windows(bytes: &[u8]) -> Result<Ztoc> {
    decode_with(bytes, false)
}

fn decode_with(bytes: &[u8], windows: bool) -> Result<Ztoc> {
    let root = fb::ZtocRef::read_as_root(bytes).map_err(invalid)?;
    let bad = |m: String| Error::InvalidZtoc(m);

    let compressed_archive_size = non_negative(
        root.compressed_archive_size().map_err(invalid)?,
        "compressed_archive_size",
    )?;
    let uncompressed_archive_size = non_negative(
        root.uncompressed_archive_size().map_err(invalid)?,
        "uncompressed_archive_size",
    )?;
    // Read in place, not converted to owned values: the checkpoints blob is most of a zTOC.
    let info = root
        .compression_info()
        .map_err(invalid)?
        .ok_or_else(|| bad("compression_info is missing".into()))?;
    let digests = match info.span_digests().map_err(invalid)? {
        Some(v) => v
            .iter()
            .map(|d| d.map_err(invalid))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    if digests.is_empty() || digests.len() > MAX_SPANS {
        return Err(bad(format!("{} span digests", digests.len())));
    }
    let max_span_id = info.max_span_id().map_err(invalid)?;
    if i64::from(max_span_id) + 1 != digests.len() as i64 {
        return Err(bad(format!(
            "max_span_id {max_span_id} does not match {} span digests",
            digests.len()
        )));
    }
    let span_digests = digests
        .iter()
        .map(|d| SpanDigest::parse(d))
        .collect::<Result<Vec<_>>>()?;
    let raw_checkpoints = info.checkpoints().map_err(invalid)?.unwrap_or_default();
    let checkpoints = match info.compression_algorithm().map_err(invalid)? {
        fb::CompressionAlgorithm::Gzip => {
            // A v1 blob omits checkpoint 0; AWS's readers place it right after a minimal
            // 10-byte gzip header (v1 builders did not handle optional header fields).
            let (zinfo, _) = if windows {
                GzipZinfo::decode(raw_checkpoints, 10)?
            } else {
                GzipZinfo::decode_without_windows(raw_checkpoints, 10)?
            };
            if zinfo.checkpoints.len() != span_digests.len() {
                return Err(bad(format!(
                    "{} checkpoints but {} span digests",
                    zinfo.checkpoints.len(),
                    span_digests.len()
                )));
            }
            if let Some(last) = zinfo.checkpoints.last() {
                if last.compressed_offset > compressed_archive_size
                    || last.uncompressed_offset > uncompressed_archive_size
                {
                    return Err(bad("a checkpoint lies past the end of the layer".into()));
                }
            }
            Checkpoints::Gzip(zinfo)
        }
        fb::CompressionAlgorithm::Uncompressed => {
            let (span_size, size) = crate::uncompressed_checkpoints::decode(raw_checkpoints)?;
            let expected = size.div_ceil(span_size).max(1);
            if expected != span_digests.len() as u64 {
                return Err(bad(format!(
                    "{} span digests for {size} bytes in spans of {span_size}",
                    span_digests.len()
                )));
            }
            if uncompressed_archive_size > size {
                return Err(bad("the tar stream is longer than the blob".into()));
            }
            Checkpoints::Uncompressed { span_size, size }
        }
        other => return Err(bad(format!("unknown compression algorithm {other:?}"))),
    };

    let toc = match root.toc().map_err(invalid)? {
        Some(t) => Some(fb::Toc::try_from(t).map_err(invalid)?),
        None => None,
    };
    let metadata = toc.and_then(|t| t.metadata).unwrap_or_default();
    let mut files = Vec::with_capacity(metadata.len());
    for (i, m) in metadata.into_iter().enumerate() {
        let type_name = m.type_.unwrap_or_default();
        let file_type = FileType::parse(&type_name)
            .ok_or_else(|| bad(format!("file {i} has unknown type {type_name:?}")))?;
        let uncompressed_offset = non_negative(m.uncompressed_offset, "uncompressed_offset")?;
        let uncompressed_size = non_negative(m.uncompressed_size, "uncompressed_size")?;
        if uncompressed_offset
            .checked_add(uncompressed_size)
            .is_none_or(|end| end > uncompressed_archive_size)
        {
            return Err(bad(format!(
                "file {i} ({:?}) extends past the end of the layer",
                m.name.unwrap_or_default()
            )));
        }
        files.push(FileMetadata {
            name: m.name.unwrap_or_default(),
            file_type,
            uncompressed_offset,
            uncompressed_size,
            linkname: m.linkname.unwrap_or_default(),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            uname: m.uname.unwrap_or_default(),
            gname: m.gname.unwrap_or_default(),
            mod_time: m.mod_time.unwrap_or_default(),
            devmajor: m.devmajor,
            devminor: m.devminor,
            xattrs: m
                .xattrs
                .unwrap_or_default()
                .into_iter()
                .map(|x| Xattr {
                    key: x.key.unwrap_or_default(),
                    value: x.value.unwrap_or_default(),
                })
                .collect(),
        });
    }
    Ok(Ztoc {
        version: root
            .version()
            .map_err(invalid)?
            .unwrap_or_default()
            .to_owned(),
        build_tool_identifier: root
            .build_tool_identifier()
            .map_err(invalid)?
            .unwrap_or_default()
            .to_owned(),
        compressed_archive_size,
        uncompressed_archive_size,
        toc: Toc { files },
        compression: CompressionInfo {
            checkpoints,
            span_digests,
        },
    })
}

fn invalid(e: planus::Error) -> Error {
    Error::InvalidZtoc(format!("not a valid zTOC flatbuffer: {e}"))
}

fn non_negative(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::InvalidZtoc(format!("{what} is negative ({v})")))
}
