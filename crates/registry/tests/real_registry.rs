//! The registry client against Debian's real `docker-registry` (distribution 2.8) on loopback.

use bytes::Bytes;
use futures_util::StreamExt;
use registry::retry::RetryPolicy;
use registry::{BlobPush, Client, ClientConfig, Error, RangeReply, ReferrersSource};
use std::time::Duration;
use testutil::Registry;

fn client(user: Option<(&str, &str)>) -> Client {
    Client::new(ClientConfig {
        user: user.map(|(u, p)| registry::credentials::Credential::Basic {
            username: u.into(),
            password: p.into(),
        }),
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(5),
        },
        upload_chunk_size: 100_000,
        ..Default::default()
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn manifest_for(config: &(oci::Digest, usize), layers: &[(oci::Digest, usize)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0.to_string(), "size": config.1},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": s
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[test]
fn blobs_manifests_ranges_mounts_and_referrers() {
    let reg = Registry::start();
    let rt = rt();
    let c = client(None);
    let repo = c.repository(&reg.addr(), "test/app").unwrap();
    rt.block_on(async {
        // Monolithic and chunked uploads, then existence and reads.
        let small = Bytes::from(testutil::noisy(50_000, 3));
        let big = Bytes::from(testutil::random_bytes(350_000, 9));
        let ds = oci::digest::sha256(&small);
        let db = oci::digest::sha256(&big);
        assert_eq!(repo.blob_size(&ds).await.unwrap(), None);
        assert_eq!(repo.push_blob(&ds, small.clone(), &[]).await.unwrap(), BlobPush::Uploaded);
        assert_eq!(repo.push_blob(&db, big.clone(), &[]).await.unwrap(), BlobPush::Uploaded);
        assert_eq!(repo.push_blob(&ds, small.clone(), &[]).await.unwrap(), BlobPush::Existed);
        assert_eq!(repo.blob_size(&db).await.unwrap(), Some(big.len() as u64));
        assert_eq!(repo.get_blob_bytes(&db, 1 << 20).await.unwrap(), big);

        // Wrong bytes for a digest are refused before anything is sent.
        let err = repo.push_blob(&ds, big.clone(), &[]).await.unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");

        // Ranges: 206 with the exact bytes.
        match repo.get_blob_range(&db, (1000, 5000)).await.unwrap() {
            RangeReply::Partial(b) => assert_eq!(&b[..], &big[1000..5000]),
            RangeReply::Whole(_) => panic!("distribution answers ranges with 206"),
        }
        assert_eq!(repo.read_blob_range(&db, (349_990, 350_000)).await.unwrap(), big.slice(349_990..));

        // Streaming a whole blob.
        let mut s = repo.get_blob(&db).await.unwrap();
        assert_eq!(s.size, Some(big.len() as u64));
        let mut got = Vec::new();
        while let Some(chunk) = s.stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, big);

        // Cross-repository mount.
        let other = c.repository(&reg.addr(), "test/other").unwrap();
        assert_eq!(other.push_blob(&db, big.clone(), &["test/app"]).await.unwrap(), BlobPush::Mounted);
        assert_eq!(other.blob_size(&db).await.unwrap(), Some(big.len() as u64));

        // Manifests by tag and digest; unknown ones.
        let manifest = manifest_for(&(ds.clone(), small.len()), &[(db.clone(), big.len())]);
        let put = repo
            .put_manifest("v1", oci::manifest::OCI_MANIFEST, Bytes::from(manifest.clone()))
            .await
            .unwrap();
        assert!(!put.subject_handled, "distribution 2.8 has no referrers API");
        let by_tag = repo.get_manifest("v1").await.unwrap();
        assert_eq!(by_tag.bytes, manifest);
        assert_eq!(by_tag.digest, put.digest);
        assert_eq!(by_tag.media_type, oci::manifest::OCI_MANIFEST);
        let by_digest = repo.get_manifest(put.digest.as_ref()).await.unwrap();
        assert_eq!(by_digest.bytes, manifest);
        let (head_digest, head_size) = repo.head_manifest("v1").await.unwrap().unwrap();
        assert_eq!(head_digest, Some(put.digest.clone()));
        assert_eq!(head_size, manifest.len() as u64);
        let err = repo.get_manifest("nope").await.unwrap_err();
        assert_eq!(err.to_string(), format!("manifest unknown: {}/test/app:nope", reg.addr()));
        assert!(repo.head_manifest("nope").await.unwrap().is_none());
        let err = repo.get_blob_bytes(&oci::digest::sha256(b"absent"), 10).await.unwrap_err();
        assert!(matches!(err, Error::BlobUnknown { .. }), "{err}");
        assert_eq!(repo.list_tags().await.unwrap(), vec!["v1".to_owned()]);

        // Referrers through the tag schema: entries accumulate, none is dropped or doubled.
        let subject = put.digest.clone();
        let refs = repo.referrers(&subject, None).await.unwrap();
        assert_eq!(refs.source, ReferrersSource::TagSchema);
        assert!(refs.descriptors.is_empty());
        let mut descs = Vec::new();
        for (i, at) in ["application/vnd.amazon.soci.index.v1+json", "application/example"].iter().enumerate() {
            let bytes = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": oci::manifest::OCI_MANIFEST, "artifactType": at,
                "config": {"mediaType": at, "digest": ds.to_string(), "size": small.len()},
                "layers": [],
                "subject": {"mediaType": oci::manifest::OCI_MANIFEST, "digest": subject.to_string(), "size": manifest.len()},
                "annotations": {"n": i.to_string()},
            }))
            .unwrap();
            let p = repo
                .put_manifest(oci::digest::sha256(&bytes).as_ref(), oci::manifest::OCI_MANIFEST, Bytes::from(bytes.clone()))
                .await
                .unwrap();
            let mut d = oci::Descriptor::new(oci::MediaType::ImageManifest, bytes.len() as u64, p.digest);
            d.set_artifact_type(Some(oci::MediaType::from(*at)));
            descs.push(d);
        }
        assert!(repo.add_referrer_to_tag_schema(&subject, &descs[0]).await.unwrap());
        assert!(repo.add_referrer_to_tag_schema(&subject, &descs[1]).await.unwrap());
        assert!(!repo.add_referrer_to_tag_schema(&subject, &descs[0]).await.unwrap());
        let all = repo.referrers(&subject, None).await.unwrap();
        assert_eq!(all.descriptors.len(), 2);
        let soci = repo
            .referrers(&subject, Some("application/vnd.amazon.soci.index.v1+json"))
            .await
            .unwrap();
        assert_eq!(soci.descriptors.len(), 1);
        assert_eq!(soci.descriptors[0].digest(), descs[0].digest());
    });
}

