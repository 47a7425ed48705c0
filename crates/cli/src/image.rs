//! `soci image …`: images in containerd. `soci image rpull` pulls an image through
//! containerd's API the way containerd's own client pulls with unpack, but with the labels a
//! remote snapshotter needs on every layer's Prepare, so the SOCI snapshotter can answer
//! "already exists" for layers it mounts lazily instead of having them downloaded.

use crate::containerd::{self, Client, WriteOutcome};
use crate::remote::{self, RegistryArgs, Remote};
use crate::ContainerdArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use containerd_client::types::Descriptor as CtdDescriptor;
use futures_util::TryStreamExt;
use oci::reference::ImageRef;
use oci::resolve::{ManifestFetcher, PlatformSelection};
use oci::Descriptor;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use oci::snapshot_labels::{
    IMAGE_LAYERS as LABEL_IMAGE_LAYERS, IMAGE_REF as LABEL_IMAGE_REF,
    LAYERS_SIZE as LABEL_LAYERS_SIZE, LAYER_DIGEST as LABEL_LAYER_DIGEST,
    MANIFEST_DIGEST as LABEL_MANIFEST_DIGEST, SNAPSHOT_REF as LABEL_SNAPSHOT_REF,
    SOCI_INDEX_DIGEST as LABEL_SOCI_INDEX_DIGEST, SOCI_SIZE as LABEL_SOCI_SIZE,
};
/// Where content came from, per registry host (value: repositories, comma-joined).
const LABEL_DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source";
/// The uncompressed digest of a layer blob, set after it was applied.
const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// How long the pull's lease survives if we die before deleting it (containerd's client
/// uses 24 hours too).
const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);

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

/// The name containerd's `ctr` gives an image it pulls: the reference as typed when it names
/// a registry host and a tag or digest (`ctr` accepts no other), else the canonical form.
pub(crate) fn image_name(typed: &str, parsed: &ImageRef) -> String {
    let has_host = typed
        .split_once('/')
        .is_some_and(|(h, _)| h.contains('.') || h.contains(':') || h == "localhost");
    let last = typed.rsplit('/').next().unwrap_or(typed);
    let has_object = typed.contains('@') || last.contains(':');
    if has_host && has_object {
        typed.to_owned()
    } else {
        parsed.to_string()
    }
}

/// What happened to each layer.
#[derive(Default)]
struct Tally {
    present: usize,
    remote: usize,
    fetched: usize,
    fetched_bytes: u64,
}

fn rpull(ctd_args: &ContainerdArgs, args: &RpullArgs) -> Result<()> {
    let reference = ImageRef::parse(&args.image)?;
    let ImageRef::Registry {
        registry: host,
        repository,
        ..
    } = &reference
    else {
        bail!(
            "{} is not a registry reference; rpull needs HOST/REPO[:TAG|@DIGEST]",
            args.image
        );
    };
    if let Some(d) = &args.soci_index_digest {
        crate::digest_arg(d).context("--soci-index-digest")?;
    }
    let selection = match &args.platform {
        Some(p) => PlatformSelection::Some(vec![oci::platform::Platform::parse(p)?]),
        None => PlatformSelection::Host,
    };
    let name = image_name(&args.image, &reference);
    let remote = Remote::new(&args.registry)?;
    let repo = remote.repository(&reference)?;
    // containerd first: if it is not there, nothing else is worth doing.
    let client = remote
        .rt
        .block_on(Client::connect(&ctd_args.address, &ctd_args.namespace))?;
    let lease = remote
        .rt
        .block_on(client.create_lease(LEASE_EXPIRY))
        .context("creating a lease for the pull")?;
    let leased = client.with_lease(&lease);
    let result = pull(
        &remote, &repo, &leased, args, &reference, &selection, &name, host, repository,
    );
    // The lease goes on success and failure alike: on success the image record and the GC
    // labels hold everything, on failure what was written becomes collectable.
    if let Err(e) = remote.rt.block_on(client.delete_lease(&lease)) {
        tracing::warn!("deleting lease {lease}: {e}");
    }
    let tally = result?;
    let mut parts = Vec::new();
    let plural = |n: usize| if n == 1 { "layer" } else { "layers" };
    if tally.remote > 0 {
        parts.push(format!(
            "{} {} lazy (remote snapshots)",
            tally.remote,
            plural(tally.remote)
        ));
    }
    if tally.fetched > 0 {
        parts.push(format!(
            "{} {} fetched ({})",
            tally.fetched,
            plural(tally.fetched),
            indicatif::HumanBytes(tally.fetched_bytes)
        ));
    }
    if tally.present > 0 {
        parts.push(format!(
            "{} {} already present",
            tally.present,
            plural(tally.present)
        ));
    }
    if parts.is_empty() {
        parts.push("no layers".into());
    }
    println!(
        "pulled {name} (snapshotter {}, namespace {}): {}",
        args.snapshotter,
        ctd_args.namespace,
        parts.join(", ")
    );
    Ok(())
}

