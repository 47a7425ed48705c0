//! Parallel pull and unpack through real containerd 1.6 + runc: `soci image rpull` of images
//! without a SOCI index, the snapshotter downloading each layer in 1 MiB Range requests, 4
//! at a time, unpacking as the bytes arrive and checking digest and diff ID; containers run
//! from the result, nothing of the layers lands in containerd's content store (unless
//! `discard_unpacked_layers = false` keeps them there), GC removes the snapshots (and kept
//! blobs), a corrupted layer is refused with no snapshot left, and connections cut in the
//! middle of a layer are resumed.

mod common;
use common::{ok, soci, Daemon};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testutil::containerd_daemon::Containerd;

const PARALLEL: &str = r#"
[pull_modes.parallel_pull_unpack]
enable = true
discard_unpacked_layers = true
concurrent_download_chunk_size = "1mb"
max_concurrent_downloads_per_image = 4
max_concurrent_unpacks_per_image = 2
"#;

/// Pushes a busybox variant as `<registry>/<name>:latest`; returns the reference.
fn push(reg: &testutil::Registry, dir: &Path, name: &str, seed: u32) -> String {
    let layout = dir.join(name);
    testutil::write_oci_layout(&layout, "latest", &[testutil::busybox_variant(seed)]);
    let r = format!("{}/{name}:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &r, None);
    r
}

fn rpull(ctd: &Containerd, cli_root: &Path, image: &str) -> std::process::Output {
    let address = ctd.address();
    soci(
        cli_root,
        &[
            "--address",
            address.to_str().unwrap(),
            "image",
            "rpull",
            image,
        ],
    )
}

/// Snapshots the soci snapshotter has, and its snapshot directories.
fn snapshots(ctd: &Containerd, daemon: &Daemon) -> (usize, usize) {
    let ls = ctd.ctr_ok(&["snapshots", "--snapshotter", "soci", "ls"]);
    let dirs = std::fs::read_dir(daemon.root.join("snapshotter/snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    (ls.lines().count().saturating_sub(1), dirs)
}

fn wait_until_collected(ctd: &Containerd, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while snapshots(ctd, daemon) != (0, 0) {
        assert!(
            Instant::now() < deadline,
            "left after removal: {:?}\n{}",
            snapshots(ctd, daemon),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The layer digests of image `reference`.
fn layer_digests(reference: &str) -> Vec<String> {
    let digest = common::platform_manifest_digest(reference);
    let repo = reference.rsplit_once(':').unwrap().0;
    let raw = testutil::skopeo_inspect_raw(&format!("{repo}@{digest}"), None).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs container `name` of the busybox variant `image` (of noise `seed`) and checks that it
/// sees layer 2's message and all of layer 1's big file; `out` is the pull's output.
fn check_run(ctd: &Containerd, daemon: &Daemon, image: &str, name: &str, seed: u32, out: &str) {
    let run = ctd.run_ok(
        None,
        "soci",
        image,
        name,
        &["sh", "-c", "cat /etc/msg; md5sum < /data/big.txt"],
    );
    let want_md5 = common::md5_hex(&testutil::noisy(16_000_000, seed));
    assert_eq!(
        run.split_whitespace().take(4).collect::<Vec<_>>(),
        ["from", "layer", "2", want_md5.as_str()],
        "{out}\n{run}\n{}",
        daemon.log()
    );
}

/// Layers pulled in parallel mode so far, from the daemon's `/metrics` text.
fn parallel_pulled(metrics: &str) -> u64 {
    common::metric_sum(metrics, "soci_snapshotter_layers_parallel_pulled_total")
}

#[test]
fn images_without_an_index_are_pulled_in_parallel_checked_and_collected() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let cli_root = tmp.path().join("cli");
    let plain = push(&reg, tmp.path(), "plain", 1);
    let corrupt = push(&reg, tmp.path(), "corrupt", 2);
    let metrics = common::free_addr();
    let daemon = Daemon::start(
        &tmp.path().join("d"),
        &format!("metrics_address = \"{metrics}\"\n{PARALLEL}"),
    );
    let ctd = daemon.containerd();

    let out = ok(rpull(&ctd, &cli_root, &plain));
    check_run(&ctd, &daemon, &plain, "parallel-1", 1, &out);
    let text = common::http_get(&metrics, "/metrics");
    assert_eq!(parallel_pulled(&text), 2, "{text}\n{}", daemon.log());
    // discard_unpacked_layers: the layers exist only as snapshots.
    let content = ctd.ctr_ok(&["content", "ls"]);
    let blobs: Vec<&str> = content
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for layer in layer_digests(&plain) {
        assert!(!blobs.contains(&layer.as_str()), "{layer} in\n{content}");
    }
    assert!(
        blobs.len() >= 2,
        "manifest and config are stored: {content}"
    );
    ctd.ctr_ok(&["images", "rm", "--sync", &plain]);
    wait_until_collected(&ctd, &daemon);

    // A layer blob damaged in the registry's storage: the Prepare fails with the reason and
    // leaves no snapshot.
    let big = layer_digests(&corrupt)[0].clone();
    let path = reg.blob_data_path(&big);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() * 2 / 3;
    bytes[at] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let failed = rpull(&ctd, &cli_root, &corrupt);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("parallel pull of layer") && stderr.contains(&big),
        "{stderr}"
    );
    let text = common::http_get(&metrics, "/metrics");
    assert!(
        common::metric_sum(&text, "soci_snapshotter_parallel_pull_failures_total") >= 1,
        "{text}"
    );
    let _ = ctd.ctr(&["images", "rm", "--sync", &corrupt]);
    wait_until_collected(&ctd, &daemon);
}

#[test]
fn layers_without_a_ztoc_start_while_the_lazy_layer_below_them_mounts() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let cli_root = tmp.path().join("cli");
    let plain = push(&reg, tmp.path(), "indexed", 3);
    // Layer 1 (11.7 MB) gets a zTOC; layer 2 (a few bytes) is below min-layer-size.
    let image = format!("{}/indexed:soci", reg.addr());
    ok(soci(&cli_root, &["convert", &plain, &image]));
    let metrics = common::free_addr();
    let daemon = Daemon::start(
        &tmp.path().join("d"),
        &format!("metrics_address = \"{metrics}\"\n{PARALLEL}"),
    );
    let ctd = daemon.containerd();

    let out = ok(rpull(&ctd, &cli_root, &image));
    let run = ctd.run_ok(None, "soci", &image, "early-1", &["cat", "/etc/msg"]);
    assert_eq!(run.trim(), "from layer 2", "{out}\n{}", daemon.log());
    let text = common::http_get(&metrics, "/metrics");
    for (metric, want) in [
        ("soci_snapshotter_layers_lazy_total", 1),
        ("soci_snapshotter_layers_parallel_pulled_total", 1),
    ] {
        assert_eq!(common::metric_sum(&text, metric), want, "{metric}\n{text}");
    }
    // The pull of layer 2 started on layer 1's Prepare, not on its own (containerd sends
    // that only once layer 1 is mounted and committed).
    let log = daemon.log();
    let started: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("parallel pull started"))
        .collect();
    assert!(
        started.len() == 1 && started[0].contains("parallel pull started early"),
        "{started:?}\n{log}"
    );

    // A lazy layer that cannot be mounted after all (its zTOCs damaged) is pulled in
    // parallel too, though the job started without it.
    let other = push(&reg, tmp.path(), "damaged", 4);
    let damaged = format!("{}/damaged:soci", reg.addr());
    ok(soci(&cli_root, &["convert", &other, &damaged]));
    common::damage_ztocs(&reg, &damaged);
    let out = ok(rpull(&ctd, &cli_root, &damaged));
    check_run(&ctd, &daemon, &damaged, "early-2", 4, &out);
    let text = common::http_get(&metrics, "/metrics");
    assert_eq!(parallel_pulled(&text), 3, "{text}\n{}", daemon.log());
}

/// A TCP proxy to `upstream` that cuts each of its first `cuts` connections once it has
/// passed `after` bytes of answers: a registry link breaking in the middle of a layer.
fn cutting_proxy(upstream: String, cuts: usize, after: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let left = Arc::new(AtomicUsize::new(cuts));
    let cut = left.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { return };
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                return;
            };
            let (mut client_in, mut server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_in, &mut server_out);
            });
            let cut = cut.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let mut sent = 0usize;
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let take = cut.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                        (sent + n > after && l > 0).then(|| l - 1)
                    });
                    if take.is_ok() {
                        let _ = client.write_all(&buf[..after.saturating_sub(sent).min(n)]);
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        let _ = server.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, left)
}

