//! The gzip checkpoint ("zinfo") blob stored in a zTOC's `checkpoints` field.
//!
//! Layout (little-endian), version 2: `i32` checkpoint count, `i64` span size, then for each
//! checkpoint `i64` compressed offset, `i64` uncompressed offset, `u8` bits, and the 32 KiB
//! window preceding the uncompressed offset. Version 1 blobs omit checkpoint 0 (the header
//! still counts it); checkpoint 0 always sits at uncompressed offset 0 right after the gzip
//! header, so it is rebuilt on read.

use crate::error::{Error, Result};
use crate::inflate::WINDOW_SIZE;

const HEADER_LEN: usize = 4 + 8;
const CHECKPOINT_LEN: usize = 8 + 8 + 1 + WINDOW_SIZE;

/// A point from which decompression can resume.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Offset in the blob of the first byte not fully consumed (`in`).
    pub compressed_offset: u64,
    /// Uncompressed offset (`out`) this checkpoint resumes at.
    pub uncompressed_offset: u64,
    /// Number of bits (0..=7) of the byte at `compressed_offset - 1` still to be decoded.
    pub bits: u8,
    /// The 32 KiB of uncompressed data preceding `uncompressed_offset`, oldest first
    /// (zero-filled where the stream has less history).
    pub window: Vec<u8>,
}

impl Checkpoint {
    /// First compressed byte needed to resume here (one early when `bits != 0`).
    pub fn span_start(&self) -> u64 {
        self.compressed_offset
            .saturating_sub(u64::from(self.bits != 0))
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("compressed_offset", &self.compressed_offset)
            .field("uncompressed_offset", &self.uncompressed_offset)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

/// All checkpoints of a gzip layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GzipZinfo {
    /// Uncompressed span size the checkpoints were taken with.
    pub span_size: u64,
    /// Checkpoints in stream order; checkpoint `i` starts span `i`.
    pub checkpoints: Vec<Checkpoint>,
}

/// Which on-disk version a blob was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZinfoVersion {
    /// Checkpoint 0 omitted.
    V1,
    /// All checkpoints present.
    V2,
}

impl GzipZinfo {
    /// Encodes as a version 2 blob.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.checkpoints.len() * CHECKPOINT_LEN);
        out.extend_from_slice(&(self.checkpoints.len() as i32).to_le_bytes());
        out.extend_from_slice(&(self.span_size as i64).to_le_bytes());
        for cp in &self.checkpoints {
            out.extend_from_slice(&(cp.compressed_offset as i64).to_le_bytes());
            out.extend_from_slice(&(cp.uncompressed_offset as i64).to_le_bytes());
            out.push(cp.bits);
            // Windows are always WINDOW_SIZE long when built here; pad defensively.
            let take = cp.window.len().min(WINDOW_SIZE);
            out.extend(std::iter::repeat_n(0u8, WINDOW_SIZE - take));
            out.extend_from_slice(&cp.window[cp.window.len() - take..]);
        }
        out
    }

    /// Decodes a version 1 or version 2 blob, validating every field.
    ///
    /// `v1_first_offset` is the compressed offset of the deflate data after the gzip header,
    /// needed only to rebuild checkpoint 0 of a version 1 blob.
    pub fn decode(bytes: &[u8], v1_first_offset: u64) -> Result<(Self, ZinfoVersion)> {
        Self::decode_with(bytes, v1_first_offset, true)
    }

    /// As [`GzipZinfo::decode`], but leaves every window empty except checkpoint 0's (zeros:
    /// no history precedes the stream), without copying them: for a reader that gets windows
    /// elsewhere (a lean zTOC's), where copying 32 KiB per checkpoint is most of the work.
    pub fn decode_without_windows(
        bytes: &[u8],
        v1_first_offset: u64,
    ) -> Result<(Self, ZinfoVersion)> {
        Self::decode_with(bytes, v1_first_offset, false)
    }

    /// The version of a blob and its checkpoint count, from its header and length.
    pub fn layout(bytes: &[u8]) -> Result<(ZinfoVersion, usize)> {
        let bad = |m: String| Error::InvalidZinfo(m);
        if bytes.len() < HEADER_LEN {
            return Err(bad(format!(
                "{} bytes is shorter than the header",
                bytes.len()
            )));
        }
        let count = i32::from_le_bytes(le(bytes, 0)?);
        if count <= 0 {
            return Err(bad(format!("checkpoint count {count} must be positive")));
        }
        let count = count as usize;
        let body = bytes.len() - HEADER_LEN;
        if body == count.saturating_mul(CHECKPOINT_LEN) {
            Ok((ZinfoVersion::V2, count))
        } else if body == (count - 1).saturating_mul(CHECKPOINT_LEN) {
            Ok((ZinfoVersion::V1, count))
        } else {
            Err(bad(format!(
                "header says {count} checkpoints but the blob holds {body} bytes of them \
                 ({CHECKPOINT_LEN} each)"
            )))
        }
    }

    fn decode_with(
        bytes: &[u8],
        v1_first_offset: u64,
        windows: bool,
    ) -> Result<(Self, ZinfoVersion)> {
        let bad = |m: String| Error::InvalidZinfo(m);
        let (version, count) = Self::layout(bytes)?;
        let span_size = i64::from_le_bytes(le(bytes, 4)?);
        if span_size <= 0 {
            return Err(bad(format!("span size {span_size} must be positive")));
        }
        let stored = match version {
            ZinfoVersion::V2 => count,
            ZinfoVersion::V1 => count - 1,
        };
        let mut checkpoints = Vec::with_capacity(count);
        if version == ZinfoVersion::V1 {
            checkpoints.push(Checkpoint {
                compressed_offset: v1_first_offset,
                uncompressed_offset: 0,
                bits: 0,
                window: vec![0; WINDOW_SIZE],
            });
        }
        for i in 0..stored {
            let at = HEADER_LEN + i * CHECKPOINT_LEN;
            let input = i64::from_le_bytes(le(bytes, at)?);
            let output = i64::from_le_bytes(le(bytes, at + 8)?);
            let bits = bytes[at + 16];
            if input < 0 || output < 0 {
                return Err(bad(format!("checkpoint {i} has a negative offset")));
            }
            if bits > 7 {
                return Err(bad(format!("checkpoint {i} has {bits} bits (at most 7)")));
            }
            if bits != 0 && input == 0 {
                return Err(bad(format!(
                    "checkpoint {i} has bits but no preceding byte"
                )));
            }
            let window = match (windows, i == 0 && version == ZinfoVersion::V2) {
                (true, _) => bytes[at + 17..at + CHECKPOINT_LEN].to_vec(),
                (false, true) => vec![0; WINDOW_SIZE],
                (false, false) => Vec::new(),
            };
            checkpoints.push(Checkpoint {
                compressed_offset: input as u64,
                uncompressed_offset: output as u64,
                bits,
                window,
            });
        }
        if checkpoints[0].uncompressed_offset != 0 {
            return Err(bad(
                "the first checkpoint is not at uncompressed offset 0".into()
            ));
        }
        for (i, pair) in checkpoints.windows(2).enumerate() {
            if pair[1].uncompressed_offset <= pair[0].uncompressed_offset
                || pair[1].compressed_offset <= pair[0].compressed_offset
            {
                return Err(bad(format!(
                    "checkpoints {i} and {} are not in increasing order",
                    i + 1
                )));
            }
        }
        Ok((
            GzipZinfo {
                span_size: span_size as u64,
                checkpoints,
            },
            version,
        ))
    }
}

