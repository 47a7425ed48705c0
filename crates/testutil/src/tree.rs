//! Snapshots of directory trees and their differences: compare a lazily mounted image with
//! `umoci unpack` of the same image ([`crate::umoci_unpack`]).
//!
//! [`snapshot`] walks a tree without following symlinks and records, for every path, what
//! an image defines: file type, mode bits (`0o7777`), owner, size and SHA-256 of regular
//! files, symlink targets, device numbers, xattrs (except `security.*`), mtimes, and which
//! paths are hard links of each other. [`diff`] lists the differences of two snapshots in
//! readable lines.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The type of a tree entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::CharDevice => "char device",
            Kind::BlockDevice => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        })
    }
}

/// What [`snapshot`] records about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// File type.
    pub kind: Kind,
    /// Mode bits without the type: permissions, setuid, setgid, sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Size of a regular file; 0 for everything else (directory sizes depend on the
    /// filesystem, a symlink's is its target's length).
    pub size: u64,
    /// SHA-256 of a regular file's contents.
    pub sha256: Option<[u8; 32]>,
    /// A symlink's target, verbatim.
    pub target: Option<PathBuf>,
    /// A device's (major, minor).
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes (name → value), without `security.*`.
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
}

/// A snapshot of a directory tree: an [`Entry`] per path (relative to the root, which is the
/// empty path) and the hard link groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<PathBuf, Entry>,
    /// Sets of two or more non-directory paths sharing an inode, sorted.
    groups: Vec<BTreeSet<PathBuf>>,
    /// Path → index in `groups`.
    group_of: HashMap<PathBuf, usize>,
}

impl Tree {
    /// Number of entries, the root included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries at all (not even a root).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `path` (relative to the root; the root itself is `""`).
    pub fn get(&self, path: impl AsRef<Path>) -> Option<&Entry> {
        self.entries.get(path.as_ref())
    }

    /// All (path, entry) pairs in path order, the root (`""`) first.
    pub fn entries(&self) -> impl Iterator<Item = (&Path, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_path(), e))
    }

    /// Every set of two or more paths that are hard links of each other, sorted.
    pub fn hardlink_groups(&self) -> &[BTreeSet<PathBuf>] {
        &self.groups
    }

    /// The hard link group `path` belongs to, if it shares its inode with another path.
    pub fn hardlinks_of(&self, path: impl AsRef<Path>) -> Option<&BTreeSet<PathBuf>> {
        self.group_of.get(path.as_ref()).map(|&i| &self.groups[i])
    }
}

/// Snapshots the tree at `root` (a directory), never following symlinks (`lstat`,
/// `llistxattr`). Regular files are read and hashed on all cores. Panics, naming the path,
/// on any I/O error (a read error of a lazily mounted file is a test failure).
///
/// Xattrs are listed with `llistxattr`; a filesystem without xattr support counts as "no
/// xattrs". Hard links are found by (device, inode) among non-directories.
pub fn snapshot(root: &Path) -> Tree {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let meta = std::fs::symlink_metadata(root)
        .unwrap_or_else(|e| panic!("snapshot: lstat {}: {e}", root.display()));
    assert!(
        meta.is_dir(),
        "snapshot: {} is not a directory",
        root.display()
    );
    let mut stack = vec![(PathBuf::new(), meta)];
    while let Some((rel, meta)) = stack.pop() {
        let abs = root.join(&rel);
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::CharDevice
        } else if ft.is_block_device() {
            Kind::BlockDevice
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let target = (kind == Kind::Symlink).then(|| {
            std::fs::read_link(&abs)
                .unwrap_or_else(|e| panic!("snapshot: readlink {}: {e}", abs.display()))
        });
        let rdev = matches!(kind, Kind::CharDevice | Kind::BlockDevice).then(|| {
            let rdev = meta.rdev();
            // glibc's gnu_dev_major / gnu_dev_minor.
            let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
            let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
            (major as u32, minor as u32)
        });
        if kind == Kind::Dir {
            let dir = std::fs::read_dir(&abs)
                .unwrap_or_else(|e| panic!("snapshot: read dir {}: {e}", abs.display()));
            for child in dir {
                let child =
                    child.unwrap_or_else(|e| panic!("snapshot: read dir {}: {e}", abs.display()));
                // DirEntry::metadata does not follow symlinks.
                let m = child
                    .metadata()
                    .unwrap_or_else(|e| panic!("snapshot: lstat {}: {e}", child.path().display()));
                stack.push((rel.join(child.file_name()), m));
            }
        } else {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(rel.clone());
        }
        if kind == Kind::File {
            files.push(rel.clone());
        }
        entries.insert(
            rel,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                size: if kind == Kind::File { meta.size() } else { 0 },
                sha256: None,
                target,
                rdev,
                xattrs: xattrs_of(&abs),
                mtime: (meta.mtime(), meta.mtime_nsec()),
            },
        );
    }
    for (rel, digest) in hash_all(root, &files) {
        if let Some(e) = entries.get_mut(&rel) {
            e.sha256 = Some(digest);
        }
    }
    let mut groups: Vec<BTreeSet<PathBuf>> = inodes
        .into_values()
        .filter(|paths| paths.len() > 1)
        .map(|paths| paths.into_iter().collect())
        .collect();
    groups.sort();
    let group_of = groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| g.iter().map(move |p| (p.clone(), i)))
        .collect();
    Tree {
        entries,
        groups,
        group_of,
    }
}

