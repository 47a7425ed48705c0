//! The FUSE manager: a long-lived process that serves every lazily mounted layer, run by the
//! FUSE keeper ([`crate::fuse_keeper`]) the daemon starts. Keeping the mounts out of the gRPC
//! daemon lets the daemon stop, crash or be upgraded while containers keep reading; handing
//! each mount's `/dev/fuse` descriptor to the keeper lets this process crash or be upgraded
//! too: its successor resumes every mount. The daemon talks to it over a unix socket with
//! one JSON request and one JSON reply per connection.

use crate::config::Config;
use crate::error::ManagerRunError;
use crate::keeper_link::{Link, LinkMessage};
use crate::metadata::RemoteLayerInfo;
use lazyfs::serve::{
    resume_layer, serve_layer, BackgroundFetch, FuseOptions, LayerToServe, ServeError,
    ServeOptions, ServedLayer,
};
use lazyfs::{CacheBudget, CacheTtls, DemandActivity, SpanConfig};
use oci::reference::ImageRef;
use oci::soci_index::{PrefetchDescriptor, ZtocDescriptor};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Socket file name under the snapshotter directory.
pub const SOCKET_NAME: &str = "fuse-manager.sock";
/// Pid file name under the snapshotter directory.
pub const PID_NAME: &str = "fuse-manager.pid";
/// Log file name under the snapshotter directory.
pub const LOG_NAME: &str = "fuse-manager.log";
/// Largest request or reply line.
const MAX_MESSAGE: usize = 16 << 20;

/// A layer to mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountSpec {
    /// Where.
    pub mountpoint: PathBuf,
    /// What.
    pub layer: RemoteLayerInfo,
    /// Names the FUSE connection's passthrough state (its backing ID table); the manager
    /// sets it when it mounts, the keeper keeps it with the connection, and a manager that
    /// takes the connection over reads that state. `None` from the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

/// A request to the manager.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
// One request per mount or query, decoded from a line: the size of the value is of no matter.
#[allow(clippy::large_enum_variant)]
pub enum Request {
    /// Mount a layer (no-op when it is already served there).
    Mount(MountSpec),
    /// Unmount a layer (lazily when it is busy).
    Unmount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// The mountpoints served.
    List,
    /// Prometheus text of every served layer.
    Metrics,
    /// Liveness.
    Ping,
    /// Replace this manager and its keeper by the executable now at the keeper's path,
    /// keeping every mount (a live upgrade).
    Upgrade,
    /// Unmount everything and exit.
    Shutdown,
    /// Use these credentials for the repository's span and zTOC fetches (a CRI pull brought
    /// them); kept in memory and by the keeper, across crashes and upgrades of this process.
    Remember(registry::KeychainEntry),
}

