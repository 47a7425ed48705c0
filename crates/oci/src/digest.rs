//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and helpers to compute and verify them
//! while streaming.
//!
//! Only algorithms we can actually verify are accepted: a digest we cannot recompute would let
//! unverified bytes through, so parsing rejects everything else up front.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// Errors from parsing or verifying a digest.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    /// The string is not `<algorithm>:<hex>`.
    #[error("invalid digest {value:?}: {reason}; expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>")]
    Invalid {
        /// The rejected input (truncated when very long).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The content hashed to a different digest than expected.
    #[error("digest mismatch: expected {expected}, content hashes to {actual}; the content is corrupt or was tampered with")]
    Mismatch {
        /// The digest the content should have.
        expected: Digest,
        /// The digest the content actually has.
        actual: Digest,
    },
    /// The content has a different length than expected.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}; the content is truncated or corrupt")]
    SizeMismatch {
        /// The digest of the expected content.
        digest: Digest,
        /// The expected length in bytes.
        expected: u64,
        /// The length actually read.
        actual: u64,
    },
}

/// A digest algorithm this crate can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the algorithm used by virtually all OCI content.
    Sha256,
    /// SHA-512, allowed by the OCI spec.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as written in a digest (`sha256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded value.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated content digest such as `sha256:e3b0…`.
///
/// The inner string is always `<algorithm>:<lowercase hex of the right length>`, so it is safe
/// to use as a file name component (no `/`, no `..`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates a digest string.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let invalid = |reason| DigestError::Invalid {
            value: truncate_for_message(s),
            reason,
        };
        let (alg, hex) = s.split_once(':').ok_or_else(|| invalid("missing ':'"))?;
        let alg = Algorithm::from_name(alg).ok_or_else(|| invalid("unsupported algorithm"))?;
        if hex.len() != alg.hex_len() {
            return Err(invalid("wrong length for the algorithm"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("value is not lowercase hex"));
        }
        Ok(Digest(s.to_owned()))
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(data);
        h.finish()
    }

    /// The digest of `data` computed with `algorithm`.
    pub fn compute(algorithm: Algorithm, data: &[u8]) -> Self {
        let mut h = DigestHasher::new(algorithm);
        h.update(data);
        h.finish()
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        // The prefix was validated in `parse`/constructed by a hasher; sha512 is the only other.
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex-encoded value (after the `:`).
    pub fn hex(&self) -> &str {
        self.0.split_once(':').map(|(_, h)| h).unwrap_or_default()
    }

    /// The full `algorithm:hex` string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks `data` against this digest.
    pub fn verify(&self, data: &[u8]) -> Result<(), DigestError> {
        let actual = Digest::compute(self.algorithm(), data);
        if &actual == self {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                expected: self.clone(),
                actual,
            })
        }
    }

    /// Converts to oci-spec's digest type for use in descriptors.
    pub fn to_oci(&self) -> oci_spec::image::Digest {
        // Our grammar is a strict subset of oci-spec's (sha256/sha512 + lowercase hex of the
        // right length), so this parse cannot fail for a value that passed `Digest::parse`; the
        // `oci_conversion` test pins that.
        oci_spec::image::Digest::from_str(&self.0)
            .expect("a validated sha256/sha512 digest is always a valid OCI digest")
    }
}

fn truncate_for_message(s: &str) -> String {
    // Untrusted input may be huge; keep error messages readable.
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        Digest::parse(d.as_ref())
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        d.to_oci()
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(d: Digest) -> Self {
        d.to_oci()
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The digest of a descriptor, validated into our [`Digest`] type.
pub fn descriptor_digest(desc: &oci_spec::image::Descriptor) -> Result<Digest, DigestError> {
    Digest::try_from(desc.digest())
}

/// Incremental hasher producing a [`Digest`].
#[derive(Clone)]
pub struct DigestHasher {
    state: HasherState,
}

#[derive(Clone)]
enum HasherState {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl DigestHasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match algorithm {
            Algorithm::Sha256 => HasherState::Sha256(Sha256::new()),
            Algorithm::Sha512 => HasherState::Sha512(Sha512::new()),
        };
        DigestHasher { state }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            HasherState::Sha256(h) => h.update(data),
            HasherState::Sha512(h) => h.update(data),
        }
    }

    /// Finishes and returns the digest.
    pub fn finish(self) -> Digest {
        match self.state {
            HasherState::Sha256(h) => Digest(format!("sha256:{}", hex::encode(h.finalize()))),
            HasherState::Sha512(h) => Digest(format!("sha512:{}", hex::encode(h.finalize()))),
        }
    }
}

