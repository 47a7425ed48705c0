//! `soci convert`: make a SOCI-enabled image (SOCI index manifest v2): a new image index at
//! the destination holding a copy of each image manifest annotated with its SOCI index digest,
//! plus the SOCI index manifests. Layers are shared with the original image: never
//! re-uploaded (same repository) or copied (another repository: mounted). The work is
//! `indexer::pipeline::convert`; this parses the flags and prints what was written.

use crate::create::{print_index_layers, print_prefetch_missing, terminal_build, IndexOptions};
use crate::remote::{RegistryArgs, Remote};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indexer::destination::Destination;
use indexer::local::LocalStore;
use indexer::pipeline;
use indexer::ImageSource;
use oci::reference::ImageRef;
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

pub fn run(root: &Path, args: ConvertArgs) -> Result<()> {
    let settings = args.index.settings()?;
    let remote = Remote::new(&args.registry)?;
    let (source, dest, dest_ref) = if args.standalone {
        layout_ends(&args)?
    } else {
        registry_ends(&remote, &args)?
    };
    remote.rt.block_on(async {
        let opened = source.open(&settings.platforms).await?;
        let local = LocalStore::open(root)?;
        let build = terminal_build(&source, &opened, &settings, &local);
        let converted = pipeline::convert(&build, &dest, &dest_ref)
            .await
            .with_context(|| format!("converting {}", args.src))?;
        let built = &converted.built;
        print_prefetch_missing(built, &args.src);
        for image in &built.indexes.without_ztocs {
            let platform = indexer::index::platform_text(image);
            println!("platform {platform}: every layer was skipped; no SOCI index for it");
        }
        for index in &built.indexes.indexes {
            print_index_layers(index, built);
        }
        for rec in &converted.records {
            println!(
                "soci index {} (v2) for {} -> manifest {}",
                rec.digest, rec.platform, rec.manifest_digest
            );
        }
        println!(
            "converted image {} written to {}",
            converted.index_digest,
            dest.name()
        );
        Ok(())
    })
}

/// `--standalone`: an OCI layout to a new layout directory.
fn layout_ends(args: &ConvertArgs) -> Result<(ImageSource, Destination, String)> {
    if args.format == OutputFormat::OciArchive {
        bail!("--format oci-archive is not supported yet; use --format oci-dir (and `tar` the directory if you need an archive)");
    }
    let (dir, tag, digest) = match ImageRef::parse(&args.src) {
        Ok(ImageRef::OciLayout { dir, tag, digest }) => (dir, tag, digest),
        _ => (PathBuf::from(&args.src), None, None),
    };
    let source = ImageSource::layout(&dir, tag.clone(), digest)?;
    let ImageSource::Layout { dir: src_dir, .. } = &source else {
        bail!("internal error: a layout source that is not a layout");
    };
    let out = PathBuf::from(args.dst.strip_prefix("oci:").unwrap_or(&args.dst));
    let dest = Destination::new_layout(&out, tag.clone(), src_dir)?;
    let canonical = std::fs::canonicalize(&out).unwrap_or(out);
    let dest_ref = ImageRef::OciLayout {
        dir: canonical,
        tag,
        digest: None,
    }
    .to_string();
    Ok((source, dest, dest_ref))
}

/// An image in a registry to a tag of the same registry (any repository).
fn registry_ends(
    remote: &Remote,
    args: &ConvertArgs,
) -> Result<(ImageSource, Destination, String)> {
    let src = ImageRef::parse(&args.src)?;
    if matches!(src, ImageRef::OciLayout { .. }) {
        bail!(
            "{} is an OCI layout; convert layouts with --standalone SRC_DIR DST_DIR",
            args.src
        );
    }
    let repo = remote.repository(&src)?;
    let (dest, dest_ref) = registry_destination(remote, &src, &repo, &args.dst)?;
    let source = ImageSource::registry(repo, &crate::remote::reference_of(&src));
    Ok((source, dest, dest_ref))
}

/// The destination of a converted image: a tag `dst` on the registry of `src` (whose
/// repository is `repo`), and its normalized reference.
pub(crate) fn registry_destination(
    remote: &Remote,
    src: &ImageRef,
    repo: &registry::Repository,
    dst: &str,
) -> Result<(Destination, String)> {
    let ImageRef::Registry { registry, .. } = src else {
        bail!("{src} is not a registry reference");
    };
    let parsed = ImageRef::parse(dst)?;
    let ImageRef::Registry {
        registry: dst_registry,
        repository: dst_repo,
        tag,
        digest,
    } = &parsed
    else {
        bail!("destination {dst} must be a registry reference HOST/REPO:TAG");
    };
    if digest.is_some() {
        bail!(
            "destination {dst} must name a tag, not a digest: the converted image is a new image"
        );
    }
    if dst_registry != registry {
        bail!(
            "destination registry {dst_registry} differs from the source's ({registry}); \
             convert within one registry (layers are mounted, not copied), then copy the \
             result with `skopeo copy --all`"
        );
    }
    let dest = Destination::Registry {
        repo: remote.client.repository(dst_registry, dst_repo)?,
        tag: tag.clone().unwrap_or_else(|| "latest".to_owned()),
        mount_from: (repo.name() != dst_repo).then(|| repo.name().to_owned()),
    };
    Ok((dest, crate::normalize_ref(dst)?))
}
