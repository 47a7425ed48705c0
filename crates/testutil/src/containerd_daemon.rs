//! A real containerd 1.6 (Debian's package) for integration tests: its own root, state,
//! sockets and config under a temp dir, optionally with a proxy snapshotter plugin, driven
//! with `ctr`.
//!
//! The CRI plugin is disabled unless asked for (it wants CNI and would log errors on every
//! start). On stop and on drop the daemon is killed, the runc shims it started are killed
//! (they outlive containerd by design) and every mount under its directories is detached.

use crate::require_tool;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long containerd gets to answer `ctr version` after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of containerd's log quoted in panic messages.
const LOG_TAIL_LINES: usize = 60;

/// What to put in the containerd config.
#[derive(Clone, Debug, Default)]
pub struct ContainerdOptions {
    /// A proxy snapshotter plugin: (name, unix socket path). It is registered as
    /// `[proxy_plugins.<name>] type = "snapshot"`.
    pub proxy_snapshotter: Option<(String, PathBuf)>,
    /// Enable the CRI plugin with this snapshotter and `disable_snapshot_annotations = false`
    /// (the image labels remote snapshotters need).
    pub cri_snapshotter: Option<String>,
    /// Extra TOML appended to the config (tables only: top-level keys must come first).
    pub extra_toml: String,
}

/// A `containerd` process with its own root, state and socket in a temp dir it owns.
pub struct Containerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
}

impl Containerd {
    /// Starts containerd with `opts` and waits until `ctr version` answers. Panics with the
    /// log's tail if it does not come up.
    pub fn start(opts: &ContainerdOptions) -> Containerd {
        require_tool("containerd");
        require_tool("ctr");
        require_tool("runc");
        let dir = tempfile::Builder::new()
            .prefix("soci-containerd-")
            .tempdir()
            .expect("create containerd's temp dir");
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&root).expect("create containerd's root");
        std::fs::create_dir_all(&state).expect("create containerd's state dir");
        let address = dir.path().join("containerd.sock");
        let mut toml = String::from("version = 2\n");
        if opts.cri_snapshotter.is_none() {
            toml.push_str("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n");
        }
        toml.push_str(&format!(
            "root = {}\nstate = {}\n\n[grpc]\n  address = {}\n\n[ttrpc]\n  address = {}\n\n\
             [debug]\n  level = \"debug\"\n\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}\n",
            toml_str(&root),
            toml_str(&state),
            toml_str(&address),
            toml_str(&dir.path().join("containerd.sock.ttrpc")),
            toml_str(&dir.path().join("opt")),
        ));
        if let Some((name, socket)) = &opts.proxy_snapshotter {
            toml.push_str(&format!(
                "\n[proxy_plugins]\n  [proxy_plugins.{name}]\n    type = \"snapshot\"\n    \
                 address = {}\n",
                toml_str(socket)
            ));
        }
        if let Some(snapshotter) = &opts.cri_snapshotter {
            toml.push_str(&format!(
                "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \
                 \"{snapshotter}\"\n  disable_snapshot_annotations = false\n"
            ));
        }
        toml.push_str(&opts.extra_toml);
        let config = dir.path().join("config.toml");
        std::fs::write(&config, toml).expect("write containerd's config");
        let log = dir.path().join("containerd.log");
        let mut ctd = Containerd {
            child: None,
            dir,
            config,
            log,
        };
        ctd.spawn();
        ctd
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open containerd's log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "containerd exited with {status} while starting\nlog tail:\n{}",
                    self.log_tail()
                );
            }
            if self.address().exists() {
                let out = self.ctr(&["version"]);
                if out.status.success() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd did not answer `ctr version` within {READY_TIMEOUT:?}\nlog tail:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gRPC socket (`ctr -a`, `soci --address`).
    pub fn address(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// containerd's root directory (content store, snapshotters' state).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A `ctr -a <socket>` command to add arguments to.
    pub fn ctr_command(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.address());
        cmd
    }

    /// Runs `ctr -a <socket> ARGS…` and returns its output (whatever the exit status).
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// Runs `ctr ARGS…`, panics (with containerd's log tail) unless it succeeds, returns
    /// stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}{}\ncontainerd log tail:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr [-n NAMESPACE] run --rm --snapshotter SNAPSHOTTER IMAGE NAME CMD…` (the default
    /// namespace when `namespace` is `None`): runs a container to completion, panics unless it
    /// succeeds, returns its stdout.
    pub fn run_ok(
        &self,
        namespace: Option<&str>,
        snapshotter: &str,
        image: &str,
        name: &str,
        cmd: &[&str],
    ) -> String {
        let mut args = Vec::new();
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        args.extend(["run", "--rm", "--snapshotter", snapshotter, image, name]);
        args.extend_from_slice(cmd);
        self.ctr_ok(&args)
    }

    /// containerd's whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of containerd's log.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Kills containerd (SIGKILL) and waits for it; shims, containers and mounts stay, as
    /// they do when containerd crashes.
    pub fn stop(&mut self) {
        crate::kill_child(&mut self.child);
    }

    /// Starts containerd again with the same config, root and state (stops it first).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Whether the containerd process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Mount points under this containerd's directories (from `/proc/self/mountinfo`).
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(self.dir.path())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        kill_shims(&self.address());
        for m in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// Kills the `containerd-shim-runc-v2` processes (and their containers) that were started
/// by the containerd listening on `address`.
fn kill_shims(address: &Path) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let needle = address.to_string_lossy().into_owned();
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_our_shim = args.first().is_some_and(|a| a.contains("containerd-shim"))
            && args.iter().any(|a| a == &needle);
        if is_our_shim {
            // The shim's children (the container's processes) go with its process group.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Mount points at or below `dir`, in mount order (none when the mount table cannot be
/// read). The mount table is read by the same code the snapshotter uses.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    lazyfs::overlay::mounts_under(dir).unwrap_or_default()
}

/// A TOML basic string holding a path.
fn toml_str(p: &Path) -> String {
    let s = p.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