#[test]
fn corrupt_blob_in_storage_is_rejected() {
    let reg = Registry::start();
    let rt = rt();
    let c = client(None);
    let repo = c.repository(&reg.addr(), "corrupt/me").unwrap();
    let data = Bytes::from(testutil::noisy(10_000, 5));
    let d = oci::digest::sha256(&data);
    rt.block_on(repo.push_blob(&d, data.clone(), &[])).unwrap();
    let path = reg.blob_data_path(d.as_ref());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = rt.block_on(repo.get_blob_bytes(&d, 1 << 20)).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("corrupt/me"), "{err}");
}

#[test]
fn basic_auth_right_wrong_and_missing_credentials() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    let rt = rt();
    let data = Bytes::from_static(b"hello registry");
    let d = oci::digest::sha256(&data);

    let good = client(Some(("alice", "s3cret")));
    let repo = good.repository(&reg.addr(), "private/app").unwrap();
    assert_eq!(
        rt.block_on(repo.push_blob(&d, data.clone(), &[])).unwrap(),
        BlobPush::Uploaded
    );
    assert_eq!(rt.block_on(repo.get_blob_bytes(&d, 100)).unwrap(), data);

    let bad = client(Some(("alice", "wrong")));
    let err = rt
        .block_on(
            bad.repository(&reg.addr(), "private/app")
                .unwrap()
                .get_blob_bytes(&d, 100),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Unauthorized { status: 401, .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&reg.addr()) && msg.contains("--user flag"),
        "{msg}"
    );

    let anonymous = client(None);
    let err = rt
        .block_on(
            anonymous
                .repository(&reg.addr(), "private/app")
                .unwrap()
                .get_manifest("latest"),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Unauthorized { .. }), "{msg}");
    assert!(msg.contains("anonymous"), "{msg}");
}

