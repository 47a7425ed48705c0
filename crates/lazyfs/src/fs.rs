//! The read-only FUSE filesystem of one layer.
//!
//! Metadata comes from the in-memory [`Tree`]; file data from the [`SpanManager`]. Several
//! FUSE worker threads serve requests, each blocking only on its own read. Layer contents never
//! change, so the kernel is told to keep attributes, entries and page cache for long.

use crate::metrics::LayerMetrics;
use crate::passthrough::{OpenMode, Passthrough, PassthroughConfig, PASSTHROUGH_FH};
use crate::readlog::{LayerReads, ReadLog};
use crate::spans::SpanManager;
use crate::tree::{Node, NodeKind, Tree, ROOT_INO};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request, SessionACL,
};
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long the kernel may cache entries and attributes by default: a layer never changes.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Block size reported in stat and statfs.
const BLOCK_SIZE: u32 = 4096;
/// Largest read the kernel is asked to send.
const MAX_READAHEAD: u32 = 1 << 20;

thread_local! {
    /// Each FUSE worker's read buffer: allocated once, reused for every read.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Kernel readahead of a layer mount once all its data is local: big sequential reads arrive
/// as 1 MiB requests (the FUSE maximum) several at a time instead of 128 KiB ones.
const READAHEAD_KB: u32 = 4096;

/// Kernel readahead of a layer mount while some of its data is remote (the kernel's own
/// default). Every byte read ahead is fetched, and a page fault in a mapped binary or
/// library reads the whole readahead window around it: with 4 MiB, python3's start read
/// all 6.8 MB of its binary and moved 10.7 MB for its image (1 MiB spans); with 128 KiB,
/// 4.6 MB of it and 10.8 MB, and 4.3 MB instead of 5.5 MB with checkpoints around its reads
/// (`bench/start.sh`, 2026-12-07). The mount goes to [`READAHEAD_KB`] once the layer is
/// complete ([`set_complete_readahead`]).
const COLD_READAHEAD_KB: u32 = 128;

/// Options for mounting a layer.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// FUSE worker threads.
    pub threads: usize,
    /// Name shown as the mount source (`mount`, `/proc/mounts`).
    pub fs_name: String,
    /// Kernel cache lifetimes.
    pub ttls: CacheTtls,
    /// FUSE passthrough of files whose data is local (see [`crate::passthrough`]); off by
    /// itself where the kernel lacks it. `None`: every read is served by this process.
    pub passthrough: Option<PassthroughConfig>,
}

/// How long the kernel may cache what the filesystem answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTtls {
    /// File attributes.
    pub attr: Duration,
    /// Directory entries (name to inode).
    pub entry: Duration,
    /// "No such file" answers.
    pub negative: Duration,
}

impl Default for CacheTtls {
    fn default() -> Self {
        CacheTtls {
            attr: DEFAULT_TTL,
            entry: DEFAULT_TTL,
            negative: DEFAULT_TTL,
        }
    }
}

/// A layer's filesystem, ready to be mounted.
pub struct LayerFs {
    tree: Arc<Tree>,
    spans: Option<SpanManager>,
    runtime: tokio::runtime::Handle,
    metrics: Arc<LayerMetrics>,
    reads: Option<LayerReads>,
    ttls: CacheTtls,
    passthrough: Option<Arc<Passthrough>>,
}

impl LayerFs {
    /// A filesystem over `tree` whose file data `spans` serves (`None` for a layer whose files
    /// are all empty). Span fetches run on `runtime`.
    pub fn new(
        tree: Arc<Tree>,
        spans: Option<SpanManager>,
        runtime: tokio::runtime::Handle,
        metrics: Arc<LayerMetrics>,
    ) -> Self {
        LayerFs {
            tree,
            spans,
            runtime,
            metrics,
            reads: None,
            ttls: CacheTtls::default(),
            passthrough: None,
        }
    }

    /// Sets up passthrough for a mount at `mountpoint` when `config` asks for it (never while
    /// reads are recorded: the log must see every read). `fresh` is false for a connection
    /// taken over from a dead server.
    fn set_up_passthrough(&mut self, mountpoint: &Path, config: &MountConfig, fresh: bool) {
        let (Some(spans), Some(pt), None) = (&self.spans, &config.passthrough, &self.reads) else {
            return;
        };
        if fresh && !pt.enabled {
            return;
        }
        match Passthrough::new(spans.clone(), pt, mountpoint, fresh, self.runtime.clone()) {
            Ok(pt) => self.passthrough = Some(pt),
            Err(e) => {
                tracing::warn!(layer = %spans.layer(), "FUSE passthrough off for this layer: {e}")
            }
        }
    }

