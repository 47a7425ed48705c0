//! End-to-end tests of `soci-index-builder` as a real process against Debian's real
//! `docker-registry` (distribution 2.8) on loopback, whose `notifications:` section points at
//! the builder; images are built here and pushed with skopeo. Every wait is bounded and panics
//! with the builder's log.

use builder::queue::{Job, JobState};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testutil::{Compression, EntrySpec, FileSpec, ImageSpec, LayerSpec, Registry};

const SECRET: &str = "test-secret-9f2c";
const SOCI_V1: &str = "application/vnd.amazon.soci.index.v1+json";
/// Longest wait for anything the builder does with these small images.
const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// The registry's `notifications:` section for a builder on `port`: the README's snippet
/// (so a typo there fails here), with a short backoff.
fn notifications_yaml(port: u16) -> String {
    format!(
        "notifications:\n  events:\n    includereferences: true\n  endpoints:\n    - name: soci-index-builder\n      \
         url: http://127.0.0.1:{port}/events\n      headers:\n        Authorization: [Bearer {SECRET}]\n      \
         timeout: 2s\n      threshold: 3\n      backoff: 1s\n      ignoredmediatypes:\n        - application/octet-stream\n      \
         ignore:\n        actions: [pull, delete]\n"
    )
}

/// A `soci-index-builder serve` process with its own config, state dir and log.
struct Builder {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Builder {
    /// A builder on a port chosen now (kept across restarts); `sections` are appended to the
    /// config (e.g. `[publish]`, `[filters]`).
    fn new(port: u16, concurrency: usize, sections: &str) -> Builder {
        let dir = tempfile::Builder::new()
            .prefix("soci-builder-")
            .tempdir()
            .expect("temp dir");
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\nsecret = \"{SECRET}\"\nstate_dir = \"{}\"\n\
             concurrency = {concurrency}\n\n{sections}\n",
            dir.path().join("state").display()
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Builder {
            dir,
            port,
            child: None,
            rt,
            http: reqwest::Client::new(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("builder.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("builder.log"))
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_soci-index-builder"))
            .args([
                "--log-level",
                "info,soci_index_builder=debug,builder=debug",
                "serve",
                "--config",
            ])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start soci-index-builder");
        // Kept in self at once so that Drop kills it if the wait below panics.
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("soci-index-builder exited ({st}):\n{}", self.log());
            }
            if self.get_status("/healthz") == Some(200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the builder did not answer /healthz within {WAIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no graceful shutdown, whatever is running stays `running` in the database.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9 the builder");
            let _ = c.wait();
        }
    }

    fn get_status(&self, path: &str) -> Option<u16> {
        self.rt
            .block_on(self.http.get(self.url(path)).send())
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// `(status, body)` of a request with optional auth header value.
    fn request(&self, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
        self.rt.block_on(async {
            let mut rb = match method {
                "GET" => self.http.get(self.url(path)),
                _ => self.http.post(self.url(path)),
            };
            if let Some(a) = auth {
                rb = rb.header("Authorization", a);
            }
            let resp = rb
                .body(body.to_owned())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()));
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        })
    }

    fn jobs(&self) -> Vec<Job> {
        let (status, body) = self.request("GET", "/jobs?limit=1000", Some(&bearer()), "");
        assert_eq!(status, 200, "GET /jobs: {body}\n{}", self.log());
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("jobs JSON: {e}: {body}"))
    }

    fn add_job(&self, host: &str, repository: &str, digest: &str, tag: Option<&str>) -> Value {
        let body = serde_json::json!({"repository": repository, "reference": digest, "tag": tag, "host": host});
        let (status, text) = self.request("POST", "/jobs", Some(&bearer()), &body.to_string());
        assert_eq!(status, 200, "POST /jobs: {text}\n{}", self.log());
        serde_json::from_str(&text).expect("POST /jobs answer")
    }

    /// The value of a metric sample (`name{labels}`), 0 when absent.
    fn metric(&self, sample: &str) -> f64 {
        let (status, text) = self.request("GET", "/metrics", None, "");
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {WAIT:?} waiting for {what}\nbuilder log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the job for `digest` (and `tag` when given) is in `state`; returns it.
    fn wait_job(&self, digest: &str, tag: Option<&str>, state: JobState) -> Job {
        let mut found = None;
        self.wait(&format!("job {digest} {tag:?} to be {state:?}"), || {
            found = self.jobs().into_iter().find(|j| {
                j.spec.digest == digest
                    && tag.is_none_or(|t| j.spec.tag.as_deref() == Some(t))
                    && j.state == state
            });
            found.is_some()
        });
        found.expect("found")
    }

    /// Runs a subcommand of the binary; returns (success, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_soci-index-builder"))
            .args(args)
            .output()
            .expect("run soci-index-builder");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn bearer() -> String {
    format!("Bearer {SECRET}")
}

/// A one-layer image whose content depends on `seed` (64 KiB of text, gzip).
fn image(seed: u32) -> ImageSpec {
    ImageSpec {
        layers: vec![LayerSpec {
            entries: vec![
                EntrySpec::Dir {
                    path: "app/".into(),
                    mode: 0o755,
                },
                EntrySpec::File(FileSpec {
                    path: "app/data.txt".into(),
                    data: testutil::noisy(64 << 10, seed * 2 + 1),
                    mode: 0o644,
                }),
            ],
            compression: Compression::Gzip,
        }],
        os: "linux".into(),
        arch: "amd64".into(),
    }
}

/// Pushes `image(seed)` as `repo:tag`; returns the manifest digest and the built image.
fn push(reg: &Registry, tmp: &Path, repo_tag: &str, seed: u32) -> testutil::BuiltImage {
    let dir = tmp.join(format!("layout-{seed}"));
    let built = testutil::write_oci_layout(&dir, "t", &[image(seed)]);
    testutil::skopeo_push(&dir, "t", &format!("{}/{repo_tag}", reg.addr()), None);
    built.into_iter().next().expect("one image")
}

fn registry_client() -> (tokio::runtime::Runtime, registry::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    (rt, registry::Client::new(registry::ClientConfig::default()))
}

/// SOCI v1 indexes listed for `digest` (referrers API or tag schema).
fn v1_indexes(reg: &Registry, repo: &str, digest: &str) -> Vec<String> {
    let (rt, client) = registry_client();
    let r = client.repository(&reg.addr(), repo).expect("repository");
    let d = oci::digest::parse(digest).expect("digest");
    rt.block_on(r.referrers(&d, Some(SOCI_V1)))
        .expect("referrers")
        .descriptors
        .iter()
        .map(|d| d.digest().to_string())
        .collect()
}

const V1: &str = "[publish]\nmode = \"v1\"\nmin_layer_size = 0\n\n[retry]\nmax_attempts = 10\ninitial_backoff_secs = 1\nmax_backoff_secs = 2\n";

#[test]
fn v1_push_is_indexed_once_and_its_own_pushes_queue_nothing() {
    let port = free_port();
    let reg = Registry::start_with_config(&notifications_yaml(port));
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Builder::new(port, 2, V1);
    b.start();
    let img = push(&reg, tmp.path(), "team/app:1.0", 1);
    let job = b.wait_job(&img.manifest_digest, None, JobState::Done);
    assert_eq!(job.spec.tag.as_deref(), Some("1.0"));
    assert_eq!(job.spec.host, reg.addr());
    let summary = job.summary.expect("done job has a summary");
    assert_eq!(summary.indexes.len(), 1);
    let indexes = v1_indexes(&reg, "team/app", &img.manifest_digest);
    assert_eq!(indexes, vec![summary.indexes[0].index.clone()]);
    // The index manifest and the referrers tag the job pushed come back as events: both are
    // recognised as the builder's own (includereferences shows the SOCI config type; the
    // referrers tag is sha256-<hex>).
    b.wait("the builder's own pushes to be ignored", || {
        b.metric("soci_builder_events_ignored_total{reason=\"own_artifact\"}") >= 2.0
    });
    // The same image pushed again under another tag: deduplicated, no second index.
    push(&reg, tmp.path(), "team/app:again", 1);
    b.wait("the second push to be deduplicated", || {
        b.metric("soci_builder_events_ignored_total{reason=\"deduplicated\"}") >= 1.0
    });
    let jobs = b.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(v1_indexes(&reg, "team/app", &img.manifest_digest).len(), 1);
    assert!(b.metric("soci_builder_jobs_done_total") >= 1.0);
    assert!(b.metric("soci_builder_layer_bytes_read_total") > 0.0);
    assert!(b.metric("soci_builder_index_build_seconds_count") >= 1.0);
    // The image, its SOCI index, the referrers tag and the second push (blob pushes are not
    // sent: ignoredmediatypes).
    assert!(b.metric("soci_builder_events_received_total{action=\"push\"}") >= 4.0);
    assert_eq!(
        b.metric("soci_builder_events_ignored_total{reason=\"not_manifest\"}"),
        0.0
    );
}

#[test]
fn v2_push_gets_a_soci_tag_and_the_conversion_queues_nothing() {
    let port = free_port();
    let reg = Registry::start_with_config(&notifications_yaml(port));
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Builder::new(
        port,
        2,
        "[publish]\nmode = \"v2\"\ntag_pattern = \"{tag}-soci\"\nmin_layer_size = 0\n",
    );
    b.start();
    let img = push(&reg, tmp.path(), "app:1.0", 2);
    let job = b.wait_job(&img.manifest_digest, Some("1.0"), JobState::Done);
    let summary = job.summary.expect("summary");
    let (tag, index_digest) = summary.converted.clone().expect("converted");
    assert_eq!(tag, "1.0-soci");
    // The new tag is a SOCI-enabled image index whose manifest copy names the SOCI index.
    let (rt, client) = registry_client();
    let repo = client.repository(&reg.addr(), "app").unwrap();
    let m = rt
        .block_on(repo.get_manifest("1.0-soci"))
        .expect("1.0-soci exists");
    assert_eq!(m.digest.to_string(), index_digest);
    let v: Value = serde_json::from_slice(&m.bytes).unwrap();
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    let manifests = v["manifests"].as_array().unwrap();
    assert!(
        manifests
            .iter()
            .any(|d| d["annotations"]["com.amazon.soci.index-digest"].is_string()),
        "{v:#}"
    );
    // Its own pushes (the 1.0-soci tag, manifest copies and index manifests by digest) are
    // events too: none becomes a job.
    b.wait("the converted tag's event to be ignored as own", || {
        b.metric("soci_builder_events_ignored_total{reason=\"own_artifact\"}") >= 1.0
    });
    b.wait("the tagless pushes to be ignored", || {
        b.metric("soci_builder_events_ignored_total{reason=\"no_tag\"}") >= 2.0
    });
    let jobs = b.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
}

#[test]
fn filters_keep_denied_repositories_and_tags_out() {
    let port = free_port();
    let reg = Registry::start_with_config(&notifications_yaml(port));
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Builder::new(
        port,
        2,
        &format!("[filters]\ndeny_repositories = [\"secret/*\"]\ndeny_tags = [\"*-dev\"]\n\n{V1}"),
    );
    b.start();
    let denied_repo = push(&reg, tmp.path(), "secret/app:1.0", 3);
    let denied_tag = push(&reg, tmp.path(), "team/app:1.0-dev", 4);
    let allowed = push(&reg, tmp.path(), "team/app:1.0", 5);
    b.wait_job(&allowed.manifest_digest, None, JobState::Done);
    b.wait("the denied pushes to be counted", || {
        b.metric("soci_builder_events_ignored_total{reason=\"repository\"}") >= 1.0
            && b.metric("soci_builder_events_ignored_total{reason=\"tag\"}") >= 1.0
    });
    let jobs = b.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert!(v1_indexes(&reg, "secret/app", &denied_repo.manifest_digest).is_empty());
    assert!(v1_indexes(&reg, "team/app", &denied_tag.manifest_digest).is_empty());
}

#[test]
fn secret_and_body_are_checked() {
    let mut b = Builder::new(free_port(), 1, V1);
    b.start();
    let push_event = |digest: &str| {
        format!(
            r#"{{"events":[{{"id":"x","action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","repository":"a/b","tag":"1"}},"request":{{"host":"127.0.0.1:1"}}}}]}}"#
        )
    };
    let valid = push_event(&format!("sha256:{}", "a".repeat(64)));
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(SECRET),
        Some("bearer test-secret-9f2c"),
    ] {
        let (status, body) = b.request("POST", "/events", auth, &valid);
        assert_eq!(status, 401, "{auth:?}: {body}");
    }
    let (status, _) = b.request("GET", "/jobs", None, "");
    assert_eq!(status, 401);
    let (status, _) = b.request("POST", "/jobs", Some("Bearer nope"), "{}");
    assert_eq!(status, 401);
    assert!(b.jobs().is_empty(), "nothing queued by refused requests");

    let auth = Some(bearer());
    for (body, needle) in [
        ("not json".to_owned(), "not a notification envelope"),
        ("{}".to_owned(), "events"),
        (
            r#"{"events":[{"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a"}}]}"#.to_owned(),
            "target.digest is missing",
        ),
        (push_event("sha256:short"), "target.digest"),
        (
            valid.replace("a/b", "A/B"),
            "target.repository",
        ),
    ] {
        let (status, text) = b.request("POST", "/events", auth.as_deref(), &body);
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
    let (status, text) = b.request(
        "POST",
        "/jobs",
        auth.as_deref(),
        r#"{"repository":"a","reference":"latest","host":"h"}"#,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("reference"), "{text}");

    // Accepted: a pull is counted and ignored; the push is queued (its registry does not exist,
    // so the job will retry, which is not what this test is about).
    let pull = valid.replace("\"push\"", "\"pull\"");
    let (status, text) = b.request("POST", "/events", auth.as_deref(), &pull);
    assert_eq!(status, 200, "{text}");
    let (status, text) = b.request("POST", "/events", auth.as_deref(), &valid);
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["queued"], 1, "{text}");
    assert_eq!(
        b.metric("soci_builder_events_received_total{action=\"pull\"}"),
        1.0
    );
    assert_eq!(
        b.metric("soci_builder_events_ignored_total{reason=\"not_push\"}"),
        1.0
    );
    assert_eq!(b.jobs().len(), 1);
}

#[test]
fn queued_jobs_survive_kill_9() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let images: Vec<(String, testutil::BuiltImage)> = (0..6)
        .map(|i| {
            let repo = format!("many/app{i}");
            let img = push(&reg, tmp.path(), &format!("{repo}:1.0"), 10 + i);
            (repo, img)
        })
        .collect();
    let mut b = Builder::new(free_port(), 1, V1);
    b.start();
    for (repo, img) in &images {
        b.add_job(&reg.addr(), repo, &img.manifest_digest, Some("1.0"));
    }
    b.kill9();
    // What the crash left behind, read through `status` (the database, no service answers).
    let state = b.state_dir();
    let (ok, out, err) = b.cli(&[
        "status",
        "--state",
        state.to_str().unwrap(),
        "--json",
        "--limit",
        "100",
    ]);
    assert!(ok, "status failed: {err}");
    let left: Vec<Job> = serde_json::from_str(&out).expect("status --json");
    assert_eq!(left.len(), 6, "{out}");
    assert!(err.contains("no service answered"), "{err}");
    assert!(
        left.iter()
            .any(|j| matches!(j.state, JobState::Queued | JobState::Running)),
        "every job finished before the kill; the test proves nothing: {left:#?}"
    );
    b.start();
    for (_, img) in &images {
        b.wait_job(&img.manifest_digest, None, JobState::Done);
    }
    let jobs = b.jobs();
    assert_eq!(jobs.len(), 6, "{jobs:#?}");
    for (repo, img) in &images {
        assert_eq!(
            v1_indexes(&reg, repo, &img.manifest_digest).len(),
            1,
            "{repo}: exactly one index"
        );
    }
}

#[test]
fn registry_outage_is_retried_and_a_corrupt_image_fails_for_good() {
    let mut reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let good = push(&reg, tmp.path(), "outage/app:1.0", 20);
    let bad = push(&reg, tmp.path(), "corrupt/app:1.0", 21);
    let layer = reg.blob_data_path(&bad.layers[0].digest);
    let len = std::fs::metadata(&layer)
        .expect("layer blob in storage")
        .len();
    std::fs::write(&layer, vec![0x5a; usize::try_from(len).unwrap()]).expect("corrupt the layer");
    let mut b = Builder::new(free_port(), 1, V1);
    b.start();

    reg.stop();
    b.add_job(
        &reg.addr(),
        "outage/app",
        &good.manifest_digest,
        Some("1.0"),
    );
    let waiting = b.wait_job_matching(&good.manifest_digest, |j| {
        j.state == JobState::RetryWait && j.attempts >= 2
    });
    assert!(
        waiting
            .error
            .as_deref()
            .unwrap_or("")
            .contains("outage/app"),
        "{waiting:#?}"
    );
    assert!(b.metric("soci_builder_job_retries_total") >= 2.0);
    b.wait("the retry_wait gauge", || {
        b.metric("soci_builder_jobs_retry_wait") + b.metric("soci_builder_jobs_running") == 1.0
    });
    reg.restart();
    b.wait_job(&good.manifest_digest, None, JobState::Done);
    b.wait("the gauges to show nothing waiting", || {
        b.metric("soci_builder_jobs_retry_wait") == 0.0
            && b.metric("soci_builder_jobs_queued") == 0.0
            && b.metric("soci_builder_jobs_running") == 0.0
    });
    assert_eq!(
        v1_indexes(&reg, "outage/app", &good.manifest_digest).len(),
        1
    );

    b.add_job(
        &reg.addr(),
        "corrupt/app",
        &bad.manifest_digest,
        Some("1.0"),
    );
    let failed = b.wait_job(&bad.manifest_digest, None, JobState::Failed);
    assert_eq!(
        failed.attempts, 1,
        "a permanent error is not retried: {failed:#?}"
    );
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains(&bad.layers[0].digest), "{error}");
    // `status` lists it, with the error, through the running service.
    let config = b.config_path();
    let (ok, out, err) = b.cli(&[
        "status",
        "--config",
        config.to_str().unwrap(),
        "--filter",
        "failed",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("service at"), "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("corrupt/app"))
        .unwrap_or_else(|| panic!("no row for corrupt/app:\n{out}"));
    assert!(
        row.contains("failed") && row.contains(&bad.layers[0].digest),
        "{row}"
    );
    assert!(b.metric("soci_builder_jobs_failed_total") >= 1.0);
}

#[test]
fn backfill_queues_what_has_no_index() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let a = push(&reg, tmp.path(), "team/a:1.0", 30);
    let bimg = push(&reg, tmp.path(), "team/b:1.0", 31);
    let c = push(&reg, tmp.path(), "other/c:1.0", 32);
    let mut b = Builder::new(free_port(), 2, V1);
    b.start();
    b.add_job(&reg.addr(), "team/a", &a.manifest_digest, Some("1.0"));
    b.wait_job(&a.manifest_digest, None, JobState::Done);

    let config = b.config_path();
    let config = config.to_str().unwrap();
    let target = format!("{}/team/*", reg.addr());
    let (ok, out, err) = b.cli(&["backfill", "--config", config, &target]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("through the running service"), "{err}");
    assert!(
        out.contains("2 repositories, 3 tags seen: 1 queued, 1 already indexed"),
        "{out}"
    );
    b.wait_job(&bimg.manifest_digest, None, JobState::Done);

    // No service: straight into the database; the referrers tags of a and b are own artifacts.
    b.kill9();
    let all = format!("{}/**", reg.addr());
    let (ok, out, _) = b.cli(&["backfill", "--config", config, "--dry-run", &all]);
    assert!(ok, "{out}");
    assert!(out.contains("would queue other/c:1.0"), "{out}");
    let (ok, out, err) = b.cli(&["backfill", "--config", config, "--json", &all]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("straight into"), "{err}");
    let summary: Value = serde_json::from_str(&out).expect("backfill --json");
    assert_eq!(summary["repositories"], 3, "{summary}");
    assert_eq!(summary["queued"], 1, "{summary}");
    assert_eq!(summary["already_indexed"], 2, "{summary}");
    assert_eq!(summary["own_artifacts"], 2, "{summary}");
    b.start();
    b.wait_job(&c.manifest_digest, None, JobState::Done);
    assert_eq!(b.jobs().len(), 3);
    assert_eq!(v1_indexes(&reg, "other/c", &c.manifest_digest).len(), 1);
}

impl Builder {
    /// Waits until the job for `digest` satisfies `pred`; returns it.
    fn wait_job_matching(&self, digest: &str, pred: impl Fn(&Job) -> bool) -> Job {
        let mut found = None;
        self.wait(&format!("job {digest} to reach the expected state"), || {
            found = self
                .jobs()
                .into_iter()
                .find(|j| j.spec.digest == digest && pred(j));
            found.is_some()
        });
        found.expect("found")
    }
}

#[test]
fn multi_platform_push_indexes_the_selected_platform_once() {
    let port = free_port();
    let reg = Registry::start_with_config(&notifications_yaml(port));
    let tmp = tempfile::tempdir().unwrap();
    let mut b = Builder::new(
        port,
        1,
        &V1.replace("[publish]\n", "[publish]\nplatforms = [\"linux/amd64\"]\n"),
    );
    b.start();
    let dir = tmp.path().join("multi");
    let mut arm = image(41);
    arm.arch = "arm64".into();
    let built = testutil::write_oci_layout(&dir, "t", &[image(40), arm]);
    testutil::skopeo_push(&dir, "t", &format!("{}/multi/app:1.0", reg.addr()), None);
    let (amd64, arm64) = (&built[0].manifest_digest, &built[1].manifest_digest);
    // Three events: the two platform manifests (tagless) and the index (tagged).
    b.wait("the three manifest jobs to finish", || {
        let jobs = b.jobs();
        jobs.len() == 3
            && jobs
                .iter()
                .all(|j| matches!(j.state, JobState::Done | JobState::Skipped))
    });
    let jobs = b.jobs();
    let arm_job = jobs
        .iter()
        .find(|j| &j.spec.digest == arm64)
        .expect("a job for the arm64 manifest");
    assert_eq!(arm_job.state, JobState::Skipped, "{arm_job:#?}");
    assert!(
        arm_job
            .skip_reason
            .as_deref()
            .unwrap_or("")
            .contains("no selected platform"),
        "{arm_job:#?}"
    );
    assert_eq!(v1_indexes(&reg, "multi/app", amd64).len(), 1);
    assert!(v1_indexes(&reg, "multi/app", arm64).is_empty());
    assert_eq!(
        jobs.iter().filter(|j| j.state == JobState::Done).count(),
        1,
        "one job built the amd64 index, the other found it: {jobs:#?}"
    );
}

/// `[publish] prefetch_files`: the index the builder publishes lists a prefetch artifact for
/// the layer holding the file, naming the spans of its data; a path the image lacks adds
/// nothing.
#[test]
fn prefetch_files_become_prefetch_artifacts_in_the_published_index() {
    let port = free_port();
    let reg = Registry::start_with_config(&notifications_yaml(port));
    let tmp = tempfile::tempdir().unwrap();
    let sections = V1.replace(
        "min_layer_size = 0\n",
        "min_layer_size = 0\nspan_size = 16384\nprefetch_files = [\"/app/data.txt\", \"/not/there\"]\n",
    );
    let mut b = Builder::new(port, 1, &sections);
    b.start();
    let img = push(&reg, tmp.path(), "team/pre:1", 7);
    let job = b.wait_job(&img.manifest_digest, None, JobState::Done);
    let index_digest = job.summary.expect("summary").indexes[0].index.clone();
    let (rt, client) = registry_client();
    let repo = client.repository(&reg.addr(), "team/pre").unwrap();
    let manifest = rt.block_on(repo.get_manifest(&index_digest)).unwrap();
    let index = oci::soci_index::parse_index_manifest(&manifest.bytes, &index_digest).unwrap();
    assert_eq!(index.prefetch.len(), 1, "{index:?}");
    let artifact = &index.prefetch[0];
    assert_eq!(artifact.layer_digest.to_string(), img.layers[0].digest);
    let bytes = rt
        .block_on(repo.get_blob_bytes(&artifact.digest, artifact.size))
        .unwrap();
    let spans = oci::prefetch::PrefetchArtifact::parse(&bytes, "artifact")
        .unwrap()
        .spans();
    // 64 KiB of data in 16 KiB spans, after the tar headers: 4 or 5 spans, never all of
    // them missing and never span ids past the layer.
    assert!((4..=5).contains(&spans.len()), "{spans:?}");
    let ztoc_bytes = rt
        .block_on(repo.get_blob_bytes(&index.ztocs[0].digest, index.ztocs[0].size))
        .unwrap();
    let z = ztoc::decode(&ztoc_bytes).unwrap();
    assert!(spans.iter().all(|s| *s < z.span_count()), "{spans:?}");
}
