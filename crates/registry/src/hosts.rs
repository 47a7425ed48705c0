//! containerd-style registry host configuration (`hosts.toml` in a `config_path` directory).
//!
//! The layout and semantics follow containerd 1.6/1.7 (`remotes/docker/config/hosts.go` and
//! `docs/hosts.md`), so a directory written for containerd (`/etc/containerd/certs.d`) behaves
//! the same here:
//!
//! ```text
//! <config_dir>/<registry host[:port]>/hosts.toml
//! <config_dir>/_default/hosts.toml          (used when no registry-specific directory exists)
//! ```
//!
//! ```toml
//! server = "https://registry.example.com"      # tried last; defaults to the registry itself
//!
//! [host."https://mirror.example.com:5000"]     # tried first, in file order
//!   capabilities = ["pull", "resolve"]
//!   ca = "mirror-ca.pem"                       # relative to the hosts.toml directory
//!   skip_verify = false
//!   [host."https://mirror.example.com:5000".header]
//!     x-custom = ["a", "b"]
//! ```
//!
//! Only what this crate can act on is modelled; other keys (`client`, `dial_timeout`, `proxy`,
//! future additions) are ignored so newer files keep working.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Name of the per-registry configuration file inside a host directory.
const HOSTS_FILE: &str = "hosts.toml";

/// Directory containerd consults when no registry-specific directory exists.
const DEFAULT_DIR: &str = "_default";

/// The operations a registry host may be used for.
///
/// Mirrors containerd's `HostCapabilities`: resolving a tag to a digest is a trusted
/// operation, so a public mirror is normally configured with `pull` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Blobs and manifests may be fetched by digest from this host.
    pub pull: bool,
    /// Tags may be resolved to digests on this host.
    pub resolve: bool,
    /// Content may be pushed to this host.
    pub push: bool,
}

impl Capabilities {
    /// Pull, resolve and push: what containerd grants when `capabilities` is not set.
    pub const fn all() -> Self {
        Capabilities {
            pull: true,
            resolve: true,
            push: true,
        }
    }
}

/// One endpoint to try for a registry, after `hosts.toml` and the command-line defaults
/// have been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `"http"` or `"https"`.
    pub scheme: String,
    /// `host[:port]` to connect to (IPv6 literals in brackets).
    pub host: String,
    /// API path prefix: `"/v2"` normally, `"<path>/v2"` for a host key with a path, or the
    /// path exactly as given (without trailing slash, possibly empty) with `override_path`.
    pub path: String,
    /// What this host may be used for.
    pub capabilities: Capabilities,
    /// Extra CA certificate files to trust, in addition to the system roots. Relative paths
    /// from `hosts.toml` are already resolved against the file's directory.
    pub ca_files: Vec<PathBuf>,
    /// Skip TLS certificate and host name verification.
    pub skip_verify: bool,
    /// Extra headers to send on every request to this host, in file order. A header given
    /// as an array appears once per value.
    pub headers: Vec<(String, String)>,
}

/// Defaults that come from command-line flags.
#[derive(Debug, Clone, Default)]
pub struct HostDefaults {
    /// Use plain HTTP for the registry's own server when no `hosts.toml` chooses a scheme
    /// (containerd's `--plain-http`, i.e. `DefaultScheme = "http"`).
    pub plain_http: bool,
    /// Skip TLS verification on every host.
    pub insecure: bool,
    /// An extra CA file trusted by every HTTPS host.
    pub ca_file: Option<PathBuf>,
}

