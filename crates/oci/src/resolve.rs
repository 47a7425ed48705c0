//! Following an image reference's top descriptor (manifest or nested indexes) down to the
//! image manifests of the platforms asked for. Shared by OCI layouts and registries: only the
//! way bytes are fetched differs.

use crate::error::{Error, Result};
use crate::manifest::{self, ParsedManifest};
use crate::platform::Platform;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};

/// Nested indexes deeper than this are refused (a loop or a hostile index).
const MAX_INDEX_DEPTH: usize = 8;
/// Largest image config we read.
pub const MAX_CONFIG_SIZE: u64 = 8 * 1024 * 1024;

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

/// One image manifest found.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Descriptor of the image manifest (what a SOCI index's `subject` points to).
    pub manifest_desc: Descriptor,
    /// The manifest itself.
    pub manifest: ImageManifest,
    /// The image's platform, from the index entry or the image config.
    pub platform: Option<Platform>,
}

/// Fetches the bytes of a manifest, index or config by descriptor, verified against its
/// digest, at most `limit` bytes.
pub trait ManifestFetcher {
    /// Fetches one object.
    fn fetch(&mut self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>>;
}

/// Reads one object for a [`CachingFetcher`]: descriptor and size limit in, verified bytes out.
pub type FetchFn = Box<dyn FnMut(&Descriptor, u64) -> Result<Vec<u8>> + Send>;

/// A [`ManifestFetcher`] that remembers what it read, so a walk followed by further reads
/// (the binding, a pull's config) fetches nothing twice. The source decides how to read.
pub struct CachingFetcher {
    fetch: FetchFn,
    /// Objects read so far, by digest.
    pub cache: std::collections::HashMap<String, Vec<u8>>,
}

impl CachingFetcher {
    /// A fetcher reading through `fetch`, with an empty cache.
    pub fn new(fetch: FetchFn) -> Self {
        CachingFetcher {
            fetch,
            cache: std::collections::HashMap::new(),
        }
    }
}

impl ManifestFetcher for CachingFetcher {
    fn fetch(&mut self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        let key = desc.digest().to_string();
        if let Some(b) = self.cache.get(&key) {
            return Ok(b.clone());
        }
        let bytes = (self.fetch)(desc, limit)?;
        self.cache.insert(key, bytes.clone());
        Ok(bytes)
    }
}

/// Follows `desc` (an image manifest or index) to the image manifests selected. `image` names
/// the image in error messages.
pub fn image_manifests(
    fetcher: &mut dyn ManifestFetcher,
    image: &str,
    desc: &Descriptor,
    selection: &PlatformSelection,
) -> Result<Vec<ResolvedImage>> {
    let mut found = Vec::new();
    collect(fetcher, desc, selection, 0, None, &mut found)?;
    if found.is_empty() {
        // Nothing matched: say what exists.
        let mut all = Vec::new();
        collect(fetcher, desc, &PlatformSelection::All, 0, None, &mut all)?;
        let available: Vec<String> = all
            .iter()
            .map(|i| {
                i.platform
                    .as_ref()
                    .map_or("unknown".into(), |p| p.to_string())
            })
            .collect();
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
            image: format!("{image} ({})", desc.digest()),
            available: available.join(", "),
        });
    }
    Ok(found)
}

fn collect(
    fetcher: &mut dyn ManifestFetcher,
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
    let bytes = fetcher.fetch(desc, manifest::MAX_MANIFEST_SIZE as u64)?;
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
                    collect(fetcher, child, selection, depth + 1, child_platform, out)?;
                }
            }
        }
        ParsedManifest::Image(manifest) => {
            if is_image(&manifest) {
                let platform = match platform {
                    Some(p) => Some(p),
                    None => config_platform(fetcher, &manifest)?,
                };
                let keep = match (&platform, selection) {
                    (Some(p), PlatformSelection::Some(wanted)) => {
                        wanted.iter().any(|w| w.matches(p))
                    }
                    (Some(p), PlatformSelection::Host) if depth > 0 => Platform::host().matches(p),
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
fn config_platform(
    fetcher: &mut dyn ManifestFetcher,
    manifest: &ImageManifest,
) -> Result<Option<Platform>> {
    let config = manifest.config();
    let media = config.media_type().to_string();
    if !(media.contains("image.config") || media.contains("container.image")) {
        return Ok(None);
    }
    let bytes = fetcher.fetch(config, MAX_CONFIG_SIZE)?;
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

/// True for runnable images (not artifacts such as SOCI indexes or attestations).
pub(crate) fn is_image(manifest: &ImageManifest) -> bool {
    let config = manifest.config().media_type().to_string();
    manifest.artifact_type().is_none()
        && (config == "application/vnd.oci.image.config.v1+json"
            || config == "application/vnd.docker.container.image.v1+json")
}
