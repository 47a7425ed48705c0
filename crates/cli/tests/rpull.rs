//! `soci image rpull` and the containerd side of `soci create` / `soci push`, against a real
//! containerd 1.6 (own root, state and socket) and Debian's docker-registry on loopback.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use testutil::containerd_daemon::{Containerd, ContainerdOptions};
use testutil::Registry;

mod common;
use common::{fails, ok, soci};

/// Pushes the busybox test image as `<registry>/<name>` and returns it as built.
fn push_busybox(reg: &Registry, tmp: &Path, name: &str) -> testutil::BuiltImage {
    let dir = tmp.join(format!("layout-{}", name.replace(['/', ':'], "-")));
    let built = testutil::write_oci_layout(&dir, "latest", &[testutil::busybox_image()]);
    testutil::skopeo_push(&dir, "latest", &format!("{}/{name}", reg.addr()), None);
    built.into_iter().next().unwrap()
}

/// `soci --address <containerd> ARGS…`.
fn soci_ctd(root: &Path, ctd: &Containerd, args: &[&str]) -> Output {
    let address = ctd.address();
    let mut all = vec!["--address", address.to_str().unwrap()];
    all.extend_from_slice(args);
    soci(root, &all)
}

/// containerd's chain IDs from diff IDs.
fn chain_ids(image: &testutil::BuiltImage) -> Vec<String> {
    let diff_ids: Vec<&str> = image.layers.iter().map(|l| l.diff_id.as_str()).collect();
    containerd::chain_ids(&diff_ids)
}

/// The labels `ctr content ls` shows for `digest` (empty set if it lists no such blob).
fn content_labels(ctd: &Containerd, namespace: &str, digest: &str) -> BTreeSet<String> {
    let out = ctd.ctr_ok(&["-n", namespace, "content", "ls"]);
    out.lines()
        .find(|l| l.starts_with(digest))
        .and_then(|l| l.split_whitespace().last())
        .filter(|labels| labels.contains('='))
        .map(|labels| labels.split(',').map(String::from).collect())
        .unwrap_or_default()
}

/// Waits (bounded) until `check` holds; panics with `what` otherwise.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rpull_into_overlayfs_runs_labels_like_ctr_and_is_collected_with_the_image() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let built = push_busybox(&reg, tmp.path(), "busybox:latest");
    let image = format!("{}/busybox:latest", reg.addr());
    let ctd = Containerd::start(&ContainerdOptions::default());

    let out = ok(soci_ctd(
        &root,
        &ctd,
        &["image", "rpull", "--snapshotter", "overlayfs", &image],
    ));
    assert!(out.contains(&format!("pulled {image}")), "{out}");
    assert!(out.contains("2 layers fetched"), "{out}");

    // The image runs, showing layer 2's file over layer 1's.
    let msg = ctd.run_ok(
        None,
        "overlayfs",
        &image,
        "rpull-run-1",
        &["cat", "/etc/msg"],
    );
    assert_eq!(msg.trim(), "from layer 2");
    let images = ctd.ctr_ok(&["images", "ls", "-q"]);
    assert!(images.lines().any(|l| l == image), "{images}");

    // One committed snapshot per layer, named by chain ID.
    let chains = chain_ids(&built);
    let snapshots = ctd.ctr_ok(&["snapshots", "--snapshotter", "overlayfs", "ls"]);
    for c in &chains {
        assert!(snapshots.contains(c), "{c} missing:\n{snapshots}");
    }

    // GC references: the config holds the top snapshot, the manifest its config and layers.
    let config = content_labels(&ctd, "default", &built.config_digest);
    assert!(
        config.contains(&format!(
            "containerd.io/gc.ref.snapshot.overlayfs={}",
            chains[1]
        )),
        "{config:?}"
    );
    let manifest = content_labels(&ctd, "default", &built.manifest_digest);
    assert!(
        manifest.contains(&format!(
            "containerd.io/gc.ref.content.config={}",
            built.config_digest
        )),
        "{manifest:?}"
    );
    for (i, l) in built.layers.iter().enumerate() {
        assert!(
            manifest.contains(&format!("containerd.io/gc.ref.content.l.{i}={}", l.digest)),
            "{manifest:?}"
        );
    }

    // Exactly the labels containerd's own pull sets, on every blob.
    ctd.ctr_ok(&["-n", "ctrpull", "images", "pull", "--plain-http", &image]);
    let mut blobs = vec![built.manifest_digest.clone(), built.config_digest.clone()];
    blobs.extend(built.layers.iter().map(|l| l.digest.clone()));
    for b in &blobs {
        assert_eq!(
            content_labels(&ctd, "default", b),
            content_labels(&ctd, "ctrpull", b),
            "labels of {b} differ from ctr's pull"
        );
    }

    // A second rpull finds everything in place.
    let again = ok(soci_ctd(
        &root,
        &ctd,
        &["image", "rpull", "--snapshotter", "overlayfs", &image],
    ));
    assert!(again.contains("2 layers already present"), "{again}");
    assert!(!again.contains("fetched"), "{again}");
    let leases = ctd.ctr_ok(&["leases", "ls", "-q"]);
    assert!(leases.trim().is_empty(), "leases left behind: {leases}");

    // Removing the image lets GC take the snapshots and the content (of this namespace).
    ctd.ctr_ok(&["images", "rm", "--sync", &image]);
    wait_for("overlayfs snapshots to be collected", || {
        ctd.ctr_ok(&["snapshots", "--snapshotter", "overlayfs", "ls"])
            .lines()
            .count()
            <= 1
    });
    wait_for("content to be collected", || {
        ctd.ctr_ok(&["content", "ls", "-q"]).trim().is_empty()
    });
    // The other namespace's pull is untouched.
    let msg = ctd.ctr_ok(&[
        "-n",
        "ctrpull",
        "run",
        "--rm",
        &image,
        "rpull-run-2",
        "cat",
        "/etc/msg",
    ]);
    assert_eq!(msg.trim(), "from layer 2");
}

