//! The CRI keychain (`[cri_keychain]`), through real containerd 1.6 + runc, Debian's
//! docker-registry with htpasswd auth, and FUSE: the kubelet's image pull goes to the
//! daemon's socket, which keeps the pull's credentials and forwards it to containerd's CRI
//! plugin. The daemon has no other credentials (no Docker config entry for the registry), so
//! finding the SOCI index, the zTOC and every span fetched on demand must use the pull's.
//! They must outlive a live upgrade of the FUSE manager and its keeper (after which the
//! restarted daemon has forgotten them) and a crash of the manager, and a later pull with a
//! wrong secret must not replace them.

mod common;

use common::{ok, soci, Daemon};
use std::path::Path;
use testutil::containerd_daemon::{Containerd, ContainerdOptions};

const USER: &str = "kube";
const PASSWORD: &str = "pull-secret-7c1f";

/// md5 of the first `len` bytes of busybox_image's `data/big.txt`.
fn md5_of_prefix(len: usize) -> String {
    let data = testutil::noisy(16_000_000, 77);
    common::md5_hex(data.get(..len).unwrap_or(&data))
}

fn daemon_config(image_service: &Path) -> String {
    // No background fetch: every span a container reads is fetched when it reads it.
    format!(
        "[background_fetch]\ndisable = true\n[cri_keychain]\nenable_keychain = true\n\
         image_service_path = \"{}\"\n",
        image_service.display()
    )
}

