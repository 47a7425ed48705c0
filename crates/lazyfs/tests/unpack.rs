//! Unpacking small layers into overlayfs lower directories (`lazyfs::unpack`).
//!
//! Layers are built in memory with the `tar` crate's header API; names are written into the raw
//! header so that hostile paths (`../x`, `/abs`) can be expressed, which the builder refuses.
//! The tests need root (chown, mknod, `trusted.*` xattrs, mount), like the code under test.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use lazyfs::unpack::{
    unpack_gzip_layer, unpack_layer, unpack_layer_blob, LayerBlobError, UnpackError, UnpackStats,
};
use oci::manifest::LayerCompression;
use tar::{EntryType, Header};

/// The file systems the tests touch must behave like the node's: fail loudly without root.
fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "unpack tests need root (chown, mknod, trusted.* xattrs)"
    );
}

/// An in-memory layer tar.
struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// A ustar header with the name written verbatim (no validation, so `..` stays).
    fn header(kind: EntryType, path: &str, mode: u32) -> Header {
        let mut h = Header::new_ustar();
        let name = path.as_bytes();
        assert!(name.len() < 100, "test paths must fit the ustar name field");
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    }

    fn append(&mut self, mut h: Header, data: &[u8]) -> &mut Layer {
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn dir(&mut self, path: &str, mode: u32) -> &mut Layer {
        self.append(Self::header(EntryType::Directory, path, mode), b"")
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Layer {
        self.append(Self::header(EntryType::Regular, path, mode), data)
    }

    fn link(&mut self, kind: EntryType, path: &str, target: &str) -> &mut Layer {
        let mut h = Self::header(kind, path, 0o777);
        h.set_link_name_literal(target).unwrap();
        self.append(h, b"")
    }

    fn symlink(&mut self, path: &str, target: &str) -> &mut Layer {
        self.link(EntryType::Symlink, path, target)
    }

    fn hardlink(&mut self, path: &str, target: &str) -> &mut Layer {
        self.link(EntryType::Link, path, target)
    }

    fn device(&mut self, kind: EntryType, path: &str, major: u32, minor: u32) -> &mut Layer {
        let mut h = Self::header(kind, path, 0o660);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, b"")
    }

    /// A PAX extended header; it applies to the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Layer {
        let mut data = Vec::new();
        for (key, value) in records {
            testutil::pax_record(&mut data, key, value);
        }
        self.append(
            Self::header(EntryType::XHeader, "PaxHeaders/x", 0o644),
            &data,
        )
    }

    fn bytes(&mut self) -> Vec<u8> {
        self.b.get_mut().extend_from_slice(&[0; 1024]);
        self.b.get_ref().clone()
    }
}

/// Unpacks `layer` into a fresh temp dir, returning the dir and the result.
fn unpack(layer: &mut Layer) -> (tempfile::TempDir, Result<UnpackStats, UnpackError>) {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let result = unpack_layer(&layer.bytes()[..], dir.path());
    (dir, result)
}

fn unpack_ok(layer: &mut Layer) -> (tempfile::TempDir, UnpackStats) {
    let (dir, result) = unpack(layer);
    let stats = result.unwrap_or_else(|e| panic!("unpack failed: {e}"));
    (dir, stats)
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn is_whiteout(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false)
}

#[test]
fn whiteout_becomes_char_device_0_0() {
    let (dir, stats) = unpack_ok(
        Layer::new()
            .dir("etc/", 0o755)
            .file("etc/.wh.passwd", b"", 0o644)
            // Parent not in the layer: created on the way.
            .file("var/lib/.wh.dpkg", b"", 0o644),
    );
    let d = dir.path();
    assert!(is_whiteout(&d.join("etc/passwd")));
    assert!(is_whiteout(&d.join("var/lib/dpkg")));
    assert_eq!(
        libc::major(fs::symlink_metadata(d.join("etc/passwd")).unwrap().rdev()),
        0
    );
    assert!(!d.join("etc/.wh.passwd").exists());
    assert!(!d.join("var/lib/.wh.dpkg").exists());
    assert_eq!(stats.whiteouts, 2);
    assert_eq!(stats.entries, 3);
}