#[test]
fn stopped_registry_gives_a_bounded_transport_error_and_recovers() {
    let mut reg = Registry::start();
    let rt = rt();
    let c = client(None);
    let repo = c.repository(&reg.addr(), "down/app").unwrap();
    let data = Bytes::from_static(b"x");
    let d = oci::digest::sha256(&data);
    rt.block_on(repo.push_blob(&d, data.clone(), &[])).unwrap();
    reg.stop();
    let started = std::time::Instant::now();
    let err = rt.block_on(repo.blob_size(&d)).unwrap_err();
    assert!(matches!(err, Error::Transport { attempts: 3, .. }), "{err}");
    assert!(err.to_string().contains("down/app"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    reg.restart();
    assert_eq!(rt.block_on(repo.blob_size(&d)).unwrap(), Some(1));
}

#[test]
fn pulls_go_through_a_hosts_toml_mirror_first() {
    // The mirror holds the image; the "upstream" registry named in the reference does not.
    let mirror = Registry::start();
    let upstream = Registry::start();
    let rt = rt();
    let data = Bytes::from(testutil::noisy(20_000, 21));
    let d = oci::digest::sha256(&data);
    let seed = client(None);
    rt.block_on(
        seed.repository(&mirror.addr(), "lib/app")
            .unwrap()
            .push_blob(&d, data.clone(), &[]),
    )
    .unwrap();

    let hosts = tempfile::tempdir().unwrap();
    testutil::write_mirror_hosts_toml(hosts.path(), &upstream.addr(), &mirror.addr());
    let c = Client::new(ClientConfig {
        hosts_dir: Some(hosts.path().to_owned()),
        ..Default::default()
    });
    let repo = c.repository(&upstream.addr(), "lib/app").unwrap();
    assert_eq!(repo.hosts().len(), 2);
    assert_eq!(rt.block_on(repo.get_blob_bytes(&d, 1 << 20)).unwrap(), data);
    // Pushes go to the registry itself (the mirror has no push capability).
    assert_eq!(
        rt.block_on(repo.push_blob(&d, data.clone(), &[])).unwrap(),
        BlobPush::Uploaded
    );
    let direct = c.repository(&upstream.addr(), "lib/app").unwrap();
    assert_eq!(
        rt.block_on(direct.blob_size(&d)).unwrap(),
        Some(data.len() as u64)
    );
    // A blob only upstream has: the mirror answers 404 and the client falls through.
    let only_up = Bytes::from_static(b"upstream only");
    let du = oci::digest::sha256(&only_up);
    let up_only = client(None);
    rt.block_on(
        up_only
            .repository(&upstream.addr(), "lib/app")
            .unwrap()
            .push_blob(&du, only_up.clone(), &[]),
    )
    .unwrap();
    assert_eq!(rt.block_on(repo.get_blob_bytes(&du, 100)).unwrap(), only_up);
}

#[test]
fn tls_needs_the_ca_file_or_an_explicit_skip_verify() {
    let reg = Registry::start_with_tls();
    let rt = rt();
    let data = Bytes::from_static(b"over tls");
    let d = oci::digest::sha256(&data);
    // The registry's address is loopback with a port, so the default would be plain HTTP:
    // a hosts.toml names https for it, as a real node would.
    let hosts = tempfile::tempdir().unwrap();
    let dir = hosts.path().join(reg.addr());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!("server = \"https://{}\"\n", reg.addr()),
    )
    .unwrap();
    let make = |ca: Option<std::path::PathBuf>, insecure: bool| {
        Client::new(ClientConfig {
            hosts_dir: Some(hosts.path().to_owned()),
            host_defaults: registry::hosts::HostDefaults {
                plain_http: false,
                insecure,
                ca_file: ca,
            },
            retry: RetryPolicy::none(),
            ..Default::default()
        })
    };

    // Unknown certificate: refused, and the message says why.
    let strict = make(None, false);
    let err = rt
        .block_on(
            strict
                .repository(&reg.addr(), "tls/app")
                .unwrap()
                .blob_size(&d),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Transport { .. }), "{msg}");
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");

    // Trusting the registry's certificate through the CA file works.
    let with_ca = make(reg.tls_cert().map(|p| p.to_owned()), false);
    let repo = with_ca.repository(&reg.addr(), "tls/app").unwrap();
    assert_eq!(repo.hosts()[0].scheme, "https");
    assert_eq!(
        rt.block_on(repo.push_blob(&d, data.clone(), &[])).unwrap(),
        BlobPush::Uploaded
    );
    assert_eq!(rt.block_on(repo.get_blob_bytes(&d, 100)).unwrap(), data);

    // So does skipping verification, when asked.
    let insecure = make(None, true);
    let repo = insecure.repository(&reg.addr(), "tls/app").unwrap();
    assert_eq!(
        rt.block_on(repo.blob_size(&d)).unwrap(),
        Some(data.len() as u64)
    );
}

