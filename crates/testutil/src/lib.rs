//! Test harness for soci-rs: starts real components for integration tests (Debian's
//! `docker-registry`, i.e. CNCF distribution 2.8, on loopback), builds OCI image layouts locally
//! with deterministic bytes, and pushes them with skopeo.
//!
//! Everything here panics with a clear message on failure: it is only used by tests.
//! The external programs come from `scripts/install-deps.sh` (`docker-registry`,
//! `apache2-utils` for `htpasswd`, `skopeo`).
//!
//! Modules: the crate root (registries, images, layouts, skopeo, umoci,
//! debootstrap); [`blob_storage`]: object storage behind docker-registry's redirect
//! middleware; [`containerd_daemon`]: a real containerd with its own root and sockets;
//! `cri`: the kubelet's CRI image service client (feature `cri`); [`token_issuer`]: a JWT
//! issuer for docker-registry's token auth; [`tree`]: snapshots of directory trees and their
//! differences.

pub mod blob_storage;
pub mod containerd_daemon;
#[cfg(feature = "cri")]
pub mod cri;
mod http1;
pub mod token_issuer;
pub mod tree;

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a registry gets to answer `GET /v2/` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How many free ports [`Registry`] tries before it gives up.
const START_ATTEMPTS: usize = 5;
/// `--command-timeout` of a `skopeo copy`.
const SKOPEO_COPY_TIMEOUT: &str = "300s";
/// `--command-timeout` of a `skopeo inspect`.
const SKOPEO_INSPECT_TIMEOUT: &str = "60s";
/// Lines of the registry's log quoted in panic messages.
const LOG_TAIL_LINES: usize = 40;

/// Writes `<config_dir>/<registry>/hosts.toml` naming `mirror` (plain HTTP, pull and resolve)
/// before `registry` itself (plain HTTP), as containerd's `config_path` layout has it.
pub fn write_mirror_hosts_toml(config_dir: &Path, registry: &str, mirror: &str) {
    let dir = config_dir.join(registry);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
}

/// Panics with "`<name>` not found: run scripts/install-deps.sh" when no executable called
/// `name` is on `PATH`.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    assert!(found, "{name} not found: run scripts/install-deps.sh");
}

/// A `docker-registry serve` process (distribution 2.8) listening on 127.0.0.1 with
/// filesystem storage in a temp dir it owns (removed on drop).
///
/// The config enables deletes, sets a fixed `http.secret`, logs at `info` level to a file in
/// the temp dir (its tail is quoted when the registry fails to come up) and disables upload
/// purging. The process is killed and reaped on [`Registry::stop`] and on drop.
pub struct Registry {
    child: Option<Child>,
    /// Owns the storage, config and log; removed when the registry is dropped.
    _dir: tempfile::TempDir,
    storage: PathBuf,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    /// The CA that signed the registry's certificate (TLS registries only).
    tls_cert: Option<PathBuf>,
}

impl Registry {
    /// Starts a registry without authentication.
    pub fn start() -> Registry {
        Self::start_inner("", None, false)
    }

    /// Starts a registry that serves HTTPS only, with a fresh certificate for `127.0.0.1`
    /// signed by a fresh test CA (made with `openssl`); [`Registry::tls_cert`] is the CA to
    /// trust.
    pub fn start_with_tls() -> Registry {
        Self::start_inner("", None, true)
    }

    /// The CA certificate of a TLS registry (PEM), to pass as a CA file.
    pub fn tls_cert(&self) -> Option<&Path> {
        self.tls_cert.as_deref()
    }

