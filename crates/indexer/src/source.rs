//! Where an image is read from: a registry, an OCI image layout, or containerd's content store
//! (for an image pulled into containerd, with its registry for blobs containerd lacks, such as
//! the layers of a lazily pulled image). Every source resolves its reference to the image
//! manifests asked for, reads manifests and configs verified by digest, and opens layer blobs
//! as blocking readers for the zTOC builder.

use crate::error::{Error, Result};
use oci::layout::OciLayout;
use oci::resolve::{CachingFetcher, PlatformSelection, ResolvedImage};
use oci::{Descriptor, Digest};
use registry::images::Top;
use registry::Repository;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;

/// Largest manifest, index or config read from a source.
const MAX_OBJECT_SIZE: u64 = oci::manifest::MAX_MANIFEST_SIZE as u64;

/// An image to read, and where from.
#[derive(Clone)]
pub enum ImageSource {
    /// A registry repository and a tag or digest in it.
    Registry {
        /// The repository.
        repo: Repository,
        /// Tag or `sha256:` digest.
        reference: String,
    },
    /// An OCI image layout directory and, optionally, the tag or digest in it.
    Layout {
        /// The layout, opened.
        layout: Arc<OciLayout>,
        /// Its directory, canonical.
        dir: PathBuf,
        /// Tag (`org.opencontainers.image.ref.name`) to use.
        tag: Option<String>,
        /// Digest to use (wins over the tag).
        digest: Option<Digest>,
    },
    /// An image record in containerd.
    Containerd(ContainerdImage),
}

/// An image found in containerd: blobs are read from its content store, and from the
/// image's registry for blobs it lacks.
#[derive(Clone)]
pub struct ContainerdImage {
    /// The client, in the image's namespace.
    pub client: containerd::Client,
    /// The image record's name.
    pub name: String,
    /// The image's registry repository, for blobs containerd lacks.
    pub registry: Option<Repository>,
    /// Layers read from the registry because containerd lacked them.
    from_registry: Arc<AtomicUsize>,
}

/// An image resolved to the manifests asked for.
#[derive(Debug, Clone)]
pub struct OpenedImage {
    /// The reference's top object (image manifest or index), verified.
    pub top: Top,
    /// Its JSON.
    pub top_json: Value,
    /// The image manifests selected.
    pub images: Vec<ResolvedImage>,
    /// Objects read on the way (manifests, indexes, configs), by digest.
    pub fetched: HashMap<String, Vec<u8>>,
}

impl ImageSource {
    /// An image in a registry.
    pub fn registry(repo: Repository, reference: &str) -> Self {
        ImageSource::Registry {
            repo,
            reference: reference.to_owned(),
        }
    }

    /// An image in the OCI layout at `dir` (by tag, digest, or its only entry).
    pub fn layout(dir: &Path, tag: Option<String>, digest: Option<Digest>) -> Result<Self> {
        let dir = std::fs::canonicalize(dir).map_err(|e| {
            Error::Oci(oci::Error::NotALayout {
                dir: dir.to_owned(),
                reason: format!("it cannot be opened ({e})"),
            })
        })?;
        let layout = OciLayout::open(&dir)?;
        Ok(ImageSource::Layout {
            layout: Arc::new(layout),
            dir,
            tag,
            digest,
        })
    }

    /// The image named `names[0]` (or a later name: as typed, then canonical) in containerd,
    /// or `None` when containerd has no such image. `registry` is the image's repository, for
    /// blobs containerd lacks.
    pub async fn containerd(
        client: containerd::Client,
        names: &[String],
        registry: Option<Repository>,
    ) -> Result<Option<Self>> {
        for name in names {
            match client.get_image(name).await {
                Ok(_) => {
                    return Ok(Some(ImageSource::Containerd(ContainerdImage {
                        client,
                        name: name.clone(),
                        registry,
                        from_registry: Arc::new(AtomicUsize::new(0)),
                    })))
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// The image in a registry, read from containerd's content store instead when containerd
    /// (socket `address`, namespace `namespace`) has an image record of one of `names` (as
    /// typed, then canonical): `ctr images pull` or `soci image rpull` put it there, and the
    /// blobs containerd lacks come from `repo`. An unreachable containerd is no error: the
    /// registry is used, with a log line saying why.
    pub async fn registry_or_containerd(
        repo: Repository,
        reference: &str,
        names: &[String],
        address: &Path,
        namespace: &str,
    ) -> Self {
        let registry = ImageSource::registry(repo.clone(), reference);
        let image = names.first().map(String::as_str).unwrap_or(reference);
        let client = match containerd::Client::connect(address, namespace).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!("not reading {image} from containerd: {e}");
                return registry;
            }
        };
        match ImageSource::containerd(client, names, Some(repo)).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                tracing::info!(
                    "containerd (namespace {namespace}) has no image {image}; reading it from the registry"
                );
                registry
            }
            Err(e) => {
                tracing::info!("not reading {image} from containerd: {e}");
                registry
            }
        }
    }