/// GETs of blob `digest` this client made of the registry behind `log`, whatever the answer.
fn soci_blob_gets(log: &str, digest: &oci::Digest) -> usize {
    log.lines()
        .filter(|l| l.contains("response completed") && l.contains("useragent=soci-rs/"))
        .filter(|l| l.contains(&format!("/blobs/{digest}")) && l.contains("method=GET"))
        .count()
}

/// `count()` once it is at least `want`, or after 5 s: the registry writes a request's log
/// line after it answered, so a client can be faster than the log.
fn settled(want: usize, count: impl Fn() -> usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = count();
        if n >= want || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Range GETs of blob `digest` that the registry behind `log` answered to this client.
fn soci_range_gets(log: &str, digest: &oci::Digest) -> usize {
    log.lines()
        .filter(|l| l.contains("response completed") && l.contains("useragent=soci-rs/"))
        .filter(|l| l.contains(&format!("/blobs/{digest}")) && l.contains("status=206"))
        .count()
}

#[test]
fn a_pull_through_mirror_serves_ranges_once_it_holds_the_blob() {
    // Debian's docker-registry in proxy mode in front of the origin: until it has stored a
    // blob it answers a Range request with the whole blob, so the range comes from the
    // origin; once stored, the mirror serves ranges itself.
    let origin = Registry::start();
    let mirror =
        Registry::start_with_config(&format!("proxy:\n  remoteurl: http://{}\n", origin.addr()));
    let rt = rt();
    let data = Bytes::from(testutil::random_bytes(3_000_000, 5));
    let d = oci::digest::sha256(&data);
    rt.block_on(
        client(None)
            .repository(&origin.addr(), "lib/app")
            .unwrap()
            .push_blob(&d, data.clone(), &[]),
    )
    .unwrap();
    let hosts = tempfile::tempdir().unwrap();
    testutil::write_mirror_hosts_toml(hosts.path(), &origin.addr(), &mirror.addr());
    let fill_wait = Duration::from_secs(2);
    let c = Client::new(ClientConfig {
        hosts_dir: Some(hosts.path().to_owned()),
        mirror_fill_wait: fill_wait,
        ..Default::default()
    });
    let repo = c.repository(&origin.addr(), "lib/app").unwrap();
    let range = (1_000_000, 1_100_000);
    let want = &data[1_000_000..1_100_000];
    let asked_mirror = || soci_blob_gets(&mirror.log(), &d);
    assert_eq!(rt.block_on(repo.read_blob_range(&d, range)).unwrap(), want);
    let started = std::time::Instant::now();
    let origin_ranges = || soci_range_gets(&origin.log(), &d);
    assert_eq!(
        settled(1, origin_ranges),
        1,
        "the range is served by the origin while the mirror fills\n{}",
        origin.log()
    );
    assert_eq!(settled(1, asked_mirror), 1);
    // While the mirror fills, ranges of the blob do not ask it again (each ask would make
    // it fetch the blob from the origin once more).
    assert_eq!(rt.block_on(repo.read_blob_range(&d, range)).unwrap(), want);
    if started.elapsed() < fill_wait {
        assert_eq!(asked_mirror(), 1, "{}", mirror.log());
        assert_eq!(settled(2, origin_ranges), 2);
    }
    std::thread::sleep((fill_wait + Duration::from_millis(100)).saturating_sub(started.elapsed()));
    let from_origin = origin_ranges();
    let stored = mirror.blob_data_path(d.as_ref());
    for _ in 0..200 {
        if std::fs::metadata(&stored).is_ok_and(|m| m.len() == data.len() as u64) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        stored.exists(),
        "the mirror never stored the blob\n{}",
        mirror.log()
    );
    for _ in 0..3 {
        assert_eq!(rt.block_on(repo.read_blob_range(&d, range)).unwrap(), want);
    }
    assert_eq!(
        soci_range_gets(&origin.log(), &d),
        from_origin,
        "{}",
        origin.log()
    );
    let mirror_ranges = || soci_range_gets(&mirror.log(), &d);
    assert_eq!(settled(3, mirror_ranges), 3, "{}", mirror.log());
}

/// A client whose only credentials are `keychain`'s (a CRI pull's), with `hosts_dir`.
fn keychain_client(keychain: &registry::Keychain, hosts_dir: Option<&std::path::Path>) -> Client {
    Client::new(ClientConfig {
        keychain: Some(keychain.clone()),
        hosts_dir: hosts_dir.map(ToOwned::to_owned),
        retry: RetryPolicy::none(),
        ..Default::default()
    })
}

/// Reads blob `digest` of `registry`/`repository` with a client whose only credentials are
/// `keychain`'s.
fn keychain_read(
    rt: &tokio::runtime::Runtime,
    keychain: &registry::Keychain,
    registry: &str,
    repository: &str,
    digest: &oci::Digest,
) -> Result<Bytes, Box<Error>> {
    let repo = keychain_client(keychain, None)
        .repository(registry, repository)
        .unwrap();
    rt.block_on(repo.get_blob_bytes(digest, 1 << 20))
        .map_err(Box::new)
}

fn keychain_entry(registry: &str, repository: &str, password: &str) -> registry::KeychainEntry {
    registry::KeychainEntry {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
        credential: registry::credentials::Credential::Basic {
            username: "alice".into(),
            password: password.into(),
        },
    }
}

#[test]
fn keychain_credentials_serve_their_repository_only_and_never_a_mirror() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    // A mirror that would accept the same credentials and holds the blob too.
    let mirror = Registry::start_with_auth("alice", "s3cret");
    let rt = rt();
    let data = Bytes::from(testutil::noisy(30_000, 5));
    let d = oci::digest::sha256(&data);
    let seed = client(Some(("alice", "s3cret")));
    for (r, repo) in [
        (&reg, "private/app"),
        (&reg, "private/other"),
        (&mirror, "private/app"),
    ] {
        rt.block_on(
            seed.repository(&r.addr(), repo)
                .unwrap()
                .push_blob(&d, data.clone(), &[]),
        )
        .unwrap();
    }

    let keychain = registry::Keychain::new();
    keychain.remember(keychain_entry(&reg.addr(), "private/app", "s3cret"));
    let read = |repository| keychain_read(&rt, &keychain, &reg.addr(), repository, &d);
    assert_eq!(read("private/app").unwrap(), data);
    // Another repository of the same registry gets nothing from the keychain.
    let err = read("private/other").unwrap_err();
    assert!(err.to_string().contains("anonymous"), "{err}");

    // A wrong secret: the error names the registry, the repository and where the
    // credentials came from.
    keychain.remember(keychain_entry(&reg.addr(), "private/app", "wrong"));
    let err = read("private/app").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(*err, Error::Unauthorized { status: 401, .. })
            && msg.contains(&reg.addr())
            && msg.contains("the credentials of a CRI image pull of"),
        "{msg}"
    );

    // Behind a mirror, the pull's credentials go to the registry only: the mirror refuses
    // the anonymous request and the registry itself serves the blob.
    keychain.remember(keychain_entry(&reg.addr(), "private/app", "s3cret"));
    let hosts = tempfile::tempdir().unwrap();
    testutil::write_mirror_hosts_toml(hosts.path(), &reg.addr(), &mirror.addr());
    let gets = || soci_blob_gets(&reg.log(), &d);
    let before = settled(1, gets);
    assert_eq!(before, 1, "{}", reg.log());
    let via_mirror = keychain_client(&keychain, Some(hosts.path()))
        .repository(&reg.addr(), "private/app")
        .unwrap();
    assert_eq!(via_mirror.hosts().len(), 2);
    assert_eq!(
        rt.block_on(via_mirror.get_blob_bytes(&d, 1 << 20)).unwrap(),
        data
    );
    assert_eq!(settled(before + 1, gets), before + 1, "{}", reg.log());
    let mirror_log = mirror.log();
    let served_by_mirror = mirror_log
        .lines()
        .filter(|l| l.contains("response completed") && l.contains("status=200"))
        .filter(|l| l.contains(&format!("/blobs/{d}")) && l.contains("useragent=soci-rs/"))
        .count();
    assert_eq!(served_by_mirror, 0, "{mirror_log}");
}

