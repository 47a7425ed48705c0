//! End-to-end tests of `soci mount`/`soci unmount`: images pushed to Debian's real
//! `docker-registry` on loopback, indexed with `soci create`/`soci push`, mounted through real
//! FUSE and overlayfs.

use serde_json::Value;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use testutil::Registry;

mod common;
use common::{fails, ok, soci};

/// Unmounts on drop, so a failing test leaves no mount behind.
struct MountGuard {
    root: PathBuf,
    dir: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = soci(
                &self.root,
                &["unmount", "--force", self.dir.to_str().unwrap()],
            );
        }
    }
}

fn is_mounted(dir: &Path) -> bool {
    let dir = std::fs::canonicalize(dir).unwrap_or(dir.to_owned());
    lazyfs::overlay::is_mounted(&dir)
}

/// Pushes `spec` as `name`, indexes it (`extra` flags to `soci create`) and pushes the index.
fn push_and_index(
    reg: &Registry,
    tmp: &Path,
    root: &Path,
    name: &str,
    spec: testutil::ImageSpec,
    extra: &[&str],
) -> (String, testutil::BuiltImage) {
    let dir = tmp.join(format!("layout-{}", name.replace(['/', ':'], "-")));
    let built = testutil::write_oci_layout(&dir, "latest", &[spec]);
    let r = format!("{}/{name}", reg.addr());
    testutil::skopeo_push(&dir, "latest", &r, None);
    let mut args = vec!["create"];
    args.extend_from_slice(extra);
    args.push(&r);
    ok(soci(root, &args));
    ok(soci(root, &["push", &r]));
    (r, built.into_iter().next().unwrap())
}

/// What [`start_sample_app`] returns: ((registry, temporary directory), state root,
/// mountpoint, image reference, built image). The registry and the directory live as long
/// as the caller keeps them.
type SampleApp = (
    (Registry, tempfile::TempDir),
    PathBuf,
    PathBuf,
    String,
    testutil::BuiltImage,
);

/// The sample image pushed as `app:v1` to a fresh registry and indexed (`extra` flags to
/// `soci create`), with a state root and a mountpoint in one temporary directory.
fn start_sample_app(extra: &[&str]) -> SampleApp {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let (image, built) = push_and_index(
        &reg,
        tmp.path(),
        &root,
        "app:v1",
        testutil::sample_image(),
        extra,
    );
    let dir = tmp.path().join("mnt");
    ((reg, tmp), root, dir, image, built)
}

/// Asserts that `name` reads through the mount at `dir` as it is in the sample image.
fn assert_reads_sample(dir: &Path, name: &str) {
    assert_eq!(
        std::fs::read(dir.join(name)).unwrap(),
        sample_file(name),
        "{name}"
    );
}

/// The statistics of the image's bottom layer in the mount at `dir`.
fn base_layer_stats(root: &Path, dir: &Path, built: &testutil::BuiltImage) -> Value {
    stats(root, dir)
        .into_iter()
        .find(|l| l["digest"] == built.layers[0].digest.as_str())
        .unwrap()
}

fn mount(root: &Path, image: &str, dir: &Path, extra: &[&str]) -> MountGuard {
    let mut args = vec!["mount"];
    args.extend_from_slice(extra);
    args.push(image);
    args.push(dir.to_str().unwrap());
    let out = ok(soci(root, &args));
    assert!(out.contains("mounted "), "{out}");
    MountGuard {
        root: root.to_owned(),
        dir: dir.to_owned(),
    }
}

/// The server's per-layer statistics (`soci mount --stats` reads the same file).
fn stats(root: &Path, dir: &Path) -> Vec<Value> {
    let out = ok(soci(root, &["mount", "--stats", dir.to_str().unwrap()]));
    assert!(out.contains("total:"), "{out}");
    let mounts = root.join("mounts");
    let state = std::fs::read_dir(&mounts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            std::fs::read_to_string(p.join("state.json"))
                .is_ok_and(|s| s.contains(std::fs::canonicalize(dir).unwrap().to_str().unwrap()))
        })
        .expect("state of the mount");
    serde_json::from_slice(&std::fs::read(state.join("stats.json")).unwrap()).unwrap()
}