/// Reads `N` bytes at `at`, or fails without panicking.
fn le<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N]> {
    bytes
        .get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::InvalidZinfo(format!("truncated at byte {at}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GzipZinfo {
        let mut w = vec![0u8; WINDOW_SIZE];
        w[WINDOW_SIZE - 1] = 7;
        GzipZinfo {
            span_size: 1 << 22,
            checkpoints: vec![
                Checkpoint {
                    compressed_offset: 10,
                    uncompressed_offset: 0,
                    bits: 0,
                    window: vec![0; WINDOW_SIZE],
                },
                Checkpoint {
                    compressed_offset: 5000,
                    uncompressed_offset: 4_200_000,
                    bits: 3,
                    window: w,
                },
            ],
        }
    }

    #[test]
    fn v2_round_trip() {
        let z = sample();
        let bytes = z.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 2 * CHECKPOINT_LEN);
        let (back, version) = GzipZinfo::decode(&bytes, 999).unwrap();
        assert_eq!(version, ZinfoVersion::V2);
        assert_eq!(back, z);
    }

    #[test]
    fn v1_blob_rebuilds_checkpoint_zero() {
        let z = sample();
        let v2 = z.encode();
        // A v1 blob is the v2 blob without checkpoint 0; the header count is unchanged.
        let mut v1 = v2[..HEADER_LEN].to_vec();
        v1.extend_from_slice(&v2[HEADER_LEN + CHECKPOINT_LEN..]);
        let (back, version) = GzipZinfo::decode(&v1, 10).unwrap();
        assert_eq!(version, ZinfoVersion::V1);
        assert_eq!(back, z);
    }

    #[test]
    fn windowless_decoding_keeps_all_but_the_windows() {
        let z = sample();
        let v2 = z.encode();
        let mut v1 = v2[..HEADER_LEN].to_vec();
        v1.extend_from_slice(&v2[HEADER_LEN + CHECKPOINT_LEN..]);
        for (bytes, version) in [(v2, ZinfoVersion::V2), (v1, ZinfoVersion::V1)] {
            let (back, read) = GzipZinfo::decode_without_windows(&bytes, 10).unwrap();
            assert_eq!(read, version);
            assert_eq!(GzipZinfo::layout(&bytes).unwrap(), (version, 2));
            assert_eq!(back.span_size, z.span_size);
            assert_eq!(back.checkpoints.len(), 2);
            for (b, want) in back.checkpoints.iter().zip(&z.checkpoints) {
                assert_eq!(b.compressed_offset, want.compressed_offset);
                assert_eq!(b.uncompressed_offset, want.uncompressed_offset);
                assert_eq!(b.bits, want.bits);
            }
            // Checkpoint 0 resumes with no history: its window is zeros either way.
            assert_eq!(back.checkpoints[0].window, vec![0; WINDOW_SIZE]);
            assert!(back.checkpoints[1].window.is_empty());
        }
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(GzipZinfo::decode(&[], 0).is_err());
        assert!(GzipZinfo::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0).is_err());
        let mut bytes = sample().encode();
        bytes.pop();
        assert!(GzipZinfo::decode(&bytes, 0).is_err());
        let mut bytes = sample().encode();
        bytes[HEADER_LEN + CHECKPOINT_LEN + 16] = 9; // bits
        assert!(GzipZinfo::decode(&bytes, 0).is_err());
        let mut bytes = sample().encode();
        bytes[0] = 0xff;
        bytes[3] = 0x7f; // huge count
        assert!(GzipZinfo::decode(&bytes, 0).is_err());
        assert!(GzipZinfo::decode_without_windows(&bytes, 0).is_err());
    }
}
