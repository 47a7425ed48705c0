//! A crash or upgrade of the FUSE manager breaks no running container (issue 18), through
//! real containerd 1.6 + runc, Debian's docker-registry and FUSE: a container checksums a
//! 16 MB file of a lazy layer over and over with direct I/O (every read crosses FUSE), while
//! the manager is killed, the daemon and the manager are killed together, the manager is
//! upgraded to a new binary, and the span cache is deleted while no manager runs. Those two
//! tests turn FUSE passthrough off, so every read does cross FUSE; a third kills the
//! manager while the file is passed through to the kernel.

mod common;

use common::{ok, soci, Daemon};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Config of the tests whose reads must all cross FUSE (no passthrough).
const NO_PASSTHROUGH: &str = "[background_fetch]\ndisable = true\n[fuse]\npassthrough = false\n";

/// Passes of the read loop; the test ends it sooner once its faults are done.
const MAX_PASSES: usize = 2000;

/// A container that reads `/data/big.txt` with O_DIRECT (so no read is served from the page
/// cache) and appends each pass's md5 to `/out/sums`, until `/out/stop` exists. A failed
/// read fails the pipeline (pipefail) and ends the loop with `FAILED` in the file.
struct Reader {
    name: String,
    out: PathBuf,
}

impl Reader {
    /// `name` is unique among the tests: runc's state directory is shared by every
    /// containerd on the machine.
    fn start(
        ctd: &testutil::containerd_daemon::Containerd,
        image: &str,
        out: &Path,
        name: &str,
    ) -> Reader {
        std::fs::create_dir_all(out).unwrap();
        let name = name.to_string();
        // A run of this test that died midway leaves its container in runc's state, which
        // every containerd's shims share (`/run/containerd/runc/<namespace>`).
        let _ = Command::new("runc")
            .args([
                "--root",
                "/run/containerd/runc/default",
                "delete",
                "--force",
                &name,
            ])
            .output();
        let script = format!(
            "set -o pipefail; i=0; while [ $i -lt {MAX_PASSES} ] && [ ! -e /out/stop ]; do \
             dd if=/data/big.txt iflag=direct bs=1048576 2>/out/dd.err | md5sum >> /out/sums \
             || {{ echo FAILED >> /out/sums; exit 1; }}; i=$((i+1)); done; touch /out/done"
        );
        let mount = format!("type=bind,src={},dst=/out,options=rbind:rw", out.display());
        ctd.ctr_ok(&[
            "run",
            "-d",
            "--snapshotter",
            "soci",
            "--mount",
            &mount,
            image,
            &name,
            "sh",
            "-c",
            &script,
        ]);
        Reader {
            name,
            out: out.to_owned(),
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.out.join("sums"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.to_owned())
            .collect()
    }

    /// Waits (bounded) until `n` more passes than now have finished.
    fn wait_passes(&self, n: usize, daemon: &Daemon) {
        let context = || {
            format!(
                "daemon:\n{}\nmanager:\n{}",
                daemon.log(),
                daemon.manager_log()
            )
        };
        let target = self.lines().len() + n;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.lines().len() < target {
            assert!(
                !self.lines().iter().any(|l| l.contains("FAILED")),
                "a read failed: {:?}\n{}",
                std::fs::read_to_string(self.out.join("dd.err")),
                context()
            );
            assert!(
                Instant::now() < deadline,
                "no progress in 120 s ({} passes): a read hangs\n{}",
                self.lines().len(),
                context()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the loop and checks every pass read the right bytes.
    fn finish(&self, ctd: &testutil::containerd_daemon::Containerd, md5: &str) -> usize {
        std::fs::write(self.out.join("stop"), "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.out.join("done").exists() {
            assert!(
                !self.lines().iter().any(|l| l.contains("FAILED")),
                "a read failed: {:?}",
                std::fs::read_to_string(self.out.join("dd.err"))
            );
            assert!(Instant::now() < deadline, "the read loop did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
        let lines = self.lines();
        for (i, l) in lines.iter().enumerate() {
            assert!(l.starts_with(md5), "pass {i} read other bytes: {l}");
        }
        let _ = ctd.ctr(&["task", "kill", "-s", "SIGKILL", &self.name]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while ctd.ctr(&["task", "delete", &self.name]).status.code() != Some(0) {
            assert!(Instant::now() < deadline, "the task did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
        ctd.ctr_ok(&["containers", "rm", &self.name]);
        lines.len()
    }
}

/// Device and inode of a file, as the manager reports its executable.
fn identity(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

struct Setup {
    _reg: testutil::Registry,
    tmp: tempfile::TempDir,
    image: String,
    md5: String,
}

fn setup() -> Setup {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let plain = common::push_busybox(&reg, tmp.path(), "crash");
    let image = format!("{}/crash:soci", reg.addr());
    ok(soci(&tmp.path().join("cli"), &["convert", &plain, &image]));
    let md5 = common::busybox_big_md5();
    Setup {
        _reg: reg,
        tmp,
        image,
        md5,
    }
}

fn rpull(ctd: &testutil::containerd_daemon::Containerd, cli: &Path, image: &str) {
    let out = ok(soci(
        cli,
        &[
            "--address",
            ctd.address().to_str().unwrap(),
            "image",
            "rpull",
            image,
        ],
    ));
    assert!(out.contains("1 layer lazy"), "{out}");
}

#[test]
fn a_container_reads_on_through_manager_kills_and_a_daemon_crash() {
    let s = setup();
    let mut daemon = Daemon::start(&s.tmp.path().join("d"), NO_PASSTHROUGH);
    let ctd = daemon.containerd();
    rpull(&ctd, &s.tmp.path().join("cli"), &s.image);
    let reader = Reader::start(&ctd, &s.image, &s.tmp.path().join("out"), "crash-reader");
    reader.wait_passes(1, &daemon);
    let keeper = daemon.keeper_pid().expect("a FUSE keeper");

    // Three kills of the manager while the loop reads; each new manager takes the same
    // connection over, so the reads in flight are answered by it.
    let mut manager = daemon.manager_pid().expect("a FUSE manager");
    for _ in 0..3 {
        common::kill9(manager);
        manager = common::wait_new_manager(&daemon, manager);
        reader.wait_passes(2, &daemon);
    }
    assert_eq!(daemon.keeper_pid(), Some(keeper), "the keeper was replaced");

    // The daemon and the manager die together; the keeper stays and the daemon, started
    // again, finds the same mount served.
    daemon.kill();
    common::kill9(manager);
    let manager = common::wait_new_manager(&daemon, manager);
    reader.wait_passes(2, &daemon);
    daemon.restart();
    assert_eq!(daemon.manager_pid(), Some(manager), "{}", daemon.log());
    assert_eq!(daemon.fuse_mounts().len(), 1, "{:?}", daemon.fuse_mounts());
    reader.wait_passes(1, &daemon);

    let passes = reader.finish(&ctd, &s.md5);
    let restarts = daemon
        .manager_log()
        .matches("live mounts taken over")
        .count();
    assert_eq!(restarts, 4, "{}", daemon.manager_log());
    println!("{passes} passes of 16 MB verified across 4 manager kills");
}

#[test]
fn a_live_upgrade_and_a_deleted_span_cache_break_no_read() {
    let s = setup();
    // The daemon runs from a copy, which the test replaces as a package upgrade would.
    let exe = s.tmp.path().join("bin/soci-snapshotter-grpc");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_soci-snapshotter-grpc"), &exe).unwrap();
    let mut daemon = Daemon::start_with_exe(&s.tmp.path().join("d"), NO_PASSTHROUGH, &exe);
    let ctd = daemon.containerd();
    rpull(&ctd, &s.tmp.path().join("cli"), &s.image);
    let reader = Reader::start(&ctd, &s.image, &s.tmp.path().join("out"), "upgrade-reader");
    reader.wait_passes(1, &daemon);
    let keeper = daemon.keeper_pid().expect("a FUSE keeper");
    let manager = daemon.manager_pid().expect("a FUSE manager");

    // Upgrade: a new file at the executable's path, then a daemon restart.
    let staged = s.tmp.path().join("bin/new");
    std::fs::copy(env!("CARGO_BIN_EXE_soci-snapshotter-grpc"), &staged).unwrap();
    std::fs::rename(&staged, &exe).unwrap();
    daemon.restart();
    let upgraded = common::wait_new_manager(&daemon, manager);
    assert_eq!(
        daemon.keeper_pid(),
        Some(keeper),
        "exec keeps the keeper's pid"
    );
    let new = identity(&exe);
    for pid in [keeper, upgraded] {
        assert_eq!(
            identity(Path::new(&format!("/proc/{pid}/exe"))),
            new,
            "process {pid} does not run the new binary\n{}",
            daemon.manager_log()
        );
    }
    reader.wait_passes(2, &daemon);

    // The span cache is deleted while no manager runs (the keeper is held stopped so it
    // cannot start one): the next manager fetches the zTOC and spans from the registry.
    let metrics_before = daemon.manager_log().matches("live mount resumed").count();
    Command::new("kill")
        .args(["-STOP", &keeper.to_string()])
        .status()
        .unwrap();
    common::kill9(upgraded);
    let cache = daemon.root.join("cache");
    std::fs::remove_dir_all(&cache).unwrap();
    Command::new("kill")
        .args(["-CONT", &keeper.to_string()])
        .status()
        .unwrap();
    common::wait_new_manager(&daemon, upgraded);
    reader.wait_passes(2, &daemon);
    assert_eq!(
        daemon.manager_log().matches("live mount resumed").count(),
        metrics_before + 1
    );
    let cached = common::dir_size(&cache);
    assert!(
        cached >= 16_000_000,
        "the span cache holds {cached} bytes: the file was not fetched again"
    );
    reader.finish(&ctd, &s.md5);
}

/// Passthrough opens counted by the manager now running (its counters start at 0).
fn passthrough_opens(metrics: &str) -> u64 {
    common::metric_sum(
        &common::http_get(metrics, "/metrics"),
        "soci_passthrough_opens_total",
    )
}

/// Waits (bounded) until the running manager has passed `n` opens through.
fn wait_passthrough_opens(metrics: &str, n: u64, reader: &Reader, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while passthrough_opens(metrics) < n {
        assert!(
            Instant::now() < deadline,
            "{} passthrough opens after 60 s\n{}",
            passthrough_opens(metrics),
            daemon.manager_log()
        );
        reader.wait_passes(1, daemon);
    }
}

#[test]
fn a_file_passed_through_to_the_kernel_stays_readable_across_manager_kills() {
    let s = setup();
    let metrics = common::free_addr();
    let daemon = Daemon::start(
        &s.tmp.path().join("d"),
        &format!("metrics_address = \"{metrics}\"\n[background_fetch]\ndisable = true\n"),
    );
    let ctd = daemon.containerd();
    rpull(&ctd, &s.tmp.path().join("cli"), &s.image);
    let reader = Reader::start(&ctd, &s.image, &s.tmp.path().join("out"), "pt-reader");
    // The first pass fetches the file, the next one's open makes its backing file, and from
    // then on opens pass through.
    wait_passthrough_opens(&metrics, 2, &reader, &daemon);

    // A manager taking over cannot know which files the dead one had open: it must answer
    // every open of the passed-through inode with the same backing ID (from the table kept
    // outside the span cache), or the kernel fails the open. Twice, to cover a table read
    // and written by a manager that itself took over.
    // A table left by a mount that ended is removed by the next manager; the live one stays.
    let tables = daemon.root.join("passthrough");
    std::fs::write(tables.join("ended"), "7 1\n").unwrap();
    let mut manager = daemon.manager_pid().expect("a FUSE manager");
    for _ in 0..2 {
        common::kill9(manager);
        manager = common::wait_new_manager(&daemon, manager);
        wait_passthrough_opens(&metrics, 2, &reader, &daemon);
    }
    let left: Vec<_> = std::fs::read_dir(&tables).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!tables.join("ended").exists());
    // Passthrough turned off in the config, then a crash: the next manager passes no new
    // file through, but must still answer the one already passed through with its ID.
    std::fs::write(
        &daemon.config,
        format!(
            "metrics_address = \"{metrics}\"\n[background_fetch]\ndisable = true\n[fuse]\npassthrough = false\n"
        ),
    )
    .unwrap();
    common::kill9(manager);
    common::wait_new_manager(&daemon, manager);
    wait_passthrough_opens(&metrics, 2, &reader, &daemon);
    let passes = reader.finish(&ctd, &s.md5);
    println!("{passes} passes of 16 MB verified, passed through across 3 manager kills");
}