fn read_at(path: &Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

fn sample_file(name: &str) -> Vec<u8> {
    let spec = testutil::sample_image();
    for layer in &spec.layers {
        for e in &layer.entries {
            if let testutil::EntrySpec::File(f) = e {
                if f.path == name {
                    return f.data.clone();
                }
            }
        }
    }
    panic!("{name} is not in the sample image")
}

#[test]
fn lazy_mount_reads_only_what_is_used_and_survives_registry_outage_and_corruption() {
    // Spans of 4 MiB: usr/bin/small shares its span with the end of usr/bin/tool.
    let ((mut reg, _tmp), root, dir, r, built) = start_sample_app(&["--span-size", "4194304"]);
    let guard = mount(&root, &r, &dir, &["--no-background-fetch"]);

    // The tree is there without reading any file data.
    let mut names: Vec<String> = std::fs::read_dir(dir.join("usr/bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alias", "small", "tool", "tool2"]);
    assert_eq!(
        std::fs::read_link(dir.join("usr/bin/alias")).unwrap(),
        Path::new("tool")
    );
    // The small layer (no zTOC) was unpacked.
    assert_eq!(
        std::fs::read(dir.join("etc/config")).unwrap(),
        b"key=value\n"
    );
    let before: u64 = stats(&root, &dir)
        .iter()
        .filter(|l| l["lazy"] == true)
        .map(|l| l["bytes_fetched"].as_u64().unwrap())
        .sum();
    assert_eq!(before, 0, "nothing fetched before a read");

    // A 5 kB file costs one span of the 10+ MB layer.
    assert_reads_sample(&dir, "usr/bin/small");
    let base = base_layer_stats(&root, &dir, &built);
    assert_eq!(base["spans_fetched"], 1, "{base}");
    assert!(
        base["bytes_fetched"].as_u64().unwrap() < base["size"].as_u64().unwrap() / 2,
        "{base}"
    );

    // Registry down: bytes of the span already fetched are still served (from the disk
    // cache: this part of `tool` was never read, so the page cache does not hold it)...
    let tool = sample_file("usr/bin/tool");
    reg.stop();
    let got = read_at(&dir.join("usr/bin/tool"), 9_500_000, 4096).unwrap();
    assert_eq!(got, tool[9_500_000..9_500_000 + 4096]);
    // ...while a span never fetched fails with EIO after bounded retries.
    let started = std::time::Instant::now();
    let err = std::fs::read(dir.join("usr/lib/notes.txt")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        started.elapsed().as_secs() < 60,
        "the failing read was not bounded"
    );
    // The registry is back: the same read succeeds.
    reg.restart();
    assert_reads_sample(&dir, "usr/lib/notes.txt");

    // Corrupt the third layer's blob in the registry's storage: the span holding the damage
    // fails verification and its reads get EIO, never wrong bytes.
    let data = sample_file("opt/data.bin");
    let blob = reg.blob_data_path(&built.layers[2].digest);
    let size = std::fs::metadata(&blob).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&blob).unwrap();
    f.write_all_at(&[0x55; 64], size - 100_000).unwrap();
    drop(f);
    let head = read_at(&dir.join("opt/data.bin"), 0, 65536).unwrap();
    assert_eq!(head, data[..65536], "spans before the damage read fine");
    let mut whole = Vec::new();
    let err = File::open(dir.join("opt/data.bin"))
        .unwrap()
        .read_to_end(&mut whole)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(
        whole[..],
        data[..whole.len()],
        "bytes before the EIO are right"
    );
    let s = stats(&root, &dir);
    let top = s
        .iter()
        .find(|l| l["digest"] == built.layers[2].digest.as_str())
        .unwrap();
    assert!(top["verification_failures"].as_u64().unwrap() >= 1, "{top}");

    // Unmount: prints the figures and leaves nothing mounted.
    let out = ok(soci(&root, &["unmount", dir.to_str().unwrap()]));
    assert!(out.contains("unmounted"), "{out}");
    assert!(!is_mounted(&dir));
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .all(|l| !l.contains(root.to_str().unwrap())));
    drop(guard);
}

