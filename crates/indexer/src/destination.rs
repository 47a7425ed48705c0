//! Where a converted (SOCI-enabled, v2) image is written: the source repository under a new
//! tag, another repository of the same registry (config and layers are mounted, not copied),
//! or a new OCI image layout (the source layout's blobs are hard-linked). The binding itself
//! is assembled by [`crate::binding`]; this writes its entries in order, each object after
//! the objects it references.

use crate::binding::{BindingStep, V2Binding};
use crate::error::{Error, Result};
use crate::index::BuiltIndex;
use crate::source::ImageSource;
use bytes::Bytes;
use oci::{Descriptor, Digest};
use registry::Repository;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 3;

/// Where a converted image goes.
#[derive(Clone)]
pub enum Destination {
    /// A repository of the source's registry.
    Registry {
        /// The repository.
        repo: Repository,
        /// The tag of the converted image index.
        tag: String,
        /// The source repository when it is another one (its blobs are mounted).
        mount_from: Option<String>,
    },
    /// A new OCI image layout directory (from an OCI layout source).
    Layout {
        /// The directory (new or empty).
        dir: PathBuf,
        /// The tag to give the converted image in `index.json`.
        tag: Option<String>,
    },
}

impl Destination {
    /// A new layout at `dir`, which must not exist or be empty, and not be `source_dir`.
    pub fn new_layout(dir: &Path, tag: Option<String>, source_dir: &Path) -> Result<Self> {
        let not_empty = dir.exists()
            && std::fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true);
        if not_empty {
            return Err(Error::Destination(format!(
                "{} exists and is not empty; the converted layout is written to a new or empty \
                 directory",
                dir.display()
            )));
        }
        if std::fs::canonicalize(dir).ok().as_deref() == Some(source_dir) {
            return Err(Error::Destination(
                "source and destination are the same directory".into(),
            ));
        }
        Ok(Destination::Layout {
            dir: dir.to_owned(),
            tag: tag.clone(),
        })
    }

    /// A printable name of the converted image.
    pub fn name(&self) -> String {
        match self {
            Destination::Registry { repo, tag, .. } => {
                format!("{}/{}:{tag}", repo.registry(), repo.name())
            }
            Destination::Layout { dir, .. } => dir.display().to_string(),
        }
    }
}

/// Writes `binding` (built from `source` with `indexes`) to `dest`: entries in order, each
/// SOCI index after its zTOCs, prefetch artifacts and the empty config, the new image index
/// last. Returns the manifests and indexes written. A new layout directory is removed again
/// when anything fails, so a failed run leaves no half-written layout behind.
pub async fn write_binding(
    dest: &Destination,
    source: &ImageSource,
    binding: &V2Binding,
    indexes: &[BuiltIndex],
) -> Result<Vec<Digest>> {
    let mut cleanup = RemoveOnError(match dest {
        Destination::Layout { dir, .. } if !dir.exists() => Some(dir.clone()),
        _ => None,
    });
    let writer = Writer { dest, source };
    writer.prepare()?;
    let mut written = Vec::new();
    for step in &binding.steps {
        match step {
            BindingStep::Unchanged { desc, bytes } => {
                writer.copy_unchanged(desc, bytes.as_deref()).await?
            }
            BindingStep::Copy {
                digest,
                bytes,
                index,
                ..
            } => {
                writer.put_image_manifest(digest, bytes).await?;
                written.push(digest.clone());
                if let Some(b) = index.and_then(|i| indexes.get(i)) {
                    writer.put_soci_index(b).await?;
                    written.push(b.digest.clone());
                }
            }
        }
    }
    writer
        .put_top(&binding.index_digest, &binding.index_bytes)
        .await?;
    written.push(binding.index_digest.clone());
    cleanup.0 = None;
    Ok(written)
}

/// Writes objects to a destination, copying or mounting what the new image shares with the
/// original.
struct Writer<'a> {
    dest: &'a Destination,
    source: &'a ImageSource,
}

