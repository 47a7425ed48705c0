//! The Kubernetes path: containerd's CRI plugin configured with `snapshotter = "soci"` and
//! `disable_snapshot_annotations = false` pulls as the kubelet does. An image with a SOCI
//! index is not downloaded (its indexed layer is mounted lazily), an image without one is
//! pulled normally through the same snapshotter, and both run with `ctr -n k8s.io run`; with
//! parallel pull on, the layers without a zTOC are pulled by the snapshotter itself.

mod common;
use common::{ok, soci, Daemon};
use testutil::containerd_daemon::{Containerd, ContainerdOptions};

fn snapshot_dirs(daemon: &Daemon) -> usize {
    std::fs::read_dir(daemon.root.join("snapshotter/snapshots"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// containerd with its CRI plugin pulling through `daemon`, and `reg` as a plain-HTTP mirror.
fn cri_containerd(reg: &testutil::Registry, daemon: &Daemon) -> Containerd {
    Containerd::start(&ContainerdOptions {
        proxy_snapshotter: Some(("soci".into(), daemon.socket.clone())),
        cri_snapshotter: Some("soci".into()),
        extra_toml: format!(
            "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{0}\"]\n  endpoint = [\"http://{0}\"]\n",
            reg.addr()
        ),
    })
}

/// Removes `images` through CRI and waits (30 s at most) until containerd's GC has removed
/// every snapshot and FUSE mount.
async fn remove_and_wait_until_collected(ctd: &Containerd, daemon: &Daemon, images: &[&str]) {
    for image in images {
        testutil::cri::remove_image(&ctd.address(), image)
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while snapshot_dirs(daemon) > 0 || !daemon.fuse_mounts().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "left after the images were removed: {} snapshot dirs, mounts {:?}\n{}",
            snapshot_dirs(daemon),
            daemon.fuse_mounts(),
            daemon.log()
        );
        // GC runs after removals with a short delay; a ctr call nudges nothing, so wait.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pulls_indexed_images_lazily_and_others_normally() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let built = testutil::write_oci_layout(&layout, "latest", &[testutil::busybox_image()]);
    let plain = format!("{}/cri:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &plain, None);
    let lazy = format!("{}/cri:soci", reg.addr());
    ok(soci(&tmp.path().join("cli"), &["convert", &plain, &lazy]));

    let metrics = common::free_addr();
    let daemon = Daemon::start(
        &tmp.path().join("d"),
        &format!("metrics_address = \"{metrics}\"\n[background_fetch]\ndisable = true\n"),
    );
    let ctd = cri_containerd(&reg, &daemon);

    testutil::cri::pull_image(&ctd.address(), &lazy)
        .await
        .unwrap_or_else(|e| panic!("CRI pull: {e}\n{}\n{}", ctd.log_tail(), daemon.log()));
    assert_eq!(daemon.fuse_mounts().len(), 1, "{}", daemon.log());
    let text = common::http_get(&metrics, "/metrics");
    assert_eq!(
        common::metric_sum(&text, "soci_snapshotter_layers_lazy_total"),
        1,
        "{text}"
    );
    let out = ctd.run_ok(
        Some("k8s.io"),
        "soci",
        &lazy,
        "cri-t1",
        &["sh", "-c", "cat /etc/msg; head -c 64 /data/big.txt | wc -c"],
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["from", "layer", "2", "64"],
        "{out}"
    );
    let text = common::http_get(&metrics, "/metrics");
    let fetched = common::metric_sum(&text, "soci_fetched_bytes_total");
    let size = built[0].layers[0].size;
    assert!(
        fetched > 0 && fetched < size,
        "fetched {fetched} of the {size} byte layer"
    );

    // The same image without its index (the original tag; v1 lookups are off by default).
    testutil::cri::pull_image(&ctd.address(), &plain)
        .await
        .unwrap_or_else(|e| panic!("CRI pull: {e}\n{}", ctd.log_tail()));
    assert_eq!(
        daemon.fuse_mounts().len(),
        1,
        "the plain image must not be mounted lazily"
    );
    let out = ctd.run_ok(
        Some("k8s.io"),
        "soci",
        &plain,
        "cri-t2",
        &["cat", "/etc/msg"],
    );
    assert_eq!(out.trim(), "from layer 2");

    // Removing both images lets containerd's GC remove every snapshot, lazy ones included.
    remove_and_wait_until_collected(&ctd, &daemon, &[&lazy, &plain]).await;
}

/// The same path with parallel pull on: the small layer of the indexed image and both
/// layers of an image without an index are pulled by the snapshotter (none by containerd),
/// the containers see the right bytes, and GC removes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_pulls_layers_without_a_ztoc_in_parallel_mode() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    testutil::write_oci_layout(&layout, "latest", &[testutil::busybox_image()]);
    let source = format!("{}/cri:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &source, None);
    let lazy = format!("{}/cri:soci", reg.addr());
    ok(soci(&tmp.path().join("cli"), &["convert", &source, &lazy]));
    // An image sharing no layer with the indexed one (other bytes in its big file).
    let mut other = testutil::busybox_image();
    for entry in &mut other.layers[0].entries {
        if let testutil::EntrySpec::File(f) = entry {
            if f.path == "data/big.txt" {
                f.data = testutil::noisy(6_000_000, 7);
            }
        }
    }
    let other_layout = tmp.path().join("other");
    testutil::write_oci_layout(&other_layout, "latest", &[other]);
    let plain = format!("{}/plain:latest", reg.addr());
    testutil::skopeo_push(&other_layout, "latest", &plain, None);

    let metrics = common::free_addr();
    let daemon = Daemon::start(
        &tmp.path().join("d"),
        &format!(
            "metrics_address = \"{metrics}\"\n[background_fetch]\ndisable = true\n\
             [pull_modes.parallel_pull_unpack]\nenable = true\ndiscard_unpacked_layers = true\n\
             concurrent_download_chunk_size = \"1mb\"\nmax_concurrent_downloads_per_image = 3\n"
        ),
    );
    let ctd = cri_containerd(&reg, &daemon);
    let counts = || {
        let text = common::http_get(&metrics, "/metrics");
        [
            "soci_snapshotter_layers_lazy_total",
            "soci_snapshotter_layers_parallel_pulled_total",
            "soci_snapshotter_layers_pulled_total",
        ]
        .map(|m| common::metric_sum(&text, m))
    };

    testutil::cri::pull_image(&ctd.address(), &lazy)
        .await
        .unwrap_or_else(|e| panic!("CRI pull: {e}\n{}\n{}", ctd.log_tail(), daemon.log()));
    assert_eq!(counts(), [1, 1, 0], "{}", daemon.log());
    testutil::cri::pull_image(&ctd.address(), &plain)
        .await
        .unwrap_or_else(|e| panic!("CRI pull: {e}\n{}\n{}", ctd.log_tail(), daemon.log()));
    assert_eq!(counts(), [1, 3, 0], "{}", daemon.log());
    assert_eq!(daemon.fuse_mounts().len(), 1, "{}", daemon.log());

    let out = ctd.run_ok(
        Some("k8s.io"),
        "soci",
        &plain,
        "cri-p1",
        &["sh", "-c", "cat /etc/msg; wc -c < /data/big.txt"],
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["from", "layer", "2", "6000000"],
        "{out}"
    );
    let out = ctd.run_ok(
        Some("k8s.io"),
        "soci",
        &lazy,
        "cri-p2",
        &["cat", "/etc/msg"],
    );
    assert_eq!(out.trim(), "from layer 2");

    remove_and_wait_until_collected(&ctd, &daemon, &[&lazy, &plain]).await;
}
