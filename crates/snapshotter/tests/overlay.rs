//! The snapshotter on its own, for images pulled by containerd without labels: it must behave
//! like containerd's overlayfs snapshotter.

mod common;
use common::Daemon;

#[test]
fn an_ordinary_pull_unpacks_through_the_snapshotter_and_containers_run() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = common::push_busybox(&reg, tmp.path(), "plain");
    let daemon = Daemon::start(&tmp.path().join("d"), "");
    let ctd = daemon.containerd();
    assert!(
        ctd.ctr_ok(&["plugins", "ls"]).contains("soci"),
        "containerd did not load the proxy plugin"
    );
    ctd.ctr_ok(&[
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "soci",
        &image,
    ]);
    let out = ctd.run_ok(
        None,
        "soci",
        &image,
        "ov-t1",
        &[
            "sh",
            "-c",
            "cat /etc/msg; echo written > /tmp/x; cat /tmp/x; wc -c < /data/big.txt",
        ],
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["from", "layer", "2", "written", "16000000"],
        "{out}"
    );
    // Both layers are committed snapshots of ours; a View works; usage is reported.
    let ls = ctd.ctr_ok(&["snapshots", "--snapshotter", "soci", "ls"]);
    assert_eq!(
        ls.lines().filter(|l| l.contains("Committed")).count(),
        2,
        "{ls}"
    );
    // "KEY PARENT KIND": the top layer is the committed snapshot that has a parent.
    let top = ls
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 3 && w[2] == "Committed")
        .map(|w| w[0].to_owned())
        .unwrap_or_else(|| panic!("no committed snapshot with a parent in:\n{ls}"));
    let mounts = ctd.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "soci",
        "view",
        "--mounts",
        "ov-view",
        &top,
    ]);
    assert!(mounts.contains("\"lowerdir="), "{mounts}");
    let usage = ctd.ctr_ok(&["snapshots", "--snapshotter", "soci", "usage"]);
    assert!(usage.contains(&top), "{usage}");
    // The view has no lease once ctr exits, so containerd's GC removes it with the rest.

    // Removing the image lets containerd's GC remove every snapshot of ours.
    ctd.ctr_ok(&["images", "rm", "--sync", &image]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ls = ctd.ctr_ok(&["snapshots", "--snapshotter", "soci", "ls"]);
        let dirs = std::fs::read_dir(daemon.root.join("snapshotter/snapshots"))
            .unwrap()
            .count();
        if ls.lines().count() <= 1 && dirs == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "snapshots left after the image was removed:\n{ls}\n{dirs} directories\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
