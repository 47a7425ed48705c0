//! Test harness for soci-rs: starts real components for integration tests (Debian's
//! `docker-registry`, distribution 2.8, on loopback), builds OCI image layouts locally with
//! deterministic bytes, and pushes them with skopeo. Panics with clear messages: it is only
//! used by tests.

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Panics with an install hint when a program the tests need is missing.
pub fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()));
    assert!(found, "{name} not found: run scripts/install-deps.sh");
}

/// A `docker-registry` process on 127.0.0.1 with filesystem storage in its own temp dir.
pub struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    /// Starts a registry without authentication.
    pub fn start() -> Registry {
        Self::start_inner("", None)
    }

    /// Starts a registry that wants htpasswd (bcrypt) basic auth for `user`/`password`.
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::start_inner("", Some((user, password)))
    }

    /// Starts a registry without auth, with `extra_yaml` appended to its config (top-level
    /// keys, e.g. a `notifications:` section).
    pub fn start_with_config(extra_yaml: &str) -> Registry {
        Self::start_inner(extra_yaml, None)
    }

    fn start_inner(extra_yaml: &str, auth: Option<(&str, &str)>) -> Registry {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut auth_yaml = String::new();
        if let Some((user, password)) = auth {
            require_tool("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
            auth_yaml = format!(
                "auth:\n  htpasswd:\n    realm: soci-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let mut reg = Registry {
            child: None,
            dir,
            port: 0,
        };
        let mut last_log = String::new();
        // The free port we picked can be taken before the registry binds it: try a few.
        for _ in 0..5 {
            reg.port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: soci-test-secret\n{auth_yaml}{extra_yaml}\n",
                reg.storage_dir().display(),
                reg.port
            );
            std::fs::write(reg.dir.path().join("config.yml"), config).expect("write config");
            match reg.spawn() {
                Ok(()) => return reg,
                Err(log) => last_log = log,
            }
        }
        panic!("docker-registry did not come up; last log:\n{last_log}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts the process and waits (bounded) until `GET /v2/` answers.
    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("exited with {status}:\n{}", self.log_tail()));
                }
            }
            if let Some(code) = http_status(self.port, "/v2/") {
                if code == 200 || code == 401 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err(format!("no answer within 20 s:\n{}", self.log_tail()))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The filesystem storage root.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where the registry keeps a blob's bytes (to corrupt them in tests).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2.min(hex.len())])
            .join(hex)
            .join("data")
    }

    /// Stops the registry (kill and wait); the port is released, the storage kept.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn() {
            panic!("docker-registry did not restart:\n{log}");
        }
    }

    /// Whether the process is alive.
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

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// The status code of a plain HTTP/1.0 GET on loopback, if anything answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

/// A regular file in a test layer.
#[derive(Clone, Debug)]
pub struct FileSpec {
    /// Path inside the layer (no leading `/`).
    pub path: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// One tar entry of a test layer.
#[derive(Clone, Debug)]
pub enum EntrySpec {
    /// A regular file.
    File(FileSpec),
    /// A directory.
    Dir {
        /// Path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link.
    Symlink {
        /// Path.
        path: String,
        /// Link target.
        target: String,
    },
    /// A hard link to an earlier entry.
    Hardlink {
        /// Path.
        path: String,
        /// The earlier entry's path.
        target: String,
    },
}

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (level 6).
    Gzip,
    /// Plain tar.
    Uncompressed,
}

/// A test layer.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    /// Its entries, in tar order.
    pub entries: Vec<EntrySpec>,
    /// How the tar is compressed.
    pub compression: Compression,
}

/// A test image (one platform).
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// Layers, bottom first.
    pub layers: Vec<LayerSpec>,
    /// `os` of the config.
    pub os: String,
    /// `architecture` of the config.
    pub arch: String,
}

/// A layer as written.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    /// Digest of the blob.
    pub digest: String,
    /// Size of the blob.
    pub size: u64,
    /// Media type in the manifest.
    pub media_type: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
}

/// An image as written.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// Image manifest digest.
    pub manifest_digest: String,
    /// Image manifest size.
    pub manifest_size: u64,
    /// Config digest.
    pub config_digest: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerInfo>,
}

/// Compressible pseudo-random text (xorshift over a 38-character alphabet), deterministic.
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

/// Incompressible deterministic bytes (xorshift64*).
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

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(p.parent().expect("blob dir")).expect("create blobs dir");
    std::fs::write(p, bytes).expect("write blob");
    d
}

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
                    .expect("tar file");
            }
            EntrySpec::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(*mode);
                b.append_data(&mut h, path, &[][..]).expect("tar dir");
            }
            EntrySpec::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target).expect("tar symlink");
            }
            EntrySpec::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                h.set_mode(0o644);
                b.append_link(&mut h, path, target).expect("tar hardlink");
            }
        }
    }
    b.into_inner().expect("finish tar")
}