    /// Records the first read of each file in `log` (for a learned prefetch list).
    pub fn record_reads(mut self, log: &Arc<ReadLog>) -> Self {
        self.reads = Some(log.layer(self.tree.clone()));
        self
    }

    /// Mounts the filesystem read-only at `mountpoint`; it stays mounted until the returned
    /// session is dropped or unmounted. The returned descriptor is a duplicate of the mount's
    /// `/dev/fuse` connection: whoever holds it keeps the connection alive after this process
    /// dies, and a new server can take the connection over with [`LayerFs::resume`].
    pub fn mount(
        mut self,
        mountpoint: &Path,
        config: &MountConfig,
    ) -> std::io::Result<MountedSession> {
        self.ttls = config.ttls;
        self.set_up_passthrough(mountpoint, config, true);
        let complete = self.spans.as_ref().is_none_or(SpanManager::is_complete);
        let mut options = session_config(config);
        options.mount_options = vec![
            MountOption::RO,
            MountOption::FSName(config.fs_name.clone()),
            MountOption::Subtype("soci".into()),
            MountOption::DefaultPermissions,
            MountOption::Dev,
            MountOption::Suid,
            MountOption::Exec,
        ];
        let session = fuser::Session::new(self, mountpoint, &options)?;
        let device = session.as_fd().try_clone_to_owned()?;
        let session = session.spawn()?;
        apply_readahead(
            mountpoint,
            if complete {
                READAHEAD_KB
            } else {
                COLD_READAHEAD_KB
            },
        );
        Ok(MountedSession { session, device })
    }

    /// Serves a connection another process mounted and initialized (`device` is its
    /// `/dev/fuse` descriptor): the kernel keeps the mount, its inode numbers and open files,
    /// so the tree must be the one that process served (it is built from the same zTOC).
    /// Dropping the session never unmounts.
    pub fn resume(
        mut self,
        device: OwnedFd,
        mountpoint: &Path,
        config: &MountConfig,
    ) -> std::io::Result<MountedSession> {
        self.ttls = config.ttls;
        self.set_up_passthrough(mountpoint, config, false);
        let options = session_config(config);
        let acl = options.acl;
        let kept = device.try_clone()?;
        let session = fuser::Session::from_initialized_fd(self, device, acl, options).spawn()?;
        Ok(MountedSession {
            session,
            device: kept,
        })
    }

    fn node(&self, ino: INodeNo) -> Result<&Node, Errno> {
        self.metrics.record_fuse_op();
        self.tree.get(ino.0).ok_or(Errno::ENOENT)
    }
}

/// A mounted layer: its FUSE session and a duplicate of its `/dev/fuse` descriptor.
pub struct MountedSession {
    /// The session; dropping it unmounts a new mount (never a resumed one).
    pub session: fuser::BackgroundSession,
    /// The connection's device descriptor (the same open file the session reads).
    pub device: OwnedFd,
}

/// Session settings shared by a new mount and a resumed one.
fn session_config(config: &MountConfig) -> Config {
    let mut options = Config::default();
    // Containers run as any user; the kernel still checks modes (default_permissions).
    options.acl = SessionACL::All;
    options.n_threads = Some(config.threads.max(1));
    // Every worker reads the one device descriptor, never a clone: the kernel ends the
    // requests a clone has read when the clone is closed (its server died), but keeps those
    // read through a descriptor still open elsewhere, and resends them on request
    // ([`resend_interrupted`]). That is what lets a restarted server lose no request.
    options.clone_fd = false;
    options
}

/// FUSE_NOTIFY_RESEND (Linux 6.9): the kernel queues again every request a server read and
/// did not answer, with bit 63 set in their unique ID (fuser echoes it in the reply).
const FUSE_NOTIFY_RESEND: i32 = 7;