#[test]
fn whiteout_does_not_hide_the_same_layers_file() {
    // OCI: a whiteout applies only to lower layers; a name the layer itself creates stays.
    let (dir, stats) = unpack_ok(
        Layer::new()
            .file("a", b"kept", 0o644)
            .file(".wh.a", b"", 0o644)
            .file(".wh.b", b"", 0o644)
            .file("b", b"replaces the whiteout", 0o644),
    );
    assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"kept");
    assert_eq!(
        fs::read(dir.path().join("b")).unwrap(),
        b"replaces the whiteout"
    );
    assert_eq!(stats.whiteouts, 1);
}

#[test]
fn opaque_marker_becomes_xattr() {
    let (dir, stats) = unpack_ok(
        Layer::new()
            .dir("usr/", 0o755)
            .dir("usr/share/", 0o755)
            .file("usr/share/.wh..wh..opq", b"", 0o644)
            .file("usr/share/new", b"x", 0o644)
            // The directory does not exist yet: created, then marked.
            .file("opt/app/.wh..wh..opq", b"", 0o644)
            // AUFS metadata is neither a whiteout nor a file.
            .file(".wh..wh.aufs", b"", 0o644)
            .dir(".wh..wh.plnk/", 0o700)
            .file(".wh..wh.plnk/1.2", b"", 0o644),
    );
    let d = dir.path();
    for opaque in ["usr/share", "opt/app"] {
        assert_eq!(
            xattr::get(d.join(opaque), "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec()),
            "{opaque}"
        );
        assert!(!d.join(opaque).join(".wh..wh..opq").exists());
    }
    assert_eq!(
        xattr::get(d.join("usr"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert!(d.join("usr/share/new").is_file());
    let names: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".wh.")),
        "{names:?}"
    );
    assert_eq!(stats.opaque_dirs, 2);
}

#[test]
fn hardlink_shares_inode() {
    let (dir, _) = unpack_ok(
        Layer::new()
            .dir("bin/", 0o755)
            .file("bin/busybox", b"#!binary", 0o755)
            .hardlink("bin/sh", "bin/busybox")
            // Absolute and ./-prefixed names mean the same entry.
            .hardlink("/bin/ls", "./bin/busybox"),
    );
    let d = dir.path();
    let a = fs::metadata(d.join("bin/busybox")).unwrap();
    let b = fs::metadata(d.join("bin/sh")).unwrap();
    let c = fs::metadata(d.join("bin/ls")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
    assert_eq!(fs::read(d.join("bin/sh")).unwrap(), b"#!binary");
}

#[test]
fn hardlink_to_missing_or_outside_target_fails() {
    let (_dir, result) = unpack(Layer::new().hardlink("a", "nothing"));
    assert!(
        matches!(result, Err(UnpackError::InvalidEntry { .. })),
        "{result:?}"
    );
    let (_dir, result) = unpack(Layer::new().hardlink("a", "../../../../etc/passwd"));
    assert!(
        matches!(result, Err(UnpackError::Escape { .. })),
        "{result:?}"
    );
    let (_dir, result) = unpack(
        Layer::new()
            .symlink("etc", "/etc")
            .hardlink("stolen", "etc/passwd"),
    );
    assert!(
        matches!(result, Err(UnpackError::Escape { .. })),
        "{result:?}"
    );
}

#[test]
fn permissions_and_owner_kept() {
    let mut layer = Layer::new();
    let mut h = Layer::header(EntryType::Regular, "usr/bin/sudo", 0o4755);
    h.set_uid(0);
    h.set_gid(0);
    layer.dir("usr/", 0o755).dir("usr/bin/", 0o755);
    layer.append(h, b"suid");
    let mut h = Layer::header(EntryType::Regular, "usr/bin/wall", 0o2755);
    h.set_uid(1000);
    h.set_gid(5);
    layer.append(h, b"sgid");
    let mut h = Layer::header(EntryType::Regular, "home-file", 0o6711);
    h.set_uid(1234);
    h.set_gid(4321);
    layer.append(h, b"both");
    let mut h = Layer::header(EntryType::Directory, "tmp/", 0o1777);
    h.set_uid(0);
    layer.append(h, b"");
    let mut h = Layer::header(EntryType::Directory, "srv/", 0o2750);
    h.set_uid(33);
    h.set_gid(33);
    layer.append(h, b"");
    let mut h = Layer::header(EntryType::Symlink, "srv/link", 0o777);
    h.set_uid(33);
    h.set_gid(44);
    h.set_link_name_literal("/nowhere").unwrap();
    layer.append(h, b"");
    // A uid beyond the octal header field, as PAX carries it.
    layer.pax(&[("uid", b"3000000000"), ("gid", b"70000")]);
    layer.file("big-ids", b"", 0o600);

    let (dir, _) = unpack_ok(&mut layer);
    let d = dir.path();
    let meta = |p: &str| fs::symlink_metadata(d.join(p)).unwrap();
    assert_eq!(mode_of(&d.join("usr/bin/sudo")), 0o4755);
    assert_eq!(mode_of(&d.join("usr/bin/wall")), 0o2755);
    assert_eq!(
        (meta("usr/bin/wall").uid(), meta("usr/bin/wall").gid()),
        (1000, 5)
    );
    // chown before chmod: both set-id bits survive a non-root owner.
    assert_eq!(mode_of(&d.join("home-file")), 0o6711);
    assert_eq!(
        (meta("home-file").uid(), meta("home-file").gid()),
        (1234, 4321)
    );
    assert_eq!(mode_of(&d.join("tmp")), 0o1777);
    assert_eq!(mode_of(&d.join("srv")), 0o2750);
    assert_eq!((meta("srv").uid(), meta("srv").gid()), (33, 33));
    assert!(meta("srv/link").file_type().is_symlink());
    assert_eq!((meta("srv/link").uid(), meta("srv/link").gid()), (33, 44));
    assert_eq!(
        fs::read_link(d.join("srv/link")).unwrap(),
        PathBuf::from("/nowhere")
    );
    assert_eq!(
        (meta("big-ids").uid(), meta("big-ids").gid()),
        (3_000_000_000, 70000)
    );
}

#[test]
fn symlink_escape_refused() {
    require_root();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"original").unwrap();

    // Through an absolute symlink to a directory outside.
    let target = outside.path().to_str().unwrap().to_string();
    let (dir, result) = unpack(Layer::new().symlink("out", &target).file(
        "out/victim",
        b"pwned",
        0o644,
    ));
    assert!(
        matches!(result, Err(UnpackError::Escape { .. })),
        "{result:?}"
    );
    assert_eq!(
        result.as_ref().unwrap_err().entry_path(),
        Some(Path::new("out/victim"))
    );
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    drop(dir);

    // The classic: `etc -> /etc`, then `etc/<file>` (a name that does not exist in /etc).
    let (_dir, result) = unpack(Layer::new().symlink("etc", "/etc").file(
        "etc/soci-unpack-test-must-not-exist",
        b"pwned",
        0o644,
    ));
    assert!(
        matches!(result, Err(UnpackError::Escape { .. })),
        "{result:?}"
    );
    assert!(!Path::new("/etc/soci-unpack-test-must-not-exist").exists());

    // Through a relative symlink that climbs out, nested and chained.
    let (_dir, result) = unpack(
        Layer::new()
            .dir("a/", 0o755)
            .symlink("a/up", "../..")
            .symlink("hop", "a/up")
            .file("hop/x", b"pwned", 0o644),
    );
    assert!(
        matches!(result, Err(UnpackError::Escape { .. })),
        "{result:?}"
    );

    // A symlink as the final component is replaced, never written through.
    let (dir, _) = unpack_ok(
        Layer::new()
            .symlink("f", victim.to_str().unwrap())
            .file("f", b"new", 0o644),
    );
    assert_eq!(fs::read(&victim).unwrap(), b"original");
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"new");
    assert!(fs::symlink_metadata(dir.path().join("f"))
        .unwrap()
        .is_file());

    // A symlink loop ends in an error, not a hang.
    let (_dir, result) = unpack(
        Layer::new()
            .symlink("l1", "l2")
            .symlink("l2", "l1")
            .file("l1/x", b"", 0o644),
    );
    assert!(result.is_err());
}