fn write_image(dir: &Path, spec: &ImageSpec) -> BuiltImage {
    let mut layers = Vec::new();
    for l in &spec.layers {
        let tar = tar_of(&l.entries);
        let diff_id = sha(&tar);
        let (bytes, media_type) = match l.compression {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                e.write_all(&tar).expect("gzip");
                (
                    e.finish().expect("gzip"),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compression::Uncompressed => (tar, "application/vnd.oci.image.layer.v1.tar"),
        };
        let digest = put_blob(dir, &bytes);
        layers.push(LayerInfo {
            digest,
            size: bytes.len() as u64,
            media_type: media_type.to_owned(),
            diff_id,
        });
    }
    let config = serde_json::to_vec(&json!({
        "architecture": spec.arch,
        "os": spec.os,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    }))
    .expect("config json");
    let config_digest = put_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    }))
    .expect("manifest json");
    let manifest_digest = put_blob(dir, &manifest);
    BuiltImage {
        manifest_digest,
        manifest_size: manifest.len() as u64,
        config_digest,
        layers,
    }
}

/// Writes an OCI image layout at `dir` holding `images` under `tag`: one image → `index.json`
/// names its manifest; several → `index.json` names a nested image index with each platform.
pub fn write_oci_layout(dir: &Path, tag: &str, images: &[ImageSpec]) -> Vec<BuiltImage> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("create layout");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    let built: Vec<BuiltImage> = images.iter().map(|s| write_image(dir, s)).collect();
    let ref_name = json!({"org.opencontainers.image.ref.name": tag});
    let top: Value = if built.len() == 1 {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": built[0].manifest_digest,
            "size": built[0].manifest_size,
            "annotations": ref_name,
        })
    } else {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": built.iter().zip(images).map(|(b, s)| json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": b.manifest_digest,
                "size": b.manifest_size,
                "platform": {"os": s.os, "architecture": s.arch},
            })).collect::<Vec<_>>(),
        }))
        .expect("index json");
        let d = put_blob(dir, &index);
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d,
            "size": index.len(),
            "annotations": ref_name,
        })
    };
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [top]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
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

/// linux/amd64: a ~16 MB gzip layer of tools (files, a directory, a symlink, a hard link), a
/// small config layer (a few KB), and a ~12 MB layer with one big data file (both big
/// layers are above the default 10 MiB minimum layer size).
pub fn sample_image() -> ImageSpec {
    let mut data = noisy(4_000_000, 41);
    data.extend(random_bytes(10_000_000, 42));
    ImageSpec {
        os: "linux".into(),
        arch: "amd64".into(),
        layers: vec![
            LayerSpec {
                compression: Compression::Gzip,
                entries: vec![
                    EntrySpec::Dir {
                        path: "usr/".into(),
                        mode: 0o755,
                    },
                    EntrySpec::Dir {
                        path: "usr/bin/".into(),
                        mode: 0o755,
                    },
                    file("usr/bin/tool", random_bytes(9_000_000, 7), 0o755),
                    file("usr/bin/small", noisy(5_000, 8), 0o755),
                    EntrySpec::Symlink {
                        path: "usr/bin/alias".into(),
                        target: "tool".into(),
                    },
                    EntrySpec::Hardlink {
                        path: "usr/bin/tool2".into(),
                        target: "usr/bin/tool".into(),
                    },
                    EntrySpec::Dir {
                        path: "usr/lib/".into(),
                        mode: 0o755,
                    },
                    file("usr/lib/libbig.so", random_bytes(7_000_000, 11), 0o644),
                    file("usr/lib/notes.txt", noisy(2_000_000, 12), 0o644),
                ],
            },
            LayerSpec {
                compression: Compression::Gzip,
                entries: vec![
                    EntrySpec::Dir {
                        path: "etc/".into(),
                        mode: 0o755,
                    },
                    file("etc/config", b"key=value\n".to_vec(), 0o644),
                    file("etc/motd", noisy(3_000, 13), 0o644),
                ],
            },
            LayerSpec {
                compression: Compression::Gzip,
                entries: vec![
                    EntrySpec::Dir {
                        path: "opt/".into(),
                        mode: 0o755,
                    },
                    file("opt/data.bin", data, 0o644),
                ],
            },
        ],
    }
}

/// Pushes `oci:LAYOUT[:TAG]` to `docker://DEST` with skopeo, keeping digests (every platform
/// of a multi-platform image). An empty tag uses the layout's only image.
pub fn skopeo_push(layout_dir: &Path, tag: &str, dest: &str, creds: Option<(&str, &str)>) {
    require_tool("skopeo");
    let src = if tag.is_empty() {
        format!("oci:{}", layout_dir.display())
    } else {
        format!("oci:{}:{tag}", layout_dir.display())
    };
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ]);
    if let Some((u, p)) = creds {
        cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
    }
    let out = cmd
        .arg(&src)
        .arg(format!("docker://{dest}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {src} docker://{dest} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The raw manifest bytes of `docker://REFERENCE`, or `None` if the registry does not have it.
pub fn skopeo_inspect_raw(reference: &str, creds: Option<(&str, &str)>) -> Option<Vec<u8>> {
    require_tool("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some((u, p)) = creds {
        cmd.arg("--creds").arg(format!("{u}:{p}"));
    }
    let out = cmd
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    if out.status.success() {
        return Some(out.stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("manifest unknown") || err.contains("not found"),
        "skopeo inspect {reference} failed:\n{err}"
    );
    None
}
