//! End-to-end tests of the `soci` binary on OCI image layouts built here.

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

mod common;
use common::{ok, soci};
use testutil::noisy;

fn sha(bytes: &[u8]) -> String {
    testutil::sha(bytes)
}

struct Layout {
    dir: PathBuf,
    files: Vec<(String, Vec<u8>)>,
    layer_digests: Vec<String>,
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    d
}

/// An image with a big gzip layer, a small gzip layer and optionally a zstd-typed layer.
fn make_layout(dir: &Path, with_zstd: bool) -> Layout {
    let files = vec![
        ("usr/bin/tool".to_owned(), noisy(10_000_000, 7)),
        ("etc/config".to_owned(), b"key=value\n".to_vec()),
        ("usr/lib/big.so".to_owned(), noisy(7_000_000, 11)),
    ];
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("./{name}"), &data[..])
            .unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "usr/bin/alias", "tool").unwrap();
    let big_tar = b.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(&big_tar).unwrap();
    let big = e.finish().unwrap();

    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "app/run.sh", &b"hi\n"[..]).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(&b.into_inner().unwrap()).unwrap();
    let small = e.finish().unwrap();

    std::fs::create_dir_all(dir).unwrap();
    let mut layers = vec![
        (big, "application/vnd.oci.image.layer.v1.tar+gzip"),
        (small, "application/vnd.oci.image.layer.v1.tar+gzip"),
    ];
    if with_zstd {
        layers.push((
            vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0],
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ));
    }
    let mut descs = Vec::new();
    let mut layer_digests = Vec::new();
    for (bytes, mt) in &layers {
        let d = put_blob(dir, bytes);
        layer_digests.push(d.clone());
        descs.push(json!({"mediaType": mt, "digest": d, "size": bytes.len()}));
    }
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})).unwrap();
    let config_digest = put_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let manifest_digest = put_blob(dir, &manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
            "platform": {"architecture": "amd64", "os": "linux"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    Layout {
        dir: dir.to_owned(),
        files,
        layer_digests,
    }
}

fn image_arg(l: &Layout) -> String {
    format!("oci:{}:latest", l.dir.display())
}

#[test]
fn create_list_info_get_file_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let l = make_layout(&tmp.path().join("img"), true);
    let out = ok(soci(
        &root,
        &["create", "--platform", "linux/amd64", &image_arg(&l)],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("layer {} -> ztoc sha256:", l.layer_digests[0])),
        "{out}"
    );
    assert_eq!(
        lines[1],
        format!(
            "layer {} -> ztoc skipped (size {} is less than min-layer-size 10485760)",
            l.layer_digests[1],
            {
                std::fs::metadata(l.dir.join("blobs/sha256").join(&l.layer_digests[1][7..]))
                    .unwrap()
                    .len()
            }
        )
    );
    assert!(
        lines[2].contains("-> ztoc skipped (is zstd-compressed"),
        "{out}"
    );

    // Listing.
    let index_digest = ok(soci(&root, &["index", "list", "-q"])).trim().to_owned();
    assert!(index_digest.starts_with("sha256:"));
    let table = ok(soci(&root, &["index", "ls"]));
    assert!(table.starts_with("DIGEST"), "{table}");
    assert!(
        table.contains("linux/amd64") && table.contains(" v1 "),
        "{table}"
    );
    let listed: Value = serde_json::from_str(&ok(soci(
        &root,
        &["index", "list", "--json", "--ref", &image_arg(&l)],
    )))
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let none: Value = serde_json::from_str(&ok(soci(
        &root,
        &["index", "list", "--json", "--platform", "linux/arm64"],
    )))
    .unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0);

    // The stored index is a v1 SOCI index bound to the image manifest.
    let info: Value =
        serde_json::from_str(&ok(soci(&root, &["index", "info", &index_digest]))).unwrap();
    assert_eq!(
        info["config"]["mediaType"],
        "application/vnd.amazon.soci.index.v1+json"
    );
    // The zTOC, then its lean zTOC (ours; AWS's readers pass over its media type).
    assert_eq!(info["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        info["layers"][0]["annotations"]["com.amazon.soci.image-layer-digest"],
        l.layer_digests[0]
    );
    assert_eq!(
        info["layers"][0]["annotations"]["com.amazon.soci.span-size"],
        "1048576"
    );
    assert_eq!(
        info["layers"][1]["mediaType"],
        "application/vnd.soci-rs.ztoc.lean.v1+gzip"
    );
    assert_eq!(
        info["layers"][1]["annotations"]["dev.soci-rs.ztoc-digest"],
        info["layers"][0]["digest"]
    );
    assert!(info["subject"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    let ztoc_digest = ok(soci(&root, &["ztoc", "list", "-q"])).trim().to_owned();
    let zt = ok(soci(&root, &["ztoc", "ls"]));
    assert!(zt.contains(&l.layer_digests[0]), "{zt}");
    let zinfo: Value =
        serde_json::from_str(&ok(soci(&root, &["ztoc", "info", &ztoc_digest]))).unwrap();
    for key in [
        "version",
        "build_tool",
        "size",
        "span_size",
        "num_spans",
        "num_files",
        "num_multi_span_files",
        "files",
    ] {
        assert!(zinfo.get(key).is_some(), "missing {key}");
    }
    assert_eq!(zinfo["version"], "0.9");
    assert_eq!(zinfo["num_files"], 4);
    assert!(zinfo["num_spans"].as_u64().unwrap() >= 3);
    assert!(zinfo["num_multi_span_files"].as_u64().unwrap() >= 1);
    let f0 = &zinfo["files"][0];
    assert_eq!(f0["filename"], "usr/bin/tool");
    assert_eq!(f0["offset"], 512);
    assert_eq!(f0["type"], "reg");

    // get-file reads only the spans needed: the small file needs one span.
    for (name, data) in &l.files {
        let out_path = tmp.path().join("out");
        let o = soci(
            &root,
            &[
                "ztoc",
                "get-file",
                "--stats",
                &ztoc_digest,
                name,
                "-o",
                out_path.to_str().unwrap(),
            ],
        );
        ok(o.clone());
        assert_eq!(&std::fs::read(&out_path).unwrap(), data, "{name}");
        if name == "etc/config" {
            let stats = String::from_utf8_lossy(&o.stderr);
            let layer_size =
                std::fs::metadata(l.dir.join("blobs/sha256").join(&l.layer_digests[0][7..]))
                    .unwrap()
                    .len();
            let read: u64 = stats
                .split("read ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                read < layer_size / 2,
                "read {read} of {layer_size}: {stats}"
            );
        }
    }
    // Symlinks are followed; stdout works too; leading '/' is accepted.
    let via_link = soci(&root, &["ztoc", "get-file", &ztoc_digest, "/usr/bin/alias"]);
    assert_eq!(&ok(via_link).into_bytes(), &l.files[0].1);
    let missing = soci(&root, &["ztoc", "get-file", &ztoc_digest, "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not in this layer"));

    // Re-running reuses the zTOC and produces the same index.
    let again = ok(soci(&root, &["create", &image_arg(&l)]));
    assert!(again.contains("(already exists)"), "{again}");
    assert_eq!(
        ok(soci(&root, &["index", "list", "-q"])).trim(),
        index_digest
    );

    // rebuild-db restores the listings from the content store.
    std::fs::remove_file(root.join("soci.db")).unwrap();
    let rebuilt = ok(soci(&root, &["rebuild-db"]));
    assert!(rebuilt.contains("1 indexes, 1 ztocs"), "{rebuilt}");
    assert_eq!(ok(soci(&root, &["ztoc", "list", "-q"])).trim(), ztoc_digest);

    // Unknown digests and wrong kinds get clear errors.
    let bad = soci(&root, &["ztoc", "info", &index_digest]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("SOCI index"),
        "{bad:?}"
    );
    let unknown = soci(&root, &["ztoc", "info", &sha(b"nothing")]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));

    // Removal deletes the index and its now unused zTOC.
    ok(soci(&root, &["index", "rm", &index_digest]));
    assert_eq!(ok(soci(&root, &["index", "list", "-q"])).trim(), "");
    assert_eq!(ok(soci(&root, &["ztoc", "list", "-q"])).trim(), "");
    assert!(!root
        .join("content/blobs/sha256")
        .join(&index_digest[7..])
        .exists());
}

#[test]
fn corrupt_or_missing_layers_fail_without_listing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let l = make_layout(&tmp.path().join("img"), false);
    let layer = l.dir.join("blobs/sha256").join(&l.layer_digests[0][7..]);
    let original = std::fs::read(&layer).unwrap();

    // Bytes that do not match the descriptor's digest.
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&layer, &bad).unwrap();
    let out = soci(&root, &["create", &image_arg(&l)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match its descriptor"), "{err}");
    assert_eq!(ok(soci(&root, &["index", "list", "-q"])).trim(), "");
    assert_eq!(ok(soci(&root, &["ztoc", "list", "-q"])).trim(), "");

    // A missing blob.
    std::fs::remove_file(&layer).unwrap();
    let out = soci(&root, &["create", &image_arg(&l)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );

    // Restored, it works; an unknown tag lists what exists.
    std::fs::write(&layer, &original).unwrap();
    ok(soci(&root, &["create", &image_arg(&l)]));
    let out = soci(&root, &["create", &format!("oci:{}:nope", l.dir.display())]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("available: latest"),
        "{out:?}"
    );
    let out = soci(
        &root,
        &["create", "--platform", "linux/arm64", &image_arg(&l)],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("linux/amd64"),
        "{out:?}"
    );
}
