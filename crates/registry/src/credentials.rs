//! Registry credentials the way the Docker CLI finds them.
//!
//! Sources, in Docker's order of precedence for one registry:
//! 1. `credHelpers[<registry>]` in `config.json` (a per-registry credential helper),
//! 2. `credsStore` (the default credential helper),
//! 3. `auths[<registry>]` (credentials stored in the file itself).
//!
//! The `--user` flag is handled by the caller ([`parse_user_flag`]) and beats all of them.
//! Secrets are never part of `Debug` output or error messages.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// How long a credential helper may run before it is killed.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Helpers print a few hundred bytes; anything beyond this is not a credential reply.
const HELPER_OUTPUT_LIMIT: u64 = 1 << 20;

/// The key Docker uses for Docker Hub in `auths`, `credHelpers` and towards helpers.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Docker's marker in a helper's `Username` meaning "`Secret` is an identity token".
const TOKEN_USERNAME: &str = "<token>";

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credential {
    /// User name and password (or an access token used as the password).
    Basic {
        /// The user name.
        username: String,
        /// The password; never printed.
        password: String,
    },
    /// An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the token endpoint;
    /// never printed.
    IdentityToken(String),
    /// A bearer token for the registry itself (CRI's `registry_token`), sent as it is;
    /// never printed.
    RegistryToken(String),
}

impl fmt::Debug for Credential {
    // Hand-written so that logging a credential can never leak the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &format_args!("<redacted>"))
                .finish(),
            Credential::IdentityToken(_) => f
                .debug_tuple("IdentityToken")
                .field(&format_args!("<redacted>"))
                .finish(),
            Credential::RegistryToken(_) => f
                .debug_tuple("RegistryToken")
                .field(&format_args!("<redacted>"))
                .finish(),
        }
    }
}

/// The outcome of looking up credentials, with where they came from.
#[derive(Debug, Clone)]
pub struct CredentialLookup {
    /// The credential, or `None` for anonymous access.
    pub credential: Option<Credential>,
    /// Human-readable origin for error messages, e.g. `auths["127.0.0.1:5000"] in
    /// /root/.docker/config.json` or `no credentials (anonymous): none for … in …`.
    pub source: String,
}

impl CredentialLookup {
    /// A lookup result for credentials given with `--user`.
    pub fn from_user_flag(credential: Credential) -> Self {
        CredentialLookup {
            credential: Some(credential),
            source: "--user flag".to_string(),
        }
    }

    fn anonymous(reason: String) -> Self {
        CredentialLookup {
            credential: None,
            source: format!("no credentials (anonymous): {reason}"),
        }
    }
}

/// Errors from parsing `--user`, reading the Docker config or running a credential helper.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The `--user` value is not `USER:PASSWORD`. The value itself is not repeated because
    /// it may contain the password.
    #[error("invalid --user value: {reason}; expected USER:PASSWORD (split at the first ':')")]
    InvalidUserFlag {
        /// What is wrong.
        reason: &'static str,
    },
    /// The Docker config file exists but could not be read.
    #[error("cannot read Docker config {}: {source}", path.display())]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The Docker config file is not valid JSON or has a key of the wrong type.
    #[error("invalid Docker config {}: {message}", path.display())]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An `auths` entry cannot be decoded.
    #[error("invalid auths[{key:?}] in {}: {reason}", path.display())]
    InvalidAuth {
        /// The config file.
        path: PathBuf,
        /// The `auths` key.
        key: String,
        /// What is wrong (never the secret itself).
        reason: String,
    },
    /// The helper name from `credHelpers`/`credsStore` cannot name a program.
    #[error("invalid credential helper name {name:?} ({origin})")]
    InvalidHelperName {
        /// The configured name.
        name: String,
        /// Where it was configured.
        origin: String,
    },
    /// The helper program does not exist.
    #[error(
        "credential helper {binary} ({origin}) was not found: it must be an executable on PATH"
    )]
    HelperNotFound {
        /// The program name, `docker-credential-<name>`.
        binary: String,
        /// Where it was configured.
        origin: String,
    },
    /// The helper could not be started or waited for.
    #[error("cannot run credential helper {binary} ({origin}): {source}")]
    HelperSpawn {
        /// The program name.
        binary: String,
        /// Where it was configured.
        origin: String,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The helper exited unsuccessfully for a reason other than "credentials not found".
    #[error("credential helper {binary} ({origin}) failed ({status}): {output}")]
    HelperFailed {
        /// The program name.
        binary: String,
        /// Where it was configured.
        origin: String,
        /// The exit status.
        status: String,
        /// What it printed (trimmed and shortened).
        output: String,
    },
    /// The helper ran too long (or left a process holding its output open) and was killed.
    #[error("credential helper {binary} ({origin}) did not finish within {} s and was killed", timeout.as_secs())]
    HelperTimeout {
        /// The program name.
        binary: String,
        /// Where it was configured.
        origin: String,
        /// The time limit.
        timeout: Duration,
    },
    /// The helper succeeded but its output is not the expected JSON.
    #[error("credential helper {binary} ({origin}) printed an invalid reply: {message}")]
    HelperOutput {
        /// The program name.
        binary: String,
        /// Where it was configured.
        origin: String,
        /// What is wrong (the output is not repeated: it may hold a secret).
        message: String,
    },
}