/// The manager's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// Mounted (or was already).
    Mounted {
        /// It was served already.
        already: bool,
    },
    /// Done.
    Done,
    /// Served mountpoints.
    Mounts {
        /// Mountpoints.
        mountpoints: Vec<PathBuf>,
    },
    /// Metrics text.
    Metrics {
        /// Prometheus exposition text.
        text: String,
    },
    /// Alive.
    Pong {
        /// Its pid.
        pid: u32,
        /// Pid of the keeper holding its mounts (none: a crash of this process ends them).
        #[serde(default)]
        keeper: Option<u32>,
        /// Which executable it runs ([`exe_identity`]).
        #[serde(default)]
        exe: Option<String>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Why talking to the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No manager listens on the socket.
    #[error("FUSE manager at {socket} is not reachable: {source}")]
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke or the reply made no sense.
    #[error("FUSE manager at {socket}: {message}")]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// It could not be started.
    #[error("starting the FUSE manager ({exe}): {message}; see {log}")]
    Start {
        /// The executable.
        exe: PathBuf,
        /// Its log.
        log: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The manager answered with an error.
    #[error("{0}")]
    Failed(String),
}

/// Longest wait for an answer (a mount fetches a zTOC; callers bound it further).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a liveness answer: a live manager answers at once.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one request to the manager whose socket is `socket`; a manager that does not answer
/// in time (a hung one) is an error, not a hang of the daemon.
pub async fn call(socket: &Path, request: &Request) -> Result<Reply, ManagerError> {
    let limit = match request {
        Request::Ping => PING_TIMEOUT,
        _ => CALL_TIMEOUT,
    };
    match tokio::time::timeout(limit, call_once(socket, request)).await {
        Ok(r) => r,
        Err(_) => Err(ManagerError::Protocol {
            socket: socket.to_owned(),
            message: format!("no answer within {limit:?}"),
        }),
    }
}

async fn call_once(socket: &Path, request: &Request) -> Result<Reply, ManagerError> {
    let protocol = |message: String| ManagerError::Protocol {
        socket: socket.to_owned(),
        message,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ManagerError::Unreachable {
            socket: socket.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| protocol(e.to_string()))?;
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .map_err(|e| protocol(format!("sending: {e}")))?;
    let mut reply = String::new();
    BufReader::new(read)
        .take(MAX_MESSAGE as u64)
        .read_line(&mut reply)
        .await
        .map_err(|e| protocol(format!("reading the reply: {e}")))?;
    if reply.is_empty() {
        return Err(protocol("closed the connection without a reply".into()));
    }
    match serde_json::from_str(&reply).map_err(|e| protocol(format!("bad reply: {e}")))? {
        Reply::Error { message } => Err(ManagerError::Failed(message)),
        r => Ok(r),
    }
}

/// Starts a FUSE keeper (this executable with `fuse-manager`), detached in its own session
/// so it outlives the daemon, and waits until its manager answers. When another keeper
/// already runs for `dir` (its manager is restarting), waits for that one's manager instead.
pub async fn spawn(
    exe: &Path,
    root: &Path,
    config_path: Option<&Path>,
    dir: &Path,
) -> Result<u32, ManagerError> {
    let log = dir.join(LOG_NAME);
    let start_error = |message: String| ManagerError::Start {
        exe: exe.to_owned(),
        log: log.clone(),
        message,
    };
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| start_error(format!("opening the log: {e}")))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| start_error(format!("opening the log: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root").arg(root);
    if let Some(c) = config_path {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("fuse-manager")
        .stdin(std::process::Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    if let Ok(level) = std::env::var("RUST_LOG") {
        cmd.env("RUST_LOG", level);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| start_error(format!("spawning: {e}")))?;
    let socket = dir.join(SOCKET_NAME);
    let mut other_keeper = false;
    for _ in 0..300 {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => other_keeper = true,
            Ok(Some(status)) => return Err(start_error(format!("it exited with {status}"))),
            _ => {}
        }
        // Only our keeper's manager counts (an old manager may still be exiting), unless
        // another keeper runs: then its manager, whichever pid it has.
        if let Ok(Reply::Pong { pid, keeper, .. }) = call(&socket, &Request::Ping).await {
            if other_keeper || keeper == Some(child.id()) {
                // The keeper is reaped by init once we exit; a thread waits for it meanwhile
                // so it never lingers as a zombie of the daemon.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return Ok(pid);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(start_error("it did not answer within 15 s".into()))
}

/// Which executable this process runs: device and inode of `/proc/self/exe`. A package
/// upgrade puts a new file (a new inode) at the path, so a daemon whose identity differs
/// from its manager's knows the manager runs an old binary.
pub fn exe_identity() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self/exe").ok()?;
    Some(format!("{}:{}", m.dev(), m.ino()))
}

/// The manager's state.
struct Manager {
    config: Config,
    cache_dir: PathBuf,
    /// Backing ID tables of passthrough mounts (outside the span cache: see
    /// `lazyfs::passthrough`).
    passthrough_dir: PathBuf,
    client: registry::Client,
    /// Credentials CRI pulls brought, which `client` uses.
    keychain: registry::Keychain,
    budget: Arc<CacheBudget>,
    /// On-demand reads of every layer served: background fetches wait for quiet.
    activity: Arc<DemandActivity>,
    /// The prefetch requests of every layer served, in one rank order.
    prefetch_queue: Arc<lazyfs::prefetch_queue::PrefetchQueue>,
    runtime: tokio::runtime::Handle,
    served: Mutex<HashMap<PathBuf, ServedLayer>>,
    /// The link to the keeper that started this process, if one did.
    keeper: Option<Link>,
}

/// A name for a new FUSE connection, unique on this machine (a kernel UUID, or the pid and
/// the time when that cannot be read).
fn new_connection_name() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/random/uuid") {
        Ok(uuid) => uuid.trim().replace('-', ""),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{}-{nanos}", std::process::id())
        }
    }
}

/// Removes the backing ID tables in `dir` of connections not in `live` (best effort).
fn prune_passthrough_tables(dir: &Path, live: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !live.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// `options` with the passthrough state of connection `connection` (`None`: a connection
/// kept by a manager that did not name it, whose table is named after its mountpoint).
fn with_table(options: &ServeOptions, connection: Option<&str>) -> ServeOptions {
    let mut options = options.clone();
    if let Some(pt) = options.fuse.passthrough.as_mut() {
        pt.table = connection.map(str::to_owned);
    }
    options
}

/// Directory under the root holding the backing ID tables of passthrough mounts.
const PASSTHROUGH_DIR: &str = "passthrough";

/// Runs the manager until `Shutdown`, SIGTERM or SIGINT; `dir` holds its socket, pid file
/// and log, `root` the span cache.
pub fn run(root: &Path, dir: &Path, config: Config) -> Result<(), ManagerRunError> {
    std::fs::create_dir_all(dir)
        .map_err(ManagerRunError::io(format!("creating {}", dir.display())))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(ManagerRunError::io("starting the tokio runtime"))?;
    let budget = CacheBudget::new(
        (config.cache.max_size_mb > 0)
            .then_some(config.cache.max_size_mb.saturating_mul(1_000_000)),
    );
    let keychain = registry::Keychain::new();
    let manager = Arc::new(Manager {
        cache_dir: config.cache_dir(root),
        passthrough_dir: root.join(PASSTHROUGH_DIR),
        client: registry_client(&config, Some(keychain.clone())),
        keychain,
        config,
        budget,
        activity: Arc::new(DemandActivity::default()),
        prefetch_queue: Arc::default(),
        runtime: runtime.handle().clone(),
        served: Mutex::new(HashMap::new()),
        keeper: Link::inherited(),
    });
    match &manager.keeper {
        // Every mount a dead predecessor served is served again before the socket answers,
        // so the daemon finds them all.
        Some(link) => manager.resume_kept(link),
        None => {
            tracing::warn!(
                "not started by a FUSE keeper: a crash of this process ends every lazy mount"
            );
            prune_passthrough_tables(&manager.passthrough_dir, &HashSet::new());
        }
    }
    let socket = dir.join(SOCKET_NAME);
    runtime.block_on(accept_until_stopped(&manager, dir, &socket))?;
    tracing::info!("FUSE manager stopping: unmounting every layer");
    let served: Vec<(PathBuf, ServedLayer)> = manager
        .served
        .lock()
        .map(|mut s| s.drain().collect())
        .unwrap_or_default();
    for (_, s) in served {
        s.unmount();
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(dir.join(PID_NAME));
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Listens on `socket` and serves connections until `Shutdown`, SIGTERM or SIGINT.
async fn accept_until_stopped(
    manager: &Arc<Manager>,
    dir: &Path,
    socket: &Path,
) -> Result<(), ManagerRunError> {
    // A stale socket from a manager that died; a live one would have answered the daemon.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(ManagerRunError::io(format!(
        "listening on {}",
        socket.display()
    )))?;
    std::fs::write(dir.join(PID_NAME), std::process::id().to_string())
        .map_err(ManagerRunError::io("writing the pid file"))?;
    tracing::info!(socket = %socket.display(), "FUSE manager ready");
    manager.tell_keeper(&LinkMessage::Ready);
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(ManagerRunError::io("handling SIGTERM"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(ManagerRunError::io("handling SIGINT"))?;
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = stop_rx.recv() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let manager = manager.clone();
                let stop_tx = stop_tx.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(&manager, stream, &stop_tx).await {
                        tracing::warn!("FUSE manager connection: {e}");
                    }
                });
            }
        }
    }
    Ok(())
}

