//! Deciding whether a layer containerd is about to pull can be mounted lazily: find the
//! image's SOCI index (once per image, cached), check that it belongs to the image, and
//! pick the layer's zTOC. Every failure here means "pull normally", never a failed pull.

use crate::metadata::RemoteLayerInfo;
use lazyfs::discover::{self, Modes};
use oci::manifest::ParsedManifest;
use oci::reference::ImageRef;
use oci::soci_index::SociIndex;
use oci::{Digest, ImageManifest};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// How long a failed lookup is remembered, so the layers of one pull do not each repeat it.
const FAILURE_TTL: Duration = Duration::from_secs(30);
/// How many images' lookups are remembered.
const MAX_CACHED_IMAGES: usize = 256;

/// The index found for one image manifest.
#[derive(Debug)]
pub struct ImageIndex {
    /// The image manifest.
    pub manifest: ImageManifest,
    /// The SOCI index digest.
    pub index_digest: Digest,
    /// The SOCI index.
    pub index: SociIndex,
    /// How it was found.
    pub found_through: &'static str,
}

type Lookup = Arc<OnceCell<(Instant, Result<Arc<ImageIndex>, String>)>>;
/// (image reference, manifest digest, index digest the pull named).
type LookupKey = (String, String, Option<String>);

/// Finds SOCI indexes in registries, remembering the answers per image.
pub struct Resolver {
    client: registry::Client,
    modes: Modes,
    cache: Mutex<HashMap<LookupKey, Lookup>>,
}

/// What to do with one layer.
#[derive(Debug)]
pub enum LayerPlan {
    /// Mount it lazily.
    Lazy(RemoteLayerInfo),
    /// Pull it normally, for this reason (logged).
    Pull(String),
}

