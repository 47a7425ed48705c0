//! End-to-end tests of prefetch artifacts built by `soci create|convert --prefetch-file`
//! (and `--prefetch-files-json`), pushed with the index, against Debian's real
//! `docker-registry` (distribution 2.8) on loopback; and in a standalone (OCI layout) convert.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use testutil::Registry;

mod common;
use common::{ok, soci};

const PREFETCH: &str = "application/vnd.amazon.soci.prefetch.v1+json";
const ZTOC: &str = "application/octet-stream";
const LEAN: &str = "application/vnd.soci-rs.ztoc.lean.v1+gzip";

/// The media types of an index manifest's layers, in order.
fn layer_kinds(index: &Value) -> Vec<&str> {
    index["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect()
}
const LAYER_DIGEST: &str = "com.amazon.soci.image-layer-digest";

fn push_sample(reg: &Registry, tmp: &Path, name: &str) -> testutil::BuiltImage {
    let dir = tmp.join(format!("layout-{}", name.replace(['/', ':'], "-")));
    let built = testutil::write_oci_layout(&dir, "latest", &[testutil::sample_image()]);
    testutil::skopeo_push(&dir, "latest", &format!("{}/{name}", reg.addr()), None);
    built.into_iter().next().unwrap()
}

fn raw(reference: &str) -> Value {
    serde_json::from_slice(&testutil::skopeo_inspect_raw(reference, None).expect("manifest exists"))
        .unwrap()
}

/// Status code of `HEAD /v2/<repo>/blobs/<digest>`: whether that repository serves the blob.
fn blob_status(addr: &str, repo: &str, digest: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "HEAD /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

/// The digest in `soci index sha256:… created` (create's last line).
fn created_index(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("soci index "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no index created: {out}"))
        .to_owned()
}

fn local_blob(root: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        root.join("content/blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
}

fn index_info(root: &Path, digest: &str) -> Value {
    serde_json::from_str(&ok(soci(root, &["index", "info", digest]))).unwrap()
}

/// The (start_span, end_span) of `file` as `soci ztoc info` reports it.
fn ztoc_file_spans(root: &Path, ztoc: &str, file: &str) -> (u64, u64) {
    let info: Value = serde_json::from_str(&ok(soci(root, &["ztoc", "info", ztoc]))).unwrap();
    let f = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["filename"] == file)
        .unwrap_or_else(|| panic!("{file} not in zTOC {ztoc}"));
    (
        f["start_span"].as_u64().unwrap(),
        f["end_span"].as_u64().unwrap(),
    )
}

fn descriptors<'a>(index: &'a Value, media_type: &str) -> Vec<&'a Value> {
    index["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"] == media_type)
        .collect()
}

/// The prefetch artifact (parsed) listed for `layer` in `index`, and its digest.
fn artifact_for(root: &Path, index: &Value, layer: &str) -> (String, Value) {
    let d = descriptors(index, PREFETCH)
        .into_iter()
        .find(|p| p["annotations"][LAYER_DIGEST] == layer)
        .unwrap_or_else(|| panic!("no prefetch artifact for {layer}: {index}"));
    let digest = d["digest"].as_str().unwrap().to_owned();
    let bytes = local_blob(root, &digest);
    assert_eq!(d["size"].as_u64().unwrap(), bytes.len() as u64);
    (digest, serde_json::from_slice(&bytes).unwrap())
}