#[test]
fn mount_refuses_an_image_without_index_and_unmount_cleans_up_after_a_killed_server() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let layout = tmp.path().join("layout");
    testutil::write_oci_layout(&layout, "latest", &[testutil::sample_image()]);
    let plain = format!("{}/plain:v1", reg.addr());
    testutil::skopeo_push(&layout, "latest", &plain, None);
    let dir = tmp.path().join("mnt");
    let err = fails(soci(&root, &["mount", &plain, dir.to_str().unwrap()]));
    assert!(err.contains("no SOCI index"), "{err}");
    assert!(err.contains("soci create"), "{err}");
    assert!(!is_mounted(&dir));

    // Index it, mount, and kill the server mid-way: unmount still cleans everything up.
    ok(soci(&root, &["create", &plain]));
    ok(soci(&root, &["push", &plain]));
    let guard = mount(&root, &plain, &dir, &["--no-background-fetch"]);
    let again = fails(soci(&root, &["mount", &plain, dir.to_str().unwrap()]));
    assert!(again.contains("already mounted"), "{again}");
    let state: Value = {
        let mounts = root.join("mounts");
        let entry = std::fs::read_dir(mounts).unwrap().next().unwrap().unwrap();
        serde_json::from_slice(&std::fs::read(entry.path().join("state.json")).unwrap()).unwrap()
    };
    let pid = state["pid"].as_u64().unwrap() as i32;
    // SAFETY: killing the server process the test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let err = std::fs::read(dir.join("usr/bin/small")).unwrap_err();
    assert!(err.raw_os_error().is_some(), "{err}");
    ok(soci(&root, &["unmount", dir.to_str().unwrap()]));
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .all(|l| !l.contains(root.to_str().unwrap())));
    drop(guard);
}

/// Mounts `image` and compares the whole tree with `expected` (umoci's unpack of the image).
fn assert_mount_matches_umoci(
    root: &Path,
    image: &str,
    dir: &Path,
    expected: &testutil::tree::Tree,
) {
    let guard = mount(root, image, dir, &["--no-background-fetch"]);
    let actual = testutil::tree::snapshot(dir);
    let opts = testutil::tree::DiffOptions::default();
    // Layer 2 lists `usr/lib/` again without the xattr layer 1 gave it. umoci applies layers
    // onto one directory and keeps the old xattr; overlayfs (containerd's default snapshotter,
    // and this mount) shows the topmost layer's directory, which has none.
    let known = ["usr/lib: xattr user.dirattr missing (expected \"lib\")"];
    let diff: Vec<String> = testutil::tree::diff(expected, &actual, &opts)
        .into_iter()
        .filter(|d| !known.contains(&d.as_str()))
        .collect();
    ok(soci(root, &["unmount", dir.to_str().unwrap()]));
    drop(guard);
    assert!(
        diff.is_empty(),
        "mount differs from umoci unpack:\n{}",
        diff.join("\n")
    );
}

#[test]
fn mounted_tree_equals_umoci_unpack_and_ls_cat_see_the_same_image() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    testutil::write_oci_layout(&layout, "latest", &[testutil::rich_image()]);
    let rootfs = testutil::umoci_unpack(&layout, "latest", &tmp.path().join("unpacked"));
    let expected = testutil::tree::snapshot(&rootfs);
    assert!(expected.len() > 40, "{} entries", expected.len());

    // Every layer lazy (FUSE), and the default (small layers unpacked).
    for (name, flags) in [
        ("all-lazy", vec!["--min-layer-size", "0"]),
        ("mixed", vec![]),
    ] {
        let root = tmp.path().join(format!("root-{name}"));
        let r = format!("{}/rich-{name}:v1", reg.addr());
        testutil::skopeo_push(&layout, "latest", &r, None);
        let mut args = vec!["create"];
        args.extend(flags.iter().copied());
        args.push(&r);
        ok(soci(&root, &args));
        ok(soci(&root, &["push", &r]));
        let dir = tmp.path().join(format!("mnt-{name}"));
        assert_mount_matches_umoci(&root, &r, &dir, &expected);

        // ls and cat see the merged image without mounting it.
        let ls = ok(soci(&root, &["ls", &r, "/etc"]));
        assert!(ls.contains(" new.conf"), "{ls}");
        assert!(!ls.contains("old.conf"), "whiteout ignored: {ls}");
        let cache = ok(soci(&root, &["ls", "--json", &r, "/usr/lib/cache"]));
        let cache: Value = serde_json::from_str(&cache).unwrap();
        let names: Vec<&str> = cache
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["new"], "opaque directory ignored");
        let doc = ok(soci(&root, &["ls", &r, "/usr/share/doc/pkg"]));
        assert_eq!(doc.lines().count(), 1, "{doc}");
        assert!(doc.contains("NEWS"), "{doc}");
        let via_link = ok(soci(&root, &["cat", &r, "/opt/app/new.conf"]));
        assert_eq!(
            via_link.as_bytes(),
            std::fs::read(rootfs.join("etc/new.conf")).unwrap()
        );
        let out = tmp.path().join(format!("big-{name}"));
        let err = soci(
            &root,
            &[
                "cat",
                "--stats",
                "-o",
                out.to_str().unwrap(),
                &r,
                "usr/lib/big.bin",
            ],
        );
        let stats = String::from_utf8_lossy(&err.stderr).into_owned();
        ok(err);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(rootfs.join("usr/lib/big.bin")).unwrap()
        );
        assert!(stats.contains("fetched"), "{stats}");
        let missing = fails(soci(&root, &["cat", &r, "/etc/old.conf"]));
        assert!(missing.contains("no such file"), "{missing}");
    }
}