    /// Starts a registry that wants HTTP basic auth (htpasswd file with a bcrypt hash made by
    /// `htpasswd -Bbn`, realm `soci-test`) for `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::start_inner("", Some((user, password)), false)
    }

    /// Starts a registry without auth, with `extra_yaml` appended to its config as top-level
    /// keys (e.g. a `notifications:` section). It must not repeat a key the harness writes
    /// (`version`, `log`, `storage`, `http`).
    pub fn start_with_config(extra_yaml: &str) -> Registry {
        Self::start_inner(extra_yaml, None, false)
    }

    fn start_inner(extra_yaml: &str, auth: Option<(&str, &str)>, tls: bool) -> Registry {
        require_tool("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("soci-registry-")
            .tempdir()
            .expect("create the registry's temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("create the registry's storage dir");
        let mut auth_yaml = String::new();
        if let Some((user, password)) = auth {
            require_tool("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(
                out.status.success(),
                "htpasswd -Bbn failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, &out.stdout).expect("write the htpasswd file");
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: soci-test\n    path: {}\n",
                yaml_str(&htpasswd.display().to_string())
            );
        }
        let mut tls_yaml = String::new();
        let mut tls_cert = None;
        if tls {
            require_tool("openssl");
            // A CA and a leaf certificate for 127.0.0.1 signed by it (rustls refuses a CA
            // certificate used as the server's own).
            let ca = dir.path().join("ca.pem");
            let ca_key = dir.path().join("ca-key.pem");
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            let csr = dir.path().join("leaf.csr");
            let ext = dir.path().join("leaf.ext");
            std::fs::write(
                &ext,
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
            )
            .expect("write the certificate extensions");
            let openssl = |args: &[&std::ffi::OsStr]| {
                let out = Command::new("openssl")
                    .args(args)
                    .output()
                    .expect("run openssl");
                assert!(
                    out.status.success(),
                    "openssl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            let o = |s: &'static str| std::ffi::OsStr::new(s);
            openssl(&[
                o("req"),
                o("-x509"),
                o("-newkey"),
                o("rsa:2048"),
                o("-nodes"),
                o("-days"),
                o("2"),
                o("-subj"),
                o("/CN=soci-test-ca"),
                o("-keyout"),
                ca_key.as_os_str(),
                o("-out"),
                ca.as_os_str(),
            ]);
            openssl(&[
                o("req"),
                o("-newkey"),
                o("rsa:2048"),
                o("-nodes"),
                o("-subj"),
                o("/CN=127.0.0.1"),
                o("-keyout"),
                key.as_os_str(),
                o("-out"),
                csr.as_os_str(),
            ]);
            openssl(&[
                o("x509"),
                o("-req"),
                o("-in"),
                csr.as_os_str(),
                o("-CA"),
                ca.as_os_str(),
                o("-CAkey"),
                ca_key.as_os_str(),
                o("-CAcreateserial"),
                o("-days"),
                o("2"),
                o("-extfile"),
                ext.as_os_str(),
                o("-out"),
                cert.as_os_str(),
            ]);
            tls_yaml = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_str(&cert.display().to_string()),
                yaml_str(&key.display().to_string())
            );
            tls_cert = Some(ca);
        }
        let mut reg = Registry {
            tls_cert,
            child: None,
            config: dir.path().join("config.yml"),
            log: dir.path().join("registry.log"),
            storage,
            _dir: dir,
            port: 0,
        };
        let mut failures = String::new();
        // Another process can take the free port before the registry binds it: try a few.
        for attempt in 1..=START_ATTEMPTS {
            reg.port = free_port();
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{}\n  secret: soci-testutil-http-secret\n\
                 {tls_yaml}{auth_yaml}{extra_yaml}\n",
                yaml_str(&reg.storage.display().to_string()),
                reg.port,
            );
            std::fs::write(&reg.config, config).expect("write the registry config");
            match reg.spawn() {
                Ok(()) => return reg,
                Err(why) => {
                    failures.push_str(&format!("attempt {attempt} (port {}): {why}\n", reg.port))
                }
            }
        }
        panic!(
            "docker-registry did not come up after {START_ATTEMPTS} attempts\n{failures}\
             config:\n{}\nlog tail:\n{}",
            std::fs::read_to_string(&reg.config).unwrap_or_default(),
            reg.log_tail()
        );
    }

    /// The last lines of the registry's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Starts the process and waits (bounded) until `GET /v2/` answers 200 or 401.
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the registry log handle"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !self.is_running() {
                self.kill();
                return Err("docker-registry exited".to_owned());
            }
            // A TLS registry answers a plain-HTTP probe with 400 (Go's "client sent an HTTP
            // request to an HTTPS server"): that is enough to know it listens.
            let status = http_status(self.port, "/v2/");
            let up = matches!(status, Some(200 | 401))
                || (self.tls_cert.is_some() && status == Some(400));
            if up {
                // Something answers; make sure it is our process and not a squatter.
                if self.is_running() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "no answer to GET /v2/ within {} s",
                    READY_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// `127.0.0.1:PORT`, the registry host for references (`{addr}/repo:tag`).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The filesystem storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// Where the registry keeps a blob's bytes:
    /// `<root>/docker/registry/v2/blobs/sha256/<first 2 hex>/<hex>/data` (e.g. to corrupt
    /// them in a test). `digest` may have the `sha256:` prefix or not.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2.min(hex.len())])
            .join(hex)
            .join("data")
    }

    /// The registry's whole log so far (stdout and stderr of every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the registry (kill and wait): its port is released, its storage kept.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the registry again on the same port with the same storage and config (stops it
    /// first if it is running). Panics with the log's tail if it does not come up.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.spawn() {
            panic!(
                "docker-registry did not restart on port {}: {why}\nlog tail:\n{}",
                self.port,
                self.log_tail()
            );
        }
    }

    /// Whether the registry process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A YAML single-quoted scalar.
fn yaml_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    l.local_addr()
        .expect("local address of a bound socket")
        .port()
}

/// The status code of a minimal HTTP/1.0 `GET` on 127.0.0.1:`port`, if anything answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words.next()?.parse().ok()
}

/// A regular file in a test layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// Path inside the layer, relative, without a leading `./` or `/`.
    pub path: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits, e.g. `0o644`.
    pub mode: u32,
}

/// One tar entry of a test layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntrySpec {
    /// A regular file.
    File(FileSpec),
    /// A directory.
    Dir {
        /// Path (conventionally with a trailing `/`).
        path: String,
        /// Permission bits, e.g. `0o755`.
        mode: u32,
    },
    /// A symbolic link (mode `0o777`).
    Symlink {
        /// Path of the link.
        path: String,
        /// What it points to, verbatim.
        target: String,
    },
    /// A hard link to an earlier entry of the same layer.
    Hardlink {
        /// Path of the link.
        path: String,
        /// The earlier entry's path.
        target: String,
    },
    /// Any kind of entry with explicit metadata (owner, names, mode bits incl.
    /// setuid/setgid/sticky, mtime, xattrs), e.g. devices and fifos; see [`NodeSpec`].
    Node(NodeSpec),
    /// An OCI whiteout: deletes `path` (a file, or a directory with everything below it) of
    /// the lower layers. Written as the empty regular file `<parent>/.wh.<name>` (mode
    /// `0o644`, owner 0:0).
    Whiteout {
        /// Path of the deleted entry, relative, without a trailing `/`.
        path: String,
    },
    /// An OCI opaque whiteout: hides everything the lower layers have below the directory
    /// `dir` (entries of this layer in it stay). Written as the empty regular file
    /// `<dir>/.wh..wh..opq`; the layer should also hold a [`EntrySpec::Dir`] or directory
    /// [`NodeSpec`] for `dir` itself, conventionally just before it.
    OpaqueWhiteout {
        /// The directory, relative, with or without a trailing `/`.
        dir: String,
    },
}

impl From<NodeSpec> for EntrySpec {
    fn from(n: NodeSpec) -> EntrySpec {
        EntrySpec::Node(n)
    }
}

/// What a [`NodeSpec`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target, verbatim.
    Symlink(String),
    /// A hard link to this earlier entry of the same layer.
    Hardlink(String),
    /// A character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// A tar entry with full metadata, built with the constructors ([`NodeSpec::file`],
/// [`NodeSpec::dir`], [`NodeSpec::char_device`], …) and the chained setters
/// ([`NodeSpec::mode`], [`NodeSpec::owner`], [`NodeSpec::names`], [`NodeSpec::xattr`],
/// [`NodeSpec::mtime`]); it goes into a layer as [`EntrySpec::Node`] (`.into()`).
///
/// Written as a GNU header (uid, gid, uname, gname, devmajor/devminor, mode with its
/// setuid/setgid/sticky bits); xattrs go first into a PAX extended header (`typeflag 'x'`)
/// holding one `SCHILY.xattr.<name>=<value>` record per xattr, as Go's `archive/tar` and
/// GNU tar write them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// Path inside the layer, relative, without a leading `./` or `/` (directories
    /// conventionally with a trailing `/`).
    pub path: String,
    /// What it is.
    pub kind: NodeKind,
    /// Mode bits without the file type, e.g. `0o4755`.
    pub mode: u32,
    /// Owner's user id.
    pub uid: u64,
    /// Owner's group id.
    pub gid: u64,
    /// Owner's user name (`uname`), may be empty.
    pub uname: String,
    /// Owner's group name (`gname`), may be empty.
    pub gname: String,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Extended attributes as (full name, e.g. `user.comment`; value), in record order.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// The mtime of every entry of a test layer, unless a [`NodeSpec`] says otherwise.
