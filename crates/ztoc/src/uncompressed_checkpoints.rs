//! The `checkpoints` bytes of a zTOC for an uncompressed (plain tar) layer.
//!
//! Spans of a plain tar are fixed-size byte ranges, so the only thing to record is the span
//! size: 8 bytes, little-endian `i64`.

use crate::error::{Error, Result};

/// Encodes the span size.
pub fn encode(span_size: u64) -> Vec<u8> {
    (span_size as i64).to_le_bytes().to_vec()
}

/// Decodes and validates the span size.
pub fn decode(bytes: &[u8]) -> Result<u64> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| {
        Error::InvalidZinfo(format!(
            "uncompressed layer checkpoints must be 8 bytes, got {}",
            bytes.len()
        ))
    })?;
    let span_size = i64::from_le_bytes(raw);
    if span_size <= 0 {
        return Err(Error::InvalidZinfo(format!(
            "span size {span_size} must be positive"
        )));
    }
    Ok(span_size as u64)
}
