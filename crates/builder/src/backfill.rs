//! `soci-index-builder backfill <registry>/<repo-glob>`: walks the registry's catalog and tag
//! lists and queues every image that has no index yet, with the same filters as the service
//! (for adopting SOCI on a registry that already holds images).

use crate::api::ServiceClient;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::filters::{self, IgnoreReason};
use crate::queue::{now_ms, Enqueued, JobSpec, Queue};
use crate::service::AddJob;
use crate::worker::describe_skip;

/// Where queued jobs go.
pub enum Sink<'a> {
    /// `POST /jobs` on the running service.
    Service(&'a ServiceClient),
    /// Straight into the queue database (no service is running).
    Database(&'a Queue),
    /// Nowhere: `--dry-run` lists what would be queued.
    DryRun,
}

/// What a backfill saw and did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackfillSummary {
    /// Repositories in the catalog matching the glob and the filters.
    pub repositories: usize,
    /// Tags listed in them.
    pub tags_seen: usize,
    /// Jobs queued (or, with `--dry-run`, that would be).
    pub queued: usize,
    /// A job for the image already existed.
    pub deduplicated: usize,
    /// Images that already have an index.
    pub already_indexed: usize,
    /// The builder's own artifacts (referrers tags, converted tags, SOCI indexes).
    pub own_artifacts: usize,
    /// Tags or media types left out by the filters.
    pub filtered: usize,
    /// Images the indexer would skip for another reason (too small, not an image…).
    pub skipped: usize,
    /// Tags that could not be checked (the error is printed).
    pub errors: usize,
}

/// Splits `<registry>/<repo-glob>` (e.g. `127.0.0.1:5000/team/*`).
pub fn parse_target(target: &str) -> Result<(String, globset::GlobMatcher)> {
    let bad = |why: String| Error::InvalidJob(format!("backfill target {target:?}: {why}"));
    let (host, glob) = target.split_once('/').ok_or_else(|| {
        bad("expected <registry>/<repository glob>, e.g. registry:5000/team/*".to_owned())
    })?;
    if !registry::notifications::valid_host(host) {
        return Err(bad(format!("{host:?} is not a registry host[:port]")));
    }
    if glob.is_empty() {
        return Err(bad("the repository glob is empty (use * or **)".to_owned()));
    }
    let m = filters::compile_glob(glob).map_err(|e| bad(format!("bad glob: {e}")))?;
    Ok((host.to_owned(), m))
}

/// Walks `target` and queues through `sink`; `line` receives one human line per tag decision.
pub async fn backfill(
    config: &Config,
    client: &registry::Client,
    target: &str,
    sink: &Sink<'_>,
    mut line: impl FnMut(&str),
) -> Result<BackfillSummary> {
    let (host, glob) = parse_target(target)?;
    // The registry is reached at the configured endpoint when there is one, as jobs are.
    let registry_host = config.registry_for(&host).unwrap_or(host);
    let mut summary = BackfillSummary::default();
    let mut repos = client.catalog(&registry_host).await?;
    repos.sort();
    for name in repos {
        if !glob.is_match(&name) || !config.filters.repository_allowed(&name) {
            continue;
        }
        summary.repositories += 1;
        let repo = client.repository(&registry_host, &name)?;
        let mut tags = match repo.list_tags().await {
            Ok(t) => t,
            Err(e) => {
                summary.errors += 1;
                line(&format!(
                    "error    {name}: listing tags: {}",
                    registry::error_chain(&e)
                ));
                continue;
            }
        };
        tags.sort();
        for tag in tags {
            summary.tags_seen += 1;
            let what = format!("{name}:{tag}");
            match config.filters.tag_decision(Some(&tag)) {
                Some(IgnoreReason::OwnArtifact) => {
                    summary.own_artifacts += 1;
                    continue;
                }
                Some(_) => {
                    summary.filtered += 1;
                    line(&format!("filtered {what}: tag filtered out"));
                    continue;
                }
                None => {}
            }
            let manifest = match repo.get_manifest(&tag).await {
                Ok(m) => m,
                Err(e) => {
                    summary.errors += 1;
                    line(&format!("error    {what}: {}", registry::error_chain(&e)));
                    continue;
                }
            };
            if !config.filters.media_type_allowed(&manifest.media_type) {
                // SOCI index manifests are OCI manifests too; the indexer tells those apart.
                if !registry::notifications::is_manifest_media_type(&manifest.media_type) {
                    summary.skipped += 1;
                    line(&format!(
                        "skip     {what}: media type {} is not an image",
                        manifest.media_type
                    ));
                } else {
                    summary.filtered += 1;
                    line(&format!(
                        "filtered {what}: media type {} filtered out",
                        manifest.media_type
                    ));
                }
                continue;
            }
            let digest = manifest.digest.to_string();
            let reason = match indexer::skip_reason(
                &repo,
                &digest,
                Some(&tag),
                &config.settings,
                &config.publish,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    summary.errors += 1;
                    line(&format!("error    {what}: {}", registry::error_chain(&e)));
                    continue;
                }
            };
            if let Some(reason) = reason {
                match reason {
                    indexer::SkipReason::AlreadyIndexed(_) => summary.already_indexed += 1,
                    indexer::SkipReason::OwnArtifact(_) => summary.own_artifacts += 1,
                    _ => summary.skipped += 1,
                }
                line(&format!("skip     {what}: {}", describe_skip(&reason)));
                continue;
            }
            let job = AddJob {
                repository: name.clone(),
                reference: digest.clone(),
                tag: Some(tag.clone()),
                host: registry_host.clone(),
                source: Some("backfill".to_owned()),
            };
            let queued = match sink {
                Sink::DryRun => true,
                Sink::Service(s) => match s.add_job(&job).await {
                    Ok(a) => a.result != "deduplicated",
                    Err(e) => {
                        summary.errors += 1;
                        line(&format!("error    {what}: {e}"));
                        continue;
                    }
                },
                Sink::Database(q) => {
                    let spec: JobSpec = job.into_spec()?;
                    !matches!(q.enqueue(spec, now_ms())?, Enqueued::Duplicate(_))
                }
            };
            if queued {
                summary.queued += 1;
                let verb = if matches!(sink, Sink::DryRun) {
                    "would queue"
                } else {
                    "queue"
                };
                line(&format!(
                    "{verb:<8} {what} {}",
                    crate::queue::short(&digest)
                ));
            } else {
                summary.deduplicated += 1;
                line(&format!("dedup    {what}: a job for this image exists"));
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (h, g) = parse_target("127.0.0.1:5000/team/*").unwrap();
        assert_eq!(h, "127.0.0.1:5000");
        assert!(g.is_match("team/app") && !g.is_match("team/a/b") && !g.is_match("other"));
        let (_, g) = parse_target("host/**").unwrap();
        assert!(g.is_match("a/b/c"));
        for bad in ["host", "host/", "ht tp/x", "host/a["] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }
}