#[test]
fn prefetch_before_ready_rw_mounts_and_forced_unmount_with_a_read_in_flight() {
    let ((mut reg, _tmp), root, dir, r, built) =
        start_sample_app(&["--prefetch-file", "/usr/lib/notes.txt"]);
    let guard = mount(&root, &r, &dir, &["--no-background-fetch", "--rw"]);
    // The prefetch artifact's span was fetched before the mount was reported ready.
    let base = base_layer_stats(&root, &dir, &built);
    assert_eq!(base["spans_fetched"], 1, "{base}");
    // Reading the prefetched file costs nothing more.
    assert_reads_sample(&dir, "usr/lib/notes.txt");
    let base = stats(&root, &dir)
        .into_iter()
        .find(|l| l["digest"] == built.layers[0].digest.as_str())
        .unwrap();
    assert_eq!(base["spans_fetched"], 1, "{base}");

    // --rw: writes land in the upper directory; the image underneath is untouched.
    std::fs::write(dir.join("etc/config"), b"changed\n").unwrap();
    std::fs::create_dir(dir.join("work")).unwrap();
    std::fs::write(dir.join("work/out.txt"), b"x").unwrap();
    std::fs::remove_file(dir.join("usr/bin/small")).unwrap();
    assert_eq!(std::fs::read(dir.join("etc/config")).unwrap(), b"changed\n");
    assert!(!dir.join("usr/bin/small").exists());

    // A read blocked on an unreachable registry, then a forced unmount: the unmount returns,
    // the reader gets an error, and nothing stays mounted.
    reg.stop();
    let tool = dir.join("opt/data.bin");
    let reader = std::thread::spawn(move || std::fs::read(tool));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    ok(soci(&root, &["unmount", "--force", dir.to_str().unwrap()]));
    assert!(started.elapsed().as_secs() < 30);
    assert!(reader.join().unwrap().is_err());
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .all(|l| !l.contains(root.to_str().unwrap())));
    drop(guard);
}

/// A loopback HTTP proxy in front of the registry that drops `Range` headers, like a registry
/// (or a cache in front of one) without range support. One request per connection.
fn range_stripping_proxy(upstream: String) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let lower = line.to_ascii_lowercase();
                    if line == "\r\n" {
                        break;
                    }
                    if lower.starts_with("range:") || lower.starts_with("connection:") {
                        continue;
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0u8; length];
                std::io::Read::read_exact(&mut reader, &mut body).unwrap();
                let mut up = std::net::TcpStream::connect(&upstream).unwrap();
                up.write_all(head.as_bytes()).unwrap();
                up.write_all(b"Connection: close\r\n\r\n").unwrap();
                up.write_all(&body).unwrap();
                let mut client = client;
                let _ = std::io::copy(&mut up, &mut client);
            });
        }
    });
    addr
}

#[test]
fn a_registry_without_range_support_costs_one_whole_download() {
    let ((reg, _tmp), root, dir, _, built) = start_sample_app(&[]);
    let proxy = range_stripping_proxy(reg.addr());
    let r = format!("{proxy}/app:v1");
    let guard = mount(&root, &r, &dir, &["--no-background-fetch"]);
    assert_reads_sample(&dir, "usr/bin/small");
    assert_reads_sample(&dir, "usr/lib/notes.txt");
    let base = base_layer_stats(&root, &dir, &built);
    // Two spans read, one request: the whole blob, kept and reused.
    assert_eq!(base["bytes_fetched"], base["size"], "{base}");
    assert_eq!(base["fetch_requests"], 1, "{base}");
    let log = std::fs::read_dir(root.join("mounts"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path().join("server.log")).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("does not support Range requests"), "{log}");
    ok(soci(&root, &["unmount", dir.to_str().unwrap()]));
    drop(guard);
}

