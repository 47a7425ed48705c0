//! Registry access for the CLI: the shared flags (`--user`, `--plain-http`, …), a client built
//! from them, and blocking bridges so the (synchronous, rayon-parallel) indexer can read layers
//! streamed from a registry.

use anyhow::{Context, Result};
use clap::Args;
use oci::reference::ImageRef;
use oci::resolve::{PlatformSelection, ResolvedImage};
use oci::Descriptor;
use registry::credentials::{self, DockerConfig};
use registry::hosts::HostDefaults;
use registry::{Client, ClientConfig, Repository};
use std::io::Read;
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

/// Reads manifests, indexes and configs from a registry for [`oci::resolve`] (the
/// library's, blocking on the CLI's runtime).
pub use indexer::resolve::RegistryFetcher;

/// A fetcher over `repo` blocking on `remote`'s runtime, its cache seeded with `seed`.
pub fn fetcher(
    remote: &Remote,
    repo: &Repository,
    seed: &[(&Descriptor, &[u8])],
) -> RegistryFetcher {
    let mut f = RegistryFetcher::new(remote.rt.handle().clone(), repo.clone());
    for (d, b) in seed {
        f.cache.insert(d.digest().to_string(), b.to_vec());
    }
    f
}

/// Resolves a registry reference to its top descriptor, that object's verified bytes, and
/// the image manifests selected.
pub fn resolve_images(
    remote: &Remote,
    repo: &Repository,
    reference: &ImageRef,
    selection: &PlatformSelection,
) -> Result<(Descriptor, Vec<u8>, Vec<ResolvedImage>)> {
    let top = remote
        .rt
        .block_on(indexer::resolve::fetch_top(repo, &reference_of(reference)))?;
    let mut fetcher = fetcher(remote, repo, &[]);
    let images = indexer::resolve::image_manifests_blocking(
        &mut fetcher,
        &reference.to_string(),
        &top,
        selection,
    )?;
    Ok((top.desc, top.bytes, images))
}

/// A blocking reader over a blob streamed from a registry (for use off the runtime's threads).
/// A task on the runtime pulls the HTTP body and hands chunks over a bounded channel, so the
/// network keeps flowing while the indexer works and no read blocks on the runtime itself.
pub fn open_blob(
    remote: &Remote,
    repo: &Repository,
    desc: &Descriptor,
) -> Result<Box<dyn Read + Send>> {
    Ok(Box::new(indexer::layer::open_blob(
        remote.rt.handle(),
        repo,
        desc,
    )?))
}

/// A `Read + Seek` view of a registry blob that fetches what is read with HTTP Range
/// requests (1 MiB at least per request), so `ztoc get-file` reads only the spans it needs.
pub struct RangeReader<'a> {
    remote: &'a Remote,
    repo: &'a Repository,
    digest: oci::Digest,
    size: u64,
    pos: u64,
    buf: bytes::Bytes,
    buf_start: u64,
    /// Bytes fetched from the registry so far.
    pub fetched: u64,
}

impl<'a> RangeReader<'a> {
    /// A reader over blob `digest` of `size` bytes.
    pub fn new(remote: &'a Remote, repo: &'a Repository, digest: oci::Digest, size: u64) -> Self {
        RangeReader {
            remote,
            repo,
            digest,
            size,
            pos: 0,
            buf: bytes::Bytes::new(),
            buf_start: 0,
            fetched: 0,
        }
    }
}

impl Read for RangeReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos >= buf_end {
            let want = (out.len() as u64).max(1 << 20);
            let end = self.size.min(self.pos + want);
            let bytes = self
                .remote
                .rt
                .block_on(self.repo.read_blob_range(&self.digest, (self.pos, end)))
                .map_err(std::io::Error::other)?;
            self.fetched += bytes.len() as u64;
            self.buf = bytes;
            self.buf_start = self.pos;
        }
        let offset = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - offset);
        out[..n].copy_from_slice(&self.buf[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for RangeReader<'_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the blob",
            )
        })?;
        Ok(self.pos)
    }
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
