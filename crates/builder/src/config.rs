//! The TOML configuration file (`soci-index-builder config` prints a commented default).
//!
//! Unknown keys are errors naming the key, so a typo (`deny_repository`) never silently turns a
//! filter off. Every error names the file and the key.

use crate::error::{Error, Result};
use crate::filters::{Filters, TagPattern};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8900";
/// Default state directory (holds `queue.redb`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/soci-index-builder";
/// Default v2 destination tag pattern.
pub const DEFAULT_TAG_PATTERN: &str = "{tag}-soci";
/// Default header carrying the shared secret.
pub const DEFAULT_SECRET_HEADER: &str = "Authorization";

/// The commented default configuration printed by `soci-index-builder config`.
pub const DEFAULT_CONFIG: &str = r#"# soci-index-builder configuration (TOML). Unknown keys are errors.

# Address the HTTP service listens on (POST /events, GET /healthz, GET /metrics, /jobs).
listen = "127.0.0.1:8900"

# Shared secret the registry sends with every notification. Required: set exactly one of
# `secret` or `secret_file` (a file holding the secret; surrounding whitespace is trimmed).
# With the default header the registry must send `Authorization: Bearer <secret>`.
# secret = "a-long-random-string"
# secret_file = "/etc/soci-index-builder/secret"
# Header carrying it. "Authorization" expects "Bearer <secret>"; any other header expects the
# bare secret.
secret_header = "Authorization"

# Where the job queue lives (queue.redb).
state_dir = "/var/lib/soci-index-builder"

# Jobs run at once.
concurrency = 2

[registry]
# Registry to talk to. Default: the host the registry was reached at, from each event's
# request.host. Set it when the registry sits behind a proxy and sees another Host.
# endpoint = "registry.internal:5000"
# Without an endpoint: the only hosts events may name (anything else is ignored). Needed with
# username/password, which would otherwise go to whatever Host a pushing client sent.
# hosts = ["registry.internal:5000"]
# Plain HTTP instead of HTTPS. Default: plain HTTP only for loopback hosts on a port other
# than 443 (as containerd).
# plain_http = false
# Credentials (pull and push). Default: Docker's config.json of the user running the builder.
# username = "soci-builder"
# password = "..."
# password_file = "/etc/soci-index-builder/registry-password"
# containerd-style hosts.toml directory (mirrors, CA files).
# hosts_dir = "/etc/containerd/certs.d"

[filters]
# Glob patterns on repository names; '*' stays within one path component, '**' crosses them.
# Empty allow-list = every repository.
repositories = []
deny_repositories = []
# Glob patterns on tags. Empty allow-list = every tag. A manifest pushed by digest (no tag)
# is indexed only in v1 mode with an empty allow-list; v2 mode needs a tag, and with an
# allow-list it has no tag to match.
tags = []
deny_tags = []
# Manifest media types to act on (image manifests and indexes, OCI and Docker).
media_types = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]
# Images whose layers add up to less than this many MiB get no index.
min_image_size_mb = 0

[publish]
# "v1": `soci push` semantics (an index per image manifest, found through the referrers API
# or the sha256-<hex> referrers tag). "v2": `soci convert` to a new tag (tag_pattern).
mode = "v1"
# v2 destination tag; {tag} is the source tag.
tag_pattern = "{tag}-soci"
# Platforms to index (os/arch[/variant]). Empty = every platform of the image.
platforms = []
# Uncompressed bytes between checkpoints (AWS's CLI uses 4194304).
span_size = 1048576
# Layers smaller than this (bytes) get no zTOC and are fetched whole at run time.
min_layer_size = 10485760
# Layers streamed and indexed at once within one job.
layer_concurrency = 2
# Files to prefetch when a container starts (paths in the image, as `soci create
# --prefetch-file`): each index lists, per layer, the spans holding them, and the snapshotter
# fetches those before the container reads anything. Paths an image lacks are ignored.
prefetch_files = []
# List a lean zTOC beside each gzip zTOC (the zTOC without its checkpoint windows, which
# soci-rs's snapshotter fetches instead of the zTOC; AWS's passes over it).
lean_ztocs = true

