//! The harness itself: a real registry starts, takes pushes, enforces auth, stops and restarts.

use sha2::{Digest, Sha256};
use testutil::*;

#[test]
fn registry_takes_a_push_and_survives_a_restart() {
    let mut reg = Registry::start();
    assert!(reg.is_running());
    let tmp = tempfile::tempdir().unwrap();
    let built = write_oci_layout(tmp.path(), "latest", &[sample_image()]);
    let dest = format!("{}/harness/app:v1", reg.addr());
    skopeo_push(tmp.path(), "latest", &dest, None);
    let raw = skopeo_inspect_raw(&dest, None).expect("pushed");
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&raw))),
        built[0].manifest_digest
    );
    assert!(reg.blob_data_path(&built[0].layers[0].digest).exists());
    assert!(skopeo_inspect_raw(&format!("{}/harness/app:nope", reg.addr()), None).is_none());
    reg.stop();
    assert!(!reg.is_running());
    assert!(std::net::TcpStream::connect(reg.addr()).is_err());
    reg.restart();
    assert!(skopeo_inspect_raw(&dest, None).is_some());
}

#[test]
fn auth_registry_wants_credentials() {
    let reg = Registry::start_with_auth("bob", "pw");
    let tmp = tempfile::tempdir().unwrap();
    write_oci_layout(tmp.path(), "latest", &[sample_image()]);
    let dest = format!("{}/private/app:v1", reg.addr());
    skopeo_push(tmp.path(), "latest", &dest, Some(("bob", "pw")));
    assert!(skopeo_inspect_raw(&dest, Some(("bob", "pw"))).is_some());
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn multi_platform_layouts_push_every_platform() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut arm = sample_image();
    arm.arch = "arm64".into();
    arm.layers.truncate(2);
    let built = write_oci_layout(tmp.path(), "latest", &[sample_image(), arm]);
    assert_eq!(built.len(), 2);
    let dest = format!("{}/multi/app:v1", reg.addr());
    skopeo_push(tmp.path(), "latest", &dest, None);
    let index: serde_json::Value =
        serde_json::from_slice(&skopeo_inspect_raw(&dest, None).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    for b in &built {
        assert!(skopeo_inspect_raw(
            &format!("{}/multi/app@{}", reg.addr(), b.manifest_digest),
            None
        )
        .is_some());
    }
}