#[test]
fn recorded_reads_become_a_prefetch_list() {
    let ((_reg, tmp), root, dir, r, _) = start_sample_app(&[]);
    let reads = tmp.path().join("reads.json");
    let ranges = tmp.path().join("ranges.json");
    let guard = mount(
        &root,
        &r,
        &dir,
        &[
            "--no-background-fetch",
            "--record-reads",
            reads.to_str().unwrap(),
            "--record-read-ranges",
            ranges.to_str().unwrap(),
        ],
    );
    std::fs::read(dir.join("usr/bin/small")).unwrap();
    std::fs::read(dir.join("etc/config")).unwrap(); // an unpacked layer: not a lazy read
    std::fs::read(dir.join("usr/lib/notes.txt")).unwrap();
    std::fs::read(dir.join("usr/bin/small")).unwrap();
    stats(&root, &dir);
    let list: Vec<String> = serde_json::from_slice(&std::fs::read(&reads).unwrap()).unwrap();
    assert_eq!(list, ["/usr/bin/small", "/usr/lib/notes.txt"]);
    // The bytes read are counted once per byte: `small` (5,000 B) read twice and
    // `notes.txt` (200,000 B) once.
    let out = ok(soci(&root, &["mount", "--stats", dir.to_str().unwrap()]));
    assert!(
        out.contains("read through the mount: 205000 bytes of 2 files"),
        "{out}"
    );
    let by_path: Value = serde_json::from_slice(&std::fs::read(&ranges).unwrap()).unwrap();
    assert_eq!(
        by_path,
        serde_json::json!({"/usr/bin/small": [[0, 5000]], "/usr/lib/notes.txt": [[0, 200000]]})
    );
    ok(soci(&root, &["unmount", dir.to_str().unwrap()]));
    drop(guard);

    // The list feeds `soci create`: a prefetch artifact for the base layer.
    let out = ok(soci(
        &root,
        &[
            "create",
            "--force",
            "--prefetch-files-json",
            reads.to_str().unwrap(),
            &r,
        ],
    ));
    assert!(out.contains("-> prefetch sha256:"), "{out}");
    // So does the byte-range file: the same spans here, as both files were read whole.
    let from_ranges = ok(soci(
        &root,
        &[
            "create",
            "--force",
            "--prefetch-files-json",
            ranges.to_str().unwrap(),
            &r,
        ],
    ));
    let prefetch_line = |out: &str| {
        out.lines()
            .find(|l| l.contains("-> prefetch sha256:"))
            .map(str::to_owned)
    };
    assert_eq!(
        prefetch_line(&from_ranges),
        prefetch_line(&out),
        "{from_ranges}"
    );
}

/// Polls the base layer's statistics (every 100 ms, at most 60 s) until `done` holds.
fn wait_base_stats(
    root: &Path,
    dir: &Path,
    built: &testutil::BuiltImage,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..600 {
        let s = base_layer_stats(root, dir, built);
        if done(&s) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "gave up waiting for {what}: {}",
        base_layer_stats(root, dir, built)
    );
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {stats}"))
}

