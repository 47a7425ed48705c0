//! The FUSE keeper: the small process that runs the FUSE manager and holds a duplicate of
//! every lazy mount's `/dev/fuse` descriptor, so that no mount dies with the manager.
//!
//! The kernel ends a FUSE connection only when the last descriptor of it is closed. The
//! manager hands the keeper each new mount's descriptor; when the manager dies (crash,
//! `kill -9`, OOM) the keeper starts a new one at once and gives it every live descriptor.
//! The new manager rebuilds each layer from its zTOC (kept in the span cache directory),
//! serves the same connection (inode numbers come from the zTOC, file handles are stateless)
//! and asks the kernel to resend what the dead one had read but not answered. Readers wait
//! during the restart instead of failing.
//!
//! The keeper does no I/O for containers, parses nothing from the network, and asks the
//! kernel's OOM killer to spare it: it should outlive every manager. A live upgrade replaces
//! both: the keeper ends its manager, execs the executable now at its path with its
//! descriptors open, and the new keeper starts a new manager.

use crate::keeper_link::{Link, LinkMessage, LINK_FD_ENV};
use crate::manager::MountSpec;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Pid file of the keeper, under the snapshotter directory.
pub const KEEPER_PID_NAME: &str = "fuse-keeper.pid";
/// Lock held by the running keeper: one per snapshotter directory.
const LOCK_NAME: &str = "fuse-keeper.lock";
/// What an upgrading keeper hands the executable it becomes.
const UPGRADE_STATE_NAME: &str = "fuse-keeper.upgrade.json";
/// Set in the environment of a keeper started by an upgrade.
const UPGRADE_ENV: &str = "SOCI_FUSE_KEEPER_UPGRADE";
/// The descriptor number the manager finds its end of the link at.
const CHILD_LINK_FD: RawFd = 3;
/// Longest pause between restarts of a manager that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a manager asked to stop may take to unmount before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Set by SIGTERM and SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

