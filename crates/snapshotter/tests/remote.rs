//! The remote-snapshot contract, driven over gRPC exactly as containerd's unpacker drives it
//! (Prepare with `containerd.io/snapshot.ref` and the image labels, then a filtered List),
//! followed by the life of a container on top: overlay mounts over the FUSE layer, a daemon
//! restart while the container's files are in use, a lost FUSE manager, and removal.

mod common;
use common::{ok, soci, Daemon};
use containerd_client::services::v1::snapshots as pb;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

const REF: &str = "containerd.io/snapshot.ref";

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mount(mounts: &[containerd_client::types::Mount], target: &Path) {
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let m = &mounts[0];
    std::fs::create_dir_all(target).unwrap();
    let status = Command::new("mount")
        .args(["-t", &m.r#type, "-o", &m.options.join(","), &m.source])
        .arg(target)
        .status()
        .unwrap();
    assert!(status.success(), "mount {m:?}");
}

fn umount(target: &Path) {
    let _ = Command::new("umount").arg(target).status();
}

fn read_prefix(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_with_image_labels_mounts_the_layer_lazily_and_survives_restarts() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let built = testutil::write_oci_layout(&layout, "latest", &[testutil::busybox_image()]);
    let image = format!("{}/lazy:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &image, None);
    let cli_root = tmp.path().join("cli");
    let converted = format!("{}/lazy:soci", reg.addr());
    ok(soci(&cli_root, &["convert", &image, &converted]));
    let manifest = common::platform_manifest_digest(&converted);
    let layers = &built[0].layers;
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let chain = containerd::chain_ids(&diff_ids);

    let metrics = common::free_addr();
    let mut daemon = Daemon::start(
        &tmp.path().join("d"),
        &format!("metrics_address = \"{metrics}\"\n[background_fetch]\ndisable = true\n"),
    );
    let mut client = common::snapshots_client(&daemon.socket).await;
    let layer_labels = |i: usize| {
        labels(&[
            (REF, &chain[i]),
            ("containerd.io/snapshot/cri.image-ref", &converted),
            ("containerd.io/snapshot/cri.manifest-digest", &manifest),
            ("containerd.io/snapshot/cri.layer-digest", &layers[i].digest),
            (
                "containerd.io/snapshot/cri.image-layers",
                &layers[i..]
                    .iter()
                    .map(|l| l.digest.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ])
    };

    // Layer 1 has a zTOC: Prepare answers AlreadyExists and the committed snapshot is found
    // the way containerd looks for it.
    let err = client
        .prepare(pb::PrepareSnapshotRequest {
            snapshotter: "soci".into(),
            key: format!("default/1/extract-1 {}", chain[0]),
            parent: String::new(),
            labels: layer_labels(0),
        })
        .await
        .expect_err("a lazily mounted layer is reported as existing");
    assert_eq!(
        err.code(),
        tonic::Code::AlreadyExists,
        "{err:?}\n{}",
        daemon.log()
    );
    let mut list = client
        .list(pb::ListSnapshotsRequest {
            snapshotter: "soci".into(),
            filters: vec![format!("labels.\"{REF}\"=={},parent==\"\"", chain[0])],
        })
        .await
        .unwrap()
        .into_inner();
    let mut found = Vec::new();
    while let Some(batch) = list.message().await.unwrap() {
        found.extend(batch.info);
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, pb::Kind::Committed as i32);
    let lazy_name = found[0].name.clone();
    assert_eq!(daemon.fuse_mounts().len(), 1, "{}", daemon.manager_log());

    // Asking again (a second pull) finds it without a second mount.
    let err = client
        .prepare(pb::PrepareSnapshotRequest {
            snapshotter: "soci".into(),
            key: format!("default/2/extract-2 {}", chain[0]),
            parent: String::new(),
            labels: layer_labels(0),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert_eq!(daemon.fuse_mounts().len(), 1);

    // Layer 2 is small (no zTOC): a normal Prepare on top of the lazy layer; we play
    // containerd's diff applier and write its one file, then commit.
    let key2 = format!("default/3/extract-3 {}", chain[1]);
    let mounts = client
        .prepare(pb::PrepareSnapshotRequest {
            snapshotter: "soci".into(),
            key: key2.clone(),
            parent: lazy_name.clone(),
            labels: layer_labels(1),
        })
        .await
        .expect("a layer without a zTOC is prepared normally")
        .into_inner()
        .mounts;
    let apply = tmp.path().join("apply");
    mount(&mounts, &apply);
    std::fs::write(apply.join("etc/msg"), "from layer 2\n").unwrap();
    umount(&apply);
    let name2 = format!("default/4/{}", chain[1]);
    client
        .commit(pb::CommitSnapshotRequest {
            snapshotter: "soci".into(),
            name: name2.clone(),
            key: key2,
            labels: HashMap::new(),
        })
        .await
        .unwrap();

    // A container's rootfs: overlay of both; files come through FUSE on demand.
    let mounts = client
        .prepare(pb::PrepareSnapshotRequest {
            snapshotter: "soci".into(),
            key: "default/5/ctr".into(),
            parent: name2.clone(),
            labels: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let rootfs = tmp.path().join("rootfs");
    mount(&mounts, &rootfs);
    let big = testutil::noisy(16_000_000, 77);
    let result = std::panic::AssertUnwindSafe(async {
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/msg")).unwrap(),
            "from layer 2\n"
        );
        assert_eq!(
            read_prefix(&rootfs.join("data/big.txt"), 4096).unwrap(),
            big[..4096]
        );
        let text = common::http_get(&metrics, "/metrics");
        let fetched = common::metric_sum(&text, "soci_fetched_bytes_total");
        assert!(fetched > 0, "{text}");
        assert!(
            fetched < layers[0].size / 2,
            "reading 4 KiB fetched {fetched} of {} bytes",
            layers[0].size
        );
        assert_eq!(
            common::metric_sum(&text, "soci_snapshotter_layers_lazy_total"),
            1,
            "{text}"
        );

        // The daemon restarts while the container's rootfs is mounted: the FUSE manager
        // keeps serving, so files keep reading.
        let manager = daemon.manager_pid().expect("a FUSE manager");
        daemon.restart();
        assert_eq!(
            daemon.manager_pid(),
            Some(manager),
            "the FUSE manager was replaced"
        );
        let mut f = std::fs::File::open(rootfs.join("data/big.txt")).unwrap();
        let mut tail = vec![0u8; 1000];
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(12_000_000)).unwrap();
        f.read_exact(&mut tail).unwrap();
        assert_eq!(tail, big[12_000_000..12_001_000]);
        drop(f);

        // The FUSE manager dies (a crash): the daemon starts a new one and mounts the layer
        // again before it hands out mounts that need it.
        Command::new("kill")
            .args(["-9", &manager.to_string()])
            .status()
            .unwrap();
        common::wait_for_exit(manager);
        let mut client = common::snapshots_client(&daemon.socket).await;
        let mounts = client
            .mounts(pb::MountsRequest {
                snapshotter: "soci".into(),
                key: "default/5/ctr".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .mounts;
        // The keeper starts the next manager at once; it writes its pid file once it
        // serves the kept mount again, which may be after the daemon answered.
        common::wait_new_manager(&daemon, manager);
        umount(&rootfs);
        mount(&mounts, &rootfs);
        assert_eq!(
            read_prefix(&rootfs.join("data/big.txt"), 100).unwrap(),
            big[..100]
        );
        umount(&rootfs);

        // Both the daemon and the manager die (as in a node crash): the next daemon mounts
        // the lazy layer again from its metadata when it starts, before any request.
        let manager = daemon.manager_pid().expect("a FUSE manager");
        daemon.kill();
        Command::new("kill")
            .args(["-9", &manager.to_string()])
            .status()
            .unwrap();
        common::wait_for_exit(manager);
        daemon.restart();
        let mounts = daemon.fuse_mounts();
        assert_eq!(mounts.len(), 1, "{mounts:?}\n{}", daemon.log());
        assert_eq!(
            std::fs::read_to_string(mounts[0].join("etc/msg")).unwrap(),
            "from layer 1\n"
        );
        let mut client = common::snapshots_client(&daemon.socket).await;

        // Removal, children first as containerd's GC does: no mount and no directory left.
        for key in ["default/5/ctr", name2.as_str(), lazy_name.as_str()] {
            client
                .remove(pb::RemoveSnapshotRequest {
                    snapshotter: "soci".into(),
                    key: key.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("remove {key}: {e}"));
        }
        assert!(
            daemon.fuse_mounts().is_empty(),
            "{:?}",
            daemon.fuse_mounts()
        );
        let left = std::fs::read_dir(daemon.root.join("snapshotter/snapshots"))
            .unwrap()
            .count();
        assert_eq!(left, 0);
    });
    let outcome = futures_util::FutureExt::catch_unwind(result).await;
    umount(&rootfs);
    if let Err(e) = outcome {
        eprintln!(
            "daemon log:\n{}\nmanager log:\n{}",
            daemon.log(),
            daemon.manager_log()
        );
        std::panic::resume_unwind(e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_a_usable_index_is_prepared_normally() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let built = testutil::write_oci_layout(&layout, "latest", &[testutil::busybox_image()]);
    let image = format!("{}/plain:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &image, None);
    let layers = &built[0].layers;
    let chain = containerd::chain_ids(&[layers[0].diff_id.clone()]);
    let daemon = Daemon::start(&tmp.path().join("d"), "");
    let mut client = common::snapshots_client(&daemon.socket).await;
    let base = labels(&[
        (REF, &chain[0]),
        ("containerd.io/snapshot/cri.image-ref", &image),
        (
            "containerd.io/snapshot/cri.manifest-digest",
            &built[0].manifest_digest,
        ),
        ("containerd.io/snapshot/cri.layer-digest", &layers[0].digest),
    ]);
    let cases: Vec<(&str, HashMap<String, String>)> = vec![
        ("no index at all", base.clone()),
        ("a given index digest that does not exist", {
            let mut l = base.clone();
            l.insert(
                "containerd.io/snapshot/remote/soci.index.digest".into(),
                format!("sha256:{}", "0".repeat(64)),
            );
            l
        }),
        ("a manifest digest the registry does not have", {
            let mut l = base.clone();
            l.insert(
                "containerd.io/snapshot/cri.manifest-digest".into(),
                format!("sha256:{}", "1".repeat(64)),
            );
            l
        }),
    ];
    for (i, (case, l)) in cases.into_iter().enumerate() {
        let reply = client
            .prepare(pb::PrepareSnapshotRequest {
                snapshotter: "soci".into(),
                key: format!("default/{i}/extract-{i} {}", chain[0]),
                parent: String::new(),
                labels: l,
            })
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}\n{}", daemon.log()));
        assert_eq!(reply.into_inner().mounts[0].r#type, "bind", "{case}");
    }
    assert!(daemon.fuse_mounts().is_empty());
    assert!(
        daemon.log().contains("pulling normally"),
        "{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_indexes_are_used_only_when_the_v1_pull_mode_is_on() {
    let reg = testutil::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let built = testutil::write_oci_layout(&layout, "latest", &[testutil::busybox_image()]);
    let image = format!("{}/v1:latest", reg.addr());
    testutil::skopeo_push(&layout, "latest", &image, None);
    let cli_root = tmp.path().join("cli");
    ok(soci(&cli_root, &["create", &image]));
    ok(soci(&cli_root, &["push", &image]));
    let layer = &built[0].layers[0];
    let chain = containerd::chain_ids(std::slice::from_ref(&layer.diff_id));
    let request = |key: &str| pb::PrepareSnapshotRequest {
        snapshotter: "soci".into(),
        key: key.into(),
        parent: String::new(),
        labels: labels(&[
            (REF, &chain[0]),
            ("containerd.io/snapshot/cri.image-ref", &image),
            (
                "containerd.io/snapshot/cri.manifest-digest",
                &built[0].manifest_digest,
            ),
            ("containerd.io/snapshot/cri.layer-digest", &layer.digest),
        ]),
    };
    {
        let daemon = Daemon::start(&tmp.path().join("off"), "");
        let mut client = common::snapshots_client(&daemon.socket).await;
        let reply = client.prepare(request("default/1/k")).await;
        assert!(reply.is_ok(), "v1 is off by default: {reply:?}");
        assert!(
            daemon.log().contains("v1 indexes are not looked up"),
            "{}",
            daemon.log()
        );
    }
    let daemon = Daemon::start(
        &tmp.path().join("on"),
        "[pull_modes.soci_v1]\nenable = true\n",
    );
    let mut client = common::snapshots_client(&daemon.socket).await;
    let err = client.prepare(request("default/1/k")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists, "{}", daemon.log());
    assert!(daemon.log().contains("tag schema"), "{}", daemon.log());
    assert_eq!(daemon.fuse_mounts().len(), 1);
}
