//! The registry client: one [`Client`] per process (it holds HTTP connection pools, cached
//! tokens and credentials), one [`Repository`] handle per repository.

use crate::auth::{self, Challenge, Token};
use crate::credentials::{Credential, CredentialLookup, DockerConfig};
use crate::error::{error_chain, Context, Error, Result};
use crate::hosts::{self, HostDefaults, RegistryHost};
use crate::keychain::Keychain;
use crate::retry::{self, RetryPolicy};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, StreamExt};
use oci::Digest;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use url::Url;

/// Media types asked for when fetching a manifest: every image and index type, plus artifacts
/// (SOCI indexes are image manifests carrying an artifact type).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest we read (the same bound as containerd's).
pub const MAX_MANIFEST_BYTES: u64 = oci::manifest::MAX_MANIFEST_SIZE as u64;

const DIGEST_HEADER: &str = "docker-content-digest";

/// Client settings; [`ClientConfig::default`] is anonymous HTTPS with system roots.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// containerd-style `hosts.toml` directory (`<dir>/<host>/hosts.toml`), for mirrors.
    pub hosts_dir: Option<PathBuf>,
    /// Flag-level defaults: `--plain-http`, `--insecure`, an extra CA file.
    pub host_defaults: HostDefaults,
    /// Credentials from `--user`; they win over the Docker config.
    pub user: Option<Credential>,
    /// Docker `config.json` (auths, credHelpers, credsStore); `None` = anonymous unless `user`.
    pub docker_config: Option<DockerConfig>,
    /// Credentials handed over at run time per repository (CRI pulls). They are used for a
    /// repository's own registry only, never sent to its mirrors, and win over
    /// `docker_config` (they are what the pull of that image used); `user` wins over both.
    pub keychain: Option<Keychain>,
    /// Retry policy for every request.
    pub retry: RetryPolicy,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of requests whose body is small (manifests, tokens, uploads of zTOCs); blob
    /// streams are bounded by `read_timeout` instead, since a layer may take minutes.
    pub request_timeout: Duration,
    /// Longest pause between two reads of a body.
    pub read_timeout: Duration,
    /// Uploads larger than this are sent in PATCH chunks of this size.
    pub upload_chunk_size: usize,
    /// `User-Agent` header.
    pub user_agent: String,
    /// How long ranges of a blob skip a mirror that answered a Range request for it with the
    /// whole blob (a pull-through cache that does not hold it yet, and fetches it meanwhile).
    pub mirror_fill_wait: Duration,
    /// How long the storage URL a registry redirected a blob read to is used for further
    /// ranges of that blob without asking the registry again (it is dropped at once when
    /// the storage refuses it, as when a signed URL expired). Zero: never reused.
    pub redirect_ttl: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            hosts_dir: None,
            host_defaults: HostDefaults::default(),
            user: None,
            docker_config: None,
            keychain: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            read_timeout: Duration::from_secs(60),
            upload_chunk_size: 16 << 20,
            user_agent: concat!("soci-rs/", env!("CARGO_PKG_VERSION")).to_owned(),
            mirror_fill_wait: Duration::from_secs(10),
            // Signed storage URLs live minutes (S3's usually 15 or more): a minute is safe,
            // and saves one round trip to the registry per span meanwhile.
            redirect_ttl: Duration::from_secs(60),
        }
    }
}

/// A registry client. Cheap to clone; clones share pools, tokens and credentials.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    http: Mutex<HashMap<(bool, Vec<PathBuf>), reqwest::Client>>,
    tokens: Mutex<HashMap<(String, String), Token>>,
    basic_hosts: Mutex<HashSet<String>>,
    credentials: Mutex<HashMap<String, CredentialLookup>>,
    /// Mirrors that failed (transport error or 5xx), by `scheme://host`, and when: they are
    /// skipped for [`MIRROR_BACKOFF`], so a mirror that is down costs one failed attempt,
    /// not one per request.
    mirrors_down: Mutex<HashMap<String, Instant>>,
    /// Blobs a mirror answered a Range request for with the whole blob (it does not hold
    /// them yet), by `scheme://host/path`, and when: ranges of them skip that mirror for
    /// [`ClientConfig::mirror_fill_wait`]. Every such answer makes a pull-through cache fetch
    /// the blob from the origin again, so asking it on every span would multiply the
    /// origin's load.
    mirror_fills: Mutex<HashMap<String, Instant>>,
    /// Where registries redirected blob reads, by `registry/name@digest`: the storage URL,
    /// the host that redirected (its TLS settings apply), and when.
    redirects: Mutex<HashMap<String, Redirect>>,
}

/// A blob read a registry redirected to storage.
#[derive(Clone)]
struct Redirect {
    url: Url,
    host: RegistryHost,
    at: Instant,
}

/// A locked map of when things last happened, by key (mirror state of [`Inner`]).
struct Moments<'a>(MutexGuard<'a, HashMap<String, Instant>>);

impl<'a> Moments<'a> {
    fn of(map: &'a Mutex<HashMap<String, Instant>>) -> Self {
        Moments(map.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `key` was stamped less than `window` ago.
    fn within(&self, key: &str, window: Duration) -> bool {
        self.0.get(key).is_some_and(|t| t.elapsed() < window)
    }

    /// Stamps `key` now, dropping stamps older than `window` (the map stays small).
    fn stamp(&mut self, key: String, window: Duration) {
        self.0.retain(|_, t| t.elapsed() < window);
        self.0.insert(key, Instant::now());
    }
}

/// How long a failed mirror is skipped before it is tried again.
const MIRROR_BACKOFF: Duration = Duration::from_secs(30);

/// A fetched manifest, verified against its digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The exact bytes (their sha256 is `digest`).
    pub bytes: Bytes,
    /// `Content-Type` the registry sent (falls back to the JSON `mediaType`).
    pub media_type: String,
    /// Digest of `bytes`.
    pub digest: Digest,
}

/// The answer to a ranged blob read.
pub enum RangeReply {
    /// The registry honoured the range: exactly the bytes asked for.
    Partial(Bytes),
    /// The registry ignored the range and is sending the whole blob; the caller decides whether
    /// to keep it (e.g. cache the whole layer) or skip to the range.
    Whole(BlobStream),
}

/// A blob body being streamed.
pub struct BlobStream {
    /// Total size, when the registry said.
    pub size: Option<u64>,
    /// The bytes, resumed with a Range request if the connection breaks midway.
    pub stream: BoxStream<'static, std::io::Result<Bytes>>,
}

/// What happened when a blob was pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The repository already had it.
    Existed,
    /// Mounted from another repository of the same registry (no bytes sent).
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// What a manifest PUT returned.
#[derive(Debug, Clone)]
pub struct PutManifest {
    /// Digest of the manifest.
    pub digest: Digest,
    /// True when the registry processed the `subject` itself (`OCI-Subject` header): it has a
    /// referrers API and no tag-schema index is needed.
    pub subject_handled: bool,
}

/// How referrers were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrersSource {
    /// `GET /v2/<name>/referrers/<digest>`.
    Api,
    /// The `sha256-<hex>` tag schema (registries without the referrers API).
    TagSchema,
}

