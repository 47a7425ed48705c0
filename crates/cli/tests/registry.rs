//! End-to-end tests of `soci create|push|convert|index list --remote` against Debian's real
//! `docker-registry` (distribution 2.8) on loopback, with images built here and pushed by skopeo.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use testutil::Registry;

mod common;
use common::{fails, ok, soci};

fn push_sample(
    reg: &Registry,
    tmp: &Path,
    name: &str,
    creds: Option<(&str, &str)>,
) -> testutil::BuiltImage {
    let dir = tmp.join(format!("layout-{}", name.replace(['/', ':'], "-")));
    let built = testutil::write_oci_layout(&dir, "latest", &[testutil::sample_image()]);
    testutil::skopeo_push(&dir, "latest", &format!("{}/{name}", reg.addr()), creds);
    built.into_iter().next().unwrap()
}

fn raw(reference: &str) -> Value {
    serde_json::from_slice(&testutil::skopeo_inspect_raw(reference, None).expect("manifest exists"))
        .unwrap()
}

#[test]
fn create_push_discover_convert_against_a_real_registry() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let image = push_sample(&reg, tmp.path(), "app:v1", None);
    let r = format!("{}/app:v1", reg.addr());

    // create: two big layers indexed, the small one skipped, streamed from the registry.
    let out = ok(soci(&root, &["create", &r]));
    assert_eq!(out.matches("-> ztoc sha256:").count(), 2, "{out}");
    assert!(out.contains("ztoc skipped (size"), "{out}");
    assert!(out.contains("soci index sha256:"), "{out}");
    let list = ok(soci(&root, &["index", "list", "-q", "--ref", &r]));
    assert_eq!(list.lines().count(), 1, "{list}");
    let index_digest = list.trim().to_owned();

    // Idempotent: the same zTOCs and the same index.
    let again = ok(soci(&root, &["create", &r]));
    assert_eq!(again.matches("(already exists)").count(), 2, "{again}");
    assert_eq!(
        ok(soci(&root, &["index", "list", "-q", "--ref", &r])).trim(),
        index_digest
    );

    // Nothing in the registry yet.
    let remote = ok(soci(&root, &["index", "list", "--remote", &r, "-q"]));
    assert!(remote.trim().is_empty(), "{remote}");

    // push, then discovery through the tag schema.
    let out = ok(soci(&root, &["push", &r]));
    assert!(
        out.contains(&format!("pushing soci index {index_digest}")),
        "{out}"
    );
    assert!(out.contains("uploaded"), "{out}");
    let tag = image.manifest_digest.replace(':', "-");
    let referrers = raw(&format!("{}/app:{tag}", reg.addr()));
    let entries = referrers["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["digest"], index_digest.as_str());
    assert_eq!(
        entries[0]["artifactType"],
        "application/vnd.amazon.soci.index.v1+json"
    );
    let pushed = raw(&format!("{}/app@{index_digest}", reg.addr()));
    assert_eq!(pushed["subject"]["digest"], image.manifest_digest.as_str());
    for layer in pushed["layers"].as_array().unwrap() {
        let d = layer["digest"].as_str().unwrap();
        assert!(
            reg.blob_data_path(d).exists(),
            "zTOC {d} is in the registry"
        );
    }
    let remote = ok(soci(&root, &["index", "list", "--remote", &r]));
    assert!(
        remote.contains(&index_digest) && remote.contains("tag schema") && remote.contains("v1"),
        "{remote}"
    );

    // Pushing twice adds nothing twice.
    let out = ok(soci(&root, &["push", &r]));
    assert!(out.contains("already in the registry"), "{out}");
    let referrers = raw(&format!("{}/app:{tag}", reg.addr()));
    assert_eq!(referrers["manifests"].as_array().unwrap().len(), 1);

    // Another index for the same image (different span size): warn by default, skip on request.
    ok(soci(&root, &["create", "--span-size", "4194304", &r]));
    let out = soci(&root, &["push", "--existing-index", "skip", &r]);
    let stdout = ok(out);
    assert!(stdout.contains("skipping"), "{stdout}");
    assert_eq!(
        raw(&format!("{}/app:{tag}", reg.addr()))["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let out = soci(&root, &["push", &r]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    assert!(
        stderr.contains("warning") && stderr.contains(&index_digest),
        "{stderr}"
    );
    assert_eq!(
        raw(&format!("{}/app:{tag}", reg.addr()))["manifests"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // convert into the same repository: a new image index; layers are not re-uploaded.
    let out = ok(soci(
        &root,
        &["convert", &r, &format!("{}/app:v1-soci", reg.addr())],
    ));
    assert!(out.contains("converted image sha256:"), "{out}");
    let converted = raw(&format!("{}/app:v1-soci", reg.addr()));
    assert_eq!(
        converted["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = converted["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{converted}");
    let soci_entry = entries
        .iter()
        .find(|e| e["artifactType"] == "application/vnd.amazon.soci.index.v2+json")
        .expect("a SOCI index v2 entry");
    let image_entry = entries
        .iter()
        .find(|e| e["artifactType"].is_null())
        .unwrap();
    assert_eq!(
        soci_entry["annotations"]["com.amazon.soci.image-manifest-digest"],
        image_entry["digest"]
    );
    assert_eq!(soci_entry["platform"]["architecture"], "amd64");
    let new_manifest = raw(&format!(
        "{}/app@{}",
        reg.addr(),
        image_entry["digest"].as_str().unwrap()
    ));
    assert_eq!(
        new_manifest["annotations"]["com.amazon.soci.index-digest"],
        soci_entry["digest"]
    );
    for (i, l) in new_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(
            l["digest"],
            image.layers[i].digest.as_str(),
            "layers are shared"
        );
    }
    let remote = ok(soci(
        &root,
        &[
            "index",
            "list",
            "--remote",
            &format!("{}/app:v1-soci", reg.addr()),
        ],
    ));
    assert!(
        remote.contains("image index") && remote.contains("v2"),
        "{remote}"
    );
    // The converted image is pullable by a standard client.
    let pulled = tmp.path().join("pulled");
    testutil::skopeo_copy(
        &format!("docker://{}/app:v1-soci", reg.addr()),
        &format!("oci:{}:x", pulled.display()),
    );

    // Converting a converted image is refused.
    let err = fails(soci(
        &root,
        &[
            "convert",
            &format!("{}/app:v1-soci", reg.addr()),
            &format!("{}/app:v1-soci2", reg.addr()),
        ],
    ));
    assert!(err.contains("already a SOCI-enabled image"), "{err}");

    // Convert into another repository: layers are mounted, the result is complete there.
    ok(soci(
        &root,
        &["convert", &r, &format!("{}/other/app:soci", reg.addr())],
    ));
    testutil::skopeo_copy(
        &format!("docker://{}/other/app:soci", reg.addr()),
        &format!("oci:{}:y", tmp.path().join("pulled2").display()),
    );

    // Bad input.
    let err = fails(soci(
        &root,
        &["create", &format!("{}/app:nope", reg.addr())],
    ));
    assert!(
        err.contains(&format!("manifest unknown: {}/app:nope", reg.addr())),
        "{err}"
    );
    let err = fails(soci(
        &root,
        &["push", &format!("{}/never-created:v1", reg.addr())],
    ));
    assert!(err.contains("soci create"), "{err}");
}

#[test]
fn standalone_convert_of_an_oci_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = tmp.path().join("src");
    testutil::write_oci_layout(&src, "latest", &[testutil::sample_image()]);
    let dst = tmp.path().join("dst");
    let out = ok(soci(
        &root,
        &[
            "convert",
            "--standalone",
            "--format",
            "oci-dir",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("converted image"), "{out}");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
    let top = index["manifests"][0]["digest"].as_str().unwrap();
    let top_json: Value =
        serde_json::from_slice(&std::fs::read(dst.join("blobs/sha256").join(&top[7..])).unwrap())
            .unwrap();
    assert_eq!(top_json["manifests"].as_array().unwrap().len(), 2);
    // Every blob the new image needs is in the new layout and matches its digest: skopeo
    // reads it whole. (Not with --preserve-digests: skopeo 1.9 re-serializes OCI indexes
    // because its image-spec predates `artifactType`.)
    testutil::skopeo_copy(
        &format!("oci:{}", dst.display()),
        &format!("oci:{}:copy", tmp.path().join("copy").display()),
    );
    for entry in top_json["manifests"].as_array().unwrap() {
        let d = entry["digest"].as_str().unwrap();
        let bytes = std::fs::read(dst.join("blobs/sha256").join(&d[7..])).unwrap();
        assert_eq!(bytes.len() as u64, entry["size"].as_u64().unwrap());
    }
    // The output directory is never overwritten.
    let err = fails(soci(
        &root,
        &[
            "convert",
            "--standalone",
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("not empty"), "{err}");
    // And a converted layout is recognised as such.
    let err = fails(soci(
        &root,
        &[
            "convert",
            "--standalone",
            dst.to_str().unwrap(),
            tmp.path().join("dst2").to_str().unwrap(),
        ],
    ));
    assert!(err.contains("already a SOCI-enabled image"), "{err}");
}

#[test]
fn basic_auth_create_and_push() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    push_sample(&reg, tmp.path(), "private:v1", Some(("alice", "s3cret")));
    let r = format!("{}/private:v1", reg.addr());

    let err = fails(soci(&root, &["create", &r]));
    assert!(
        err.contains("unauthorized") && err.contains(&reg.addr()),
        "{err}"
    );
    assert!(
        err.contains("anonymous"),
        "says how credentials were looked up: {err}"
    );
    let err = fails(soci(&root, &["create", "--user", "alice:wrong", &r]));
    assert!(err.contains("401") && err.contains("--user flag"), "{err}");

    ok(soci(&root, &["create", "--user", "alice:s3cret", &r]));
    let out = ok(soci(
        &root,
        &[
            "push",
            "--user",
            "alice:s3cret",
            "--platform",
            "linux/amd64",
            &r,
        ],
    ));
    assert!(out.contains("pushing soci index"), "{out}");
    // Credentials from Docker's config.json work too.
    let cfg = root.join("no-docker-config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let remote = ok(soci(&root, &["index", "list", "--remote", &r]));
    assert!(remote.contains("tag schema"), "{remote}");
}

/// A loopback proxy to the registry that drops everything once a manifest PUT goes through it:
/// the registry "goes away" after the blobs were uploaded and before the index is written.
fn proxy_dropping_manifest_puts(target: String) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tripped = Arc::new(AtomicBool::new(false));
    let flag = tripped.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            let flag = flag.clone();
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    let n = match c_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if flag.load(Ordering::SeqCst)
                        || (text.starts_with("PUT ") && text.contains("/manifests/"))
                    {
                        flag.store(true, Ordering::SeqCst);
                        break;
                    }
                    if s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_write.shutdown(std::net::Shutdown::Both);
                let _ = c_read.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
                let _ = c_write.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, tripped)
}

#[test]
fn registry_lost_mid_push_is_reported_and_push_completes_later() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let image = push_sample(&reg, tmp.path(), "app:v1", None);
    let (proxy, tripped) = proxy_dropping_manifest_puts(reg.addr());
    let via_proxy = format!("{proxy}/app:v1");
    ok(soci(&root, &["create", &via_proxy]));
    let out = soci(&root, &["push", &via_proxy]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = fails(out);
    assert!(tripped.load(Ordering::SeqCst));
    assert!(err.contains("PUT manifest") && err.contains("app"), "{err}");
    assert!(
        !stdout.contains("pushed"),
        "nothing is reported as pushed: {stdout}"
    );
    let tag = image.manifest_digest.replace(':', "-");
    assert!(testutil::skopeo_inspect_raw(&format!("{}/app:{tag}", reg.addr()), None).is_none());

    // The registry "comes back" (direct address; same data): the push completes.
    let direct = format!("{}/app:v1", reg.addr());
    ok(soci(&root, &["create", &direct]));
    let out = ok(soci(&root, &["push", &direct]));
    assert!(
        out.contains("already in the registry"),
        "blobs from the first try are reused: {out}"
    );
    assert!(testutil::skopeo_inspect_raw(&format!("{}/app:{tag}", reg.addr()), None).is_some());
}

#[test]
fn push_refuses_an_index_built_for_another_image() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    push_sample(&reg, tmp.path(), "app:v1", None);
    let r = format!("{}/app:v1", reg.addr());
    ok(soci(&root, &["create", &r]));
    // The tag moves to another image.
    let mut other = testutil::sample_image();
    other.layers.truncate(1);
    let dir = tmp.path().join("other");
    testutil::write_oci_layout(&dir, "latest", &[other]);
    testutil::skopeo_push(&dir, "latest", &r, None);
    let err = fails(soci(&root, &["push", &r]));
    assert!(
        err.contains("refusing to push") && err.contains("soci create"),
        "{err}"
    );
}

#[test]
fn multi_platform_images_index_and_push_per_platform() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut arm = testutil::sample_image();
    arm.arch = "arm64".into();
    // A layer of its own, so the two platforms differ.
    arm.layers[2] = testutil::LayerSpec {
        compression: testutil::Compression::Gzip,
        entries: vec![testutil::EntrySpec::File(testutil::FileSpec {
            path: "opt/arm.bin".into(),
            data: testutil::random_bytes(11_000_000, 99),
            mode: 0o644,
        })],
    };
    let dir = tmp.path().join("multi");
    let built = testutil::write_oci_layout(&dir, "latest", &[testutil::sample_image(), arm]);
    let r = format!("{}/multi:v1", reg.addr());
    testutil::skopeo_push(&dir, "latest", &r, None);

    // Default: this machine's platform only.
    let out = ok(soci(&root, &["create", &r]));
    assert_eq!(out.matches("soci index sha256:").count(), 1, "{out}");
    let out = ok(soci(&root, &["create", "--all-platforms", &r]));
    assert_eq!(out.matches("soci index sha256:").count(), 2, "{out}");
    assert_eq!(
        out.matches("(already exists)").count(),
        3,
        "shared and reused layers: {out}"
    );
    let list = ok(soci(
        &root,
        &[
            "index",
            "list",
            "--ref",
            &r,
            "--platform",
            "linux/arm64",
            "-q",
        ],
    ));
    assert_eq!(list.lines().count(), 1);

    ok(soci(&root, &["push", "--all-platforms", &r]));
    for b in &built {
        let tag = b.manifest_digest.replace(':', "-");
        let referrers = raw(&format!("{}/multi:{tag}", reg.addr()));
        assert_eq!(
            referrers["manifests"].as_array().unwrap().len(),
            1,
            "{}",
            b.manifest_digest
        );
    }
    let remote = ok(soci(
        &root,
        &["index", "list", "--remote", &r, "--platform", "linux/arm64"],
    ));
    assert!(
        remote.contains("linux/arm64") && !remote.contains("linux/amd64"),
        "{remote}"
    );

    // Convert only arm64: the new index keeps both images, with one SOCI index.
    ok(soci(
        &root,
        &[
            "convert",
            "--platform",
            "linux/arm64",
            &r,
            &format!("{}/multi:v1-soci", reg.addr()),
        ],
    ));
    let converted = raw(&format!("{}/multi:v1-soci", reg.addr()));
    let entries = converted["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{converted}");
    let soci_entry = entries
        .iter()
        .find(|e| !e["artifactType"].is_null())
        .unwrap();
    assert_eq!(soci_entry["platform"]["architecture"], "arm64");
    let amd = entries
        .iter()
        .find(|e| e["platform"]["architecture"] == "amd64")
        .unwrap();
    assert_eq!(
        amd["digest"],
        built[0].manifest_digest.as_str(),
        "the amd64 image is unchanged"
    );
}

#[test]
fn a_layer_that_does_not_match_its_digest_is_rejected() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let image = push_sample(&reg, tmp.path(), "app:v1", None);
    // Flip one byte of the big layer in the registry's storage.
    let path = reg.blob_data_path(&image.layers[0].digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();
    let err = fails(soci(&root, &["create", &format!("{}/app:v1", reg.addr())]));
    assert!(err.contains(&image.layers[0].digest), "{err}");
    assert!(err.contains("no SOCI index was created"), "{err}");
    let list = ok(soci(&root, &["index", "list", "-q"]));
    assert!(list.trim().is_empty(), "{list}");
}
