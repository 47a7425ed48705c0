//! The daemon's configuration file (`/etc/soci-snapshotter-grpc/config.toml`). Key names
//! follow AWS's soci-snapshotter where it has the setting, so an existing file keeps working;
//! keys we do not know are reported at start, not fatal. Every key is optional;
//! [`Config::default`] holds the defaults and `docs/snapshotter-config.md` documents them.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/soci-snapshotter-grpc/config.toml";

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `host:port` of the Prometheus `/metrics` endpoint; empty turns it off.
    pub metrics_address: String,
    /// Turns the metrics endpoint off even when an address is set (AWS's switch).
    pub no_prometheus: bool,
    /// Seconds to find an image's SOCI index and mount one layer before containerd is told
    /// to pull the layer normally instead.
    pub mount_timeout_sec: u64,
    /// HTTP Range requests in flight per lazily mounted layer.
    pub max_concurrency: usize,
    /// Registry HTTP timeouts and retries.
    pub http: HttpConfig,
    /// Which SOCI index versions are used.
    pub pull_modes: PullModes,
    /// FUSE settings.
    pub fuse: FuseConfig,
    /// Background fetching of the rest of a lazily mounted layer.
    pub background_fetch: BackgroundFetchConfig,
    /// The span cache.
    pub cache: CacheConfig,
    /// Registry host configuration.
    pub registry: RegistryConfig,
    /// Credentials from the kubelet's image pulls.
    pub cri_keychain: CriKeychainConfig,
    /// containerd's content store (where parallel pulls keep layer blobs).
    pub content_store: ContentStoreConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            metrics_address: String::new(),
            no_prometheus: false,
            mount_timeout_sec: 30,
            max_concurrency: 4,
            http: HttpConfig::default(),
            pull_modes: PullModes::default(),
            fuse: FuseConfig::default(),
            background_fetch: BackgroundFetchConfig::default(),
            cache: CacheConfig::default(),
            registry: RegistryConfig::default(),
            cri_keychain: CriKeychainConfig::default(),
            content_store: ContentStoreConfig::default(),
        }
    }
}

/// `[http]`: AWS's key names (CamelCase, as in its file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Retries after a failed request (0 = none).
    #[serde(rename = "MaxRetries")]
    pub max_retries: u32,
    /// Shortest wait before a retry, in milliseconds.
    #[serde(rename = "MinWaitMsec")]
    pub min_wait_msec: u64,
    /// Longest wait before a retry, in milliseconds.
    #[serde(rename = "MaxWaitMsec")]
    pub max_wait_msec: u64,
    /// TCP/TLS connect timeout, in milliseconds.
    #[serde(rename = "DialTimeoutMsec")]
    pub dial_timeout_msec: u64,
    /// Longest pause while reading a response body, in milliseconds.
    #[serde(rename = "ResponseHeaderTimeoutMsec")]
    pub response_header_timeout_msec: u64,
    /// Timeout of a whole small request (manifests, tokens, zTOCs), in milliseconds.
    #[serde(rename = "RequestTimeoutMsec")]
    pub request_timeout_msec: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        // A lazy read blocks a process in the container: give up after about ten seconds
        // rather than the minute a CLI command may wait.
        HttpConfig {
            max_retries: 4,
            min_wait_msec: 100,
            max_wait_msec: 2_000,
            dial_timeout_msec: 3_000,
            response_header_timeout_msec: 15_000,
            request_timeout_msec: 30_000,
        }
    }
}

impl HttpConfig {
    /// The registry client's retry policy.
    pub fn retry_policy(&self) -> registry::retry::RetryPolicy {
        registry::retry::RetryPolicy {
            max_attempts: self.max_retries.saturating_add(1),
            base_delay: Duration::from_millis(self.min_wait_msec),
            max_delay: Duration::from_millis(self.max_wait_msec.max(self.min_wait_msec)),
            max_elapsed: Duration::from_millis(
                self.max_wait_msec
                    .saturating_mul(u64::from(self.max_retries))
                    .max(self.request_timeout_msec),
            ),
        }
    }
}