/// The xattrs of `path` (not following a symlink), without `security.*`.
fn xattrs_of(path: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let unsupported = |e: &std::io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc_errno::ENOTSUP | libc_errno::ENODATA)
        )
    };
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return BTreeMap::new(),
        Err(e) => panic!("snapshot: list xattrs of {}: {e}", path.display()),
    };
    let mut out = BTreeMap::new();
    for name in names {
        if name.as_encoded_bytes().starts_with(b"security.") {
            continue;
        }
        match xattr::get(path, &name) {
            Ok(Some(value)) => {
                out.insert(name, value);
            }
            Ok(None) => {} // removed meanwhile
            Err(e) if unsupported(&e) => {}
            Err(e) => panic!(
                "snapshot: get xattr {} of {}: {e}",
                name.to_string_lossy(),
                path.display()
            ),
        }
    }
    out
}

/// Linux errno values used above (no libc dependency for two constants).
mod libc_errno {
    /// No data available (also "no such xattr").
    pub const ENODATA: i32 = 61;
    /// Operation not supported (`EOPNOTSUPP` has the same value on Linux).
    pub const ENOTSUP: i32 = 95;
}

/// SHA-256 of every file in `files` (relative to `root`), on all cores.
fn hash_all(root: &Path, files: &[PathBuf]) -> Vec<(PathBuf, [u8; 32])> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(files.len().max(1));
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(files.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(rel) = files.get(i) else { break };
                    mine.push((rel.clone(), hash_file(&root.join(rel), &mut buf)));
                }
                out.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
            });
        }
    });
    out.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn hash_file(path: &Path, buf: &mut [u8]) -> [u8; 32] {
    let mut f = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("snapshot: open {}: {e}", path.display()));
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    loop {
        match f.read(buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("snapshot: read {}: {e}", path.display()),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// What [`diff`] compares and how much it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffOptions {
    /// Compare mtimes of non-directories (regular files, symlinks, devices, fifos).
    /// Directory mtimes are never compared (overlayfs and unpackers differ). Default: true.
    pub mtimes: bool,
    /// Compare xattrs (e.g. false for an index built with xattrs disabled). Default: true.
    pub xattrs: bool,
    /// Compare hard link groups. Default: true.
    pub hardlinks: bool,
    /// Paths (relative) to leave out of the comparison, each with everything below it.
    /// Default: none.
    pub ignore: Vec<PathBuf>,
    /// At most this many difference lines; one more line then counts the rest.
    /// Default: 50.
    pub max_lines: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            mtimes: true,
            xattrs: true,
            hardlinks: true,
            ignore: Vec::new(),
            max_lines: 50,
        }
    }
}

/// Collects difference lines up to a cap and counts the rest.
struct Report {
    lines: Vec<String>,
    max: usize,
    more: usize,
}