/// The registry client the daemon and the manager fetch with, from the config; `keychain`
/// holds the credentials of CRI pulls. A Docker config that cannot be read is a warning:
/// registries are then accessed anonymously unless the keychain has credentials.
pub fn registry_client(config: &Config, keychain: Option<registry::Keychain>) -> registry::Client {
    let docker_config = match registry::credentials::DockerConfig::load_default() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("Docker config not usable, registries are accessed anonymously: {e}");
            None
        }
    };
    registry::Client::new(registry::ClientConfig {
        hosts_dir: Some(config.registry.config_path.clone()),
        docker_config,
        keychain,
        retry: config.http.retry_policy(),
        connect_timeout: Duration::from_millis(config.http.dial_timeout_msec.max(1)),
        request_timeout: Duration::from_millis(config.http.request_timeout_msec.max(1)),
        read_timeout: Duration::from_millis(config.http.response_header_timeout_msec.max(1)),
        ..Default::default()
    })
}

async fn serve_connection(
    manager: &Arc<Manager>,
    stream: UnixStream,
    stop: &tokio::sync::mpsc::Sender<()>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read)
        .take(MAX_MESSAGE as u64)
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Err(e) => Reply::Error {
            message: format!("bad request: {e}"),
        },
        Ok(Request::Shutdown) => {
            let _ = stop.try_send(());
            Reply::Done
        }
        Ok(request) => {
            let manager = manager.clone();
            // Mounting blocks (FUSE handshake) and must not stall the runtime.
            match tokio::task::spawn_blocking(move || manager.handle(request)).await {
                Ok(r) => r,
                Err(e) => Reply::Error {
                    message: format!("request handler failed: {e}"),
                },
            }
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|e| {
        format!("{{\"result\":\"error\",\"message\":\"encoding the reply: {e}\"}}").into_bytes()
    });
    out.push(b'\n');
    write.write_all(&out).await
}