pub const DEFAULT_MTIME: u64 = 1_700_000_000;

impl NodeSpec {
    fn new(path: &str, kind: NodeKind, mode: u32) -> NodeSpec {
        NodeSpec {
            path: path.to_owned(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
        }
    }

    /// A regular file, mode `0o644`, owner 0:0, mtime [`DEFAULT_MTIME`].
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> NodeSpec {
        Self::new(path, NodeKind::File(data.into()), 0o644)
    }

    /// A directory, mode `0o755`, owner 0:0.
    pub fn dir(path: &str) -> NodeSpec {
        Self::new(path, NodeKind::Dir, 0o755)
    }

    /// A symbolic link to `target` (verbatim), mode `0o777`, owner 0:0.
    pub fn symlink(path: &str, target: &str) -> NodeSpec {
        Self::new(path, NodeKind::Symlink(target.to_owned()), 0o777)
    }

    /// A hard link to the earlier entry `target` of the same layer (mode `0o644` in its
    /// header; extractors keep the target's metadata).
    pub fn hardlink(path: &str, target: &str) -> NodeSpec {
        Self::new(path, NodeKind::Hardlink(target.to_owned()), 0o644)
    }

    /// A character device `major:minor`, mode `0o644`, owner 0:0.
    pub fn char_device(path: &str, major: u32, minor: u32) -> NodeSpec {
        Self::new(path, NodeKind::CharDevice { major, minor }, 0o644)
    }

    /// A block device `major:minor`, mode `0o644`, owner 0:0.
    pub fn block_device(path: &str, major: u32, minor: u32) -> NodeSpec {
        Self::new(path, NodeKind::BlockDevice { major, minor }, 0o644)
    }

    /// A named pipe, mode `0o644`, owner 0:0.
    pub fn fifo(path: &str) -> NodeSpec {
        Self::new(path, NodeKind::Fifo, 0o644)
    }

    /// Sets the mode bits (`0o7777` range: permissions plus setuid `0o4000`, setgid
    /// `0o2000`, sticky `0o1000`).
    pub fn mode(mut self, mode: u32) -> NodeSpec {
        self.mode = mode;
        self
    }

    /// Sets the numeric owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> NodeSpec {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the owner's names (`uname`, `gname`).
    pub fn names(mut self, uname: &str, gname: &str) -> NodeSpec {
        self.uname = uname.to_owned();
        self.gname = gname.to_owned();
        self
    }

    /// Sets the mtime (seconds since the epoch).
    pub fn mtime(mut self, mtime: u64) -> NodeSpec {
        self.mtime = mtime;
        self
    }

    /// Adds the xattr `name` (full name, e.g. `user.comment`) with `value`, written as the
    /// PAX record `SCHILY.xattr.<name>=<value>`.
    pub fn xattr(mut self, name: &str, value: impl Into<Vec<u8>>) -> NodeSpec {
        self.xattrs.push((name.to_owned(), value.into()));
        self
    }
}

/// How a test layer's tar is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip via flate2 at level 6 (`application/vnd.oci.image.layer.v1.tar+gzip`).
    Gzip,
    /// Plain tar (`application/vnd.oci.image.layer.v1.tar`).
    Uncompressed,
}

/// A test layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    /// Its entries, in tar order.
    pub entries: Vec<EntrySpec>,
    /// How the tar is stored.
    pub compression: Compression,
}

/// A test image for one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// Layers, bottom first.
    pub layers: Vec<LayerSpec>,
    /// `os` of the config and the platform (e.g. `linux`).
    pub os: String,
    /// `architecture` of the config and the platform (e.g. `amd64`).
    pub arch: String,
}

/// A layer as written to a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// `sha256:…` digest of the blob.
    pub digest: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Media type in the manifest.
    pub media_type: String,
    /// `sha256:…` digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
}

/// An image as written to a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    /// `sha256:…` digest of the image manifest.
    pub manifest_digest: String,
    /// Size of the image manifest in bytes.
    pub manifest_size: u64,
    /// `sha256:…` digest of the image config.
    pub config_digest: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerInfo>,
}

/// Compressible pseudo-random text (xorshift32 over the 38-character alphabet
/// `a-z0-9`, space, newline), deterministic for a `seed`. gzip shrinks it to about 2/3.
pub fn noisy(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b"abcdefghijklmnopqrstuvwxyz0123456789 \n"[(x % 38) as usize]
        })
        .collect()
}

/// Incompressible deterministic bytes (xorshift64*) for a `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `sha256:<hex>` of `bytes`.
pub fn sha(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!("sha256:{}", hex::encode(digest.as_ref()))
}

/// Writes `bytes` as the blob `digest` of the layout at `dir`.
fn put_blob_as(dir: &Path, digest: &str, bytes: &[u8]) {
    let p = dir.join("blobs/sha256").join(&digest[7..]);
    std::fs::create_dir_all(p.parent().expect("blob path has a parent"))
        .expect("create blobs/sha256");
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write blob {}: {e}", p.display()));
}

/// Writes `bytes` as a blob of the layout at `dir` and returns its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    put_blob_as(dir, &d, bytes);
    d
}

