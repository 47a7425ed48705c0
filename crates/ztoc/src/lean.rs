//! Lean zTOCs: everything a reader needs from a gzip layer's zTOC before its first read,
//! without the 32 KiB checkpoint windows.
//!
//! A zTOC carries one raw 32 KiB window per span, and a reader fetches the whole zTOC before
//! it can answer anything: for a layer with spans of 1–4 MiB that is most of the zTOC's bytes,
//! though a start touches a few spans. A lean zTOC is a second, gzip-compressed artifact
//! beside the zTOC (which stays exactly as AWS's readers expect it). It holds:
//! - the zTOC itself with every window zeroed (so its table of contents, span geometry and
//!   span digests decode with [`crate::codec::decode`], and it compresses to little more than
//!   the table of contents),
//! - where each window sits in the full zTOC and the SHA-256 of each window, so a reader
//!   can fetch one window with a Range request on the zTOC blob and check it,
//! - the windows of chosen spans inline (a prefetch list's: those a start reads first).
//!
//! A reader also need not fetch the window of a span whose preceding 32 KiB of uncompressed
//! data it already holds: that data *is* the window (see [`window_from_preceding`]).
//!
//! Layout (little-endian), all inside one gzip stream:
//! `b"SOCIRSLZ"`, `u32` version (1), `u64` size of the full zTOC, `u32` checkpoint count `n`,
//! `n` × (`u64` offset of the window in the full zTOC, or `u64::MAX` when the zTOC stores
//! none: checkpoint 0 of a version 1 zinfo), `n` × 32-byte window SHA-256, `u32` inline count
//! `m`, `m` × (`u32` checkpoint index, strictly increasing, 32 KiB window), `u64` length of
//! the zeroed zTOC, then the zeroed zTOC.

use crate::codec;
use crate::error::{Error, Result};
use crate::inflate::WINDOW_SIZE;
use crate::model::{Checkpoints, SpanId, Ztoc};
use crate::sha256::Sha256;
use crate::zinfo::{GzipZinfo, ZinfoVersion};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::ops::Range;

/// First bytes of a lean zTOC (after gunzip).
const MAGIC: &[u8; 8] = b"SOCIRSLZ";
/// Layout version written and read.
const VERSION: u32 = 1;
/// zinfo header: checkpoint count and span size.
const ZINFO_HEADER: u64 = 4 + 8;
/// One zinfo checkpoint record: `in`, `out`, `bits`, window.
const ZINFO_RECORD: u64 = 8 + 8 + 1 + WINDOW_SIZE as u64;
/// Offset of the window within a zinfo record.
const WINDOW_IN_RECORD: u64 = 8 + 8 + 1;
/// Marks a checkpoint whose window the full zTOC does not store.
const NO_WINDOW: u64 = u64::MAX;
/// Largest zTOC a lean one may describe (as large as any zTOC a reader accepts).
pub const MAX_ZTOC_BYTES: u64 = 512 << 20;
/// Largest checkpoint count (as the zTOC decoder's span limit).
const MAX_CHECKPOINTS: u64 = 1 << 20;

/// Where the windows of a zTOC are and what they hash to: enough to fetch one window with a
/// Range request on the zTOC blob and trust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowIndex {
    /// Size of the full zTOC blob.
    pub ztoc_size: u64,
    offsets: Vec<u64>,
    digests: Vec<[u8; 32]>,
}

impl WindowIndex {
    /// The bytes of the full zTOC holding the window of `checkpoint`; `None` when the zTOC
    /// stores none (checkpoint 0, which needs none) or there is no such checkpoint.
    pub fn range(&self, checkpoint: SpanId) -> Option<Range<u64>> {
        let at = *self.offsets.get(usize::try_from(checkpoint).ok()?)?;
        (at != NO_WINDOW).then(|| at..at + WINDOW_SIZE as u64)
    }

    /// Checks a window fetched for `checkpoint` against its recorded digest.
    pub fn verify(&self, checkpoint: SpanId, window: &[u8]) -> Result<()> {
        let expected = usize::try_from(checkpoint)
            .ok()
            .and_then(|i| self.digests.get(i))
            .ok_or(Error::NoSuchSpan {
                span: checkpoint,
                count: self.digests.len() as u64,
            })?;
        if window.len() == WINDOW_SIZE && &window_digest(window) == expected {
            Ok(())
        } else {
            Err(Error::InvalidZtoc(format!(
                "the window of checkpoint {checkpoint} does not match its digest in the lean zTOC"
            )))
        }
    }
}