#[test]
fn rpull_failures_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    // No containerd at the address.
    let missing = tmp.path().join("no-containerd.sock");
    let err = fails(soci(
        &root,
        &[
            "--address",
            missing.to_str().unwrap(),
            "image",
            "rpull",
            "127.0.0.1:1/x:latest",
        ],
    ));
    assert!(err.contains("cannot connect to containerd at"), "{err}");
    assert!(err.contains("--address"), "{err}");

    // An image the registry does not have: an error, and no lease or image left behind.
    let reg = Registry::start();
    let ctd = Containerd::start(&ContainerdOptions::default());
    let image = format!("{}/nothing-here:latest", reg.addr());
    let err = fails(soci_ctd(
        &root,
        &ctd,
        &["image", "rpull", "--snapshotter", "overlayfs", &image],
    ));
    assert!(err.contains("nothing-here"), "{err}");
    assert!(err.contains("unknown"), "{err}");
    assert!(ctd.ctr_ok(&["leases", "ls", "-q"]).trim().is_empty());
    assert!(ctd.ctr_ok(&["images", "ls", "-q"]).trim().is_empty());
}

#[test]
fn create_reads_a_ctr_pulled_image_from_containerd_and_push_reads_the_index_from_it() {
    let mut reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let built = push_busybox(&reg, tmp.path(), "bb:v1");
    let image = format!("{}/bb:v1", reg.addr());
    let ctd = Containerd::start(&ContainerdOptions::default());
    ctd.ctr_ok(&["images", "pull", "--plain-http", &image]);

    // The registry is gone: everything must come from containerd's content store.
    reg.stop();
    let out = ok(soci_ctd(
        &root,
        &ctd,
        &["--content-store", "containerd", "create", &image],
    ));
    assert!(out.contains("from containerd's content store"), "{out}");
    assert!(!out.contains("read from the registry"), "{out}");
    assert_eq!(out.matches("-> ztoc sha256:").count(), 1, "{out}");
    let index = ok(soci(&root, &["index", "list", "-q", "--ref", &image]));
    let index = index.trim().to_owned();
    let ztoc = ok(soci(&root, &["ztoc", "list", "-q", "--image-ref", &image]));
    let ztoc = ztoc.trim().to_owned();
    assert!(index.starts_with("sha256:") && ztoc.starts_with("sha256:"));

    // Index and zTOC are in containerd, the index referencing the zTOC and the image the
    // index, so GC keeps them with the image.
    let labels = content_labels(&ctd, "default", &index);
    assert!(
        labels.contains(&format!("containerd.io/gc.ref.content.l.0={ztoc}")),
        "{labels:?}"
    );
    let listed = ctd.ctr_ok(&["content", "ls", "-q"]);
    assert!(listed.lines().any(|l| l == ztoc), "{listed}");
    let images = ctd.ctr_ok(&["images", "ls"]);
    assert!(
        images.contains(&format!("containerd.io/gc.ref.content.soci-index={index}")),
        "{images}"
    );
    assert!(built.layers[0].size > 10 << 20);

    // push reads them from containerd: drop the local copies first.
    for d in [&index, &ztoc] {
        let hex = d.strip_prefix("sha256:").unwrap();
        std::fs::remove_file(root.join("content/blobs/sha256").join(hex)).unwrap();
    }
    reg.restart();
    let err = fails(soci_ctd(&root, &ctd, &["push", &image]));
    assert!(err.contains("local store"), "{err}");
    ok(soci_ctd(
        &root,
        &ctd,
        &["--content-store", "containerd", "push", &image],
    ));
    let remote = ok(soci(&root, &["index", "list", "--remote", &image, "-q"]));
    assert!(remote.lines().any(|l| l == index), "{remote}");
}

#[test]
fn create_falls_back_to_the_registry_when_containerd_lacks_the_image() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    push_busybox(&reg, tmp.path(), "other:v1");
    let image = format!("{}/other:v1", reg.addr());
    let ctd = Containerd::start(&ContainerdOptions::default());
    let out = ok(soci_ctd(&root, &ctd, &["create", &image]));
    assert!(out.contains("from the registry"), "{out}");
    assert!(out.contains("soci index sha256:"), "{out}");
}