impl Report {
    fn add(&mut self, line: impl FnOnce() -> String) {
        if self.lines.len() < self.max {
            self.lines.push(line());
        } else {
            self.more += 1;
        }
    }
}

/// Shows a path for humans: the root as `.`.
fn show(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        p.display().to_string()
    }
}

/// An xattr value for humans: text if it is UTF-8, else hex; cut at 64 characters.
fn show_value(v: &[u8]) -> String {
    let s = match std::str::from_utf8(v) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("0x{}", hex::encode(v)),
    };
    if s.chars().count() > 64 {
        format!("{}…", s.chars().take(64).collect::<String>())
    } else {
        s
    }
}

/// The differences between `expected` and `actual`, one readable line each, in path
/// order: paths missing from `actual`, extra paths in `actual`, per-field mismatches of
/// common paths (type, mode, uid, gid, size, content, symlink target, device numbers,
/// xattrs, mtime if [`DiffOptions::mtimes`]), then hard link group mismatches. At most
/// [`DiffOptions::max_lines`] lines plus one `… and N more differences` line. Empty when
/// the trees match.
pub fn diff(expected: &Tree, actual: &Tree, opts: &DiffOptions) -> Vec<String> {
    let mut r = Report {
        lines: Vec::new(),
        max: opts.max_lines,
        more: 0,
    };
    let ignored = |p: &Path| opts.ignore.iter().any(|i| p.starts_with(i));
    let mut exp = expected
        .entries
        .iter()
        .filter(|(p, _)| !ignored(p))
        .peekable();
    let mut act = actual
        .entries
        .iter()
        .filter(|(p, _)| !ignored(p))
        .peekable();
    loop {
        match (exp.peek(), act.peek()) {
            (None, None) => break,
            (Some((pe, ee)), Some((pa, _))) if pe < pa => {
                r.add(|| format!("missing: {} ({})", show(pe), ee.kind));
                exp.next();
            }
            (Some((pe, ee)), None) => {
                r.add(|| format!("missing: {} ({})", show(pe), ee.kind));
                exp.next();
            }
            (Some((pe, _)), Some((pa, ea))) if pa < pe => {
                r.add(|| format!("extra: {} ({})", show(pa), ea.kind));
                act.next();
            }
            (None, Some((pa, ea))) => {
                r.add(|| format!("extra: {} ({})", show(pa), ea.kind));
                act.next();
            }
            (Some((p, e)), Some((_, a))) => {
                compare_entry(&mut r, p, e, a, opts);
                exp.next();
                act.next();
            }
        }
    }
    if opts.hardlinks {
        compare_links(&mut r, expected, actual, &ignored);
    }
    let mut lines = r.lines;
    if r.more > 0 {
        lines.push(format!("… and {} more differences", r.more));
    }
    lines
}