#[test]
fn a_connection_cut_in_the_middle_of_a_layer_is_resumed() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let cli_root = tmp.path().join("cli");
    push(&reg, tmp.path(), "cut", 3);
    let (proxy, left) = cutting_proxy(reg.addr().to_string(), 3, 1_500_000);
    let image = format!("{proxy}/cut:latest");
    let daemon = Daemon::start(&tmp.path().join("d"), PARALLEL);
    let ctd = daemon.containerd();
    let out = ok(rpull(&ctd, &cli_root, &image));
    assert_eq!(left.load(Ordering::SeqCst), 0, "the proxy cut nothing");
    let run = ctd.run_ok(
        None,
        "soci",
        &image,
        "cut-1",
        &["sh", "-c", "wc -c < /data/big.txt"],
    );
    assert_eq!(run.trim(), "16000000", "{out}\n{}", daemon.log());
    assert!(daemon.log().contains("layer pulled in parallel mode"));
    ctd.ctr_ok(&["images", "rm", "--sync", &image]);
    wait_until_collected(&ctd, &daemon);
}

/// Unpack is the security boundary: a layer whose symlink points outside the snapshot and
/// which then writes through it is refused by the parallel pull (the Prepare fails naming
/// the entry), nothing is written outside, and no snapshot is left.
#[test]
fn a_layer_writing_through_an_escaping_symlink_is_refused() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let cli_root = tmp.path().join("cli");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut spec = testutil::busybox_image();
    spec.layers.push(testutil::LayerSpec {
        entries: vec![
            testutil::EntrySpec::Symlink {
                path: "up".into(),
                target: outside.to_str().unwrap().into(),
            },
            testutil::EntrySpec::File(testutil::FileSpec {
                path: "up/evil".into(),
                data: b"escaped".to_vec(),
                mode: 0o644,
            }),
        ],
        compression: testutil::Compression::Uncompressed,
    });
    let layout = tmp.path().join("hostile");
    testutil::write_oci_layout(&layout, "latest", &[spec]);
    let image = format!("{}/hostile:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &image, None);
    let daemon = Daemon::start(&tmp.path().join("d"), PARALLEL);
    let ctd = daemon.containerd();

    let failed = rpull(&ctd, &cli_root, &image);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    assert!(
        stderr.contains("parallel pull of layer") && stderr.contains("up/evil"),
        "{stderr}\n{}",
        daemon.log()
    );
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "written outside the snapshot"
    );
    let _ = ctd.ctr(&["images", "rm", "--sync", &image]);
    wait_until_collected(&ctd, &daemon);
    let staging = daemon.root.join("snapshotter/parallel-staging");
    let left = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "staging directories left in {}", staging.display());
}

