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
    // Bytes before `range.start` must be decoded to get past them; they are dropped after.
    let skip = (range.start - start_offset) as usize;
    let mut out = Vec::with_capacity((range.end - start_offset) as usize);
    inflate_chunks(
        bits,
        window,
        compressed,
        range.end - start_offset,
        INFLATE_CHUNK,
        |chunk| out.extend_from_slice(&chunk),
    )?;
    out.drain(..skip.min(out.len()));
    Ok(out)
}

/// Output of one inflate call when the caller does not choose (kernel reads are 128 KiB).
const INFLATE_CHUNK: usize = 128 * 1024;

/// Inflates `wanted` bytes from a checkpoint (its `bits` to prime and its 32 KiB `window`)
/// over `compressed`, which starts at the checkpoint, following gzip member boundaries.
/// Hands the output to `emit` in buffers of `chunk` bytes (the last may be shorter), each
/// decoded straight into the buffer it is handed over in.
fn inflate_chunks(
    bits: u8,
    window: &[u8],
    compressed: &[u8],
    wanted: u64,
    chunk: usize,
    mut emit: impl FnMut(Vec<u8>),
) -> std::result::Result<(), String> {
    if window.len() != crate::inflate::WINDOW_SIZE {
        // A lean zTOC leaves windows out (`crate::lean`); inflating without one would make
        // wrong bytes, not an error.
        return Err("the checkpoint's window is not loaded (a lean zTOC leaves it out)".into());
    }
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
    let chunk = chunk.max(1);
    let mut raw = true;
    let mut produced_total = 0u64;
    let mut buf = Vec::new();
    let mut filled = 0usize;
    while produced_total < wanted {
        if buf.is_empty() {
            let size = (wanted - produced_total).min(chunk as u64) as usize;
            buf = vec![0u8; size];
            filled = 0;
        }
        if input.is_empty() {
            return Err(format!(
                "the compressed bytes end {produced_total} bytes after the checkpoint, before {wanted}"
            ));
        }
        let (consumed, produced, status) = inflater
            .inflate(input, &mut buf[filled..], libz_rs_sys::Z_NO_FLUSH)
            .map_err(|e| format!("corrupt span data: {e}"))?;
        input = &input[consumed..];
        filled += produced;
        produced_total += produced as u64;
        if filled == buf.len() {
            emit(std::mem::take(&mut buf));
        }
        if status == Status::StreamEnd && produced_total < wanted {
            // The member ended; the next gzip member follows its trailer (a raw stream
            // leaves the trailer unread, a gzip-mode one has consumed it).
            if raw {
                input = input.get(GZIP_TRAILER..).ok_or("truncated gzip trailer")?;
            }
            inflater.reset(GZIP).map_err(|e| e.to_string())?;
            raw = false;
        } else if consumed == 0 && produced == 0 {
            return Err(format!(
                "inflate made no progress {produced_total} bytes after the checkpoint"
            ));
        }
    }
    Ok(())
}

/// Inflates all of span `span` from the compressed bytes of the span (`compressed`, from the
/// span's first compressed byte), handing the output to `emit` in order, `chunk` bytes at a
/// time (the last may be shorter): a reader of the span's first bytes need not wait for the
/// rest. The bytes are not verified here; check the span with [`Ztoc::verify_span`] first.
pub fn inflate_span(
    ztoc: &Ztoc,
    span: SpanId,
    compressed: &[u8],
    chunk: usize,
    emit: impl FnMut(Vec<u8>),
) -> Result<()> {
    inflate_span_with(ztoc, span, None, compressed, chunk, emit)
}

/// [`inflate_span`] resuming from `window` instead of the checkpoint's own (for a lean zTOC,
/// whose checkpoints lack most windows: see [`crate::lean`]); `None` uses the checkpoint's.
pub fn inflate_span_with(
    ztoc: &Ztoc,
    span: SpanId,
    window: Option<&[u8]>,
    compressed: &[u8],
    chunk: usize,
    mut emit: impl FnMut(Vec<u8>),
) -> Result<()> {
    let range = ztoc.span_uncompressed_range(span)?;
    let len = range.end - range.start;
    let fail = |message: String| Error::Extract {
        first: span,
        last: span,
        message,
    };
    match &ztoc.compression.checkpoints {
        Checkpoints::Uncompressed { .. } => {
            let bytes = compressed
                .get(..len as usize)
                .ok_or_else(|| fail(format!("{} bytes given, {len} needed", compressed.len())))?;
            for piece in bytes.chunks(chunk.max(1)) {
                emit(piece.to_vec());
            }
            Ok(())
        }
        Checkpoints::Gzip(zinfo) => {
            let checkpoint = crate::model::checkpoint(zinfo, span)?;
            inflate_chunks(
                checkpoint.bits,
                window.unwrap_or(&checkpoint.window),
                compressed,
                len,
                chunk,
                emit,
            )
            .map_err(fail)
        }
    }
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