impl Manager {
    fn handle(&self, request: Request) -> Reply {
        match request {
            Request::Mount(spec) => match self.mount(&spec) {
                Ok(already) => Reply::Mounted { already },
                Err(message) => {
                    tracing::warn!(mountpoint = %spec.mountpoint.display(), "mount failed: {message}");
                    Reply::Error { message }
                }
            },
            Request::Unmount { mountpoint } => {
                let served = self
                    .served
                    .lock()
                    .ok()
                    .and_then(|mut s| s.remove(&mountpoint));
                match served {
                    Some(s) => {
                        s.unmount();
                        self.tell_keeper(&LinkMessage::Release {
                            mountpoint: mountpoint.clone(),
                        });
                    }
                    None if lazyfs::overlay::is_mounted(&mountpoint) => {
                        // Left by an earlier manager that died: the mount is dead anyway.
                        let _ = lazyfs::overlay::unmount(&mountpoint, true);
                    }
                    None => {}
                }
                Reply::Done
            }
            Request::Remember(entry) => {
                if self.keychain.remember(entry.clone()) {
                    tracing::info!(registry = %entry.registry, repository = %entry.repository, "using the credentials of a CRI pull");
                    self.tell_keeper(&LinkMessage::Remember { entry });
                }
                Reply::Done
            }
            Request::List => Reply::Mounts {
                mountpoints: self
                    .served
                    .lock()
                    .map(|s| s.keys().cloned().collect())
                    .unwrap_or_default(),
            },
            Request::Metrics => {
                let layers: Vec<(String, lazyfs::MetricsSnapshot)> = self
                    .served
                    .lock()
                    .map(|s| {
                        s.values()
                            .map(|v| (v.layer().digest().to_string(), v.metrics()))
                            .collect()
                    })
                    .unwrap_or_default();
                Reply::Metrics {
                    text: lazyfs::prometheus_text(&layers),
                }
            }
            Request::Ping => Reply::Pong {
                pid: std::process::id(),
                keeper: self
                    .keeper
                    .as_ref()
                    .map(|_| std::os::unix::process::parent_id()),
                exe: exe_identity(),
            },
            Request::Upgrade => match &self.keeper {
                Some(link) => match link.send(&LinkMessage::Upgrade, None) {
                    Ok(()) => Reply::Done,
                    Err(e) => Reply::Error {
                        message: e.to_string(),
                    },
                },
                None => Reply::Error {
                    message: "this FUSE manager has no keeper; it cannot be upgraded live".into(),
                },
            },
            Request::Shutdown => Reply::Done,
        }
    }

    /// Mounts `spec`; `Ok(true)` when it was served already.
    fn mount(&self, spec: &MountSpec) -> Result<bool, String> {
        let mountpoint = &spec.mountpoint;
        if let Ok(served) = self.served.lock() {
            if served.contains_key(mountpoint) && lazyfs::overlay::is_mounted(mountpoint) {
                return Ok(true);
            }
        }
        let info = &spec.layer;
        if lazyfs::overlay::is_mounted(mountpoint) {
            // A dead mount left by a manager that exited: it answers ENOTCONN to everyone.
            let _ = lazyfs::overlay::unmount(mountpoint, true);
        }
        let connection = new_connection_name();
        let served = self.serve_with(info, |what, options| {
            serve_layer(what, mountpoint, &with_table(options, Some(&connection)))
        })?;
        tracing::info!(
            layer = %info.layer_digest,
            image = %info.image_ref,
            mountpoint = %mountpoint.display(),
            "layer mounted lazily"
        );
        if let (Some(link), Some(device)) = (&self.keeper, served.device()) {
            let keep = LinkMessage::Keep {
                spec: MountSpec {
                    connection: Some(connection),
                    ..spec.clone()
                },
            };
            if let Err(e) = link.send(&keep, Some(device)) {
                tracing::warn!(mountpoint = %mountpoint.display(), "the keeper does not hold this mount; a crash of this process ends it: {e}");
            }
        }
        self.insert(mountpoint, served)?;
        Ok(false)
    }

