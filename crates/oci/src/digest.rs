//! Digests: parsing, computing, and verifying while reading.

use crate::error::{Error, Result};
use oci_spec::image::Digest;
use std::io::Read;
use std::str::FromStr;

/// Parses `sha256:<64 lowercase hex>` (the only algorithm SOCI uses), rejecting anything else.
pub fn parse(s: &str) -> Result<Digest> {
    let hex_part = s
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::InvalidDigest(s.to_owned()))?;
    if hex_part.len() != 64
        || !hex_part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::InvalidDigest(s.to_owned()));
    }
    Digest::from_str(s).map_err(|_| Error::InvalidDigest(s.to_owned()))
}

/// SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(bytes);
    from_hasher(h)
}

/// ring's SHA-256 (SHA extensions or AVX2 assembly; much faster than a portable one).
fn from_hasher(hasher: ring::digest::Context) -> Digest {
    let s = format!("sha256:{}", hex::encode(hasher.finish()));
    // A freshly formatted sha256 digest always parses.
    Digest::from_str(&s).unwrap_or_else(|_| unreachable!("formatted digest {s} is valid"))
}

/// A reader that hashes and counts what passes through, to verify blobs while streaming.
pub struct DigestingReader<R> {
    inner: R,
    hasher: ring::digest::Context,
    count: u64,
}

impl<R: Read> DigestingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and size of everything read.
    pub fn finish(self) -> (Digest, u64) {
        (from_hasher(self.hasher), self.count)
    }
}

impl<R: Read> Read for DigestingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_compute() {
        let d = sha256(b"{}");
        assert_eq!(
            d.to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(parse(d.as_ref()).unwrap(), d);
        assert!(parse("sha256:abc").is_err());
        assert!(
            parse("md5:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a").is_err()
        );
        assert!(
            parse("sha256:44136FA355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
                .is_err()
        );
    }
}