impl Writer<'_> {
    /// A new layout: the source layout's blobs (hard links when possible) and `oci-layout`.
    fn prepare(&self) -> Result<()> {
        let Destination::Layout { dir, .. } = self.dest else {
            return Ok(());
        };
        let ImageSource::Layout { dir: src, .. } = self.source else {
            return Err(Error::Destination(
                "an OCI layout destination needs an OCI layout source".into(),
            ));
        };
        let from = src.join("blobs/sha256");
        let to = dir.join("blobs/sha256");
        std::fs::create_dir_all(&to).map_err(io_error("creating", &to))?;
        for entry in std::fs::read_dir(&from).map_err(io_error("reading", &from))? {
            let entry = entry.map_err(io_error("reading", &from))?;
            let target = to.join(entry.file_name());
            if std::fs::hard_link(entry.path(), &target).is_err() {
                std::fs::copy(entry.path(), &target).map_err(io_error("writing", &target))?;
            }
        }
        let marker = dir.join("oci-layout");
        std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io_error("writing", &marker))
    }

    /// A blob into the destination: pushed, or written to the layout (tmp + rename).
    async fn put_blob(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        match self.dest {
            Destination::Registry { repo, .. } => {
                repo.push_blob(digest, bytes, &[]).await?;
            }
            Destination::Layout { dir, .. } => {
                let path = dir.join("blobs/sha256").join(digest.digest());
                if !path.exists() {
                    let tmp = path.with_extension("partial");
                    std::fs::write(&tmp, &bytes).map_err(io_error("writing", &tmp))?;
                    std::fs::rename(&tmp, &path).map_err(io_error("writing", &path))?;
                }
            }
        }
        Ok(())
    }

    /// An entry kept as it is: already there in the same repository or layout; in another
    /// repository, copied after its blobs are mounted.
    async fn copy_unchanged(&self, desc: &Descriptor, bytes: Option<&[u8]>) -> Result<()> {
        let Destination::Registry {
            repo,
            mount_from: Some(_),
            ..
        } = self.dest
        else {
            return Ok(());
        };
        let media = desc.media_type().to_string();
        if media.contains("index") || media.contains("manifest.list") {
            return Err(Error::Destination(format!(
                "{} is a nested image index; converting into another repository supports flat \
                 indexes only (convert into the same repository)",
                desc.digest()
            )));
        }
        let bytes = match bytes {
            Some(b) => b.to_vec(),
            None => self.source.fetch(desc, MAX_MANIFEST).await?,
        };
        self.mount_referenced(&bytes).await?;
        repo.put_manifest(desc.digest().as_ref(), &media, Bytes::from(bytes))
            .await?;
        Ok(())
    }

    /// Makes the blobs a manifest references (config and layers) present in another
    /// destination repository by mounting them from the source repository.
    async fn mount_referenced(&self, manifest: &[u8]) -> Result<()> {
        let Destination::Registry {
            repo,
            mount_from: Some(from),
            ..
        } = self.dest
        else {
            return Ok(());
        };
        for digest in referenced_blobs(manifest)? {
            if !repo.mount_blob(&digest, from).await? {
                return Err(Error::Destination(format!(
                    "the registry did not mount blob {digest} from {from} into {}; it may not \
                     support cross-repository mounts",
                    repo.name()
                )));
            }
        }
        Ok(())
    }

    /// A rewritten image manifest, after the blobs it references.
    async fn put_image_manifest(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        match self.dest {
            Destination::Registry { repo, .. } => {
                self.mount_referenced(bytes).await?;
                let body = Bytes::copy_from_slice(bytes);
                repo.put_manifest(digest.as_ref(), oci::manifest::OCI_MANIFEST, body)
                    .await?;
                Ok(())
            }
            Destination::Layout { .. } => {
                self.put_blob(digest, Bytes::copy_from_slice(bytes)).await
            }
        }
    }

    /// A SOCI index after the blobs it references: zTOCs, prefetch artifacts, empty config.
    async fn put_soci_index(&self, index: &BuiltIndex) -> Result<()> {
        let mut blobs = index.blobs();
        blobs.push(crate::publish::empty_config_blob()?);
        match self.dest {
            Destination::Registry { repo, .. } => {
                crate::publish::push_blobs(repo, blobs, UPLOAD_CONCURRENCY).await?;
                let body = Bytes::from(index.bytes.clone());
                repo.put_manifest(index.digest.as_ref(), oci::manifest::OCI_MANIFEST, body)
                    .await?;
            }
            Destination::Layout { .. } => {
                for (digest, bytes) in blobs {
                    self.put_blob(&digest, bytes).await?;
                }
                self.put_blob(&index.digest, Bytes::from(index.bytes.clone()))
                    .await?;
            }
        }
        Ok(())
    }

    /// The new image index under the destination tag.
    async fn put_top(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        match self.dest {
            Destination::Registry { repo, tag, .. } => {
                let body = Bytes::copy_from_slice(bytes);
                repo.put_manifest(tag, oci::manifest::OCI_INDEX, body)
                    .await?;
                Ok(())
            }
            Destination::Layout { dir, tag } => {
                self.put_blob(digest, Bytes::copy_from_slice(bytes)).await?;
                write_layout_index(dir, digest, bytes.len(), tag.as_deref())
            }
        }
    }
}

/// Largest manifest copied unchanged into another repository.
const MAX_MANIFEST: u64 = oci::manifest::MAX_MANIFEST_SIZE as u64;

/// The config and layer digests a manifest references.
fn referenced_blobs(manifest: &[u8]) -> Result<Vec<Digest>> {
    let invalid = |reason: String| Error::InvalidImage {
        what: "a manifest copied into another repository".into(),
        reason,
    };
    let m: Value = serde_json::from_slice(manifest).map_err(|e| invalid(e.to_string()))?;
    let config = m.get("config").into_iter();
    let layers = m
        .get("layers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    config
        .chain(layers)
        .filter_map(|d| d.get("digest").and_then(Value::as_str))
        .map(|d| oci::digest::parse(d).map_err(|e| invalid(e.to_string())))
        .collect()
}

/// `index.json` of a layout holding only the converted image index.
fn write_layout_index(dir: &Path, digest: &Digest, size: usize, tag: Option<&str>) -> Result<()> {
    let mut desc = json!({
        "mediaType": oci::manifest::OCI_INDEX,
        "digest": digest.to_string(),
        "size": size,
    });
    if let Some(t) = tag {
        desc["annotations"] = json!({ oci::layout::REF_NAME_ANNOTATION: t });
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::manifest::OCI_INDEX,
        "manifests": [desc],
    });
    let path = dir.join("index.json");
    let bytes = serde_json::to_vec(&index).map_err(|e| Error::InvalidImage {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    std::fs::write(&path, bytes).map_err(io_error("writing", &path))
}

/// An I/O error naming what was being done to which path.
fn io_error<'a>(doing: &'a str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what: format!("{doing} {}", path.display()),
        source,
    }
}

/// Removes a directory on drop unless disarmed (by setting it to `None`).
struct RemoveOnError(Option<PathBuf>);

impl Drop for RemoveOnError {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("could not remove the partial output {}: {e}", dir.display());
            }
        }
    }
}