/// containerd's ingest reference for a blob (`<kind>-<digest>`, as its remotes package names
/// them), so a write interrupted by one pull is resumed or replaced by the next.
fn ref_key(desc: &Descriptor) -> String {
    let media = desc.media_type().to_string();
    let kind = if media.contains("index") || media.contains("manifest.list") {
        "index"
    } else if media.contains("manifest") {
        "manifest"
    } else if media.contains("layer") || media.contains("rootfs") {
        "layer"
    } else if media.contains("config") {
        "config"
    } else {
        "unknown"
    };
    format!("{kind}-{}", desc.digest())
}

/// containerd's form of a descriptor.
pub(crate) fn ctd_descriptor(desc: &Descriptor) -> CtdDescriptor {
    CtdDescriptor {
        media_type: desc.media_type().to_string(),
        digest: desc.digest().to_string(),
        size: desc.size() as i64,
        annotations: HashMap::new(),
    }
}

/// The distribution-source label for `host`/`repository`, merged with what the blob already
/// lists (containerd keeps a sorted, comma-joined set of repositories per host).
fn distribution_label(
    existing: Option<&HashMap<String, String>>,
    host: &str,
    repository: &str,
) -> (String, String) {
    let key = format!("{LABEL_DISTRIBUTION_SOURCE}.{}", hostname(host));
    let mut repos: Vec<String> = existing
        .and_then(|l| l.get(&key))
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if !repos.iter().any(|r| r == repository) {
        repos.push(repository.to_owned());
    }
    repos.sort();
    (key, repos.join(","))
}

/// The host of `host[:port]` without the port (containerd keys distribution sources by URL
/// host name: `127.0.0.1:5000` -> `127.0.0.1`, `[::1]:5000` -> `::1`).
fn hostname(host: &str) -> &str {
    let without_port = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            if h.starts_with('[') || !h.contains(':') {
                h
            } else {
                host
            }
        }
        _ => host,
    };
    without_port
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(without_port)
}

