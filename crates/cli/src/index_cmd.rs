//! `soci index list|info|rm`: the SOCI indexes recorded locally, and with `list --remote` the
//! ones a registry holds for an image.

use crate::remote::{RegistryArgs, Remote};
use crate::table;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indexer::local::LocalStore;
use lazyfs::discover::ListedIndex;
use oci::db::IndexRecord;
use oci::platform::Platform;
use oci::reference::ImageRef;
use oci::resolve::PlatformSelection;
use std::io::Write;
use std::path::Path;

/// `soci index` subcommands.
#[derive(Subcommand)]
pub enum IndexCommand {
    /// List SOCI indexes.
    #[command(visible_alias = "ls")]
    List(IndexListArgs),
    /// Print a SOCI index manifest.
    Info {
        /// Digest of the SOCI index.
        digest: String,
    },
    /// Remove SOCI indexes (and zTOCs no other index uses).
    #[command(visible_alias = "remove")]
    Rm {
        /// Digests of the indexes to remove.
        digests: Vec<String>,
        /// Remove every index built for this image reference instead.
        #[arg(long = "ref")]
        image_ref: Option<String>,
    },
}

/// Arguments of `soci index list`.
#[derive(Args)]
pub struct IndexListArgs {
    /// Only indexes built for this image reference.
    #[arg(long = "ref", conflicts_with = "remote")]
    image_ref: Option<String>,
    /// List the SOCI indexes a registry holds for this image (v2 bindings in its image index,
    /// v1 indexes through the referrers API or the sha256-<digest> tag schema) instead of the
    /// local ones.
    #[arg(long, value_name = "IMAGE")]
    remote: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Only indexes for these platforms (os/arch[/variant]).
    #[arg(long, short = 'p')]
    platform: Vec<String>,
    /// Print digests only.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `soci index` subcommand.
pub fn run(root: &Path, cmd: IndexCommand) -> Result<()> {
    match cmd {
        IndexCommand::List(args) => match &args.remote {
            Some(image) => list_remote(image, &args),
            None => list_local(&LocalStore::open(root)?, &args),
        },
        IndexCommand::Info { digest } => info(&LocalStore::open(root)?, &digest),
        IndexCommand::Rm { digests, image_ref } => {
            remove(&LocalStore::open(root)?, &digests, image_ref.as_deref())
        }
    }
}

/// The `--platform` filters.
fn platforms(args: &IndexListArgs) -> Result<Vec<Platform>> {
    Ok(args
        .platform
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<_, _>>()?)
}

/// True when `platform` passes the filters (none: everything).
fn wanted(filters: &[Platform], platform: &str) -> bool {
    filters.is_empty()
        || Platform::parse(platform).is_ok_and(|p| filters.iter().any(|w| w.matches(&p)))
}

fn list_local(local: &LocalStore, args: &IndexListArgs) -> Result<()> {
    let filters = platforms(args)?;
    let wanted_ref = args
        .image_ref
        .as_deref()
        .map(crate::normalize_ref)
        .transpose()?;
    let mut rows: Vec<IndexRecord> = local
        .db
        .list_indexes()?
        .into_iter()
        .filter(|i| wanted_ref.as_ref().is_none_or(|r| &i.image_ref == r))
        .filter(|i| wanted(&filters, &i.platform))
        .collect();
    // Newest first, like AWS's listing.
    rows.sort_by(|a, b| b.created.cmp(&a.created).then(a.digest.cmp(&b.digest)));
    let table = rows.iter().map(|r| {
        vec![
            r.digest.clone(),
            r.size.to_string(),
            r.image_ref.clone(),
            r.platform.clone(),
            "application/vnd.oci.image.manifest.v1+json".into(),
            crate::index_version(&r.media_type).into(),
            table::age(&r.created),
        ]
    });
    let header = [
        "DIGEST",
        "SIZE",
        "IMAGE REF",
        "PLATFORM",
        "MEDIA TYPE",
        "MANIFEST VERSION",
        "CREATED",
    ];
    print_rows(args, &rows, |r| &r.digest, &header, table.collect())
}

/// Prints JSON, digests only, or a table with `header`.
fn print_rows<T: serde::Serialize>(
    args: &IndexListArgs,
    rows: &[T],
    digest: impl Fn(&T) -> &str,
    header: &[&str],
    cells: Vec<Vec<String>>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, rows)?;
        writeln!(out)?;
    } else if args.quiet {
        for r in rows {
            writeln!(out, "{}", digest(r))?;
        }
    } else {
        let mut all = vec![header.iter().map(|h| h.to_string()).collect()];
        all.extend(cells);
        write!(out, "{}", table::render(&all))?;
    }
    Ok(())
}

