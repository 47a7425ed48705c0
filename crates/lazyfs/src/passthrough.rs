//! FUSE passthrough (Linux 6.9+) for files whose data is local: an open is answered with a
//! backing file, and the kernel reads it directly, so reads never cross into this process.
//!
//! The kernel reads a backing file from offset 0 to its end, while the span cache holds
//! spans of the layer's tar stream, so a file needs its own copy: its *backing file*,
//! `<span cache>/files/<inode>`, written from verified spans once they are all local. The
//! open that finds a file's spans local but no backing file is served as usual and queues the
//! copy; later opens pass through. Files below [`PASSTHROUGH_MIN_BYTES`] are never passed
//! through: the kernel reads them in one request and keeps their page cache anyway.
//!
//! The kernel keeps one I/O mode per inode: while a file is open the ordinary (cached) way, a
//! passthrough open of it fails with EIO, and once an inode is passed through every open must
//! use the same backing file. So opens are counted per inode, and an inode switches to
//! passthrough only while none is open the ordinary way. Backing IDs are never closed (the
//! kernel drops them with the connection), and each is written to a small table kept per
//! connection ([`PassthroughConfig::table`]), outside the span cache (the kernel keeps a registered backing file open even
//! if the cache is deleted): a server that takes the connection over after a crash (it
//! cannot know which files the dead one had open) reuses those IDs and switches no other
//! inode.

use crate::metrics::LayerMetrics;
use crate::spans::SpanManager;
use crate::tree::Node;
use fuser::ReplyOpen;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

/// Files smaller than this are served by this process: one FUSE request (128 KiB, the
/// kernel's default largest read) brings a file this small in whole, and its page cache is
/// kept across opens, so a backing file would save nothing and cost a file on disk.
pub const PASSTHROUGH_MIN_BYTES: u64 = 128 << 10;

/// File handle of a passthrough open (ordinary opens use 0): `release` tells them apart
/// without any state, so a server that took the connection over reads them the same way.
pub const PASSTHROUGH_FH: u64 = 1;

/// Bytes copied per read when a backing file is written.
const COPY_CHUNK: u64 = 1 << 20;

/// A copy waits at most this long for on-demand fetches to pause (a start-up that is still
/// fetching has the disk and the cores first).
const COPY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Directory of backing files inside a layer's span cache.
const FILES_DIR: &str = "files";

/// Passthrough settings of a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassthroughConfig {
    /// Where the backing ID tables live: outside the span cache, and kept while mounts live.
    pub ids_dir: PathBuf,
    /// Whether files may be passed through. Off, a server taking a connection over still
    /// answers the inodes its predecessor passed through with their IDs (the kernel fails
    /// any other answer while they are open), and switches no other inode.
    pub enabled: bool,
    /// Name of this connection's backing ID table, unique per FUSE connection: a server
    /// taking the connection over must read the table of *that* connection (two connections
    /// may share a mountpoint, one of them lazily detached). `None`: named after the
    /// mountpoint, enough where no other process takes connections over (`soci mount`).
    pub table: Option<String>,
}

impl PassthroughConfig {
    /// The table name for a mount at `mountpoint`: [`PassthroughConfig::table`] when it is a
    /// plain name (letters, digits, `-`, `_`; at most 64), else one made from the mountpoint.
    pub fn table_for(&self, mountpoint: &Path) -> String {
        let plain = |t: &&String| {
            (1..=64).contains(&t.len())
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        match self.table.as_ref().filter(plain) {
            Some(t) => t.clone(),
            None => mountpoint_key(mountpoint),
        }
    }
}

/// How an open of a regular file is answered.
pub enum OpenMode {
    /// With this backing ID (`FOPEN_PASSTHROUGH`).
    Passthrough(u32),
    /// By this process, through its span cache.
    Served,
}

/// I/O mode bookkeeping of one inode.
#[derive(Default)]
struct InodeIo {
    /// Opens answered the ordinary way and not yet released.
    served_opens: u32,
    /// The backing ID every open of this inode uses, once it is passed through.
    backing: Option<u32>,
}

struct State {
    inodes: HashMap<u64, InodeIo>,
    /// The backing ID table of this mount, appended to as inodes switch.
    ids: Option<File>,
}

/// A backing file to write: inode, data range in the uncompressed layer, size.
struct CopyJob {
    ino: u64,
    data: std::ops::Range<u64>,
}

/// Passthrough state of one mounted layer.
pub struct Passthrough {
    spans: SpanManager,
    metrics: Arc<LayerMetrics>,
    files: PathBuf,
    ids_path: PathBuf,
    state: Mutex<State>,
    /// Cleared when the kernel refuses a backing file (no passthrough on this connection).
    enabled: AtomicBool,
    /// False for a taken-over connection: inodes not passed through before stay as they are.
    may_switch: bool,
    /// Inodes whose backing file is queued or being written.
    queued: Mutex<HashSet<u64>>,
    copies: Mutex<Option<mpsc::Sender<CopyJob>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Passthrough {
    /// Passthrough state for the layer `spans` serves at `mountpoint`, as `config` says.
    /// `fresh` is true for a new mount (its backing ID table starts empty) and false for a
    /// connection taken over from a dead server (the table it left is read). Backing files
    /// are copied on a thread that fetches on `runtime` should a span have been evicted.
    pub fn new(
        spans: SpanManager,
        config: &PassthroughConfig,
        mountpoint: &Path,
        fresh: bool,
        runtime: tokio::runtime::Handle,
    ) -> std::io::Result<Arc<Self>> {
        let files = spans.cache_dir().join(FILES_DIR);
        std::fs::create_dir_all(&files)?;
        std::fs::create_dir_all(&config.ids_dir)?;
        let ids_path = config.ids_dir.join(config.table_for(mountpoint));
        let mut inodes = HashMap::new();
        if !fresh {
            for (ino, id) in read_ids(&ids_path) {
                inodes.entry(ino).or_insert_with(InodeIo::default).backing = Some(id);
            }
        }
        let ids = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&ids_path)?;
        if fresh {
            ids.set_len(0)?;
        }
        let found = remove_dead_copies(&files);
        spans.budget().add(found);
        let (tx, rx) = mpsc::channel();
        let this = Arc::new(Passthrough {
            metrics: spans.metrics().clone(),
            spans,
            files,
            ids_path,
            state: Mutex::new(State {
                inodes,
                ids: Some(ids),
            }),
            enabled: AtomicBool::new(true),
            may_switch: fresh,
            queued: Mutex::new(HashSet::new()),
            copies: Mutex::new(Some(tx)),
        });
        let worker = Arc::downgrade(&this);
        std::thread::Builder::new()
            .name("soci-backing".into())
            .spawn(move || copy_worker(worker, rx, runtime))?;
        Ok(this)
    }