/// The tar of `entries`: GNU headers, mtime 1 700 000 000, uid/gid 0, except for
/// [`EntrySpec::Node`]s, which carry their own metadata (and a PAX header for xattrs).
fn tar_of(entries: &[EntrySpec]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            EntrySpec::File(f) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(f.data.len() as u64);
                h.set_mode(f.mode);
                b.append_data(&mut h, &f.path, &f.data[..])
                    .unwrap_or_else(|e| panic!("tar file {}: {e}", f.path));
            }
            EntrySpec::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(*mode);
                b.append_data(&mut h, path, &[][..])
                    .unwrap_or_else(|e| panic!("tar dir {path}: {e}"));
            }
            EntrySpec::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target)
                    .unwrap_or_else(|e| panic!("tar symlink {path}: {e}"));
            }
            EntrySpec::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                h.set_mode(0o644);
                b.append_link(&mut h, path, target)
                    .unwrap_or_else(|e| panic!("tar hardlink {path}: {e}"));
            }
            EntrySpec::Node(n) => append_node(&mut b, n),
            EntrySpec::Whiteout { path } => {
                let path = path.trim_end_matches('/');
                let (parent, name) = match path.rsplit_once('/') {
                    Some((parent, name)) => (format!("{parent}/"), name),
                    None => (String::new(), path),
                };
                append_empty_file(&mut b, &mut h, &format!("{parent}.wh.{name}"));
            }
            EntrySpec::OpaqueWhiteout { dir } => {
                let dir = dir.trim_end_matches('/');
                append_empty_file(&mut b, &mut h, &format!("{dir}/.wh..wh..opq"));
            }
        }
    }
    b.into_inner().expect("finish tar")
}

/// Appends an empty regular file (mode `0o644`) with the header `h` already holding mtime
/// and owner.
fn append_empty_file(b: &mut tar::Builder<Vec<u8>>, h: &mut tar::Header, path: &str) {
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    b.append_data(h, path, &[][..])
        .unwrap_or_else(|e| panic!("tar whiteout {path}: {e}"));
}

/// Appends a [`NodeSpec`]: its PAX xattr header if it has xattrs, then its GNU header (and
/// data).
fn append_node(b: &mut tar::Builder<Vec<u8>>, n: &NodeSpec) {
    let path = &n.path;
    if !n.xattrs.is_empty() {
        let mut records = Vec::new();
        for (name, value) in &n.xattrs {
            pax_record(&mut records, &format!("SCHILY.xattr.{name}"), value);
        }
        let mut x = tar::Header::new_ustar();
        // Go's archive/tar names it `<dir>/PaxHeaders.0/<name>`; only the typeflag matters.
        let base = path.trim_end_matches('/');
        let base = base.rsplit('/').next().unwrap_or(base);
        let name = format!("PaxHeaders.0/{base}");
        let name = &name.as_bytes()[..name.len().min(99)];
        x.as_old_mut().name[..name.len()].copy_from_slice(name);
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_size(records.len() as u64);
        x.set_mode(0o644);
        x.set_mtime(n.mtime);
        x.set_cksum();
        b.append(&x, &records[..])
            .unwrap_or_else(|e| panic!("tar PAX header of {path}: {e}"));
    }
    let mut h = tar::Header::new_gnu();
    h.set_mtime(n.mtime);
    h.set_uid(n.uid);
    h.set_gid(n.gid);
    h.set_mode(n.mode);
    h.set_size(0);
    h.set_username(&n.uname)
        .unwrap_or_else(|e| panic!("tar uname of {path}: {e}"));
    h.set_groupname(&n.gname)
        .unwrap_or_else(|e| panic!("tar gname of {path}: {e}"));
    let res = match &n.kind {
        NodeKind::File(data) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, &data[..])
        }
        NodeKind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, path, &[][..])
        }
        NodeKind::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, path, target)
        }
        NodeKind::Hardlink(target) => {
            h.set_entry_type(tar::EntryType::Link);
            b.append_link(&mut h, path, target)
        }
        NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
            h.set_entry_type(if matches!(n.kind, NodeKind::CharDevice { .. }) {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            h.set_device_major(*major)
                .and_then(|()| h.set_device_minor(*minor))
                .and_then(|()| b.append_data(&mut h, path, &[][..]))
        }
        NodeKind::Fifo => {
            h.set_entry_type(tar::EntryType::Fifo);
            b.append_data(&mut h, path, &[][..])
        }
    };
    res.unwrap_or_else(|e| panic!("tar {path}: {e}"));
}

/// Appends the PAX record `"<len> <key>=<value>\n"` (`len` counts the whole record,
/// its own digits included).
pub fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A gzip'd layer: its bytes and their digest.
type Gzipped = Arc<(Vec<u8>, String)>;

/// gzip (flate2, level 6) of `tar`, whose digest is `diff_id`, memoized.
///
/// Compressing is slow in the debug profile (~1.5 MB/s), so results are kept for the life of
/// the process and, for tars of 1 MiB or more, on disk next to the test binary
/// (`target/<profile>/soci-testutil-cache/`) for later runs and other test binaries. The
/// bytes are the same either way: deflate is deterministic.
fn gzip_cached(tar: &[u8], diff_id: &str) -> Gzipped {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<OnceLock<Gzipped>>>>> = OnceLock::new();
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(diff_id.to_owned())
        .or_default()
        .clone();
    slot.get_or_init(|| {
        let disk = (tar.len() >= 1 << 20)
            .then(disk_cache_dir)
            .flatten()
            .map(|d| d.join(format!("{}.gz6", &diff_id[7..])));
        if let Some(hit) = disk.as_deref().and_then(|p| read_disk_cache(p, tar.len())) {
            return Arc::new(hit);
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(tar).expect("gzip a layer");
        let gz = e.finish().expect("gzip a layer");
        let digest = sha(&gz);
        if let Some(p) = disk {
            write_disk_cache(&p, &gz, &digest);
        }
        Arc::new((gz, digest))
    })
    .clone()
}

/// `target/<profile>/soci-testutil-cache` when running from `target/<profile>/deps/`.
fn disk_cache_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    let dir = deps.parent()?.join("soci-testutil-cache");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// Length of the `sha256:<hex>` digest stored after the gzip stream in a cache file.
const DIGEST_LEN: usize = 71;

/// A cached gzip stream and its digest (one file: the stream, then the digest), if it is
/// there and the stream's trailer (ISIZE) matches the tar's length.
fn read_disk_cache(path: &Path, tar_len: usize) -> Option<(Vec<u8>, String)> {
    let mut gz = std::fs::read(path).ok()?;
    let digest = String::from_utf8(gz.split_off(gz.len().checked_sub(DIGEST_LEN)?)).ok()?;
    let isize = u32::from_le_bytes(gz.get(gz.len().checked_sub(4)?..)?.try_into().ok()?);
    let ok = digest.starts_with("sha256:") && isize == tar_len as u32;
    ok.then_some((gz, digest))
}

/// Stores a cache entry atomically (temp file + rename); failures only cost a recompression.
fn write_disk_cache(path: &Path, gz: &[u8], digest: &str) {
    let put = || -> Option<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(path.parent()?).ok()?;
        tmp.write_all(gz).ok()?;
        tmp.write_all(digest.as_bytes()).ok()?;
        tmp.persist(path).ok()?;
        Some(())
    };
    let _ = put();
}