    /// Where the layers can be read again, recorded with each zTOC: `docker://HOST/REPO`, a
    /// layout directory, or for containerd its image's registry (empty when unknown).
    pub fn location(&self) -> String {
        match self {
            ImageSource::Registry { repo, .. } => registry_location(repo),
            ImageSource::Layout { dir, .. } => dir.display().to_string(),
            ImageSource::Containerd(c) => c
                .registry
                .as_ref()
                .map(registry_location)
                .unwrap_or_default(),
        }
    }

    /// Where the image is read from, for people: "the registry (docker://…)", "the OCI
    /// layout DIR", "containerd's content store (image NAME, namespace NS)".
    pub fn describe(&self) -> String {
        match self {
            ImageSource::Registry { .. } => format!("the registry ({})", self.location()),
            ImageSource::Layout { dir, .. } => format!("the OCI layout {}", dir.display()),
            ImageSource::Containerd(c) => format!(
                "containerd's content store (image {}, namespace {})",
                c.name,
                c.client.namespace()
            ),
        }
    }

    /// For containerd: how many layers were read from the registry because containerd lacked
    /// them (0 for the other sources).
    pub fn layers_from_registry(&self) -> usize {
        match self {
            ImageSource::Containerd(c) => c.from_registry.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// The top object (image manifest or index) the reference names, verified.
    pub async fn open_top(&self) -> Result<Top> {
        match self {
            ImageSource::Registry { repo, reference } => {
                Ok(registry::images::fetch_top(repo, reference).await?)
            }
            ImageSource::Layout {
                layout,
                tag,
                digest,
                ..
            } => {
                let desc = layout.resolve(tag.as_deref(), digest.as_ref())?;
                let bytes = layout.read_blob(&desc, MAX_OBJECT_SIZE)?;
                Ok(Top { desc, bytes })
            }
            ImageSource::Containerd(c) => c.top().await,
        }
    }

    /// A name for the image in error messages.
    fn name(&self) -> String {
        match self {
            ImageSource::Registry { repo, reference } => {
                let at = if reference.contains(':') { '@' } else { ':' };
                format!("{}/{}{at}{reference}", repo.registry(), repo.name())
            }
            ImageSource::Layout { dir, .. } => dir.display().to_string(),
            ImageSource::Containerd(c) => c.name.clone(),
        }
    }

    /// Resolves the reference to the image manifests `selection` asks for.
    pub async fn open(&self, selection: &PlatformSelection) -> Result<OpenedImage> {
        let top = self.open_top().await?;
        self.resolve_top(top, selection).await
    }

    /// Follows `top` (from [`ImageSource::open_top`]) to the image manifests `selection` asks
    /// for.
    pub async fn resolve_top(
        &self,
        top: Top,
        selection: &PlatformSelection,
    ) -> Result<OpenedImage> {
        let top_json = top_json(&top.bytes, top.desc.digest())?;
        let mut fetcher = blocking_fetcher(self.clone(), Handle::current(), &top);
        let (name, desc, selection) = (self.name(), top.desc.clone(), selection.clone());
        let (images, fetched) = tokio::task::spawn_blocking(move || {
            let images = oci::resolve::image_manifests(&mut fetcher, &name, &desc, &selection);
            (images, fetcher.cache)
        })
        .await
        .map_err(|e| Error::Task {
            what: format!("resolving {}", self.name()),
            reason: e.to_string(),
        })?;
        Ok(OpenedImage {
            top,
            top_json,
            images: images?,
            fetched,
        })
    }

    /// Reads a manifest, index or config of at most `limit` bytes, verified against its
    /// digest.
    pub async fn fetch(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        match self {
            ImageSource::Registry { repo, .. } => {
                Ok(registry::images::fetch_object(repo, desc, limit).await?)
            }
            ImageSource::Layout { layout, .. } => Ok(layout.read_blob(desc, limit)?),
            ImageSource::Containerd(c) => c.fetch(desc, limit).await,
        }
    }

    /// Opens a layer blob as a blocking reader (read it off the runtime's worker threads).
    /// The reader is not verified: the zTOC builder hashes what it reads.
    pub async fn open_layer(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        match self {
            ImageSource::Registry { repo, .. } => {
                Ok(Box::new(registry::blocking::blob_reader(repo, desc).await?))
            }
            ImageSource::Layout { layout, .. } => Ok(Box::new(layout.open_blob(desc.digest())?)),
            ImageSource::Containerd(c) => c.open_layer(desc).await,
        }
    }
}

impl ContainerdImage {
    /// The image record's target and its bytes.
    async fn top(&self) -> Result<Top> {
        let record = self.client.get_image(&self.name).await?;
        let invalid = |reason: String| Error::InvalidImage {
            what: format!("containerd's image {}", self.name),
            reason,
        };
        let target = record
            .target
            .ok_or_else(|| invalid("it has no target".into()))?;
        let digest = oci::digest::parse(&target.digest)
            .map_err(|e| invalid(format!("its target digest: {e}")))?;
        let desc = Descriptor::new(
            oci::MediaType::from(target.media_type.as_str()),
            u64::try_from(target.size).unwrap_or(0),
            digest,
        );
        let bytes = self.fetch(&desc, MAX_OBJECT_SIZE).await?;
        Ok(Top { desc, bytes })
    }

    /// Reads a small object: containerd first, then the registry.
    async fn fetch(&self, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        let digest = desc.digest().to_string();
        match self.client.read_all(&digest, limit).await {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => match &self.registry {
                Some(repo) => Ok(registry::images::fetch_object(repo, desc, limit).await?),
                None => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// A layer from the content store, or from the registry when containerd lacks it.
    async fn open_layer(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send>> {
        let digest = desc.digest().to_string();
        if self.client.has_content(&digest).await? {
            let stream = self.client.read_stream(&digest, 0).await?;
            let stream =
                futures_util::StreamExt::map(stream, |chunk| chunk.map_err(std::io::Error::other));
            return Ok(Box::new(registry::blocking::spawn_reader(
                &Handle::current(),
                stream,
            )));
        }
        let Some(repo) = &self.registry else {
            return Err(Error::InvalidImage {
                what: format!("layer {digest}"),
                reason: "it is not in containerd's content store".into(),
            });
        };
        tracing::info!(
            "layer {digest} is not in containerd's content store; reading it from the registry"
        );
        self.from_registry.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(registry::blocking::blob_reader(repo, desc).await?))
    }
}

/// `docker://HOST/REPO`.
fn registry_location(repo: &Repository) -> String {
    format!("docker://{}/{}", repo.registry(), repo.name())
}

/// Parses the top object (manifest or index) of an image as JSON; `what` names it.
pub fn top_json(bytes: &[u8], what: &Digest) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidImage {
        what: what.to_string(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// Reads objects for the synchronous [`oci::resolve`] walk by blocking on the runtime (the
/// walk runs on a blocking thread), seeded with `top`.
fn blocking_fetcher(source: ImageSource, handle: Handle, top: &Top) -> CachingFetcher {
    let mut fetcher = CachingFetcher::new(Box::new(move |desc: &Descriptor, limit: u64| {
        handle
            .block_on(source.fetch(desc, limit))
            .map_err(|e| match e {
                Error::Oci(o) => o,
                other => oci::Error::Remote(Box::new(other)),
            })
    }));
    fetcher
        .cache
        .insert(top.desc.digest().to_string(), top.bytes.clone());
    fetcher
}
