//! The harness itself: a real registry starts, answers, takes pushes, enforces auth, sends
//! notifications, stops and restarts; layouts are deterministic and well-formed.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;
use testutil::*;

/// Runs `f` on its own thread and fails the test if it takes longer than `secs`.
fn bounded(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => worker.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // `f` panicked: re-raise its panic here.
            if let Err(p) = worker.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test took longer than {secs} s"),
    }
}

fn sha(bytes: &[u8]) -> String {
    testutil::sha(bytes)
}

/// Status line and headers of a plain `GET` (HTTP/1.0).
fn http_get_head(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all).into_owned();
    text.split("\r\n\r\n").next().unwrap().to_owned()
}

fn tiny_image(arch: &str, text: &str) -> ImageSpec {
    ImageSpec {
        os: "linux".into(),
        arch: arch.into(),
        layers: vec![
            LayerSpec {
                compression: Compression::Gzip,
                entries: vec![
                    EntrySpec::Dir {
                        path: "app/".into(),
                        mode: 0o755,
                    },
                    EntrySpec::File(FileSpec {
                        path: "app/run.sh".into(),
                        data: text.as_bytes().to_vec(),
                        mode: 0o755,
                    }),
                    EntrySpec::Symlink {
                        path: "app/start".into(),
                        target: "run.sh".into(),
                    },
                    EntrySpec::Hardlink {
                        path: "app/run2.sh".into(),
                        target: "app/run.sh".into(),
                    },
                ],
            },
            LayerSpec {
                compression: Compression::Uncompressed,
                entries: vec![EntrySpec::File(FileSpec {
                    path: "etc/motd".into(),
                    data: noisy(1000, 5),
                    mode: 0o644,
                })],
            },
        ],
    }
}

fn read_blob(layout: &std::path::Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap()
}

#[test]
fn registry_starts_and_answers() {
    bounded(60, || {
        let mut reg = Registry::start();
        assert!(reg.is_running());
        assert!(reg.addr().starts_with("127.0.0.1:"), "{}", reg.addr());
        let head = http_get_head(&reg.addr(), "/v2/");
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        assert!(
            head.contains("Docker-Distribution-Api-Version: registry/2.0"),
            "{head}"
        );
        assert!(reg.storage_dir().is_dir());
        let p = reg.blob_data_path("sha256:abcdef");
        assert!(p.starts_with(reg.storage_dir()));
        assert!(p.ends_with("docker/registry/v2/blobs/sha256/ab/abcdef/data"));
        // Two registries side by side get their own ports and storage.
        let other = Registry::start();
        assert_ne!(other.addr(), reg.addr());
        assert_ne!(other.storage_dir(), reg.storage_dir());
    });
}

#[test]
fn sample_image_pushes_with_its_digests() {
    bounded(600, || {
        let reg = Registry::start();
        let tmp = tempfile::tempdir().unwrap();
        let built = write_oci_layout(tmp.path(), "latest", &[sample_image()]);
        let image = &built[0];
        assert_eq!(image.layers.len(), 3);
        let dest = format!("{}/harness/app:v1", reg.addr());
        skopeo_push(tmp.path(), "latest", &dest, None);
        let raw = skopeo_inspect_raw(&dest, None).expect("the pushed manifest");
        assert_eq!(sha(&raw), image.manifest_digest);
        assert_eq!(raw.len() as u64, image.manifest_size);
        for l in &image.layers {
            let stored = std::fs::read(reg.blob_data_path(&l.digest)).unwrap();
            assert_eq!(stored.len() as u64, l.size);
            assert_eq!(stored, read_blob(tmp.path(), &l.digest));
            assert_eq!(sha(&stored), l.digest);
        }
        // Layers 1 and 3 are above SOCI's default 10 MiB minimum layer size.
        assert!(image.layers[0].size > 10 << 20 && image.layers[2].size > 10 << 20);
        assert!(image.layers[1].size < 10_000);
        assert!(reg.blob_data_path(&image.config_digest).exists());
        let by_digest = format!("{}/harness/app@{}", reg.addr(), image.manifest_digest);
        assert!(skopeo_inspect_raw(&by_digest, None).is_some());
        assert!(skopeo_inspect_raw(&format!("{}/harness/app:nope", reg.addr()), None).is_none());
        assert!(skopeo_inspect_raw(&format!("{}/no/such:repo", reg.addr()), None).is_none());
    });
}

