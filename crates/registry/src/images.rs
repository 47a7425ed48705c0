//! From a reference in a repository (a tag or digest) to the image manifests of the platforms
//! asked for, with [`oci::resolve`] doing the walking (one implementation for layouts,
//! containerd and registries). Used by everything that starts from an image in a registry:
//! `soci create`, `soci image rpull`, `soci mount`, the index builder.

use crate::client::Repository;
use crate::error::{Error, Result};
use oci::resolve::{CachingFetcher, PlatformSelection, ResolvedImage};
use oci::Descriptor;
use std::collections::HashMap;
use tokio::runtime::Handle;

/// The object a reference names (an image manifest or an image index).
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

/// A fetcher of manifests, indexes and configs from `repo` for [`oci::resolve`], verified by
/// digest and cached. It blocks on `handle`, so it is used off the runtime's worker threads.
pub fn registry_fetcher(handle: Handle, repo: Repository) -> CachingFetcher {
    CachingFetcher::new(Box::new(move |desc: &Descriptor, limit: u64| {
        handle
            .block_on(fetch_object(&repo, desc, limit))
            .map_err(|e| oci::Error::Remote(Box::new(e)))
    }))
}

/// Reads a manifest or index (by digest, from the manifests endpoint) or any other object
/// such as a config (a blob of at most `limit` bytes), verified against its digest.
pub async fn fetch_object(repo: &Repository, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
    let media = desc.media_type().to_string();
    let bytes = if media.contains("manifest") || media.contains("index") {
        repo.get_manifest(desc.digest().as_ref()).await?.bytes
    } else {
        repo.get_blob_bytes(desc.digest(), limit).await?
    };
    Ok(bytes.to_vec())
}

/// Image manifests found from a reference, with the objects fetched on the way.
#[derive(Debug, Clone)]
pub struct ResolvedImages {
    /// The image manifests selected.
    pub images: Vec<ResolvedImage>,
    /// Every manifest, index and config fetched while walking, by digest.
    pub fetched: HashMap<String, Vec<u8>>,
}

/// The image manifests of `top` selected by `selection`. The walk in [`oci::resolve`] is
/// synchronous, so it runs on a blocking thread that blocks on this runtime for each fetch.
/// `image` names the image in errors.
pub async fn image_manifests(
    repo: &Repository,
    image: &str,
    top: &Top,
    selection: &PlatformSelection,
) -> Result<ResolvedImages> {
    let mut fetcher = registry_fetcher(Handle::current(), repo.clone());
    fetcher
        .cache
        .insert(top.desc.digest().to_string(), top.bytes.clone());
    let (image, desc, selection) = (image.to_owned(), top.desc.clone(), selection.clone());
    let walked = tokio::task::spawn_blocking(move || {
        let images = oci::resolve::image_manifests(&mut fetcher, &image, &desc, &selection);
        images.map(|images| ResolvedImages {
            images,
            fetched: fetcher.cache,
        })
    })
    .await
    .map_err(|e| Error::Task {
        what: "resolving image manifests".to_owned(),
        reason: e.to_string(),
    })?;
    Ok(walked?)
}

/// Fetches the object `reference` names and resolves it to the image manifests selected; the
/// common start of every command that reads an image from a registry.
pub async fn resolve(
    repo: &Repository,
    reference: &str,
    selection: &PlatformSelection,
) -> Result<(Top, ResolvedImages)> {
    let top = fetch_top(repo, reference).await?;
    let at = if reference.contains(':') { '@' } else { ':' };
    let name = format!("{}/{}{at}{reference}", repo.registry(), repo.name());
    let images = image_manifests(repo, &name, &top, selection).await?;
    Ok((top, images))
}