/// Referrers of a manifest.
#[derive(Debug, Clone)]
pub struct Referrers {
    /// Descriptors (filtered by artifact type when one was asked for).
    pub descriptors: Vec<oci::Descriptor>,
    /// Where they came from.
    pub source: ReferrersSource,
}

impl Client {
    /// Creates a client.
    pub fn new(config: ClientConfig) -> Self {
        Client {
            inner: Arc::new(Inner {
                config,
                http: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
                basic_hosts: Mutex::new(HashSet::new()),
                credentials: Mutex::new(HashMap::new()),
                mirrors_down: Mutex::new(HashMap::new()),
                mirror_fills: Mutex::new(HashMap::new()),
                redirects: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A handle on one repository; resolves the hosts (mirrors, then the registry itself).
    pub fn repository(&self, registry: &str, repository: &str) -> Result<Repository> {
        let hosts = hosts::hosts_for(
            self.inner.config.hosts_dir.as_deref(),
            registry,
            &self.inner.config.host_defaults,
        )?;
        Ok(Repository {
            client: self.clone(),
            registry: registry.to_owned(),
            name: repository.to_owned(),
            hosts,
        })
    }

    fn http_for(&self, host: &RegistryHost) -> Result<reqwest::Client> {
        let key = (host.skip_verify, host.ca_files.clone());
        let mut map = self.inner.http.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let cfg = &self.inner.config;
        let setup_err = |reason: String| Error::ClientSetup {
            host: host.host.clone(),
            reason,
        };
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(cfg.user_agent.clone())
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .danger_accept_invalid_certs(host.skip_verify);
        for ca in &host.ca_files {
            let pem = std::fs::read(ca)
                .map_err(|e| setup_err(format!("reading CA file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup_err(format!("CA file {}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(setup_err(format!(
                    "CA file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(|e| setup_err(error_chain(&e)))?;
        map.insert(key, client.clone());
        Ok(client)
    }

    fn credentials_for(&self, host: &str) -> Result<CredentialLookup> {
        if let Some(c) = self
            .inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
        {
            return Ok(c.clone());
        }
        let cfg = &self.inner.config;
        let lookup = if let Some(user) = &cfg.user {
            CredentialLookup {
                credential: Some(user.clone()),
                source: "--user flag".to_owned(),
            }
        } else if let Some(dc) = &cfg.docker_config {
            dc.lookup(host)?
        } else {
            CredentialLookup {
                credential: None,
                source: "no credentials (anonymous)".to_owned(),
            }
        };
        self.inner
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_owned(), lookup.clone());
        Ok(lookup)
    }
}

/// One repository on one registry (and its mirrors).
#[derive(Clone)]
pub struct Repository {
    client: Client,
    registry: String,
    name: String,
    hosts: Vec<RegistryHost>,
}

/// What kind of access a request needs; decides the token scope and which hosts may serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Resolve a tag (hosts with `resolve`).
    Resolve,
    /// Fetch by digest (hosts with `pull`).
    Pull,
    /// Write (hosts with `push`).
    Push,
}

/// One request, rebuilt for every attempt.
struct Req {
    method: Method,
    /// Path below the host's API prefix (`/<name>/manifests/<ref>`), or an absolute URL
    /// (upload locations).
    target: Target,
    headers: HeaderMap,
    body: Option<Bytes>,
    /// Extra token scopes (cross-repository mount source).
    extra_scopes: Vec<String>,
    /// Whether to apply the short request timeout (not for blob streams).
    timeout: bool,
}

enum Target {
    Path(String),
    Url(Url),
}

impl Req {
    fn new(method: Method, path: String) -> Self {
        Req {
            method,
            target: Target::Path(path),
            headers: HeaderMap::new(),
            body: None,
            extra_scopes: Vec::new(),
            timeout: true,
        }
    }
    fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
}

impl Repository {
    /// Registry host as named by the user.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hosts tried, in order.
    pub fn hosts(&self) -> &[RegistryHost] {
        &self.hosts
    }

    fn ctx(&self, op: impl Into<String>) -> Context {
        Context {
            op: op.into(),
            registry: self.registry.clone(),
            repository: self.name.clone(),
        }
    }

    fn reference_text(&self, reference: &str) -> String {
        if reference.starts_with("sha256:") {
            format!("{}/{}@{}", self.registry, self.name, reference)
        } else {
            format!("{}/{}:{}", self.registry, self.name, reference)
        }
    }

    /// The credentials for a request to `host` on behalf of this repository: `--user`, then
    /// the keychain's for this repository when `host` is the registry itself (a mirror never
    /// gets them), then the Docker config's for `host`.
    fn credentials_for(&self, host: &RegistryHost) -> Result<CredentialLookup> {
        if let Some(credential) = self.keychain_credential(host) {
            return Ok(CredentialLookup {
                credential: Some(credential),
                source: format!(
                    "the credentials of a CRI image pull of {}/{}",
                    self.registry, self.name
                ),
            });
        }
        self.client.credentials_for(&host.host)
    }

    /// The keychain's credential for this repository, when `host` is its registry and no
    /// `--user` overrides it.
    fn keychain_credential(&self, host: &RegistryHost) -> Option<Credential> {
        let config = &self.client.inner.config;
        let origin = self.hosts.last().is_some_and(|h| h == host);
        match (&config.user, &config.keychain) {
            (None, Some(keychain)) if origin => keychain.get(&self.registry, &self.name),
            _ => None,
        }
    }

    fn hosts_with(&self, access: Access) -> Vec<&RegistryHost> {
        self.hosts
            .iter()
            .filter(|h| match access {
                Access::Resolve => h.capabilities.resolve,
                Access::Pull => h.capabilities.pull,
                Access::Push => h.capabilities.push,
            })
            .collect()
    }

    fn scope(&self, access: Access) -> String {
        match access {
            Access::Push => format!("repository:{}:pull,push", self.name),
            _ => format!("repository:{}:pull", self.name),
        }
    }

    fn url(host: &RegistryHost, path: &str) -> Result<Url> {
        let s = format!("{}://{}{}{}", host.scheme, host.host, host.path, path);
        Url::parse(&s).map_err(|e| Error::ClientSetup {
            host: host.host.clone(),
            reason: format!("bad URL {s}: {e}"),
        })
    }

    /// Runs a request against each eligible host in turn until one answers with something
    /// other than a transport failure or a 404/5xx from a mirror; returns the answer and the
    /// host that gave it.
    async fn send(
        &self,
        access: Access,
        op: &str,
        build: impl Fn() -> Req,
    ) -> Result<(reqwest::Response, RegistryHost)> {
        let hosts = self.hosts_with(access);
        if hosts.is_empty() {
            return Err(Error::Protocol {
                ctx: self.ctx(op),
                reason: format!(
                    "no configured host may be used for {access:?} (check hosts.toml capabilities)"
                ),
            });
        }
        let last = hosts.len() - 1;
        let mut last_err = None;
        for (i, host) in hosts.into_iter().enumerate() {
            let mirror = i < last;
            if mirror && self.mirror_is_down(host) {
                continue;
            }
            let req = build();
            let ranged = req.headers.contains_key(reqwest::header::RANGE);
            let fill_key = match &req.target {
                Target::Path(p) if mirror && ranged => {
                    Some(format!("{}://{}{p}", host.scheme, host.host))
                }
                _ => None,
            };
            if fill_key.as_ref().is_some_and(|k| self.mirror_filling(k)) {
                continue;
            }
            // A mirror gets one attempt: the next host is the fallback, not a retry later.
            let policy = if mirror {
                RetryPolicy::none()
            } else {
                self.client.inner.config.retry
            };
            let outcome = self.send_to(host, access, op, req, policy).await;
            if mirror {
                let failed = match &outcome {
                    Ok(resp) => resp.status().is_server_error(),
                    Err(_) => true,
                };
                self.note_mirror(host, failed);
            }
            match outcome {
                Ok(resp) if mirror && resp.status().is_server_error() => {
                    tracing::warn!(host = %host.host, op, status = resp.status().as_u16(), "mirror failed; trying next host for {MIRROR_BACKOFF:?}");
                }
                Ok(resp) if i < last && resp.status() == StatusCode::NOT_FOUND => {
                    tracing::debug!(host = %host.host, op, "mirror does not have it; trying next host");
                }
                // A pull-through cache that does not hold the blob yet streams all of it
                // (distribution's proxy mode ignores Range until the blob is stored): the
                // next host serves the range, and the mirror fills itself meanwhile.
                Ok(resp) if i < last && ranged && resp.status() == StatusCode::OK => {
                    tracing::debug!(host = %host.host, op, "mirror answered a Range request with the whole blob; trying next host");
                    if let Some(k) = fill_key {
                        self.note_filling(k);
                    }
                }
                Ok(resp) => return Ok((resp, host.clone())),
                Err(e) if i < last => {
                    tracing::warn!(host = %host.host, op, error = %e, "mirror failed; using the next host for {MIRROR_BACKOFF:?}");
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Protocol {
            ctx: self.ctx(op),
            reason: "no host answered".to_owned(),
        }))
    }

    /// Whether the mirror blob `key` answered a Range request with the whole blob less than
    /// [`ClientConfig::mirror_fill_wait`] ago.
    fn mirror_filling(&self, key: &str) -> bool {
        let wait = self.client.inner.config.mirror_fill_wait;
        Moments::of(&self.client.inner.mirror_fills).within(key, wait)
    }

    /// Records that the mirror blob `key` is not held by the mirror yet.
    fn note_filling(&self, key: String) {
        let wait = self.client.inner.config.mirror_fill_wait;
        Moments::of(&self.client.inner.mirror_fills).stamp(key, wait);
    }

    /// Whether `host` failed less than [`MIRROR_BACKOFF`] ago.
    fn mirror_is_down(&self, host: &RegistryHost) -> bool {
        let key = format!("{}://{}", host.scheme, host.host);
        Moments::of(&self.client.inner.mirrors_down).within(&key, MIRROR_BACKOFF)
    }

    /// Records whether a request to mirror `host` failed.
    fn note_mirror(&self, host: &RegistryHost, failed: bool) {
        let key = format!("{}://{}", host.scheme, host.host);
        let mut down = Moments::of(&self.client.inner.mirrors_down);
        if failed {
            down.stamp(key, MIRROR_BACKOFF);
        } else {
            down.0.remove(&key);
        }
    }

    /// An upload request to `host` (the one host an upload session lives on), with the
    /// configured retries.
    async fn send_push(
        &self,
        host: &RegistryHost,
        op: &str,
        req: Req,
    ) -> Result<reqwest::Response> {
        let policy = self.client.inner.config.retry;
        self.send_to(host, Access::Push, op, req, policy).await
    }

    /// One host: authentication handshake and retries as `policy` allows.
    async fn send_to(
        &self,
        host: &RegistryHost,
        access: Access,
        op: &str,
        req: Req,
        policy: RetryPolicy,
    ) -> Result<reqwest::Response> {
        let http = self.client.http_for(host)?;
        let started = Instant::now();
        let mut scopes: BTreeSet<String> = BTreeSet::new();
        scopes.insert(self.scope(access));
        scopes.extend(req.extra_scopes.iter().cloned());
        let url = match &req.target {
            Target::Path(p) => Self::url(host, p)?,
            Target::Url(u) => u.clone(),
        };
        let mut attempt = 0u32;
        let mut authenticated_after_challenge = false;
        loop {
            attempt += 1;
            let scope_key = scopes.iter().cloned().collect::<Vec<_>>().join(" ");
            let mut rb = http
                .request(req.method.clone(), url.clone())
                .headers(req.headers.clone());
            for (k, v) in &host.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            if req.timeout {
                rb = rb.timeout(self.client.inner.config.request_timeout);
            }
            if let Some(auth) = self.cached_auth(host, &scope_key)? {
                rb = rb.header(AUTHORIZATION, auth);
            }
            if let Some(body) = &req.body {
                rb = rb.body(body.clone());
            }
            let outcome = rb.send().await;
            let resp = match outcome {
                Ok(r) => r,
                Err(e) => {
                    let message = error_chain(&e);
                    if let Some(d) = policy.next_delay(attempt, started, None) {
                        tracing::warn!(host = %host.host, op, attempt, error = %message, "request failed; retrying in {d:?}");
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    return Err(Error::Transport {
                        ctx: self.ctx(format!("{op} via {}://{}", host.scheme, host.host)),
                        message,
                        attempts: attempt,
                    });
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !authenticated_after_challenge {
                let challenge = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(auth::parse_challenge)
                    .min_by_key(|c| matches!(c, Challenge::Basic));
                if let Some(challenge) = challenge {
                    if let Challenge::Bearer { scope: Some(s), .. } = &challenge {
                        scopes.extend(s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
                    }
                    let scope_key = scopes.iter().cloned().collect::<Vec<_>>().join(" ");
                    self.authenticate(host, &http, &challenge, &scopes, &scope_key, op)
                        .await?;
                    authenticated_after_challenge = true;
                    attempt -= 1; // the handshake is not a failed attempt
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let lookup = self.credentials_for(host)?;
                let message = registry_message(resp).await;
                return Err(Error::Unauthorized {
                    ctx: self.ctx(op),
                    status: status.as_u16(),
                    message,
                    credential_source: lookup.source,
                });
            }
            if retry::retryable_status(status.as_u16()) {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry::parse_retry_after);
                if let Some(d) = policy.next_delay(attempt, started, retry_after) {
                    tracing::warn!(host = %host.host, op, attempt, status = status.as_u16(), "registry busy or failing; retrying in {d:?}");
                    tokio::time::sleep(d).await;
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    fn cached_auth(&self, host: &RegistryHost, scope_key: &str) -> Result<Option<String>> {
        let inner = &self.client.inner;
        if let Some(t) = inner
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(host.host.clone(), scope_key.to_owned()))
        {
            if t.is_fresh() {
                return Ok(Some(format!("Bearer {}", t.value)));
            }
        }
        let basic = inner
            .basic_hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&host.host);
        // Only a host known to want Basic makes us look credentials up before a challenge
        // (a helper may be slow), and a registry token, which is the bearer token itself.
        let keychain_token = self.keychain_credential(host);
        let credential = match keychain_token {
            Some(c @ Credential::RegistryToken(_)) => Some(c),
            _ if basic => self.credentials_for(host)?.credential,
            _ => None,
        };
        match credential {
            Some(Credential::RegistryToken(token)) => Ok(Some(format!("Bearer {token}"))),
            Some(Credential::Basic { username, password }) => {
                Ok(Some(basic_header(&username, &password)))
            }
            _ => Ok(None),
        }
    }

    /// Answers a challenge: remembers that a host wants Basic, or fetches a bearer token.
    async fn authenticate(
        &self,
        host: &RegistryHost,
        http: &reqwest::Client,
        challenge: &Challenge,
        scopes: &BTreeSet<String>,
        scope_key: &str,
        op: &str,
    ) -> Result<()> {
        let lookup = self.credentials_for(host)?;
        match challenge {
            Challenge::Basic => {
                if !matches!(lookup.credential, Some(Credential::Basic { .. })) {
                    return Err(Error::Unauthorized {
                        ctx: self.ctx(op),
                        status: 401,
                        message: "the registry wants a user name and password".to_owned(),
                        credential_source: lookup.source,
                    });
                }
                self.client
                    .inner
                    .basic_hosts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(host.host.clone());
                Ok(())
            }
            Challenge::Bearer { .. }
                if matches!(lookup.credential, Some(Credential::RegistryToken(_))) =>
            {
                Err(Error::Unauthorized {
                    ctx: self.ctx(op),
                    status: 401,
                    message: "the registry refused the registry token".to_owned(),
                    credential_source: lookup.source,
                })
            }
            Challenge::Bearer { realm, service, .. } => {
                let token = self
                    .fetch_token(http, realm, service.as_deref(), scopes, &lookup, op)
                    .await?;
                self.client
                    .inner
                    .tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((host.host.clone(), scope_key.to_owned()), token);
                Ok(())
            }
        }
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scopes: &BTreeSet<String>,
        lookup: &CredentialLookup,
        op: &str,
    ) -> Result<Token> {
        let token_op = format!("{op}: token from {realm}");
        let mut url = Url::parse(realm).map_err(|e| Error::Protocol {
            ctx: self.ctx(&token_op),
            reason: format!("bad token realm {realm:?}: {e}"),
        })?;
        let policy = self.client.inner.config.retry;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let rb = match &lookup.credential {
                Some(Credential::IdentityToken(refresh)) => {
                    // OAuth2 refresh-token grant, as Docker does for identity tokens.
                    let mut form: Vec<(&str, &str)> = vec![
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh),
                        ("client_id", "soci-rs"),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s));
                    }
                    let scope = scopes.iter().cloned().collect::<Vec<_>>().join(" ");
                    let body = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(form.iter().copied())
                        .append_pair("scope", &scope)
                        .finish();
                    http.post(url.clone())
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(body)
                }
                cred => {
                    {
                        let mut q = url.query_pairs_mut();
                        q.clear();
                        if let Some(s) = service {
                            q.append_pair("service", s);
                        }
                        for s in scopes {
                            q.append_pair("scope", s);
                        }
                    }
                    let mut rb = http.get(url.clone());
                    if let Some(Credential::Basic { username, password }) = cred {
                        rb = rb.header(AUTHORIZATION, basic_header(username, password));
                    }
                    rb
                }
            };
            let resp = rb
                .timeout(self.client.inner.config.request_timeout)
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    if let Some(d) = policy.next_delay(attempt, started, None) {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    return Err(Error::Transport {
                        ctx: self.ctx(&token_op),
                        message: error_chain(&e),
                        attempts: attempt,
                    });
                }
            };
            let status = resp.status();
            if retry::retryable_status(status.as_u16()) {
                if let Some(d) = policy.next_delay(attempt, started, None) {
                    tokio::time::sleep(d).await;
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(Error::Unauthorized {
                    ctx: self.ctx(&token_op),
                    status: status.as_u16(),
                    message: registry_message(resp).await,
                    credential_source: lookup.source.clone(),
                });
            }
            if !status.is_success() {
                return Err(Error::Status {
                    ctx: self.ctx(&token_op),
                    status: status.as_u16(),
                    message: registry_message(resp).await,
                });
            }
            let body = read_limited(resp, 1 << 20, &self.ctx(&token_op)).await?;
            return auth::parse_token_response(&body).map_err(|reason| Error::Protocol {
                ctx: self.ctx(&token_op),
                reason,
            });
        }
    }

    /// Fetches a manifest by tag or digest, verifying it: against the digest asked for, and
    /// against `Docker-Content-Digest` when fetched by tag.
    pub async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        let by_digest = reference.starts_with("sha256:");
        let access = if by_digest {
            Access::Pull
        } else {
            Access::Resolve
        };
        let op = format!("GET manifest {reference}");
        let path = format!("/{}/manifests/{}", self.name, reference);
        let (resp, _) = self
            .send(access, &op, || {
                Req::new(Method::GET, path.clone()).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        let ctx = self.ctx(&op);
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Error::ManifestUnknown {
                reference: self.reference_text(reference),
            });
        }
        if !status.is_success() {
            return Err(Error::Status {
                ctx,
                status: status.as_u16(),
                message: registry_message(resp).await,
            });
        }
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_owned());
        let header_digest = header_str(resp.headers(), DIGEST_HEADER);
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES, &ctx).await?;
        let digest = oci::digest::sha256(&bytes);
        let expected = if by_digest {
            Some(reference.to_owned())
        } else {
            header_digest.filter(|d| d.starts_with("sha256:"))
        };
        if let Some(expected) = expected {
            if expected != digest.to_string() {
                return Err(Error::DigestMismatch {
                    ctx,
                    expected,
                    actual: digest.to_string(),
                });
            }
        }
        let media_type = match content_type {
            Some(ct) if !ct.is_empty() && ct != "application/json" && ct != "text/plain" => ct,
            _ => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
                .unwrap_or_default(),
        };
        Ok(Manifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Whether a manifest exists; returns its digest (when the registry tells) and size.
    pub async fn head_manifest(&self, reference: &str) -> Result<Option<(Option<Digest>, u64)>> {
        let by_digest = reference.starts_with("sha256:");
        let access = if by_digest {
            Access::Pull
        } else {
            Access::Resolve
        };
        let op = format!("HEAD manifest {reference}");
        let path = format!("/{}/manifests/{}", self.name, reference);
        let (resp, _) = self
            .send(access, &op, || {
                Req::new(Method::HEAD, path.clone()).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let digest = header_str(resp.headers(), DIGEST_HEADER)
                    .and_then(|d| oci::digest::parse(&d).ok());
                Ok(Some((
                    digest,
                    header_content_length(resp.headers()).unwrap_or(0),
                )))
            }
            s => Err(Error::Status {
                ctx: self.ctx(&op),
                status: s.as_u16(),
                message: s.canonical_reason().unwrap_or("").to_owned(),
            }),
        }
    }

    /// Size of a blob if the repository has it.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        self.blob_size_with(digest, Access::Pull).await
    }

    async fn blob_size_with(&self, digest: &Digest, access: Access) -> Result<Option<u64>> {
        let op = format!("HEAD blob {digest}");
        let path = format!("/{}/blobs/{}", self.name, digest);
        let (resp, _) = self
            .send(access, &op, || Req::new(Method::HEAD, path.clone()))
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(header_content_length(resp.headers()).unwrap_or(0))),
            s => Err(Error::Status {
                ctx: self.ctx(&op),
                status: s.as_u16(),
                message: s.canonical_reason().unwrap_or("").to_owned(),
            }),
        }
    }

    /// Fetches a small blob whole (config, zTOC, SOCI index), verified against its digest.
    pub async fn get_blob_bytes(&self, digest: &Digest, limit: u64) -> Result<Bytes> {
        let op = format!("GET blob {digest}");
        let (resp, _) = self.get_blob_response(digest, None, &op).await?;
        let ctx = self.ctx(&op);
        let bytes = read_limited(resp, limit, &ctx).await?;
        let actual = oci::digest::sha256(&bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                ctx,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    async fn get_blob_response(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
        op: &str,
    ) -> Result<(reqwest::Response, RegistryHost)> {
        let path = format!("/{}/blobs/{}", self.name, digest);
        let (resp, host) = self
            .send(Access::Pull, op, || {
                let mut r = Req::new(Method::GET, path.clone());
                r.timeout = false;
                if let Some((start, end)) = range {
                    r = r.header(
                        reqwest::header::RANGE,
                        &format!("bytes={start}-{}", end.saturating_sub(1)),
                    );
                }
                r
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Error::BlobUnknown {
                ctx: self.ctx(op),
                digest: digest.to_string(),
            });
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Err(Error::Protocol {
                ctx: self.ctx(op),
                reason: format!("range {range:?} is outside the blob"),
            });
        }
        if !status.is_success() {
            return Err(Error::Status {
                ctx: self.ctx(op),
                status: status.as_u16(),
                message: registry_message(resp).await,
            });
        }
        Ok((resp, host))
    }

    /// Streams a whole blob. The caller verifies the digest as the bytes go by (the zTOC
    /// builder does); a broken connection is resumed with a Range request from where it
    /// stopped, within the retry policy.
    pub async fn get_blob(&self, digest: &Digest) -> Result<BlobStream> {
        let op = format!("GET blob {digest}");
        let (resp, _) = self.get_blob_response(digest, None, &op).await?;
        let size = resp.content_length();
        let state = ResumeState {
            repo: self.clone(),
            digest: digest.clone(),
            offset: 0,
            size,
            body: Some(resp.bytes_stream().boxed()),
            started: Instant::now(),
            attempt: 1,
        };
        let stream = futures_util::stream::try_unfold(state, |mut st| async move {
            loop {
                let Some(body) = st.body.as_mut() else {
                    return Ok(None);
                };
                match body.next().await {
                    Some(Ok(chunk)) => {
                        st.offset += chunk.len() as u64;
                        return Ok(Some((chunk, st)));
                    }
                    None => {
                        if let Some(size) = st.size {
                            if st.offset < size {
                                st.resume("body ended early").await?;
                                continue;
                            }
                        }
                        return Ok(None);
                    }
                    Some(Err(e)) => {
                        st.resume(&error_chain(&e)).await?;
                    }
                }
            }
        });
        Ok(BlobStream {
            size,
            stream: stream.boxed(),
        })
    }

    /// Reads `range` (start inclusive, end exclusive) of a blob. A 206 answer is checked
    /// (`Content-Range` must match and the body must have the right length); a 200 answer means
    /// the registry ignores ranges, and the whole blob is handed back to the caller.
    pub async fn get_blob_range(&self, digest: &Digest, range: (u64, u64)) -> Result<RangeReply> {
        let (start, end) = range;
        let op = format!("GET blob {digest} bytes {start}-{end}");
        let ctx = self.ctx(&op);
        let Some(want) = end.checked_sub(start).filter(|n| *n > 0) else {
            return Err(Error::Protocol {
                ctx,
                reason: "empty or reversed range asked for".to_owned(),
            });
        };
        let resp = match self.redirected_range(digest, range).await {
            Some(resp) => resp,
            None => {
                let (resp, host) = self.get_blob_response(digest, Some(range), &op).await?;
                self.note_redirect(digest, &resp, host);
                resp
            }
        };
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let cr = header_str(resp.headers(), "content-range").unwrap_or_default();
                match parse_content_range(&cr) {
                    Some((s, e, _)) if s == start && e == end - 1 => {}
                    _ => {
                        return Err(Error::Protocol {
                            ctx,
                            reason: format!(
                                "asked for bytes {start}-{} but Content-Range is {cr:?}",
                                end - 1
                            ),
                        })
                    }
                }
                let bytes = read_limited(resp, want, &ctx).await?;
                if bytes.len() as u64 != want {
                    return Err(Error::Protocol {
                        ctx,
                        reason: format!("range body has {} bytes, expected {want}", bytes.len()),
                    });
                }
                Ok(RangeReply::Partial(bytes))
            }
            _ => {
                tracing::warn!(registry = %self.registry, repository = %self.name, %digest, "registry ignored a Range request and sent the whole blob");
                let size = resp.content_length();
                Ok(RangeReply::Whole(BlobStream {
                    size,
                    stream: resp
                        .bytes_stream()
                        .map(|r| r.map_err(std::io::Error::other))
                        .boxed(),
                }))
            }
        }
    }

    fn redirect_key(&self, digest: &Digest) -> String {
        format!("{}/{}@{digest}", self.registry, self.name)
    }

    /// Remembers where a blob read was redirected to (the answer came from another origin
    /// than the host asked), for the next ranges of the blob.
    fn note_redirect(&self, digest: &Digest, resp: &reqwest::Response, host: RegistryHost) {
        let ttl = self.client.inner.config.redirect_ttl;
        let url = resp.url();
        let same_origin = url.scheme() == host.scheme && url.authority() == host.host;
        if ttl.is_zero() || same_origin || resp.status() != StatusCode::PARTIAL_CONTENT {
            return;
        }
        let mut map = self
            .client
            .inner
            .redirects
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.retain(|_, r| r.at.elapsed() < ttl);
        map.insert(
            self.redirect_key(digest),
            Redirect {
                url: url.clone(),
                host,
                at: Instant::now(),
            },
        );
    }

    /// A range read sent straight to the storage a registry redirected this blob to, while
    /// that is fresh. `None` when there is none, or the storage refused or failed (the
    /// redirect is forgotten then, and the caller asks the registry again).
    async fn redirected_range(
        &self,
        digest: &Digest,
        (start, end): (u64, u64),
    ) -> Option<reqwest::Response> {
        let ttl = self.client.inner.config.redirect_ttl;
        let key = self.redirect_key(digest);
        let redirect = {
            let map = self
                .client
                .inner
                .redirects
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.get(&key).filter(|r| r.at.elapsed() < ttl).cloned()
        }?;
        let http = self.client.http_for(&redirect.host).ok()?;
        // No Authorization and no hosts.toml headers: they are the registry's, and a signed
        // storage URL carries its own authority.
        let outcome = http
            .get(redirect.url.clone())
            .header(
                reqwest::header::RANGE,
                format!("bytes={start}-{}", end.saturating_sub(1)),
            )
            .send()
            .await;
        match outcome {
            Ok(resp) if resp.status() == StatusCode::PARTIAL_CONTENT => Some(resp),
            other => {
                let why = match &other {
                    Ok(resp) => format!("status {}", resp.status().as_u16()),
                    Err(e) => error_chain(e),
                };
                tracing::debug!(%digest, "storage refused the redirected read ({why}); asking the registry again");
                self.client
                    .inner
                    .redirects
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                None
            }
        }
    }

    /// Reads a range and always returns exactly its bytes, skipping through the whole blob
    /// when the registry ignores ranges.
    pub async fn read_blob_range(&self, digest: &Digest, range: (u64, u64)) -> Result<Bytes> {
        match self.get_blob_range(digest, range).await? {
            RangeReply::Partial(b) => Ok(b),
            RangeReply::Whole(mut s) => {
                // `get_blob_range` refused empty and reversed ranges, so `start < end`.
                let (start, end) = range;
                let mut pos = 0u64;
                let want = end.saturating_sub(start);
                let mut out = BytesMut::with_capacity(want.min(64 << 20) as usize);
                while let Some(chunk) = s.stream.next().await {
                    let chunk = chunk.map_err(|e| Error::Transport {
                        ctx: self.ctx(format!("GET blob {digest}")),
                        message: error_chain(&e),
                        attempts: 1,
                    })?;
                    let cs = pos;
                    let ce = pos + chunk.len() as u64;
                    pos = ce;
                    if ce <= start {
                        continue;
                    }
                    let from = start.saturating_sub(cs) as usize;
                    let to = (end.min(ce) - cs) as usize;
                    out.extend_from_slice(&chunk[from..to]);
                    if ce >= end {
                        return Ok(out.freeze());
                    }
                }
                Err(Error::Protocol {
                    ctx: self.ctx(format!("GET blob {digest}")),
                    reason: format!("blob ended at {pos}, before the range {start}-{end}"),
                })
            }
        }
    }

    /// Pushes a blob unless the repository has it; tries a cross-repository mount from each of
    /// `mount_from` first. Bytes are checked against `digest` before anything is sent.
    pub async fn push_blob(
        &self,
        digest: &Digest,
        bytes: Bytes,
        mount_from: &[&str],
    ) -> Result<BlobPush> {
        let actual = oci::digest::sha256(&bytes);
        if actual != *digest {
            return Err(Error::DigestMismatch {
                ctx: self.ctx(format!("push blob {digest}")),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        if self.blob_size_with(digest, Access::Push).await?.is_some() {
            return Ok(BlobPush::Existed);
        }
        for from in mount_from.iter().filter(|f| **f != self.name) {
            if let Some(result) = self.try_mount(digest, from).await? {
                return Ok(result);
            }
        }
        self.upload(digest, bytes).await?;
        Ok(BlobPush::Uploaded)
    }

    /// Mounts a blob from another repository without sending bytes; returns `None` when the
    /// registry cannot (it then opened an upload session, which we leave to expire).
    pub async fn mount_blob(&self, digest: &Digest, from: &str) -> Result<bool> {
        if self.blob_size_with(digest, Access::Push).await?.is_some() {
            return Ok(true);
        }
        Ok(self.try_mount(digest, from).await?.is_some())
    }

    async fn try_mount(&self, digest: &Digest, from: &str) -> Result<Option<BlobPush>> {
        let op = format!("mount blob {digest} from {from}");
        let path = format!(
            "/{}/blobs/uploads/?mount={}&from={}",
            self.name, digest, from
        );
        let (resp, _) = self
            .send(Access::Push, &op, || {
                let mut r = Req::new(Method::POST, path.clone());
                r.extra_scopes.push(format!("repository:{from}:pull"));
                r.body = Some(Bytes::new());
                r
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Some(BlobPush::Mounted)),
            StatusCode::ACCEPTED => Ok(None),
            s => Err(Error::Status {
                ctx: self.ctx(&op),
                status: s.as_u16(),
                message: registry_message(resp).await,
            }),
        }
    }

    /// POST an upload session, then PUT (monolithic) or PATCH chunks and a final PUT. The whole
    /// sequence is retried from a new session on failure, because a half-used session cannot be
    /// trusted.
    async fn upload(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let policy = self.client.inner.config.retry;
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload_once(digest, bytes.clone()).await {
                Ok(()) => return Ok(()),
                Err(e @ (Error::Transport { .. } | Error::Status { .. })) => {
                    let retryable = match &e {
                        Error::Status { status, .. } => retry::retryable_status(*status),
                        _ => true,
                    };
                    match policy.next_delay(attempt, started, None) {
                        Some(d) if retryable => {
                            tracing::warn!(%digest, error = %e, "upload failed; starting over in {d:?}");
                            tokio::time::sleep(d).await;
                        }
                        _ => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn upload_once(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let op = format!("upload blob {digest}");
        let ctx = self.ctx(&op);
        let path = format!("/{}/blobs/uploads/", self.name);
        let (resp, host) = self
            .send(Access::Push, &op, || {
                let mut r = Req::new(Method::POST, path.clone());
                r.body = Some(Bytes::new());
                r
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(Error::Status {
                ctx,
                status: resp.status().as_u16(),
                message: registry_message(resp).await,
            });
        }
        let mut location = upload_location(&resp, &host, &ctx)?;
        let chunk_size = self.client.inner.config.upload_chunk_size.max(1);
        if bytes.len() > chunk_size {
            let mut offset = 0usize;
            while offset < bytes.len() {
                let end = (offset + chunk_size).min(bytes.len());
                let chunk = bytes.slice(offset..end);
                let mut req = Req::new(Method::PATCH, String::new())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(
                        reqwest::header::CONTENT_RANGE,
                        &format!("{offset}-{}", end - 1),
                    );
                req.target = Target::Url(location.clone());
                req.body = Some(chunk);
                let resp = self.send_push(&host, &op, req).await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(Error::Status {
                        ctx,
                        status: resp.status().as_u16(),
                        message: registry_message(resp).await,
                    });
                }
                location = upload_location(&resp, &host, &ctx)?;
                offset = end;
            }
        }
        let mut put_url = location.clone();
        put_url
            .query_pairs_mut()
            .append_pair("digest", digest.as_ref());
        let mut req =
            Req::new(Method::PUT, String::new()).header(CONTENT_TYPE, "application/octet-stream");
        req.target = Target::Url(put_url);
        req.body = Some(if bytes.len() > chunk_size {
            Bytes::new()
        } else {
            bytes
        });
        let resp = self.send_push(&host, &op, req).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(Error::Status {
                ctx,
                status: resp.status().as_u16(),
                message: registry_message(resp).await,
            });
        }
        Ok(())
    }

    /// PUTs a manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PutManifest> {
        let op = format!("PUT manifest {reference}");
        let digest = oci::digest::sha256(&bytes);
        if reference.starts_with("sha256:") && reference != digest.to_string() {
            return Err(Error::DigestMismatch {
                ctx: self.ctx(&op),
                expected: reference.to_owned(),
                actual: digest.to_string(),
            });
        }
        let path = format!("/{}/manifests/{}", self.name, reference);
        let (resp, _) = self
            .send(Access::Push, &op, || {
                let mut r = Req::new(Method::PUT, path.clone()).header(CONTENT_TYPE, media_type);
                r.body = Some(bytes.clone());
                r
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Status {
                ctx: self.ctx(&op),
                status: status.as_u16(),
                message: registry_message(resp).await,
            });
        }
        if let Some(d) = header_str(resp.headers(), DIGEST_HEADER) {
            if d != digest.to_string() {
                return Err(Error::DigestMismatch {
                    ctx: self.ctx(&op),
                    expected: digest.to_string(),
                    actual: d,
                });
            }
        }
        let subject_handled = resp.headers().contains_key("oci-subject");
        Ok(PutManifest {
            digest,
            subject_handled,
        })
    }

    /// Tags of the repository (follows `Link` pagination, bounded).
    pub async fn list_tags(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        self.list_pages(
            format!("/{}/tags/list?n=1000", self.name),
            "GET tags",
            None,
            "tag list",
            |body| serde_json::from_slice::<TagList>(body).map(|l| l.tags.unwrap_or_default()),
        )
        .await
    }

    /// Follows a `Link`-paginated listing from `first` (a path below `/v2`), at most
    /// [`MAX_LIST_PAGES`] pages of [`MAX_LIST_PAGE_BYTES`] each, collecting the names `names`
    /// reads from each page; a 404 ends the listing. `scope` is an extra token scope to ask for.
    async fn list_pages(
        &self,
        first: String,
        op: &str,
        scope: Option<&str>,
        what: &str,
        names: impl Fn(&[u8]) -> serde_json::Result<Vec<String>>,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut path = first;
        let op = op.to_owned();
        for _ in 0..MAX_LIST_PAGES {
            let (resp, _) = self
                .send(Access::Resolve, &op, || {
                    let mut req = Req::new(Method::GET, path.clone());
                    req.extra_scopes.extend(scope.map(str::to_owned));
                    req
                })
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(out);
            }
            if !resp.status().is_success() {
                return Err(Error::Status {
                    ctx: self.ctx(&op),
                    status: resp.status().as_u16(),
                    message: registry_message(resp).await,
                });
            }
            let next = header_str(resp.headers(), "link").and_then(|l| parse_link_next(&l));
            let body = read_limited(resp, MAX_LIST_PAGE_BYTES, &self.ctx(&op)).await?;
            out.extend(names(&body).map_err(|e| Error::Protocol {
                ctx: self.ctx(&op),
                reason: format!("{what} is not JSON: {e}"),
            })?);
            match next {
                // Link is `/v2/...`; our paths are below the `/v2` prefix.
                Some(n) => path = n.strip_prefix("/v2").unwrap_or(&n).to_owned(),
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    /// Referrers of `subject`: the referrers API when the registry has it, else the tag schema.
    pub async fn referrers(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers> {
        let op = format!("GET referrers {subject}");
        let mut path = format!("/{}/referrers/{}", self.name, subject);
        if let Some(at) = artifact_type {
            path.push_str("?artifactType=");
            path.push_str(&url::form_urlencoded::byte_serialize(at.as_bytes()).collect::<String>());
        }
        let (resp, _) = self
            .send(Access::Pull, &op, || {
                Req::new(Method::GET, path.clone()).header(ACCEPT, oci::manifest::OCI_INDEX)
            })
            .await?;
        let ct = header_str(resp.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
        let (descriptors, source) =
            if resp.status().is_success() && ct.starts_with(oci::manifest::OCI_INDEX) {
                let body = read_limited(resp, MAX_MANIFEST_BYTES, &self.ctx(&op)).await?;
                (
                    parse_index_descriptors(&body, &self.ctx(&op))?,
                    ReferrersSource::Api,
                )
            } else if resp.status() == StatusCode::NOT_FOUND
                || resp.status().is_success()
                || resp.status() == StatusCode::BAD_REQUEST
                || resp.status() == StatusCode::METHOD_NOT_ALLOWED
            {
                let (descs, _) = self.referrers_tag_index(subject).await?;
                (descs, ReferrersSource::TagSchema)
            } else {
                return Err(Error::Status {
                    ctx: self.ctx(&op),
                    status: resp.status().as_u16(),
                    message: registry_message(resp).await,
                });
            };
        let descriptors = descriptors
            .into_iter()
            .filter(|d| match artifact_type {
                Some(at) => descriptor_artifact_type(d).as_deref() == Some(at),
                None => true,
            })
            .collect();
        Ok(Referrers {
            descriptors,
            source,
        })
    }

    /// The tag-schema referrers index of `subject` (`sha256-<hex>`): its descriptors and
    /// whether it exists.
    async fn referrers_tag_index(&self, subject: &Digest) -> Result<(Vec<oci::Descriptor>, bool)> {
        let tag = referrers_tag(subject);
        match self.get_manifest(&tag).await {
            Ok(m) => {
                let ctx = self.ctx(format!("read referrers tag {tag}"));
                Ok((parse_index_descriptors(&m.bytes, &ctx)?, true))
            }
            Err(e) if e.is_not_found() => Ok((Vec::new(), false)),
            Err(e) => Err(e),
        }
    }

    /// Adds `descriptor` to the tag-schema referrers index of `subject`, keeping every entry
    /// already there. Returns false when it was already listed.
    pub async fn add_referrer_to_tag_schema(
        &self,
        subject: &Digest,
        descriptor: &oci::Descriptor,
    ) -> Result<bool> {
        let (mut descs, _) = self.referrers_tag_index(subject).await?;
        if descs.iter().any(|d| d.digest() == descriptor.digest()) {
            return Ok(false);
        }
        descs.push(descriptor.clone());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::manifest::OCI_INDEX,
            "manifests": descs,
        });
        let bytes = serde_json::to_vec(&index).map_err(|e| Error::Protocol {
            ctx: self.ctx("write referrers tag"),
            reason: e.to_string(),
        })?;
        self.put_manifest(
            &referrers_tag(subject),
            oci::manifest::OCI_INDEX,
            Bytes::from(bytes),
        )
        .await?;
        Ok(true)
    }
}

/// Largest page of a tag list or the catalog we read (1000 long names are far below it).
const MAX_LIST_PAGE_BYTES: u64 = 16 << 20;
/// Pages of a tag list or the catalog followed at most (a million names at 1000 a page).
const MAX_LIST_PAGES: usize = 1000;

impl Client {
    /// Repository names of `registry` (`GET /v2/_catalog`), following `Link` pagination as
    /// [`Repository::list_tags`] does; asks for the `registry:catalog:*` scope under token
    /// auth. A registry without a catalog (404) yields an empty list.
    pub async fn catalog(&self, registry: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        // The catalog is not below a repository: an empty name gives the registry's
        // hosts, credentials and retries without a repository scope of our own.
        let repo = self.repository(registry, "")?;
        repo.list_pages(
            "/_catalog?n=1000".to_owned(),
            "GET catalog",
            Some("registry:catalog:*"),
            "catalog",
            |body| {
                serde_json::from_slice::<Catalog>(body).map(|c| c.repositories.unwrap_or_default())
            },
        )
        .await
    }
}

struct ResumeState {
    repo: Repository,
    digest: Digest,
    offset: u64,
    size: Option<u64>,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    started: Instant,
    attempt: u32,
}

impl ResumeState {
    /// Re-opens the blob at `offset` after a broken body.
    async fn resume(&mut self, why: &str) -> std::io::Result<()> {
        let policy = self.repo.client.inner.config.retry;
        let op = format!("GET blob {}", self.digest);
        loop {
            let Some(delay) = policy.next_delay(self.attempt, self.started, None) else {
                return Err(std::io::Error::other(Error::Transport {
                    ctx: self.repo.ctx(&op),
                    message: format!("{why} at byte {}", self.offset),
                    attempts: self.attempt,
                }));
            };
            self.attempt += 1;
            tracing::warn!(digest = %self.digest, offset = self.offset, "blob stream broke ({why}); resuming in {delay:?}");
            tokio::time::sleep(delay).await;
            let end = self.size.unwrap_or(u64::MAX);
            if self.offset >= end {
                self.body = None;
                return Ok(());
            }
            let range = (self.offset, end);
            let reply = if self.size.is_some() {
                self.repo.get_blob_range(&self.digest, range).await
            } else {
                Err(Error::Protocol {
                    ctx: self.repo.ctx(&op),
                    reason: "cannot resume a blob of unknown size".to_owned(),
                })
            };
            match reply {
                Ok(RangeReply::Partial(bytes)) => {
                    self.body = Some(futures_util::stream::once(async move { Ok(bytes) }).boxed());
                    return Ok(());
                }
                Ok(RangeReply::Whole(_)) | Err(Error::Protocol { .. }) => {
                    return Err(std::io::Error::other(format!(
                        "{}/{}: blob {} broke at byte {} ({why}) and the registry cannot resume it",
                        self.repo.registry, self.repo.name, self.digest, self.offset
                    )));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "resuming blob failed");
                    continue;
                }
            }
        }
    }
}

/// The referrers tag schema's tag for a subject digest.
pub fn referrers_tag(subject: &Digest) -> String {
    let s = subject.to_string().replace(':', "-");
    s.chars().take(128).collect()
}

/// Artifact type of a referrers-index entry (OCI 1.1 puts it in `artifactType`).
pub fn descriptor_artifact_type(d: &oci::Descriptor) -> Option<String> {
    d.artifact_type().as_ref().map(|m| m.to_string())
}

fn parse_index_descriptors(bytes: &[u8], ctx: &Context) -> Result<Vec<oci::Descriptor>> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<oci::Descriptor>,
    }
    let index: Index = serde_json::from_slice(bytes).map_err(|e| Error::Protocol {
        ctx: ctx.clone(),
        reason: format!("referrers index is not a valid OCI index: {e}"),
    })?;
    Ok(index.manifests)
}

fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `Content-Length` as sent: for HEAD answers the HTTP stack reports the (empty) body's
/// length instead, which is not what the registry said.
fn header_content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, "content-length")?.parse().ok()
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

fn upload_location(resp: &reqwest::Response, host: &RegistryHost, ctx: &Context) -> Result<Url> {
    let loc = header_str(resp.headers(), "location").ok_or_else(|| Error::Protocol {
        ctx: ctx.clone(),
        reason: "upload answer has no Location header".to_owned(),
    })?;
    let base =
        Url::parse(&format!("{}://{}/", host.scheme, host.host)).map_err(|e| Error::Protocol {
            ctx: ctx.clone(),
            reason: e.to_string(),
        })?;
    base.join(&loc).map_err(|e| Error::Protocol {
        ctx: ctx.clone(),
        reason: format!("bad upload Location {loc:?}: {e}"),
    })
}

/// Parses `bytes START-END/TOTAL` (`TOTAL` may be `*`).
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (s, e) = range.split_once('-')?;
    let (s, e) = (s.trim().parse().ok()?, e.trim().parse().ok()?);
    if e < s {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((s, e, total))
}

/// The `rel="next"` target of a `Link` header (tag-list pagination).
pub fn parse_link_next(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
            return None;
        }
        Some(
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned(),
        )
    })
}

/// Reads a body up to `limit` bytes; more is a protocol error (a manifest or token bigger
/// than any real one is an attack or a misconfiguration, not something to buffer).
async fn read_limited(resp: reqwest::Response, limit: u64, ctx: &Context) -> Result<Bytes> {
    if let Some(len) = resp.content_length() {
        if len > limit {
            return Err(Error::Protocol {
                ctx: ctx.clone(),
                reason: format!("body of {len} bytes exceeds the limit of {limit}"),
            });
        }
    }
    let mut out = BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Transport {
            ctx: ctx.clone(),
            message: error_chain(&e),
            attempts: 1,
        })?;
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(Error::Protocol {
                ctx: ctx.clone(),
                reason: format!("body exceeds the limit of {limit} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// The registry's error message: `CODE: message` from the JSON error body, else the status.
async fn registry_message(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&body) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|i| format!("{}: {}", i.code, i.message))
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)])
        .trim()
        .to_owned();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("").to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 0-9/100"),
            Some((0, 9, Some(100)))
        );
        assert_eq!(parse_content_range("bytes 5-5/*"), Some((5, 5, None)));
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        assert_eq!(parse_content_range("items 0-9/100"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn link_header() {
        assert_eq!(
            parse_link_next(r#"</v2/a/tags/list?last=x&n=2>; rel="next""#),
            Some("/v2/a/tags/list?last=x&n=2".to_owned())
        );
        assert_eq!(parse_link_next("garbage"), None);
    }

    #[test]
    fn referrers_tag_schema_name() {
        let d = oci::digest::sha256(b"x");
        let t = referrers_tag(&d);
        assert!(t.starts_with("sha256-") && t.len() == 71);
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    /// Reversed and empty ranges are refused before any request is made (nothing listens on
    /// the port), instead of underflowing `end - start`.
    #[tokio::test]
    async fn reversed_and_empty_ranges_are_errors() {
        let client = Client::new(ClientConfig::default());
        let repo = client.repository("127.0.0.1:9", "x/y").unwrap();
        let d = oci::digest::sha256(b"x");
        for range in [(10, 5), (7, 7), (u64::MAX, 0)] {
            let err = repo.read_blob_range(&d, range).await.unwrap_err();
            assert!(
                err.to_string().contains("reversed range"),
                "{range:?}: {err}"
            );
            let Err(err) = repo.get_blob_range(&d, range).await else {
                panic!("{range:?} was accepted");
            };
            assert!(matches!(err, Error::Protocol { .. }), "{range:?}: {err}");
        }
    }
}