/// Writes the blobs of one image (layers, config, manifest) to the layout at `dir`.
fn write_image(dir: &Path, spec: &ImageSpec) -> BuiltImage {
    let mut layers = Vec::new();
    for l in &spec.layers {
        let tar = tar_of(&l.entries);
        let diff_id = sha(&tar);
        let info = match l.compression {
            Compression::Gzip => {
                let gz = gzip_cached(&tar, &diff_id);
                put_blob_as(dir, &gz.1, &gz.0);
                LayerInfo {
                    digest: gz.1.clone(),
                    size: gz.0.len() as u64,
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
                    diff_id,
                }
            }
            Compression::Uncompressed => {
                put_blob_as(dir, &diff_id, &tar);
                LayerInfo {
                    digest: diff_id.clone(),
                    size: tar.len() as u64,
                    media_type: "application/vnd.oci.image.layer.v1.tar".to_owned(),
                    diff_id,
                }
            }
        };
        layers.push(info);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": spec.arch,
        "os": spec.os,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        },
    }))
    .expect("config JSON");
    let config_digest = put_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
            .collect::<Vec<_>>(),
    }))
    .expect("manifest JSON");
    let manifest_digest = put_blob(dir, &manifest);
    BuiltImage {
        manifest_digest,
        manifest_size: manifest.len() as u64,
        config_digest,
        layers,
    }
}

/// Writes an OCI image layout at `dir` (created if missing; `oci-layout`, `index.json`,
/// `blobs/sha256/…`) holding `images` under `tag`, and returns what was written, in order.
///
/// With one image, `index.json` names its manifest directly (annotation
/// `org.opencontainers.image.ref.name` = `tag`, plus its platform); with several, it names
/// (with the tag) a nested OCI image index listing each image manifest with its platform.
/// The bytes depend only on the specs, so digests are reproducible.
pub fn write_oci_layout(dir: &Path, tag: &str, images: &[ImageSpec]) -> Vec<BuiltImage> {
    assert!(
        !images.is_empty(),
        "write_oci_layout needs at least one image"
    );
    std::fs::create_dir_all(dir.join("blobs/sha256"))
        .unwrap_or_else(|e| panic!("create layout {}: {e}", dir.display()));
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let built: Vec<BuiltImage> = images.iter().map(|s| write_image(dir, s)).collect();
    let platform = |s: &ImageSpec| json!({"architecture": s.arch, "os": s.os});
    let ref_name = json!({"org.opencontainers.image.ref.name": tag});
    let top: Value = if let [one] = &built[..] {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": one.manifest_digest,
            "size": one.manifest_size,
            "annotations": ref_name,
            "platform": platform(&images[0]),
        })
    } else {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": built
                .iter()
                .zip(images)
                .map(|(b, s)| json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": b.manifest_digest,
                    "size": b.manifest_size,
                    "platform": platform(s),
                }))
                .collect::<Vec<_>>(),
        }))
        .expect("image index JSON");
        let digest = put_blob(dir, &index);
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": index.len(),
            "annotations": ref_name,
        })
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [top],
    });
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index.json JSON"),
    )
    .expect("write index.json");
    built
}

fn file(path: &str, data: Vec<u8>, mode: u32) -> EntrySpec {
    EntrySpec::File(FileSpec {
        path: path.to_owned(),
        data,
        mode,
    })
}

fn dir(path: &str) -> EntrySpec {
    EntrySpec::Dir {
        path: path.to_owned(),
        mode: 0o755,
    }
}

/// A linux/amd64 image with three gzip layers:
///
/// 1. ~12 MB compressed (17 MB of noisy text): `usr/`, `usr/bin/` with `tool` (10 MB),
///    `small`, the symlink `alias` → `tool` and the hard link `tool2` → `usr/bin/tool`,
///    `usr/lib/` with `libbig.so` (7 MB) and `notes.txt`;
/// 2. a few KB: `etc/config` (`key=value\n`) and `etc/motd`;
/// 3. ~12 MB compressed: `opt/data.bin`, 4 MB of noisy text then 9 MB of random bytes.
pub fn sample_image() -> ImageSpec {
    let mut data = noisy(4_000_000, 41);
    data.extend(random_bytes(9_000_000, 42));
    ImageSpec {
        os: "linux".into(),
        arch: "amd64".into(),
        layers: vec![
            LayerSpec {
                compression: Compression::Gzip,
                entries: vec![
                    dir("usr/"),
                    dir("usr/bin/"),
                    file("usr/bin/tool", noisy(10_000_000, 7), 0o755),
                    file("usr/bin/small", noisy(5_000, 8), 0o755),
                    EntrySpec::Symlink {
                        path: "usr/bin/alias".into(),
                        target: "tool".into(),
                    },
                    EntrySpec::Hardlink {
                        path: "usr/bin/tool2".into(),
                        target: "usr/bin/tool".into(),
                    },
                    dir("usr/lib/"),
                    file("usr/lib/libbig.so", noisy(7_000_000, 11), 0o644),
                    file("usr/lib/notes.txt", noisy(200_000, 12), 0o644),
                ],
            },
            LayerSpec {
                compression: Compression::Gzip,
                entries: vec![
                    dir("etc/"),
                    file("etc/config", b"key=value\n".to_vec(), 0o644),
                    file("etc/motd", noisy(3_000, 13), 0o644),
                ],
            },
            LayerSpec {
                compression: Compression::Gzip,
                entries: vec![dir("opt/"), file("opt/data.bin", data, 0o644)],
            },
        ],
    }
}

/// Size of `usr/lib/big.bin` in [`rich_image`]: a bit over 12 MiB of random bytes.
pub const RICH_BIG_FILE_SIZE: usize = 12 * 1024 * 1024 + 4321;

/// mtime of layer 2's entries in [`rich_image`] (layer 1 uses [`DEFAULT_MTIME`]).
pub const RICH_MTIME_2: u64 = 1_700_086_400;

/// mtime of layer 3's entries in [`rich_image`].
pub const RICH_MTIME_3: u64 = 1_700_172_800;

