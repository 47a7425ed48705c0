//! The inode tree of one layer, built from its zTOC's table of contents.
//!
//! The tree is what the FUSE filesystem answers metadata questions from. OCI whiteouts are
//! turned into what overlayfs expects from a lower layer: `.wh.<name>` becomes a character
//! device 0:0 named `<name>`, and `.wh..wh..opq` marks its directory opaque with the xattr
//! `trusted.overlay.opaque=y`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use ztoc::{FileMetadata, FileType};

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;

/// Prefix of OCI whiteout entries.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a lower directory as opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// PAX record prefix of extended attributes.
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// What kind of object an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Directory.
    Dir,
    /// Regular file.
    Regular,
    /// Symbolic link.
    Symlink,
    /// Character device (also overlay whiteouts, 0:0).
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
}

/// One inode.
#[derive(Debug, Clone)]
pub struct Node {
    /// Inode number.
    pub ino: u64,
    /// Kind of object.
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Size in bytes (file data, link target length; 4096 for directories).
    pub size: u64,
    /// Link count: hard links for files, 2 + subdirectories for directories.
    pub nlink: u32,
    /// Device number (`makedev(major, minor)`) for devices.
    pub rdev: u32,
    /// Offset of a regular file's data in the uncompressed layer.
    pub data_offset: u64,
    /// Symlink target.
    pub link_target: OsString,
    /// Extended attributes.
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// Directory entries, sorted by name (readdir offsets index into this).
    pub children: Vec<(OsString, u64)>,
    /// Parent directory (the root is its own parent).
    pub parent: u64,
}

/// All inodes of a layer.
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
    /// Entries skipped while building, with the reason (logged by the caller).
    pub skipped: Vec<String>,
}

impl Tree {
    /// Builds the tree from a table of contents (tar order; later entries replace earlier
    /// ones with the same path, as when a tar is extracted).
    pub fn build(files: &[FileMetadata]) -> Tree {
        let mut b = Builder {
            nodes: vec![new_node(ROOT_INO, NodeKind::Dir, 0o755, ROOT_INO)],
            dirs: BTreeMap::new(),
            skipped: Vec::new(),
        };
        b.dirs.insert(ROOT_INO, BTreeMap::new());
        for f in files {
            b.add(f);
        }
        b.finish()
    }

    /// The inode `ino`.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get(usize::try_from(i).ok()?))
    }

    /// The entry `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Option<&Node> {
        let dir = self.get(parent)?;
        let i = dir
            .children
            .binary_search_by(|(n, _)| n.as_os_str().cmp(name))
            .ok()?;
        self.get(dir.children[i].1)
    }

    /// Resolves a path inside the layer without following symlinks (`/` or `` is the root).
    pub fn resolve(&self, path: &str) -> Option<&Node> {
        let mut node = self.get(ROOT_INO)?;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            node = if part == ".." {
                self.get(node.parent)?
            } else {
                self.lookup(node.ino, OsStr::new(part))?
            };
        }
        Some(node)
    }

    /// Number of inodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the tree holds only the root.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// Iterates over every inode.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter()
    }
}

fn new_node(ino: u64, kind: NodeKind, perm: u16, parent: u64) -> Node {
    Node {
        ino,
        kind,
        perm,
        uid: 0,
        gid: 0,
        mtime: UNIX_EPOCH,
        size: if kind == NodeKind::Dir { 4096 } else { 0 },
        nlink: if kind == NodeKind::Dir { 2 } else { 1 },
        rdev: 0,
        data_offset: 0,
        link_target: OsString::new(),
        xattrs: BTreeMap::new(),
        children: Vec::new(),
        parent,
    }
}

struct Builder {
    nodes: Vec<Node>,
    /// Children of each directory while building (sorted map, turned into a Vec at the end).
    dirs: BTreeMap<u64, BTreeMap<OsString, u64>>,
    skipped: Vec<String>,
}

/// Splits a zTOC name into path components, refusing anything that could climb out.
fn components(name: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    Some(parts)
}

/// `makedev` as glibc encodes it, truncated to the 32 bits FUSE carries.
fn makedev(major: i64, minor: i64) -> u32 {
    let (major, minor) = (major.max(0) as u64, minor.max(0) as u64);
    let dev = ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12);
    dev as u32
}

fn parse_mtime(s: &str) -> SystemTime {
    match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        Ok(t) => {
            let nanos = t.unix_timestamp_nanos();
            if nanos >= 0 {
                UNIX_EPOCH + Duration::from_nanos(nanos.min(u64::MAX as i128) as u64)
            } else {
                UNIX_EPOCH
                    .checked_sub(Duration::from_nanos((-nanos).min(u64::MAX as i128) as u64))
                    .unwrap_or(UNIX_EPOCH)
            }
        }
        Err(_) => UNIX_EPOCH,
    }
}

impl Builder {
    fn alloc(&mut self, kind: NodeKind, perm: u16, parent: u64) -> u64 {
        let ino = self.nodes.len() as u64 + 1;
        self.nodes.push(new_node(ino, kind, perm, parent));
        if kind == NodeKind::Dir {
            self.dirs.insert(ino, BTreeMap::new());
        }
        ino
    }