/// Asks the kernel to send again the requests of `device`'s connection that a server read but
/// never answered (it died): a server that took the connection over calls this once it
/// serves. Fails with `EINVAL` on kernels before 6.9, where such requests stay unanswered
/// until the reader gives up.
pub fn resend_interrupted(device: BorrowedFd<'_>) -> std::io::Result<()> {
    // struct fuse_out_header { len: u32, error: i32 (the notify code), unique: u64 (0) }
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&16u32.to_ne_bytes());
    header[4..8].copy_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    // SAFETY: writes 16 initialized bytes from a live buffer to a descriptor we borrow.
    let n = unsafe { libc::write(device.as_raw_fd(), header.as_ptr().cast(), header.len()) };
    match n {
        16 => Ok(()),
        n if n < 0 => Err(std::io::Error::last_os_error()),
        n => Err(std::io::Error::other(format!(
            "short notify write ({n} bytes)"
        ))),
    }
}

/// Whether the FUSE connection of `device` is still up: the kernel reports POLLERR on the
/// device once the connection ended (unmounted and its last user gone, or aborted).
pub fn connection_live(device: BorrowedFd<'_>) -> bool {
    let mut fds = [libc::pollfd {
        fd: device.as_raw_fd(),
        events: 0,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, no wait.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    r == 0 || fds[0].revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0
}

/// Raises the readahead of the layer mounted at `mountpoint` once all its data is local, so
/// sequential reads go in large requests (best effort: logged when it cannot be set).
pub fn set_complete_readahead(mountpoint: &Path) {
    apply_readahead(mountpoint, READAHEAD_KB);
}

/// [`set_readahead`], best effort: a mount keeps the kernel's readahead when it fails.
fn apply_readahead(mountpoint: &Path, kb: u32) {
    if let Err(e) = set_readahead(mountpoint, kb) {
        tracing::debug!(mountpoint = %mountpoint.display(), "could not set readahead to {kb} KiB: {e}");
    }
}

/// Sets the readahead of the mount's backing device info (`/sys/class/bdi/MAJ:MIN`); the
/// kernel otherwise caps a FUSE mount at 128 KiB.
fn set_readahead(mountpoint: &Path, kb: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(mountpoint)?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    std::fs::write(
        format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"),
        kb.to_string(),
    )
}

fn kind_of(node: &Node) -> FileType {
    match node.kind {
        NodeKind::Dir => FileType::Directory,
        NodeKind::Regular => FileType::RegularFile,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Char => FileType::CharDevice,
        NodeKind::Block => FileType::BlockDevice,
        NodeKind::Fifo => FileType::NamedPipe,
    }
}

fn attr(node: &Node) -> FileAttr {
    FileAttr {
        ino: INodeNo(node.ino),
        size: node.size,
        blocks: node.size.div_ceil(512),
        atime: node.mtime,
        mtime: node.mtime,
        ctime: node.mtime,
        crtime: node.mtime,
        kind: kind_of(node),
        perm: node.perm,
        nlink: node.nlink,
        uid: node.uid,
        gid: node.gid,
        rdev: node.rdev,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// Answers an xattr request: the size when `size` is 0, ERANGE when the buffer is too small.
fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for LayerFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Ask for large reads; fall back to whatever the kernel allows.
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        if let Some(pt) = &self.passthrough {
            // Depth 1: backing files must sit on a plain filesystem, and overlayfs (the
            // container's root) may still stack on this mount.
            let agreed = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if agreed {
                static LOGGED: std::sync::Once = std::sync::Once::new();
                LOGGED.call_once(|| {
                    tracing::info!("FUSE passthrough on: files whose data is local are read by the kernel directly");
                });
            } else {
                pt.disable("the kernel does not offer FUSE passthrough (Linux 6.9+)");
                self.passthrough = None;
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.metrics.record_fuse_op();
        match self.tree.lookup(parent.0, name) {
            Some(node) => reply.entry(&self.ttls.entry, &attr(node), Generation(0)),
            // An entry with inode 0 is a negative entry the kernel caches for the TTL: the
            // layer never changes, and programs (Python's import system, overlayfs over
            // several layers) look up many names that do not exist.
            None => match self.tree.get(ROOT_INO) {
                Some(root) => {
                    let mut negative = attr(root);
                    negative.ino = INodeNo(0);
                    reply.entry(&self.ttls.negative, &negative, Generation(0))
                }
                None => reply.error(Errno::ENOENT),
            },
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Ok(node) => reply.attr(&self.ttls.attr, &attr(node)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Ok(node) if node.kind == NodeKind::Symlink => reply.data(node.link_target.as_bytes()),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let node = match self.node(ino) {
            Ok(_) if flags.acc_mode() != OpenAccMode::O_RDONLY => return reply.error(Errno::EROFS),
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let mode = match &self.passthrough {
            Some(pt) if node.kind == NodeKind::Regular => pt.open(node, &reply),
            _ => OpenMode::Served,
        };
        match mode {
            OpenMode::Passthrough(id) => {
                // SAFETY: `id` was registered on this connection and is never closed.
                let backing = unsafe { reply.wrap_backing(id) };
                reply.opened_passthrough(FileHandle(PASSTHROUGH_FH), FopenFlags::empty(), &backing);
                // Stays registered (see `Passthrough::open`).
                let _ = backing.into_raw();
            }
            // Contents never change: let the kernel keep its page cache across opens.
            OpenMode::Served => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(pt) = &self.passthrough {
            pt.release(ino.0, fh.0);
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let node = match self.node(ino) {
            Ok(n) if n.kind == NodeKind::Regular => n,
            Ok(_) => return reply.error(Errno::EISDIR),
            Err(e) => return reply.error(e),
        };
        let end = offset.saturating_add(size as u64).min(node.size);
        if let Some(reads) = &self.reads {
            reads.record(node.ino, offset, end.saturating_sub(offset));
        }
        if offset >= end {
            return reply.data(&[]);
        }
        let Some(spans) = &self.spans else {
            return reply.error(Errno::EIO);
        };
        let range = node.data_offset + offset..node.data_offset + end;
        let file = node.data_offset..node.data_offset + node.size;
        let mut reply = Some(reply);
        let result = READ_BUFFER.with_borrow_mut(|buf| {
            spans.with_bytes(&self.runtime, range, file, buf, |bytes| {
                if let Some(r) = reply.take() {
                    r.data(bytes);
                }
            })
        });
        if let Err(e) = result {
            tracing::error!(layer = %spans.layer(), ino = ino.0, offset, size, "read failed, answering EIO: {e}");
            if let Some(r) = reply.take() {
                r.error(Errno::EIO);
            }
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Ok(n) if n.kind == NodeKind::Dir => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = match self.node(ino) {
            Ok(n) if n.kind == NodeKind::Dir => n,
            Ok(_) => return reply.error(Errno::ENOTDIR),
            Err(e) => return reply.error(e),
        };
        // Offsets: 1 is ".", 2 is "..", 3 + i is child i; each entry carries the offset of
        // the entry after it.
        let parent = self.tree.get(dir.parent).unwrap_or(dir);
        let mut entries: Vec<(u64, FileType, &OsStr)> = vec![
            (dir.ino, FileType::Directory, OsStr::new(".")),
            (parent.ino, FileType::Directory, OsStr::new("..")),
        ];
        for (name, child) in &dir.children {
            let kind = self.tree.get(*child).map_or(FileType::RegularFile, kind_of);
            entries.push((*child, kind, name.as_os_str()));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    /// Nothing is buffered: a read-only filesystem has nothing to write back on close.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// No ioctls (overlayfs asks for inode flags on copy-up): "inappropriate ioctl", the
    /// answer of filesystems without inode flags.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.metrics.record_fuse_op();
        let bytes: u64 = self
            .tree
            .nodes()
            .filter(|n| n.kind == NodeKind::Regular)
            .map(|n| n.size)
            .sum();
        reply.statfs(
            bytes.div_ceil(BLOCK_SIZE as u64),
            0,
            0,
            self.tree.len() as u64,
            0,
            BLOCK_SIZE,
            255,
            BLOCK_SIZE,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.node(ino) {
            Ok(node) => match node.xattrs.get(name) {
                Some(value) => reply_xattr(reply, size, value),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.node(ino) {
            Ok(node) => {
                let mut list = Vec::new();
                for name in node.xattrs.keys() {
                    list.extend_from_slice(name.as_bytes());
                    list.push(0);
                }
                reply_xattr(reply, size, &list)
            }
            Err(e) => reply.error(e),
        }
    }
}

// The tree's root must be the inode the kernel asks for first.
const _: () = assert!(ROOT_INO == INodeNo::ROOT.0);
