//! Reading OCI image layouts (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).

use crate::error::{io_err, Error, Result};
use crate::manifest;
use oci_spec::image::{Descriptor, Digest, ImageIndex};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Annotation holding a manifest's tag in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
pub use crate::resolve::{PlatformSelection, ResolvedImage};

/// Reads manifests and configs for [`crate::resolve::image_manifests`] from the layout.
struct LayoutFetcher<'a>(&'a OciLayout);

impl crate::resolve::ManifestFetcher for LayoutFetcher<'_> {
    fn fetch(&mut self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        self.0.read_blob(desc, limit)
    }
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
    index: ImageIndex,
}

impl OciLayout {
    /// Opens a layout, checking `oci-layout` and reading `index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let not_layout = |reason: String| Error::NotALayout {
            dir: dir.to_owned(),
            reason,
        };
        let marker = std::fs::read(dir.join("oci-layout"))
            .map_err(|e| not_layout(format!("cannot read its oci-layout file ({e})")))?;
        let marker: serde_json::Value = serde_json::from_slice(&marker)
            .map_err(|e| not_layout(format!("oci-layout is not JSON ({e})")))?;
        if marker
            .get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(not_layout("oci-layout has no imageLayoutVersion".into()));
        }
        let index_bytes = read_limited(&dir.join("index.json"), manifest::MAX_MANIFEST_SIZE as u64)
            .map_err(|e| not_layout(format!("cannot read index.json ({e})")))?;
        let index: ImageIndex = serde_json::from_slice(&index_bytes)
            .map_err(|e| not_layout(format!("index.json is invalid ({e})")))?;
        Ok(Self {
            dir: dir.to_owned(),
            index,
        })
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Finds the manifest (or index) descriptor for a tag or digest. With neither, the only
    /// entry of `index.json` is used.
    pub fn resolve(&self, tag: Option<&str>, digest: Option<&Digest>) -> Result<Descriptor> {
        let entries = self.index.manifests();
        let found = match (tag, digest) {
            (_, Some(d)) => entries.iter().find(|m| m.digest() == d),
            (Some(t), None) => entries.iter().find(|m| ref_name(m) == Some(t)),
            (None, None) if entries.len() == 1 => entries.first(),
            (None, None) => None,
        };
        found.cloned().ok_or_else(|| {
            let tags: Vec<String> = entries
                .iter()
                .map(|m| ref_name(m).map_or_else(|| m.digest().to_string(), str::to_owned))
                .collect();
            let wanted = match (tag, digest) {
                (_, Some(d)) => d.to_string(),
                (Some(t), None) => format!("tag {t:?}"),
                (None, None) => {
                    "an image (the layout has several; name one with oci:DIR:TAG)".into()
                }
            };
            Error::NotInLayout {
                wanted,
                dir: self.dir.clone(),
                available: if tags.is_empty() {
                    "nothing".into()
                } else {
                    tags.join(", ")
                },
            }
        })
    }

    /// Follows `desc` (an image manifest or index) to the image manifests selected.
    pub fn image_manifests(
        &self,
        desc: &Descriptor,
        selection: &PlatformSelection,
    ) -> Result<Vec<ResolvedImage>> {
        let name = self.dir.display().to_string();
        crate::resolve::image_manifests(&mut LayoutFetcher(self), &name, desc, selection)
    }

    /// Path of a blob in the layout.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    /// Reads a blob fully (at most `limit` bytes), verifying its size and digest.
    pub fn read_blob(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        let digest = desc.digest();
        let location = self.dir.display().to_string();
        if desc.size() > limit {
            return Err(Error::BlobCorrupt {
                digest: digest.to_string(),
                location,
                reason: format!(
                    "its descriptor claims {} bytes, more than the {limit}-byte limit",
                    desc.size()
                ),
            });
        }
        let path = self.blob_path(digest);
        let bytes = read_limited(&path, limit).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::BlobNotFound {
                digest: digest.to_string(),
                location: format!("OCI layout {location} (the layout is incomplete)"),
            },
            _ => Error::Io {
                action: "reading",
                path: path.clone(),
                source: e,
            },
        })?;
        if bytes.len() as u64 != desc.size() {
            return Err(Error::BlobCorrupt {
                digest: digest.to_string(),
                location,
                reason: format!(
                    "{} bytes on disk, {} in its descriptor",
                    bytes.len(),
                    desc.size()
                ),
            });
        }
        let actual = crate::digest::sha256(&bytes);
        if &actual != digest {
            return Err(Error::BlobCorrupt {
                digest: digest.to_string(),
                location,
                reason: format!("its content hashes to {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming (the caller verifies while reading).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::BlobNotFound {
                digest: digest.to_string(),
                location: format!(
                    "OCI layout {} (the layout is incomplete)",
                    self.dir.display()
                ),
            },
            _ => io_err("opening", path)(e),
        })
    }
}

/// Whether a manifest describes a runnable image (not an artifact such as a SOCI index).
fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()?
        .get(REF_NAME_ANNOTATION)
        .map(String::as_str)
}

fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}