/// A linux/amd64 image with three gzip layers exercising every kind of entry and every
/// overlay rule, to compare a lazy mount against `umoci unpack` (see [`tree`]).
///
/// Only layer 1 (~12 MiB compressed) reaches the default minimum layer size (10 MiB);
/// layers 2 and 3 are a few KB, so a SOCI index built with defaults leaves them without a
/// zTOC (fetched whole). Tests that want every layer lazily loaded must index with
/// `--min-layer-size 0`. Every directory is listed before its contents (no implicit
/// parents, whose mode would depend on the extractor's umask). Contents come from fixed
/// seeds, so digests are reproducible.
///
/// Layer 1 (mtime [`DEFAULT_MTIME`]), the base tree:
/// - `etc/`: `hostname`, `passwd`, `group`, `shadow` (`0o640`, 0:42 `root`/`shadow`),
///   `empty.conf` (empty), `old.conf` (removed by layer 2), `app.conf` (`0o644`, changed
///   by layer 2), `alternatives/editor` → `/usr/bin/vi` (absolute symlink);
/// - `usr/bin/`: `vi`, `view` → `vi` (relative symlink), `sudo` (setuid, `0o4755`),
///   `wall` (setgid, `0o2755`, 0:5 `root`/`tty`), `ping` (xattrs `user.comment` =
///   `ping with caps`, `user.unicode` = `héllo ✓`), `gzip` and its hard link `gunzip`
///   (which layer 2 replaces);
/// - `usr/lib/` (xattr `user.dirattr` = `lib`): `big.bin` ([`RICH_BIG_FILE_SIZE`] random
///   bytes), `libx.so.1.0` and its hard link `libx.so.1`, `libx.so` → `libx.so.1`,
///   `cache/` with `a`, `b`, `sub/c` (made opaque by layer 2);
/// - `usr/share/doc/pkg/` with `copyright` and `deep/deeper/README` (removed by layer 2,
///   recreated by layer 3);
/// - `home/user/` (`0o755`, 1000:1000 `user`/`user`) with `.profile` and `notes.txt`
///   (`0o600`), both 1000:1000;
/// - `var/empty/` and `var/empty/owned-by-nobody` (65534:65534 `nobody`/`nogroup`),
///   `var/mail/` (setgid dir, `0o2775`, 0:8 `root`/`mail`);
/// - `tmp/` (sticky, `0o1777`);
/// - `dev/null` (char 1:3, `0o666`), `dev/loop0` (block 7:0, `0o660`, 0:6 `root`/`disk`),
///   `run/initctl` (fifo, `0o600`).
///
/// Layer 2 (mtime [`RICH_MTIME_2`]):
/// - whiteouts `etc/.wh.old.conf` (a file) and `usr/share/doc/.wh.pkg` (a directory tree);
/// - `usr/lib/cache/`, then `usr/lib/cache/.wh..wh..opq` and the new `usr/lib/cache/new`:
///   only `new` is left there;
/// - `etc/app.conf` with new content and mode `0o600`;
/// - `usr/bin/gunzip` as a new regular file (no longer a hard link of `gzip`);
/// - `home/user/` again with mode `0o700` (same owner): a directory's metadata changes;
/// - the new file `etc/new.conf`.
///
/// Layer 3 (mtime [`RICH_MTIME_3`]):
/// - `opt/app/lib/python3/site-packages/pkg/__init__.py` with all its directories;
/// - `opt/app/new.conf` → `../../etc/new.conf` (relative symlink to layer 2's file);
/// - `usr/share/doc/pkg/` again with only `NEWS` (nothing of layer 1's `pkg/` shows).
pub fn rich_image() -> ImageSpec {
    let n = |e: NodeSpec| EntrySpec::Node(e);
    let d = |p: &str| n(NodeSpec::dir(p));
    let f = |p: &str, data: Vec<u8>| n(NodeSpec::file(p, data));
    let passwd = "root:x:0:0:root:/root:/bin/sh\n\
                  user:x:1000:1000:user:/home/user:/bin/sh\n\
                  nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    let group = "root:x:0:\ntty:x:5:\ndisk:x:6:\nmail:x:8:\nshadow:x:42:\n\
                 user:x:1000:\nnogroup:x:65534:\n";
    let layer1 = vec![
        d("etc/"),
        f("etc/hostname", b"rich\n".to_vec()),
        f("etc/passwd", passwd.into()),
        f("etc/group", group.into()),
        n(NodeSpec::file("etc/shadow", noisy(700, 100))
            .mode(0o640)
            .owner(0, 42)
            .names("root", "shadow")),
        f("etc/empty.conf", Vec::new()),
        f("etc/old.conf", noisy(3_000, 101)),
        f("etc/app.conf", b"mode=old\n".to_vec()),
        d("etc/alternatives/"),
        n(NodeSpec::symlink("etc/alternatives/editor", "/usr/bin/vi")),
        d("usr/"),
        d("usr/bin/"),
        n(NodeSpec::file("usr/bin/vi", noisy(150_000, 102)).mode(0o755)),
        n(NodeSpec::symlink("usr/bin/view", "vi")),
        n(NodeSpec::file("usr/bin/sudo", noisy(60_000, 103)).mode(0o4755)),
        n(NodeSpec::file("usr/bin/wall", noisy(20_000, 104))
            .mode(0o2755)
            .owner(0, 5)
            .names("root", "tty")),
        n(NodeSpec::file("usr/bin/ping", noisy(40_000, 105))
            .mode(0o755)
            .xattr("user.comment", "ping with caps")
            .xattr("user.unicode", "héllo ✓")),
        n(NodeSpec::file("usr/bin/gzip", noisy(90_000, 106)).mode(0o755)),
        n(NodeSpec::hardlink("usr/bin/gunzip", "usr/bin/gzip")),
        n(NodeSpec::dir("usr/lib/").xattr("user.dirattr", "lib")),
        f("usr/lib/big.bin", random_bytes(RICH_BIG_FILE_SIZE, 107)),
        n(NodeSpec::file("usr/lib/libx.so.1.0", noisy(300_000, 108)).mode(0o755)),
        n(NodeSpec::hardlink(
            "usr/lib/libx.so.1",
            "usr/lib/libx.so.1.0",
        )),
        n(NodeSpec::symlink("usr/lib/libx.so", "libx.so.1")),
        d("usr/lib/cache/"),
        f("usr/lib/cache/a", noisy(1_000, 109)),
        f("usr/lib/cache/b", noisy(2_000, 110)),
        d("usr/lib/cache/sub/"),
        f("usr/lib/cache/sub/c", noisy(3_000, 111)),
        d("usr/share/"),
        d("usr/share/doc/"),
        d("usr/share/doc/pkg/"),
        f("usr/share/doc/pkg/copyright", noisy(5_000, 112)),
        d("usr/share/doc/pkg/deep/"),
        d("usr/share/doc/pkg/deep/deeper/"),
        f("usr/share/doc/pkg/deep/deeper/README", noisy(8_000, 113)),
        d("home/"),
        n(NodeSpec::dir("home/user/")
            .owner(1000, 1000)
            .names("user", "user")),
        n(NodeSpec::file("home/user/.profile", noisy(400, 114))
            .owner(1000, 1000)
            .names("user", "user")),
        n(NodeSpec::file("home/user/notes.txt", noisy(2_500, 115))
            .mode(0o600)
            .owner(1000, 1000)
            .names("user", "user")),
        d("var/"),
        n(NodeSpec::dir("var/empty/")
            .owner(65534, 65534)
            .names("nobody", "nogroup")),
        n(NodeSpec::file("var/empty/owned-by-nobody", noisy(100, 116))
            .owner(65534, 65534)
            .names("nobody", "nogroup")),
        n(NodeSpec::dir("var/mail/")
            .mode(0o2775)
            .owner(0, 8)
            .names("root", "mail")),
        n(NodeSpec::dir("tmp/").mode(0o1777)),
        d("dev/"),
        n(NodeSpec::char_device("dev/null", 1, 3).mode(0o666)),
        n(NodeSpec::block_device("dev/loop0", 7, 0)
            .mode(0o660)
            .owner(0, 6)
            .names("root", "disk")),
        d("run/"),
        n(NodeSpec::fifo("run/initctl").mode(0o600)),
    ];
    let t2 = |e: NodeSpec| EntrySpec::Node(e.mtime(RICH_MTIME_2));
    let layer2 = vec![
        EntrySpec::Whiteout {
            path: "etc/old.conf".into(),
        },
        EntrySpec::Whiteout {
            path: "usr/share/doc/pkg".into(),
        },
        t2(NodeSpec::dir("usr/lib/cache/")),
        EntrySpec::OpaqueWhiteout {
            dir: "usr/lib/cache/".into(),
        },
        t2(NodeSpec::file("usr/lib/cache/new", noisy(1_500, 201))),
        t2(NodeSpec::file("etc/app.conf", b"mode=new\nlevel=2\n".to_vec()).mode(0o600)),
        t2(NodeSpec::file("usr/bin/gunzip", noisy(10_000, 202)).mode(0o755)),
        t2(NodeSpec::dir("home/user/")
            .mode(0o700)
            .owner(1000, 1000)
            .names("user", "user")),
        t2(NodeSpec::file("etc/new.conf", b"new=yes\n".to_vec())),
    ];
    let t3 = |e: NodeSpec| EntrySpec::Node(e.mtime(RICH_MTIME_3));
    let layer3 = vec![
        t3(NodeSpec::dir("opt/")),
        t3(NodeSpec::dir("opt/app/")),
        t3(NodeSpec::dir("opt/app/lib/")),
        t3(NodeSpec::dir("opt/app/lib/python3/")),
        t3(NodeSpec::dir("opt/app/lib/python3/site-packages/")),
        t3(NodeSpec::dir("opt/app/lib/python3/site-packages/pkg/")),
        t3(NodeSpec::file(
            "opt/app/lib/python3/site-packages/pkg/__init__.py",
            noisy(4_000, 301),
        )),
        t3(NodeSpec::symlink("opt/app/new.conf", "../../etc/new.conf")),
        t3(NodeSpec::dir("usr/share/doc/pkg/")),
        t3(NodeSpec::file("usr/share/doc/pkg/NEWS", noisy(600, 302))),
    ];
    let layer = |entries| LayerSpec {
        entries,
        compression: Compression::Gzip,
    };
    ImageSpec {
        os: "linux".into(),
        arch: "amd64".into(),
        layers: vec![layer(layer1), layer(layer2), layer(layer3)],
    }
}