/// Errors from reading or interpreting host configuration.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// A configuration file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file or directory that failed.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// `hosts.toml` is not valid TOML or a key has the wrong type or value.
    #[error("invalid {}: {message}", path.display())]
    Parse {
        /// The `hosts.toml` file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A `[host."…"]` key or the `server` value is not a usable URL.
    #[error("invalid {}: host {host:?}: {message}", path.display())]
    InvalidHost {
        /// The `hosts.toml` file.
        path: PathBuf,
        /// The host key or server value as written.
        host: String,
        /// What is wrong with it.
        message: String,
    },
    /// The registry name cannot be used to look up or build a host.
    #[error("invalid registry name {registry:?}: {message}")]
    InvalidRegistry {
        /// The registry name as given.
        registry: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Interprets the text of a `hosts.toml` for `registry` (`host[:port]`).
///
/// Returns the hosts in the order to try: `[host."…"]` entries in file order, then the
/// `server` (or the registry's default endpoint when `server` is absent). `base_dir` is the
/// directory holding the file; relative `ca` paths resolve against it and error messages
/// name `<base_dir>/hosts.toml`.
pub fn parse_hosts_toml(
    registry: &str,
    text: &str,
    base_dir: &Path,
    defaults: &HostDefaults,
) -> Result<Vec<RegistryHost>, HostsError> {
    validate_registry(registry)?;
    let file = base_dir.join(HOSTS_FILE);
    let entries = parse_entries(text, base_dir, &file)?;
    let hosts = entries
        .into_iter()
        .map(|entry| entry.into_host(registry, defaults))
        .collect();
    Ok(apply_defaults(hosts, defaults))
}

/// Finds and interprets the host configuration for `registry` (`host[:port]`).
///
/// Like containerd's `HostDirFromRoot`, the first existing directory among
/// `<config_dir>/<host>_<port>_`, `<config_dir>/<host>:<port>` and `<config_dir>/_default`
/// is used. Inside it, `hosts.toml` is read; when it is missing (or empty), containerd's
/// Docker-style fallback applies: `*.crt` files in the directory become CA files of the
/// registry's default server. Without `config_dir` or any matching directory, the result is
/// just the default server.
pub fn hosts_for(
    config_dir: Option<&Path>,
    registry: &str,
    defaults: &HostDefaults,
) -> Result<Vec<RegistryHost>, HostsError> {
    validate_registry(registry)?;
    let Some(root) = config_dir else {
        return Ok(default_only(registry, defaults, Vec::new()));
    };
    for dir in candidate_dirs(root, registry) {
        match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => return load_host_dir(registry, &dir, defaults),
            // A stray file with the registry's name is not a host directory; keep looking
            // rather than failing on something containerd would also not use.
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(HostsError::Read { path: dir, source }),
        }
    }
    Ok(default_only(registry, defaults, Vec::new()))
}

/// Reports whether `host` (optionally with `:port`, IPv6 optionally bracketed) names the
/// local machine: `localhost`, `127.0.0.0/8` or `::1` (also as an IPv4-mapped address).
pub fn is_loopback_host(host: &str) -> bool {
    let (name, _) = split_host_port(host);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// Splits `host[:port]` / `[v6]:port` into the bare host and the port text.
///
/// A bare IPv6 literal (several colons, no brackets) has no port, like Go's
/// `net.SplitHostPort` failing on it.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &rest[..end];
            let port = rest[end + 1..].strip_prefix(':');
            return (host, port);
        }
        return (s, None);
    }
    match s.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        _ => (s, None),
    }
}

/// Rejects registry names that cannot be a `host[:port]`, mainly so that a name taken from an
/// image reference can never escape `config_dir` (`..`, `/`).
fn validate_registry(registry: &str) -> Result<(), HostsError> {
    let bad = |message: &str| {
        Err(HostsError::InvalidRegistry {
            registry: registry.to_string(),
            message: message.to_string(),
        })
    };
    if registry.is_empty() {
        return bad("it is empty");
    }
    if registry == "." || registry == ".." || registry == DEFAULT_DIR {
        return bad("it is not a host name");
    }
    if registry
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_whitespace() || c.is_control())
    {
        return bad("expected host[:port] without scheme, path or spaces");
    }
    Ok(())
}

/// Directories to try, in containerd's order (Unix variant of `hostPaths`).
fn candidate_dirs(root: &Path, registry: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::with_capacity(3);
    // containerd's hostDirectory: the last ':' (if not leading) becomes "_port_".
    if let Some(idx) = registry.rfind(':').filter(|&i| i > 0) {
        dirs.push(root.join(format!("{}_{}_", &registry[..idx], &registry[idx + 1..])));
    }
    dirs.push(root.join(registry));
    dirs.push(root.join(DEFAULT_DIR));
    dirs
}

