//! The containerd harness itself: a locally built busybox image pulled from the loopback
//! registry runs in a container, and dropping the harness leaves no mounts behind.

use testutil::containerd_daemon::{Containerd, ContainerdOptions};
use testutil::Registry;

#[test]
fn containerd_pulls_and_runs_a_busybox_image_and_cleans_up() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    testutil::write_oci_layout(&layout, "latest", &[testutil::busybox_image()]);
    let image = format!("{}/busybox:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &image, None);

    let ctd = Containerd::start(&ContainerdOptions::default());
    ctd.ctr_ok(&["images", "pull", "--plain-http", &image]);
    let out = ctd.ctr_ok(&["run", "--rm", &image, "harness-t1", "cat", "/etc/msg"]);
    assert_eq!(out.trim(), "from layer 2");
    let out = ctd.ctr_ok(&[
        "run",
        "--rm",
        &image,
        "harness-t2",
        "wc",
        "-c",
        "/data/big.txt",
    ]);
    assert!(out.trim().starts_with("16000000"), "{out}");
    let root = ctd.root();
    drop(ctd);
    assert!(testutil::containerd_daemon::mounts_under(&root).is_empty());
}