[retry]
# Attempts per job before it is marked failed (transient errors only; permanent errors fail
# at once).
max_attempts = 5
# Wait before the second attempt; doubles for each further attempt up to max_backoff_secs.
initial_backoff_secs = 5
max_backoff_secs = 300
"#;

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default = "default_secret_header")]
    secret_header: String,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    #[serde(default)]
    registry: RegistryConfig,
    #[serde(default)]
    filters: RawFilters,
    #[serde(default)]
    publish: RawPublish,
    #[serde(default)]
    retry: RetryConfig,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_owned()
}
fn default_secret_header() -> String {
    DEFAULT_SECRET_HEADER.to_owned()
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_concurrency() -> usize {
    2
}

/// `[registry]`: how to reach the registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry host to talk to instead of each event's `request.host`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Without `endpoint`: the event hosts (`request.host`) the builder talks to; events
    /// naming another host are ignored. Empty = any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Force plain HTTP (true) or HTTPS (false); unset = plain only for loopback hosts.
    #[serde(default)]
    pub plain_http: Option<bool>,
    /// User name for basic auth / token requests.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (prefer `password_file`).
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// containerd-style `hosts.toml` directory.
    #[serde(default)]
    pub hosts_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilters {
    #[serde(default)]
    repositories: Vec<String>,
    #[serde(default)]
    deny_repositories: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    deny_tags: Vec<String>,
    #[serde(default = "default_media_types")]
    media_types: Vec<String>,
    #[serde(default)]
    min_image_size_mb: u64,
}

impl Default for RawFilters {
    fn default() -> Self {
        RawFilters {
            repositories: Vec::new(),
            deny_repositories: Vec::new(),
            tags: Vec::new(),
            deny_tags: Vec::new(),
            media_types: default_media_types(),
            min_image_size_mb: 0,
        }
    }
}

fn default_media_types() -> Vec<String> {
    registry::notifications::MANIFEST_MEDIA_TYPES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "default_tag_pattern")]
    tag_pattern: String,
    #[serde(default)]
    platforms: Vec<String>,
    #[serde(default = "default_span_size")]
    span_size: u64,
    #[serde(default = "default_min_layer_size")]
    min_layer_size: u64,
    #[serde(default = "default_layer_concurrency")]
    layer_concurrency: usize,
    #[serde(default)]
    prefetch_files: Vec<String>,
    #[serde(default = "default_lean_ztocs")]
    lean_ztocs: bool,
}

impl Default for RawPublish {
    fn default() -> Self {
        RawPublish {
            mode: default_mode(),
            tag_pattern: default_tag_pattern(),
            platforms: Vec::new(),
            span_size: default_span_size(),
            min_layer_size: default_min_layer_size(),
            layer_concurrency: default_layer_concurrency(),
            prefetch_files: Vec::new(),
            lean_ztocs: default_lean_ztocs(),
        }
    }
}

fn default_lean_ztocs() -> bool {
    indexer::Settings::default().lean_ztocs
}

fn default_mode() -> String {
    "v1".to_owned()
}
fn default_tag_pattern() -> String {
    DEFAULT_TAG_PATTERN.to_owned()
}
fn default_span_size() -> u64 {
    indexer::Settings::default().span_size
}
fn default_min_layer_size() -> u64 {
    indexer::Settings::default().min_layer_size
}
fn default_layer_concurrency() -> usize {
    indexer::Settings::default().layer_concurrency
}

/// `[retry]`: how failed jobs are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in total before a job is failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt, in seconds.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff_secs: u64,
    /// Longest delay between two attempts, in seconds.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: u64,
}

fn default_max_attempts() -> u32 {
    5
}
fn default_initial_backoff() -> u64 {
    5
}
fn default_max_backoff() -> u64 {
    300
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            initial_backoff_secs: default_initial_backoff(),
            max_backoff_secs: default_max_backoff(),
        }
    }
}

