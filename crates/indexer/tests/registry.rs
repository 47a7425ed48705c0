//! `indexer` against Debian's real `docker-registry` (distribution 2.8: no referrers API) on
//! loopback, with images built here and pushed by skopeo.

use indexer::{Outcome, Publish, Report, Settings, SkipReason};
use oci::manifest::ParsedManifest;
use oci::{Digest, ImageManifest};
use registry::retry::RetryPolicy;
use registry::{Client, ClientConfig, Repository};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use testutil::{BuiltImage, ImageSpec, Registry};

const MIB: u64 = 1 << 20;

fn client() -> Client {
    Client::new(ClientConfig {
        // A stopped registry must fail within seconds, not after the default minute.
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(100),
            max_elapsed: Duration::from_secs(5),
        },
        ..Default::default()
    })
}

/// Pushes `images` (one: a bare manifest; several: an image index) as `name:tag`.
/// A fresh registry with the sample image pushed as `app:v1`, the directory its layout was
/// written in (kept alive by the caller), and the repository.
fn sample_app() -> (Registry, tempfile::TempDir, BuiltImage, Repository) {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let image = push(&reg, tmp.path(), "app", "v1", &[testutil::sample_image()]).remove(0);
    let repo = client().repository(&reg.addr(), "app").unwrap();
    (reg, tmp, image, repo)
}

/// What a consumer finds for `reference` (top-level manifest `top`, image manifest
/// `manifest_digest` with bytes `manifest`) in `modes`.
async fn find_index(
    repo: &Repository,
    reference: &str,
    top: &[u8],
    manifest_digest: &Digest,
    manifest: &[u8],
    modes: lazyfs::discover::Modes,
) -> lazyfs::discover::FoundIndex {
    let manifest = image_manifest(manifest);
    lazyfs::discover::find_index_in_modes(repo, reference, top, manifest_digest, &manifest, modes)
        .await
        .unwrap()
}

fn push(
    reg: &Registry,
    tmp: &Path,
    name: &str,
    tag: &str,
    images: &[ImageSpec],
) -> Vec<BuiltImage> {
    let dir = tmp.join(format!("layout-{name}-{tag}"));
    let built = testutil::write_oci_layout(&dir, tag, images);
    testutil::skopeo_push(&dir, tag, &format!("{}/{name}:{tag}", reg.addr()), None);
    built
}

fn digest(s: &str) -> Digest {
    oci::digest::parse(s).unwrap()
}

fn v2() -> Publish {
    Publish::V2 {
        tag_pattern: "{tag}-soci".into(),
    }
}

fn published(outcome: Outcome) -> Report {
    match outcome {
        Outcome::Published(r) => r,
        Outcome::Skipped(why) => panic!("expected a build, skipped: {why:?}"),
    }
}

fn skipped(outcome: Outcome) -> SkipReason {
    match outcome {
        Outcome::Skipped(why) => why,
        Outcome::Published(r) => panic!("expected a skip, published: {r:?}"),
    }
}

async fn json(repo: &Repository, reference: &str) -> (Value, Vec<u8>, Digest) {
    let m = repo.get_manifest(reference).await.unwrap();
    (
        serde_json::from_slice(&m.bytes).unwrap(),
        m.bytes.to_vec(),
        m.digest,
    )
}

fn image_manifest(bytes: &[u8]) -> ImageManifest {
    match oci::manifest::parse(bytes, "test").unwrap() {
        ParsedManifest::Image(m) => *m,
        ParsedManifest::Index(_) => panic!("not an image manifest"),
    }
}

/// Sizes of the layers indexed with the default 10 MiB minimum.
fn big_layers(image: &BuiltImage) -> u64 {
    image
        .layers
        .iter()
        .map(|l| l.size)
        .filter(|s| *s >= 10 * MIB)
        .sum()
}

