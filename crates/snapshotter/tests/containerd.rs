//! End to end through real containerd 1.6 + runc: `soci image rpull` and `ctr run
//! --snapshotter soci`, as a node runs them.

mod common;
use common::{ok, soci, Daemon};
use std::path::Path;
use std::time::{Duration, Instant};
use testutil::containerd_daemon::Containerd;

/// `soci --address <containerd> image rpull IMAGE [EXTRA…]`; returns stdout.
fn rpull(ctd: &Containerd, cli_root: &Path, image: &str, extra: &[&str]) -> String {
    let address = ctd.address();
    let mut args = vec!["--address", address.to_str().unwrap(), "image", "rpull"];
    args.extend_from_slice(extra);
    args.push(image);
    ok(soci(cli_root, &args))
}

/// Waits until the image's snapshots, their directories and their FUSE mounts are gone.
fn wait_until_collected(ctd: &Containerd, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ls = ctd.ctr_ok(&["snapshots", "--snapshotter", "soci", "ls"]);
        let dirs = std::fs::read_dir(daemon.root.join("snapshotter/snapshots"))
            .map(|d| d.count())
            .unwrap_or(0);
        let mounts = daemon.fuse_mounts();
        if ls.lines().count() <= 1 && dirs == 0 && mounts.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left after removal: snapshots\n{ls}\n{dirs} dirs, mounts {mounts:?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn python_starts_lazily_through_containerd_and_survives_restarts() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    testutil::python_layout(Path::new(env!("CARGO_TARGET_TMPDIR")), &layout);
    let plain = format!("{}/python:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &plain, None);
    let cli_root = tmp.path().join("cli");
    let image = format!("{}/python:soci", reg.addr());
    ok(soci(&cli_root, &["convert", &plain, &image]));
    let image_size: u64 = {
        let raw = testutil::skopeo_inspect_raw(&plain, None).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum()
    };

    let metrics = common::free_addr();
    let cache_limit_mb = 16;
    let mut daemon = Daemon::start(
        &tmp.path().join("d"),
        &format!(
            "metrics_address = \"{metrics}\"\n[background_fetch]\ndisable = true\n\
             [cache]\nmax_size_mb = {cache_limit_mb}\n"
        ),
    );
    let mut ctd = daemon.containerd();

    let out = rpull(&ctd, &cli_root, &image, &[]);
    assert!(out.contains("1 layer lazy"), "{out}\n{}", daemon.log());
    let out = ctd.run_ok(
        None,
        "soci",
        &image,
        "py-t1",
        &["python3", "-c", "print('ready')"],
    );
    assert_eq!(out.trim(), "ready");
    let text = common::http_get(&metrics, "/metrics");
    let fetched = common::metric_sum(&text, "soci_fetched_bytes_total");
    println!(
        "python3 -c print('ready') through containerd fetched {fetched} of {image_size} bytes ({:.0}%)",
        fetched as f64 * 100.0 / image_size as f64
    );
    assert!(fetched > 0);
    assert!(
        fetched * 2 < image_size,
        "fetched {fetched} of {image_size} bytes"
    );
    assert_eq!(daemon.fuse_mounts().len(), 1, "{:?}", daemon.fuse_mounts());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mountinfo
        .lines()
        .filter(|l| l.contains(daemon.root.to_str().unwrap()))
        .collect();
    assert!(
        ours.iter()
            .any(|l| l.contains(" - fuse") && l.contains("soci:sha256:")),
        "the lazy layer is not a soci FUSE mount: {ours:#?}"
    );

    // A container keeps running while the daemon restarts; it then reads files nobody has
    // read yet (modules not imported so far) through the same lazy layer.
    ctd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        "soci",
        &image,
        "py-long",
        "sleep",
        "600",
    ]);
    daemon.restart();
    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "py-long",
        "python3",
        "-c",
        "import json, email.parser; print(json.dumps({'after': 'daemon restart'}))",
    ]);
    assert_eq!(out.trim(), r#"{"after": "daemon restart"}"#);

    // containerd restarts too (a crash: SIGKILL); the shim and the container stay.
    ctd.restart();
    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "py-long",
        "python3",
        "-c",
        "import decimal, html.parser; print('after containerd restart')",
    ]);
    assert_eq!(out.trim(), "after containerd restart");
    // And new containers start after both restarts.
    let out = ctd.run_ok(None, "soci", &image, "py-t2", &["python3", "/app/app.py"]);
    assert_eq!(out.trim(), r#"{"ready": 3}"#);
    ctd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "py-long"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctd.ctr(&["task", "delete", "py-long"]).status.code() != Some(0) {
        assert!(Instant::now() < deadline, "the task did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    ctd.ctr_ok(&["containers", "rm", "py-long"]);

    // The span cache respects its limit (spans are evicted least recently used first).
    let cache = common::dir_size(&daemon.root.join("cache"));
    assert!(
        cache <= (cache_limit_mb + 4) * 1_000_000,
        "span cache holds {cache} bytes, limit {cache_limit_mb} MB"
    );

    // Removing the image removes every snapshot, directory and FUSE mount.
    ctd.ctr_ok(&["images", "rm", "--sync", &image]);
    wait_until_collected(&ctd, &daemon);
}

#[test]
fn unindexed_mismatched_and_corrupt_indexes_fall_back_to_a_normal_pull() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let cli_root = tmp.path().join("cli");
    let push = |name: &str, spec: testutil::ImageSpec| {
        let layout = tmp.path().join(name);
        testutil::write_oci_layout(&layout, "latest", &[spec]);
        let r = format!("{}/{name}:latest", reg.addr());
        testutil::skopeo_push(&layout, "latest", &r, None);
        r
    };
    let plain = push("plain", testutil::busybox_variant(1));
    // Another image in the same repository, so its index is reachable from `plain`.
    let other_layout = tmp.path().join("other");
    testutil::write_oci_layout(&other_layout, "latest", &[testutil::busybox_variant(2)]);
    let other = format!("{}/plain:other", reg.addr());
    testutil::skopeo_push(&other_layout, "latest", &other, None);
    let other_soci = format!("{}/plain:other-soci", reg.addr());
    ok(soci(&cli_root, &["convert", &other, &other_soci]));
    let corrupt = push("corrupt", testutil::busybox_variant(3));
    let corrupt_soci = format!("{}/corrupt:soci", reg.addr());
    ok(soci(&cli_root, &["convert", &corrupt, &corrupt_soci]));
    // Damage the zTOC and its lean zTOC in the registry's storage: the daemon must refuse
    // both (digest checks). (A damaged zTOC alone does not stop a lazy start: the lean one
    // stands in, and lazyfs's tests cover windows that fail their digests.)
    common::damage_ztocs(&reg, &corrupt_soci);

    let metrics = common::free_addr();
    let daemon = Daemon::start(
        &tmp.path().join("d"),
        &format!("metrics_address = \"{metrics}\"\n"),
    );
    let ctd = daemon.containerd();
    let other_index = common::bound_index(&other_soci);
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        ("no index", plain.as_str(), vec![]),
        (
            "another image's index",
            plain.as_str(),
            vec!["--soci-index-digest", other_index.as_str()],
        ),
        ("a corrupt zTOC", corrupt_soci.as_str(), vec![]),
    ];
    for (i, (case, image, extra)) in cases.into_iter().enumerate() {
        let out = rpull(&ctd, &cli_root, image, &extra);
        assert!(!out.contains("lazy"), "{case}: {out}\n{}", daemon.log());
        let name = format!("fb-{i}");
        let out = ctd.run_ok(
            None,
            "soci",
            image,
            &name,
            &["sh", "-c", "cat /etc/msg; wc -c < /data/big.txt"],
        );
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["from", "layer", "2", "16000000"],
            "{case}: {out}"
        );
        ctd.ctr_ok(&["images", "rm", "--sync", image]);
    }
    assert!(daemon.fuse_mounts().is_empty());
    let log = daemon.log();
    assert!(log.contains("does not match the image"), "{log}");
    let text = common::http_get(&metrics, "/metrics");
    assert_eq!(
        common::metric_sum(&text, "soci_snapshotter_layers_lazy_total"),
        0,
        "{text}"
    );
    assert!(
        common::metric_sum(&text, "soci_snapshotter_mount_failures_total") >= 1,
        "{text}"
    );
    wait_until_collected(&ctd, &daemon);
}
