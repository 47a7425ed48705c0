//! `soci push`: upload an image's SOCI index (v1), its zTOCs and prefetch artifacts to the
//! image's repository and make the index discoverable (referrers API, or the `sha256-<hex>`
//! tag schema).

use crate::containerd::Client;
use crate::remote::{self, RegistryArgs, Remote};
use crate::{ContainerdArgs, ContentStoreKind, Local};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use indexer::publish::{self, Referrer};
use oci::db::IndexRecord;
use oci::platform::Platform;
use oci::reference::ImageRef;
use oci::resolve::PlatformSelection;
use oci::soci_index;
use oci::Descriptor;
use registry::{BlobPush, Repository};
use std::collections::HashMap;
use std::path::Path;

/// What to do when the registry already holds another SOCI index for the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExistingIndex {
    /// Print a warning and push anyway.
    Warn,
    /// Do not push.
    Skip,
    /// Push without checking.
    Allow,
}

/// Arguments of `soci push`.
#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// Platform(s) whose index to push, os/arch[/variant] (default: this machine's).
    #[arg(long, short = 'p', conflicts_with = "all_platforms")]
    platform: Vec<String>,
    /// Push the indexes of every platform built locally for the image.
    #[arg(long)]
    all_platforms: bool,
    /// When the registry already has a SOCI index for the image: warn (and push), skip, or
    /// allow (push without checking).
    #[arg(long, value_enum, default_value = "warn")]
    existing_index: ExistingIndex,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 3)]
    max_concurrent_uploads: usize,
    /// Print only the digests of the indexes pushed.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Image whose SOCI index to push (HOST/REPO[:TAG|@DIGEST]), as given to `soci create`.
    image: String,
}

pub fn run(root: &Path, ctd: &ContainerdArgs, args: PushArgs) -> Result<()> {
    let reference = ImageRef::parse(&args.image)?;
    if !matches!(reference, ImageRef::Registry { .. }) {
        bail!(
            "{} is not a registry reference; push needs HOST/REPO[:TAG] (indexes of OCI layouts \
             are pushed by building them from the image in the registry: `soci create HOST/REPO:TAG`)",
            args.image
        );
    }
    let image_ref = crate::normalize_ref(&args.image)?;
    let local = Local::open(root)?;
    let wanted: Option<Vec<Platform>> = if args.all_platforms {
        None
    } else if args.platform.is_empty() {
        Some(vec![Platform::host()])
    } else {
        Some(
            args.platform
                .iter()
                .map(|p| Platform::parse(p))
                .collect::<Result<_, _>>()?,
        )
    };

    // The newest local v1 index per platform, as AWS's soci picks.
    let mut newest: HashMap<String, IndexRecord> = HashMap::new();
    for rec in local.db.list_indexes()? {
        if rec.image_ref != image_ref || rec.media_type != soci_index::SOCI_INDEX_V1 {
            continue;
        }
        let keep = match &wanted {
            None => true,
            Some(ws) => {
                Platform::parse(&rec.platform).is_ok_and(|p| ws.iter().any(|w| w.matches(&p)))
            }
        };
        if !keep {
            continue;
        }
        match newest.get(&rec.platform) {
            Some(old) if old.created >= rec.created => {}
            _ => {
                newest.insert(rec.platform.clone(), rec);
            }
        }
    }
    if newest.is_empty() {
        let which = match &wanted {
            None => "any platform".to_owned(),
            Some(ws) => ws
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        };
        bail!(
            "no SOCI index (v1) for {image_ref} ({which}) in {}; create one with `soci create {}`",
            root.display(),
            args.image
        );
    }
    let mut indexes: Vec<IndexRecord> = newest.into_values().collect();
    indexes.sort_by(|a, b| a.platform.cmp(&b.platform));

    let remote = Remote::new(&args.registry)?;
    let repo = remote.repository(&reference)?;
    let blobs = match ctd.content_store {
        ContentStoreKind::Soci => Blobs::Local,
        ContentStoreKind::Containerd => Blobs::Containerd(
            remote
                .rt
                .block_on(Client::connect(&ctd.address, &ctd.namespace))
                .context("--content-store containerd")?,
        ),
    };
    // The image as the registry has it now: an index must have been built for exactly these
    // manifests, or it would describe layers the image does not have.
    let (_, _, images) =
        remote::resolve_images(&remote, &repo, &reference, &PlatformSelection::All)?;

    let mut pushed = 0;
    for rec in &indexes {
        let Some(image) = images
            .iter()
            .find(|i| i.manifest_desc.digest().to_string() == rec.manifest_digest)
        else {
            let now: Vec<String> = images
                .iter()
                .map(|i| {
                    format!(
                        "{} ({})",
                        i.manifest_desc.digest(),
                        i.platform
                            .as_ref()
                            .map(|p| p.to_string())
                            .unwrap_or_default()
                    )
                })
                .collect();
            bail!(
                "refusing to push SOCI index {}: it was built for image manifest {} ({}), but {} \
                 now points at {}; rebuild it with `soci create {}`",
                rec.digest,
                rec.manifest_digest,
                rec.platform,
                args.image,
                now.join(", "),
                args.image
            );
        };
        if push_one(
            &remote,
            &repo,
            &local,
            &blobs,
            rec,
            &image.manifest_desc,
            &args,
        )? {
            pushed += 1;
        }
    }
    if !args.quiet {
        println!(
            "{pushed} of {} SOCI index(es) pushed to {}",
            indexes.len(),
            args.image
        );
    }
    Ok(())
}