/// Parses a `--user USER:PASSWORD` value. The password may be empty or contain ':'.
pub fn parse_user_flag(s: &str) -> Result<Credential, CredentialsError> {
    let Some((username, password)) = s.split_once(':') else {
        return Err(CredentialsError::InvalidUserFlag {
            reason: "no ':' between user and password",
        });
    };
    if username.is_empty() {
        return Err(CredentialsError::InvalidUserFlag {
            reason: "the user name is empty",
        });
    }
    Ok(Credential::Basic {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// One `auths` entry as stored; `Debug` is hand-written to keep secrets out of logs.
#[derive(Clone, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identity_token: Option<String>,
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthEntry")
            .field("auth", &redact(&self.auth))
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("identity_token", &redact(&self.identity_token))
            .finish()
    }
}

/// The credential-related parts of a Docker `config.json`.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// The file this came from (possibly not existing); empty when there was no candidate.
    path: PathBuf,
    auths: BTreeMap<String, AuthEntry>,
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

/// Where helper programs are searched and how long they may run; a parameter so that tests
/// need not touch the process-wide `PATH`.
struct HelperEnv {
    search_dirs: Vec<PathBuf>,
    timeout: Duration,
}

impl HelperEnv {
    fn from_process() -> Self {
        let search_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        HelperEnv {
            search_dirs,
            timeout: HELPER_TIMEOUT,
        }
    }
}

impl DockerConfig {
    /// Loads `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    ///
    /// A missing file is an empty configuration; an unreadable or malformed one is an error
    /// naming the file.
    pub fn load_default() -> Result<Self, CredentialsError> {
        match default_config_path(std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME")) {
            Some(path) => Self::load(&path),
            None => Ok(Self::default()),
        }
    }

    /// Loads the config file at `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| CredentialsError::ConfigParse {
                    path: path.to_path_buf(),
                    message: "the file is not valid UTF-8".to_string(),
                })?;
                Self::from_json(path, &text)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DockerConfig {
                path: path.to_path_buf(),
                ..Self::default()
            }),
            Err(source) => Err(CredentialsError::ConfigRead {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses config JSON; `path_for_messages` is only used in messages and lookup sources.
    ///
    /// Like Go's `encoding/json` (which Docker uses), key names match case-insensitively,
    /// unknown keys are ignored, and an empty document is an empty configuration.
    pub fn from_json(path_for_messages: &Path, text: &str) -> Result<Self, CredentialsError> {
        let path = path_for_messages.to_path_buf();
        let mut config = DockerConfig {
            path: path.clone(),
            ..Self::default()
        };
        if text.trim().is_empty() {
            return Ok(config);
        }
        let parse_err = |message: String| CredentialsError::ConfigParse {
            path: path.clone(),
            message,
        };
        let root: serde_json::Value =
            serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let serde_json::Value::Object(root) = root else {
            return Err(parse_err("the top level is not a JSON object".to_string()));
        };

        match get_field(&root, "auths") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(auths)) => {
                for (key, value) in auths {
                    let entry = match value {
                        serde_json::Value::Null => AuthEntry::default(),
                        serde_json::Value::Object(fields) => {
                            let field = |name: &str| {
                                opt_string(fields, name).map_err(|found| {
                                    parse_err(format!(
                                        "auths[{key:?}].{name} must be a string, found {found}"
                                    ))
                                })
                            };
                            AuthEntry {
                                auth: field("auth")?,
                                username: field("username")?,
                                password: field("password")?,
                                identity_token: field("identitytoken")?,
                            }
                        }
                        other => {
                            return Err(parse_err(format!(
                                "auths[{key:?}] must be an object, found {}",
                                json_type(other)
                            )))
                        }
                    };
                    config.auths.insert(key.clone(), entry);
                }
            }
            Some(other) => {
                return Err(parse_err(format!(
                    "\"auths\" must be an object, found {}",
                    json_type(other)
                )))
            }
        }

        match get_field(&root, "credHelpers") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(helpers)) => {
                for (key, value) in helpers {
                    let serde_json::Value::String(helper) = value else {
                        return Err(parse_err(format!(
                            "credHelpers[{key:?}] must be a string, found {}",
                            json_type(value)
                        )));
                    };
                    config.cred_helpers.insert(key.clone(), helper.clone());
                }
            }
            Some(other) => {
                return Err(parse_err(format!(
                    "\"credHelpers\" must be an object, found {}",
                    json_type(other)
                )))
            }
        }

        config.creds_store = opt_string(&root, "credsStore")
            .map_err(|found| parse_err(format!("\"credsStore\" must be a string, found {found}")))?
            .filter(|s| !s.is_empty());
        Ok(config)
    }

    /// The file this configuration was loaded from (empty when there was none to look at).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finds the credentials for `registry` (`host[:port]`; `docker.io` and its aliases mean
    /// Docker Hub), running a credential helper if one is configured.
    ///
    /// No credentials is not an error: the result then has `credential: None` and a
    /// `source` explaining why.
    pub fn lookup(&self, registry: &str) -> Result<CredentialLookup, CredentialsError> {
        self.lookup_with(registry, &HelperEnv::from_process())
    }

    fn lookup_with(
        &self,
        registry: &str,
        env: &HelperEnv,
    ) -> Result<CredentialLookup, CredentialsError> {
        let host = registry_host(registry);
        let is_hub = is_docker_hub(host);
        // What Docker calls the server address: the Hub's legacy URL, else the host itself.
        let server_address = if is_hub { DOCKER_HUB_SERVER } else { host };

        if let Some((name, origin)) = self.helper_for(host, server_address) {
            return run_helper(&name, &origin, server_address, host, env);
        }

        let Some((key, entry)) = self.auth_entry(host, server_address) else {
            return Ok(CredentialLookup::anonymous(format!(
                "none for {host} in {}",
                self.path_desc()
            )));
        };
        let source = format!("auths[{key:?}] in {}", self.path_desc());
        match self.entry_credential(key, entry)? {
            Some(credential) => Ok(CredentialLookup {
                credential: Some(credential),
                source,
            }),
            None => Ok(CredentialLookup::anonymous(format!(
                "{source} has no user name, password or token"
            ))),
        }
    }

    /// The helper to run, with a description of where it was configured; `None` means "use
    /// `auths`".
    fn helper_for(&self, host: &str, server_address: &str) -> Option<(String, String)> {
        // Docker matches credHelpers keys exactly; normalised matching is added so that
        // "docker.io" or "https://myreg:5000" keys work too, but an exact key wins.
        let helper = self
            .cred_helpers
            .get(server_address)
            .or_else(|| self.cred_helpers.get(host))
            .or_else(|| {
                self.cred_helpers
                    .iter()
                    .find(|(k, _)| same_registry(registry_host(k), host))
                    .map(|(_, v)| v)
            });
        match helper {
            // Docker: an empty credHelpers entry selects the plain file store, bypassing
            // credsStore for this registry.
            Some(name) if name.is_empty() => None,
            Some(name) => Some((name.clone(), format!("credHelpers in {}", self.path_desc()))),
            None => self
                .creds_store
                .as_ref()
                .map(|name| (name.clone(), format!("credsStore in {}", self.path_desc()))),
        }
    }

    /// The `auths` entry for the registry: the exact server-address key first (Docker's
    /// lookup), then any key naming the same host after stripping scheme and path.
    fn auth_entry(&self, host: &str, server_address: &str) -> Option<(&str, &AuthEntry)> {
        if let Some((k, v)) = self.auths.get_key_value(server_address) {
            return Some((k, v));
        }
        self.auths
            .iter()
            .find(|(k, _)| same_registry(registry_host(k), host))
            .map(|(k, v)| (k.as_str(), v))
    }

    fn entry_credential(
        &self,
        key: &str,
        entry: &AuthEntry,
    ) -> Result<Option<Credential>, CredentialsError> {
        fn non_empty(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.is_empty())
        }
        // An identity token takes over from user/password, as in Docker's registry client.
        if let Some(token) = non_empty(&entry.identity_token) {
            return Ok(Some(Credential::IdentityToken(token.to_string())));
        }
        if let Some(auth) = non_empty(&entry.auth) {
            let invalid = |reason: &str| CredentialsError::InvalidAuth {
                path: self.path.clone(),
                key: key.to_string(),
                reason: reason.to_string(),
            };
            let (username, password) = decode_auth(auth).map_err(invalid)?;
            return Ok(Some(Credential::Basic { username, password }));
        }
        if let Some(username) = non_empty(&entry.username) {
            return Ok(Some(Credential::Basic {
                username: username.to_string(),
                password: entry.password.clone().unwrap_or_default(),
            }));
        }
        Ok(None)
    }

    fn path_desc(&self) -> String {
        if self.path.as_os_str().is_empty() {
            "the Docker config (no file: neither $DOCKER_CONFIG nor $HOME is set)".to_string()
        } else {
            self.path.display().to_string()
        }
    }
}