/// Unpacks `<layout_dir>:<tag>` with `umoci unpack --image <layout_dir>:<tag> <dest>` (as
/// root, not rootless: owners, devices and xattrs are applied as in the image) and returns
/// the bundle's `rootfs` directory. `dest` must not exist yet (or be empty). Panics with
/// umoci's stderr on failure.
pub fn umoci_unpack(layout_dir: &Path, tag: &str, dest: &Path) -> PathBuf {
    require_tool("umoci");
    let image = format!("{}:{tag}", layout_dir.display());
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(&image)
        .arg(dest)
        .stdin(Stdio::null())
        .output()
        .expect("run umoci unpack");
    assert!(
        out.status.success(),
        "umoci unpack --image {image} {} failed ({}):\n{}",
        dest.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dest.join("rootfs")
}

/// `skopeo` with flags every call wants: `--insecure-policy` (no dependence on
/// `/etc/containers/policy.json`) and a bounded `--command-timeout`.
fn skopeo(timeout: &str) -> Command {
    require_tool("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "--command-timeout", timeout]);
    cmd.stdin(Stdio::null());
    cmd
}

/// `skopeo copy --all SRC DST` between any transports (`docker://` over plain HTTP,
/// `oci:DIR[:TAG]`), as a standard client reading an image whole; panics with skopeo's stderr
/// on failure. Digests are not preserved: skopeo 1.9 re-serializes OCI indexes.
pub fn skopeo_copy(src: &str, dst: &str) {
    let out = skopeo(SKOPEO_COPY_TIMEOUT)
        .args(["copy", "--quiet", "--all", "--retry-times", "0"])
        .args(["--src-tls-verify=false", "--src-no-creds"])
        .arg(src)
        .arg(dst)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {src} {dst} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pushes `oci:LAYOUT_DIR:TAG` to `docker://DEST` (plain HTTP) with
/// `skopeo copy --all --preserve-digests`, so every platform of a multi-platform image goes
/// and the registry's digests equal the layout's. An empty `tag` means the layout's only
/// image. Without `creds` the push is anonymous (`--dest-no-creds`: no ambient auth files).
/// Panics with skopeo's stderr on failure.
pub fn skopeo_push(layout_dir: &Path, tag: &str, dest: &str, creds: Option<(&str, &str)>) {
    let src = if tag.is_empty() {
        format!("oci:{}", layout_dir.display())
    } else {
        format!("oci:{}:{tag}", layout_dir.display())
    };
    let mut cmd = skopeo(SKOPEO_COPY_TIMEOUT);
    cmd.args([
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--retry-times",
        "0",
        "--dest-tls-verify=false",
    ]);
    match creds {
        Some((u, p)) => cmd.arg("--dest-creds").arg(format!("{u}:{p}")),
        None => cmd.arg("--dest-no-creds"),
    };
    let out = cmd
        .arg(&src)
        .arg(format!("docker://{dest}"))
        .output()
        .expect("run skopeo copy");
    assert!(
        out.status.success(),
        "skopeo copy {src} docker://{dest} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The raw manifest bytes of `docker://REFERENCE` (`skopeo inspect --raw`, plain HTTP), or
/// `None` if the registry answers "manifest unknown" / "name unknown". Without `creds` the
/// request is anonymous (`--no-creds`). Panics with skopeo's stderr on any other failure
/// (e.g. "unauthorized").
pub fn skopeo_inspect_raw(reference: &str, creds: Option<(&str, &str)>) -> Option<Vec<u8>> {
    let mut cmd = skopeo(SKOPEO_INSPECT_TIMEOUT);
    cmd.args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--retry-times",
        "0",
    ]);
    match creds {
        Some((u, p)) => cmd.arg("--creds").arg(format!("{u}:{p}")),
        None => cmd.arg("--no-creds"),
    };
    let out = cmd
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo inspect");
    if out.status.success() {
        return Some(out.stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("manifest unknown") || err.contains("name unknown"),
        "skopeo inspect --raw docker://{reference} failed ({}):\n{err}",
        out.status
    );
    None
}

/// Runs `cmd` and panics with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Debian bookworm minbase with python3 (`debootstrap`, about a minute and 260 MB), built
/// once under `cache` (pass the test's `CARGO_TARGET_TMPDIR`) and reused afterwards.
pub fn python_rootfs(cache: &Path) -> PathBuf {
    let cache = cache.join("python-rootfs");
    let rootfs = cache.join("rootfs");
    if rootfs.join("usr/bin/python3").exists() {
        return rootfs;
    }
    require_tool("debootstrap");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).expect("create the rootfs cache dir");
    let tmp = cache.join("rootfs.partial");
    run_ok(
        Command::new("debootstrap")
            .args(["--variant=minbase", "--include=python3", "bookworm"])
            .arg(&tmp),
    );
    std::fs::rename(&tmp, &rootfs).expect("move the finished rootfs into place");
    rootfs
}

/// Writes an OCI layout at `dir` (tag `latest`, linux/amd64, built with umoci): the Debian +
/// python3 rootfs of [`python_rootfs`] as one layer and a small app layer on top whose
/// `/app/app.py` prints `{"ready": 3}`.
pub fn python_layout(cache: &Path, dir: &Path) {
    require_tool("umoci");
    let rootfs = python_rootfs(cache);
    let image = format!("{}:latest", dir.display());
    run_ok(Command::new("umoci").args(["init", "--layout"]).arg(dir));
    run_ok(Command::new("umoci").args(["new", "--image", &image]));
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(&rootfs)
            .arg("/"),
    );
    let app = dir.with_extension("app");
    std::fs::create_dir_all(&app).expect("create the app dir");
    std::fs::write(
        app.join("app.py"),
        "import json, sys\nprint(json.dumps({'ready': sys.version_info[0]}))\n",
    )
    .expect("write app.py");
    run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &image])
            .arg(&app)
            .arg("/app"),
    );
    run_ok(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ]));
}