impl RetryConfig {
    /// Delay after failed attempt number `attempt` (1-based): `initial * 2^(attempt-1)`,
    /// capped at `max_backoff_secs`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(32);
        let secs = self
            .initial_backoff_secs
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_secs);
        Duration::from_secs(secs)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages); empty when built in code.
    pub path: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// The shared secret.
    pub secret: String,
    /// Header carrying the secret.
    pub secret_header: String,
    /// State directory.
    pub state_dir: PathBuf,
    /// Jobs at once.
    pub concurrency: usize,
    /// Registry access.
    pub registry: RegistryConfig,
    /// Intake filters.
    pub filters: Filters,
    /// What the indexer builds.
    pub settings: indexer::Settings,
    /// How it publishes.
    pub publish: indexer::Publish,
    /// Job retries.
    pub retry: RetryConfig,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_owned(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates configuration text; `path` is only used in messages and to
    /// resolve nothing (relative paths stay relative to the working directory).
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let err = |reason: String| Error::Config {
            path: path.to_owned(),
            reason,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let listen: SocketAddr = raw.listen.parse().map_err(|e| {
            err(format!(
                "listen: {:?} is not an address:port ({e})",
                raw.listen
            ))
        })?;
        let secret = match (&raw.secret, &raw.secret_file) {
            (Some(_), Some(_)) => {
                return Err(err("set only one of `secret` and `secret_file`".to_owned()))
            }
            (None, None) => {
                return Err(err(
                    "no secret: set `secret` or `secret_file` (the registry sends it with every notification; the builder refuses to start without one)".to_owned(),
                ))
            }
            (Some(s), None) => s.trim().to_owned(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| err(format!("secret_file: cannot read {}: {e}", f.display())))?
                .trim()
                .to_owned(),
        };
        if secret.is_empty() {
            return Err(err("secret: is empty".to_owned()));
        }
        if raw.secret_header.is_empty()
            || reqwest::header::HeaderName::from_bytes(raw.secret_header.as_bytes()).is_err()
        {
            return Err(err(format!(
                "secret_header: {:?} is not an HTTP header name",
                raw.secret_header
            )));
        }
        if raw.concurrency == 0 {
            return Err(err("concurrency: must be at least 1".to_owned()));
        }
        let r = &raw.registry;
        if r.password.is_some() && r.password_file.is_some() {
            return Err(err(
                "[registry]: set only one of `password` and `password_file`".to_owned(),
            ));
        }
        if (r.password.is_some() || r.password_file.is_some()) && r.username.is_none() {
            return Err(err("[registry] username: needed with a password".to_owned()));
        }
        // `request.host` is the Host header of the pushing client's request: anyone who can
        // push chooses it. Configured credentials must not follow it to another server.
        if r.username.is_some() && r.endpoint.is_none() && r.hosts.is_empty() {
            return Err(err(
                "[registry]: with username/password, set `endpoint` or `hosts`: otherwise the \
                 credentials would go to whatever host an event names (the Host header a \
                 pushing client sent)"
                    .to_owned(),
            ));
        }
        for h in &r.hosts {
            if !registry::notifications::valid_host(h) {
                return Err(err(format!("[registry] hosts: {h:?} is not host[:port]")));
            }
        }
        if let Some(e) = &r.endpoint {
            if !registry::notifications::valid_host(e) {
                return Err(err(format!(
                    "[registry] endpoint: {e:?} is not host[:port] (no scheme; use plain_http for HTTP)"
                )));
            }
        }
        let publish = match raw.publish.mode.as_str() {
            "v1" => indexer::Publish::V1,
            "v2" => indexer::Publish::V2 {
                tag_pattern: raw.publish.tag_pattern.clone(),
            },
            other => {
                return Err(err(format!(
                    "[publish] mode: {other:?} is neither \"v1\" nor \"v2\""
                )))
            }
        };
        let tag_pattern = TagPattern::parse(&raw.publish.tag_pattern)
            .map_err(|why| err(format!("[publish] tag_pattern: {why}")))?;
        let platforms = if raw.publish.platforms.is_empty() {
            oci::resolve::PlatformSelection::All
        } else {
            let mut v = Vec::new();
            for p in &raw.publish.platforms {
                v.push(
                    oci::platform::Platform::parse(p)
                        .map_err(|e| err(format!("[publish] platforms: {e}")))?,
                );
            }
            oci::resolve::PlatformSelection::Some(v)
        };
        if raw.publish.span_size == 0 {
            return Err(err("[publish] span_size: must be positive".to_owned()));
        }
        if raw.publish.layer_concurrency == 0 {
            return Err(err(
                "[publish] layer_concurrency: must be at least 1".to_owned()
            ));
        }
        if raw.retry.max_attempts == 0 {
            return Err(err("[retry] max_attempts: must be at least 1".to_owned()));
        }
        if raw.retry.max_backoff_secs < raw.retry.initial_backoff_secs {
            return Err(err(
                "[retry] max_backoff_secs: must not be below initial_backoff_secs".to_owned(),
            ));
        }
        let f = &raw.filters;
        for m in &f.media_types {
            if !registry::notifications::is_manifest_media_type(m) {
                return Err(err(format!(
                    "[filters] media_types: {m:?} is not an image manifest or index media type (one of {})",
                    registry::notifications::MANIFEST_MEDIA_TYPES.join(", ")
                )));
            }
        }
        let filters = Filters::new(
            &f.repositories,
            &f.deny_repositories,
            &f.tags,
            &f.deny_tags,
            &f.media_types,
            tag_pattern,
            matches!(publish, indexer::Publish::V2 { .. }),
        )
        .map_err(|e| err(format!("[filters] {e}")))?;
        let settings = indexer::Settings {
            span_size: raw.publish.span_size,
            min_layer_size: raw.publish.min_layer_size,
            min_image_size: f.min_image_size_mb.saturating_mul(1 << 20),
            platforms,
            layer_concurrency: raw.publish.layer_concurrency,
            prefetch: indexer::prefetch::PrefetchList::parse(&raw.publish.prefetch_files, None)
                .map_err(|e| err(format!("[publish] prefetch_files: {e}")))?
                .paths,
            lean_ztocs: raw.publish.lean_ztocs,
            ..indexer::Settings::default()
        };
        Ok(Config {
            path: path.to_owned(),
            listen,
            secret,
            secret_header: raw.secret_header,
            state_dir: raw.state_dir,
            concurrency: raw.concurrency,
            registry: raw.registry,
            filters,
            settings,
            publish,
            retry: raw.retry,
        })
    }

    /// The queue database file.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("queue.redb")
    }

    /// The header value the registry must send (`Bearer <secret>` for `Authorization`).
    pub fn expected_secret_value(&self) -> String {
        if self.secret_header.eq_ignore_ascii_case("authorization") {
            format!("Bearer {}", self.secret)
        } else {
            self.secret.clone()
        }
    }

    /// The registry client these settings describe (credentials, hosts.toml, plain HTTP),
    /// built as the `soci` CLI builds its own.
    pub fn registry_client(&self) -> Result<registry::Client> {
        let r = &self.registry;
        let user = match &r.username {
            Some(u) => {
                let password = match (&r.password, &r.password_file) {
                    (Some(p), _) => p.clone(),
                    (None, Some(f)) => std::fs::read_to_string(f)
                        .map_err(|e| Error::Config {
                            path: self.path.clone(),
                            reason: format!(
                                "[registry] password_file: cannot read {}: {e}",
                                f.display()
                            ),
                        })?
                        .trim()
                        .to_owned(),
                    (None, None) => String::new(),
                };
                Some(registry::credentials::Credential::Basic {
                    username: u.clone(),
                    password,
                })
            }
            None => None,
        };
        let docker_config = if user.is_none() {
            Some(
                registry::credentials::DockerConfig::load_default()
                    .map_err(registry::Error::from)?,
            )
        } else {
            None
        };
        let config = registry::ClientConfig {
            hosts_dir: r.hosts_dir.clone(),
            host_defaults: registry::hosts::HostDefaults {
                plain_http: r.plain_http.unwrap_or(false),
                insecure: false,
                ca_file: None,
            },
            user,
            docker_config,
            // Jobs retry with their own (longer) backoff; a request retries only briefly so a
            // registry outage turns into a job retry rather than a worker stuck for minutes.
            retry: registry::retry::RetryPolicy {
                max_attempts: 3,
                max_elapsed: Duration::from_secs(30),
                ..Default::default()
            },
            user_agent: concat!("soci-index-builder/", env!("CARGO_PKG_VERSION")).to_owned(),
            ..Default::default()
        };
        Ok(registry::Client::new(config))
    }

    /// The registry host a job talks to: the configured endpoint, else the event's host if
    /// `[registry] hosts` is empty or lists it; `None` when the event cannot be served.
    pub fn registry_for(&self, event_host: &str) -> Option<String> {
        let hosts = &self.registry.hosts;
        match &self.registry.endpoint {
            Some(e) => Some(e.clone()),
            None if event_host.is_empty() => None,
            None if !hosts.is_empty() && !hosts.iter().any(|h| h == event_host) => None,
            None => Some(event_host.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(Path::new("/etc/b.toml"), text)
    }

    #[test]
    fn default_config_parses_once_a_secret_is_set() {
        let err = parse(DEFAULT_CONFIG).unwrap_err().to_string();
        assert!(
            err.contains("/etc/b.toml") && err.contains("no secret"),
            "{err}"
        );
        let c = parse(&format!("secret = \"s3\"\n{DEFAULT_CONFIG}")).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.concurrency, 2);
        assert_eq!(c.publish, indexer::Publish::V1);
        assert_eq!(c.settings.min_layer_size, 10 << 20);
        assert_eq!(c.retry, RetryConfig::default());
        assert_eq!(c.expected_secret_value(), "Bearer s3");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("secret = \"s\"\n[filters]\ndeny_repository = [\"x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/b.toml") && err.contains("deny_repository"),
            "{err}"
        );
        let err = parse("secret = \"s\"\nlisten_addr = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("secret = \"s\"\nlisten = \"nowhere\"", "listen"),
            ("secret = \"s\"\nconcurrency = 0", "concurrency"),
            ("secret = \"\"", "secret"),
            ("secret = \"s\"\nsecret_file = \"/x\"", "secret_file"),
            ("secret = \"s\"\n[publish]\nmode = \"v3\"", "[publish] mode"),
            (
                "secret = \"s\"\n[publish]\ntag_pattern = \"soci\"",
                "[publish] tag_pattern",
            ),
            (
                "secret = \"s\"\n[publish]\nplatforms = [\"linux\"]",
                "[publish] platforms",
            ),
            (
                "secret = \"s\"\n[filters]\nrepositories = [\"a[\"]",
                "[filters] repositories",
            ),
            (
                "secret = \"s\"\n[filters]\nmedia_types = [\"text/plain\"]",
                "[filters] media_types",
            ),
            (
                "secret = \"s\"\n[registry]\nendpoint = \"http://x\"",
                "[registry] endpoint",
            ),
            (
                "secret = \"s\"\n[registry]\npassword = \"p\"",
                "[registry] username",
            ),
            (
                "secret = \"s\"\n[retry]\nmax_attempts = 0",
                "[retry] max_attempts",
            ),
            ("secret = \"s\"\nconcurrency = \"2\"", "concurrency"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(
                err.contains("/etc/b.toml") && err.contains(key),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn secret_file_and_custom_header() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "  hunter2\n").unwrap();
        let c = parse(&format!(
            "secret_file = {:?}\nsecret_header = \"X-Builder-Token\"\n",
            f.display().to_string()
        ))
        .unwrap();
        assert_eq!(c.secret, "hunter2");
        assert_eq!(c.expected_secret_value(), "hunter2");
    }

    #[test]
    fn v2_settings() {
        let c = parse(
            "secret = \"s\"\n[publish]\nmode = \"v2\"\ntag_pattern = \"soci-{tag}\"\nplatforms = [\"linux/arm64\"]\nmin_layer_size = 0\n[filters]\nmin_image_size_mb = 3\n",
        )
        .unwrap();
        assert_eq!(
            c.publish,
            indexer::Publish::V2 {
                tag_pattern: "soci-{tag}".to_owned()
            }
        );
        assert_eq!(c.settings.min_image_size, 3 << 20);
        assert_eq!(c.settings.min_layer_size, 0);
        assert!(matches!(
            c.settings.platforms,
            oci::resolve::PlatformSelection::Some(ref v) if v.len() == 1
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = RetryConfig {
            max_attempts: 5,
            initial_backoff_secs: 5,
            max_backoff_secs: 300,
        };
        let secs: Vec<u64> = (1..=9).map(|a| r.backoff(a).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(r.backoff(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn registry_endpoint_overrides_the_event_host() {
        let c = parse("secret = \"s\"\n").unwrap();
        assert_eq!(c.registry_for("h:5000").as_deref(), Some("h:5000"));
        assert_eq!(c.registry_for(""), None);
        let c = parse("secret = \"s\"\n[registry]\nendpoint = \"r:1\"\n").unwrap();
        assert_eq!(c.registry_for("h:5000").as_deref(), Some("r:1"));
        let c = parse("secret = \"s\"\n[registry]\nhosts = [\"r:1\"]\n").unwrap();
        assert_eq!(c.registry_for("r:1").as_deref(), Some("r:1"));
        assert_eq!(c.registry_for("evil:443"), None);
    }

    #[test]
    fn credentials_need_an_endpoint_or_a_host_list() {
        let creds = "secret = \"s\"\n[registry]\nusername = \"u\"\npassword = \"p\"\n";
        let err = parse(creds).unwrap_err().to_string();
        assert!(err.contains("set `endpoint` or `hosts`"), "{err}");
        assert!(parse(&format!("{creds}hosts = [\"r:1\"]\n")).is_ok());
        assert!(parse(&format!("{creds}endpoint = \"r:1\"\n")).is_ok());
        let bad = parse("secret = \"s\"\n[registry]\nhosts = [\"http://x\"]\n").unwrap_err();
        assert!(bad.to_string().contains("[registry] hosts"), "{bad}");
    }
}
