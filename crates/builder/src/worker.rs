//! Workers: take jobs from the queue, run [`indexer::index_image`], record the outcome. And
//! [`serve`], which starts the workers and the HTTP service.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::queue::{now_ms, Claim, Finish, IndexSummary, Job, JobState, Queue, Summary};
use crate::service::{self, AppState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Longest idle wait before a worker looks at the queue again by itself (a safety net: queued
/// jobs wake a worker at once, retries are waited for to the millisecond).
const IDLE_POLL: Duration = Duration::from_secs(30);

/// Human text of a skip reason, for the job record and `status`.
pub fn describe_skip(reason: &indexer::SkipReason) -> String {
    use indexer::SkipReason as S;
    match reason {
        S::OwnArtifact(what) => format!("own artifact: {what}"),
        S::AlreadyIndexed(indexes) => {
            let list: Vec<String> = indexes
                .iter()
                .map(|d| crate::queue::short(d.as_ref()))
                .collect();
            format!("already indexed: {}", list.join(", "))
        }
        S::NotAnImage(what) => format!("not an image: {what}"),
        S::TooSmall { size, min } => {
            format!("too small: layers add up to {size} bytes, minimum {min}")
        }
        S::NoTag => "pushed without a tag; v2 publishing needs one".to_owned(),
        S::NothingToIndex => {
            "nothing to index: every layer is below min_layer_size or not gzip/tar".to_owned()
        }
        // An image with none of the `[publish] platforms` (e.g. the arm64 manifest of a
        // multi-platform push, arriving as its own tagless event): a skip, not a dead letter.
        S::NoSelectedPlatform(what) => format!("no selected platform: {what}"),
    }
}

/// Runs one attempt of a job and records its end. Never fails: errors become job states.
pub async fn run_job(state: &Arc<AppState>, job: Job) {
    let spec = &job.spec;
    let tag = spec.tag.as_deref().unwrap_or("");
    tracing::info!(
        repository = %spec.repository, digest = %spec.digest, tag, host = %spec.host,
        attempt = job.attempts, key = %job.key, "job running"
    );
    let result = async {
        let repo = state
            .client
            .repository(&spec.host, &spec.repository)
            .map_err(indexer::Error::from)?;
        indexer::index_image(
            &repo,
            &spec.digest,
            spec.tag.as_deref(),
            &state.config.settings,
            &state.config.publish,
        )
        .await
    }
    .await;
    let finish = match result {
        Ok(indexer::Outcome::Published(report)) => {
            state.metrics.build_seconds.observe(report.build_seconds);
            state
                .metrics
                .layer_bytes_read
                .inc_by(report.layer_bytes_read);
            Finish::Published {
                summary: Summary {
                    indexes: report
                        .indexes
                        .iter()
                        .map(|i| IndexSummary {
                            manifest: i.manifest.to_string(),
                            platform: i.platform.clone(),
                            index: i.index.to_string(),
                            ztocs: i.ztocs,
                        })
                        .collect(),
                    converted: report
                        .converted
                        .as_ref()
                        .map(|(t, d)| (t.clone(), d.to_string())),
                    layer_bytes_read: report.layer_bytes_read,
                    build_seconds: report.build_seconds,
                },
                pushed: report
                    .pushed_manifests
                    .iter()
                    .map(|d| d.to_string())
                    .collect(),
            }
        }
        Ok(indexer::Outcome::Skipped(reason)) => Finish::Skipped(describe_skip(&reason)),
        Err(e) => Finish::Error {
            message: registry::error_chain(&e),
            transient: e.is_transient(),
        },
    };
    let key = job.key.clone();
    let retry = state.config.retry;
    let stored = state
        .db(move |q| q.finish(&key, finish, &retry, now_ms()))
        .await;
    match stored {
        Ok(j) => {
            let result = j.result_line();
            match j.state {
                JobState::Done => state.metrics.jobs_done.inc(),
                JobState::Skipped => state.metrics.jobs_skipped.inc(),
                JobState::Failed => state.metrics.jobs_failed.inc(),
                JobState::RetryWait => state.metrics.retries.inc(),
                JobState::Queued | JobState::Running => 0,
            };
            if matches!(j.state, JobState::Failed | JobState::RetryWait) {
                tracing::warn!(
                    repository = %spec.repository, digest = %spec.digest, tag,
                    state = j.state.as_str(), attempts = j.attempts, error = %result, "job {}",
                    j.state.as_str()
                );
            } else {
                tracing::info!(
                    repository = %spec.repository, digest = %spec.digest, tag,
                    state = j.state.as_str(), attempts = j.attempts, result = %result, "job {}",
                    j.state.as_str()
                );
            }
        }
        Err(e) => {
            // The job stays `running` in the database and is recovered at the next start.
            tracing::error!(key = %job.key, error = %e, "recording the end of a job failed");
        }
    }
}

/// One worker: claims due jobs one at a time until the process ends.
pub async fn run_worker(state: Arc<AppState>, id: usize) {
    state.workers_alive.fetch_add(1, Ordering::SeqCst);
    // Counted down on exit whatever the cause (a panic in a job included).
    struct Alive(Arc<AppState>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.workers_alive.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _alive = Alive(state.clone());
    loop {
        match state.db(|q| q.claim(now_ms())).await {
            Ok(Claim::Job(job)) => {
                state.running.fetch_add(1, Ordering::SeqCst);
                state.refresh_gauges().await;
                run_job(&state, *job).await;
                state.running.fetch_sub(1, Ordering::SeqCst);
                state.refresh_gauges().await;
            }
            Ok(Claim::Idle(next)) => {
                let wait = next
                    .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
                    .unwrap_or(IDLE_POLL)
                    .min(IDLE_POLL);
                tokio::select! {
                    _ = state.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                tracing::error!(worker = id, error = %e, "claiming a job failed; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Opens the queue, recovers jobs a crash left running, starts `concurrency` workers and
/// serves HTTP on the configured address until SIGINT/SIGTERM.
pub async fn serve(config: Config) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Io {
            what: format!("listening on {}", config.listen),
            source: e,
        })?;
    serve_on(config, listener).await
}

/// [`serve`] on a listener already bound.
pub async fn serve_on(config: Config, listener: tokio::net::TcpListener) -> Result<()> {
    let tag_in_key = matches!(config.publish, indexer::Publish::V2 { .. });
    let path = config.db_path();
    let queue = tokio::task::spawn_blocking(move || Queue::open(&path, tag_in_key))
        .await
        .map_err(|e| Error::Database {
            path: config.db_path(),
            reason: e.to_string(),
        })??;
    let recovered = queue.recover(now_ms())?;
    if recovered > 0 {
        tracing::info!(
            jobs = recovered,
            "jobs left running by the previous process queued again"
        );
    }
    let client = config.registry_client()?;
    let state = Arc::new(AppState {
        queue: Arc::new(queue),
        metrics: Metrics::new(),
        client,
        wake: Notify::new(),
        workers_alive: AtomicUsize::new(0),
        running: AtomicUsize::new(0),
        config,
    });
    state.refresh_gauges().await;
    for id in 0..state.config.concurrency {
        tokio::spawn(run_worker(state.clone(), id));
    }
    let addr = listener.local_addr().map_err(|e| Error::Io {
        what: "reading the listen address".to_owned(),
        source: e,
    })?;
    tracing::info!(
        listen = %addr, state_dir = %state.config.state_dir.display(),
        concurrency = state.config.concurrency, publish = ?state.config.publish,
        "soci-index-builder serving"
    );
    axum::serve(listener, service::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| Error::Io {
            what: format!("serving HTTP on {addr}"),
            source: e,
        })?;
    tracing::info!("soci-index-builder stopped; running jobs resume at the next start");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