/// docker-registry in token-auth mode with a real JWT issuer whose tokens the registry
/// accepts for `lifetime` while the issuer tells clients `advertised` seconds.
fn token_registry(
    lifetime: u64,
    advertised: Option<u64>,
) -> (testutil::token_issuer::TokenIssuer, Registry) {
    let issuer = testutil::token_issuer::TokenIssuer::start(testutil::token_issuer::TokenPolicy {
        user: "alice".into(),
        password: "s3cret".into(),
        lifetime: Duration::from_secs(lifetime),
        advertised_expires_in: advertised,
    });
    let reg = Registry::start_with_config(&issuer.registry_auth_yaml());
    (issuer, reg)
}

#[test]
fn bearer_tokens_are_renewed_on_expiry_and_when_the_registry_refuses_one() {
    let rt = rt();
    let data = Bytes::from(testutil::noisy(50_000, 9));
    let d = oci::digest::sha256(&data);
    for advertised in [None, Some(300)] {
        let (issuer, reg) = token_registry(2, advertised);
        let c = client(Some(("alice", "s3cret")));
        let repo = c.repository(&reg.addr(), "team/app").unwrap();
        rt.block_on(repo.push_blob(&d, data.clone(), &[])).unwrap();
        let after_push = issuer.issued();
        assert!(after_push >= 1, "a token was issued");
        // Three reads, each after the last token's lifetime: each needs a new token, found
        // from expires_in or, when the issuer claims 300 s, from the registry's 401.
        for i in 1..=3 {
            std::thread::sleep(Duration::from_millis(2_300));
            let got = rt
                .block_on(repo.get_blob_range(&d, (1_000, 2_000)))
                .unwrap_or_else(|e| {
                    panic!("read {i} (advertised {advertised:?}): {e}\n{}", reg.log())
                });
            let RangeReply::Partial(got) = got else {
                panic!("the registry ignored the range");
            };
            assert_eq!(&got[..], &data[1_000..2_000]);
            assert_eq!(issuer.issued(), after_push + i, "advertised {advertised:?}");
        }
        assert!(issuer.refused().is_empty(), "{:?}", issuer.refused());
        // A wrong password: the token server's refusal names the registry and the source.
        let err = rt
            .block_on(
                client(Some(("alice", "nope")))
                    .repository(&reg.addr(), "team/app")
                    .unwrap()
                    .blob_size(&d),
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Unauthorized { .. })
                && msg.contains(&reg.addr())
                && msg.contains("--user flag"),
            "{msg}"
        );
    }
}

