//! `soci image …`: images in containerd. `soci image rpull` pulls an image through
//! containerd's API with the labels a remote snapshotter needs on every layer's Prepare
//! ([`containerd::pull`] does the work; this is its arguments and output).

use crate::remote::{RegistryArgs, Remote};
use crate::ContainerdArgs;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use containerd::pull::{LayerEvent, LayerOutcome, PullOptions, PullReport};
use containerd::Client;
use oci::resolve::PlatformSelection;
use std::io::IsTerminal;

/// `soci image` subcommands.
#[derive(Subcommand)]
pub enum ImageCommand {
    /// Pull an image into containerd, lazily through a remote snapshotter.
    ///
    /// Resolves the image in its registry, stores its index, manifest and config in
    /// containerd's content store, and prepares one snapshot per layer with the labels a
    /// remote snapshotter reads (image reference, manifest and layer digests, layer sizes,
    /// SOCI index digest). Layers the snapshotter provides remotely (the SOCI snapshotter,
    /// for layers with a zTOC) are not downloaded; the others are fetched and unpacked by
    /// containerd. The image is then listed by `ctr images ls` and can be run with
    /// `ctr run --snapshotter NAME`.
    Rpull(RpullArgs),
}

/// Arguments of `soci image rpull`.
#[derive(Args)]
pub struct RpullArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    /// Digest of the SOCI index to use (passed to the snapshotter; default: it finds one).
    #[arg(long)]
    soci_index_digest: Option<String>,
    /// Platform to pull, os/arch[/variant] (default: this machine's).
    #[arg(long)]
    platform: Option<String>,
    /// containerd snapshotter to unpack into.
    #[arg(long, default_value = "soci")]
    snapshotter: String,
    /// Image to pull (HOST/REPO[:TAG|@DIGEST]).
    image: String,
}

/// Runs a `soci image` subcommand.
pub fn run(ctd: &ContainerdArgs, cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Rpull(args) => rpull(ctd, &args),
    }
}

fn rpull(ctd: &ContainerdArgs, args: &RpullArgs) -> Result<()> {
    let soci_index_digest = args
        .soci_index_digest
        .as_deref()
        .map(crate::digest_arg)
        .transpose()
        .context("--soci-index-digest")?;
    let platform = match &args.platform {
        Some(p) => PlatformSelection::Some(vec![oci::platform::Platform::parse(p)?]),
        None => PlatformSelection::Host,
    };
    let options = PullOptions {
        image: args.image.clone(),
        platform,
        snapshotter: args.snapshotter.clone(),
        soci_index_digest,
    };
    let remote = Remote::new(&args.registry)?;
    // Per-layer lines only for a person watching; the summary line is the output.
    let verbose = std::io::stderr().is_terminal();
    let progress = |event: &LayerEvent<'_>| {
        if verbose {
            eprintln!("{}", layer_line(event));
        }
    };
    let report = remote.rt.block_on(async {
        let client = Client::connect(&ctd.address, &ctd.namespace).await?;
        anyhow::Ok(containerd::pull(&client, &remote.client, &options, &progress).await?)
    })?;
    println!(
        "pulled {} (snapshotter {}, namespace {}): {}",
        report.name,
        args.snapshotter,
        ctd.namespace,
        summary(&report)
    );
    Ok(())
}

/// One layer's progress line.
fn layer_line(event: &LayerEvent<'_>) -> String {
    let digest = event.layer.digest().as_ref();
    let short = digest.get(..19).unwrap_or(digest);
    match event.outcome {
        LayerOutcome::Present => format!("layer {short}: already present ({})", event.chain_id),
        LayerOutcome::Remote => format!(
            "layer {short}: lazy, provided by snapshotter {} ({} bytes not fetched)",
            event.snapshotter,
            event.layer.size()
        ),
        LayerOutcome::Fetched { .. } => format!(
            "layer {short}: fetched and unpacked ({})",
            indicatif::HumanBytes(event.layer.size())
        ),
    }
}

/// "2 layers lazy (remote snapshots), 1 layer fetched (3.1 MiB)".
fn summary(report: &PullReport) -> String {
    let bytes = indicatif::HumanBytes(report.fetched_bytes);
    let parts: Vec<String> = [
        (report.remote, "lazy (remote snapshots)".to_owned()),
        (report.fetched, format!("fetched ({bytes})")),
        (report.present, "already present".to_owned()),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {} {what}", if n == 1 { "layer" } else { "layers" }))
    .collect();
    if parts.is_empty() {
        "no layers".to_owned()
    } else {
        parts.join(", ")
    }
}
