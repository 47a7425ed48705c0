//! Test harness: our daemon (`soci-snapshotter-grpc`) under a temp root, wired into a real
//! containerd as the proxy snapshotter `soci`, and the `soci` CLI.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use testutil::containerd_daemon::{Containerd, ContainerdOptions};

/// The `soci` CLI built next to this test (by `cargo test --workspace`).
pub fn soci_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let soci = profile_dir.join("soci");
    assert!(
        soci.exists(),
        "{} not found: build it first (cargo build -p soci-cli with the same profile), or run \
         the workspace tests (cargo test --workspace)",
        soci.display()
    );
    soci
}

/// Runs `soci --root ROOT ARGS…`.
pub fn soci(root: &Path, args: &[&str]) -> Output {
    Command::new(soci_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run soci")
}

/// Panics with the output unless it succeeded; returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `soci-snapshotter-grpc`.
pub struct Daemon {
    child: Option<Child>,
    /// Data root.
    pub root: PathBuf,
    /// gRPC socket.
    pub socket: PathBuf,
    /// Config file.
    pub config: PathBuf,
    log: PathBuf,
    exe: PathBuf,
}

impl Daemon {
    /// Starts the daemon under `dir` with `config_toml` as its config.
    pub fn start(dir: &Path, config_toml: &str) -> Daemon {
        Self::start_with_exe(
            dir,
            config_toml,
            Path::new(env!("CARGO_BIN_EXE_soci-snapshotter-grpc")),
        )
    }

    /// Starts the daemon from the executable at `exe` (a copy, for upgrade tests).
    pub fn start_with_exe(dir: &Path, config_toml: &str, exe: &Path) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml).unwrap();
        let mut d = Daemon {
            child: None,
            root: dir.join("root"),
            socket: dir.join("soci.sock"),
            config,
            log: dir.join("daemon.log"),
            exe: exe.to_owned(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(&self.exe);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--address")
            .arg(&self.socket)
            .arg("--config")
            .arg(&self.config)
            .arg("--log-level")
            .arg("info,snapshotter=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // A test that copies the binary (for a live upgrade) may be writing another copy
        // while this one forks: the child then briefly holds that file open for writing,
        // and exec of it fails with ETXTBSY until the child has exec'd. Bounded retries.
        let mut tries = 0;
        let child = loop {
            match command.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.expect("spawn soci-snapshotter-grpc"),
            }
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(self.socket.exists()
            && std::os::unix::net::UnixStream::connect(&self.socket).is_ok())
        {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("daemon exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not listen within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The FUSE manager's log so far.
    pub fn manager_log(&self) -> String {
        std::fs::read_to_string(self.root.join("snapshotter/fuse-manager.log")).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM (the FUSE manager keeps running).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        testutil::kill_child(&mut self.child);
    }

    /// Starts the daemon again with the same root, socket and config.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Pid of the FUSE manager, if its pid file exists.
    pub fn manager_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.root.join("snapshotter/fuse-manager.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Pid of the FUSE keeper, if its pid file exists.
    pub fn keeper_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.root.join("snapshotter/fuse-keeper.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// FUSE mounts under the data root.
    pub fn fuse_mounts(&self) -> Vec<PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter(|l| l.contains(" - fuse"))
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&self.root))
            .collect()
    }

    /// containerd started with this daemon as its `soci` proxy snapshotter.
    pub fn containerd(&self) -> Containerd {
        Containerd::start(&ContainerdOptions {
            proxy_snapshotter: Some(("soci".into(), self.socket.clone())),
            ..Default::default()
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        let _ = Command::new(env!("CARGO_BIN_EXE_soci-snapshotter-grpc"))
            .arg("--root")
            .arg(&self.root)
            .arg("shutdown")
            .output();
        // The keeper first: it would start a new manager for the one killed next.
        for pid in [self.keeper_pid(), self.manager_pid()]
            .into_iter()
            .flatten()
        {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        for m in testutil::containerd_daemon::mounts_under(&self.root)
            .into_iter()
            .rev()
        {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// Pushes the busybox test image to `reg` as `repo:latest`; returns the reference.
pub fn push_busybox(reg: &testutil::Registry, dir: &Path, repo: &str) -> String {
    let layout = dir.join(format!("{repo}-layout"));
    testutil::write_oci_layout(&layout, "latest", &[testutil::busybox_image()]);
    let image = format!("{}/{repo}:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &image, None);
    image
}

/// A gRPC client of the daemon's snapshots service (what containerd's proxy plugin uses).
pub async fn snapshots_client(
    socket: &Path,
) -> containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient<
    tonic::transport::Channel,
> {
    let channel = testutil::cri::unix_channel(socket).await;
    containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient::new(channel)
}

/// The body of `GET http://addr/path` (HTTP/1.0, loopback).
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The sum of a Prometheus counter over all its series.
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Bytes of the regular files under `dir` (0 when it is missing).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A free loopback TCP address.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The platform manifest digest inside the image index `reference` points to (skipping
/// SOCI index entries), or the reference's own digest when it is a manifest.
pub fn platform_manifest_digest(reference: &str) -> String {
    let raw = testutil::skopeo_inspect_raw(reference, None).expect("skopeo inspect --raw");
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    match v["manifests"].as_array() {
        Some(ms) => ms
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64" && m.get("artifactType").is_none())
            .and_then(|m| m["digest"].as_str())
            .expect("an amd64 image manifest in the index")
            .to_owned(),
        None => testutil::sha(&raw),
    }
}

/// The digest of the SOCI index a converted (v2) image `reference` binds.
pub fn bound_index(reference: &str) -> String {
    let raw = testutil::skopeo_inspect_raw(reference, None).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/vnd.amazon.soci.index.v2+json")
        .and_then(|m| m["digest"].as_str())
        .expect("a SOCI index entry")
        .to_owned()
}

/// Flips a byte in the zTOC and the lean zTOC of the (one-zTOC) index converted image
/// `reference` binds, in registry `reg`'s storage: no lazy mount of its layer can start.
pub fn damage_ztocs(reg: &testutil::Registry, reference: &str) {
    let index_digest = bound_index(reference);
    let repo = reference.rsplit_once(':').unwrap().0;
    let index_raw = testutil::skopeo_inspect_raw(&format!("{repo}@{index_digest}"), None).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&index_raw).unwrap();
    let damaged: Vec<String> = index["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"] != "application/vnd.amazon.soci.prefetch.v1+json")
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(damaged.len(), 2, "a zTOC and its lean zTOC: {index}");
    for blob in damaged {
        let path = reg.blob_data_path(&blob);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
}

/// Waits (up to 10 s) until process `pid` is gone or a zombie.
pub fn wait_for_exit(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the parenthesized command name.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if stat.is_empty() || state == Some("Z") {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kill -9 pid`, then waits until it is gone.
pub fn kill9(pid: u32) {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    wait_for_exit(pid);
}

/// Waits (bounded) until the manager's pid file names a live process other than `old`.
pub fn wait_new_manager(daemon: &Daemon, old: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = daemon.manager_pid() {
            if pid != old && Path::new(&format!("/proc/{pid}")).exists() {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no new FUSE manager\n{}",
            daemon.manager_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The md5 of `data` as `md5sum` prints it (hex), to compare with what a container computes.
pub fn md5_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run md5sum");
    child
        .stdin
        .take()
        .expect("md5sum's stdin")
        .write_all(data)
        .expect("feed md5sum");
    let out = child.wait_with_output().expect("md5sum's output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The md5 of the busybox test image's `/data/big.txt` (`testutil::busybox_image`).
pub fn busybox_big_md5() -> String {
    md5_hex(&testutil::noisy(16_000_000, 77))
}