#[test]
fn blob_redirects_are_cached_and_resolved_again_when_storage_refuses() {
    // docker-registry's redirect middleware sends blob reads to object storage, as ECR, GCR
    // and Docker Hub do.
    let storage = testutil::blob_storage::BlobStorage::start();
    let reg = Registry::start_with_config(&storage.registry_redirect_yaml());
    storage.serve_from(reg.storage_dir());
    let rt = rt();
    let data = Bytes::from(testutil::noisy(200_000, 3));
    let d = oci::digest::sha256(&data);
    let c = client(None);
    let repo = c.repository(&reg.addr(), "lib/app").unwrap();
    rt.block_on(repo.push_blob(&d, data.clone(), &[])).unwrap();
    let read = |start: u64| {
        let got = rt
            .block_on(repo.read_blob_range(&d, (start, start + 10_000)))
            .unwrap_or_else(|e| panic!("read at {start}: {e}\n{}", reg.log()));
        assert_eq!(&got[..], &data[start as usize..start as usize + 10_000]);
    };
    read(0);
    assert_eq!(storage.served(), 1, "the read went to storage");
    let gets = || soci_blob_gets(&reg.log(), &d);
    let resolved = settled(1, gets);
    assert_eq!(resolved, 1);
    // Later ranges go to storage straight away: no round trip to the registry each.
    for start in [50_000, 100_000, 150_000] {
        read(start);
    }
    assert_eq!(storage.served(), 4);
    // The storage URL stops working (a signed URL expired): the registry is asked again.
    storage.refuse_next(1);
    read(20_000);
    assert_eq!(storage.refused(), 1);
    assert_eq!(storage.served(), 5);
    assert_eq!(settled(resolved + 1, gets), resolved + 1, "{}", reg.log());
    read(30_000);
    // Late log lines of the cached reads would show here: all ranges but two went to
    // storage without the registry.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gets(), resolved + 1, "{}", reg.log());
}

