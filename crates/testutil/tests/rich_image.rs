//! `rich_image()` unpacked by umoci shows every overlay effect it was built for, and the
//! tree snapshot sees them: this validates the layer builder (whiteouts, opaque dirs, PAX
//! xattrs, owners, devices, hard links) and `tree::snapshot` against a real extractor.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use testutil::tree::{self, DiffOptions, Kind};
use testutil::*;

/// The contents of the regular file (or hard link target) `path` in the image's last layer
/// that defines it.
fn data_of(spec: &ImageSpec, path: &str) -> Vec<u8> {
    let mut found = None;
    for l in &spec.layers {
        for e in &l.entries {
            if let EntrySpec::Node(NodeSpec {
                path: p,
                kind: NodeKind::File(d),
                ..
            }) = e
            {
                if p == path {
                    found = Some(d.clone());
                }
            }
        }
    }
    found.unwrap_or_else(|| panic!("{path} is not a file of the spec"))
}

fn sha(d: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, d).as_ref());
    out
}

#[test]
fn rich_image_unpacks_with_every_overlay_effect() {
    require_tool("umoci");
    let t = tempfile::tempdir().unwrap();
    let layout = t.path().join("layout");
    let spec = rich_image();
    let built = write_oci_layout(&layout, "rich", std::slice::from_ref(&spec));
    let layers = &built[0].layers;
    assert_eq!(layers.len(), 3);
    assert!(
        layers[0].size >= 10 << 20,
        "layer 1 is {} bytes compressed",
        layers[0].size
    );
    assert!(layers[1].size < 1 << 20 && layers[2].size < 1 << 20);
    assert!(layers
        .iter()
        .all(|l| l.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"));

    let rootfs = umoci_unpack(&layout, "rich", &t.path().join("bundle"));
    let s = tree::snapshot(&rootfs);
    let get = |p: &str| {
        s.get(p)
            .unwrap_or_else(|| panic!("{p} missing from the unpack"))
    };
    let absent = |p: &str| assert!(s.get(p).is_none(), "{p} should be gone: {:?}", s.get(p));

    // Layer 1 basics: types, modes, owners, contents, symlinks, devices.
    let root = get("");
    assert_eq!((root.kind, root.uid, root.gid), (Kind::Dir, 0, 0));
    let big = get("usr/lib/big.bin");
    assert_eq!(big.size, RICH_BIG_FILE_SIZE as u64);
    assert_eq!(
        big.sha256,
        Some(sha(&data_of(&spec, "usr/lib/big.bin"))),
        "big file content"
    );
    assert_eq!(big.mtime, (DEFAULT_MTIME as i64, 0));
    let empty = get("etc/empty.conf");
    assert_eq!((empty.kind, empty.size), (Kind::File, 0));
    assert_eq!(empty.sha256, Some(sha(b"")));
    let shadow = get("etc/shadow");
    assert_eq!((shadow.mode, shadow.uid, shadow.gid), (0o640, 0, 42));
    let editor = get("etc/alternatives/editor");
    assert_eq!(editor.kind, Kind::Symlink);
    assert_eq!(editor.target.as_deref(), Some(Path::new("/usr/bin/vi")));
    assert_eq!(editor.mtime, (DEFAULT_MTIME as i64, 0));
    assert_eq!(get("usr/bin/view").target.as_deref(), Some(Path::new("vi")));
    assert_eq!(
        get("usr/lib/libx.so").target.as_deref(),
        Some(Path::new("libx.so.1"))
    );
    assert_eq!(get("usr/bin/sudo").mode, 0o4755);
    let wall = get("usr/bin/wall");
    assert_eq!((wall.mode, wall.uid, wall.gid), (0o2755, 0, 5));
    assert_eq!(get("tmp").mode, 0o1777);
    let mail = get("var/mail");
    assert_eq!((mail.kind, mail.mode, mail.gid), (Kind::Dir, 0o2775, 8));
    for p in ["home/user/.profile", "home/user/notes.txt"] {
        assert_eq!((get(p).uid, get(p).gid), (1000, 1000), "{p}");
    }
    assert_eq!(get("home/user/notes.txt").mode, 0o600);
    for p in ["var/empty", "var/empty/owned-by-nobody"] {
        assert_eq!((get(p).uid, get(p).gid), (65534, 65534), "{p}");
    }
    let null = get("dev/null");
    assert_eq!(
        (null.kind, null.rdev, null.mode),
        (Kind::CharDevice, Some((1, 3)), 0o666)
    );
    let loop0 = get("dev/loop0");
    assert_eq!(
        (loop0.kind, loop0.rdev, loop0.mode, loop0.gid),
        (Kind::BlockDevice, Some((7, 0)), 0o660, 6)
    );
    let initctl = get("run/initctl");
    assert_eq!(
        (initctl.kind, initctl.mode, initctl.rdev),
        (Kind::Fifo, 0o600, None)
    );

    // PAX xattrs, on a file and on a directory.
    let ping = get("usr/bin/ping");
    let x = |e: &tree::Entry, k: &str| e.xattrs.get(OsStr::new(k)).cloned();
    assert_eq!(x(ping, "user.comment"), Some(b"ping with caps".to_vec()));
    assert_eq!(x(ping, "user.unicode"), Some("héllo ✓".as_bytes().to_vec()));
    assert_eq!(ping.xattrs.len(), 2, "{:?}", ping.xattrs);
    assert_eq!(x(get("usr/lib"), "user.dirattr"), Some(b"lib".to_vec()));
    assert!(get("usr/bin/vi").xattrs.is_empty());

    // Hard links: the pair of layer 1 stays; gunzip, replaced by layer 2, is no longer one.
    let pair: BTreeSet<PathBuf> = ["usr/lib/libx.so.1", "usr/lib/libx.so.1.0"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(s.hardlink_groups(), &[pair]);
    assert!(s.hardlinks_of("usr/bin/gzip").is_none());
    assert_eq!(
        get("usr/bin/gunzip").sha256,
        Some(sha(&data_of(&spec, "usr/bin/gunzip")))
    );
    assert_ne!(get("usr/bin/gunzip").sha256, get("usr/bin/gzip").sha256);

    // Layer 2: whiteouts of a file and of a directory tree; no whiteout file shows.
    absent("etc/old.conf");
    absent("etc/.wh.old.conf");
    absent("usr/share/doc/.wh.pkg");
    absent("usr/share/doc/pkg/copyright");
    absent("usr/share/doc/pkg/deep");
    // Opaque directory: only this layer's file is left.
    let cache: Vec<&Path> = s
        .entries()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with("usr/lib/cache") && *p != Path::new("usr/lib/cache"))
        .collect();
    assert_eq!(cache, [Path::new("usr/lib/cache/new")]);
    // Changed content and mode, new file, directory metadata change.
    let app = get("etc/app.conf");
    assert_eq!(app.mode, 0o600);
    assert_eq!(app.sha256, Some(sha(b"mode=new\nlevel=2\n")));
    assert_eq!(app.mtime, (RICH_MTIME_2 as i64, 0));
    assert_eq!(get("etc/new.conf").sha256, Some(sha(b"new=yes\n")));
    let home = get("home/user");
    assert_eq!((home.mode, home.uid, home.gid), (0o700, 1000, 1000));

    // Layer 3: deep new tree, symlink to layer 2's file, directory recreated over a whiteout.
    let init = get("opt/app/lib/python3/site-packages/pkg/__init__.py");
    assert_eq!(init.kind, Kind::File);
    assert_eq!(init.mtime, (RICH_MTIME_3 as i64, 0));
    let link = get("opt/app/new.conf");
    assert_eq!(
        link.target.as_deref(),
        Some(Path::new("../../etc/new.conf"))
    );
    assert_eq!(
        std::fs::read(rootfs.join("opt/app/new.conf")).unwrap(),
        b"new=yes\n"
    );
    let pkg: Vec<&Path> = s
        .entries()
        .map(|(p, _)| p)
        .filter(|p| p.starts_with("usr/share/doc/pkg"))
        .collect();
    assert_eq!(
        pkg,
        [
            Path::new("usr/share/doc/pkg"),
            Path::new("usr/share/doc/pkg/NEWS")
        ]
    );

    // Nothing named like a whiteout anywhere.
    assert!(s
        .entries()
        .all(|(p, _)| !p.to_string_lossy().contains(".wh.")));

    // A second unpack of the same layout is identical, mtimes included; a changed tree is
    // not.
    let again = tree::snapshot(&umoci_unpack(&layout, "rich", &t.path().join("bundle2")));
    assert_eq!(again.len(), s.len());
    tree::assert_same(&s, &again, &DiffOptions::default());
    std::fs::remove_file(rootfs.join("usr/lib/libx.so.1")).unwrap();
    std::fs::write(rootfs.join("usr/lib/libx.so.1"), b"other").unwrap();
    let changed = tree::snapshot(&rootfs);
    let d = tree::diff(&again, &changed, &DiffOptions::default());
    assert!(
        d.iter().any(|l| l.contains("usr/lib/libx.so.1: content"))
            && d.iter().any(|l| l.contains("hard links")),
        "{d:#?}"
    );
}

#[test]
fn rich_image_is_deterministic() {
    let t = tempfile::tempdir().unwrap();
    let a = write_oci_layout(&t.path().join("a"), "x", &[rich_image()]);
    let b = write_oci_layout(&t.path().join("b"), "x", &[rich_image()]);
    assert_eq!(a, b);
}