#[test]
fn auth_registry_wants_credentials() {
    bounded(120, || {
        let reg = Registry::start_with_auth("bob", "pw");
        let head = http_get_head(&reg.addr(), "/v2/");
        assert!(head.starts_with("HTTP/1.0 401"), "{head}");
        assert!(head.contains(r#"Basic realm="soci-test""#), "{head}");
        let tmp = tempfile::tempdir().unwrap();
        let built = write_oci_layout(tmp.path(), "latest", &[tiny_image("amd64", "auth\n")]);
        let dest = format!("{}/private/app:v1", reg.addr());
        skopeo_push(tmp.path(), "latest", &dest, Some(("bob", "pw")));
        let raw = skopeo_inspect_raw(&dest, Some(("bob", "pw"))).expect("the pushed manifest");
        assert_eq!(sha(&raw), built[0].manifest_digest);
        // Anonymous and wrong-password requests are refused (not "unknown"): the helper panics.
        for creds in [None, Some(("bob", "wrong"))] {
            let d = dest.clone();
            let err = std::panic::catch_unwind(move || skopeo_inspect_raw(&d, creds))
                .expect_err("inspect without valid credentials must fail");
            let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(msg.contains("unauthorized"), "{msg}");
        }
    });
}

#[test]
fn stopped_registry_refuses_and_restarts_with_its_data() {
    bounded(120, || {
        let mut reg = Registry::start();
        let tmp = tempfile::tempdir().unwrap();
        let built = write_oci_layout(tmp.path(), "latest", &[tiny_image("amd64", "restart\n")]);
        let dest = format!("{}/keep/app:v1", reg.addr());
        skopeo_push(tmp.path(), "latest", &dest, None);
        let addr = reg.addr();
        reg.stop();
        assert!(!reg.is_running());
        let err = TcpStream::connect(&addr).expect_err("nothing listens after stop");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        reg.stop(); // idempotent
        reg.restart();
        assert!(reg.is_running());
        assert_eq!(reg.addr(), addr);
        let raw = skopeo_inspect_raw(&dest, None).expect("the image survived the restart");
        assert_eq!(sha(&raw), built[0].manifest_digest);
        reg.restart(); // restarting a running registry works too
        assert!(skopeo_inspect_raw(&dest, None).is_some());
    });
}

#[test]
fn multi_platform_layouts_push_every_platform() {
    bounded(120, || {
        let reg = Registry::start();
        let tmp = tempfile::tempdir().unwrap();
        let specs = [tiny_image("amd64", "amd\n"), tiny_image("arm64", "arm\n")];
        let built = write_oci_layout(tmp.path(), "latest", &specs);
        assert_eq!(built.len(), 2);
        assert_ne!(built[0].manifest_digest, built[1].manifest_digest);
        let dest = format!("{}/multi/app:v1", reg.addr());
        skopeo_push(tmp.path(), "latest", &dest, None);
        let raw = skopeo_inspect_raw(&dest, None).unwrap();
        // The index is pushed byte for byte: its digest is the one index.json names.
        let layout_index: Value =
            serde_json::from_slice(&std::fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(
            sha(&raw),
            layout_index["manifests"][0]["digest"].as_str().unwrap()
        );
        let index: Value = serde_json::from_slice(&raw).unwrap();
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 2);
        for ((b, spec), m) in built.iter().zip(&specs).zip(manifests) {
            assert_eq!(m["digest"], b.manifest_digest.as_str());
            assert_eq!(m["platform"]["architecture"], spec.arch.as_str());
            let r = format!("{}/multi/app@{}", reg.addr(), b.manifest_digest);
            let raw = skopeo_inspect_raw(&r, None).expect("each platform's manifest");
            assert_eq!(sha(&raw), b.manifest_digest);
        }
    });
}

#[test]
fn extra_config_sends_notifications() {
    bounded(120, || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let mut r = BufReader::new(conn);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.to_ascii_lowercase();
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let mut s = r.into_inner();
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                if tx
                    .send(String::from_utf8_lossy(&body).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        let reg = Registry::start_with_config(&format!(
            "notifications:\n  endpoints:\n    - name: harness\n      \
             url: http://127.0.0.1:{port}/events\n      timeout: 2s\n      \
             threshold: 3\n      backoff: 1s\n"
        ));
        let tmp = tempfile::tempdir().unwrap();
        let built = write_oci_layout(tmp.path(), "latest", &[tiny_image("amd64", "events\n")]);
        skopeo_push(
            tmp.path(),
            "latest",
            &format!("{}/events/app:v1", reg.addr()),
            None,
        );
        // Events come in envelopes of pretty-printed JSON; wait for the manifest's push.
        let mut seen = String::new();
        loop {
            let body = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no manifest push event; got:\n{seen}"));
            let envelope: Value = serde_json::from_str(&body).unwrap();
            let found = envelope["events"].as_array().unwrap().iter().any(|e| {
                e["action"] == "push"
                    && e["target"]["digest"] == built[0].manifest_digest.as_str()
                    && e["target"]["repository"] == "events/app"
            });
            seen.push_str(&body);
            if found {
                break;
            }
        }
    });
}

#[test]
fn layouts_are_deterministic_and_well_formed() {
    bounded(120, || {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let spec = tiny_image("amd64", "same\n");
        let built_a = write_oci_layout(a.path(), "v1", std::slice::from_ref(&spec));
        let built_b = write_oci_layout(b.path(), "v1", std::slice::from_ref(&spec));
        assert_eq!(built_a, built_b);
        let image = &built_a[0];
        assert_eq!(
            std::fs::read(a.path().join("oci-layout")).unwrap(),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
        let index: Value =
            serde_json::from_slice(&std::fs::read(a.path().join("index.json")).unwrap()).unwrap();
        let top = &index["manifests"][0];
        assert_eq!(top["digest"], image.manifest_digest.as_str());
        assert_eq!(
            top["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            top["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        let manifest: Value =
            serde_json::from_slice(&read_blob(a.path(), &image.manifest_digest)).unwrap();
        assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());
        let config: Value =
            serde_json::from_slice(&read_blob(a.path(), &image.config_digest)).unwrap();
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(
            image.layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            image.layers[1].media_type,
            "application/vnd.oci.image.layer.v1.tar"
        );
        for (i, l) in image.layers.iter().enumerate() {
            assert_eq!(manifest["layers"][i]["digest"], l.digest.as_str());
            assert_eq!(config["rootfs"]["diff_ids"][i], l.diff_id.as_str());
            let blob = read_blob(a.path(), &l.digest);
            assert_eq!(blob.len() as u64, l.size);
            assert_eq!(sha(&blob), l.digest);
        }
        // The gzip layer holds the tar named by diff_id; its entries are as specified.
        let gz = read_blob(a.path(), &image.layers[0].digest);
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(sha(&tar_bytes), image.layers[0].diff_id);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 1_700_000_000);
            assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
            assert!(h.as_gnu().is_some());
            let kind = h.entry_type();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            names.push((e.path().unwrap().display().to_string(), kind, link));
        }
        use tar::EntryType as T;
        assert_eq!(
            names,
            [
                ("app/".to_owned(), T::Directory, None),
                ("app/run.sh".to_owned(), T::Regular, None),
                (
                    "app/start".to_owned(),
                    T::Symlink,
                    Some("run.sh".to_owned())
                ),
                (
                    "app/run2.sh".to_owned(),
                    T::Link,
                    Some("app/run.sh".to_owned())
                ),
            ]
        );
        // A different tag changes only index.json.
        let c = tempfile::tempdir().unwrap();
        assert_eq!(write_oci_layout(c.path(), "other", &[spec]), built_a);
    });
}

#[test]
fn generators_are_deterministic() {
    assert_eq!(noisy(1000, 3), noisy(1000, 3));
    assert_ne!(noisy(1000, 3), noisy(1000, 4));
    assert!(noisy(1000, 3)
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b' ' || *c == b'\n'));
    assert_eq!(random_bytes(1001, 9), random_bytes(1001, 9));
    assert_eq!(random_bytes(1001, 9).len(), 1001);
    assert_ne!(random_bytes(64, 9), random_bytes(64, 10));
    assert_eq!(sample_image(), sample_image());
}

#[test]
#[should_panic(expected = "definitely-not-a-tool-xyz not found: run scripts/install-deps.sh")]
fn require_tool_names_the_install_script() {
    require_tool("definitely-not-a-tool-xyz");
}