/// Commands linked to `/bin/busybox` in [`busybox_image`].
pub const BUSYBOX_COMMANDS: &[&str] = &[
    "sh",
    "cat",
    "echo",
    "ls",
    "sleep",
    "wc",
    "md5sum",
    "sha256sum",
    "head",
    "true",
    "test",
    "dd",
    "touch",
];

/// [`busybox_image`] with other contents in `data/big.txt` (16 MB of [`noisy`] text from
/// `seed`), so its first layer, chain ID and zTOC differ from the plain image's.
pub fn busybox_variant(seed: u32) -> ImageSpec {
    let mut spec = busybox_image();
    for entry in &mut spec.layers[0].entries {
        if let EntrySpec::File(f) = entry {
            if f.path == "data/big.txt" {
                f.data = noisy(16_000_000, seed);
            }
        }
    }
    spec
}

/// A linux/amd64 image that containers can run (the host's static `/bin/busybox`, from
/// Debian's `busybox-static`), with two gzip layers:
///
/// 1. ~11.7 MB compressed, so it gets a zTOC: `bin/busybox`, a symlink per
///    [`BUSYBOX_COMMANDS`] entry, `data/big.txt` (16 MB of noisy text, seed 77) and
///    `etc/msg` (`from layer 1\n`);
/// 2. a few bytes: `etc/msg` (`from layer 2\n`) replacing layer 1's.
pub fn busybox_image() -> ImageSpec {
    require_tool("busybox");
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
    let mut base = vec![
        dir("bin/"),
        file("bin/busybox", busybox, 0o755),
        dir("data/"),
        file("data/big.txt", noisy(16_000_000, 77), 0o644),
        dir("etc/"),
        file("etc/msg", b"from layer 1\n".to_vec(), 0o644),
        dir("tmp/"),
    ];
    for cmd in BUSYBOX_COMMANDS {
        base.push(EntrySpec::Symlink {
            path: format!("bin/{cmd}"),
            target: "busybox".into(),
        });
    }
    ImageSpec {
        os: "linux".into(),
        arch: "amd64".into(),
        layers: vec![
            LayerSpec {
                entries: base,
                compression: Compression::Gzip,
            },
            LayerSpec {
                entries: vec![
                    dir("etc/"),
                    file("etc/msg", b"from layer 2\n".to_vec(), 0o644),
                ],
                compression: Compression::Gzip,
            },
        ],
    }
}

/// SIGKILLs the process in `child` (if any) and reaps it, leaving `None`: what a crash does
/// to a daemon, and the end of every test server.
pub fn kill_child(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
