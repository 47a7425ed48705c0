//! Extracting uncompressed bytes from a layer through its zTOC, one span range at a time.

use crate::error::{Error, Result};
use crate::inflate::{Inflater, Status, GZIP, RAW_DEFLATE};
use crate::model::{Checkpoints, FileMetadata, SpanId, Ztoc};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

/// Length of the gzip trailer (CRC-32 and size) between members.
const GZIP_TRAILER: usize = 8;

/// Decodes the uncompressed bytes `range` from the compressed bytes of spans `first..=last`.
///
/// `compressed` must start at `span_compressed_range(first).start` and reach at least the end
/// of the span holding `range.end - 1`. Nothing before span `first` is needed: decompression
/// resumes from the span's checkpoint.
pub fn extract_range(
    ztoc: &Ztoc,
    first: SpanId,
    compressed: &[u8],
    range: Range<u64>,
) -> Result<Vec<u8>> {
    let span_range = ztoc.span_uncompressed_range(first)?;
    if range.start > range.end || range.end > ztoc.uncompressed_archive_size {
        return Err(Error::RangeOutOfBounds {
            start: range.start,
            end: range.end,
            size: ztoc.uncompressed_archive_size,
        });
    }
    if range.start < span_range.start {
        return Err(Error::Extract {
            first,
            last: first,
            message: format!(
                "range starts at {} before span {first} (which starts at {})",
                range.start, span_range.start
            ),
        });
    }
    let wanted = (range.end - range.start) as usize;
    match &ztoc.compression.checkpoints {
        Checkpoints::Uncompressed { .. } => {
            let from = (range.start - span_range.start) as usize;
            compressed
                .get(from..from + wanted)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::Extract {
                    first,
                    last: first,
                    message: format!("{} bytes given, {} needed", compressed.len(), from + wanted),
                })
        }
        Checkpoints::Gzip(zinfo) => {
            let checkpoint = crate::model::checkpoint(zinfo, first)?;
            inflate_from_checkpoint(
                checkpoint.bits,
                &checkpoint.window,
                span_range.start,
                compressed,
                range,
            )
            .map_err(|message| Error::Extract {
                first,
                last: first,
                message,
            })
        }
    }
}

/// Inflates from a checkpoint until `range` has been produced, following gzip member
/// boundaries; returns a message on failure.
fn inflate_from_checkpoint(
    bits: u8,
    window: &[u8],
    start_offset: u64,
    compressed: &[u8],
    range: Range<u64>,
) -> std::result::Result<Vec<u8>, String> {
    let mut inflater = Inflater::new(RAW_DEFLATE).map_err(|e| e.to_string())?;
    let mut input = compressed;
    if bits > 7 {
        return Err(format!(
            "the checkpoint has {bits} bits to prime (at most 7)"
        ));
    }
    if bits != 0 {
        let (&first_byte, rest) = input.split_first().ok_or("no compressed bytes given")?;
        inflater
            .prime(bits, first_byte >> (8 - bits))
            .map_err(|e| e.to_string())?;
        input = rest;
    }
    inflater.set_dictionary(window).map_err(|e| e.to_string())?;
    let mut raw = true;
    let mut position = start_offset;
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut scratch = vec![0u8; 128 * 1024];
    while position < range.end {
        if input.is_empty() {
            return Err(format!(
                "the compressed bytes end at uncompressed offset {position}, before {}",
                range.end
            ));
        }
        let (consumed, produced, status) = inflater
            .inflate(input, &mut scratch, libz_rs_sys::Z_NO_FLUSH)
            .map_err(|e| format!("corrupt span data: {e}"))?;
        input = &input[consumed..];
        let chunk = position..position + produced as u64;
        let keep_start = chunk.start.max(range.start);
        let keep_end = chunk.end.min(range.end);
        if keep_start < keep_end {
            let a = (keep_start - chunk.start) as usize;
            let b = (keep_end - chunk.start) as usize;
            out.extend_from_slice(&scratch[a..b]);
        }
        position = chunk.end;
        if status == Status::StreamEnd && position < range.end {
            // The member ended; the next gzip member follows its trailer (a raw stream
            // leaves the trailer unread, a gzip-mode one has consumed it).
            if raw {
                input = input.get(GZIP_TRAILER..).ok_or("truncated gzip trailer")?;
            }
            inflater.reset(GZIP).map_err(|e| e.to_string())?;
            raw = false;
        } else if consumed == 0 && produced == 0 {
            return Err(format!(
                "inflate made no progress at uncompressed offset {position}"
            ));
        }
    }
    Ok(out)
}

/// Reads uncompressed `range` from a seekable layer blob, fetching only the compressed bytes
/// of the spans it touches and verifying each span against its digest first.
pub fn read_range<B: Read + Seek>(ztoc: &Ztoc, blob: &mut B, range: Range<u64>) -> Result<Vec<u8>> {
    if range.start == range.end {
        return Ok(Vec::new());
    }
    let (first, last) = ztoc.spans_for_range(&range)?;
    let start = ztoc.span_compressed_range(first)?.start;
    let end = ztoc.span_compressed_range(last)?.end;
    blob.seek(SeekFrom::Start(start))?;
    let mut compressed = Vec::with_capacity((end - start) as usize);
    blob.by_ref()
        .take(end - start)
        .read_to_end(&mut compressed)?;
    if (compressed.len() as u64) < end - start {
        return Err(Error::Extract {
            first,
            last,
            message: format!(
                "the layer blob ends at {} but span {last} needs bytes up to {end}",
                start + compressed.len() as u64
            ),
        });
    }
    verify_spans(ztoc, first, last, start, &compressed)?;
    extract_range(ztoc, first, &compressed, range)
}

/// Checks each span in `first..=last` of `compressed` (which starts at blob offset `base`).
pub fn verify_spans(
    ztoc: &Ztoc,
    first: SpanId,
    last: SpanId,
    base: u64,
    compressed: &[u8],
) -> Result<()> {
    for span in first..=last {
        let r = ztoc.span_compressed_range(span)?;
        let bytes = r
            .start
            .checked_sub(base)
            .and_then(|a| compressed.get(a as usize..(r.end - base) as usize))
            .ok_or_else(|| Error::Extract {
                first,
                last,
                message: format!("span {span} is not inside the bytes given"),
            })?;
        ztoc.verify_span(span, bytes)?;
    }
    Ok(())
}

/// Reads a regular file's contents from a seekable layer blob (spans verified).
pub fn read_file<B: Read + Seek>(
    ztoc: &Ztoc,
    blob: &mut B,
    file: &FileMetadata,
) -> Result<Vec<u8>> {
    let start = file.uncompressed_offset;
    read_range(ztoc, blob, start..start + file.uncompressed_size)
}