/// Docker's config location rule, with the environment passed in for testability.
fn default_config_path(docker_config: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    if let Some(dir) = docker_config.filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    home.filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// Looks a key up like Go's `encoding/json`: exact name first, then case-insensitively.
fn get_field<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// A string field that may be absent or null; `Err` carries the JSON type found instead.
fn opt_string(
    map: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<String>, &'static str> {
    match get_field(map, name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(json_type(other)),
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Decodes an `auth` field (Docker's config entries, CRI's `AuthConfig`): base64 of
/// `user:password`; the error says what is wrong without showing the value.
pub fn decode_auth(auth: &str) -> Result<(String, String), &'static str> {
    let trimmed = auth.trim();
    // Docker writes padded standard base64; other tools sometimes omit the padding.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| "\"auth\" is not valid base64")?;
    let decoded = String::from_utf8(decoded).map_err(|_| "\"auth\" is not UTF-8 text")?;
    let Some((username, password)) = decoded.split_once(':') else {
        return Err("\"auth\" does not decode to user:password");
    };
    if username.is_empty() {
        return Err("\"auth\" has an empty user name");
    }
    // Docker strips NUL padding some old tools left in the password.
    Ok((
        username.to_string(),
        password.trim_matches('\0').to_string(),
    ))
}

/// Whether a `server_address` (a host, or a URL such as `https://index.docker.io/v1/`)
/// names `registry`; Docker Hub's aliases are one registry.
pub fn server_address_is(server_address: &str, registry: &str) -> bool {
    same_registry(registry_host(server_address), registry)
}

/// Docker's `ConvertToHostname`: drops `http://`/`https://` and anything from the first '/'.
fn registry_host(s: &str) -> &str {
    let s = s.trim();
    let lower_prefix = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    let rest = if lower_prefix("https://") {
        &s["https://".len()..]
    } else if lower_prefix("http://") {
        &s["http://".len()..]
    } else {
        s
    };
    rest.split('/').next().unwrap_or(rest)
}

/// The names under which Docker Hub's credentials are found.
fn is_docker_hub(host: &str) -> bool {
    ["docker.io", "index.docker.io", "registry-1.docker.io"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
}

/// Host names are case-insensitive; the Hub's aliases are one registry.
fn same_registry(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || (is_docker_hub(a) && is_docker_hub(b))
}

/// Runs `docker-credential-<name> get` the way docker-credential-helpers' client does.
fn run_helper(
    name: &str,
    origin: &str,
    server_address: &str,
    host: &str,
    env: &HelperEnv,
) -> Result<CredentialLookup, CredentialsError> {
    let binary = format!("docker-credential-{name}");
    if name.contains(['/', '\\', '\0']) || name.trim() != name {
        return Err(CredentialsError::InvalidHelperName {
            name: name.to_string(),
            origin: origin.to_string(),
        });
    }
    let Some(program) = find_executable(&binary, &env.search_dirs) else {
        return Err(CredentialsError::HelperNotFound {
            binary,
            origin: origin.to_string(),
        });
    };
    let source = format!("credential helper {binary} ({origin})");
    let spawn_err = |source: io::Error| CredentialsError::HelperSpawn {
        binary: binary.clone(),
        origin: origin.to_string(),
        source,
    };
    let timeout_err = || CredentialsError::HelperTimeout {
        binary: binary.clone(),
        origin: origin.to_string(),
        timeout: env.timeout,
    };

    let deadline = Instant::now() + env.timeout;
    let mut child = spawn_helper(&program).map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // The address is far smaller than a pipe buffer, so this cannot block; a helper that
        // exits without reading gives EPIPE, which its exit status explains better.
        let _ = stdin.write_all(server_address.as_bytes());
    }
    // Readers run on threads so that a chatty helper cannot fill a pipe and stall.
    let (tx, rx) = mpsc::channel();
    for (is_stdout, pipe) in [
        (
            true,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ] {
        if let Some(pipe) = pipe {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.take(HELPER_OUTPUT_LIMIT).read_to_end(&mut buf);
                let _ = tx.send((is_stdout, buf));
            });
        }
    }
    drop(tx);

    let status = match wait_until(&mut child, deadline).map_err(spawn_err)? {
        Some(status) => status,
        None => {
            kill(&mut child);
            return Err(timeout_err());
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(remaining) {
            Ok((true, buf)) => stdout = buf,
            Ok((false, buf)) => stderr = buf,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            // The helper exited but something it started still holds the pipes open.
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(timeout_err()),
        }
    }
    let stdout = String::from_utf8_lossy(&stdout);
    let stderr = String::from_utf8_lossy(&stderr);

    if !status.success() {
        // docker-credential-helpers reports "credentials not found in native keychain" on
        // stdout; some helpers use stderr or other wording, so match loosely.
        let not_found = |s: &str| s.to_ascii_lowercase().contains("credentials not found");
        if not_found(&stdout) || not_found(&stderr) {
            return Ok(CredentialLookup::anonymous(format!(
                "{source} has none for {host}"
            )));
        }
        let output = [stdout.trim(), stderr.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" / ");
        return Err(CredentialsError::HelperFailed {
            binary,
            origin: origin.to_string(),
            status: status.to_string(),
            output: shorten(&output, 400),
        });
    }

    let invalid = |message: String| CredentialsError::HelperOutput {
        binary: binary.clone(),
        origin: origin.to_string(),
        message,
    };
    let reply: serde_json::Value =
        serde_json::from_str(stdout.trim()).map_err(|e| invalid(format!("not JSON ({e})")))?;
    let serde_json::Value::Object(reply) = reply else {
        return Err(invalid("not a JSON object".to_string()));
    };
    let field = |name: &str| {
        opt_string(&reply, name)
            .map(Option::unwrap_or_default)
            .map_err(|found| invalid(format!("\"{name}\" must be a string, found {found}")))
    };
    let username = field("Username")?;
    let secret = field("Secret")?;
    let credential = if username == TOKEN_USERNAME {
        Credential::IdentityToken(secret)
    } else if username.is_empty() && secret.is_empty() {
        return Ok(CredentialLookup::anonymous(format!(
            "{source} returned empty credentials for {host}"
        )));
    } else {
        Credential::Basic {
            username,
            password: secret,
        }
    };
    Ok(CredentialLookup {
        credential: Some(credential),
        source,
    })
}

/// Starts the helper with piped stdio.
fn spawn_helper(program: &Path) -> io::Result<Child> {
    let mut attempt = 0;
    loop {
        let result = Command::new(program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match result {
            // ETXTBSY: a just-written helper can still be open for writing in a child
            // forked concurrently by another thread; it clears within moments.
            Err(e) if e.raw_os_error() == Some(26) && cfg!(target_os = "linux") && attempt < 10 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Waits for the child until `deadline`; `Ok(None)` means it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Kills and reaps a helper that ran too long.
fn kill(child: &mut Child) {
    // Errors mean it already exited, which is what we want anyway.
    let _ = child.kill();
    let _ = child.wait();
}

/// The first executable file called `binary` in `dirs`. Empty PATH entries (meaning the
/// current directory) are skipped so that a helper is never picked up from wherever the
/// command happens to run.
fn find_executable(binary: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(binary))
        .find(|p| is_executable_file(p))
}

#[cfg(unix)]
fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Cuts `s` to at most `max` characters for inclusion in an error message.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((idx, _)) => format!("{}…", &s[..idx]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Credential {
        Credential::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn cfg(json: &str) -> DockerConfig {
        DockerConfig::from_json(Path::new("/root/.docker/config.json"), json).unwrap()
    }

    /// A helper environment that finds nothing, so a test fails loudly if a helper would run.
    fn no_helpers() -> HelperEnv {
        HelperEnv {
            search_dirs: vec![],
            timeout: Duration::from_secs(5),
        }
    }

    /// Writes `docker-credential-<name>` as a shell script into `dir`.
    fn write_helper(dir: &Path, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn helper_env(dir: &Path) -> HelperEnv {
        HelperEnv {
            search_dirs: vec![PathBuf::from("/nonexistent-dir"), dir.to_path_buf()],
            timeout: Duration::from_secs(20),
        }
    }

    #[test]
    fn user_flag() {
        assert_eq!(
            parse_user_flag("alice:s3cr:et").unwrap(),
            basic("alice", "s3cr:et")
        );
        assert_eq!(parse_user_flag("alice:").unwrap(), basic("alice", ""));
        let err = parse_user_flag("alice").unwrap_err().to_string();
        assert!(err.contains("USER:PASSWORD"), "{err}");
        let err = parse_user_flag(":pw-secret").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        assert!(!err.contains("pw-secret"), "{err}");
    }

    #[test]
    fn debug_redacts() {
        let text = format!(
            "{:?} {:?}",
            basic("alice", "hunter2"),
            Credential::IdentityToken("tok-secret".into())
        );
        assert!(
            !text.contains("hunter2") && !text.contains("tok-secret"),
            "{text}"
        );
        assert!(
            text.contains("<redacted>") && text.contains("alice"),
            "{text}"
        );
        let config = cfg(&format!(
            r#"{{"auths":{{"r":{{"auth":"{}","password":"pw-secret","identitytoken":"it-secret"}}}}}}"#,
            b64("u:auth-secret")
        ));
        let text = format!("{config:?}");
        assert!(
            !text.contains("pw-secret")
                && !text.contains("it-secret")
                && !text.contains(&b64("u:auth-secret")),
            "{text}"
        );
    }

    #[test]
    fn auths_lookup_and_normalisation() {
        let config = cfg(&format!(
            r#"{{
                "auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{hub}"}},
                    "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                    "http://myreg.example:8080/some/path": {{"auth": "{nopad}"}},
                    "tok.example": {{"auth": "{hub}", "identitytoken": "refresh"}},
                    "empty.example": {{}}
                }},
                "HttpHeaders": {{"User-Agent": "x"}}
            }}"#,
            hub = b64("hubuser:hubpw"),
            nopad = b64("x:yz").trim_end_matches('='),
        ));
        let env = no_helpers();
        for hub in ["docker.io", "index.docker.io", "registry-1.docker.io"] {
            let l = config.lookup_with(hub, &env).unwrap();
            assert_eq!(l.credential, Some(basic("hubuser", "hubpw")));
            assert_eq!(
                l.source,
                "auths[\"https://index.docker.io/v1/\"] in /root/.docker/config.json"
            );
        }
        let l = config.lookup_with("127.0.0.1:5000", &env).unwrap();
        assert_eq!(l.credential, Some(basic("bob", "pw")));
        assert_eq!(
            l.source,
            "auths[\"127.0.0.1:5000\"] in /root/.docker/config.json"
        );
        let l = config.lookup_with("MyReg.example:8080", &env).unwrap();
        assert_eq!(l.credential, Some(basic("x", "yz")));
        let l = config.lookup_with("tok.example", &env).unwrap();
        assert_eq!(
            l.credential,
            Some(Credential::IdentityToken("refresh".into()))
        );

        let l = config.lookup_with("empty.example", &env).unwrap();
        assert_eq!(l.credential, None);
        assert!(
            l.source.starts_with("no credentials (anonymous):"),
            "{}",
            l.source
        );

        let l = config.lookup_with("127.0.0.1:5001", &env).unwrap();
        assert_eq!(l.credential, None);
        assert_eq!(
            l.source,
            "no credentials (anonymous): none for 127.0.0.1:5001 in /root/.docker/config.json"
        );
    }

    #[test]
    fn exact_key_beats_normalised_key() {
        let config = cfg(&format!(
            r#"{{"auths": {{"docker.io": {{"auth": "{a}"}}, "https://index.docker.io/v1/": {{"auth": "{b}"}}}}}}"#,
            a = b64("a:a"),
            b = b64("b:b")
        ));
        let l = config.lookup_with("docker.io", &no_helpers()).unwrap();
        assert_eq!(l.credential, Some(basic("b", "b")));
    }

    #[test]
    fn bad_auth_entries_are_errors_naming_the_file() {
        for auth in ["%%%".to_string(), b64("nocolon"), b64(":pw")] {
            let config = cfg(&format!(
                r#"{{"auths": {{"r.example": {{"auth": "{auth}"}}}}}}"#
            ));
            let err = config.lookup_with("r.example", &no_helpers()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("/root/.docker/config.json"), "{msg}");
            assert!(msg.contains("r.example"), "{msg}");
            // Other registries are unaffected by one broken entry.
            assert!(config.lookup_with("other.example", &no_helpers()).is_ok());
        }
    }

    #[test]
    fn malformed_config_is_an_error() {
        let p = Path::new("/x/config.json");
        for text in [
            "{",
            "[]",
            r#"{"auths": []}"#,
            r#"{"auths": {"r": 1}}"#,
            r#"{"auths": {"r": {"auth": 1}}}"#,
            r#"{"credHelpers": {"r": 1}}"#,
            r#"{"credsStore": true}"#,
        ] {
            let err = DockerConfig::from_json(p, text).unwrap_err();
            assert!(err.to_string().contains("/x/config.json"), "{text}: {err}");
        }
        // Empty documents, nulls and unknown keys are fine.
        for text in [
            "",
            "  \n",
            "{}",
            r#"{"auths": null, "credsStore": "", "psFormat": "x"}"#,
        ] {
            DockerConfig::from_json(p, text).unwrap();
        }
    }

    #[test]
    fn case_insensitive_keys_like_go() {
        let config = cfg(&format!(
            r#"{{"Auths": {{"r.example": {{"Auth": "{}"}}}}}}"#,
            b64("u:p")
        ));
        let l = config.lookup_with("r.example", &no_helpers()).unwrap();
        assert_eq!(l.credential, Some(basic("u", "p")));
    }

    #[test]
    fn load_missing_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("config.json");
        let config = DockerConfig::load(&missing).unwrap();
        assert_eq!(config.path(), missing);
        let l = config.lookup_with("r.example", &no_helpers()).unwrap();
        assert!(
            l.source.contains(&missing.display().to_string()),
            "{}",
            l.source
        );

        std::fs::write(&missing, "{not json").unwrap();
        let err = DockerConfig::load(&missing).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );

        // A directory where the file should be is an error, not "missing".
        let err = DockerConfig::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, CredentialsError::ConfigRead { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn default_path_rules() {
        assert_eq!(
            default_config_path(Some("/dc".into()), Some("/home/u".into())),
            Some(PathBuf::from("/dc/config.json"))
        );
        assert_eq!(
            default_config_path(Some("".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.docker/config.json"))
        );
        assert_eq!(default_config_path(None, None), None);
    }

    #[test]
    fn cred_helper_wins_and_receives_server_url() {
        let dir = tempfile::tempdir().unwrap();
        // Echo the stdin back in the user name to check what the helper was given.
        write_helper(
            dir.path(),
            "fake",
            r#"[ "$1" = get ] || exit 3
read -r url || true
printf '{"ServerURL":"%s","Username":"user@%s","Secret":"s3cret"}' "$url" "$url""#,
        );
        let config = cfg(&format!(
            r#"{{"auths": {{"reg.example:5000": {{"auth": "{}"}}}},
                 "credHelpers": {{"reg.example:5000": "fake", "docker.io": "fake"}},
                 "credsStore": "missing-store"}}"#,
            b64("file:file")
        ));
        let env = helper_env(dir.path());
        let l = config.lookup_with("reg.example:5000", &env).unwrap();
        assert_eq!(l.credential, Some(basic("user@reg.example:5000", "s3cret")));
        assert_eq!(
            l.source,
            "credential helper docker-credential-fake (credHelpers in /root/.docker/config.json)"
        );
        let l = config.lookup_with("docker.io", &env).unwrap();
        assert_eq!(
            l.credential,
            Some(basic("user@https://index.docker.io/v1/", "s3cret"))
        );

        // credsStore applies to registries without their own helper; it is missing here.
        let err = config.lookup_with("other.example", &env).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("docker-credential-missing-store"), "{msg}");
        assert!(msg.contains("PATH"), "{msg}");
        assert!(
            msg.contains("credsStore in /root/.docker/config.json"),
            "{msg}"
        );
    }

    #[test]
    fn empty_cred_helper_selects_file_store() {
        let config = cfg(&format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}},
                 "credHelpers": {{"r.example": ""}}, "credsStore": "missing"}}"#,
            b64("u:p")
        ));
        let l = config.lookup_with("r.example", &no_helpers()).unwrap();
        assert_eq!(l.credential, Some(basic("u", "p")));
    }

    #[test]
    fn creds_store_identity_token_and_not_found() {
        let dir = tempfile::tempdir().unwrap();
        write_helper(
            dir.path(),
            "store",
            r#"read -r url
case "$url" in
  tok.example) echo '{"ServerURL":"tok.example","Username":"<token>","Secret":"refresh-tok"}' ;;
  empty.example) echo '{}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac"#,
        );
        let config = cfg(&format!(
            r#"{{"credsStore": "store", "auths": {{"none.example": {{"auth": "{}"}}}}}}"#,
            b64("file:file")
        ));
        let env = helper_env(dir.path());
        let l = config.lookup_with("tok.example", &env).unwrap();
        assert_eq!(
            l.credential,
            Some(Credential::IdentityToken("refresh-tok".into()))
        );

        // Like Docker, "not found" from the store is anonymous, without falling back to auths.
        let l = config.lookup_with("none.example", &env).unwrap();
        assert_eq!(l.credential, None);
        assert_eq!(
            l.source,
            "no credentials (anonymous): credential helper docker-credential-store \
             (credsStore in /root/.docker/config.json) has none for none.example"
        );
        let l = config.lookup_with("empty.example", &env).unwrap();
        assert_eq!(l.credential, None);
    }

    #[test]
    fn helper_failures() {
        let dir = tempfile::tempdir().unwrap();
        write_helper(dir.path(), "boom", "echo 'keychain locked' >&2; exit 2");
        write_helper(dir.path(), "garbage", "echo 'not json'");
        write_helper(dir.path(), "badtype", r#"echo '{"Username": 5}'"#);
        std::fs::write(dir.path().join("docker-credential-noexec"), "#!/bin/sh\n").unwrap();
        let env = helper_env(dir.path());
        let run = |helper: &str| {
            cfg(&format!(
                r#"{{"credHelpers": {{"r.example": "{helper}"}}}}"#
            ))
            .lookup_with("r.example", &env)
            .unwrap_err()
        };

        let err = run("boom");
        assert!(
            matches!(err, CredentialsError::HelperFailed { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("docker-credential-boom") && msg.contains("keychain locked"),
            "{msg}"
        );

        let err = run("garbage");
        assert!(
            matches!(err, CredentialsError::HelperOutput { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("docker-credential-garbage"));

        let err = run("badtype");
        assert!(
            matches!(err, CredentialsError::HelperOutput { .. }),
            "{err:?}"
        );

        let err = run("noexec");
        assert!(
            matches!(err, CredentialsError::HelperNotFound { .. }),
            "{err:?}"
        );

        let err = run("../evil");
        assert!(
            matches!(err, CredentialsError::InvalidHelperName { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn slow_helper_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        // `exec` so that killing the helper kills the sleeper holding the pipes.
        write_helper(dir.path(), "slow", "exec sleep 30");
        let env = HelperEnv {
            search_dirs: vec![dir.path().to_path_buf()],
            timeout: Duration::from_millis(300),
        };
        let config = cfg(r#"{"credsStore": "slow"}"#);
        let started = Instant::now();
        let err = config.lookup_with("r.example", &env).unwrap_err();
        assert!(
            matches!(err, CredentialsError::HelperTimeout { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("docker-credential-slow"));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn helper_leaving_background_process_times_out() {
        let dir = tempfile::tempdir().unwrap();
        // Exits at once but a background child keeps stdout open.
        write_helper(dir.path(), "daemon", "sleep 5 &\necho '{}'");
        let env = HelperEnv {
            search_dirs: vec![dir.path().to_path_buf()],
            timeout: Duration::from_millis(500),
        };
        let config = cfg(r#"{"credsStore": "daemon"}"#);
        let started = Instant::now();
        let err = config.lookup_with("r.example", &env).unwrap_err();
        assert!(
            matches!(err, CredentialsError::HelperTimeout { .. }),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn registry_host_normalisation() {
        assert_eq!(
            registry_host("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(registry_host("HTTP://r:5000/x"), "r:5000");
        assert_eq!(registry_host("r:5000"), "r:5000");
        assert_eq!(registry_host(""), "");
        assert!(same_registry("docker.io", "registry-1.docker.io"));
        assert!(!same_registry("docker.io", "quay.io"));
        assert_eq!(shorten("héllo", 2), "hé…");
    }
}