fn compare_entry(r: &mut Report, p: &Path, e: &Entry, a: &Entry, opts: &DiffOptions) {
    let p = show(p);
    if e.kind != a.kind {
        r.add(|| format!("{p}: type: expected {}, actual {}", e.kind, a.kind));
        return;
    }
    if e.mode != a.mode {
        r.add(|| format!("{p}: mode: expected {:04o}, actual {:04o}", e.mode, a.mode));
    }
    if (e.uid, e.gid) != (a.uid, a.gid) {
        r.add(|| {
            format!(
                "{p}: owner: expected {}:{}, actual {}:{}",
                e.uid, e.gid, a.uid, a.gid
            )
        });
    }
    if e.size != a.size {
        r.add(|| format!("{p}: size: expected {}, actual {}", e.size, a.size));
    }
    if e.sha256 != a.sha256 {
        let h = |d: &Option<[u8; 32]>| d.map_or("none".to_owned(), |d| hex::encode(&d[..8]));
        r.add(|| {
            format!(
                "{p}: content: expected sha256 {}…, actual {}…",
                h(&e.sha256),
                h(&a.sha256)
            )
        });
    }
    if e.target != a.target {
        let t = |t: &Option<PathBuf>| t.as_ref().map_or("none".to_owned(), |t| format!("{t:?}"));
        r.add(|| {
            format!(
                "{p}: symlink target: expected {}, actual {}",
                t(&e.target),
                t(&a.target)
            )
        });
    }
    if e.rdev != a.rdev {
        let d = |d: Option<(u32, u32)>| d.map_or("none".to_owned(), |(m, n)| format!("{m}:{n}"));
        r.add(|| format!("{p}: device: expected {}, actual {}", d(e.rdev), d(a.rdev)));
    }
    if opts.xattrs && e.xattrs != a.xattrs {
        for (k, v) in &e.xattrs {
            let k_ = k.to_string_lossy();
            match a.xattrs.get(k) {
                None => r.add(|| format!("{p}: xattr {k_} missing (expected {})", show_value(v))),
                Some(w) if w != v => r.add(|| {
                    format!(
                        "{p}: xattr {k_}: expected {}, actual {}",
                        show_value(v),
                        show_value(w)
                    )
                }),
                Some(_) => {}
            }
        }
        for (k, w) in &a.xattrs {
            if !e.xattrs.contains_key(k) {
                let k_ = k.to_string_lossy();
                r.add(|| format!("{p}: xattr {k_} extra ({})", show_value(w)));
            }
        }
    }
    if opts.mtimes && e.kind != Kind::Dir && e.mtime != a.mtime {
        let t = |(s, ns): (i64, i64)| format!("{s}.{ns:09}");
        r.add(|| format!("{p}: mtime: expected {}, actual {}", t(e.mtime), t(a.mtime)));
    }
}

/// Reports hard link groups that differ: first each group of `expected` whose members are
/// not one group in `actual`, then each group of `actual` not reported yet whose members
/// are not one group in `expected`. Only paths present in both trees and not ignored count.
fn compare_links(r: &mut Report, expected: &Tree, actual: &Tree, ignored: &dyn Fn(&Path) -> bool) {
    let common = |p: &Path| {
        !ignored(p) && expected.entries.contains_key(p) && actual.entries.contains_key(p)
    };
    // The group of `p` in `t`, restricted to common paths (`{p}` if it has none).
    let group = |t: &Tree, p: &Path| -> BTreeSet<PathBuf> {
        match t.hardlinks_of(p) {
            Some(g) => g.iter().filter(|q| common(q)).cloned().collect(),
            None => BTreeSet::from([p.to_path_buf()]),
        }
    };
    let show_set = |g: &BTreeSet<PathBuf>| {
        let v: Vec<String> = g.iter().map(|q| show(q)).collect();
        format!("{{{}}}", v.join(", "))
    };
    let mut reported: HashSet<PathBuf> = HashSet::new();
    for (this, other, label) in [(expected, actual, "expected"), (actual, expected, "actual")] {
        for g in &this.groups {
            let g: BTreeSet<PathBuf> = g.iter().filter(|q| common(q)).cloned().collect();
            if g.len() < 2 || g.iter().any(|p| reported.contains(p)) {
                continue;
            }
            let parts: BTreeSet<BTreeSet<PathBuf>> = g.iter().map(|p| group(other, p)).collect();
            if parts.len() == 1 && parts.contains(&g) {
                continue;
            }
            reported.extend(g.iter().cloned());
            reported.extend(parts.iter().flatten().cloned());
            let parts: Vec<String> = parts.iter().map(show_set).collect();
            let (e, a) = if label == "expected" {
                (show_set(&g), parts.join(" "))
            } else {
                (parts.join(" "), show_set(&g))
            };
            r.add(|| format!("hard links: expected {e}, actual {a}"));
        }
    }
}