#[test]
fn symlink_inside_dest_is_followed() {
    let (dir, _) = unpack_ok(
        Layer::new()
            .dir("usr/", 0o755)
            .dir("usr/lib/", 0o755)
            .symlink("lib", "usr/lib")
            .file("lib/libc.so", b"elf", 0o644)
            .dir("usr/lib/x/", 0o755)
            .symlink("usr/lib/x/up", "../../..")
            .file("usr/lib/x/up/at-root", b"r", 0o644),
    );
    let d = dir.path();
    assert_eq!(fs::read(d.join("usr/lib/libc.so")).unwrap(), b"elf");
    assert!(fs::symlink_metadata(d.join("lib"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(d.join("at-root")).unwrap(), b"r");
}

#[test]
fn dotdot_refused() {
    require_root();
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("dest");
    fs::create_dir(&dest).unwrap();
    for path in ["../evil", "a/../../evil", "./../evil", "/../evil"] {
        let bytes = Layer::new().file(path, b"pwned", 0o644).bytes();
        let result = unpack_layer(&bytes[..], &dest);
        assert!(
            matches!(result, Err(UnpackError::Escape { .. })),
            "{path}: {result:?}"
        );
        assert!(!parent.path().join("evil").exists(), "{path}");
    }
    // `..` that stays inside is resolved lexically.
    let (dir, _) = unpack_ok(Layer::new().file("a/../b", b"ok", 0o644));
    assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"ok");
    let (_dir, result) = unpack(Layer::new().symlink("s", "x").hardlink("h", "../s"));
    assert!(
        matches!(result, Err(UnpackError::Escape { .. })),
        "{result:?}"
    );
}

#[test]
fn device_nodes() {
    let (dir, _) = unpack_ok(
        Layer::new()
            .dir("dev/", 0o755)
            .device(EntryType::Char, "dev/null", 1, 3)
            .device(EntryType::Block, "dev/loop9", 7, 9)
            .device(EntryType::Char, "dev/big", 511, 70000),
    );
    let d = dir.path();
    let null = fs::symlink_metadata(d.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    assert_eq!(null.mode() & 0o7777, 0o660);
    let lp = fs::symlink_metadata(d.join("dev/loop9")).unwrap();
    assert!(lp.file_type().is_block_device());
    assert_eq!((libc::major(lp.rdev()), libc::minor(lp.rdev())), (7, 9));
    let big = fs::symlink_metadata(d.join("dev/big")).unwrap();
    assert_eq!(
        (libc::major(big.rdev()), libc::minor(big.rdev())),
        (511, 70000)
    );
}

#[test]
fn fifo() {
    let mut layer = Layer::new();
    let mut h = Layer::header(EntryType::Fifo, "run/initctl", 0o600);
    h.set_uid(7);
    layer.dir("run/", 0o755).append(h, b"");
    let (dir, _) = unpack_ok(&mut layer);
    let m = fs::symlink_metadata(dir.path().join("run/initctl")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(m.uid(), 7);
    // mtime set without opening the fifo (which would block).
    assert_eq!(m.mtime(), 1_600_000_000);
}

#[test]
fn xattrs_kept() {
    let (dir, _) = unpack_ok(
        Layer::new()
            .pax(&[
                ("SCHILY.xattr.user.foo", b"bar"),
                ("SCHILY.xattr.user.bin", b"\x00\xff\n="),
            ])
            .file("f", b"data", 0o644)
            .pax(&[("SCHILY.xattr.user.dir", b"d")])
            .dir("d/", 0o755)
            // trusted.* from a layer is dropped: it would let a layer forge overlayfs markers.
            .pax(&[("SCHILY.xattr.trusted.overlay.redirect", b"/etc")])
            .dir("forged/", 0o755)
            // A security.* label the host may refuse is a warning, not a failure.
            .pax(&[("SCHILY.xattr.security.soci-test", b"label")])
            .file("labelled", b"", 0o644),
    );
    let d = dir.path();
    assert_eq!(
        xattr::get(d.join("f"), "user.foo").unwrap(),
        Some(b"bar".to_vec())
    );
    assert_eq!(
        xattr::get(d.join("f"), "user.bin").unwrap(),
        Some(b"\x00\xff\n=".to_vec())
    );
    assert_eq!(
        xattr::get(d.join("d"), "user.dir").unwrap(),
        Some(b"d".to_vec())
    );
    assert_eq!(
        xattr::get(d.join("forged"), "trusted.overlay.redirect").unwrap(),
        None
    );
    assert!(d.join("labelled").is_file());
}

#[test]
fn mtimes_kept_including_directories() {
    let mut layer = Layer::new();
    let mut h = Layer::header(EntryType::Directory, "d/", 0o755);
    h.set_mtime(1_000_000_000);
    layer.append(h, b"");
    let mut h = Layer::header(EntryType::Directory, "d/sub/", 0o755);
    h.set_mtime(1_100_000_000);
    layer.append(h, b"");
    let mut h = Layer::header(EntryType::Regular, "d/sub/f", 0o644);
    h.set_mtime(1_200_000_000);
    layer.append(h, b"late child");
    let mut h = Layer::header(EntryType::Symlink, "d/link", 0o777);
    h.set_mtime(1_300_000_000);
    h.set_link_name_literal("sub/f").unwrap();
    layer.append(h, b"");
    // Written after the directories: their mtimes must still be the archive's.
    layer.file("d/sub/later", b"", 0o644);
    layer.file("d/.wh.gone", b"", 0o644);
    layer.pax(&[("mtime", b"1400000000.123456789")]);
    layer.file("precise", b"", 0o644);
    // The layer root's metadata goes to the destination itself.
    let mut h = Layer::header(EntryType::Directory, "./", 0o751);
    h.set_mtime(900_000_000);
    layer.append(h, b"");

    let (dir, _) = unpack_ok(&mut layer);
    let d = dir.path();
    let meta = |p: &str| fs::symlink_metadata(d.join(p)).unwrap();
    assert_eq!(meta("d").mtime(), 1_000_000_000);
    assert_eq!(meta("d/sub").mtime(), 1_100_000_000);
    assert_eq!(meta("d/sub/f").mtime(), 1_200_000_000);
    // The link's own time, not its target's.
    assert_eq!(meta("d/link").mtime(), 1_300_000_000);
    assert_eq!(meta("precise").mtime(), 1_400_000_000);
    assert_eq!(meta("precise").mtime_nsec(), 123_456_789);
    assert_eq!(meta("").mtime(), 900_000_000);
    assert_eq!(meta("").mode() & 0o7777, 0o751);
}

#[test]
fn later_entries_replace_earlier_ones() {
    let (dir, stats) = unpack_ok(
        Layer::new()
            .file("x", b"file first", 0o644)
            .dir("x/", 0o700)
            .file("x/child", b"c", 0o644)
            .dir("y/", 0o755)
            .file("y/child", b"c", 0o644)
            .file("y", b"file replaces dir", 0o600)
            .dir("m/", 0o755)
            .file("m/a", b"a", 0o644)
            .dir("m/", 0o711)
            .file("m/b", b"b", 0o644)
            .file("f", b"old", 0o644)
            .file("f", b"new", 0o640)
            .symlink("s", "old")
            .symlink("s", "new"),
    );
    let d = dir.path();
    assert!(d.join("x").is_dir());
    assert_eq!(fs::read(d.join("x/child")).unwrap(), b"c");
    assert_eq!(fs::read(d.join("y")).unwrap(), b"file replaces dir");
    assert_eq!(mode_of(&d.join("y")), 0o600);
    // A directory over a directory merges and takes the later metadata.
    assert!(d.join("m/a").is_file() && d.join("m/b").is_file());
    assert_eq!(mode_of(&d.join("m")), 0o711);
    assert_eq!(fs::read(d.join("f")).unwrap(), b"new");
    assert_eq!(mode_of(&d.join("f")), 0o640);
    assert_eq!(fs::read_link(d.join("s")).unwrap(), PathBuf::from("new"));
    assert_eq!(stats.bytes, (10 + 1 + 1 + 17 + 1 + 1 + 3 + 3) as u64);
}

#[test]
fn long_names_from_gnu_and_pax_headers() {
    let long_dir = format!("{}/", "d".repeat(120));
    let long_file = format!("{long_dir}{}", "f".repeat(150));
    let mut layer = Layer::new();
    // The builder writes a GNU long-name entry for names over 100 bytes.
    let mut h = Layer::header(EntryType::Directory, "placeholder", 0o755);
    h.set_cksum();
    layer.b.append_data(&mut h, &long_dir, &b""[..]).unwrap();
    let mut h = Layer::header(EntryType::Regular, "placeholder", 0o644);
    h.set_size(4);
    layer
        .b
        .append_data(&mut h, &long_file, &b"long"[..])
        .unwrap();
    // PAX path and linkpath override the header's name and link fields.
    let pax_name = format!("{long_dir}{}", "p".repeat(200));
    layer.pax(&[("path", pax_name.as_bytes())]);
    layer.file("ignored-header-name", b"pax", 0o644);
    layer.pax(&[("linkpath", long_file.as_bytes())]);
    layer.hardlink("hl", "ignored-link-name");
    let (dir, _) = unpack_ok(&mut layer);
    let d = dir.path();
    assert_eq!(fs::read(d.join(&long_file)).unwrap(), b"long");
    assert_eq!(fs::read(d.join(&pax_name)).unwrap(), b"pax");
    assert!(!d.join("ignored-header-name").exists());
    assert_eq!(
        fs::metadata(d.join("hl")).unwrap().ino(),
        fs::metadata(d.join(&long_file)).unwrap().ino()
    );
}

#[test]
fn large_file_and_stats() {
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (dir, stats) = unpack_ok(Layer::new().dir("a/", 0o755).file("a/big", &data, 0o644));
    assert_eq!(fs::read(dir.path().join("a/big")).unwrap(), data);
    assert_eq!(
        stats,
        UnpackStats {
            entries: 2,
            bytes: 300_000,
            whiteouts: 0,
            opaque_dirs: 0
        }
    );
}

#[test]
fn gzip_layers_including_multi_member() {
    use flate2::{write::GzEncoder, Compression};
    require_root();
    let tar = Layer::new()
        .dir("etc/", 0o755)
        .file("etc/hostname", b"soci\n", 0o644)
        .file("etc/.wh.motd", b"", 0o644)
        .bytes();
    let gz = |bytes: &[u8]| {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    // One member, and the same tar split across two concatenated members.
    let single = gz(&tar);
    let mut multi = gz(&tar[..700]);
    multi.extend(gz(&tar[700..]));
    for blob in [&single, &multi] {
        let dir = tempfile::tempdir().unwrap();
        let stats = unpack_gzip_layer(&blob[..], dir.path()).unwrap();
        assert_eq!(
            fs::read(dir.path().join("etc/hostname")).unwrap(),
            b"soci\n"
        );
        assert!(is_whiteout(&dir.path().join("etc/motd")));
        assert_eq!(stats.whiteouts, 1);
    }
    // A truncated gzip stream fails even though the tar's end may already have been seen.
    let dir = tempfile::tempdir().unwrap();
    let result = unpack_gzip_layer(&single[..single.len() - 4], dir.path());
    assert!(
        matches!(result, Err(UnpackError::Stream { .. })),
        "{result:?}"
    );
}

#[test]
fn malformed_input_errors_without_panicking() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    assert!(unpack_layer(&[0x42u8; 1500][..], dir.path()).is_err());
    // A missing destination is reported as such.
    let missing = dir.path().join("missing");
    assert!(matches!(
        unpack_layer(&b""[..], &missing),
        Err(UnpackError::Destination { .. })
    ));
    // Truncated inside file data.
    let good = Layer::new()
        .dir("d/", 0o755)
        .file("d/f", &[7u8; 5000], 0o644)
        .file("d/g", b"g", 0o644)
        .bytes();
    let dir = tempfile::tempdir().unwrap();
    let result = unpack_layer(&good[..3000], dir.path());
    assert!(
        matches!(result, Err(UnpackError::Stream { .. })),
        "{result:?}"
    );

    // Bit flips in headers (with checksums fixed up so parsing goes past them): any outcome but a
    // panic or a write outside the destination is fine.
    let base = Layer::new()
        .dir("d/", 0o755)
        .file("d/f", b"hello", 0o644)
        .symlink("d/s", "f")
        .hardlink("d/h", "d/f")
        .device(EntryType::Char, "d/c", 1, 3)
        .pax(&[("SCHILY.xattr.user.a", b"b"), ("mtime", b"5.5")])
        .file("d/.wh.x", b"", 0o644)
        .bytes();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let outer = tempfile::tempdir().unwrap();
    for round in 0..300 {
        let mut bytes = base.clone();
        for _ in 0..1 + next() % 4 {
            let pos = (next() as usize) % bytes.len();
            bytes[pos] = next() as u8;
        }
        for block in bytes.chunks_mut(512) {
            if &block[257..262] == b"ustar" {
                let mut h = Header::new_old();
                h.as_mut_bytes().copy_from_slice(block);
                h.set_cksum();
                block.copy_from_slice(h.as_bytes());
            }
        }
        let dest = outer.path().join(format!("r{round}"));
        fs::create_dir(&dest).unwrap();
        let _ = unpack_layer(&bytes[..], &dest);
    }
    let names: Vec<_> = fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| n.to_string_lossy().starts_with('r')),
        "something was written next to the destinations: {names:?}"
    );
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.0).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("umount {} failed: {status:?}", self.0.display());
        }
    }
}