/// Neither the referrers fallback tag nor the `v1-soci` tag exists: nothing was published.
async fn assert_nothing_published(repo: &Repository, image: &BuiltImage) {
    for tag in [
        image.manifest_digest.replace(':', "-"),
        "v1-soci".to_owned(),
    ] {
        let err = repo.get_manifest(&tag).await.unwrap_err();
        assert!(err.is_not_found(), "{tag}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_publishes_is_discoverable_idempotent_and_skips_its_own_pushes() {
    let (reg, _tmp, image, repo) = sample_app();
    let settings = Settings::default();

    assert_eq!(
        indexer::skip_reason(&repo, "v1", Some("v1"), &settings, &Publish::V1)
            .await
            .unwrap(),
        None
    );
    let report = published(
        indexer::index_image(&repo, "v1", Some("v1"), &settings, &Publish::V1)
            .await
            .unwrap(),
    );
    assert_eq!(report.indexes.len(), 1, "{report:?}");
    let built = &report.indexes[0];
    assert_eq!(built.manifest, digest(&image.manifest_digest));
    assert_eq!(built.platform.as_deref(), Some("linux/amd64"));
    assert_eq!(
        built.ztocs, 2,
        "two layers reach 10 MiB: {:?}",
        image.layers
    );
    assert_eq!(report.layer_bytes_read, big_layers(&image));
    assert!(report.converted.is_none());
    assert!(report.build_seconds > 0.0);

    // The index: v1, subject = the image manifest, one zTOC per big layer, in the registry.
    let (index, _, index_digest) = json(&repo, built.index.as_ref()).await;
    assert_eq!(index_digest, built.index);
    assert_eq!(index["subject"]["digest"], image.manifest_digest.as_str());
    assert_eq!(
        index["artifactType"],
        "application/vnd.amazon.soci.index.v1+json"
    );
    for layer in index["layers"].as_array().unwrap() {
        assert!(reg
            .blob_data_path(layer["digest"].as_str().unwrap())
            .exists());
    }

    // Discoverable through the referrers tag schema, by the consumer side too.
    let tag = image.manifest_digest.replace(':', "-");
    let (referrers, _, referrers_digest) = json(&repo, &tag).await;
    let entries = referrers["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["digest"], built.index.to_string().as_str());
    assert_eq!(
        report.pushed_manifests,
        vec![built.index.clone(), referrers_digest.clone()]
    );
    let (_, top_bytes, _) = json(&repo, "v1").await;
    let modes = lazyfs::discover::Modes {
        v1: true,
        v2: false,
    };
    let found = find_index(
        &repo,
        "app:v1",
        &top_bytes,
        &built.manifest,
        &top_bytes,
        modes,
    )
    .await;
    assert_eq!(
        (found.digest, found.found_through),
        (built.index.clone(), "tag schema")
    );

    // Idempotent.
    let again = indexer::index_image(&repo, "v1", Some("v1"), &settings, &Publish::V1)
        .await
        .unwrap();
    let expected = SkipReason::AlreadyIndexed(vec![digest(&image.manifest_digest)]);
    assert_eq!(skipped(again), expected);
    assert_eq!(
        indexer::skip_reason(&repo, "v1", Some("v1"), &settings, &Publish::V1)
            .await
            .unwrap(),
        Some(expected)
    );

    // The registry's notifications about our own pushes are ours: the index by digest, the
    // referrers tag by name and by digest.
    for (reference, tag) in [
        (built.index.to_string(), None),
        (tag.clone(), Some(tag.as_str())),
        (referrers_digest.to_string(), None),
    ] {
        for publish in [Publish::V1, v2()] {
            let why = skipped(
                indexer::index_image(&repo, &reference, tag, &settings, &publish)
                    .await
                    .unwrap(),
            );
            assert!(
                matches!(why, SkipReason::OwnArtifact(_)),
                "{reference}: {why:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_converts_into_a_soci_enabled_tag() {
    let (_reg, _tmp, image, repo) = sample_app();
    let settings = Settings::default();

    let report = published(
        indexer::index_image(&repo, "v1", Some("v1"), &settings, &v2())
            .await
            .unwrap(),
    );
    assert_eq!(report.indexes.len(), 1);
    let built = &report.indexes[0];
    assert_eq!(built.manifest, digest(&image.manifest_digest));
    assert_eq!(report.layer_bytes_read, big_layers(&image));
    let (tag, converted) = report.converted.clone().unwrap();
    assert_eq!(tag, "v1-soci");

    // The new tag: an image index with the annotated manifest copy and the SOCI index v2.
    let (top, top_bytes, top_digest) = json(&repo, "v1-soci").await;
    assert_eq!(top_digest, converted);
    assert_eq!(top["mediaType"], oci::manifest::OCI_INDEX);
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{top}");
    let copy_digest = digest(entries[0]["digest"].as_str().unwrap());
    assert_eq!(
        entries[0]["annotations"]["com.amazon.soci.index-digest"],
        built.index.to_string().as_str()
    );
    assert_eq!(entries[0]["platform"]["architecture"], "amd64");
    assert_eq!(entries[1]["digest"], built.index.to_string().as_str());
    assert_eq!(
        entries[1]["artifactType"],
        "application/vnd.amazon.soci.index.v2+json"
    );
    assert_eq!(
        entries[1]["annotations"]["com.amazon.soci.image-manifest-digest"],
        copy_digest.to_string().as_str()
    );
    let (copy, copy_bytes, _) = json(&repo, copy_digest.as_ref()).await;
    assert_eq!(
        copy["annotations"]["com.amazon.soci.index-digest"],
        built.index.to_string().as_str()
    );
    let (index, _, _) = json(&repo, built.index.as_ref()).await;
    assert!(index.get("subject").is_none());
    assert_eq!(
        index["artifactType"],
        "application/vnd.amazon.soci.index.v2+json"
    );
    assert_eq!(
        report.pushed_manifests,
        vec![copy_digest.clone(), built.index.clone(), converted.clone()]
    );

    // The consumer finds it as a v2 index.
    let modes = lazyfs::discover::Modes {
        v1: false,
        v2: true,
    };
    let found = find_index(
        &repo,
        "app:v1-soci",
        &top_bytes,
        &copy_digest,
        &copy_bytes,
        modes,
    )
    .await;
    assert_eq!(
        (found.digest, found.found_through),
        (built.index.clone(), "image index")
    );

    // The converted tag and everything pushed are ours; the source is done; a digest has no tag.
    let why = skipped(
        indexer::index_image(&repo, "v1-soci", Some("v1-soci"), &settings, &v2())
            .await
            .unwrap(),
    );
    assert!(matches!(why, SkipReason::OwnArtifact(_)), "{why:?}");
    for d in &report.pushed_manifests {
        let why = skipped(
            indexer::index_image(&repo, d.as_ref(), None, &settings, &Publish::V1)
                .await
                .unwrap(),
        );
        assert!(matches!(why, SkipReason::OwnArtifact(_)), "{d}: {why:?}");
    }
    assert_eq!(
        skipped(
            indexer::index_image(&repo, "v1", Some("v1"), &settings, &v2())
                .await
                .unwrap()
        ),
        SkipReason::AlreadyIndexed(vec![digest(&image.manifest_digest)])
    );
    assert_eq!(
        skipped(
            indexer::index_image(&repo, &image.manifest_digest, None, &settings, &v2())
                .await
                .unwrap()
        ),
        SkipReason::NoTag
    );
    // A bad pattern is refused before anything is read.
    let err = indexer::index_image(
        &repo,
        "v1",
        Some("v1"),
        &settings,
        &Publish::V2 {
            tag_pattern: "soci".into(),
        },
    )
    .await
    .unwrap_err();
    assert!(
        !err.is_transient() && err.to_string().contains("{tag}"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_small_nothing_to_index_and_not_an_image() {
    let (_reg, _tmp, image, repo) = sample_app();
    let total: u64 = image.layers.iter().map(|l| l.size).sum();

    let small = Settings {
        min_image_size: total + 1,
        ..Default::default()
    };
    let expected = SkipReason::TooSmall {
        size: total,
        min: total + 1,
    };
    assert_eq!(
        skipped(
            indexer::index_image(&repo, "v1", Some("v1"), &small, &Publish::V1)
                .await
                .unwrap()
        ),
        expected
    );
    let at_limit = Settings {
        min_image_size: total,
        min_layer_size: u64::MAX,
        ..Default::default()
    };
    for publish in [Publish::V1, v2()] {
        assert_eq!(
            indexer::skip_reason(&repo, "v1", Some("v1"), &at_limit, &publish)
                .await
                .unwrap(),
            Some(SkipReason::NothingToIndex)
        );
        assert_eq!(
            skipped(
                indexer::index_image(&repo, "v1", Some("v1"), &at_limit, &publish)
                    .await
                    .unwrap()
            ),
            SkipReason::NothingToIndex
        );
    }
    // Nothing was written.
    assert_nothing_published(&repo, &image).await;

    // An artifact that is not an image (a config type of its own).
    let config = bytes::Bytes::from_static(b"{\"chart\":true}");
    let config_digest = oci::digest::sha256(&config);
    repo.push_blob(&config_digest, config.clone(), &[])
        .await
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::manifest::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.cncf.helm.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [],
    });
    repo.put_manifest(
        "chart",
        oci::manifest::OCI_MANIFEST,
        serde_json::to_vec(&manifest).unwrap().into(),
    )
    .await
    .unwrap();
    let why = skipped(
        indexer::index_image(
            &repo,
            "chart",
            Some("chart"),
            &Settings::default(),
            &Publish::V1,
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        why,
        SkipReason::NotAnImage("config media type application/vnd.cncf.helm.config.v1+json".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_shared_by_two_platforms_is_streamed_once() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let sample = testutil::sample_image();
    let amd = ImageSpec {
        layers: vec![sample.layers[0].clone(), sample.layers[1].clone()],
        ..sample.clone()
    };
    let arm = ImageSpec {
        layers: vec![sample.layers[0].clone(), sample.layers[2].clone()],
        arch: "arm64".into(),
        ..sample.clone()
    };
    let images = push(&reg, tmp.path(), "multi", "v1", &[amd, arm]);
    assert_eq!(images[0].layers[0].digest, images[1].layers[0].digest);
    let repo = client().repository(&reg.addr(), "multi").unwrap();
    let settings = Settings::default();

    let report = published(
        indexer::index_image(&repo, "v1", Some("v1"), &settings, &Publish::V1)
            .await
            .unwrap(),
    );
    let shared = images[0].layers[0].size;
    let arm_big = images[1].layers[1].size;
    assert!(shared >= 10 * MIB && arm_big >= 10 * MIB);
    assert_eq!(
        report.layer_bytes_read,
        shared + arm_big,
        "the shared layer once"
    );
    let platforms: Vec<_> = report
        .indexes
        .iter()
        .map(|i| (i.manifest.to_string(), i.platform.clone().unwrap(), i.ztocs))
        .collect();
    assert_eq!(
        platforms,
        [
            (images[0].manifest_digest.clone(), "linux/amd64".into(), 1),
            (images[1].manifest_digest.clone(), "linux/arm64".into(), 2),
        ]
    );
    // Both indexes list the same zTOC for the shared layer.
    let (a, _, _) = json(&repo, report.indexes[0].index.as_ref()).await;
    let (b, _, _) = json(&repo, report.indexes[1].index.as_ref()).await;
    assert_eq!(a["layers"][0]["digest"], b["layers"][0]["digest"]);

    // One platform only.
    let arm_only = Settings {
        platforms: oci::resolve::PlatformSelection::Some(vec![oci::platform::Platform::parse(
            "linux/arm64",
        )
        .unwrap()]),
        ..Default::default()
    };
    assert_eq!(
        indexer::skip_reason(&repo, "v1", Some("v1"), &arm_only, &Publish::V1)
            .await
            .unwrap(),
        Some(SkipReason::AlreadyIndexed(vec![digest(
            &images[1].manifest_digest
        )]))
    );
    let report = published(
        indexer::index_image(&repo, "v1", Some("v1"), &arm_only, &v2())
            .await
            .unwrap(),
    );
    assert_eq!(report.indexes.len(), 1);
    assert_eq!(report.layer_bytes_read, shared + arm_big);
    // The amd64 manifest stays in the new index without a SOCI index (copied as is).
    let (top, _, _) = json(&repo, "v1-soci").await;
    let entries = top["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{top}");
    assert_eq!(entries[0]["digest"], images[0].manifest_digest.as_str());
    assert!(entries[0].get("annotations").is_none());
    assert!(entries[1]["annotations"]["com.amazon.soci.index-digest"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_layer_is_permanent_and_a_stopped_registry_transient() {
    let (mut reg, _tmp, image, repo) = sample_app();
    let settings = Settings::default();

    // Same length, one byte flipped in the middle: only the digest can tell.
    let layer = image.layers.iter().find(|l| l.size >= 10 * MIB).unwrap();
    let path = reg.blob_data_path(&layer.digest);
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    for publish in [Publish::V1, v2()] {
        let err = indexer::index_image(&repo, "v1", Some("v1"), &settings, &publish)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, indexer::Error::LayerMismatch { layer: l, .. } if l.to_string() == layer.digest),
            "{err}"
        );
        assert!(!err.is_transient(), "{err}");
        assert!(err.to_string().contains("the image is corrupt"), "{err}");
    }
    // Nothing was published.
    assert_nothing_published(&repo, &image).await;

    reg.stop();
    for publish in [Publish::V1, v2()] {
        let err = indexer::index_image(&repo, "v1", Some("v1"), &settings, &publish)
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        let err = indexer::skip_reason(&repo, "v1", Some("v1"), &settings, &publish)
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err:?}");
    }
}