/// Panics with the differences (and both trees' sizes) unless [`diff`] finds none.
pub fn assert_same(expected: &Tree, actual: &Tree, opts: &DiffOptions) {
    let d = diff(expected, actual, opts);
    assert!(
        d.is_empty(),
        "trees differ (expected {} entries, actual {}):\n{}",
        expected.len(),
        actual.len(),
        d.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// Two identical trees with a bit of everything.
    fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for root in [&a, &b] {
            std::fs::create_dir_all(root).unwrap();
            write(root, "etc/conf", b"key=value\n");
            write(root, "usr/bin/tool", b"#!/bin/sh\n");
            std::fs::set_permissions(
                root.join("usr/bin/tool"),
                std::fs::Permissions::from_mode(0o4755),
            )
            .unwrap();
            std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool2")).unwrap();
            std::os::unix::fs::symlink("tool", root.join("usr/bin/alias")).unwrap();
            write(root, "data/x", b"x");
            xattr::set(root.join("data/x"), "user.k", b"v").unwrap();
            let t = std::fs::FileTimes::new()
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000));
            // std has no lutimes.
            let st = std::process::Command::new("touch")
                .args(["-h", "-d", "@1000"])
                .arg(root.join("usr/bin/alias"))
                .status()
                .unwrap();
            assert!(st.success());
            for f in ["etc/conf", "usr/bin/tool", "data/x"] {
                std::fs::File::options()
                    .write(true)
                    .open(root.join(f))
                    .unwrap()
                    .set_times(t)
                    .unwrap();
            }
        }
        (t, a, b)
    }

    fn d(a: &Path, b: &Path) -> Vec<String> {
        diff(&snapshot(a), &snapshot(b), &DiffOptions::default())
    }

    /// Only the line(s) mentioning `needle` are expected.
    fn one(lines: Vec<String>, needle: &str) {
        assert!(!lines.is_empty(), "no difference found, wanted {needle}");
        assert!(
            lines.iter().all(|l| l.contains(needle)),
            "wanted only {needle}:\n{}",
            lines.join("\n")
        );
    }

    #[test]
    fn identical_trees_have_no_differences() {
        let (_t, a, b) = pair();
        let s = snapshot(&a);
        assert_eq!(s.len(), 10, "{s:#?}");
        assert!(!s.is_empty());
        assert_eq!(s.get("").unwrap().kind, Kind::Dir);
        assert_eq!(s.get("usr/bin/tool").unwrap().mode, 0o4755);
        assert_eq!(s.get("usr/bin/tool").unwrap().size, 10);
        assert_eq!(
            s.get("usr/bin/alias").unwrap().target.as_deref(),
            Some(Path::new("tool"))
        );
        assert_eq!(
            s.get("data/x")
                .unwrap()
                .xattrs
                .get(std::ffi::OsStr::new("user.k")),
            Some(&b"v".to_vec())
        );
        assert_eq!(
            s.hardlink_groups(),
            &[BTreeSet::from([
                PathBuf::from("usr/bin/tool"),
                PathBuf::from("usr/bin/tool2")
            ])]
        );
        assert_eq!(
            s.get("etc/conf").unwrap().sha256.unwrap()[..],
            ring::digest::digest(&ring::digest::SHA256, b"key=value\n").as_ref()[..]
        );
        assert_eq!(d(&a, &b), Vec::<String>::new());
        // Directory mtimes are not compared.
        std::fs::File::open(b.join("etc"))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!(d(&a, &b), Vec::<String>::new());
    }

    #[test]
    fn content_change_is_found() {
        let (_t, a, b) = pair();
        let f = std::fs::File::options()
            .write(true)
            .open(b.join("etc/conf"))
            .unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"KEY", 0).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
            .unwrap();
        one(d(&a, &b), "etc/conf: content");
    }

    #[test]
    fn mode_change_is_found() {
        let (_t, a, b) = pair();
        std::fs::set_permissions(
            b.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // Both names of the hard link pair show it.
        let lines = d(&a, &b);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.contains(&"usr/bin/tool: mode: expected 4755, actual 0755".to_owned()));
        // Root mode and owner are compared too.
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(d(&a, &b).iter().any(|l| l.starts_with(".: mode:")));
    }

    #[test]
    fn missing_and_extra_files_are_found() {
        let (_t, a, b) = pair();
        std::fs::remove_file(b.join("data/x")).unwrap();
        write(&b, "data/y", b"y");
        assert_eq!(
            d(&a, &b),
            vec!["missing: data/x (file)", "extra: data/y (file)"]
        );
        let opts = DiffOptions {
            ignore: vec!["data".into()],
            ..Default::default()
        };
        assert_eq!(
            diff(&snapshot(&a), &snapshot(&b), &opts),
            Vec::<String>::new()
        );
    }

    #[test]
    fn xattr_change_is_found() {
        let (_t, a, b) = pair();
        xattr::set(b.join("data/x"), "user.k", b"w").unwrap();
        one(
            d(&a, &b),
            "data/x: xattr user.k: expected \"v\", actual \"w\"",
        );
        xattr::remove(b.join("data/x"), "user.k").unwrap();
        one(d(&a, &b), "data/x: xattr user.k missing");
        xattr::set(b.join("etc/conf"), "user.new", b"1").unwrap();
        xattr::set(b.join("data/x"), "user.k", b"v").unwrap();
        one(d(&a, &b), "etc/conf: xattr user.new extra");
        let opts = DiffOptions {
            xattrs: false,
            ..Default::default()
        };
        assert_eq!(
            diff(&snapshot(&a), &snapshot(&b), &opts),
            Vec::<String>::new()
        );
    }

    #[test]
    fn broken_hard_link_is_found() {
        let (_t, a, b) = pair();
        // Same content, metadata and mtime, but a separate inode.
        let copy = b.join("usr/bin/tool2.tmp");
        std::fs::copy(b.join("usr/bin/tool"), &copy).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
            .unwrap();
        std::fs::rename(&copy, b.join("usr/bin/tool2")).unwrap();
        assert_eq!(
            d(&a, &b),
            vec![
                "hard links: expected {usr/bin/tool, usr/bin/tool2}, \
                  actual {usr/bin/tool} {usr/bin/tool2}"
            ]
        );
        let opts = DiffOptions {
            hardlinks: false,
            ..Default::default()
        };
        assert_eq!(
            diff(&snapshot(&a), &snapshot(&b), &opts),
            Vec::<String>::new()
        );
    }

    #[test]
    fn type_target_and_mtime_changes_are_found() {
        let (_t, a, b) = pair();
        std::fs::remove_file(b.join("usr/bin/alias")).unwrap();
        std::os::unix::fs::symlink("tool2", b.join("usr/bin/alias")).unwrap();
        let st = std::process::Command::new("touch")
            .args(["-h", "-d", "@1000"])
            .arg(b.join("usr/bin/alias"))
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::remove_file(b.join("data/x")).unwrap();
        std::fs::create_dir(b.join("data/x")).unwrap();
        std::fs::File::options()
            .write(true)
            .open(b.join("etc/conf"))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_000))
            .unwrap();
        let lines = d(&a, &b);
        assert_eq!(
            lines,
            vec![
                "data/x: type: expected file, actual dir",
                "etc/conf: mtime: expected 1000.000000000, actual 2000.000000000",
                "usr/bin/alias: symlink target: expected \"tool\", actual \"tool2\"",
            ],
        );
        let opts = DiffOptions {
            mtimes: false,
            ..Default::default()
        };
        assert_eq!(diff(&snapshot(&a), &snapshot(&b), &opts).len(), 2);
    }

    #[test]
    fn output_is_capped() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(&b).unwrap();
        for i in 0..3_000 {
            write(&a, &format!("d{}/f{i}", i % 10), b"");
        }
        let (sa, sb) = (snapshot(&a), snapshot(&b));
        assert_eq!(sa.len(), 3_011);
        let lines = diff(&sa, &sb, &DiffOptions::default());
        assert_eq!(lines.len(), 51);
        assert_eq!(lines[50], "… and 2960 more differences");
        assert!(sb.hardlink_groups().is_empty());
    }

    #[test]
    fn devices_and_fifos_are_recorded() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("fifo");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        let s = snapshot(t.path());
        assert_eq!(s.get("fifo").unwrap().kind, Kind::Fifo);
        // mknod needs root (CAP_MKNOD); skip the device part without it.
        let dev = t.path().join("null");
        let ok = std::process::Command::new("mknod")
            .arg(&dev)
            .args(["c", "1", "3"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let s = snapshot(t.path());
            assert_eq!(s.get("null").unwrap().kind, Kind::CharDevice);
            assert_eq!(s.get("null").unwrap().rdev, Some((1, 3)));
        }
    }
}