fn md5_in_container(ctd: &Containerd, image: &str, name: &str, bytes: usize) -> String {
    let script = format!("head -c {bytes} /data/big.txt | md5sum");
    let out = ctd.run_ok(Some("k8s.io"), "soci", image, name, &["sh", "-c", &script]);
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Waits (bounded) until containerd talks to the restarted daemon again: its gRPC client
/// backs off after the refused dials of the restart.
fn wait_until_containerd_reaches(ctd: &Containerd, daemon: &Daemon) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ctd
        .ctr(&["-n", "k8s.io", "snapshots", "--snapshotter", "soci", "ls"])
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "containerd does not reach the restarted daemon\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// An indexed image in `reg` (which wants `USER`/`PASSWORD`), and a daemon with the CRI
/// keychain on, running from a copy of its binary, behind containerd's CRI plugin.
struct Node {
    tmp: tempfile::TempDir,
    exe: std::path::PathBuf,
    lazy: String,
    daemon: Daemon,
    ctd: Containerd,
}

impl Node {
    fn start(reg: &testutil::Registry) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let layout = tmp.path().join("layout");
        testutil::write_oci_layout(&layout, "latest", &[testutil::busybox_image()]);
        let plain = format!("{}/private/app:latest", reg.addr());
        testutil::skopeo_push(&layout, "latest", &plain, Some((USER, PASSWORD)));
        let lazy = format!("{}/private/app:soci", reg.addr());
        let user = format!("{USER}:{PASSWORD}");
        ok(soci(
            &tmp.path().join("cli"),
            &["convert", "--user", &user, &plain, &lazy],
        ));
        // The daemon runs from a copy, which a test may replace as a package upgrade would.
        let exe = tmp.path().join("bin/soci-snapshotter-grpc");
        std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_soci-snapshotter-grpc"), &exe).unwrap();
        // containerd needs the daemon's socket and the daemon containerd's. The daemon dials
        // containerd on the first CRI call, through a link made once containerd runs.
        let link = tmp.path().join("containerd.sock");
        let daemon = Daemon::start_with_exe(&tmp.path().join("d"), &daemon_config(&link), &exe);
        let ctd = Containerd::start(&ContainerdOptions {
            proxy_snapshotter: Some(("soci".into(), daemon.socket.clone())),
            cri_snapshotter: Some("soci".into()),
            extra_toml: format!(
                "\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{0}\"]\n  endpoint = [\"http://{0}\"]\n",
                reg.addr()
            ),
        });
        std::os::unix::fs::symlink(ctd.address(), &link).unwrap();
        Node {
            tmp,
            exe,
            lazy,
            daemon,
            ctd,
        }
    }

    fn context(&self) -> String {
        format!(
            "daemon:\n{}\nmanager:\n{}\ncontainerd:\n{}",
            self.daemon.log(),
            self.daemon.manager_log(),
            self.ctd.log_tail()
        )
    }

    /// The kubelet's pull of the indexed image, with its image pull secret, through the
    /// daemon's socket; checks the layer is mounted lazily.
    async fn pull_lazily(&self) {
        testutil::cri::pull_image_with_auth(
            &self.daemon.socket,
            &self.lazy,
            Some((USER, PASSWORD)),
        )
        .await
        .unwrap_or_else(|e| panic!("CRI pull through the keychain: {e}\n{}", self.context()));
        assert_eq!(
            self.daemon.fuse_mounts().len(),
            1,
            "the indexed layer is mounted lazily (the SOCI index was found with the pull's \
             credentials)\n{}",
            self.context()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_layers_fetch_with_the_credentials_of_the_kubelets_pull() {
    let reg = testutil::Registry::start_with_auth(USER, PASSWORD);
    let mut node = Node::start(&reg);
    node.pull_lazily().await;
    let quarter = 4_000_000;
    assert_eq!(
        md5_in_container(&node.ctd, &node.lazy, "keychain-1", quarter),
        md5_of_prefix(quarter),
        "{}",
        node.context()
    );

    // A pull with a wrong secret fails, naming the image, and leaves the good one in use.
    let err =
        testutil::cri::pull_image_with_auth(&node.daemon.socket, &node.lazy, Some((USER, "wrong")))
            .await
            .expect_err("a pull with a wrong password");
    assert!(
        err.message().contains(&reg.addr()) && err.message().contains("401"),
        "{err}"
    );

    // A live upgrade replaces the manager and the keeper; the restarted daemon has lost its
    // keychain, so only the keeper's copy carries the credentials over.
    let manager = node.daemon.manager_pid().expect("a FUSE manager");
    let staged = node.tmp.path().join("bin/new");
    std::fs::copy(env!("CARGO_BIN_EXE_soci-snapshotter-grpc"), &staged).unwrap();
    std::fs::rename(&staged, &node.exe).unwrap();
    node.daemon.restart();
    let upgraded = common::wait_new_manager(&node.daemon, manager);
    wait_until_containerd_reaches(&node.ctd, &node.daemon);
    // And a crash of the manager: the keeper hands them to the next one.
    common::kill9(upgraded);
    common::wait_new_manager(&node.daemon, upgraded);

    // The rest of the file was never fetched: its spans need the credentials now.
    let whole = 16_000_000;
    assert_eq!(
        md5_in_container(&node.ctd, &node.lazy, "keychain-2", whole),
        md5_of_prefix(whole),
        "{}",
        node.context()
    );
    let logs = format!("{}{}", node.daemon.log(), node.daemon.manager_log());
    assert!(
        logs.contains("keeping the credentials of a CRI pull"),
        "{}",
        node.context()
    );
    assert!(!logs.contains(PASSWORD), "a log shows the password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_container_reads_on_past_several_token_expiries() {
    // docker-registry with token auth: a real JWT issuer whose tokens it accepts for 2 s.
    let issuer = testutil::token_issuer::TokenIssuer::start(testutil::token_issuer::TokenPolicy {
        user: USER.into(),
        password: PASSWORD.into(),
        lifetime: std::time::Duration::from_secs(2),
        advertised_expires_in: None,
    });
    let reg = testutil::Registry::start_with_config(&issuer.registry_auth_yaml());
    let node = Node::start(&reg);
    node.pull_lazily().await;

    // Four 1 MB reads 4 MB apart (each in spans not fetched yet), 2.5 s apart: every read
    // after the first finds the token it had expired.
    let before = issuer.issued();
    let script = "for i in 0 4 8 12; do [ $i -eq 0 ] || sleep 2.5; \
                  dd if=/data/big.txt bs=1000000 skip=$i count=1 2>/dev/null; done | md5sum";
    let out = node.ctd.run_ok(
        Some("k8s.io"),
        "soci",
        &node.lazy,
        "token-reader",
        &["sh", "-c", script],
    );
    let data = testutil::noisy(16_000_000, 77);
    let mut expected = Vec::new();
    for i in [0usize, 4, 8, 12] {
        expected.extend_from_slice(&data[i * 1_000_000..(i + 1) * 1_000_000]);
    }
    let md5 = common::md5_hex(&expected);
    assert_eq!(
        out.split_whitespace().next().unwrap_or_default(),
        md5,
        "{}",
        node.context()
    );
    let renewed = issuer.issued() - before;
    assert!(
        renewed >= 3,
        "{renewed} tokens issued during the reads: they were not renewed\n{}",
        node.context()
    );
    // Other clients may ask anonymously first; ours never lacks the pull's credentials.
    let ours: Vec<String> = issuer
        .refused()
        .into_iter()
        .filter(|agent| agent.starts_with("soci-rs"))
        .collect();
    assert!(ours.is_empty(), "refused: {ours:?}\n{}", node.context());
}