/// `[pull_modes]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PullModes {
    /// `[pull_modes.soci_v1]`: v1 indexes found through the referrers API or tag schema.
    pub soci_v1: Switch,
    /// `[pull_modes.soci_v2]`: v2 indexes bound to the image by `soci convert`.
    pub soci_v2: SwitchOn,
    /// `[pull_modes.parallel_pull_unpack]`: layers not served lazily are pulled by the
    /// snapshotter, several connections and layers at once.
    pub parallel_pull_unpack: ParallelPullConfig,
}

/// `[pull_modes.parallel_pull_unpack]`, with AWS's keys, meanings and defaults (negative
/// limits mean none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParallelPullConfig {
    /// Whether the mode is on.
    pub enable: bool,
    /// Range requests in flight at once over all images.
    pub max_concurrent_downloads: i64,
    /// Range requests in flight at once per image.
    pub max_concurrent_downloads_per_image: i64,
    /// Bytes per Range request, as `"8mb"`, `"512kb"` or a number of bytes; empty: one
    /// request per layer.
    pub concurrent_download_chunk_size: String,
    /// Layers unpacked at once over all images.
    pub max_concurrent_unpacks: i64,
    /// Layers unpacked at once per image.
    pub max_concurrent_unpacks_per_image: i64,
    /// Keep no copy of a layer's blob once it is unpacked (the snapshot is all there is).
    pub discard_unpacked_layers: bool,
}

impl Default for ParallelPullConfig {
    fn default() -> Self {
        ParallelPullConfig {
            enable: false,
            max_concurrent_downloads: -1,
            max_concurrent_downloads_per_image: 3,
            concurrent_download_chunk_size: String::new(),
            max_concurrent_unpacks: -1,
            max_concurrent_unpacks_per_image: 1,
            discard_unpacked_layers: false,
        }
    }
}

impl ParallelPullConfig {
    /// The chunk size in bytes (`None`: whole layers); validated by [`Config::check`].
    pub fn chunk_size(&self) -> Option<u64> {
        parse_size(&self.concurrent_download_chunk_size)
            .ok()
            .flatten()
    }
}

/// Parses a size like AWS's config does (`"8mb"`, `"16MiB"`, `"512k"`, `"1048576"`; units
/// are powers of 1024); empty is `None`.
pub fn parse_size(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use b, kb, mb or gb)"
            ))
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (like \"8mb\")"))?;
    n.checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// A switch that is off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Switch {
    /// Whether it is on.
    pub enable: bool,
}

/// A switch that is on by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwitchOn {
    /// Whether it is on.
    pub enable: bool,
}

impl Default for SwitchOn {
    fn default() -> Self {
        SwitchOn { enable: true }
    }
}

/// `[fuse]`: kernel cache lifetimes (seconds) and worker threads. Layers never change, so
/// long lifetimes are safe and save round trips to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FuseConfig {
    /// Attribute cache lifetime.
    pub attr_timeout: u64,
    /// Directory entry cache lifetime.
    pub entry_timeout: u64,
    /// Lifetime of cached "no such file" answers.
    pub negative_timeout: u64,
    /// FUSE worker threads per layer.
    pub threads: usize,
    /// FUSE passthrough (Linux 6.9+; stargz-snapshotter's key): an open of a file of 128 KiB
    /// or more whose data is all local gets a per-file backing copy in the span cache, and the
    /// kernel reads it without the daemon. Off by itself on kernels without it.
    pub passthrough: bool,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            attr_timeout: 3600,
            entry_timeout: 3600,
            negative_timeout: 3600,
            threads: 8,
            passthrough: true,
        }
    }
}