impl Resolver {
    /// A resolver fetching with `client`, using the index versions `modes` allows.
    pub fn new(client: registry::Client, modes: Modes) -> Self {
        Resolver {
            client,
            modes,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Plans layer `layer_digest` of image `image_ref` (manifest `manifest_digest`), using
    /// the index `given_index` when the pull named one.
    pub async fn plan(
        &self,
        image_ref: &str,
        manifest_digest: &str,
        layer_digest: &str,
        given_index: Option<&str>,
    ) -> LayerPlan {
        let key = (
            image_ref.to_owned(),
            manifest_digest.to_owned(),
            given_index.map(str::to_owned),
        );
        let cell = {
            let Ok(mut cache) = self.cache.lock() else {
                return LayerPlan::Pull("internal: resolver cache poisoned".into());
            };
            let stale = cache
                .get(&key)
                .and_then(|c| c.get())
                .is_some_and(|(at, r)| r.is_err() && at.elapsed() > FAILURE_TTL);
            if stale {
                cache.remove(&key);
            }
            if cache.len() >= MAX_CACHED_IMAGES && !cache.contains_key(&key) {
                cache.clear();
            }
            cache.entry(key).or_default().clone()
        };
        let (_, found) = cell
            .get_or_init(|| async {
                let r = self
                    .find(image_ref, manifest_digest, given_index)
                    .await
                    .map(Arc::new);
                match &r {
                    Ok(found) => tracing::info!(
                        image = image_ref,
                        index = %found.index_digest,
                        through = found.found_through,
                        "SOCI index found"
                    ),
                    Err(e) => tracing::info!(
                        image = image_ref,
                        "no usable SOCI index, pulling normally: {e}"
                    ),
                }
                (Instant::now(), r)
            })
            .await;
        let found = match found {
            Ok(f) => f,
            Err(e) => return LayerPlan::Pull(e.clone()),
        };
        plan_layer(image_ref, manifest_digest, layer_digest, found)
    }

    /// The layers of the image that have a zTOC in its SOCI index, as [`Resolver::plan`]
    /// found it (none when it found no usable index): the layers Prepare mounts lazily.
    pub async fn lazy_layers(
        &self,
        image_ref: &str,
        manifest_digest: &str,
        given_index: Option<&str>,
    ) -> std::collections::HashSet<Digest> {
        let key = (
            image_ref.to_owned(),
            manifest_digest.to_owned(),
            given_index.map(str::to_owned),
        );
        let cell = {
            let Ok(cache) = self.cache.lock() else {
                return Default::default();
            };
            cache.get(&key).cloned()
        };
        match cell.as_deref().and_then(OnceCell::get) {
            Some((_, Ok(found))) => found
                .index
                .ztocs
                .iter()
                .map(|z| z.layer_digest.clone())
                .collect(),
            _ => Default::default(),
        }
    }

    async fn find(
        &self,
        image_ref: &str,
        manifest_digest: &str,
        given_index: Option<&str>,
    ) -> Result<ImageIndex, String> {
        let reference = ImageRef::parse(image_ref).map_err(|e| e.to_string())?;
        let ImageRef::Registry {
            registry,
            repository,
            tag,
            ..
        } = &reference
        else {
            return Err(format!("{image_ref} is not a registry reference"));
        };
        let repo = self
            .client
            .repository(registry, repository)
            .map_err(|e| registry::error_chain(&e))?;
        let manifest_digest =
            oci::digest::parse(manifest_digest).map_err(|e| format!("manifest digest: {e}"))?;
        let fetched = repo
            .get_manifest(manifest_digest.as_ref())
            .await
            .map_err(|e| registry::error_chain(&e))?;
        let manifest =
            match oci::manifest::parse(&fetched.bytes, &format!("manifest {manifest_digest}"))
                .map_err(|e| e.to_string())?
            {
                ParsedManifest::Image(m) => *m,
                ParsedManifest::Index(_) => {
                    return Err(format!(
                        "{manifest_digest} is an image index, not an image manifest"
                    ))
                }
            };
        let found = match given_index {
            Some(d) => {
                let d = oci::digest::parse(d).map_err(|e| format!("SOCI index digest: {e}"))?;
                discover::fetch_given_index(&repo, image_ref, &d, &manifest_digest)
                    .await
                    .map_err(|e| registry::error_chain(&e))?
            }
            None => {
                // The v2 binding lives in the image index the tag points to.
                let top = match tag {
                    Some(t) => match repo.get_manifest(t).await {
                        Ok(m) => m.bytes,
                        Err(e) => {
                            tracing::debug!("reading {image_ref} for its v2 binding: {e}");
                            fetched.bytes.clone()
                        }
                    },
                    None => fetched.bytes.clone(),
                };
                discover::find_index_in_modes(
                    &repo,
                    image_ref,
                    &top,
                    &manifest_digest,
                    &manifest,
                    self.modes,
                )
                .await
                .map_err(|e| registry::error_chain(&e))?
            }
        };
        // An index made for another image (or a stale one) would serve wrong files: every
        // zTOC must describe a layer of this manifest.
        let layers: Vec<&Digest> = manifest.layers().iter().map(|l| l.digest()).collect();
        if let Some(z) = found
            .index
            .ztocs
            .iter()
            .find(|z| !layers.contains(&&z.layer_digest))
        {
            return Err(format!(
                "SOCI index {} does not match the image: its zTOC {} is for layer {}, which {manifest_digest} does not have",
                found.digest, z.digest, z.layer_digest
            ));
        }
        Ok(ImageIndex {
            manifest,
            index_digest: found.digest,
            index: found.index,
            found_through: found.found_through,
        })
    }
}

fn plan_layer(
    image_ref: &str,
    manifest_digest: &str,
    layer_digest: &str,
    found: &ImageIndex,
) -> LayerPlan {
    let Some(layer) = found
        .manifest
        .layers()
        .iter()
        .find(|l| l.digest().as_ref() == layer_digest)
    else {
        return LayerPlan::Pull(format!(
            "layer {layer_digest} is not in manifest {manifest_digest}"
        ));
    };
    let Some(ztoc) = found
        .index
        .ztocs
        .iter()
        .find(|z| z.layer_digest.as_ref() == layer_digest)
    else {
        return LayerPlan::Pull(format!(
            "layer {layer_digest} has no zTOC in SOCI index {} (small layers are fetched whole)",
            found.index_digest
        ));
    };
    let prefetch = found
        .index
        .prefetch
        .iter()
        .find(|p| p.layer_digest.as_ref() == layer_digest)
        .map(|p| (p.digest.to_string(), p.size));
    LayerPlan::Lazy(RemoteLayerInfo {
        image_ref: image_ref.to_owned(),
        manifest_digest: manifest_digest.to_owned(),
        index_digest: found.index_digest.to_string(),
        layer_digest: layer_digest.to_owned(),
        layer_size: layer.size(),
        layer_media_type: layer.media_type().to_string(),
        ztoc_digest: ztoc.digest.to_string(),
        ztoc_size: ztoc.size,
        prefetch,
        lean: ztoc.lean.as_ref().map(|l| (l.digest.to_string(), l.size)),
    })
}