    /// Turns passthrough off for this mount (the kernel did not agree to it).
    pub fn disable(&self, why: &str) {
        if self.enabled.swap(false, Ordering::SeqCst) {
            tracing::warn!(layer = %self.spans.layer(), "FUSE passthrough off for this layer: {why}");
        }
    }

    /// Decides how the open of regular file `node` is answered; registers its backing file
    /// with the kernel through `reply` when the inode switches to passthrough now.
    pub fn open(&self, node: &Node, reply: &ReplyOpen) -> OpenMode {
        if node.size < PASSTHROUGH_MIN_BYTES {
            // Never switched, so never tracked.
            return OpenMode::Served;
        }
        let mut state = lock(&self.state);
        let io = state.inodes.entry(node.ino).or_default();
        if let Some(id) = io.backing {
            self.metrics.record_passthrough_open();
            return OpenMode::Passthrough(id);
        }
        let eligible = self.may_switch && self.enabled.load(Ordering::SeqCst);
        let switch_now = eligible && io.served_opens == 0 && state.ids.is_some();
        if let Some(file) = switch_now.then(|| self.backing_file(node)).flatten() {
            match reply.open_backing(&file) {
                Ok(backing) => {
                    // Never closed: an ID closed while the kernel holds it for an open file
                    // could be handed out again for another file.
                    let id = backing.into_raw();
                    if self.note_id(&mut state, node.ino, id) {
                        state.inodes.entry(node.ino).or_default().backing = Some(id);
                        self.metrics.record_passthrough_open();
                        return OpenMode::Passthrough(id);
                    }
                }
                Err(e) => self.disable(&format!("the kernel refused a backing file: {e}")),
            }
        }
        state.inodes.entry(node.ino).or_default().served_opens += 1;
        drop(state);
        if eligible {
            self.queue_copy(node);
        }
        OpenMode::Served
    }

    /// Appends `ino id` to the mount's backing ID table before the inode switches: a server
    /// taking the connection over must know every passed-through inode. When the table
    /// cannot be written, no inode switches any more (false; the ID is left unused).
    fn note_id(&self, state: &mut State, ino: u64, id: u32) -> bool {
        let Some(table) = state.ids.as_mut() else {
            return false;
        };
        match writeln!(table, "{ino} {id}") {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(table = %self.ids_path.display(), "backing ID table not written, no more passthrough: {e}");
                state.ids = None;
                false
            }
        }
    }

    /// Notes the release of an open of `ino` answered with file handle `fh`.
    pub fn release(&self, ino: u64, fh: u64) {
        if fh == PASSTHROUGH_FH {
            return;
        }
        let mut state = lock(&self.state);
        if let Some(io) = state.inodes.get_mut(&ino) {
            io.served_opens = io.served_opens.saturating_sub(1);
        }
    }

    fn file_path(&self, ino: u64) -> PathBuf {
        self.files.join(ino.to_string())
    }