/// `[background_fetch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackgroundFetchConfig {
    /// No background fetching: only what is read is fetched.
    pub disable: bool,
    /// A background request starts only after this long without on-demand reads in any
    /// layer (AWS's key), so start-ups are not slowed by it. Default 5 s: with 1 s, the
    /// background fetch ran in the CPU-bound pauses of 2 of 3 uncapped datascience starts
    /// (`bench/start.sh`, 2026-12-07: 231 and 178 MB moved against 74 MB) and competed with
    /// the container for the cores, which took 4.20-5.02 s against 3.01 s. (AWS's default is
    /// 30 s after a layer is mounted.)
    pub silence_period_msec: u64,
    /// Cap per layer in MB/s; 0 = no cap.
    pub rate_mb_per_sec: f64,
}

impl Default for BackgroundFetchConfig {
    fn default() -> Self {
        BackgroundFetchConfig {
            disable: false,
            silence_period_msec: 5000,
            rate_mb_per_sec: 0.0,
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// Directory of inflated spans; relative to the data root when relative.
    pub dir: PathBuf,
    /// Size limit in MB for spans no read is using (least recently used go first); 0 = none.
    pub max_size_mb: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            dir: PathBuf::from("cache"),
            max_size_mb: 0,
        }
    }
}

/// `[registry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// containerd-style host configuration directory (`<dir>/<host>/hosts.toml`: mirrors,
    /// plain HTTP, CAs). A missing directory means default hosts (HTTPS, and plain HTTP for
    /// loopback registries).
    pub config_path: PathBuf,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: PathBuf::from("/etc/containerd/certs.d"),
        }
    }
}

/// `[cri_keychain]`, with AWS's keys: the daemon serves the Kubernetes CRI image service on
/// its own socket (the kubelet's `--image-service-endpoint`), forwards every call to
/// containerd's, and keeps the credentials each `PullImage` brings for that image's
/// repository, to fetch its SOCI index, zTOCs and spans with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CriKeychainConfig {
    /// Whether the daemon serves the CRI image service and keeps pull credentials.
    pub enable_keychain: bool,
    /// The socket of the CRI image service calls are forwarded to (containerd's).
    pub image_service_path: PathBuf,
}

impl Default for CriKeychainConfig {
    fn default() -> Self {
        CriKeychainConfig {
            enable_keychain: false,
            image_service_path: PathBuf::from("/run/containerd/containerd.sock"),
        }
    }
}

/// `[content_store]`, AWS's key for containerd's socket: parallel pulls with
/// `discard_unpacked_layers = false` write layer blobs to its content store, in the
/// namespace of the pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContentStoreConfig {
    /// containerd's gRPC socket.
    pub containerd_address: PathBuf,
}

impl Default for ContentStoreConfig {
    fn default() -> Self {
        ContentStoreConfig {
            containerd_address: PathBuf::from("/run/containerd/containerd.sock"),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The error, with line and column.
        message: String,
    },
}

impl Config {
    /// Loads `path`. A missing file gives the defaults when `required` is false (the default
    /// path), an error otherwise. Returns the config and the dotted names of keys it ignored.
    pub fn load(path: &Path, required: bool) -> Result<(Config, Vec<String>), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok((Config::default(), Vec::new()))
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    /// Parses the text of a config file (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let given: toml::Value = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        let known = toml::Value::try_from(Config::default())
            .map_err(|e| parse_error(format!("internal: {e}")))?;
        let mut unknown = Vec::new();
        unknown_keys(&given, &known, "", &mut unknown);
        unknown.sort();
        Ok((config, unknown))
    }

    /// Settings that parse but cannot work, as a message naming the key.
    pub fn check(&self) -> Result<(), String> {
        let parallel = &self.pull_modes.parallel_pull_unpack;
        parse_size(&parallel.concurrent_download_chunk_size).map_err(|e| {
            format!("pull_modes.parallel_pull_unpack.concurrent_download_chunk_size: {e}")
        })?;
        Ok(())
    }

    /// The mount timeout.
    pub fn mount_timeout(&self) -> Duration {
        Duration::from_secs(self.mount_timeout_sec.max(1))
    }

    /// The span cache directory under `root` (or absolute).
    pub fn cache_dir(&self, root: &Path) -> PathBuf {
        root.join(&self.cache.dir)
    }
}

