//! A real Debian image (debootstrap minbase + python3, plus a small app layer, built with
//! umoci) pushed to a loopback registry, indexed, mounted lazily, and a Python program run in
//! a chroot of the mount. The rootfs is built once per target directory (about a minute).

use std::path::Path;
use std::process::Command;
use testutil::Registry;

mod common;
use common::{ok, soci};

#[test]
fn python_runs_in_a_chroot_of_a_lazy_mount_fetching_a_fraction_of_the_image() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let layout = tmp.path().join("layout");
    testutil::python_layout(Path::new(env!("CARGO_TARGET_TMPDIR")), &layout);
    let r = format!("{}/python:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &r, None);
    ok(soci(&root, &["create", &r]));
    ok(soci(&root, &["push", &r]));

    let dir = tmp.path().join("mnt");
    ok(soci(
        &root,
        &["mount", "--no-background-fetch", &r, dir.to_str().unwrap()],
    ));
    let result = std::panic::catch_unwind(|| {
        let out = testutil::run_ok(
            Command::new("chroot")
                .arg(&dir)
                .args(["python3", "/app/app.py"]),
        );
        assert_eq!(out.trim(), r#"{"ready": 3}"#);
        let out = testutil::run_ok(
            Command::new("chroot")
                .arg(&dir)
                .args(["python3", "-c", "print(1)"]),
        );
        assert_eq!(out.trim(), "1");
        let stats = ok(soci(&root, &["mount", "--stats", dir.to_str().unwrap()]));
        let total = stats
            .lines()
            .find(|l| l.starts_with("total:"))
            .expect("a total line")
            .to_owned();
        // "total: F of S bytes fetched (P%)"
        let words: Vec<&str> = total.split_whitespace().collect();
        let fetched: u64 = words[1].parse().unwrap();
        let size: u64 = words[3].parse().unwrap();
        println!("python3 in a chroot of the lazy mount: {total}");
        assert!(fetched > 0);
        assert!(
            fetched * 100 < size * 40,
            "python3 fetched {fetched} of {size} bytes: {stats}"
        );
    });
    ok(soci(&root, &["unmount", dir.to_str().unwrap()]));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