#[test]
fn a_registry_token_from_the_keychain_is_sent_as_the_bearer_token() {
    let (issuer, reg) = token_registry(300, None);
    let rt = rt();
    let data = Bytes::from(testutil::noisy(20_000, 4));
    let d = oci::digest::sha256(&data);
    let seed = client(Some(("alice", "s3cret")));
    rt.block_on(
        seed.repository(&reg.addr(), "team/app")
            .unwrap()
            .push_blob(&d, data.clone(), &[]),
    )
    .unwrap();
    let issued = issuer.issued();
    // CRI's registry_token: a bearer token for the registry itself, no handshake.
    let keychain = registry::Keychain::new();
    let entry = |token: String| registry::KeychainEntry {
        registry: reg.addr(),
        repository: "team/app".into(),
        credential: registry::credentials::Credential::RegistryToken(token),
    };
    keychain.remember(entry(issuer.token_for(&["repository:team/app:pull"])));
    let read = || keychain_read(&rt, &keychain, &reg.addr(), "team/app", &d);
    assert_eq!(read().unwrap(), data);
    assert_eq!(issuer.issued(), issued, "no token was asked for");
    // A token for another repository is refused, and the error says whose token it was.
    keychain.remember(entry(issuer.token_for(&["repository:team/other:pull"])));
    let err = read().unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(*err, Error::Unauthorized { .. })
            && msg.contains("registry token")
            && msg.contains("the credentials of a CRI image pull of"),
        "{msg}"
    );
}