/// Why the keeper could not run.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// A step failed.
    #[error("FUSE keeper: {what}: {source}")]
    Io {
        /// The step.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The link to the manager failed.
    #[error(transparent)]
    Link(#[from] crate::keeper_link::LinkError),
    /// The manager failed at its start with no mount to keep alive: nothing to do.
    #[error("the FUSE manager ended with {0} right after it started")]
    ManagerFailed(ExitStatus),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KeeperError {
    let what = what.into();
    move |source| KeeperError::Io { what, source }
}

/// How to start a manager.
#[derive(Debug, Clone)]
pub struct KeeperOptions {
    /// The executable (`soci-snapshotter-grpc`); its path is read again at each start, so a
    /// replaced binary is what an upgrade runs.
    pub exe: PathBuf,
    /// `--root` of the daemon.
    pub root: PathBuf,
    /// `--config`, when the daemon has one.
    pub config_path: Option<PathBuf>,
    /// The snapshotter directory (sockets, pid files, logs).
    pub dir: PathBuf,
}

/// A mount whose connection the keeper holds.
struct KeptMount {
    spec: MountSpec,
    device: OwnedFd,
}

/// What a keeper hands its upgraded self: descriptor numbers left open across exec.
#[derive(Serialize, Deserialize)]
struct UpgradeState {
    lock_fd: RawFd,
    mounts: Vec<(RawFd, MountSpec)>,
    /// A memfd holding the remembered credentials as JSON: they stay in memory across the
    /// exec, never in the state file.
    #[serde(default)]
    credentials_fd: Option<RawFd>,
}

/// What the keeper holds for its managers.
struct Held {
    mounts: Vec<KeptMount>,
    /// Credentials CRI pulls brought (see [`LinkMessage::Remember`]).
    credentials: registry::Keychain,
}

/// Runs the keeper until its manager stops on purpose (a `Shutdown`, SIGTERM) or, with no
/// mount to keep, fails right after starting. Returns at once when another keeper already
/// runs for this directory.
pub fn run(options: &KeeperOptions) -> Result<(), KeeperError> {
    std::fs::create_dir_all(&options.dir)
        .map_err(io_error(format!("creating {}", options.dir.display())))?;
    let (lock, mut held) = match std::env::var_os(UPGRADE_ENV) {
        Some(_) => {
            std::env::remove_var(UPGRADE_ENV);
            adopt_upgrade_state(&options.dir)?
        }
        None => match take_lock(&options.dir)? {
            Some(lock) => (
                lock,
                Held {
                    mounts: Vec::new(),
                    credentials: registry::Keychain::new(),
                },
            ),
            None => {
                tracing::info!(dir = %options.dir.display(), "a FUSE keeper already runs here");
                return Ok(());
            }
        },
    };
    std::fs::write(
        options.dir.join(KEEPER_PID_NAME),
        std::process::id().to_string(),
    )
    .map_err(io_error("writing the keeper pid file"))?;
    spare_from_oom_killer();
    handle_stop_signals()?;
    tracing::info!(
        pid = std::process::id(),
        mounts = held.mounts.len(),
        "FUSE keeper running"
    );
    let mut failures = 0u32;
    loop {
        let run = run_manager(options, &mut held)?;
        let kept = &mut held.mounts;
        if run.upgrade && !STOP.load(Ordering::SeqCst) {
            let error = exec_upgrade(options, &lock, kept, &held.credentials);
            tracing::error!("upgrading the FUSE keeper failed, restarting the manager: {error}");
        } else if STOP.load(Ordering::SeqCst) || run.status.success() {
            tracing::info!(status = %run.status, "FUSE manager stopped; keeper exiting");
            let _ = std::fs::remove_file(options.dir.join(KEEPER_PID_NAME));
            return Ok(());
        }
        prune_ended(kept);
        if run.ready {
            // It served, then died: readers are waiting, start the next one at once.
            failures = 0;
        } else if kept.is_empty() && !run.upgrade {
            let _ = std::fs::remove_file(options.dir.join(KEEPER_PID_NAME));
            return Err(KeeperError::ManagerFailed(run.status));
        } else {
            failures = failures.saturating_add(1);
        }
        if !run.upgrade {
            tracing::warn!(status = %run.status, mounts = kept.len(), "FUSE manager ended; starting a new one that serves the same mounts");
        }
        if failures > 0 {
            // A manager that fails before it is ready would fail again at once.
            let pause = Duration::from_millis(100u64 << failures.min(6)).min(MAX_BACKOFF);
            std::thread::sleep(pause);
        }
    }
}

/// How one manager's life ended.
struct ManagerRun {
    status: ExitStatus,
    /// It asked for an upgrade.
    upgrade: bool,
    /// It got as far as serving ([`LinkMessage::Ready`]).
    ready: bool,
}

/// Takes the directory's keeper lock; `None` when another keeper holds it.
fn take_lock(dir: &Path) -> Result<Option<OwnedFd>, KeeperError> {
    let path = dir.join(LOCK_NAME);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(format!("opening {}", path.display())))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        return Err(io_error(format!("locking {}", path.display()))(e));
    }
    Ok(Some(OwnedFd::from(file)))
}

/// Starts one manager, hands it every kept mount, and records what it hands back until it
/// exits.
fn run_manager(options: &KeeperOptions, held: &mut Held) -> Result<ManagerRun, KeeperError> {
    let (ours, theirs) = Link::pair()?;
    let mut child = start_manager(options, theirs)?;
    for entry in held.credentials.entries() {
        if let Err(e) = ours.send(&LinkMessage::Remember { entry }, None) {
            tracing::warn!("handing credentials to the new manager: {e}");
        }
    }
    for m in held.mounts.iter() {
        let message = LinkMessage::Kept {
            spec: m.spec.clone(),
        };
        if let Err(e) = ours.send(&message, Some(m.device.as_fd())) {
            tracing::warn!("handing a mount to the new manager: {e}");
        }
    }
    if let Err(e) = ours.send(&LinkMessage::End, None) {
        tracing::warn!("handing mounts to the new manager: {e}");
    }
    let (upgrade, ready) = follow(&ours, &mut child, held);
    let status = child.wait().map_err(io_error("waiting for the manager"))?;
    Ok(ManagerRun {
        status,
        upgrade,
        ready,
    })
}