impl Write for DigestHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes and counts everything read through it, so content can be verified in
/// the same pass that consumes it (no second read of a large layer).
pub struct DigestingReader<R> {
    inner: R,
    hasher: DigestHasher,
    bytes_read: u64,
}

impl<R: Read> DigestingReader<R> {
    /// Wraps `inner`, hashing with `algorithm`.
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        DigestingReader {
            inner,
            hasher: DigestHasher::new(algorithm),
            bytes_read: 0,
        }
    }

    /// Wraps `inner`, hashing with the algorithm of `expected` (for a later [`Self::verify`]).
    pub fn for_digest(inner: R, expected: &Digest) -> Self {
        Self::new(inner, expected.algorithm())
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Digest and length of everything read so far.
    pub fn finish(self) -> (Digest, u64) {
        (self.hasher.finish(), self.bytes_read)
    }

    /// Reads whatever is left (so trailing bytes are hashed too), then checks the digest and,
    /// if given, the size.
    pub fn verify(mut self, expected: &Digest, expected_size: Option<u64>) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        let (actual, len) = self.finish();
        if let Some(size) = expected_size {
            if size != len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    DigestError::SizeMismatch {
                        digest: expected.clone(),
                        expected: size,
                        actual: len,
                    },
                ));
            }
        }
        if &actual != expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                DigestError::Mismatch {
                    expected: expected.clone(),
                    actual,
                },
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for DigestingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = buf.get(..n).unwrap_or_default();
        self.hasher.update(chunk);
        self.bytes_read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_empty() {
        let d = Digest::sha256_of(b"");
        assert_eq!(d.as_str(), EMPTY_SHA256);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.to_string(), EMPTY_SHA256);
    }

    #[test]
    fn parse_valid_and_invalid() {
        assert!(Digest::parse(EMPTY_SHA256).is_ok());
        let d512 = Digest::compute(Algorithm::Sha512, b"x");
        assert_eq!(Digest::parse(d512.as_str()).unwrap(), d512);
        assert_eq!(d512.algorithm(), Algorithm::Sha512);
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &EMPTY_SHA256.to_uppercase(),
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:../../../../etc/passwd00000000000000000000000000000000000000",
            &format!("{EMPTY_SHA256}0"),
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn serde_roundtrip_and_rejects_bad() {
        let d = Digest::sha256_of(b"hello");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:xyz\"").is_err());
    }

    #[test]
    fn oci_conversion() {
        let d = Digest::sha256_of(b"hello");
        let o = d.to_oci();
        assert_eq!(o.to_string(), d.to_string());
        assert_eq!(Digest::try_from(&o).unwrap(), d);
    }

    #[test]
    fn digesting_reader_verifies() {
        let data = b"some layer bytes".repeat(1000);
        let d = Digest::sha256_of(&data);
        let mut r = DigestingReader::for_digest(&data[..], &d);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.bytes_read(), 10);
        r.verify(&d, Some(data.len() as u64)).unwrap();

        let r = DigestingReader::for_digest(&data[..], &d);
        let err = r.verify(&d, Some(1)).unwrap_err();
        assert!(err.to_string().contains("size mismatch"), "{err}");

        let other = Digest::sha256_of(b"other");
        let r = DigestingReader::for_digest(&data[..], &other);
        let err = r.verify(&other, None).unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
    }

    #[test]
    fn verify_bytes() {
        let d = Digest::sha256_of(b"abc");
        d.verify(b"abc").unwrap();
        assert!(matches!(
            d.verify(b"abd"),
            Err(DigestError::Mismatch { .. })
        ));
    }
}