    fn node(&mut self, ino: u64) -> &mut Node {
        &mut self.nodes[(ino - 1) as usize]
    }

    /// Walks to the directory holding `parts`' last component, creating missing parents
    /// (tars may omit them) as root-owned 0755 directories.
    fn parent_dir(&mut self, parts: &[&str]) -> Option<u64> {
        let mut dir = ROOT_INO;
        for p in parts {
            let existing = self.dirs.get(&dir)?.get(OsStr::new(p)).copied();
            dir = match existing {
                Some(ino) if self.nodes[(ino - 1) as usize].kind == NodeKind::Dir => ino,
                // A non-directory in the way: a later directory entry replaces it.
                _ => {
                    let ino = self.alloc(NodeKind::Dir, 0o755, dir);
                    self.dirs.get_mut(&dir)?.insert(OsString::from(*p), ino);
                    ino
                }
            };
        }
        Some(dir)
    }

    fn add(&mut self, f: &FileMetadata) {
        let Some(parts) = components(&f.name) else {
            self.skipped
                .push(format!("{:?}: the name climbs out of the layer", f.name));
            return;
        };
        let Some((last, parents)) = parts.split_last() else {
            // The root itself ("./"): take its attributes.
            if f.file_type == FileType::Directory {
                self.set_attrs(ROOT_INO, f);
            }
            return;
        };
        let Some(dir) = self.parent_dir(parents) else {
            return;
        };
        if *last == OPAQUE_MARKER {
            self.node(dir)
                .xattrs
                .insert(OVERLAY_OPAQUE_XATTR.into(), b"y".to_vec());
            return;
        }
        if let Some(hidden) = last.strip_prefix(WHITEOUT_PREFIX) {
            let ino = self.alloc(NodeKind::Char, 0, dir);
            let node = self.node(ino);
            node.mtime = parse_mtime(&f.mod_time);
            node.uid = f.uid;
            node.gid = f.gid;
            self.link(dir, hidden, ino);
            return;
        }
        let name = OsString::from(*last);
        let existing = self.dirs.get(&dir).and_then(|d| d.get(&name)).copied();
        let ino = match f.file_type {
            FileType::Hardlink => {
                let target = components(&f.linkname).and_then(|t| self.find(&t));
                match target {
                    Some(t) if self.nodes[(t - 1) as usize].kind != NodeKind::Dir => {
                        self.node(t).nlink += 1;
                        self.link(dir, last, t);
                    }
                    _ => self.skipped.push(format!(
                        "{:?}: hard link target {:?} is not an earlier file of the layer",
                        f.name, f.linkname
                    )),
                }
                return;
            }
            FileType::Directory => match existing {
                // A directory entry after its children (or repeated) updates attributes.
                Some(ino) if self.nodes[(ino - 1) as usize].kind == NodeKind::Dir => ino,
                _ => self.alloc(NodeKind::Dir, 0, dir),
            },
            FileType::Regular => self.alloc(NodeKind::Regular, 0, dir),
            FileType::Symlink => self.alloc(NodeKind::Symlink, 0, dir),
            FileType::Char => self.alloc(NodeKind::Char, 0, dir),
            FileType::Block => self.alloc(NodeKind::Block, 0, dir),
            FileType::Fifo => self.alloc(NodeKind::Fifo, 0, dir),
        };
        self.set_attrs(ino, f);
        self.link(dir, last, ino);
    }

    fn set_attrs(&mut self, ino: u64, f: &FileMetadata) {
        let node = self.node(ino);
        node.perm = (f.mode & 0o7777) as u16;
        node.uid = f.uid;
        node.gid = f.gid;
        node.mtime = parse_mtime(&f.mod_time);
        match node.kind {
            NodeKind::Regular => {
                node.size = f.uncompressed_size;
                node.data_offset = f.uncompressed_offset;
            }
            NodeKind::Symlink => {
                node.link_target = OsString::from(&f.linkname);
                node.size = f.linkname.len() as u64;
            }
            NodeKind::Char | NodeKind::Block => node.rdev = makedev(f.devmajor, f.devminor),
            NodeKind::Dir | NodeKind::Fifo => {}
        }
        // An opaque marker seen earlier stays; PAX xattrs replace the rest.
        let opaque = node.xattrs.remove(OsStr::new(OVERLAY_OPAQUE_XATTR));
        node.xattrs.clear();
        if let Some(v) = opaque {
            node.xattrs.insert(OVERLAY_OPAQUE_XATTR.into(), v);
        }
        for x in &f.xattrs {
            if let Some(name) = x.key.strip_prefix(PAX_XATTR_PREFIX) {
                node.xattrs
                    .insert(OsString::from(name), x.value.as_bytes().to_vec());
            }
        }
    }

