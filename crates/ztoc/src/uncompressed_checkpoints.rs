//! The `checkpoints` bytes of a zTOC for an uncompressed (plain tar) layer: a small
//! flatbuffer `zinfo.TarZinfo { version: int32 = 2, span_size: int64, size: int64 }`, as AWS's
//! tooling writes it. Spans of a plain tar are fixed-size byte ranges of the blob, so span
//! size and blob size are all a reader needs.

use crate::error::{Error, Result};
use crate::fbs_tar::zinfo as fb;
use planus::ReadAsRoot;

/// TarZinfo version written and understood.
const TAR_ZINFO_VERSION: i32 = 2;

/// Encodes span size and blob size.
pub fn encode(span_size: u64, size: u64) -> Vec<u8> {
    let value = fb::TarZinfo {
        version: TAR_ZINFO_VERSION,
        span_size: span_size as i64,
        size: size as i64,
    };
    planus::Builder::new().finish(&value, None).to_vec()
}

/// Decodes and validates; returns `(span_size, size)`.
pub fn decode(bytes: &[u8]) -> Result<(u64, u64)> {
    let bad = |m: String| Error::InvalidZinfo(m);
    let root = fb::TarZinfoRef::read_as_root(bytes)
        .map_err(|e| bad(format!("not a TarZinfo flatbuffer: {e}")))?;
    let value = fb::TarZinfo::try_from(root).map_err(|e| bad(format!("invalid TarZinfo: {e}")))?;
    if value.version != TAR_ZINFO_VERSION {
        return Err(bad(format!(
            "TarZinfo version {} (expected {TAR_ZINFO_VERSION})",
            value.version
        )));
    }
    if value.span_size <= 0 {
        return Err(bad(format!(
            "span size {} must be positive",
            value.span_size
        )));
    }
    let size =
        u64::try_from(value.size).map_err(|_| bad(format!("negative size {}", value.size)))?;
    Ok((value.span_size as u64, size))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_matches_aws_layout_size() {
        let bytes = super::encode(4_194_304, 12_345_678);
        assert_eq!(super::decode(&bytes).unwrap(), (4_194_304, 12_345_678));
        assert!(super::decode(b"garbage").is_err());
    }
}