/// Digests in containerd's content store.
fn content_digests(ctd: &Containerd) -> Vec<String> {
    ctd.ctr_ok(&["content", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn with_discard_unpacked_layers_false_layer_blobs_are_kept_until_the_image_goes() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let cli_root = tmp.path().join("cli");
    let image = push(&reg, tmp.path(), "kept", 3);
    // AWS's default: the layer blobs stay in containerd's content store too. The daemon
    // reaches containerd through a link made once containerd runs.
    let link = tmp.path().join("containerd.sock");
    let config = PARALLEL.replace(
        "discard_unpacked_layers = true",
        "discard_unpacked_layers = false",
    ) + &format!(
        "[content_store]\ncontainerd_address = \"{}\"\n",
        link.display()
    );
    let daemon = Daemon::start(&tmp.path().join("d"), &config);
    let ctd = daemon.containerd();
    std::os::unix::fs::symlink(ctd.address(), &link).unwrap();

    ok(rpull(&ctd, &cli_root, &image));
    let out = ctd.run_ok(None, "soci", &image, "kept-1", &["cat", "/etc/msg"]);
    assert_eq!(out.trim(), "from layer 2", "{}", daemon.log());
    let layers = layer_digests(&image);
    let stored = content_digests(&ctd);
    for layer in &layers {
        assert!(
            stored.contains(layer),
            "{layer} not in the content store: {stored:?}\n{}",
            daemon.log()
        );
    }
    // containerd checked each blob's digest and size when it was committed; its labels say
    // where it came from, as containerd's own pull leaves them.
    let info = ctd.ctr_ok(&["content", "ls"]);
    assert!(
        info.contains("containerd.io/distribution.source.127.0.0.1=kept"),
        "{info}"
    );
    // They outlived the GC that removing the container ran (the image's manifest
    // references them); removing the image removes them with the snapshots.
    ctd.ctr_ok(&["images", "rm", "--sync", &image]);
    wait_until_collected(&ctd, &daemon);
    let stored = content_digests(&ctd);
    assert!(
        layers.iter().all(|l| !stored.contains(l)),
        "left after removal: {stored:?}"
    );
}