/// A lean zTOC decoded: the zTOC (windows empty but for those carried inline) and where the
/// others are.
#[derive(Debug, Clone)]
pub struct LeanZtoc {
    /// The zTOC; a checkpoint whose window is not inline has an empty `window`.
    pub ztoc: Ztoc,
    /// Where the missing windows are in the full zTOC.
    pub windows: WindowIndex,
}

fn window_digest(window: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(window);
    h.finalize()
}

/// A lean zTOC only leaves out what a gzip zTOC has: windows.
fn not_gzip() -> Error {
    Error::InvalidZtoc(
        "a lean zTOC is for gzip layers only; this zTOC is of an uncompressed layer".into(),
    )
}

/// The gzip checkpoints of `ztoc`.
fn gzip_zinfo(ztoc: &Ztoc) -> Result<&GzipZinfo> {
    match &ztoc.compression.checkpoints {
        Checkpoints::Gzip(zinfo) => Ok(zinfo),
        Checkpoints::Uncompressed { .. } => Err(not_gzip()),
    }
}

/// Offset in `full` of each checkpoint's window, and the decoded zTOC (with its windows when
/// `windows`, else with them empty). Fails for anything but a gzip zTOC.
fn window_offsets(full: &[u8], windows: bool) -> Result<(Ztoc, Vec<u64>)> {
    use crate::fbs::ztoc as fb;
    use planus::ReadAsRoot;
    let ztoc = if windows {
        codec::decode(full)?
    } else {
        codec::decode_without_windows(full)?
    };
    let zinfo = gzip_zinfo(&ztoc)?;
    let invalid = |e: planus::Error| Error::InvalidZtoc(e.to_string());
    let blob = fb::ZtocRef::read_as_root(full)
        .map_err(invalid)?
        .compression_info()
        .map_err(invalid)?
        .and_then(|c| c.checkpoints().transpose())
        .transpose()
        .map_err(invalid)?
        .unwrap_or_default();
    let base = (blob.as_ptr() as usize).wrapping_sub(full.as_ptr() as usize) as u64;
    let (version, _) = GzipZinfo::layout(blob)?;
    let offsets = (0..zinfo.checkpoints.len() as u64)
        .map(|k| {
            let stored = match version {
                ZinfoVersion::V2 => Some(k),
                ZinfoVersion::V1 => k.checked_sub(1),
            };
            stored.map_or(NO_WINDOW, |s| {
                base + ZINFO_HEADER + s * ZINFO_RECORD + WINDOW_IN_RECORD
            })
        })
        .collect();
    Ok((ztoc, offsets))
}

/// Builds the lean zTOC of the gzip zTOC `full` (its encoded bytes), carrying the windows of
/// the spans in `inline` (ids past the last span are ignored).
pub fn encode_lean(full: &[u8], inline: &BTreeSet<SpanId>) -> Result<Vec<u8>> {
    let (ztoc, offsets) = window_offsets(full, true)?;
    let zinfo = gzip_zinfo(&ztoc)?;
    let mut zeroed = full.to_vec();
    let mut digests = Vec::with_capacity(offsets.len());
    let mut carried = Vec::new();
    for ((k, cp), &at) in zinfo.checkpoints.iter().enumerate().zip(&offsets) {
        digests.push(window_digest(&cp.window));
        if inline.contains(&(k as u64)) && k > 0 {
            carried.push((k as u32, &cp.window));
        }
        if at != NO_WINDOW {
            if let Some(w) = zeroed.get_mut(at as usize..at as usize + WINDOW_SIZE) {
                w.fill(0);
            }
        }
    }
    let mut body = Vec::with_capacity(64 + offsets.len() * 40 + zeroed.len() / 4);
    body.extend_from_slice(MAGIC);
    body.extend_from_slice(&VERSION.to_le_bytes());
    body.extend_from_slice(&(full.len() as u64).to_le_bytes());
    body.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    for at in &offsets {
        body.extend_from_slice(&at.to_le_bytes());
    }
    for d in &digests {
        body.extend_from_slice(d);
    }
    body.extend_from_slice(&(carried.len() as u32).to_le_bytes());
    for (k, window) in carried {
        body.extend_from_slice(&k.to_le_bytes());
        body.extend_from_slice(window);
    }
    body.extend_from_slice(&(zeroed.len() as u64).to_le_bytes());
    body.extend_from_slice(&zeroed);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&body)?;
    Ok(gz.finish()?)
}