/// Stores a blob held in memory unless containerd has it; labels it either way.
async fn store_blob(
    client: &Client,
    desc: &Descriptor,
    bytes: &[u8],
    mut labels: HashMap<String, String>,
    host: &str,
    repository: &str,
) -> Result<()> {
    let digest = desc.digest().to_string();
    let existing = match client.content_info(&digest).await {
        Ok(info) => Some(info.labels),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let (k, v) = distribution_label(existing.as_ref(), host, repository);
    labels.insert(k, v);
    if existing.is_some() {
        client.set_content_labels(&digest, &labels).await?;
        return Ok(());
    }
    let data = futures_util::stream::iter([Ok(bytes::Bytes::copy_from_slice(bytes))]);
    client
        .write_blob(&ref_key(desc), &digest, desc.size(), &labels, data)
        .await?;
    Ok(())
}

/// containerd's chain IDs: chain(0) = diff(0), chain(i) = sha256(chain(i-1) + " " + diff(i)).
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => containerd::sha256_str(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Joins `items` with commas, dropping trailing items so `key` + value stays within
/// containerd's label size limit (as containerd does for `cri.image-layers`).
fn bounded_list(key: &str, items: &[String]) -> (String, usize) {
    let mut value = String::new();
    let mut n = 0;
    for item in items {
        let extra = if value.is_empty() { 0 } else { 1 } + item.len();
        if key.len() + value.len() + extra > containerd::MAX_LABEL_SIZE {
            break;
        }
        if !value.is_empty() {
            value.push(',');
        }
        value.push_str(item);
        n += 1;
    }
    (value, n)
}

/// The labels of one layer's Prepare (and Commit).
pub(crate) fn layer_labels(
    image_ref: &str,
    manifest_digest: &str,
    layers: &[Descriptor],
    i: usize,
    chain_id: &str,
    soci_index_digest: Option<&str>,
) -> HashMap<String, String> {
    let layer = &layers[i];
    let rest: Vec<String> = layers[i..].iter().map(|l| l.digest().to_string()).collect();
    let (digests, n) = bounded_list(LABEL_IMAGE_LAYERS, &rest);
    let sizes: Vec<String> = layers[i..i + n]
        .iter()
        .map(|l| l.size().to_string())
        .collect();
    let (sizes, _) = bounded_list(LABEL_LAYERS_SIZE, &sizes);
    let mut labels = HashMap::from([
        (LABEL_SNAPSHOT_REF.to_owned(), chain_id.to_owned()),
        (LABEL_IMAGE_REF.to_owned(), image_ref.to_owned()),
        (LABEL_MANIFEST_DIGEST.to_owned(), manifest_digest.to_owned()),
        (LABEL_LAYER_DIGEST.to_owned(), layer.digest().to_string()),
        (LABEL_IMAGE_LAYERS.to_owned(), digests),
        (LABEL_SOCI_SIZE.to_owned(), layer.size().to_string()),
        (LABEL_LAYERS_SIZE.to_owned(), sizes),
    ]);
    if let Some(d) = soci_index_digest {
        labels.insert(LABEL_SOCI_INDEX_DIGEST.to_owned(), d.to_owned());
    }
    labels
}

/// One index on the way to an image manifest: its descriptor, its bytes, the child followed.
type IndexStep = (Descriptor, Vec<u8>, Descriptor);

/// The indexes from `top` down to image manifest `target`: (index descriptor, its bytes, the
/// child followed). Empty when `top` is the manifest.
fn index_path(
    fetcher: &mut dyn ManifestFetcher,
    top: &Descriptor,
    target: &oci::Digest,
    depth: usize,
) -> Result<Option<Vec<IndexStep>>> {
    if top.digest() == target {
        return Ok(Some(Vec::new()));
    }
    if depth > 8 {
        return Ok(None);
    }
    let bytes = fetcher.fetch(top, oci::manifest::MAX_MANIFEST_SIZE as u64)?;
    let oci::manifest::ParsedManifest::Index(index) =
        oci::manifest::parse(&bytes, top.digest().as_ref())?
    else {
        return Ok(None);
    };
    for child in index.manifests() {
        if let Some(mut rest) = index_path(fetcher, child, target, depth + 1)? {
            rest.insert(0, (top.clone(), bytes.clone(), child.clone()));
            return Ok(Some(rest));
        }
    }
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
fn pull(
    remote: &Remote,
    repo: &registry::Repository,
    client: &Client,
    args: &RpullArgs,
    reference: &ImageRef,
    selection: &PlatformSelection,
    name: &str,
    host: &str,
    repository: &str,
) -> Result<Tally> {
    // Resolve in the registry: top object, the platform's manifest, its config.
    let (top, top_bytes, images) = remote::resolve_images(remote, repo, reference, selection)?;
    let image = images
        .into_iter()
        .next()
        .context("no image manifest resolved")?;
    let mut fetcher = remote::fetcher(remote, repo, &[(&top, &top_bytes)]);
    let path = index_path(&mut fetcher, &top, image.manifest_desc.digest(), 0)?
        .context("the image manifest is not reachable from the reference's index")?;
    let manifest_bytes = fetcher.fetch(
        &image.manifest_desc,
        oci::manifest::MAX_MANIFEST_SIZE as u64,
    )?;
    let config_desc = image.manifest.config().clone();
    let config_bytes = fetcher.fetch(&config_desc, oci::resolve::MAX_CONFIG_SIZE)?;
    let config: serde_json::Value = serde_json::from_slice(&config_bytes)
        .with_context(|| format!("image config {} is not JSON", config_desc.digest()))?;
    let diff_ids: Vec<String> = config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let layers: Vec<Descriptor> = image.manifest.layers().to_vec();
    if diff_ids.len() != layers.len() {
        bail!(
            "image {name}: the manifest lists {} layers but the config {} diff IDs; the image is corrupt",
            layers.len(),
            diff_ids.len()
        );
    }
    for d in &diff_ids {
        crate::digest_arg(d).with_context(|| format!("image {name}: config diff ID"))?;
    }
    let chains = chain_ids(&diff_ids);
    let manifest_digest = image.manifest_desc.digest().to_string();
    let verbose = std::io::stderr().is_terminal();

    remote.rt.block_on(async {
        // Content first, with the GC references containerd's pull sets: index -> manifest
        // (m.<i>), manifest -> config and layers (config, l.<i>).
        for (index_desc, bytes, child) in &path {
            let labels = HashMap::from([(
                "containerd.io/gc.ref.content.m.0".to_owned(),
                child.digest().to_string(),
            )]);
            store_blob(client, index_desc, bytes, labels, host, repository).await?;
        }
        let mut labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            config_desc.digest().to_string(),
        )]);
        for (i, l) in layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l.digest().to_string(),
            );
        }
        store_blob(client, &image.manifest_desc, &manifest_bytes, labels, host, repository)
            .await?;
        store_blob(client, &config_desc, &config_bytes, HashMap::new(), host, repository).await?;

        let mut tally = Tally::default();
        for (i, layer) in layers.iter().enumerate() {
            let chain_id = &chains[i];
            let parent = if i == 0 { "" } else { chains[i - 1].as_str() };
            let layer_digest = layer.digest().to_string();
            let short = layer_digest.get(..19).unwrap_or(&layer_digest);
            match client.stat_snapshot(&args.snapshotter, chain_id).await {
                Ok(_) => {
                    tally.present += 1;
                    say(verbose, format!("layer {short}: already present ({chain_id})"));
                    continue;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(anyhow::Error::from(e)),
            }
            let labels = layer_labels(
                name,
                &manifest_digest,
                &layers,
                i,
                chain_id,
                args.soci_index_digest.as_deref(),
            );
            let mut prepared = None;
            // A key collision (or a remote snapshot that vanished between the answers) is
            // retried with a new key, as containerd's unpacker does.
            for _ in 0..3 {
                let key = format!(
                    "extract-{}-{:06x} {chain_id}",
                    containerd::unix_nanos() % 1_000_000_000,
                    fastrand::u32(..) & 0xff_ffff
                );
                match client
                    .prepare_snapshot(&args.snapshotter, &key, parent, labels.clone())
                    .await
                {
                    Ok(mounts) => {
                        prepared = Some((key, mounts));
                        break;
                    }
                    Err(e) if e.is_already_exists() => {
                        match client.stat_snapshot(&args.snapshotter, chain_id).await {
                            Ok(_) => break,
                            Err(e) if e.is_not_found() => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let Some((key, mounts)) = prepared else {
                if client.stat_snapshot(&args.snapshotter, chain_id).await.is_ok() {
                    tally.remote += 1;
                    say(
                        verbose,
                        format!("layer {short}: lazy, provided by snapshotter {} ({} bytes not fetched)", args.snapshotter, layer.size()),
                    );
                    continue;
                }
                bail!(
                    "layer {}: snapshotter {} kept answering 'already exists' but has no snapshot {chain_id}",
                    layer.digest(),
                    args.snapshotter
                );
            };
            let unpacked = fetch_and_apply(
                client, repo, layer, &diff_ids[i], &key, mounts, chain_id, &labels, args, host,
                repository,
            )
            .await;
            match unpacked {
                Ok(fetched) => {
                    tally.fetched += 1;
                    tally.fetched_bytes += fetched;
                    say(
                        verbose,
                        format!("layer {short}: fetched and unpacked ({})", indicatif::HumanBytes(layer.size())),
                    );
                }
                Err(e) => {
                    if let Err(re) = client.remove_snapshot(&args.snapshotter, &key).await {
                        tracing::warn!("removing snapshot {key:?} after a failed unpack: {re}");
                    }
                    return Err(e);
                }
            }
        }
        // The config holds the unpacked image's top snapshot (and through its parents all
        // of them) for as long as the image exists.
        if let Some(top_chain) = chains.last() {
            let labels = HashMap::from([(
                format!("containerd.io/gc.ref.snapshot.{}", args.snapshotter),
                top_chain.clone(),
            )]);
            client
                .set_content_labels(config_desc.digest().as_ref(), &labels)
                .await?;
        }
        client
            .put_image(containerd::Image {
                name: name.to_owned(),
                labels: HashMap::new(),
                target: Some(ctd_descriptor(&top)),
                created_at: None,
                updated_at: None,
            })
            .await?;
        Ok(tally)
    })
}

fn say(verbose: bool, line: String) {
    tracing::info!("{line}");
    if verbose {
        eprintln!("{line}");
    }
}

/// Downloads a layer into the content store (unless it is there), applies it onto the
/// prepared snapshot and commits it. Returns the bytes downloaded.
#[allow(clippy::too_many_arguments)]
async fn fetch_and_apply(
    client: &Client,
    repo: &registry::Repository,
    layer: &Descriptor,
    diff_id: &str,
    key: &str,
    mounts: Vec<containerd_client::types::Mount>,
    chain_id: &str,
    labels: &HashMap<String, String>,
    args: &RpullArgs,
    host: &str,
    repository: &str,
) -> Result<u64> {
    let digest = layer.digest().to_string();
    let existing = match client.content_info(&digest).await {
        Ok(info) => Some(info.labels),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let (k, v) = distribution_label(existing.as_ref(), host, repository);
    let source = HashMap::from([(k, v)]);
    let mut fetched = 0;
    if existing.is_some() {
        client.set_content_labels(&digest, &source).await?;
    } else {
        let blob = repo
            .get_blob(layer.digest())
            .await
            .with_context(|| format!("downloading layer {digest}"))?;
        let outcome = client
            .write_blob(
                &ref_key(layer),
                &digest,
                layer.size(),
                &source,
                blob.stream.map_err(std::io::Error::other),
            )
            .await
            .with_context(|| format!("storing layer {digest}"))?;
        if outcome == WriteOutcome::Written {
            fetched = layer.size();
        }
    }
    let applied = client.apply_diff(ctd_descriptor(layer), mounts).await?;
    if applied.digest != diff_id {
        bail!(
            "layer {digest} unpacked to {}, but the image config says its diff ID is {diff_id}: the image is corrupt",
            applied.digest
        );
    }
    match client
        .commit_snapshot(&args.snapshotter, chain_id, key, labels.clone())
        .await
    {
        Ok(()) => {}
        // Another pull committed the same layer meanwhile: ours is not needed.
        Err(e) if e.is_already_exists() => {
            client.remove_snapshot(&args.snapshotter, key).await?;
        }
        Err(e) => return Err(e.into()),
    }
    let uncompressed = HashMap::from([(LABEL_UNCOMPRESSED.to_owned(), diff_id.to_owned())]);
    client.set_content_labels(&digest, &uncompressed).await?;
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_containerd() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let chains = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chains[0], a);
        assert_eq!(
            chains[1],
            containerd::sha256_str(format!("{a} {b}").as_bytes())
        );
        assert_ne!(chains[1], b);
    }

    #[test]
    fn layer_lists_stay_within_the_label_limit() {
        let layers: Vec<Descriptor> = (0..100u32)
            .map(|i| {
                Descriptor::new(
                    oci::MediaType::ImageLayerGzip,
                    1000 + u64::from(i),
                    oci::digest::sha256(&i.to_le_bytes()),
                )
            })
            .collect();
        let labels = layer_labels("r/x:1", "sha256:m", &layers, 1, "sha256:c", None);
        let list = &labels[LABEL_IMAGE_LAYERS];
        assert!(LABEL_IMAGE_LAYERS.len() + list.len() <= 4096);
        let n = list.split(',').count();
        // 71 bytes per digest plus commas: about 57 fit, not all 99.
        assert!(n > 50 && n < 99, "{n}");
        assert_eq!(list.split(',').next(), Some(layers[1].digest().as_ref()));
        assert_eq!(labels[LABEL_LAYERS_SIZE].split(',').count(), n);
        assert_eq!(labels[LABEL_LAYERS_SIZE].split(',').next(), Some("1001"));
        assert_eq!(labels[LABEL_SOCI_SIZE], "1001");
        assert!(!labels.contains_key(LABEL_SOCI_INDEX_DIGEST));
        let with = layer_labels(
            "r/x:1",
            "sha256:m",
            &layers,
            99,
            "sha256:c",
            Some("sha256:i"),
        );
        assert_eq!(with[LABEL_IMAGE_LAYERS], layers[99].digest().to_string());
        assert_eq!(with[LABEL_SOCI_INDEX_DIGEST], "sha256:i");
    }

    #[test]
    fn names_are_kept_as_typed_when_ctr_would_accept_them() {
        let n = |s: &str| image_name(s, &ImageRef::parse(s).unwrap());
        assert_eq!(
            n("127.0.0.1:5000/busybox:latest"),
            "127.0.0.1:5000/busybox:latest"
        );
        assert_eq!(n("127.0.0.1:5000/busybox"), "127.0.0.1:5000/busybox:latest");
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            n("docker.io/library/busybox:1"),
            "docker.io/library/busybox:1"
        );
    }

    #[test]
    fn distribution_sources_merge_sorted() {
        let existing = HashMap::from([(
            "containerd.io/distribution.source.h".to_owned(),
            "b/x".to_owned(),
        )]);
        assert_eq!(
            distribution_label(Some(&existing), "h:1", "a/y"),
            (
                "containerd.io/distribution.source.h".to_owned(),
                "a/y,b/x".to_owned()
            )
        );
        assert_eq!(distribution_label(None, "h:1", "a/y").1, "a/y");
        assert_eq!(distribution_label(Some(&existing), "h:1", "b/x").1, "b/x");
        assert_eq!(hostname("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(hostname("[::1]:5000"), "::1");
        assert_eq!(hostname("docker.io"), "docker.io");
    }
}