#[test]
fn overlay_honours_whiteouts_and_opaque_dirs() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let lower = root.path().join("lower");
    let layer = root.path().join("layer");
    let target = root.path().join("merged");
    for d in [&lower, &layer, &target] {
        fs::create_dir(d).unwrap();
    }
    // The bottom layer, as a plain directory.
    fs::create_dir_all(lower.join("opq")).unwrap();
    fs::create_dir_all(lower.join("plain")).unwrap();
    fs::write(lower.join("gone"), b"deleted above").unwrap();
    fs::write(lower.join("keep"), b"kept").unwrap();
    fs::write(lower.join("opq/old"), b"hidden by opaque").unwrap();
    fs::write(lower.join("plain/lowerfile"), b"merged").unwrap();
    fs::write(lower.join("plain/gone-too"), b"deleted above").unwrap();

    let stats = unpack_layer(
        &Layer::new()
            .file(".wh.gone", b"", 0o644)
            .dir("opq/", 0o755)
            .file("opq/.wh..wh..opq", b"", 0o644)
            .file("opq/new", b"from the layer", 0o644)
            .file("plain/.wh.gone-too", b"", 0o644)
            .file("plain/upperfile", b"added", 0o644)
            .bytes()[..],
        &layer,
    )
    .unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (2, 1));

    let lowerdir = format!("lowerdir={}:{}", layer.display(), lower.display());
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &lowerdir])
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "mount -t overlay failed: {status}");
    let _mounted = Mount(target.clone());

    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(!target.join("gone").exists());
    assert_eq!(fs::read(target.join("keep")).unwrap(), b"kept");
    assert_eq!(names(&target), ["keep", "opq", "plain"]);
    assert_eq!(names(&target.join("opq")), ["new"]);
    assert_eq!(names(&target.join("plain")), ["lowerfile", "upperfile"]);
    assert_eq!(fs::read(target.join("opq/new")).unwrap(), b"from the layer");
    // The unpacked layer keeps the markers overlayfs reads; they are not visible in the merge.
    assert!(is_whiteout(&layer.join("gone")));
}