/// Loads one host directory: `hosts.toml`, or the Docker certificate layout without it.
fn load_host_dir(
    registry: &str,
    dir: &Path,
    defaults: &HostDefaults,
) -> Result<Vec<RegistryHost>, HostsError> {
    let file = dir.join(HOSTS_FILE);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(HostsError::Read { path: file, source }),
    };
    if bytes.is_empty() {
        // containerd treats a missing or zero-length hosts.toml the same way: fall back to
        // Docker's certs.d layout.
        let ca_files = docker_cert_files(dir)?;
        return Ok(default_only(registry, defaults, ca_files));
    }
    let text = String::from_utf8(bytes).map_err(|_| HostsError::Parse {
        path: file.clone(),
        message: "the file is not valid UTF-8".to_string(),
    })?;
    tracing::debug!(file = %file.display(), registry, "using registry host configuration");
    parse_hosts_toml(registry, &text, dir, defaults)
}

/// The `*.crt` files of a Docker-style certificate directory, sorted by name (Go's
/// `os.ReadDir` order, which containerd relies on).
fn docker_cert_files(dir: &Path) -> Result<Vec<PathBuf>, HostsError> {
    let read_err = |source| HostsError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        // Follows symlinks on purpose: a linked certificate file is still a certificate.
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".crt") {
            names.push(name.to_string());
        } else if name.ends_with(".cert") {
            // Client certificates have no place in RegistryHost yet; say so instead of
            // silently connecting without them.
            tracing::warn!(
                file = %dir.join(name).display(),
                "TLS client certificates are not supported; ignoring"
            );
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// The registry's own endpoint when nothing configures it, plus the flag defaults.
fn default_only(
    registry: &str,
    defaults: &HostDefaults,
    ca_files: Vec<PathBuf>,
) -> Vec<RegistryHost> {
    let entry = Entry {
        ca_files,
        ..Entry::default()
    };
    apply_defaults(vec![entry.into_host(registry, defaults)], defaults)
}

/// Applies the flags that affect every host, after the file has had its say.
fn apply_defaults(mut hosts: Vec<RegistryHost>, defaults: &HostDefaults) -> Vec<RegistryHost> {
    for host in &mut hosts {
        if defaults.insecure {
            host.skip_verify = true;
        }
        if let Some(ca) = &defaults.ca_file {
            if host.scheme == "https" && !host.ca_files.contains(ca) {
                host.ca_files.push(ca.clone());
            }
        }
    }
    hosts
}

/// One parsed `[host."…"]` table or the root-level (server) settings.
#[derive(Debug, Default)]
struct Entry {
    /// Scheme, host and path from the key / `server`; `None` means "the registry default".
    endpoint: Option<(String, String, String)>,
    /// `None` when `capabilities` was absent or empty (containerd then grants all three).
    capabilities: Option<Capabilities>,
    ca_files: Vec<PathBuf>,
    skip_verify: Option<bool>,
    headers: Vec<(String, String)>,
}

impl Entry {
    /// Turns the entry into a host, filling in the registry's default endpoint when the file
    /// did not name one (containerd's `hosts[len(hosts)-1].host == ""` branch).
    fn into_host(self, registry: &str, defaults: &HostDefaults) -> RegistryHost {
        let Some((scheme, host, path)) = self.endpoint else {
            let (scheme, host, default_skip) = default_endpoint(registry, defaults);
            return RegistryHost {
                scheme,
                host,
                path: "/v2".to_string(),
                // containerd overwrites the capabilities of a defaulted server, even if the
                // root of the file set some; keep that so files behave identically.
                capabilities: Capabilities::all(),
                ca_files: self.ca_files,
                skip_verify: self.skip_verify.unwrap_or(default_skip),
                headers: self.headers,
            };
        };
        RegistryHost {
            scheme,
            host,
            path,
            capabilities: self.capabilities.unwrap_or(Capabilities::all()),
            ca_files: self.ca_files,
            skip_verify: self.skip_verify.unwrap_or(false),
            headers: self.headers,
        }
    }
}

/// Scheme, host and default `skip_verify` of the registry's own endpoint, as containerd's
/// `ConfigureHosts` picks them.
fn default_endpoint(registry: &str, defaults: &HostDefaults) -> (String, String, bool) {
    if registry == "docker.io" {
        // Docker Hub's API lives on a different host; plain HTTP is never right there.
        return ("https".into(), "registry-1.docker.io".into(), false);
    }
    if defaults.plain_http {
        return ("http".into(), registry.into(), false);
    }
    if is_loopback_host(registry) {
        // containerd: a local registry without a port or on 443 is HTTPS with verification
        // off (a self-signed certificate is the norm); on any other port it is HTTP
        // (containerd additionally tries HTTPS first there, which we do not model).
        return match split_host_port(registry).1 {
            None | Some("") | Some("443") => ("https".into(), registry.into(), true),
            Some(_) => ("http".into(), registry.into(), false),
        };
    }
    ("https".into(), registry.into(), false)
}

/// Parses the whole file into entries: hosts in file order, then the root/server entry.
fn parse_entries(text: &str, base_dir: &Path, file: &Path) -> Result<Vec<Entry>, HostsError> {
    let parse_err = |message: String| HostsError::Parse {
        path: file.to_path_buf(),
        message,
    };
    let root: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| parse_err(e.to_string().trim_end().to_string()))?;

    let mut entries = Vec::new();
    if let Some(hosts) = root.get("host") {
        let toml::Value::Table(hosts) = hosts else {
            return Err(parse_err(format!(
                "\"host\" must be a table of [host.\"<url>\"] sections, found {}",
                hosts.type_str()
            )));
        };
        // `preserve_order` keeps the tables in document order: that order is the try order.
        for (key, value) in hosts {
            let toml::Value::Table(table) = value else {
                return Err(parse_err(format!(
                    "host.{key:?} must be a table, found {}",
                    value.type_str()
                )));
            };
            let context = format!("host.{key:?}");
            entries.push(parse_entry(Some(key), table, &context, base_dir, file)?);
        }
    }

    let server = match root.get("server") {
        None => None,
        Some(toml::Value::String(s)) if s.is_empty() => None,
        Some(toml::Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(parse_err(format!(
                "\"server\" must be a string, found {}",
                other.type_str()
            )))
        }
    };
    entries.push(parse_entry(server, &root, "the top level", base_dir, file)?);
    Ok(entries)
}

