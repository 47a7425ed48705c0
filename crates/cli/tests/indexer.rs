//! The `soci` CLI and the `indexer` library (what soci-index-builder runs) build the same
//! SOCI indexes, byte for byte, for the same image and settings: v1 (`soci create`) and v2
//! (`soci convert`), against Debian's real `docker-registry`.

use indexer::{Outcome, Publish, Settings};
use registry::{Client, ClientConfig};
use testutil::Registry;

mod common;
use common::{ok, soci};

fn digest_after<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .collect()
}

#[test]
fn the_library_builds_what_the_cli_builds() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let dir = tmp.path().join("layout");
    testutil::write_oci_layout(&dir, "v1", &[testutil::sample_image()]);
    // The same image in two repositories: one for the CLI, one for the library.
    for name in ["cli", "lib"] {
        testutil::skopeo_push(&dir, "v1", &format!("{}/{name}:v1", reg.addr()), None);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(ClientConfig::default());
    let repo = client.repository(&reg.addr(), "lib").unwrap();
    let cli_repo = client.repository(&reg.addr(), "cli").unwrap();
    let build = |publish: Publish| match rt
        .block_on(indexer::index_image(
            &repo,
            "v1",
            Some("v1"),
            &Settings::default(),
            &publish,
        ))
        .unwrap()
    {
        Outcome::Published(r) => r,
        Outcome::Skipped(why) => panic!("skipped: {why:?}"),
    };

    // v1: `soci create` + `soci push` vs index_image(V1).
    let cli_ref = format!("{}/cli:v1", reg.addr());
    let out = ok(soci(&root, &["create", "--all-platforms", &cli_ref]));
    let cli_index = digest_after(&out, "soci index ");
    assert_eq!(cli_index.len(), 1, "{out}");
    ok(soci(&root, &["push", "--all-platforms", &cli_ref]));
    let lib = build(Publish::V1);
    assert_eq!(lib.indexes.len(), 1);
    assert_eq!(lib.indexes[0].index.to_string(), cli_index[0]);
    let cli_bytes = rt
        .block_on(cli_repo.get_manifest(cli_index[0]))
        .expect("the CLI pushed its index")
        .bytes;
    let lib_bytes = rt
        .block_on(repo.get_manifest(lib.indexes[0].index.as_ref()))
        .unwrap()
        .bytes;
    assert_eq!(cli_bytes, lib_bytes);

    // v2: `soci convert SRC SRC-soci` vs index_image(V2 "{tag}-soci").
    let out = ok(soci(
        &root,
        &[
            "convert",
            "--all-platforms",
            &cli_ref,
            &format!("{}/cli:v1-soci", reg.addr()),
        ],
    ));
    let cli_v2 = digest_after(&out, "soci index ");
    let cli_converted = digest_after(&out, "converted image ");
    let lib = build(Publish::V2 {
        tag_pattern: "{tag}-soci".into(),
    });
    assert_eq!(cli_v2, [lib.indexes[0].index.to_string().as_str()], "{out}");
    let (tag, converted) = lib.converted.unwrap();
    assert_eq!(tag, "v1-soci");
    assert_eq!(cli_converted, [converted.to_string().as_str()], "{out}");
}