#[test]
fn tar_ending_right_after_the_last_data_is_complete_but_cut_data_is_not() {
    require_root();
    // umoci writes layers like this: no padding after the last file, no end-of-archive blocks.
    let mut layer = Layer::new();
    layer
        .dir("app/", 0o755)
        .file("app/app.py", b"print('ready')\n", 0o644);
    let full = layer.bytes();
    let cut = &full[..512 * 2 + 15];
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(cut, dir.path()).unwrap();
    assert_eq!(
        fs::read(dir.path().join("app/app.py")).unwrap(),
        b"print('ready')\n"
    );
    // Cut inside the file's data: an error, not a short file.
    let dir = tempfile::tempdir().unwrap();
    let err = unpack_layer(&full[..512 * 2 + 7], dir.path()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

/// gzip of `bytes`, one member.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use flate2::{write::GzEncoder, Compression};
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn descriptor(media_type: oci::MediaType, blob: &[u8]) -> oci::Descriptor {
    oci::Descriptor::new(media_type, blob.len() as u64, oci::digest::sha256(blob))
}

fn hostname_layer() -> Vec<u8> {
    Layer::new()
        .dir("etc/", 0o755)
        .file("etc/hostname", b"soci\n", 0o644)
        .bytes()
}

#[test]
fn layer_blobs_are_unpacked_by_media_type_and_verified_against_their_descriptor() {
    require_root();
    let tar = hostname_layer();
    let blob = gzip(&tar);
    let zstd = zstd::encode_all(&tar[..], 3).unwrap();
    let diff_id = oci::digest::sha256(&tar);
    for (media_type, bytes) in [
        (oci::MediaType::ImageLayerGzip, &blob),
        (oci::MediaType::ImageLayerZstd, &zstd),
        (oci::MediaType::ImageLayer, &tar),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let desc = descriptor(media_type, bytes);
        unpack_layer_blob(&bytes[..], &desc, Some(&diff_id), dir.path()).unwrap();
        assert_eq!(
            fs::read(dir.path().join("etc/hostname")).unwrap(),
            b"soci\n"
        );
    }
}

#[test]
fn a_layer_whose_tar_is_not_its_diff_id_is_refused() {
    require_root();
    let tar = hostname_layer();
    let blob = gzip(&tar);
    let desc = descriptor(oci::MediaType::ImageLayerGzip, &blob);
    // The blob is what the manifest names, but the config names another tar.
    let wrong = oci::digest::sha256(b"another tar");
    let dir = tempfile::tempdir().unwrap();
    let err = unpack_layer_blob(&blob[..], &desc, Some(&wrong), dir.path()).unwrap_err();
    let LayerBlobError::DiffIdMismatch {
        digest, diff_id, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(digest, &oci::digest::sha256(&tar).to_string());
    assert_eq!(diff_id, &wrong.to_string());
    assert!(err.to_string().contains("diff ID"), "{err}");
}

#[test]
fn a_layer_blob_with_the_wrong_digest_is_refused() {
    require_root();
    let blob = gzip(&hostname_layer());
    // Bytes of the right size that are not the layer the descriptor names.
    let desc = oci::Descriptor::new(
        oci::MediaType::ImageLayerGzip,
        blob.len() as u64,
        oci::digest::sha256(b"another layer"),
    );
    let dir = tempfile::tempdir().unwrap();
    let err = unpack_layer_blob(&blob[..], &desc, None, dir.path()).unwrap_err();
    let LayerBlobError::Mismatch { layer, digest, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(layer, &desc.digest().to_string());
    assert_eq!(digest, &oci::digest::sha256(&blob).to_string());
    assert!(err.to_string().contains("other bytes"), "{err}");

    // A source that sends more than the descriptor's size is refused too, after reading at
    // most one byte too many.
    let tar = hostname_layer();
    let desc = descriptor(oci::MediaType::ImageLayer, &tar);
    let mut longer = tar.clone();
    longer.extend_from_slice(&[0; 4096]);
    let dir = tempfile::tempdir().unwrap();
    let err = unpack_layer_blob(&longer[..], &desc, None, dir.path()).unwrap_err();
    assert!(
        matches!(err, LayerBlobError::Mismatch { size, .. } if size == tar.len() as u64 + 1),
        "{err:?}"
    );
}

#[test]
fn unknown_layers_get_a_typed_error_before_anything_is_read() {
    require_root();
    let blob = hostname_layer();
    let media_type = oci::MediaType::Other("application/x-squashfs".into());
    let desc = descriptor(media_type, &blob);
    let dir = tempfile::tempdir().unwrap();
    let mut reader = &blob[..];
    // Borrowed so that what was read shows in `reader` afterwards (a copied slice would not).
    #[allow(clippy::needless_borrows_for_generic_args)]
    let err = unpack_layer_blob(&mut reader, &desc, None, dir.path()).unwrap_err();
    let LayerBlobError::Unsupported { compression, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(
        compression,
        &LayerCompression::Unknown("application/x-squashfs".into())
    );
    assert_eq!(reader.len(), blob.len(), "nothing was read");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(
        err.to_string()
            .contains("only gzip, zstd and uncompressed tar"),
        "{err}"
    );
}