/// Parses the settings of one host (or of the server, from the root table).
fn parse_entry(
    url: Option<&str>,
    table: &toml::Table,
    context: &str,
    base_dir: &Path,
    file: &Path,
) -> Result<Entry, HostsError> {
    let parse_err = |message: String| HostsError::Parse {
        path: file.to_path_buf(),
        message: format!("{context}: {message}"),
    };
    let wrong_type = |key: &str, expected: &str, found: &toml::Value| {
        parse_err(format!(
            "{key:?} must be {expected}, found {}",
            found.type_str()
        ))
    };

    let override_path = match table.get("override_path") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(v) => return Err(wrong_type("override_path", "a boolean", v)),
    };

    let endpoint =
        match url {
            None => None,
            Some(url) => Some(parse_endpoint(url, override_path).map_err(|message| {
                HostsError::InvalidHost {
                    path: file.to_path_buf(),
                    host: url.to_string(),
                    message,
                }
            })?),
        };

    let capabilities = match table.get("capabilities") {
        None => None,
        Some(toml::Value::Array(items)) if items.is_empty() => None,
        Some(toml::Value::Array(items)) => {
            let mut caps = Capabilities::default();
            for item in items {
                let toml::Value::String(name) = item else {
                    return Err(wrong_type("capabilities", "an array of strings", item));
                };
                match name.to_ascii_lowercase().as_str() {
                    "pull" => caps.pull = true,
                    "resolve" => caps.resolve = true,
                    "push" => caps.push = true,
                    _ => {
                        return Err(parse_err(format!(
                            "unknown capability {name:?} (expected pull, resolve or push)"
                        )))
                    }
                }
            }
            Some(caps)
        }
        Some(v) => return Err(wrong_type("capabilities", "an array of strings", v)),
    };

    let ca_files = match table.get("ca") {
        None => Vec::new(),
        Some(v) => string_or_array(v)
            .ok_or_else(|| wrong_type("ca", "a string or an array of strings", v))?
            .into_iter()
            .map(|p| {
                if p.is_empty() {
                    Err(parse_err("\"ca\" contains an empty path".to_string()))
                } else {
                    // Path::join keeps absolute paths as they are, which is what we want.
                    Ok(base_dir.join(p))
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
    };

    let skip_verify = match table.get("skip_verify") {
        None => None,
        Some(toml::Value::Boolean(b)) => Some(*b),
        Some(v) => return Err(wrong_type("skip_verify", "a boolean", v)),
    };

    let mut headers = Vec::new();
    match table.get("header") {
        None => {}
        Some(toml::Value::Table(h)) => {
            for (name, value) in h {
                if !is_valid_header_name(name) {
                    return Err(parse_err(format!("invalid header name {name:?}")));
                }
                let values = string_or_array(value).ok_or_else(|| {
                    parse_err(format!(
                        "header {name:?} must be a string or an array of strings, found {}",
                        value.type_str()
                    ))
                })?;
                for v in values {
                    // A CR/LF would let the file inject extra header lines.
                    if v.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
                        return Err(parse_err(format!(
                            "header {name:?} has a value with a control character"
                        )));
                    }
                    headers.push((name.clone(), v.to_string()));
                }
            }
        }
        Some(v) => return Err(wrong_type("header", "a table", v)),
    }

    if table.contains_key("client") {
        tracing::warn!(
            file = %file.display(),
            "{context}: TLS client certificates (\"client\") are not supported; ignoring"
        );
    }

    Ok(Entry {
        endpoint,
        capabilities,
        ca_files,
        skip_verify,
        headers,
    })
}

/// `"x"` → `["x"]`, `["x", "y"]` → as is; anything else (including non-string items) → `None`.
fn string_or_array(value: &toml::Value) -> Option<Vec<&str>> {
    match value {
        toml::Value::String(s) => Some(vec![s.as_str()]),
        toml::Value::Array(items) => items.iter().map(|i| i.as_str()).collect(),
        _ => None,
    }
}

/// RFC 9110 `token`: what an HTTP client will accept as a header name.
fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a host key or `server` value into scheme, `host[:port]` and API path.
fn parse_endpoint(raw: &str, override_path: bool) -> Result<(String, String, String), String> {
    let lower = raw.to_ascii_lowercase();
    // containerd prepends "https://" when the value does not start with "http"; checking the
    // full "http://"/"https://" prefix avoids misreading a host such as "httpcache:5000".
    let with_scheme = if lower.starts_with("http://") || lower.starts_with("https://") {
        raw.to_string()
    } else if raw.contains("://") {
        return Err("unsupported scheme (expected http:// or https://)".to_string());
    } else {
        format!("https://{raw}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|e| format!("not a valid URL: {e}"))?;
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h,
        _ => return Err("the URL has no host".to_string()),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the host URL are not supported; use the Docker config instead"
                .to_string(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a query or fragment is not allowed in a host URL".to_string());
    }
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };

    // The url crate has already resolved "." and ".." segments; like Go's path.Clean, also
    // drop empty segments and the trailing slash.
    let mut path = String::new();
    for segment in url.path().split('/').filter(|s| !s.is_empty()) {
        path.push('/');
        path.push_str(segment);
    }
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    Ok((url.scheme().to_string(), host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(registry: &str, text: &str) -> Vec<RegistryHost> {
        parse_hosts_toml(
            registry,
            text,
            Path::new("/etc/certs.d/reg"),
            &HostDefaults::default(),
        )
        .unwrap()
    }

    fn caps(pull: bool, resolve: bool, push: bool) -> Capabilities {
        Capabilities {
            pull,
            resolve,
            push,
        }
    }

    #[test]
    fn hosts_in_file_order_then_server() {
        let text = r#"
server = "https://registry-1.docker.io"

[host."https://zeta-mirror.example.com"]
  capabilities = ["pull"]
[host."https://alpha-mirror.internal"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"
[host."http://192.168.31.250:5000"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
"#;
        let hosts = parse("docker.io", text);
        let names: Vec<_> = hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(
            names,
            [
                "zeta-mirror.example.com",
                "alpha-mirror.internal",
                "192.168.31.250:5000",
                "registry-1.docker.io"
            ]
        );
        assert_eq!(hosts[0].capabilities, caps(true, false, false));
        assert_eq!(hosts[1].capabilities, caps(true, true, false));
        assert_eq!(
            hosts[1].ca_files,
            [PathBuf::from("/etc/certs.d/reg/docker-mirror.crt")]
        );
        assert_eq!(hosts[2].scheme, "http");
        assert!(hosts[2].skip_verify);
        assert_eq!(hosts[3].scheme, "https");
        assert_eq!(hosts[3].path, "/v2");
        assert_eq!(hosts[3].capabilities, Capabilities::all());
    }

    #[test]
    fn default_server_when_absent() {
        let text = "[host.\"https://mirror.example.com\"]\n";
        let hosts = parse("docker.io", text);
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].capabilities, Capabilities::all());
        assert_eq!(hosts[1].host, "registry-1.docker.io");
        assert_eq!(hosts[1].scheme, "https");

        let hosts = parse("quay.io", "");
        assert_eq!(hosts.len(), 1);
        assert_eq!(
            hosts[0],
            RegistryHost {
                scheme: "https".into(),
                host: "quay.io".into(),
                path: "/v2".into(),
                capabilities: Capabilities::all(),
                ca_files: vec![],
                skip_verify: false,
                headers: vec![],
            }
        );
    }

    #[test]
    fn root_capabilities_are_overwritten_for_defaulted_server() {
        // containerd quirk: without `server`, the root-level capabilities do not apply.
        let hosts = parse("quay.io", "capabilities = [\"pull\"]\nskip_verify = true\n");
        assert_eq!(hosts[0].capabilities, Capabilities::all());
        assert!(hosts[0].skip_verify);
        // With an explicit server they do.
        let hosts = parse(
            "quay.io",
            "server = \"https://quay.io\"\ncapabilities = [\"pull\"]\n",
        );
        assert_eq!(hosts[0].capabilities, caps(true, false, false));
    }

    #[test]
    fn paths_and_schemes() {
        let text = r#"
[host."mirror.local:5000"]
[host."https://mirror-bak.registry/us/"]
[host."https://mirror.registry/v2"]
[host."https://non-compliant.registry/v2/upstream/"]
  override_path = true
[host."http://flat.registry"]
  override_path = true
[host."HTTPS://[::1]:8443"]
[host."httpcache:5000"]
"#;
        let hosts = parse("example.com", text);
        let got: Vec<_> = hosts
            .iter()
            .map(|h| format!("{}://{}{}", h.scheme, h.host, h.path))
            .collect();
        assert_eq!(
            got,
            [
                "https://mirror.local:5000/v2",
                "https://mirror-bak.registry/us/v2",
                "https://mirror.registry/v2",
                "https://non-compliant.registry/v2/upstream",
                "http://flat.registry",
                "https://[::1]:8443/v2",
                "https://httpcache:5000/v2",
                "https://example.com/v2",
            ]
        );
    }

    #[test]
    fn server_with_path_and_override() {
        let hosts = parse(
            "example.com",
            "server = \"https://proxy.example.com/api/\"\noverride_path = true\n",
        );
        assert_eq!(hosts[0].host, "proxy.example.com");
        assert_eq!(hosts[0].path, "/api");
        let hosts = parse("example.com", "server = \"registry.example.com:444\"\n");
        assert_eq!(hosts[0].scheme, "https");
        assert_eq!(hosts[0].host, "registry.example.com:444");
    }

    #[test]
    fn ca_string_or_array_and_headers() {
        let text = r#"
[host."https://test-1.registry"]
  ca = ["/etc/certs/test-1-ca.pem", "special.pem"]
  client = "/etc/certs/client.pem"
  dial_timeout = "1s"
  future_key = { nested = 1 }
  [host."https://test-1.registry".header]
    x-custom-2 = ["value1", "value2"]
    x-custom-1 = "one"
"#;
        let hosts = parse("example.com", text);
        assert_eq!(
            hosts[0].ca_files,
            [
                PathBuf::from("/etc/certs/test-1-ca.pem"),
                PathBuf::from("/etc/certs.d/reg/special.pem")
            ]
        );
        assert_eq!(
            hosts[0].headers,
            [
                ("x-custom-2".to_string(), "value1".to_string()),
                ("x-custom-2".to_string(), "value2".to_string()),
                ("x-custom-1".to_string(), "one".to_string()),
            ]
        );
        assert!(!hosts[0].skip_verify);
    }

    #[test]
    fn root_header_applies_to_server() {
        let hosts = parse(
            "example.com",
            "server = \"https://example.com\"\n[header]\nauthorization-extra = \"x\"\n",
        );
        assert_eq!(
            hosts[0].headers,
            [("authorization-extra".to_string(), "x".to_string())]
        );
    }

    #[test]
    fn type_errors_name_the_file() {
        let cases = [
            "ca = 5",
            "skip_verify = \"yes\"",
            "capabilities = \"pull\"",
            "capabilities = [\"pull\", 1]",
            "capabilities = [\"fetch\"]",
            "server = 3",
            "host = 3",
            "host = { x = 1 }",
            "override_path = 1",
            "[header]\nx = 1",
            "[header]\n\"bad name\" = \"v\"",
            "[header]\nx = \"a\\nb\"",
            "header = \"x\"",
            "ca = [\"\"]",
            "not toml [",
        ];
        for text in cases {
            let err = parse_hosts_toml(
                "example.com",
                text,
                Path::new("/cfg/example.com"),
                &HostDefaults::default(),
            )
            .unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("/cfg/example.com/hosts.toml"),
                "{text:?}: {msg}"
            );
            assert!(matches!(err, HostsError::Parse { .. }), "{text:?}: {err:?}");
        }
    }

    #[test]
    fn invalid_host_keys() {
        for key in [
            "ftp://mirror",
            "https://",
            "https://user:pw@mirror",
            "https://mirror?x=1",
            "https://mir ror",
        ] {
            let text = format!("[host.{key:?}]\n");
            let err = parse_hosts_toml(
                "example.com",
                &text,
                Path::new("/cfg/x"),
                &HostDefaults::default(),
            )
            .unwrap_err();
            assert!(
                matches!(err, HostsError::InvalidHost { .. }),
                "{key}: {err:?}"
            );
            assert!(err.to_string().contains("/cfg/x/hosts.toml"), "{err}");
        }
    }

    #[test]
    fn defaults_apply() {
        let defaults = HostDefaults {
            plain_http: true,
            insecure: true,
            ca_file: Some(PathBuf::from("/flag-ca.pem")),
        };
        let text = "[host.\"https://mirror\"]\n[host.\"http://plain-mirror\"]\n";
        let hosts = parse_hosts_toml("example.com:5000", text, Path::new("/d"), &defaults).unwrap();
        assert_eq!(hosts.len(), 3);
        assert!(hosts.iter().all(|h| h.skip_verify));
        // An explicit https key stays https even with plain_http.
        assert_eq!(hosts[0].scheme, "https");
        assert_eq!(hosts[0].ca_files, [PathBuf::from("/flag-ca.pem")]);
        assert_eq!(hosts[1].scheme, "http");
        assert!(hosts[1].ca_files.is_empty());
        // The defaulted server follows plain_http.
        assert_eq!(hosts[2].scheme, "http");
        assert_eq!(hosts[2].host, "example.com:5000");
        assert!(hosts[2].ca_files.is_empty());

        // docker.io ignores plain_http, like containerd.
        let hosts = hosts_for(None, "docker.io", &defaults).unwrap();
        assert_eq!(hosts[0].scheme, "https");
        assert_eq!(hosts[0].host, "registry-1.docker.io");
        assert_eq!(hosts[0].ca_files, [PathBuf::from("/flag-ca.pem")]);
    }

    #[test]
    fn loopback_defaults() {
        let d = HostDefaults::default();
        let h = &hosts_for(None, "127.0.0.1:5000", &d).unwrap()[0];
        assert_eq!((h.scheme.as_str(), h.skip_verify), ("http", false));
        let h = &hosts_for(None, "localhost", &d).unwrap()[0];
        assert_eq!((h.scheme.as_str(), h.skip_verify), ("https", true));
        let h = &hosts_for(None, "localhost:443", &d).unwrap()[0];
        assert_eq!((h.scheme.as_str(), h.skip_verify), ("https", true));
        let h = &hosts_for(None, "[::1]:5000", &d).unwrap()[0];
        assert_eq!(h.scheme, "http");
        assert_eq!(h.host, "[::1]:5000");
        // A file that names the server decides the scheme itself.
        let hosts = parse_hosts_toml(
            "localhost:5000",
            "server = \"https://localhost:5000\"",
            Path::new("/d"),
            &d,
        )
        .unwrap();
        assert_eq!(hosts[0].scheme, "https");
        assert!(!hosts[0].skip_verify);
    }

    #[test]
    fn loopback_detection() {
        for yes in [
            "localhost",
            "LOCALHOST:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "::1",
            "[::1]",
            "[::1]:5000",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback_host(yes), "{yes}");
        }
        for no in [
            "",
            "example.com",
            "10.0.0.1:5000",
            "128.0.0.1",
            "::2",
            "[::2]:5000",
            "localhost.example.com",
            "[",
            "[::1",
        ] {
            assert!(!is_loopback_host(no), "{no}");
        }
    }

    #[test]
    fn hosts_for_directory_lookup() {
        let root = tempfile::tempdir().unwrap();
        let d = HostDefaults::default();

        // No directory at all: just the default server.
        let hosts = hosts_for(Some(root.path()), "reg.example:5000", &d).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].host, "reg.example:5000");

        // _default applies to any registry, with the registry as the server.
        let default_dir = root.path().join("_default");
        std::fs::create_dir(&default_dir).unwrap();
        std::fs::write(
            default_dir.join("hosts.toml"),
            "[host.\"https://mirror.example\"]\n  capabilities = [\"pull\"]\n  ca = \"m.pem\"\n",
        )
        .unwrap();
        let hosts = hosts_for(Some(root.path()), "reg.example:5000", &d).unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].host, "mirror.example");
        assert_eq!(hosts[0].ca_files, [default_dir.join("m.pem")]);
        assert_eq!(hosts[1].host, "reg.example:5000");

        // host:port directory wins over _default.
        let dir = root.path().join("reg.example:5000");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("hosts.toml"),
            "server = \"http://reg.example:5000\"\n",
        )
        .unwrap();
        let hosts = hosts_for(Some(root.path()), "reg.example:5000", &d).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].scheme, "http");

        // host_port_ wins over host:port.
        let dir2 = root.path().join("reg.example_5000_");
        std::fs::create_dir(&dir2).unwrap();
        std::fs::write(dir2.join("hosts.toml"), "[host.\"https://m2\"]\n").unwrap();
        let hosts = hosts_for(Some(root.path()), "reg.example:5000", &d).unwrap();
        assert_eq!(hosts[0].host, "m2");

        // Malformed file: an error naming it.
        std::fs::write(dir2.join("hosts.toml"), "ca = 1\n").unwrap();
        let err = hosts_for(Some(root.path()), "reg.example:5000", &d).unwrap_err();
        assert!(
            err.to_string()
                .contains(&dir2.join("hosts.toml").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn docker_cert_layout_fallback() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("reg.example");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("b.crt"), "x").unwrap();
        std::fs::write(dir.join("a.crt"), "x").unwrap();
        std::fs::write(dir.join("client.cert"), "x").unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let hosts = hosts_for(Some(root.path()), "reg.example", &HostDefaults::default()).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].host, "reg.example");
        assert_eq!(hosts[0].ca_files, [dir.join("a.crt"), dir.join("b.crt")]);
    }

    #[test]
    fn invalid_registry_names() {
        for bad in ["", "..", "a/b", "../etc", "a b", "_default"] {
            let err = hosts_for(Some(Path::new("/x")), bad, &HostDefaults::default());
            assert!(
                matches!(err, Err(HostsError::InvalidRegistry { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn no_panic_on_odd_input() {
        for text in [
            "[host.\"\"]",
            "[host.\"https://[::1\"]",
            "[host.\"https://h:99999\"]",
            "server = \"\"",
            "[host.\"https://a\".header]\n",
            "[[host]]\nx = 1",
            "host = []",
        ] {
            let _ = parse_hosts_toml("r", text, Path::new("/d"), &HostDefaults::default());
        }
    }
}
