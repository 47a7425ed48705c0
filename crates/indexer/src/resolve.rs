//! Following a registry reference down to its image manifests, with [`oci::resolve`] doing
//! the walking (one implementation for layouts, containerd and registries).

use crate::error::Result;
use oci::resolve::{ManifestFetcher, PlatformSelection, ResolvedImage};
use oci::Descriptor;
use registry::Repository;
use std::collections::HashMap;

/// Reads manifests, indexes and configs from a registry for [`oci::resolve`], verified by
/// digest; remembers what it fetched so nothing is fetched twice. It blocks on `handle`, so
/// it is used outside the runtime (the CLI's main thread) or on a blocking thread.
pub struct RegistryFetcher {
    /// Runtime to block on.
    pub handle: tokio::runtime::Handle,
    /// Repository to read from.
    pub repo: Repository,
    /// Objects fetched so far, by digest.
    pub cache: HashMap<String, Vec<u8>>,
}

impl RegistryFetcher {
    /// A fetcher with an empty cache.
    pub fn new(handle: tokio::runtime::Handle, repo: Repository) -> Self {
        RegistryFetcher {
            handle,
            repo,
            cache: HashMap::new(),
        }
    }
}

impl ManifestFetcher for RegistryFetcher {
    fn fetch(&mut self, desc: &Descriptor, limit: u64) -> oci::Result<Vec<u8>> {
        let key = desc.digest().to_string();
        if let Some(b) = self.cache.get(&key) {
            return Ok(b.clone());
        }
        let media = desc.media_type().to_string();
        let is_manifest = media.contains("manifest") || media.contains("index");
        let repo = &self.repo;
        let bytes = self
            .handle
            .block_on(async {
                if is_manifest {
                    repo.get_manifest(&key).await.map(|m| m.bytes)
                } else {
                    repo.get_blob_bytes(desc.digest(), limit).await
                }
            })
            .map_err(|e| oci::Error::Remote(Box::new(e)))?
            .to_vec();
        self.cache.insert(key, bytes.clone());
        Ok(bytes)
    }
}

/// A top-level object fetched from a registry.
#[derive(Debug, Clone)]
pub struct Top {
    /// Its descriptor (media type from the registry, falling back to an OCI manifest).
    pub desc: Descriptor,
    /// Its bytes, verified against the digest.
    pub bytes: Vec<u8>,
}

/// Fetches the object `reference` (tag or digest) names.
pub async fn fetch_top(repo: &Repository, reference: &str) -> Result<Top> {
    let top = repo.get_manifest(reference).await?;
    let media = if top.media_type.is_empty() {
        oci::manifest::OCI_MANIFEST.to_owned()
    } else {
        top.media_type.clone()
    };
    let desc = Descriptor::new(
        oci::MediaType::from(media.as_str()),
        top.bytes.len() as u64,
        top.digest.clone(),
    );
    Ok(Top {
        desc,
        bytes: top.bytes.to_vec(),
    })
}

/// Blocking: the image manifests of `top` selected by `selection`, fetched through
/// `fetcher` (whose cache is seeded with `top`). `image` names the image in errors.
pub fn image_manifests_blocking(
    fetcher: &mut RegistryFetcher,
    image: &str,
    top: &Top,
    selection: &PlatformSelection,
) -> Result<Vec<ResolvedImage>> {
    fetcher
        .cache
        .insert(top.desc.digest().to_string(), top.bytes.clone());
    Ok(oci::resolve::image_manifests(
        fetcher, image, &top.desc, selection,
    )?)
}

/// The image manifests of `top` selected by `selection`. The walk in [`oci::resolve`] is
/// synchronous, so it runs on a blocking thread that blocks on this runtime for each fetch.
pub async fn image_manifests(
    repo: &Repository,
    image: &str,
    top: &Top,
    selection: &PlatformSelection,
) -> Result<Vec<ResolvedImage>> {
    let mut fetcher = RegistryFetcher::new(tokio::runtime::Handle::current(), repo.clone());
    let image = image.to_owned();
    let top = top.clone();
    let selection = selection.clone();
    let what = format!("resolving {image}");
    tokio::task::spawn_blocking(move || {
        image_manifests_blocking(&mut fetcher, &image, &top, &selection)
    })
    .await
    .map_err(|e| crate::Error::Task {
        what,
        reason: e.to_string(),
    })?
}