/// A little-endian reader over the gunzipped lean zTOC that fails instead of panicking.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let slice = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or_else(|| bad(format!("truncated at byte {}", self.at)))?;
        self.at += n;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

fn bad(message: String) -> Error {
    Error::InvalidZtoc(format!("lean zTOC: {message}"))
}

/// Reads exactly `buf.len()` bytes of the gunzipped stream.
fn read_exact(gz: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    gz.read_exact(buf)
        .map_err(|e| bad(format!("not a whole lean zTOC gzip stream: {e}")))
}

/// Decodes and checks a lean zTOC (untrusted bytes: never panics). It must describe a zTOC of
/// at most `max_ztoc_size` bytes (the size its index gives the zTOC, or
/// [`MAX_ZTOC_BYTES`]), and nothing is inflated past what such a lean zTOC can hold: about
/// twice that size.
pub fn decode_lean(bytes: &[u8], max_ztoc_size: u64) -> Result<LeanZtoc> {
    let mut gz = flate2::read::MultiGzDecoder::new(bytes);
    let mut header = [0u8; 8 + 4 + 8 + 4];
    read_exact(&mut gz, &mut header)?;
    let mut c = Cursor {
        bytes: &header,
        at: 0,
    };
    if c.take(MAGIC.len())? != MAGIC {
        return Err(bad("it does not start with the lean zTOC magic".into()));
    }
    let version = c.u32()?;
    if version != VERSION {
        return Err(bad(format!(
            "version {version} is not known (this reader knows {VERSION})"
        )));
    }
    let ztoc_size = c.u64()?;
    if ztoc_size > max_ztoc_size.min(MAX_ZTOC_BYTES) {
        return Err(bad(format!(
            "it describes a zTOC of {ztoc_size} bytes, more than the {max_ztoc_size} expected"
        )));
    }
    let n = u64::from(c.u32()?);
    // Every checkpoint but a version 1 zinfo's first has its record in the zTOC.
    if n == 0 || n > MAX_CHECKPOINTS || n > ztoc_size / ZINFO_RECORD + 1 {
        return Err(bad(format!(
            "{n} checkpoints in a zTOC of {ztoc_size} bytes"
        )));
    }
    // Offsets and digests, at most every window inline, the zTOC and its length.
    let rest_limit = n * (8 + 32) + 4 + n * (4 + WINDOW_SIZE as u64) + 8 + ztoc_size;
    // Sized for what the lean zTOC holds without inline windows, so reading it does not
    // copy the zTOC over and over as the buffer grows; never more than deflate can inflate
    // `bytes` to (1032:1) or 64 MiB, whatever the header claims.
    let expected = (n * (8 + 32) + 4 + 8 + ztoc_size)
        .min((bytes.len() as u64).saturating_mul(1032))
        .min(64 << 20);
    let mut rest = Vec::with_capacity(expected as usize);
    gz.take(rest_limit + 1)
        .read_to_end(&mut rest)
        .map_err(|e| bad(format!("not a whole lean zTOC gzip stream: {e}")))?;
    if rest.len() as u64 > rest_limit {
        return Err(bad(format!("it inflates to more than {rest_limit} bytes")));
    }
    let mut c = Cursor {
        bytes: &rest,
        at: 0,
    };
    let offsets = (0..n).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
    let digests = (0..n)
        .map(|_| {
            let mut d = [0u8; 32];
            d.copy_from_slice(c.take(32)?);
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    let m = u64::from(c.u32()?);
    if m > n {
        return Err(bad(format!("{m} inline windows for {n} checkpoints")));
    }
    let mut inline = Vec::with_capacity(m as usize);
    for _ in 0..m {
        let k = c.u32()?;
        if inline.last().is_some_and(|(prev, _)| *prev >= k) || u64::from(k) >= n {
            return Err(bad(format!("inline window {k} is out of order or range")));
        }
        inline.push((k, c.take(WINDOW_SIZE)?));
    }
    let len = c.u64()?;
    if len != ztoc_size {
        return Err(bad(format!(
            "it holds {len} bytes of zTOC but names a zTOC of {ztoc_size}"
        )));
    }
    let zeroed = c.take(len as usize)?;
    if c.at != rest.len() {
        return Err(bad("bytes follow the zTOC".into()));
    }
    let (mut ztoc, expected_offsets) = window_offsets(zeroed, false)?;
    if expected_offsets != offsets {
        return Err(bad(
            "its window offsets do not match the zTOC it carries".into()
        ));
    }
    let windows = WindowIndex {
        ztoc_size,
        offsets,
        digests,
    };
    let Checkpoints::Gzip(zinfo) = &mut ztoc.compression.checkpoints else {
        return Err(not_gzip());
    };
    for (k, window) in inline {
        windows.verify(u64::from(k), window)?;
        if let Some(cp) = zinfo.checkpoints.get_mut(k as usize) {
            cp.window = window.to_vec();
        }
    }
    Ok(LeanZtoc { ztoc, windows })
}

/// The window of a checkpoint at uncompressed offset `out`, from the uncompressed bytes
/// `preceding` that end at `out` (at least the 32 KiB before it, or all of them from offset
/// 0): zlib's history is the last 32 KiB of output, zero-filled where the stream has less.
/// `None` when `preceding` is too short.
pub fn window_from_preceding(out: u64, preceding: &[u8]) -> Option<Vec<u8>> {
    let need = out.min(WINDOW_SIZE as u64) as usize;
    let tail = preceding.get(preceding.len().checked_sub(need)?..)?;
    let mut window = vec![0u8; WINDOW_SIZE - need];
    window.extend_from_slice(tail);
    Some(window)
}

/// The uncompressed bytes a window of a checkpoint at `out` is made of.
pub fn window_source_range(out: u64) -> Range<u64> {
    out.saturating_sub(WINDOW_SIZE as u64)..out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{build_ztoc, BuildOptions};
    use crate::model::CompressionAlgorithm;

    /// A gzip layer of varied, compressible files, and its zTOC with small spans.
    fn layer() -> (Vec<u8>, Ztoc) {
        let mut tar = tar::Builder::new(Vec::new());
        for i in 0..40u32 {
            let mut x = 0x9e37_79b9u32.wrapping_mul(i + 1);
            let data: Vec<u8> = (0..60_000)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    b"abcdefghijklmnop"[(x >> 28) as usize]
                })
                .collect();
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("f{i}"), &data[..]).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let blob = gz.finish().unwrap();
        let options = BuildOptions {
            span_size: 256 << 10,
            ..Default::default()
        };
        let ztoc = build_ztoc(&blob[..], CompressionAlgorithm::Gzip, &options).unwrap();
        (blob, ztoc)
    }

    #[test]
    fn a_lean_ztoc_keeps_everything_but_the_windows_and_finds_them_in_the_full_one() {
        let (_, ztoc) = layer();
        let full = codec::encode(&ztoc);
        assert!(ztoc.span_count() > 3);
        let lean_bytes = encode_lean(&full, &BTreeSet::from([2, 99])).unwrap();
        assert!(
            lean_bytes.len() * 4 < full.len(),
            "{} vs {}",
            lean_bytes.len(),
            full.len()
        );
        let lean = decode_lean(&lean_bytes, MAX_ZTOC_BYTES).unwrap();
        let Checkpoints::Gzip(want) = &ztoc.compression.checkpoints else {
            panic!()
        };
        let Checkpoints::Gzip(got) = &lean.ztoc.compression.checkpoints else {
            panic!()
        };
        assert_eq!(lean.ztoc.toc, ztoc.toc);
        assert_eq!(
            lean.ztoc.compression.span_digests,
            ztoc.compression.span_digests
        );
        assert_eq!(lean.windows.ztoc_size, full.len() as u64);
        for (k, (w, g)) in want.checkpoints.iter().zip(&got.checkpoints).enumerate() {
            assert_eq!(
                (w.compressed_offset, w.uncompressed_offset, w.bits),
                (g.compressed_offset, g.uncompressed_offset, g.bits)
            );
            match k {
                0 => assert_eq!(g.window, vec![0; WINDOW_SIZE]),
                2 => assert_eq!(g.window, w.window),
                _ => assert!(g.window.is_empty()),
            }
            // Every window is where the index says, and checks out.
            let r = lean.windows.range(k as u64);
            if k == 0 {
                continue;
            }
            let r = r.unwrap();
            let fetched = &full[r.start as usize..r.end as usize];
            assert_eq!(fetched, &w.window[..]);
            lean.windows.verify(k as u64, fetched).unwrap();
            let mut wrong = fetched.to_vec();
            wrong[100] ^= 1;
            assert!(lean.windows.verify(k as u64, &wrong).is_err());
        }
    }

    #[test]
    fn windows_come_from_the_preceding_bytes() {
        let (blob, ztoc) = layer();
        let Checkpoints::Gzip(z) = &ztoc.compression.checkpoints else {
            panic!()
        };
        let mut all = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut all)
            .unwrap();
        for cp in &z.checkpoints[1..] {
            let r = window_source_range(cp.uncompressed_offset);
            let preceding = &all[r.start as usize..r.end as usize];
            assert_eq!(
                window_from_preceding(cp.uncompressed_offset, preceding).unwrap(),
                cp.window
            );
        }
        // Near the start the window is zero-filled in front.
        let w = window_from_preceding(10, b"0123456789").unwrap();
        assert_eq!(&w[WINDOW_SIZE - 10..], b"0123456789");
        assert!(w[..WINDOW_SIZE - 10].iter().all(|b| *b == 0));
        assert!(window_from_preceding(40_000, &[1; 100]).is_none());
    }

    #[test]
    fn damaged_lean_ztocs_are_refused_without_panicking() {
        let (_, ztoc) = layer();
        let full = codec::encode(&ztoc);
        let lean = encode_lean(&full, &BTreeSet::from([1])).unwrap();
        let mut body = Vec::new();
        flate2::read::GzDecoder::new(&lean[..])
            .read_to_end(&mut body)
            .unwrap();
        let regz = |b: &[u8]| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(b).unwrap();
            gz.finish().unwrap()
        };
        assert!(decode_lean(&regz(&body), MAX_ZTOC_BYTES).is_ok());
        // A zTOC larger than its index says, and a stream that inflates past what its header
        // allows, are refused (the latter before it is all inflated).
        assert!(decode_lean(&regz(&body), full.len() as u64 - 1).is_err());
        let mut bomb = body.clone();
        bomb.extend(std::iter::repeat_n(0u8, 4 << 20));
        let err = decode_lean(&regz(&bomb), MAX_ZTOC_BYTES).unwrap_err();
        assert!(err.to_string().contains("inflates to more"), "{err}");
        assert!(decode_lean(b"not gzip", MAX_ZTOC_BYTES).is_err());
        for cut in [0, 5, 13, 40, body.len() / 2, body.len() - 1] {
            assert!(
                decode_lean(&regz(&body[..cut]), MAX_ZTOC_BYTES).is_err(),
                "cut at {cut}"
            );
        }
        // A changed window offset, a changed inline window, trailing bytes.
        let n_at = 8 + 4 + 8;
        let mut off = body.clone();
        off[n_at + 4 + 8] ^= 1;
        assert!(decode_lean(&regz(&off), MAX_ZTOC_BYTES).is_err());
        let n = ztoc.span_count() as usize;
        let inline_at = n_at + 4 + n * 40 + 4 + 4;
        let mut win = body.clone();
        win[inline_at + 10] ^= 1;
        assert!(decode_lean(&regz(&win), MAX_ZTOC_BYTES).is_err());
        let mut extra = body.clone();
        extra.push(0);
        assert!(decode_lean(&regz(&extra), MAX_ZTOC_BYTES).is_err());
        // Uncompressed-layer zTOCs have no windows to leave out.
        let plain = Ztoc {
            compression: crate::model::CompressionInfo {
                checkpoints: Checkpoints::Uncompressed {
                    span_size: 1 << 20,
                    size: ztoc.uncompressed_archive_size,
                },
                span_digests: vec![
                    crate::SpanDigest::of(b"x");
                    ztoc.uncompressed_archive_size.div_ceil(1 << 20) as usize
                ],
            },
            ..ztoc
        };
        assert!(encode_lean(&codec::encode(&plain), &BTreeSet::new()).is_err());
    }
}