/// Starts `soci-snapshotter-grpc fuse-server` with its end of the link as descriptor 3.
fn start_manager(options: &KeeperOptions, link: Link) -> Result<Child, KeeperError> {
    let mut cmd = Command::new(&options.exe);
    cmd.arg("--root").arg(&options.root);
    if let Some(c) = &options.config_path {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("fuse-server")
        .env(LINK_FD_ENV, CHILD_LINK_FD.to_string())
        .stdin(Stdio::null());
    let raw = link.as_fd().as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe. dup2 leaves the copy at 3 without
    // close-on-exec; when the link already is 3, its flag is cleared instead.
    unsafe {
        cmd.pre_exec(move || {
            let r = if raw == CHILD_LINK_FD {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, CHILD_LINK_FD)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(io_error(format!("starting {}", options.exe.display())))?;
    tracing::info!(pid = child.id(), "FUSE manager started");
    Ok(child)
}

/// Reads the manager's messages until it exits; returns whether it asked for an upgrade and
/// whether it got ready. Forwards a stop request (SIGTERM to the keeper) to it, and drops
/// descriptors of mounts that ended.
fn follow(link: &Link, child: &mut Child, held: &mut Held) -> (bool, bool) {
    let kept = &mut held.mounts;
    let (mut upgrade, mut ready) = (false, false);
    let mut stop_sent: Option<Instant> = None;
    let mut last_prune = Instant::now();
    loop {
        if STOP.load(Ordering::SeqCst) {
            match stop_sent {
                None => {
                    signal(child, libc::SIGTERM);
                    stop_sent = Some(Instant::now());
                }
                Some(at) if at.elapsed() > STOP_GRACE => signal(child, libc::SIGKILL),
                Some(_) => {}
            }
        }
        if last_prune.elapsed() >= Duration::from_secs(1) {
            prune_ended(kept);
            last_prune = Instant::now();
        }
        match link.readable_within(Duration::from_millis(200)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::warn!("{e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        }
        match link.recv() {
            Ok(None) => return (upgrade, ready),
            Ok(Some((LinkMessage::Ready, _))) => ready = true,
            Ok(Some((LinkMessage::Keep { spec }, Some(device)))) => {
                tracing::debug!(mountpoint = %spec.mountpoint.display(), "keeping a mount");
                kept.push(KeptMount { spec, device });
            }
            Ok(Some((LinkMessage::Release { mountpoint }, _))) => {
                tracing::debug!(mountpoint = %mountpoint.display(), "mount released");
                prune_ended(kept);
            }
            Ok(Some((LinkMessage::Remember { entry }, _))) => {
                tracing::debug!(registry = %entry.registry, repository = %entry.repository, "credentials remembered");
                held.credentials.remember(entry);
            }
            Ok(Some((LinkMessage::Upgrade, _))) => {
                tracing::info!("upgrade asked: replacing the manager and the keeper");
                upgrade = true;
                // The same path as a crash: the new manager resends what this one held.
                signal(child, libc::SIGKILL);
            }
            Ok(Some((message, _))) => tracing::warn!("unexpected message {message:?}"),
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill on our own child's pid (not yet reaped, so not reused).
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Drops the descriptors of connections the kernel ended (the layer was unmounted and its
/// last user left).
fn prune_ended(kept: &mut Vec<KeptMount>) {
    kept.retain(|m| {
        let live = lazyfs::fs::connection_live(m.device.as_fd());
        if !live {
            tracing::debug!(mountpoint = %m.spec.mountpoint.display(), "FUSE connection ended");
        }
        live
    });
}

/// Replaces this process by the executable now at `options.exe`, keeping the lock and every
/// kept descriptor open; returns only if that failed.
fn exec_upgrade(
    options: &KeeperOptions,
    lock: &OwnedFd,
    kept: &[KeptMount],
    credentials: &registry::Keychain,
) -> KeeperError {
    let credentials_memfd = match credentials_to_memfd(credentials) {
        Ok(fd) => fd,
        Err(e) => return io_error("keeping the credentials across the upgrade")(e),
    };
    let state = UpgradeState {
        lock_fd: lock.as_raw_fd(),
        mounts: kept
            .iter()
            .map(|m| (m.device.as_raw_fd(), m.spec.clone()))
            .collect(),
        credentials_fd: credentials_memfd.as_ref().map(|fd| fd.as_raw_fd()),
    };
    let path = options.dir.join(UPGRADE_STATE_NAME);
    let written = serde_json::to_vec(&state)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&path, json));
    if let Err(e) = written {
        return io_error(format!("writing {}", path.display()))(e);
    }
    let fds: Vec<RawFd> = std::iter::once(state.lock_fd)
        .chain(state.mounts.iter().map(|(fd, _)| *fd))
        .chain(state.credentials_fd)
        .collect();
    for fd in &fds {
        set_cloexec(*fd, false);
    }
    let mut cmd = Command::new(&options.exe);
    cmd.arg("--root").arg(&options.root);
    if let Some(c) = &options.config_path {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("fuse-manager").env(UPGRADE_ENV, "1");
    tracing::info!(exe = %options.exe.display(), mounts = kept.len(), "FUSE keeper upgrading");
    let error = cmd.exec();
    for fd in &fds {
        set_cloexec(*fd, true);
    }
    let _ = std::fs::remove_file(&path);
    io_error(format!("executing {}", options.exe.display()))(error)
}

fn set_cloexec(fd: RawFd, on: bool) {
    // SAFETY: fcntl flag changes on descriptors this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            let flags = if on {
                flags | libc::FD_CLOEXEC
            } else {
                flags & !libc::FD_CLOEXEC
            };
            libc::fcntl(fd, libc::F_SETFD, flags);
        }
    }
}

/// The remembered credentials as JSON in a new memfd (`None` when there are none).
fn credentials_to_memfd(credentials: &registry::Keychain) -> std::io::Result<Option<OwnedFd>> {
    if credentials.is_empty() {
        return Ok(None);
    }
    let json = serde_json::to_vec(&credentials.entries()).map_err(std::io::Error::other)?;
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"soci-keeper-credentials".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor memfd_create just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(&json)?;
    Ok(Some(OwnedFd::from(file)))
}

/// Reads the credentials an upgrading keeper left in the memfd `fd`.
fn credentials_from_memfd(fd: OwnedFd) -> registry::Keychain {
    let keychain = registry::Keychain::new();
    let mut file = std::fs::File::from(fd);
    let mut json = Vec::new();
    let read = file
        .seek(std::io::SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut json));
    match read.map_err(|e| e.to_string()).and_then(|_| {
        serde_json::from_slice::<Vec<registry::KeychainEntry>>(&json).map_err(|e| e.to_string())
    }) {
        Ok(entries) => entries.into_iter().for_each(|e| {
            keychain.remember(e);
        }),
        Err(e) => tracing::warn!("credentials of CRI pulls lost across the upgrade: {e}"),
    }
    keychain
}

/// Takes over the lock, mounts and credentials an upgrading keeper left open across exec.
fn adopt_upgrade_state(dir: &Path) -> Result<(OwnedFd, Held), KeeperError> {
    let path = dir.join(UPGRADE_STATE_NAME);
    let bytes = std::fs::read(&path).map_err(io_error(format!("reading {}", path.display())))?;
    let _ = std::fs::remove_file(&path);
    let state: UpgradeState = serde_json::from_slice(&bytes)
        .map_err(|e| io_error(format!("parsing {}", path.display()))(e.into()))?;
    let adopt = |fd: RawFd| {
        set_cloexec(fd, true);
        // SAFETY: the keeper we were exec'd from left exactly these descriptors open for us
        // and owns nothing else under these numbers.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let lock = adopt(state.lock_fd);
    let mounts = state
        .mounts
        .into_iter()
        .map(|(fd, spec)| KeptMount {
            spec,
            device: adopt(fd),
        })
        .collect();
    let credentials = match state.credentials_fd {
        Some(fd) => credentials_from_memfd(adopt(fd)),
        None => registry::Keychain::new(),
    };
    Ok((
        lock,
        Held {
            mounts,
            credentials,
        },
    ))
}

/// The keeper must outlive its managers: ask the OOM killer to pick anything else.
fn spare_from_oom_killer() {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        tracing::debug!("oom_score_adj not lowered: {e}");
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn handle_stop_signals() -> Result<(), KeeperError> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .map_err(|e| io_error(format!("handling {sig}"))(e.into()))?;
    }
    Ok(())
}
