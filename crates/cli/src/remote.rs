//! Registry access for the CLI: the shared flags (`--user`, `--plain-http`, …), a client built
//! from them with the runtime that drives it, and the lookups commands start from.

use anyhow::{Context, Result};
use clap::Args;
use oci::reference::ImageRef;
use oci::resolve::{PlatformSelection, ResolvedImage};
use oci::Descriptor;
use registry::credentials::{self, DockerConfig};
use registry::hosts::HostDefaults;
use registry::images::Top;
use registry::{Client, ClientConfig, Repository};
use std::path::PathBuf;
use tokio::runtime::Runtime;

/// Flags for commands that talk to a registry (the same names as AWS's `soci`).
#[derive(Args, Clone, Debug)]
pub struct RegistryArgs {
    /// Registry credentials as user:password (default: Docker's config.json and its
    /// credential helpers, e.g. docker-credential-ecr-login).
    #[arg(long, short = 'u', env = "SOCI_USER", hide_env_values = true)]
    pub user: Option<String>,
    /// Use plain HTTP (always the case for localhost and 127.0.0.0/8, as in containerd).
    #[arg(long)]
    pub plain_http: bool,
    /// Skip TLS certificate verification (only for registries you trust on the path).
    #[arg(long, short = 'k', visible_alias = "insecure")]
    pub skip_verify: bool,
    /// Extra root CA certificate(s) (PEM) for the registry, besides the system's.
    #[arg(long, visible_alias = "ca-file", value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// containerd-style host configuration directory (`<dir>/<host>/hosts.toml`) for mirrors
    /// and per-registry TLS, e.g. /etc/containerd/certs.d.
    #[arg(long, value_name = "DIR", env = "SOCI_HOSTS_DIR")]
    pub hosts_dir: Option<PathBuf>,
}

/// A registry client and the runtime that drives it.
pub struct Remote {
    /// Tokio runtime for the client's futures.
    pub rt: Runtime,
    /// The client.
    pub client: Client,
}

impl Remote {
    /// Builds the client from flags; credentials come from `--user` or Docker's config.
    pub fn new(args: &RegistryArgs) -> Result<Self> {
        Self::with_retry(args, registry::retry::RetryPolicy::default())
    }

    /// Like [`Remote::new`] with a retry policy of the caller's choosing (a lazy mount must
    /// answer a read within seconds, not minutes).
    pub fn with_retry(args: &RegistryArgs, retry: registry::retry::RetryPolicy) -> Result<Self> {
        let user = args
            .user
            .as_deref()
            .map(credentials::parse_user_flag)
            .transpose()?;
        let docker_config = if user.is_none() {
            Some(DockerConfig::load_default()?)
        } else {
            None
        };
        let config = ClientConfig {
            hosts_dir: args.hosts_dir.clone(),
            host_defaults: HostDefaults {
                plain_http: args.plain_http,
                insecure: args.skip_verify,
                ca_file: args.tlscacert.clone(),
            },
            user,
            docker_config,
            retry,
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Remote {
            rt,
            client: Client::new(config),
        })
    }

    /// The repository of a registry reference.
    pub fn repository(&self, reference: &ImageRef) -> Result<Repository> {
        let ImageRef::Registry {
            registry,
            repository,
            ..
        } = reference
        else {
            anyhow::bail!("{reference} is not a registry reference");
        };
        Ok(self.client.repository(registry, repository)?)
    }
}

/// Tag or digest of a registry reference (digest wins, as in Docker).
pub fn reference_of(reference: &ImageRef) -> String {
    match reference {
        ImageRef::Registry { tag, digest, .. } => match (digest, tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        },
        ImageRef::OciLayout { .. } => String::new(),
    }
}

/// Resolves a registry reference to its top descriptor, that object's verified bytes, and
/// the image manifests selected.
pub fn resolve_images(
    remote: &Remote,
    repo: &Repository,
    reference: &ImageRef,
    selection: &PlatformSelection,
) -> Result<(Descriptor, Vec<u8>, Vec<ResolvedImage>)> {
    let (top, resolved) = remote.rt.block_on(registry::images::resolve(
        repo,
        &reference_of(reference),
        selection,
    ))?;
    let Top { desc, bytes } = top;
    Ok((desc, bytes, resolved.images))
}

/// Resolves `image` to the image manifest of `platform` (default: this machine's) and finds
/// its SOCI index in the registry (what `soci mount`, `soci ls` and `soci cat` start from).
pub fn resolve_indexed_image(
    remote: &Remote,
    repo: &Repository,
    reference: &ImageRef,
    image: &str,
    platform: Option<&str>,
) -> Result<(ResolvedImage, lazyfs::discover::FoundIndex)> {
    let selection = match platform {
        Some(p) => PlatformSelection::Some(vec![oci::platform::Platform::parse(p)?]),
        None => PlatformSelection::Host,
    };
    let (_, top_bytes, images) = resolve_images(remote, repo, reference, &selection)?;
    let resolved = images
        .into_iter()
        .next()
        .context("no image manifest resolved")?;
    let found = remote.rt.block_on(lazyfs::discover::find_index(
        repo,
        image,
        &top_bytes,
        resolved.manifest_desc.digest(),
        &resolved.manifest,
    ))?;
    Ok((resolved, found))
}