#[test]
fn passthrough_hands_files_with_local_data_to_the_kernel() {
    let ((_reg, _tmp), root, dir, image, built) = start_sample_app(&["--min-layer-size", "0"]);
    let _guard = mount(&root, &image, &dir, &[]);
    wait_base_stats(&root, &dir, &built, "the background fetch", |s| {
        s["spans_cached"] == s["spans_total"]
    });
    let big = dir.join("usr/lib/libbig.so");
    let expected = sample_file("usr/lib/libbig.so");

    // First open after the data is local: served by us, and it queues the backing file.
    // Holding it open keeps the inode in the ordinary I/O mode: the next open must not
    // switch it to passthrough (the kernel would fail that open with EIO).
    let held = File::open(&big).unwrap();
    let mut head = vec![0u8; 4096];
    held.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, expected[..4096]);
    let s = wait_base_stats(&root, &dir, &built, "the backing file", |s| {
        counter(s, "backing_files") >= 1
    });
    assert_eq!(counter(&s, "passthrough_opens"), 0, "{s}");
    assert_eq!(read_at(&big, 4096, 4096).unwrap(), expected[4096..8192]);
    let s = base_layer_stats(&root, &dir, &built);
    assert_eq!(
        counter(&s, "passthrough_opens"),
        0,
        "an inode open the ordinary way must not switch: {s}"
    );
    drop(held);

    // With no ordinary open left, the next open passes through: the whole 7 MB file reads
    // right while this process serves almost none of it.
    let served_before = counter(&base_layer_stats(&root, &dir, &built), "bytes_served");
    assert_eq!(std::fs::read(&big).unwrap(), expected);
    let s = base_layer_stats(&root, &dir, &built);
    assert!(counter(&s, "passthrough_opens") >= 1, "{s}");
    let served = counter(&s, "bytes_served") - served_before;
    assert!(
        served < 1 << 20,
        "{served} bytes went through FUSE after the switch: {s}"
    );
    // Every later open uses the same backing file (it is one inode for the kernel); small
    // files are never passed through.
    assert_eq!(std::fs::read(&big).unwrap(), expected);
    assert_reads_sample(&dir, "usr/bin/small");
    assert_reads_sample(&dir, "usr/bin/small");
    let after = base_layer_stats(&root, &dir, &built);
    assert!(counter(&after, "passthrough_opens") >= 2, "{after}");
    assert_eq!(counter(&after, "backing_files"), 1, "{after}");
    drop(_guard);

    // `--no-passthrough` serves every read itself; the backing file left in the cache is
    // not used.
    let _guard = mount(&root, &image, &dir, &["--no-passthrough"]);
    for _ in 0..3 {
        assert_eq!(std::fs::read(&big).unwrap(), expected);
    }
    let s = base_layer_stats(&root, &dir, &built);
    assert_eq!(counter(&s, "passthrough_opens"), 0, "{s}");
}

/// Digests of the zTOC and of the lean zTOC that the newest index in `root` lists for
/// `layer`.
fn ztoc_and_lean(root: &Path, layer: &str) -> (String, String) {
    let listed: Value =
        serde_json::from_str(&ok(soci(root, &["index", "list", "--json"]))).unwrap();
    let index = listed.as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let info: Value = serde_json::from_str(&ok(soci(root, &["index", "info", &index]))).unwrap();
    let of = |media: &str| -> String {
        info["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| {
                l["mediaType"] == media
                    && l["annotations"]["com.amazon.soci.image-layer-digest"] == layer
            })
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {media} for {layer} in {info}"))
    };
    (
        of("application/octet-stream"),
        of("application/vnd.soci-rs.ztoc.lean.v1+gzip"),
    )
}

#[test]
fn a_lean_ztoc_stands_in_for_the_ztoc_whose_windows_come_one_range_at_a_time() {
    let ((reg, _tmp), root, dir, r, built) = start_sample_app(&[]);
    let layer = built.layers[0].digest.as_str();
    let (ztoc, lean) = ztoc_and_lean(&root, layer);
    let guard = mount(&root, &r, &dir, &["--no-background-fetch"]);

    // A read in the middle of the 10 MB file: its span's window comes from the zTOC.
    let tool = sample_file("usr/bin/tool");
    let got = read_at(&dir.join("usr/bin/tool"), 6_000_000, 4096).unwrap();
    assert_eq!(got, tool[6_000_000..6_004_096]);
    let base = base_layer_stats(&root, &dir, &built);
    assert_eq!(counter(&base, "windows_fetched"), 1, "{base}");
    assert_eq!(counter(&base, "window_bytes_fetched"), 32768, "{base}");
    // The whole file: the spans after it take their windows from the spans before them.
    assert_reads_sample(&dir, "usr/bin/tool");
    let base = base_layer_stats(&root, &dir, &built);
    assert!(counter(&base, "windows_made") >= 4, "{base}");
    assert!(counter(&base, "windows_fetched") <= 2, "{base}");

    // The lean zTOC was fetched whole, the zTOC only in 32 KiB ranges (206), never whole.
    let log = reg.log();
    let gets = |digest: &str, status: &str| {
        log.lines()
            .filter(|l| l.contains("response completed") && l.contains(digest))
            .filter(|l| l.contains(&format!("http.response.status={status}")))
            .count()
    };
    assert_eq!(gets(&lean, "200"), 1, "{log}");
    assert_eq!(gets(&ztoc, "200"), 0, "{log}");
    assert!(gets(&ztoc, "206") >= 1, "{log}");
    ok(soci(&root, &["unmount", dir.to_str().unwrap()]));
    drop(guard);
}
