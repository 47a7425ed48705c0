//! The daemon's zTOC and span fetches go through the mirrors of `[registry] config_path`
//! (containerd's `hosts.toml`), through real containerd 1.6 + runc: Debian's docker-registry in
//! proxy mode (a pull-through cache) in front of the origin registry. Three nodes (daemon and
//! containerd with their own roots) start the same lazy image one after another: the first
//! while the mirror is cold, the second once it holds the layer (nothing from the origin),
//! the third with the mirror down (everything from the origin).

mod common;

use common::{ok, soci, Daemon};
use std::path::Path;
use std::time::Duration;

/// Requests this project's clients (daemon and CLI: user agent `soci-rs/…`) made of the
/// registry whose log is `log`, as (blob requests, all requests).
fn soci_requests(log: &str) -> (usize, usize) {
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("msg=\"response completed") && l.contains("useragent=soci-rs/"))
        .collect();
    let blobs = ours.iter().filter(|l| l.contains("/blobs/sha256:")).count();
    (blobs, ours.len())
}

/// One node: a daemon (config `config`) and its containerd in `dir`; pulls `image` lazily
/// with the CLI (hosts.toml in `hosts`) and checks a container reads `/data/big.txt` whole.
/// Returns the FUSE manager's log.
fn start_node(
    dir: &Path,
    config: &str,
    hosts: &Path,
    image: &str,
    md5: &str,
    name: &str,
) -> String {
    let daemon = Daemon::start(dir, config);
    let ctd = daemon.containerd();
    let out = ok(soci(
        &dir.join("cli"),
        &[
            "--address",
            ctd.address().to_str().unwrap(),
            "image",
            "rpull",
            "--hosts-dir",
            hosts.to_str().unwrap(),
            image,
        ],
    ));
    assert!(out.contains("1 layer lazy"), "{out}\n{}", daemon.log());
    let out = ctd.run_ok(None, "soci", image, name, &["md5sum", "/data/big.txt"]);
    assert!(
        out.starts_with(md5),
        "{name} read other bytes: {out}\n{}",
        daemon.manager_log()
    );
    daemon.manager_log()
}

#[test]
fn lazy_layers_come_through_a_pull_through_mirror_and_from_the_origin_when_it_is_down() {
    let origin = testutil::Registry::start();
    let mut mirror = testutil::Registry::start_with_config(&format!(
        "proxy:\n  remoteurl: http://{}\n",
        origin.addr()
    ));
    let tmp = tempfile::tempdir().unwrap();
    let plain = common::push_busybox(&origin, tmp.path(), "fleet");
    let image = format!("{}/fleet:soci", origin.addr());
    ok(soci(&tmp.path().join("cli"), &["convert", &plain, &image]));
    let md5 = common::busybox_big_md5();

    let hosts = tmp.path().join("certs.d");
    testutil::write_mirror_hosts_toml(&hosts, &origin.addr(), &mirror.addr());
    let config = format!(
        "[background_fetch]\ndisable = true\n[registry]\nconfig_path = \"{}\"\n",
        hosts.display()
    );

    // Node 1, mirror cold: the mirror answers Range requests with whole blobs until it has
    // stored them, so the daemon takes those ranges from the origin; the rest comes from
    // the mirror.
    let (_, origin_before) = soci_requests(&origin.log());
    start_node(
        &tmp.path().join("n1"),
        &config,
        &hosts,
        &image,
        &md5,
        "mirror-n1",
    );
    let (mirror_blobs, _) = soci_requests(&mirror.log());
    assert!(
        mirror_blobs > 0,
        "node 1 asked the mirror for no blob\n{}",
        mirror.log()
    );

    // The mirror stores what it proxied in the background; wait until it holds the layers.
    let layer_files = |reg: &testutil::Registry| -> Vec<String> {
        let blobs = reg.storage_dir().join("docker/registry/v2/blobs/sha256");
        let mut found = Vec::new();
        for prefix in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
            for blob in std::fs::read_dir(prefix.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let size = std::fs::metadata(blob.path().join("data")).map_or(0, |m| m.len());
                if size > 1_000_000 {
                    found.push(blob.file_name().to_string_lossy().into_owned());
                }
            }
        }
        found.sort();
        found
    };
    let big_at_origin = layer_files(&origin);
    for _ in 0..200 {
        if big_at_origin
            .iter()
            .all(|b| layer_files(&mirror).contains(b))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(layer_files(&mirror), big_at_origin, "{}", mirror.log());

    // Node 2, mirror warm: the origin sees no request from it at all.
    let (_, origin_after_n1) = soci_requests(&origin.log());
    let (mirror_blobs_n1, _) = soci_requests(&mirror.log());
    start_node(
        &tmp.path().join("n2"),
        &config,
        &hosts,
        &image,
        &md5,
        "mirror-n2",
    );
    assert_eq!(
        soci_requests(&origin.log()).1,
        origin_after_n1,
        "node 2 went to the origin although the mirror holds everything\n{}",
        origin.log()
    );
    assert!(soci_requests(&mirror.log()).0 > mirror_blobs_n1);

    // Node 3, mirror down: every request falls back to the origin, and the reads are right.
    mirror.stop();
    let log = start_node(
        &tmp.path().join("n3"),
        &config,
        &hosts,
        &image,
        &md5,
        "mirror-n3",
    );
    let (origin_blobs, origin_all) = soci_requests(&origin.log());
    assert!(
        origin_all > origin_after_n1 && origin_blobs > 0,
        "node 3 did not fall back to the origin\n{}",
        origin.log()
    );
    // A mirror that fails is skipped for a while, not tried (and retried) on every request:
    // the first one (the zTOC, fetched alone) fails, and perhaps one already under way.
    let failures = log.matches("mirror failed").count();
    assert!(
        (1..=2).contains(&failures),
        "{failures} requests failed on the mirror that is down\n{log}"
    );
    println!(
        "origin requests from soci: {} (node 1, cold mirror), 0 (node 2, warm mirror), {} (node 3, mirror down; {failures} failed on it)",
        origin_after_n1 - origin_before,
        origin_all - origin_after_n1
    );
}
