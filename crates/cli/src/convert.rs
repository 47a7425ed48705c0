//! `soci convert`: make a SOCI-enabled image (SOCI index manifest v2). The result is a new
//! image index at the destination that holds a copy of each image manifest annotated with its
//! SOCI index digest, plus the SOCI index manifests themselves. Layers are shared with the
//! original image: never re-uploaded (same repository) or mounted (another repository).

use crate::create::{self, IndexOptions, Opened, Source};
use crate::remote::RegistryArgs;
use crate::Local;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use indexer::binding::{self, BindingStep, V2Index};
use oci::db::IndexRecord;
use oci::reference::ImageRef;
use oci::resolve::ResolvedImage;
use oci::soci_index::{self, IndexVersion};
use oci::{Descriptor, Digest};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Output format of `--standalone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An OCI image layout directory.
    OciDir,
    /// An OCI image layout in a tar file (not supported yet).
    OciArchive,
}

/// Arguments of `soci convert`.
#[derive(Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    index: IndexOptions,
    /// Convert OCI image layouts on disk instead of images in a registry (no registry, no
    /// containerd): SRC and DST are directories.
    #[arg(long)]
    standalone: bool,
    /// Output format with --standalone.
    #[arg(long, value_enum, default_value = "oci-dir", requires = "standalone")]
    format: OutputFormat,
    /// Image to convert: HOST/REPO[:TAG|@DIGEST], or with --standalone an OCI layout
    /// directory (DIR, oci:DIR or oci:DIR:TAG).
    src: String,
    /// Where to write the converted image: HOST/REPO[:TAG] on the same registry, or with
    /// --standalone a new (or empty) directory.
    dst: String,
}

/// Where the converted image goes.
enum Dest {
    Registry {
        repo: registry::Repository,
        tag: String,
        /// Source repository name when it differs from the destination (blobs are mounted).
        mount_from: Option<String>,
    },
    Layout {
        dir: PathBuf,
        tag: Option<String>,
    },
}

pub fn run(root: &Path, args: ConvertArgs) -> Result<()> {
    args.index.check()?;
    let prefetch_paths = args.index.prefetch_paths()?;
    let src_ref = if args.standalone {
        if args.format == OutputFormat::OciArchive {
            bail!("--format oci-archive is not supported yet; use --format oci-dir (and `tar` the directory if you need an archive)");
        }
        match ImageRef::parse(&args.src) {
            Ok(r @ ImageRef::OciLayout { .. }) => r,
            _ => ImageRef::OciLayout {
                dir: PathBuf::from(&args.src),
                tag: None,
                digest: None,
            },
        }
    } else {
        let r = ImageRef::parse(&args.src)?;
        if matches!(r, ImageRef::OciLayout { .. }) {
            bail!(
                "{} is an OCI layout; convert layouts with --standalone SRC_DIR DST_DIR",
                args.src
            );
        }
        r
    };
    let selection = args.index.selection()?;
    let Opened {
        source,
        top,
        top_bytes,
        images,
    } = Source::open(&src_ref, &args.registry, &selection)?;

    let dest = match (&source, &src_ref) {
        (Source::Registry { repo, remote, .. }, ImageRef::Registry { registry, .. }) => {
            let dst = ImageRef::parse(&args.dst)?;
            let ImageRef::Registry {
                registry: dst_registry,
                repository: dst_repo,
                tag,
                digest,
            } = &dst
            else {
                bail!(
                    "destination {} must be a registry reference HOST/REPO:TAG",
                    args.dst
                );
            };
            if digest.is_some() {
                bail!("destination {} must name a tag, not a digest: the converted image is a new image", args.dst);
            }
            if dst_registry != registry {
                bail!(
                    "destination registry {dst_registry} differs from the source's ({registry}); \
                     convert within one registry (layers are mounted, not copied), then copy \
                     the result with `skopeo copy --all`"
                );
            }
            let dst_repo_handle = remote.client.repository(dst_registry, dst_repo)?;
            Dest::Registry {
                repo: dst_repo_handle,
                tag: tag.clone().unwrap_or_else(|| "latest".to_owned()),
                mount_from: (repo.name() != dst_repo).then(|| repo.name().to_owned()),
            }
        }
        (Source::Layout { dir, .. }, ImageRef::OciLayout { tag, .. }) => {
            let out = PathBuf::from(args.dst.strip_prefix("oci:").unwrap_or(&args.dst));
            if out.exists()
                && std::fs::read_dir(&out)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(true)
            {
                bail!(
                    "{} exists and is not empty; the converted layout is written to a new or empty directory",
                    out.display()
                );
            }
            if std::fs::canonicalize(&out).ok().as_ref() == Some(dir) {
                bail!("source and destination are the same directory");
            }
            Dest::Layout {
                dir: out,
                tag: tag.clone(),
            }
        }
        _ => bail!("internal error: source and destination kinds disagree"),
    };

    // Refuse images that are already SOCI-enabled: converting them again would nest indexes.
    let top_json = binding::top_json(&top_bytes, top.digest())?;
    if let Some(found) = binding::soci_enabled(&top_json, &images) {
        bail!(
            "{} is already a SOCI-enabled image ({found}); convert the original image instead",
            args.src
        );
    }

    let local = Local::open(root)?;
    let by_layer = create::index_layers(&source, &local, &images, &args.index)?;

    // One v2 SOCI index per image that has at least one zTOC.
    struct Built {
        image: ResolvedImage,
        digest: Digest,
        bytes: Vec<u8>,
        ztoc_records: Vec<oci::db::ZtocRecord>,
        prefetch: Vec<soci_index::PrefetchDescriptor>,
    }
    let mut built: Vec<Built> = Vec::new();
    for image in &images {
        let platform = indexer::index::platform_text(image);
        let (ztocs, records) = create::image_ztocs(image, &by_layer, args.index.span_size)?;
        if ztocs.is_empty() {
            println!("platform {platform}: every layer was skipped; no SOCI index for it");
            continue;
        }
        let prefetch = create::image_prefetch(
            &local,
            image,
            &by_layer,
            &prefetch_paths,
            &format!("{} ({platform})", args.src),
        )?;
        let (bytes, digest) = indexer::index::index_manifest(
            IndexVersion::V2,
            None,
            &ztocs,
            &prefetch,
            ztoc::DEFAULT_BUILD_TOOL,
        )?;
        local.store.put_bytes(&bytes)?;
        built.push(Built {
            image: image.clone(),
            digest,
            bytes,
            ztoc_records: records,
            prefetch,
        });
    }
    if built.is_empty() {
        bail!("no zTOCs were created for {}: every layer was skipped; lower --min-layer-size to index small layers", args.src);
    }

    let mut io = DestIo {
        dest: &dest,
        source: &source,
        store: &local.store,
    };
    // A standalone output directory is ours from here on: if anything fails it is removed
    // again, so a failed run leaves no half-written layout behind (the next run would refuse
    // the non-empty directory).
    let mut cleanup = RemoveOnError(match &dest {
        Dest::Layout { dir, .. } if !dir.exists() => Some(dir.clone()),
        _ => None,
    });
    io.prepare()?;

    // The new image index, assembled by the library; written here entry by entry, in order.
    let indexes: Vec<V2Index> = built
        .iter()
        .map(|b| V2Index::new(&b.image, &b.digest, b.bytes.len() as u64))
        .collect();
    let binding = binding::v2_binding(&top, &top_json, &images, &indexes, |d: &Descriptor| {
        source.fetch(d)
    })?;
    let mut records = Vec::new();
    for step in &binding.steps {
        match step {
            BindingStep::Unchanged { desc, bytes } => io.copy_referenced(desc, bytes.as_deref())?,
            BindingStep::Copy {
                digest: new_digest,
                bytes: new_bytes,
                index,
                ..
            } => {
                io.put_image_manifest(new_digest, new_bytes)?;
                let Some(b) = index.and_then(|i| built.get(i)) else {
                    continue;
                };
                // zTOCs, prefetch artifacts, the empty config and the SOCI index itself go
                // before the index that names them.
                io.put_soci_index(b.digest.clone(), &b.bytes, &b.ztoc_records, &b.prefetch)?;
                records.push(IndexRecord {
                    digest: b.digest.to_string(),
                    size: b.bytes.len() as u64,
                    image_ref: String::new(),
                    platform: indexer::index::platform_text(&b.image),
                    media_type: soci_index::SOCI_INDEX_V2.to_owned(),
                    manifest_digest: new_digest.to_string(),
                    created: time::OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    ztocs: b.ztoc_records.iter().map(|z| z.digest.clone()).collect(),
                    span_size: args.index.span_size,
                    min_layer_size: args.index.min_layer_size,
                });
            }
        }
    }
    let (index_digest, index_bytes) = (binding.index_digest, binding.index_bytes);
    let dst_name = io.put_top(&index_digest, &index_bytes)?;
    cleanup.0 = None;

    let dst_ref = match &dest {
        Dest::Registry { .. } => crate::normalize_ref(&args.dst)?,
        Dest::Layout { dir, tag } => {
            let dir = std::fs::canonicalize(dir).unwrap_or(dir.clone());
            ImageRef::OciLayout {
                dir,
                tag: tag.clone(),
                digest: None,
            }
            .to_string()
        }
    };
    for mut rec in records {
        rec.image_ref = dst_ref.clone();
        let ztocs: Vec<oci::db::ZtocRecord> = built
            .iter()
            .find(|b| b.digest.to_string() == rec.digest)
            .map(|b| b.ztoc_records.clone())
            .unwrap_or_default();
        local.db.put_index(&rec, &ztocs)?;
        println!(
            "soci index {} (v2) for {} -> manifest {}",
            rec.digest, rec.platform, rec.manifest_digest
        );
    }
    println!("converted image {index_digest} written to {dst_name}");
    Ok(())
}

/// Writes objects to the destination, copying or mounting what the new image shares with
/// the original.
struct DestIo<'a> {
    dest: &'a Dest,
    source: &'a Source,
    /// Local content store holding the zTOCs just built.
    store: &'a oci::store::ContentStore,
}

impl DestIo<'_> {
    /// Standalone: copies the source layout's blobs (hard links when possible).
    fn prepare(&mut self) -> Result<()> {
        let (Dest::Layout { dir, .. }, Source::Layout { dir: src, .. }) = (self.dest, self.source)
        else {
            return Ok(());
        };
        let from = src.join("blobs/sha256");
        let to = dir.join("blobs/sha256");
        std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
        for entry in
            std::fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))?
        {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if std::fs::hard_link(entry.path(), &target).is_err() {
                std::fs::copy(entry.path(), &target).with_context(|| {
                    format!("copying {} to {}", entry.path().display(), target.display())
                })?;
            }
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .with_context(|| format!("writing {}/oci-layout", dir.display()))?;
        Ok(())
    }

    fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        match self.dest {
            Dest::Registry { repo, .. } => {
                let rt = self.runtime()?;
                rt.block_on(repo.push_blob(digest, Bytes::copy_from_slice(bytes), &[]))?;
            }
            Dest::Layout { dir, .. } => {
                let path = dir.join("blobs/sha256").join(digest.digest());
                if !path.exists() {
                    let tmp = path.with_extension("partial");
                    std::fs::write(&tmp, bytes)
                        .with_context(|| format!("writing {}", tmp.display()))?;
                    std::fs::rename(&tmp, &path)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
        }
        Ok(())
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        match self.source {
            Source::Registry { remote, .. } => Ok(&remote.rt),
            Source::Layout { .. } | Source::Containerd(_) => {
                bail!("internal error: no registry runtime")
            }
        }
    }

    /// Makes sure the blobs a manifest references (config and layers) are in the destination
    /// repository: nothing to do in the same repository, a mount from another one.
    fn ensure_blobs(&self, manifest_bytes: &[u8]) -> Result<()> {
        let Dest::Registry {
            repo,
            mount_from: Some(from),
            ..
        } = self.dest
        else {
            return Ok(());
        };
        let m: Value = serde_json::from_slice(manifest_bytes)?;
        let mut digests = vec![m["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned()];
        for l in m["layers"].as_array().into_iter().flatten() {
            digests.push(l["digest"].as_str().unwrap_or_default().to_owned());
        }
        let rt = self.runtime()?;
        for d in digests.iter().filter(|d| !d.is_empty()) {
            let digest = oci::digest::parse(d)?;
            if !rt.block_on(repo.mount_blob(&digest, from))? {
                bail!(
                    "the registry did not mount blob {d} from {from} into {}; it may not support cross-repository mounts",
                    repo.name()
                );
            }
        }
        Ok(())
    }

    /// Copies an unchanged manifest (or other object) into the destination when it is
    /// another repository; in the same repository it is already there.
    fn copy_referenced(&self, desc: &Descriptor, bytes: Option<&[u8]>) -> Result<()> {
        match self.dest {
            Dest::Registry {
                mount_from: None, ..
            }
            | Dest::Layout { .. } => Ok(()),
            Dest::Registry { repo, .. } => {
                let bytes = match bytes {
                    Some(b) => b.to_vec(),
                    None => self.source.fetch(desc)?,
                };
                let media = desc.media_type().to_string();
                if media.contains("index") || media.contains("manifest.list") {
                    bail!(
                        "{} is a nested image index; converting into another repository supports flat indexes only (convert into the same repository)",
                        desc.digest()
                    );
                }
                self.ensure_blobs(&bytes)?;
                let rt = self.runtime()?;
                rt.block_on(repo.put_manifest(desc.digest().as_ref(), &media, Bytes::from(bytes)))?;
                Ok(())
            }
        }
    }

    /// Writes a rewritten image manifest; it references the original's config and layers,
    /// which are made present first.
    fn put_image_manifest(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        match self.dest {
            Dest::Registry { repo, .. } => {
                self.ensure_blobs(bytes)?;
                let rt = self.runtime()?;
                rt.block_on(repo.put_manifest(
                    digest.as_ref(),
                    oci::manifest::OCI_MANIFEST,
                    Bytes::copy_from_slice(bytes),
                ))?;
                Ok(())
            }
            Dest::Layout { .. } => self.put_blob(digest, bytes),
        }
    }

    /// Writes a SOCI index after the blobs it references: its zTOCs and prefetch artifacts
    /// (from the local store) and the empty config.
    fn put_soci_index(
        &self,
        digest: Digest,
        bytes: &[u8],
        ztocs: &[oci::db::ZtocRecord],
        prefetch: &[soci_index::PrefetchDescriptor],
    ) -> Result<()> {
        for z in ztocs {
            let d = oci::digest::parse(&z.digest)?;
            let b = self
                .store
                .get(&d)
                .with_context(|| format!("reading zTOC {d} from the local store"))?;
            self.put_blob(&d, &b)?;
        }
        for p in prefetch {
            let b = self.store.get(&p.digest).with_context(|| {
                format!(
                    "reading prefetch artifact {} from the local store",
                    p.digest
                )
            })?;
            self.put_blob(&p.digest, &b)?;
        }
        self.put_blob(
            &oci::digest::parse(soci_index::EMPTY_CONFIG_DIGEST)?,
            soci_index::EMPTY_CONFIG,
        )?;
        match self.dest {
            Dest::Registry { repo, .. } => {
                let rt = self.runtime()?;
                rt.block_on(repo.put_manifest(
                    digest.as_ref(),
                    oci::manifest::OCI_MANIFEST,
                    Bytes::copy_from_slice(bytes),
                ))?;
            }
            Dest::Layout { .. } => self.put_blob(&digest, bytes)?,
        }
        Ok(())
    }

    /// Writes the new image index under the destination tag; returns a printable name.
    fn put_top(&self, digest: &Digest, bytes: &[u8]) -> Result<String> {
        match self.dest {
            Dest::Registry { repo, tag, .. } => {
                let rt = self.runtime()?;
                rt.block_on(repo.put_manifest(
                    tag,
                    oci::manifest::OCI_INDEX,
                    Bytes::copy_from_slice(bytes),
                ))?;
                Ok(format!("{}/{}:{tag}", repo.registry(), repo.name()))
            }
            Dest::Layout { dir, tag } => {
                self.put_blob(digest, bytes)?;
                let mut desc = json!({
                    "mediaType": oci::manifest::OCI_INDEX,
                    "digest": digest.to_string(),
                    "size": bytes.len(),
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
                std::fs::write(&path, serde_json::to_vec(&index)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(dir.display().to_string())
            }
        }
    }
}

/// Removes a directory on drop unless disarmed (by setting it to `None`).
struct RemoveOnError(Option<PathBuf>);

impl Drop for RemoveOnError {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!(
                    "warning: could not remove the partial output {}: {e}",
                    dir.display()
                );
            }
        }
    }
}