/// Where the index, zTOC and prefetch blobs are read from (`--content-store`).
enum Blobs {
    /// The local store under --root.
    Local,
    /// containerd's content store, through this client.
    Containerd(Client),
}

impl Blobs {
    /// Reads one blob, verified against its digest; `what` names it in errors.
    fn get(
        &self,
        remote: &Remote,
        local: &Local,
        digest: &oci::Digest,
        what: &str,
    ) -> Result<Vec<u8>> {
        match self {
            Blobs::Local => local
                .store
                .get(digest)
                .with_context(|| format!("reading {what} {digest} from the local store")),
            Blobs::Containerd(client) => remote
                .rt
                .block_on(client.read_all(digest.as_ref(), MAX_ARTIFACT_SIZE))
                .with_context(|| {
                    format!(
                        "reading {what} {digest} from containerd's content store (namespace {}); \
                         was it created with `soci --content-store containerd create`?",
                        client.namespace()
                    )
                }),
        }
    }
}

/// Largest SOCI index, zTOC or prefetch artifact read from containerd.
const MAX_ARTIFACT_SIZE: u64 = 1 << 30;

/// Pushes one index; returns false when it was skipped.
fn push_one(
    remote: &Remote,
    repo: &Repository,
    local: &Local,
    blobs_from: &Blobs,
    rec: &IndexRecord,
    manifest: &Descriptor,
    args: &PushArgs,
) -> Result<bool> {
    let say = |s: String| {
        if !args.quiet {
            println!("{s}");
        }
    };
    let index_digest = oci::digest::parse(&rec.digest)?;
    let index_bytes = blobs_from.get(remote, local, &index_digest, "SOCI index")?;
    let index = soci_index::parse_index_manifest(&index_bytes, &rec.digest)?;
    match &index.subject {
        Some(s) if s.digest() == manifest.digest() => {}
        _ => bail!(
            "refusing to push SOCI index {}: its subject is not image manifest {}",
            rec.digest,
            manifest.digest()
        ),
    }

    let existing = remote
        .rt
        .block_on(repo.referrers(manifest.digest(), Some(soci_index::SOCI_INDEX_V1)))
        .with_context(|| format!("looking for SOCI indexes of {}", manifest.digest()))?;
    let already = existing
        .descriptors
        .iter()
        .any(|d| d.digest() == &index_digest);
    let others: Vec<String> = existing
        .descriptors
        .iter()
        .filter(|d| d.digest() != &index_digest)
        .map(|d| d.digest().to_string())
        .collect();
    if args.existing_index != ExistingIndex::Allow && !others.is_empty() {
        let found = if others.len() == 1 {
            format!(
                "SOCI index {} already in the registry for {}",
                others[0],
                manifest.digest()
            )
        } else {
            format!(
                "{} SOCI indexes already in the registry for {}",
                others.len(),
                manifest.digest()
            )
        };
        match args.existing_index {
            ExistingIndex::Skip => {
                say(format!("{found}: skipping ({})", rec.platform));
                return Ok(false);
            }
            _ => eprintln!("warning: {found}: pushing {} anyway", rec.digest),
        }
    }

    if args.quiet {
        println!("{}", rec.digest);
    } else {
        println!(
            "pushing soci index {} ({}) for {}",
            rec.digest,
            rec.platform,
            manifest.digest()
        );
    }
    // Blobs first, the manifest last: a registry never holds an index whose zTOCs (or
    // prefetch artifacts) are missing.
    let mut blobs: Vec<(oci::Digest, Bytes)> = Vec::new();
    for z in &index.ztocs {
        let bytes = blobs_from.get(remote, local, &z.digest, "zTOC")?;
        blobs.push((z.digest.clone(), Bytes::from(bytes)));
    }
    for p in &index.prefetch {
        let bytes = blobs_from.get(remote, local, &p.digest, "prefetch artifact")?;
        blobs.push((p.digest.clone(), Bytes::from(bytes)));
    }
    let pushed = remote.rt.block_on(publish::publish_v1(
        repo,
        manifest.digest(),
        Bytes::from(index_bytes),
        &index,
        blobs,
        args.max_concurrent_uploads,
    ))?;
    for b in &pushed.blobs {
        let what = match b.result {
            BlobPush::Existed => "already in the registry",
            BlobPush::Mounted => "mounted",
            BlobPush::Uploaded => "uploaded",
        };
        say(format!("  blob {} ({} bytes): {what}", b.digest, b.size));
    }
    match &pushed.referrer {
        Referrer::RegistryApi => say(format!(
            "  index {}: pushed; the registry's referrers API lists it",
            rec.digest
        )),
        Referrer::TagSchema { tag, added, .. } => say(format!(
            "  index {}: pushed; {} referrers tag {tag}",
            rec.digest,
            if *added { "added to" } else { "already in" },
        )),
    }
    if already {
        say(format!(
            "  (the registry already had {}; nothing new was added)",
            rec.digest
        ));
    }
    Ok(true)
}
