//! The local content store: blobs by digest under `<root>/content/blobs/sha256/<hex>`.
//!
//! Writes go to `<root>/content/ingest/` first, are fsynced, then renamed into place, so a
//! blob either exists whole or not at all, even if the process is killed mid-write.

use crate::error::{io_err, Error, Result};
use oci_spec::image::Digest;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Ingest files older than this are leftovers of killed writers and are removed on open.
const STALE_INGEST: Duration = Duration::from_secs(3600);

/// A directory of blobs addressed by digest.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("content").join("blobs").join("sha256");
        let ingest = root.join("content").join("ingest");
        fs::create_dir_all(&blobs).map_err(io_err("creating", &blobs))?;
        fs::create_dir_all(&ingest).map_err(io_err("creating", &ingest))?;
        // Remove stale partial writes; fresh ones may belong to a concurrent `soci`.
        if let Ok(entries) = fs::read_dir(&ingest) {
            for entry in entries.flatten() {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > STALE_INGEST);
                if stale {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(Self { blobs, ingest })
    }

    /// Path where a blob is (or would be) stored.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.digest())
    }

    /// Whether a blob exists.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| self.not_found_or(digest, &path, e))
    }

    /// Stores `bytes`, returning their digest; storing the same bytes twice is a no-op.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = crate::digest::sha256(bytes);
        let target = self.path(&digest);
        if target.is_file() {
            return Ok(digest);
        }
        let tmp = self
            .ingest
            .join(format!("{}.{}.tmp", digest.digest(), std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)?;
            // Make the rename durable too.
            File::open(&self.blobs)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::Io {
                action: "writing blob",
                path: target.clone(),
                source: e,
            }
        })?;
        Ok(digest)
    }

    /// Reads a blob fully and verifies its digest.
    pub fn get(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| self.not_found_or(digest, &path, e))?;
        let actual = crate::digest::sha256(&bytes);
        if &actual != digest {
            return Err(Error::BlobCorrupt {
                digest: digest.to_string(),
                location: format!("content store {}", self.blobs.display()),
                reason: format!(
                    "its content hashes to {actual}; run `soci rebuild-db` after removing it"
                ),
            });
        }
        Ok(bytes)
    }

    /// Removes a blob (missing blobs are not an error).
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                action: "removing",
                path,
                source: e,
            }),
        }
    }

    /// Digests of every stored blob, sorted.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).map_err(io_err("listing", &self.blobs))? {
            let entry = entry.map_err(io_err("listing", &self.blobs))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Ok(d) = crate::digest::parse(&format!("sha256:{name}")) {
                    out.push(d);
                }
            }
        }
        out.sort_by_key(|d| d.to_string());
        Ok(out)
    }

    fn not_found_or(&self, digest: &Digest, path: &Path, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::BlobNotFound {
                digest: digest.to_string(),
                location: format!("content store {}", self.blobs.display()),
            }
        } else {
            Error::Io {
                action: "reading",
                path: path.to_owned(),
                source: e,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let d = store.put_bytes(b"hello").unwrap();
        assert_eq!(store.put_bytes(b"hello").unwrap(), d);
        assert_eq!(store.get(&d).unwrap(), b"hello");
        assert_eq!(store.size(&d).unwrap(), 5);
        assert_eq!(store.list().unwrap(), vec![d.clone()]);
        std::fs::write(store.path(&d), b"tampered").unwrap();
        assert!(matches!(store.get(&d), Err(Error::BlobCorrupt { .. })));
        store.delete(&d).unwrap();
        assert!(matches!(store.get(&d), Err(Error::BlobNotFound { .. })));
        assert!(store.list().unwrap().is_empty());
    }
}