/// `soci index list --remote IMAGE`: the SOCI indexes a registry holds for an image.
fn list_remote(image: &str, args: &IndexListArgs) -> Result<()> {
    let filters = platforms(args)?;
    let reference = ImageRef::parse(image)?;
    let remote = Remote::new(&args.registry)?;
    let repo = remote.repository(&reference)?;
    let (top, resolved) = remote.rt.block_on(registry::images::resolve(
        &repo,
        &crate::remote::reference_of(&reference),
        &PlatformSelection::All,
    ))?;
    let found: Vec<ListedIndex> = remote
        .rt
        .block_on(lazyfs::discover::list_indexes(
            &repo,
            &top.bytes,
            &resolved.images,
        ))?
        .into_iter()
        .filter(|f| wanted(&filters, &f.platform))
        .collect();
    let cells = found
        .iter()
        .map(|f| {
            vec![
                f.digest.clone(),
                f.size.to_string(),
                f.platform.clone(),
                f.version.to_owned(),
                f.image_manifest.clone(),
                f.found_through.to_owned(),
            ]
        })
        .collect();
    let header = [
        "DIGEST",
        "SIZE",
        "PLATFORM",
        "MANIFEST VERSION",
        "IMAGE MANIFEST",
        "FOUND THROUGH",
    ];
    print_rows(args, &found, |f| &f.digest, &header, cells)?;
    if found.is_empty() && !args.json && !args.quiet {
        println!(
            "(no SOCI index in {image}; create and push one with `soci create {image} && soci push {image}`)"
        );
    }
    Ok(())
}

fn info(local: &LocalStore, digest: &str) -> Result<()> {
    let d = crate::digest_arg(digest)?;
    if local.db.get_index(&d)?.is_none() {
        if local.db.get_ztoc(&d)?.is_some() {
            bail!("{digest} is a zTOC, not a SOCI index; use `soci ztoc info {digest}`");
        }
        bail!("SOCI index {digest} not found; `soci index list` shows what exists");
    }
    let bytes = local.store.get(&d)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).context("the stored index is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn remove(local: &LocalStore, digests: &[String], image_ref: Option<&str>) -> Result<()> {
    let targets: Vec<oci::Digest> = match (image_ref, digests.is_empty()) {
        (Some(_), false) => bail!("give either index digests or --ref, not both"),
        (None, true) => bail!("name the indexes to remove (digests) or use --ref IMAGE"),
        (Some(r), true) => {
            let r = crate::normalize_ref(r)?;
            local
                .db
                .list_indexes()?
                .into_iter()
                .filter(|i| i.image_ref == r)
                .map(|i| crate::digest_arg(&i.digest))
                .collect::<Result<_>>()?
        }
        (None, false) => digests
            .iter()
            .map(|d| crate::digest_arg(d))
            .collect::<Result<_>>()?,
    };
    for d in targets {
        let orphans = local.db.remove_index(&d)?;
        local.store.delete(&d)?;
        for z in &orphans {
            local.store.delete(&crate::digest_arg(z)?)?;
        }
        println!(
            "removed index {d} ({} ztocs no longer used were removed)",
            orphans.len()
        );
    }
    Ok(())
}