    /// The backing file of `node`, when one of the right size exists.
    fn backing_file(&self, node: &Node) -> Option<File> {
        let path = self.file_path(node.ino);
        let file = File::open(&path).ok()?;
        if file.metadata().ok()?.len() == node.size {
            return Some(file);
        }
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Queues the copy of `node`'s data into a backing file, if there is none, all of the
    /// data is local, the disk budget allows it, and no copy is queued yet.
    fn queue_copy(&self, node: &Node) {
        let data = node.data_offset..node.data_offset + node.size;
        // In-memory checks first: during a cold start most opens stop at the span states,
        // without a filesystem call.
        if !self.enabled.load(Ordering::SeqCst)
            || self.spans.budget().is_full_for(node.size)
            || !self.spans.is_range_cached(data.clone())
            || self.backing_file(node).is_some()
            || !lock(&self.queued).insert(node.ino)
        {
            return;
        }
        let sent = lock(&self.copies).as_ref().is_some_and(|tx| {
            tx.send(CopyJob {
                ino: node.ino,
                data,
            })
            .is_ok()
        });
        if !sent {
            lock(&self.queued).remove(&node.ino);
        }
    }

    /// Waits (at most [`COPY_PATIENCE`]) until no on-demand fetch has run for the layers'
    /// background silence, as background fetches do.
    fn wait_for_quiet(&self) {
        let config = self.spans.config();
        let started = std::time::Instant::now();
        while started.elapsed() < COPY_PATIENCE
            && config
                .activity
                .quiet_for()
                .is_none_or(|q| q < config.background_silence)
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Writes one backing file: copied from the span cache to a temporary name, then renamed
    /// into place, so a file at the final name is always whole.
    fn copy(&self, job: &CopyJob, runtime: &tokio::runtime::Handle) -> std::io::Result<()> {
        let tmp = self
            .files
            .join(format!(".tmp.{}.{}", job.ino, std::process::id()));
        let result = (|| {
            let mut out = File::create(&tmp)?;
            let mut buf = Vec::new();
            let mut at = job.data.start;
            while at < job.data.end {
                let end = (at + COPY_CHUNK).min(job.data.end);
                let n = self
                    .spans
                    .read_blocking(runtime, at..end, &mut buf)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let bytes = buf.get(..n).unwrap_or_default();
                if bytes.is_empty() {
                    return Err(std::io::Error::other("the layer ended before the file"));
                }
                out.write_all(bytes)?;
                at += n as u64;
            }
            std::fs::rename(&tmp, self.file_path(job.ino))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Writes queued backing files one at a time until the passthrough state is gone.
fn copy_worker(
    owner: std::sync::Weak<Passthrough>,
    jobs: mpsc::Receiver<CopyJob>,
    runtime: tokio::runtime::Handle,
) {
    while let Ok(job) = jobs.recv() {
        let Some(pt) = owner.upgrade() else {
            return;
        };
        pt.wait_for_quiet();
        match pt.copy(&job, &runtime) {
            Ok(()) => {
                pt.spans.budget().add(job.data.end - job.data.start);
                pt.metrics.record_backing_file();
            }
            Err(e) => {
                tracing::warn!(layer = %pt.spans.layer(), ino = job.ino, "backing file not written: {e}")
            }
        }
        lock(&pt.queued).remove(&job.ino);
    }
}

/// Name of a mountpoint's backing ID table: a hash of its path (one live mount per path).
fn mountpoint_key(mountpoint: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = oci::digest::sha256(mountpoint.as_os_str().as_bytes());
    digest.digest().chars().take(16).collect()
}

/// The `inode id` lines of a backing ID table; unreadable lines are skipped.
fn read_ids(path: &Path) -> Vec<(u64, u32)> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            let (ino, id) = line.split_once(' ')?;
            Some((ino.parse().ok()?, id.trim().parse().ok()?))
        })
        .collect()
}

/// Removes temporary copies left by dead processes; returns the bytes of the backing files
/// already there (they count against the disk budget).
fn remove_dead_copies(files: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(files) else {
        return 0;
    };
    let mut found = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(rest) = name.strip_prefix(".tmp.") {
            let pid = rest.rsplit('.').next().and_then(|p| p.parse::<u32>().ok());
            if !pid.is_some_and(crate::spans::process_alive) {
                let _ = std::fs::remove_file(entry.path());
            }
        } else if let Ok(m) = entry.metadata() {
            found += m.len();
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_tables_skip_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "5 1\nx 2\n7\n9 3\n12 notanumber\n").unwrap();
        assert_eq!(read_ids(&path), vec![(5, 1), (9, 3)]);
        assert!(read_ids(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn only_plain_table_names_are_used() {
        let config = |table: Option<&str>| PassthroughConfig {
            ids_dir: PathBuf::from("/ids"),
            enabled: true,
            table: table.map(str::to_owned),
        };
        let mp = Path::new("/m/fs");
        assert_eq!(config(Some("c0ffee-1_2")).table_for(mp), "c0ffee-1_2");
        for bad in [
            Some("../x"),
            Some(""),
            Some("a/b"),
            Some(&"x".repeat(65)[..]),
            None,
        ] {
            assert_eq!(config(bad).table_for(mp), mountpoint_key(mp), "{bad:?}");
        }
    }

    #[test]
    fn mountpoints_get_distinct_keys() {
        let a = mountpoint_key(Path::new("/a/fs"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, mountpoint_key(Path::new("/b/fs")));
        assert_eq!(a, mountpoint_key(Path::new("/a/fs")));
    }
}
