//! Reading OCI image layouts (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).

use crate::error::{io_err, Error, Result};
use crate::manifest::{self, ParsedManifest};
use crate::platform::Platform;
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Annotation holding a manifest's tag in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Nested indexes deeper than this are refused (a loop or a hostile layout).
const MAX_INDEX_DEPTH: usize = 8;
/// Largest image config we read.
const MAX_CONFIG_SIZE: u64 = 8 * 1024 * 1024;

/// Which platforms of a multi-platform image to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSelection {
    /// The platform this program runs on.
    Host,
    /// These platforms.
    Some(Vec<Platform>),
    /// Every platform in the index.
    All,
}

/// One image manifest found in a layout.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Descriptor of the image manifest (what a SOCI index's `subject` points to).
    pub manifest_desc: Descriptor,
    /// The manifest itself.
    pub manifest: ImageManifest,
    /// The image's platform, from the index entry or the image config.
    pub platform: Option<Platform>,
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
        let mut found = Vec::new();
        self.collect(desc, selection, 0, None, &mut found)?;
        let explicit = matches!(selection, PlatformSelection::Some(_));
        if found.is_empty() || (explicit && found.iter().all(|i| i.platform.is_none())) {
            // Nothing matched: say what exists.
            let mut all = Vec::new();
            self.collect(desc, &PlatformSelection::All, 0, None, &mut all)?;
            let available: Vec<String> = all
                .iter()
                .map(|i| {
                    i.platform
                        .as_ref()
                        .map_or("unknown".into(), |p| p.to_string())
                })
                .collect();
            if found.is_empty() {
                return Err(Error::NoMatchingPlatform {
                    wanted: match selection {
                        PlatformSelection::Host => Platform::host().to_string(),
                        PlatformSelection::Some(ps) => ps
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        PlatformSelection::All => "any".into(),
                    },
                    image: format!("{} ({})", self.dir.display(), desc.digest()),
                    available: available.join(", "),
                });
            }
        }
        Ok(found)
    }

    fn collect(
        &self,
        desc: &Descriptor,
        selection: &PlatformSelection,
        depth: usize,
        platform: Option<Platform>,
        out: &mut Vec<ResolvedImage>,
    ) -> Result<()> {
        if depth > MAX_INDEX_DEPTH {
            return Err(Error::InvalidManifest {
                what: desc.digest().to_string(),
                reason: format!("image indexes nested deeper than {MAX_INDEX_DEPTH}"),
            });
        }
        let bytes = self.read_blob(desc, manifest::MAX_MANIFEST_SIZE as u64)?;
        match manifest::parse(&bytes, desc.digest().as_ref())? {
            ParsedManifest::Index(index) => {
                for child in index.manifests() {
                    let child_platform = child.platform().as_ref().map(Platform::from_oci);
                    let keep = match (&child_platform, selection) {
                        (_, PlatformSelection::All) => true,
                        (Some(p), PlatformSelection::Host) => Platform::host().matches(p),
                        (Some(p), PlatformSelection::Some(wanted)) => {
                            wanted.iter().any(|w| w.matches(p))
                        }
                        (None, _) => true,
                    };
                    if keep {
                        self.collect(child, selection, depth + 1, child_platform, out)?;
                    }
                }
            }
            ParsedManifest::Image(manifest) => {
                if is_image(&manifest) {
                    let platform = match platform {
                        Some(p) => Some(p),
                        None => self.config_platform(&manifest)?,
                    };
                    let keep = match (&platform, selection) {
                        (Some(p), PlatformSelection::Some(wanted)) => {
                            wanted.iter().any(|w| w.matches(p))
                        }
                        (Some(p), PlatformSelection::Host) if depth > 0 => {
                            Platform::host().matches(p)
                        }
                        _ => true,
                    };
                    if keep
                        && !out
                            .iter()
                            .any(|i: &ResolvedImage| i.manifest_desc.digest() == desc.digest())
                    {
                        out.push(ResolvedImage {
                            manifest_desc: desc.clone(),
                            manifest: *manifest,
                            platform,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads the platform from an image's config blob, if it has a readable one.
    fn config_platform(&self, manifest: &ImageManifest) -> Result<Option<Platform>> {
        let config = manifest.config();
        let media = config.media_type().to_string();
        if !(media.contains("image.config") || media.contains("container.image")) {
            return Ok(None);
        }
        let bytes = self.read_blob(config, MAX_CONFIG_SIZE)?;
        let parsed: ImageConfiguration = match serde_json::from_slice(&bytes) {
            Ok(c) => c,
            Err(_) => return Ok(None),
        };
        Ok(Some(Platform::new(
            &parsed.os().to_string(),
            &parsed.architecture().to_string(),
            parsed.variant().as_deref(),
        )))
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
fn is_image(manifest: &ImageManifest) -> bool {
    let config = manifest.config().media_type().to_string();
    manifest.artifact_type().is_none()
        && (config == "application/vnd.oci.image.config.v1+json"
            || config == "application/vnd.docker.container.image.v1+json")
}

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