/// Collects keys of `given` that `known` does not have.
fn unknown_keys(given: &toml::Value, known: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    let (Some(g), Some(k)) = (given.as_table(), known.as_table()) else {
        return;
    };
    for (key, value) in g {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match k.get(key) {
            Some(kv) => unknown_keys(value, kv, &name, out),
            None => out.push(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults_and_aws_keys_are_read() {
        let (c, unknown) = Config::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(c, Config::default());
        assert!(unknown.is_empty());
        let text = r#"
metrics_address = "127.0.0.1:9000"
mount_timeout_sec = 5
http_cache_type = "memory"
[http]
MaxRetries = 2
DialTimeoutMsec = 500
[pull_modes.soci_v1]
enable = true
[fuse]
attr_timeout = 1
[background_fetch]
disable = true
silence_period_msec = 10
fetch_period_msec = 500
"#;
        let (c, unknown) = Config::parse(text, Path::new("c.toml")).unwrap();
        assert_eq!(c.metrics_address, "127.0.0.1:9000");
        assert_eq!(c.mount_timeout(), Duration::from_secs(5));
        assert_eq!(c.http.max_retries, 2);
        assert_eq!(c.http.retry_policy().max_attempts, 3);
        assert_eq!(c.http.dial_timeout_msec, 500);
        assert!(c.pull_modes.soci_v1.enable);
        assert!(c.pull_modes.soci_v2.enable);
        assert_eq!(c.fuse.attr_timeout, 1);
        assert_eq!(c.fuse.entry_timeout, 3600);
        assert!(c.background_fetch.disable);
        assert_eq!(
            unknown,
            vec![
                "background_fetch.fetch_period_msec".to_string(),
                "http_cache_type".to_string()
            ]
        );
    }

    #[test]
    fn wrong_types_and_missing_required_files_are_errors_naming_the_file() {
        let e = Config::parse("mount_timeout_sec = \"x\"", Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/x.toml") && e.contains("mount_timeout_sec"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        assert!(Config::load(&missing, true).is_err());
        assert_eq!(Config::load(&missing, false).unwrap().0, Config::default());
    }

    #[test]
    fn parallel_pull_keys_are_aws_s_and_checked() {
        let text = r#"
[pull_modes.parallel_pull_unpack]
enable = true
max_concurrent_downloads_per_image = 10
concurrent_download_chunk_size = "8mb"
discard_unpacked_layers = true
[pull_modes.parallel_pull_unpack.decompress_streams."gzip"]
path = "/usr/bin/unpigz"
"#;
        let (c, unknown) = Config::parse(text, Path::new("c.toml")).unwrap();
        let p = &c.pull_modes.parallel_pull_unpack;
        assert!(p.enable);
        assert_eq!(p.max_concurrent_downloads_per_image, 10);
        assert_eq!(p.max_concurrent_unpacks_per_image, 1);
        assert_eq!(p.chunk_size(), Some(8 << 20));
        assert_eq!(
            unknown,
            ["pull_modes.parallel_pull_unpack.decompress_streams"]
        );
        assert!(c.check().is_ok());
        // AWS's default keeps blobs in containerd's content store, at its default socket.
        let (c, _) = Config::parse(
            "[pull_modes.parallel_pull_unpack]\nenable = true\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(c.check().is_ok());
        assert!(!c.pull_modes.parallel_pull_unpack.discard_unpacked_layers);
        assert_eq!(
            c.content_store.containerd_address,
            Path::new("/run/containerd/containerd.sock")
        );
        for (text, want) in [
            ("", Ok(None)),
            ("1048576", Ok(Some(1 << 20))),
            ("512kb", Ok(Some(512 << 10))),
            ("16MiB", Ok(Some(16 << 20))),
            (" 2 GB ", Ok(Some(2 << 30))),
        ] {
            assert_eq!(parse_size(text), want, "{text:?}");
        }
        for bad in ["8 parsecs", "mb", "0", "-1mb", "99999999999gb"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
