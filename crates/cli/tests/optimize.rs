//! `soci optimize` against a real registry: a Debian + python3 image (built once per target
//! directory, see `testutil::python_layout`) is run once lazily, and the index built around
//! what it read fetches less at the next start than a uniform one; a workload that fails or
//! never gets ready publishes nothing.

use std::path::Path;
use std::process::Command;
use testutil::Registry;

mod common;
use common::{fails, ok, soci};

const READY: &str = r#"{"ready": 3}"#;

/// The rootfs is built once per target directory; two tests must not build it at once.
static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A registry holding the python image as `python:latest`.
fn registry_with_python(tmp: &Path) -> (Registry, String) {
    let reg = Registry::start();
    let layout = tmp.join("layout");
    {
        let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        testutil::python_layout(Path::new(env!("CARGO_TARGET_TMPDIR")), &layout);
    }
    let r = format!("{}/python:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &r, None);
    (reg, r)
}

/// Mounts `image` lazily (no background fetch), runs the app in a chroot of it, and returns
/// the bytes fetched.
fn fetched_by_one_start(root: &Path, image: &str, dir: &Path) -> u64 {
    let d = dir.to_str().unwrap();
    ok(soci(root, &["mount", "--no-background-fetch", image, d]));
    let run = testutil::run_ok(
        Command::new("chroot")
            .arg(dir)
            .args(["python3", "/app/app.py"]),
    );
    let stats = ok(soci(root, &["mount", "--stats", d]));
    ok(soci(root, &["unmount", d]));
    assert_eq!(run.trim(), READY);
    let total = stats
        .lines()
        .find(|l| l.starts_with("total:"))
        .expect("a total line");
    // "total: F of S bytes fetched (P%)"
    total.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn optimize_builds_an_index_around_the_reads_that_fetches_less_than_a_uniform_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, image) = registry_with_python(tmp.path());
    let root = tmp.path().join("root");
    let optimized = format!("{}/python:optimized", reg.addr());
    let ranges = tmp.path().join("ranges.json");
    let out = ok(soci(
        &root,
        &[
            "optimize",
            "--ready-line",
            READY,
            "--convert",
            &optimized,
            "--record-read-ranges",
            ranges.to_str().unwrap(),
            &image,
            "--",
            "python3",
            "/app/app.py",
        ],
    ));
    println!("{out}");
    assert!(out.contains("printed its ready line"), "{out}");
    assert!(
        out.contains("-> prefetch"),
        "a prefetch artifact for the reads: {out}"
    );
    let learned: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ranges).unwrap()).unwrap();
    assert!(
        learned.get("/usr/bin/python3.11").is_some(),
        "the interpreter was read: {learned}"
    );
    // Nothing of the learning run is left mounted or recorded as a mount.
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(root.to_str().unwrap()));

    let uniform = format!("{}/python:soci", reg.addr());
    ok(soci(&root, &["convert", &image, &uniform]));
    let cold = tmp.path().join("cold");
    let uniform_bytes = fetched_by_one_start(&tmp.path().join("root-u"), &uniform, &cold);
    let optimized_bytes = fetched_by_one_start(&tmp.path().join("root-o"), &optimized, &cold);
    println!("one start fetched {optimized_bytes} bytes optimized, {uniform_bytes} uniform");
    assert!(
        optimized_bytes * 2 < uniform_bytes,
        "optimized {optimized_bytes} vs uniform {uniform_bytes}"
    );
}

#[test]
fn optimize_publishes_nothing_when_the_workload_fails_or_never_gets_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, image) = registry_with_python(tmp.path());
    let root = tmp.path().join("root");
    let dest = format!("{}/python:never", reg.addr());
    let err = fails(soci(
        &root,
        &[
            "optimize",
            "--convert",
            &dest,
            "--ready-line",
            "ready!",
            &image,
            "--",
            "python3",
            "-c",
            "import sys; print('boom'); sys.exit(3)",
        ],
    ));
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(
        err.contains("boom"),
        "the workload's output is shown: {err}"
    );
    assert!(err.contains("nothing was published"), "{err}");

    let err = fails(soci(
        &root,
        &[
            "optimize",
            "--push",
            "--timeout",
            "3",
            "--ready-line",
            "ready!",
            &image,
            "--",
            "python3",
            "-c",
            "import time; print('waiting', flush=True); time.sleep(60)",
        ],
    ));
    assert!(err.contains("after 3 s"), "{err}");
    assert!(err.contains("waiting"), "{err}");

    // Ctrl-C while the workload runs: it is stopped, the mount cleaned up, nothing published.
    let run = Command::new(env!("CARGO_BIN_EXE_soci"))
        .arg("--root")
        .arg(&root)
        .args([
            "optimize",
            "--push",
            "--ready-line",
            "ready!",
            &image,
            "--",
            "python3",
            "-c",
        ])
        .arg("import time; print('waiting', flush=True); time.sleep(120)")
        .env("DOCKER_CONFIG", root.join("no-docker-config"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(root.join("optimize").to_str().unwrap())
    };
    for _ in 0..600 {
        if mounted() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(mounted(), "the learning mount never appeared");
    std::thread::sleep(std::time::Duration::from_secs(1));
    testutil::run_ok(Command::new("kill").args(["-INT", &run.id().to_string()]));
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("interrupted"), "{err}");
    assert!(!mounted(), "the learning mount is left: {err}");

    let err = fails(soci(&root, &["optimize", &image, "--", "no-such-program"]));
    assert!(err.contains("no-such-program is not in the image"), "{err}");

    assert!(testutil::skopeo_inspect_raw(&dest, None).is_none());
    let referrers = testutil::run_ok(
        Command::new("curl").args(["-s", &format!("http://{}/v2/python/tags/list", reg.addr())]),
    );
    assert!(
        !referrers.contains("sha256-"),
        "no index was pushed: {referrers}"
    );
    assert!(!ok(soci(&root, &["index", "list"])).contains("sha256:"));
}