    /// Records a served layer (replacing one whose mount was gone).
    fn insert(&self, mountpoint: &Path, served: ServedLayer) -> Result<(), String> {
        match self.served.lock() {
            Ok(mut s) => {
                s.insert(mountpoint.to_owned(), served);
                Ok(())
            }
            Err(_) => Err("internal state poisoned".into()),
        }
    }

    /// Builds what serving the recorded layer `info` takes (descriptors, repository, options)
    /// and hands it to `serve` (a new mount or a resumed one).
    fn serve_with(
        &self,
        info: &RemoteLayerInfo,
        serve: impl FnOnce(LayerToServe<'_>, &ServeOptions) -> Result<ServedLayer, ServeError>,
    ) -> Result<ServedLayer, String> {
        let (layer, ztoc, prefetch) = descriptors(info)?;
        let repo = self.repository(info)?;
        let what = LayerToServe {
            repo: &repo,
            local: &lazyfs::layer::LocalBlobs::default(),
            layer: &layer,
            ztoc: &ztoc,
            prefetch: prefetch.as_ref(),
        };
        serve(what, &self.serve_options()).map_err(|e| registry::error_chain(&e))
    }

    /// The repository a recorded layer comes from.
    fn repository(&self, info: &RemoteLayerInfo) -> Result<registry::Repository, String> {
        let reference = ImageRef::parse(&info.image_ref).map_err(|e| e.to_string())?;
        let ImageRef::Registry {
            registry,
            repository,
            ..
        } = &reference
        else {
            return Err(format!("{} is not a registry reference", info.image_ref));
        };
        self.client
            .repository(registry, repository)
            .map_err(|e| e.to_string())
    }

    /// Takes over the live mounts the keeper holds (a predecessor served them and died),
    /// all at once: each blocks on its own zTOC. A mount that cannot be resumed now (its
    /// zTOC is neither on disk nor reachable) is retried in the background; its readers wait.
    fn resume_kept(self: &Arc<Self>, link: &Link) {
        let mut kept = Vec::new();
        loop {
            match link.recv() {
                Ok(Some((LinkMessage::Kept { spec }, Some(device)))) => kept.push((spec, device)),
                Ok(Some((LinkMessage::Remember { entry }, _))) => {
                    self.keychain.remember(entry);
                }
                Ok(Some((LinkMessage::End, _))) | Ok(None) => break,
                Ok(Some((message, _))) => tracing::warn!("unexpected {message:?} from the keeper"),
                Err(e) => {
                    tracing::error!("receiving mounts from the keeper: {e}");
                    break;
                }
            }
        }
        // No connection but those kept lives now: the tables of every other one are left
        // over from mounts that ended.
        let live: HashSet<String> = kept
            .iter()
            .filter_map(|(s, _)| s.connection.clone())
            .collect();
        prune_passthrough_tables(&self.passthrough_dir, &live);
        if kept.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let count = kept.len();
        std::thread::scope(|scope| {
            for (spec, device) in kept {
                scope.spawn(move || self.resume_or_retry(spec, device));
            }
        });
        tracing::info!(
            mounts = count,
            ms = started.elapsed().as_millis() as u64,
            "live mounts taken over from the previous FUSE manager"
        );
    }

    fn resume_or_retry(self: &Arc<Self>, spec: MountSpec, device: std::os::fd::OwnedFd) {
        let Err(message) = self.resume(&spec, &device) else {
            return;
        };
        tracing::error!(mountpoint = %spec.mountpoint.display(), "resuming a live mount failed, retrying every 2 s (its readers wait): {message}");
        let manager = self.clone();
        std::thread::spawn(move || {
            use std::os::fd::AsFd;
            while lazyfs::fs::connection_live(device.as_fd()) {
                std::thread::sleep(Duration::from_secs(2));
                match manager.resume(&spec, &device) {
                    Ok(()) => return,
                    Err(m) => {
                        tracing::warn!(mountpoint = %spec.mountpoint.display(), "resuming: {m}")
                    }
                }
            }
        });
    }

    /// Serves the live connection `device` of `spec` and asks the kernel to resend what the
    /// dead manager had read and not answered.
    fn resume(&self, spec: &MountSpec, device: &std::os::fd::OwnedFd) -> Result<(), String> {
        let info = &spec.layer;
        let device = device.try_clone().map_err(|e| e.to_string())?;
        let served = self.serve_with(info, |what, options| {
            let options = with_table(options, spec.connection.as_deref());
            resume_layer(what, &spec.mountpoint, device, &options)
        })?;
        if let Err(e) = served.resend_interrupted() {
            tracing::warn!(mountpoint = %spec.mountpoint.display(), "the kernel did not resend interrupted requests (Linux 6.9+ does); readers of the crash moment may wait forever: {e}");
        }
        tracing::info!(layer = %info.layer_digest, mountpoint = %spec.mountpoint.display(), "live mount resumed");
        self.insert(&spec.mountpoint, served)
    }

    /// Sends `message` to the keeper, if there is one; a failure is logged.
    fn tell_keeper(&self, message: &LinkMessage) {
        if let Some(link) = &self.keeper {
            if let Err(e) = link.send(message, None) {
                tracing::warn!("{e}");
            }
        }
    }

    /// How every layer is served, from the config: one span cache, one disk budget and one
    /// record of on-demand reads (background fetches wait for quiet in all layers).
    fn serve_options(&self) -> ServeOptions {
        let fuse = &self.config.fuse;
        let background = &self.config.background_fetch;
        ServeOptions {
            cache_root: self.cache_dir.clone(),
            spans: SpanConfig {
                fetch_concurrency: self.config.max_concurrency.max(1),
                activity: self.activity.clone(),
                prefetch_queue: self.prefetch_queue.clone(),
                background_silence: Duration::from_millis(background.silence_period_msec),
                ..SpanConfig::default()
            },
            budget: self.budget.clone(),
            fuse: FuseOptions {
                threads: fuse.threads.max(1),
                ttls: CacheTtls {
                    attr: Duration::from_secs(fuse.attr_timeout),
                    entry: Duration::from_secs(fuse.entry_timeout),
                    negative: Duration::from_secs(fuse.negative_timeout),
                },
                read_log: None,
                // Always set: a manager with passthrough off that takes a mount over must
                // still answer the inodes its predecessor passed through.
                passthrough: Some(lazyfs::passthrough::PassthroughConfig {
                    ids_dir: self.passthrough_dir.clone(),
                    enabled: fuse.passthrough,
                    table: None,
                }),
            },
            background: if background.disable {
                BackgroundFetch::Off
            } else {
                BackgroundFetch::at_mb_per_sec(background.rate_mb_per_sec, None)
            },
            runtime: self.runtime.clone(),
        }
    }
}

/// The layer, zTOC and prefetch descriptors recorded for a lazy layer.
pub fn descriptors(
    info: &RemoteLayerInfo,
) -> Result<(oci::Descriptor, ZtocDescriptor, Option<PrefetchDescriptor>), String> {
    let digest = |s: &str| oci::digest::parse(s).map_err(|e| e.to_string());
    let layer_digest = digest(&info.layer_digest)?;
    let layer = oci::Descriptor::new(
        oci::MediaType::from(info.layer_media_type.as_str()),
        info.layer_size,
        layer_digest.clone(),
    );
    let ztoc = ZtocDescriptor {
        digest: digest(&info.ztoc_digest)?,
        size: info.ztoc_size,
        layer_digest: layer_digest.clone(),
        layer_media_type: info.layer_media_type.clone(),
        span_size: None,
        lean: match &info.lean {
            Some((d, size)) => Some(oci::soci_index::LeanDescriptor {
                digest: digest(d)?,
                size: *size,
            }),
            None => None,
        },
    };
    let prefetch = match &info.prefetch {
        Some((d, size)) => Some(PrefetchDescriptor {
            digest: digest(d)?,
            size: *size,
            layer_digest,
        }),
        None => None,
    };
    Ok((layer, ztoc, prefetch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tables_of_live_connections_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["live1", "dead", "live2"] {
            std::fs::write(dir.path().join(name), "5 1\n").unwrap();
        }
        let live: HashSet<String> = ["live1", "live2", "gone"].map(String::from).into();
        prune_passthrough_tables(dir.path(), &live);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["live1", "live2"]);
        prune_passthrough_tables(&dir.path().join("missing"), &live);
    }
}