fn spans(artifact: &Value) -> Vec<(u64, u64)> {
    assert_eq!(artifact["version"], "1.0", "{artifact}");
    artifact["prefetch_spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["start_span"].as_u64().unwrap(),
                s["end_span"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn create_push_and_convert_with_prefetch_artifacts() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = push_sample(&reg, tmp.path(), "app:v1");
    let r = format!("{}/app:v1", reg.addr());
    let (bottom, top) = (&image.layers[0].digest, &image.layers[2].digest);

    // Without the flags: the plain index (zTOCs only).
    let plain_root = tmp.path().join("plain");
    let plain = created_index(&ok(soci(&plain_root, &["create", &r])));
    let plain_json = index_info(&plain_root, &plain);
    assert!(
        descriptors(&plain_json, PREFETCH).is_empty(),
        "{plain_json}"
    );

    // With them: one artifact per layer holding a named file, after the zTOCs; an unknown
    // path is only warned about.
    let root = tmp.path().join("root");
    let out = soci(
        &root,
        &[
            "create",
            "--prefetch-file",
            "/usr/bin/small",
            "--prefetch-file",
            "/opt/data.bin",
            "--prefetch-file",
            "/no/such/file",
            &r,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = ok(out);
    assert!(
        stderr.contains("warning") && stderr.contains("/no/such/file"),
        "{stderr}"
    );
    assert_eq!(
        stdout.matches(" -> prefetch sha256:").count(),
        2,
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("layer {bottom} -> prefetch sha256:"))
            && stdout.contains(&format!("layer {top} -> prefetch sha256:"))
            && stdout.contains(" spans)"),
        "{stdout}"
    );
    let with = created_index(&stdout);
    assert_ne!(with, plain);
    let index = index_info(&root, &with);
    let kinds = layer_kinds(&index);
    assert_eq!(
        kinds,
        [ZTOC, ZTOC, PREFETCH, PREFETCH, LEAN, LEAN],
        "{index}"
    );
    for p in descriptors(&index, PREFETCH) {
        assert_eq!(
            p["annotations"].as_object().unwrap().len(),
            1,
            "only the layer digest annotation: {p}"
        );
    }
    // The same zTOCs as the plain index, in the same places.
    assert_eq!(index["layers"][0], plain_json["layers"][0]);
    assert_eq!(index["layers"][1], plain_json["layers"][1]);
    let ztoc_of = |layer: &str| -> String {
        descriptors(&index, ZTOC)
            .into_iter()
            .find(|z| z["annotations"][LAYER_DIGEST] == layer)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // usr/bin/small: 5000 bytes at about 10 MB into the first layer, inside span 9 (1 MiB
    // spans, the default); opt/data.bin fills the top layer from its start.
    let (small_artifact, small) = artifact_for(&root, &index, bottom);
    assert_eq!(spans(&small), [(9, 9)], "{small}");
    assert_eq!(
        ztoc_file_spans(&root, &ztoc_of(bottom), "usr/bin/small"),
        (9, 9)
    );
    let (data_artifact, data) = artifact_for(&root, &index, top);
    let (start, end) = ztoc_file_spans(&root, &ztoc_of(top), "opt/data.bin");
    assert_eq!(start, 0);
    assert!(end >= 2, "13 MB of data spans at least 3 spans");
    assert_eq!(spans(&data), [(start, end)], "{data}");

    // The JSON list gives the same paths, hence the very same index.
    let list = tmp.path().join("prefetch.json");
    std::fs::write(&list, r#"["/usr/bin/small", "opt/data.bin"]"#).unwrap();
    let from_json = ok(soci(
        &root,
        &[
            "create",
            "--prefetch-files-json",
            list.to_str().unwrap(),
            &r,
        ],
    ));
    assert_eq!(created_index(&from_json), with, "{from_json}");

    // push uploads the artifacts before the index.
    let out = ok(soci(&root, &["push", &r]));
    assert!(out.contains(&format!("pushing soci index {with}")), "{out}");
    for d in [&small_artifact, &data_artifact] {
        assert!(out.contains(&format!("blob {d}")), "{out}");
        assert_eq!(blob_status(&reg.addr(), "app", d), 200, "{d} is in app");
    }
    let pushed = raw(&format!("{}/app@{with}", reg.addr()));
    assert_eq!(pushed, index);

    // Without the flags the index is the plain one again, byte for byte.
    assert_eq!(created_index(&ok(soci(&root, &["create", &r]))), plain);

    // convert: the v2 index lists the artifact, which is in the destination repository
    // (the same one, and another one the layers are mounted into).
    for (dst_repo, tag) in [("app", "v1-soci"), ("other/app", "soci")] {
        let out = ok(soci(
            &root,
            &[
                "convert",
                "--prefetch-file",
                "/usr/bin/small",
                &r,
                &format!("{}/{dst_repo}:{tag}", reg.addr()),
            ],
        ));
        assert_eq!(out.matches(" -> prefetch sha256:").count(), 1, "{out}");
        let converted = raw(&format!("{}/{dst_repo}:{tag}", reg.addr()));
        let soci_entry = converted["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["artifactType"] == "application/vnd.amazon.soci.index.v2+json")
            .unwrap_or_else(|| panic!("no SOCI index in {converted}"));
        let v2 = raw(&format!(
            "{}/{dst_repo}@{}",
            reg.addr(),
            soci_entry["digest"].as_str().unwrap()
        ));
        assert_eq!(
            v2["config"]["mediaType"],
            "application/vnd.amazon.soci.index.v2+json"
        );
        let prefetch = descriptors(&v2, PREFETCH);
        assert_eq!(prefetch.len(), 1, "{v2}");
        assert_eq!(prefetch[0]["annotations"][LAYER_DIGEST], bottom.as_str());
        assert_eq!(prefetch[0]["digest"], small_artifact.as_str());
        let kinds = layer_kinds(&v2);
        assert_eq!(
            kinds,
            [ZTOC, ZTOC, PREFETCH, LEAN, LEAN],
            "after the zTOCs: {v2}"
        );
        for l in v2["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap();
            assert_eq!(
                blob_status(&reg.addr(), dst_repo, d),
                200,
                "{d} in {dst_repo}"
            );
        }
    }
}

#[test]
fn standalone_convert_writes_prefetch_artifacts_into_the_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let src = tmp.path().join("src");
    let image = testutil::write_oci_layout(&src, "latest", &[testutil::sample_image()])
        .into_iter()
        .next()
        .unwrap();
    let dst = tmp.path().join("dst");
    let list = tmp.path().join("prefetch.json");
    std::fs::write(&list, r#"["usr/lib/notes.txt", "/etc/config"]"#).unwrap();
    let out = soci(
        &root,
        &[
            "convert",
            "--standalone",
            "--prefetch-files-json",
            list.to_str().unwrap(),
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = ok(out);
    // etc/config is in the small layer, which has no zTOC: not prefetched, warned about.
    assert!(stderr.contains("/etc/config"), "{stderr}");
    assert_eq!(
        stdout.matches(" -> prefetch sha256:").count(),
        1,
        "{stdout}"
    );
    let blob = |d: &str| {
        std::fs::read(
            dst.join("blobs/sha256")
                .join(d.strip_prefix("sha256:").unwrap()),
        )
        .unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
    let top: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let soci_entry = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["artifactType"] == "application/vnd.amazon.soci.index.v2+json")
        .unwrap();
    let v2: Value = serde_json::from_slice(&blob(soci_entry["digest"].as_str().unwrap())).unwrap();
    let prefetch = descriptors(&v2, PREFETCH);
    assert_eq!(prefetch.len(), 1, "{v2}");
    assert_eq!(
        prefetch[0]["annotations"][LAYER_DIGEST],
        image.layers[0].digest.as_str()
    );
    let artifact: Value =
        serde_json::from_slice(&blob(prefetch[0]["digest"].as_str().unwrap())).unwrap();
    // notes.txt ends the first layer (about 17 MB in, 200 kB long).
    let ztoc = descriptors(&v2, ZTOC)
        .into_iter()
        .find(|z| z["annotations"][LAYER_DIGEST] == image.layers[0].digest.as_str())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = ztoc_file_spans(&root, &ztoc, "usr/lib/notes.txt");
    assert!(expected.0 >= 3, "{expected:?}");
    assert_eq!(spans(&artifact), [expected], "{artifact}");
}

/// The zTOC (decoded from `root`'s store) `index` lists for `layer`.
fn ztoc_for(root: &Path, index: &Value, layer: &str) -> ztoc::Ztoc {
    let d = descriptors(index, ZTOC)
        .into_iter()
        .find(|z| z["annotations"][LAYER_DIGEST] == layer)
        .unwrap_or_else(|| panic!("no zTOC for {layer}: {index}"));
    ztoc::decode(&local_blob(root, d["digest"].as_str().unwrap())).unwrap()
}

/// Compressed bytes of the spans a prefetch artifact lists.
fn artifact_bytes(z: &ztoc::Ztoc, artifact: &Value) -> u64 {
    spans(artifact)
        .into_iter()
        .flat_map(|(first, last)| first..=last)
        .map(|s| {
            let r = z.span_compressed_range(s).unwrap();
            r.end - r.start
        })
        .sum()
}

#[test]
fn checkpoints_around_reads_fetch_a_fraction_of_uniform_spans() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = push_sample(&reg, tmp.path(), "app:v1");
    let r = format!("{}/app:v1", reg.addr());
    let (bottom, top) = (&image.layers[0].digest, &image.layers[2].digest);
    let reads = tmp.path().join("ranges.json");
    std::fs::write(
        &reads,
        r#"{"/usr/bin/small": [[0, 5000]], "/usr/lib/notes.txt": [[1000, 2000]],
            "/opt/data.bin": [[0, 4096], [6000000, 6100000]]}"#,
    )
    .unwrap();
    let reads = reads.to_str().unwrap();
    // Against AWS's uniform 4 MiB spans (and cold spans of that size when placed).
    let create = |root: &Path, extra: &[&str]| {
        let mut args = vec![
            "create",
            "--span-size",
            "4194304",
            "--prefetch-files-json",
            reads,
        ];
        args.extend_from_slice(extra);
        args.push(&r);
        let index = created_index(&ok(soci(root, &args)));
        index_info(root, &index)
    };
    // Without a read set the placement has nothing to go by: refused before any work.
    let out = soci(
        &tmp.path().join("none"),
        &["create", "--checkpoints", "reads", &r],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--checkpoints reads needs a read set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let uniform_root = tmp.path().join("uniform");
    let uniform = create(&uniform_root, &[]);
    let root = tmp.path().join("reads");
    let placed = create(&root, &["--checkpoints", "reads"]);
    for layer in [bottom, top] {
        let (u, p) = (
            ztoc_for(&uniform_root, &uniform, layer),
            ztoc_for(&root, &placed, layer),
        );
        let (_, u_artifact) = artifact_for(&uniform_root, &uniform, layer);
        let (_, p_artifact) = artifact_for(&root, &placed, layer);
        let (before, after) = (
            artifact_bytes(&u, &u_artifact),
            artifact_bytes(&p, &p_artifact),
        );
        // The reads are ~110 kB of a 17 MB and a 13 MB layer: uniform 4 MiB spans fetch
        // megabytes around them, placed spans a block or two either side (measured: 34 kB vs
        // 3.1 MB, 126 kB vs 7.1 MB).
        assert!(
            after * 20 < before,
            "{layer}: {after} bytes placed vs {before} uniform"
        );
        assert_eq!(p.toc, u.toc, "same files, only the checkpoints move");
        assert_eq!(p.span_size(), u.span_size(), "cold spans keep --span-size");
    }

    // The store keeps both placements apart: a uniform create after it builds uniform zTOCs
    // again, and another reads create reuses the placed ones.
    let again_uniform = create(&root, &[]);
    assert_eq!(again_uniform["layers"][0], uniform["layers"][0]);
    let again_placed = create(&root, &["--checkpoints", "reads"]);
    assert_eq!(again_placed["layers"], placed["layers"]);
}