    /// Points `dir/name` at `ino`, replacing (and unlinking) what was there.
    fn link(&mut self, dir: u64, name: &str, ino: u64) {
        let Some(entries) = self.dirs.get_mut(&dir) else {
            return;
        };
        if let Some(old) = entries.insert(OsString::from(name), ino) {
            if old != ino {
                let old = &mut self.nodes[(old - 1) as usize];
                old.nlink = old.nlink.saturating_sub(1);
            }
        }
    }

    fn find(&self, parts: &[&str]) -> Option<u64> {
        let mut ino = ROOT_INO;
        for p in parts {
            ino = *self.dirs.get(&ino)?.get(OsStr::new(p))?;
        }
        Some(ino)
    }

    fn finish(mut self) -> Tree {
        let dirs = std::mem::take(&mut self.dirs);
        for (dir, entries) in dirs {
            let mut subdirs = 0;
            let children: Vec<(OsString, u64)> = entries.into_iter().collect();
            for (_, child) in &children {
                let c = &mut self.nodes[(*child - 1) as usize];
                if c.kind == NodeKind::Dir {
                    subdirs += 1;
                    c.parent = dir;
                }
            }
            let node = &mut self.nodes[(dir - 1) as usize];
            node.nlink = 2 + subdirs;
            node.children = children;
        }
        Tree {
            nodes: self.nodes,
            skipped: self.skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ztoc::Xattr;

    fn entry(name: &str, t: FileType) -> FileMetadata {
        FileMetadata {
            mod_time: "2024-01-02T03:04:05.000000006Z".into(),
            ..FileMetadata::new(name, t)
        }
    }

    #[test]
    fn builds_dirs_files_links_and_whiteouts() {
        let mut file = entry("usr/bin/tool", FileType::Regular);
        file.uncompressed_offset = 1024;
        file.uncompressed_size = 10;
        file.mode = 0o4755;
        file.xattrs = vec![
            Xattr {
                key: "SCHILY.xattr.user.k".into(),
                value: "v".into(),
            },
            Xattr {
                key: "mtime".into(),
                value: "1.5".into(),
            },
        ];
        let mut hard = entry("usr/bin/tool2", FileType::Hardlink);
        hard.linkname = "usr/bin/tool".into();
        let mut sym = entry("usr/bin/t", FileType::Symlink);
        sym.linkname = "tool".into();
        let mut dev = entry("dev/null", FileType::Char);
        dev.devmajor = 1;
        dev.devminor = 3;
        let files = vec![
            file,
            hard,
            sym,
            dev,
            entry("etc/.wh.gone", FileType::Regular),
            entry("var/.wh..wh..opq", FileType::Regular),
            entry("../escape", FileType::Regular),
        ];
        let t = Tree::build(&files);
        let tool = t.resolve("/usr/bin/tool").unwrap();
        assert_eq!(tool.kind, NodeKind::Regular);
        assert_eq!(tool.perm, 0o4755);
        assert_eq!((tool.size, tool.data_offset, tool.nlink), (10, 1024, 2));
        assert_eq!(tool.xattrs.len(), 1);
        assert_eq!(tool.xattrs[OsStr::new("user.k")], b"v");
        assert_eq!(t.resolve("usr/bin/tool2").unwrap().ino, tool.ino);
        assert_eq!(t.resolve("usr/bin/t").unwrap().link_target, "tool");
        assert_eq!(t.resolve("dev/null").unwrap().rdev, (1 << 8) | 3);
        let gone = t.resolve("etc/gone").unwrap();
        assert_eq!((gone.kind, gone.rdev), (NodeKind::Char, 0));
        assert!(t.resolve("etc/.wh.gone").is_none());
        assert_eq!(
            t.resolve("var").unwrap().xattrs[OsStr::new(OVERLAY_OPAQUE_XATTR)],
            b"y"
        );
        assert!(t.resolve("escape").is_none());
        assert_eq!(t.skipped.len(), 1);
        // root has usr, dev, etc, var
        assert_eq!(t.get(ROOT_INO).unwrap().nlink, 6);
        assert_eq!(
            t.resolve("usr/bin/..").unwrap().ino,
            t.resolve("usr").unwrap().ino
        );
    }

    #[test]
    fn later_entries_replace_earlier_and_dirs_keep_children() {
        let mut a = entry("a", FileType::Regular);
        a.uncompressed_size = 1;
        let mut a2 = entry("a", FileType::Regular);
        a2.uncompressed_size = 2;
        let mut d = entry("d", FileType::Directory);
        d.mode = 0o700;
        d.uid = 5;
        let files = vec![a, a2, entry("d/x", FileType::Regular), d];
        let t = Tree::build(&files);
        assert_eq!(t.resolve("a").unwrap().size, 2);
        let d = t.resolve("d").unwrap();
        assert_eq!((d.perm, d.uid, d.children.len()), (0o700, 5, 1));
    }

    #[test]
    fn mtime_parses_with_nanoseconds() {
        let t = parse_mtime("1970-01-01T00:00:01.000000002Z");
        assert_eq!(t, UNIX_EPOCH + Duration::new(1, 2));
        assert_eq!(parse_mtime("garbage"), UNIX_EPOCH);
    }
}
