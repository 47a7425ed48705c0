//! `soci push`: upload an image's SOCI index (v1), its zTOCs and prefetch artifacts to the
//! image's repository and make the index discoverable (referrers API, or the `sha256-<hex>`
//! tag schema). The work is `indexer::push`; this parses the flags and prints.

use crate::remote::{RegistryArgs, Remote};
use crate::{ContainerdArgs, ContentStoreKind};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indexer::local::LocalStore;
use indexer::publish::{Referrer, V1Pushed};
use indexer::push::{self, BlobStore, ExistingIndex, PushOutcome};
use oci::db::IndexRecord;
use oci::platform::Platform;
use oci::reference::ImageRef;
use oci::resolve::PlatformSelection;
use registry::BlobPush;
use std::path::Path;

/// `--existing-index`: what to do when the registry already holds another SOCI index for
/// the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExistingIndexArg {
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
    existing_index: ExistingIndexArg,
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
    let local = LocalStore::open(root)?;
    let records = recorded(&local, root, &args)?;
    let remote = Remote::new(&args.registry)?;
    let repo = remote.repository(&reference)?;
    remote.rt.block_on(async {
        let client = match ctd.content_store {
            ContentStoreKind::Soci => None,
            ContentStoreKind::Containerd => Some(
                containerd::Client::connect(&ctd.address, &ctd.namespace)
                    .await
                    .context("--content-store containerd")?,
            ),
        };
        let blobs = match &client {
            None => BlobStore::Local(&local),
            Some(c) => BlobStore::Containerd(c),
        };
        // The image as the registry has it now: an index must have been built for exactly
        // these manifests, or it would describe layers the image does not have.
        let tag_or_digest = crate::remote::reference_of(&reference);
        let source = indexer::ImageSource::registry(repo.clone(), &tag_or_digest);
        let opened = source.open(&PlatformSelection::All).await?;
        let mut pushed = 0;
        for rec in &records {
            let manifest = push::manifest_for(rec, &opened.images, &args.image)?;
            let policy = existing_policy(args.existing_index);
            let outcome = push::push_recorded(
                &repo,
                rec,
                manifest,
                &blobs,
                policy,
                args.max_concurrent_uploads,
            )
            .await
            .with_context(|| {
                format!(
                    "pushing SOCI index {} for {}",
                    rec.digest,
                    manifest.digest()
                )
            })?;
            pushed += usize::from(report(&args, rec, manifest.digest(), &outcome));
        }
        if !args.quiet {
            let total = records.len();
            println!(
                "{pushed} of {total} SOCI index(es) pushed to {}",
                args.image
            );
        }
        Ok(())
    })
}

/// The newest recorded v1 index per platform asked for; an error saying how to make one when
/// there is none.
fn recorded(local: &LocalStore, root: &Path, args: &PushArgs) -> Result<Vec<IndexRecord>> {
    let image_ref = crate::normalize_ref(&args.image)?;
    let wanted = wanted_platforms(args)?;
    let records = push::newest_recorded(local, &image_ref, wanted.as_deref())?;
    if records.is_empty() {
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
    Ok(records)
}

/// `--platform` / `--all-platforms` (`None`: every platform).
fn wanted_platforms(args: &PushArgs) -> Result<Option<Vec<Platform>>> {
    Ok(if args.all_platforms {
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
    })
}

fn existing_policy(arg: ExistingIndexArg) -> ExistingIndex {
    match arg {
        ExistingIndexArg::Warn => ExistingIndex::Warn,
        ExistingIndexArg::Skip => ExistingIndex::Skip,
        ExistingIndexArg::Allow => ExistingIndex::Allow,
    }
}

/// Prints what pushing one index did; true when it was pushed.
fn report(
    args: &PushArgs,
    rec: &IndexRecord,
    manifest: &oci::Digest,
    outcome: &PushOutcome,
) -> bool {
    let say = |s: String| {
        if !args.quiet {
            println!("{s}");
        }
    };
    let found = |others: &[oci::Digest]| match others {
        [one] => format!("SOCI index {one} already in the registry for {manifest}"),
        many => format!(
            "{} SOCI indexes already in the registry for {manifest}",
            many.len()
        ),
    };
    let (pushed, already) = match outcome {
        PushOutcome::Skipped { others } => {
            say(format!("{}: skipping ({})", found(others), rec.platform));
            return false;
        }
        PushOutcome::Pushed {
            pushed,
            others,
            already,
        } => {
            if !others.is_empty() && args.existing_index == ExistingIndexArg::Warn {
                eprintln!("warning: {}: pushing {} anyway", found(others), rec.digest);
            }
            (pushed, *already)
        }
    };
    if args.quiet {
        println!("{}", rec.digest);
    } else {
        println!(
            "pushing soci index {} ({}) for {manifest}",
            rec.digest, rec.platform
        );
        print_pushed(rec, pushed);
    }
    if already {
        say(format!(
            "  (the registry already had {}; nothing new was added)",
            rec.digest
        ));
    }
    true
}

/// The blobs and referrer lines of one push.
fn print_pushed(rec: &IndexRecord, pushed: &V1Pushed) {
    for b in &pushed.blobs {
        let what = match b.result {
            BlobPush::Existed => "already in the registry",
            BlobPush::Mounted => "mounted",
            BlobPush::Uploaded => "uploaded",
        };
        println!("  blob {} ({} bytes): {what}", b.digest, b.size);
    }
    match &pushed.referrer {
        Referrer::RegistryApi => println!(
            "  index {}: pushed; the registry's referrers API lists it",
            rec.digest
        ),
        Referrer::TagSchema { tag, added, .. } => println!(
            "  index {}: pushed; {} referrers tag {tag}",
            rec.digest,
            if *added { "added to" } else { "already in" },
        ),
    }
}
