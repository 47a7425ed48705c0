//! The HTTP service: `POST /events` (registry notifications), `GET /healthz`, `GET /metrics`,
//! and the secret-protected `GET /jobs` / `POST /jobs` used by `status` and `backfill`.
//!
//! `POST /events` never waits for indexing: it checks the secret, parses the envelope, applies
//! the intake filters and writes the queue, then answers — the registry retries on non-2xx and
//! delivers events to an endpoint one at a time, so a slow answer would hold up every push.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::filters::IgnoreReason;
use crate::metrics::Metrics;
use crate::queue::{now_ms, Enqueued, Job, JobSpec, JobState, Queue};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use registry::notifications::{self, Event};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// Largest notification body accepted (distribution batches a few events per envelope).
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// Default and largest `limit` of `GET /jobs`.
pub const DEFAULT_JOBS_LIMIT: usize = 50;
/// Largest `limit` of `GET /jobs`.
pub const MAX_JOBS_LIMIT: usize = 10_000;

/// What the service and its workers share.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// The job queue.
    pub queue: Arc<Queue>,
    /// Metrics.
    pub metrics: Metrics,
    /// Registry client.
    pub client: registry::Client,
    /// Wakes an idle worker when a job is queued.
    pub wake: Notify,
    /// Workers alive (for `/healthz`).
    pub workers_alive: AtomicUsize,
    /// Jobs running in this process (after a restart, the only running ones).
    pub running: AtomicUsize,
}

impl AppState {
    /// Runs a queue operation on a blocking thread (redb commits wait for the disk).
    pub async fn db<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Queue) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let q = self.queue.clone();
        tokio::task::spawn_blocking(move || f(&q))
            .await
            .map_err(|e| Error::Database {
                path: self.queue.path().to_owned(),
                reason: format!("queue task failed: {e}"),
            })?
    }

    /// Sets the job gauges from the queue.
    pub async fn refresh_gauges(self: &Arc<Self>) {
        match self.db(|q| q.pending_counts()).await {
            Ok((queued, retry_wait)) => {
                self.metrics
                    .set_gauges(queued, retry_wait, self.running.load(Ordering::SeqCst))
            }
            Err(e) => tracing::warn!(error = %e, "counting jobs for the gauges failed"),
        }
    }

    /// Queues a job, logs and counts the decision, wakes a worker. Returns the decision.
    pub async fn enqueue(self: &Arc<Self>, spec: JobSpec) -> Result<Enqueued> {
        let s = spec.clone();
        let outcome = self.db(move |q| q.enqueue(s, now_ms())).await?;
        let tag = spec.tag.as_deref().unwrap_or("");
        match &outcome {
            Enqueued::Queued(j) | Enqueued::Requeued(j) => {
                tracing::info!(
                    repository = %spec.repository, digest = %spec.digest, tag, host = %spec.host,
                    source = %spec.source, key = %j.key,
                    requeued = matches!(outcome, Enqueued::Requeued(_)), "job queued"
                );
                self.metrics.jobs_enqueued.inc();
                self.wake.notify_one();
                self.refresh_gauges().await;
            }
            Enqueued::Duplicate(state) => {
                tracing::info!(
                    repository = %spec.repository, digest = %spec.digest, tag, host = %spec.host,
                    source = %spec.source, state = state.as_str(),
                    "not queued: a job for this image exists (deduplicated)"
                );
                self.metrics
                    .event_ignored(IgnoreReason::Deduplicated.label());
            }
        }
        Ok(outcome)
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/events", post(events))
        .route("/jobs", get(list_jobs).post(add_job))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Compares in constant time (the digests of both values, so length leaks nothing either).
fn secret_matches(presented: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (
        oci::digest::sha256(presented),
        oci::digest::sha256(expected),
    );
    // Both are 64 hex digits.
    a.digest()
        .bytes()
        .zip(b.digest().bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The 401 answer, or `None` when the secret header is right.
fn check_secret(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let expected = state.config.expected_secret_value();
    let ok = headers
        .get(state.config.secret_header.as_str())
        .is_some_and(|v| secret_matches(v.as_bytes(), expected.as_bytes()));
    if ok {
        None
    } else {
        tracing::warn!(header = %state.config.secret_header, "request refused: missing or wrong secret");
        Some(
            (
                StatusCode::UNAUTHORIZED,
                format!(
                    "missing or wrong secret in the {} header\n",
                    state.config.secret_header
                ),
            )
                .into_response(),
        )
    }
}

/// What `POST /events` answers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct EventsAnswer {
    /// Events in the envelope.
    pub events: usize,
    /// Jobs queued.
    pub queued: usize,
    /// Events ignored (including duplicates).
    pub ignored: usize,
}

async fn events(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = check_secret(&state, &headers) {
        return r;
    }
    let envelope = match notifications::parse_envelope(&body) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "notification refused (400)");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let mut answer = EventsAnswer {
        events: envelope.events.len(),
        ..Default::default()
    };
    for event in &envelope.events {
        state.metrics.event_received(&event.action);
        match intake(&state, event).await {
            Ok(true) => answer.queued += 1,
            Ok(false) => answer.ignored += 1,
            Err(e) => {
                // The registry retries the whole envelope on 5xx; what was queued stays
                // deduplicated.
                tracing::error!(error = %e, "queueing an event failed");
                return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response();
            }
        }
    }
    axum::Json(answer).into_response()
}

/// Filters and queues one event; true when a job was queued.
async fn intake(state: &Arc<AppState>, event: &Event) -> Result<bool> {
    let t = &event.target;
    let tag = event.tag().unwrap_or("");
    let ignore = |reason: IgnoreReason, why: &str| {
        // Pulls (the builder's own reads among them) are the bulk of events: keep them quiet.
        if reason == IgnoreReason::NotPush || reason == IgnoreReason::NotManifest {
            tracing::debug!(action = %event.action, media_type = %t.descriptor.media_type, repository = %t.repository, digest = %t.descriptor.digest, tag, reason = reason.label(), "event ignored");
        } else {
            tracing::info!(action = %event.action, media_type = %t.descriptor.media_type, repository = %t.repository, digest = %t.descriptor.digest, tag, reason = reason.label(), "event ignored: {why}");
        }
        state.metrics.event_ignored(reason.label());
        Ok(false)
    };
    if let Some(reason) = state.config.filters.decide(event) {
        let why = match reason {
            IgnoreReason::OwnArtifact => "one of the builder's own artifacts",
            IgnoreReason::Repository => "repository filtered out",
            IgnoreReason::Tag => "tag filtered out",
            IgnoreReason::NoTag => "pushed by digest (v2 mode or a tag allow-list needs a tag)",
            IgnoreReason::MediaType => "media type filtered out",
            _ => "not a manifest push",
        };
        return ignore(reason, why);
    }
    let digest = t.descriptor.digest.clone();
    if state.db(move |q| q.is_own(&digest)).await? {
        return ignore(IgnoreReason::OwnArtifact, "a manifest the builder pushed");
    }
    let Some(host) = state.config.registry_for(&event.request.host) else {
        return ignore(
            IgnoreReason::NoHost,
            "the event's request.host is empty or not in [registry] hosts, and [registry] endpoint is not set",
        );
    };
    let spec = JobSpec {
        host,
        repository: t.repository.clone(),
        digest: t.descriptor.digest.clone(),
        tag: event.tag().map(str::to_owned),
        source: "event".to_owned(),
    };
    Ok(matches!(
        state.enqueue(spec).await?,
        Enqueued::Queued(_) | Enqueued::Requeued(_)
    ))
}

/// Query of `GET /jobs`.
#[derive(Debug, Deserialize)]
pub struct JobsQuery {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// At most this many (default [`DEFAULT_JOBS_LIMIT`]).
    pub limit: Option<usize>,
}

async fn list_jobs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<JobsQuery>,
) -> Response {
    if let Some(r) = check_secret(&state, &headers) {
        return r;
    }
    let filter = match query.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match JobState::parse(s) {
            Some(st) => Some(st),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "state {s:?} is not one of queued, running, retry_wait, done, skipped, failed\n"
                    ),
                )
                    .into_response()
            }
        },
    };
    let limit = query
        .limit
        .unwrap_or(DEFAULT_JOBS_LIMIT)
        .min(MAX_JOBS_LIMIT);
    match state.db(move |q| q.list(filter, limit)).await {
        Ok(jobs) => axum::Json::<Vec<Job>>(jobs).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Body of `POST /jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddJob {
    /// Repository.
    pub repository: String,
    /// Manifest digest.
    pub reference: String,
    /// Tag, if any.
    #[serde(default)]
    pub tag: Option<String>,
    /// Registry host.
    pub host: String,
    /// Who asks (`api` when absent; `backfill` from the backfill command).
    #[serde(default)]
    pub source: Option<String>,
}

/// What `POST /jobs` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddJobAnswer {
    /// `queued`, `requeued` or `deduplicated`.
    pub result: String,
    /// The job's state after the call.
    pub state: String,
}

impl AddJob {
    /// Validates the request and turns it into a job.
    pub fn into_spec(self) -> Result<JobSpec> {
        oci::digest::parse(&self.reference).map_err(|_| {
            Error::InvalidJob(format!(
                "reference {:?} is not a sha256:<64 hex> manifest digest",
                self.reference
            ))
        })?;
        notifications::check_repository(&self.repository)
            .map_err(|why| Error::InvalidJob(format!("repository {:?} {why}", self.repository)))?;
        if let Some(t) = &self.tag {
            if !notifications::valid_tag(t) {
                return Err(Error::InvalidJob(format!("tag {t:?} is not a tag")));
            }
        }
        if !notifications::valid_host(&self.host) {
            return Err(Error::InvalidJob(format!(
                "host {:?} is not host[:port]",
                self.host
            )));
        }
        Ok(JobSpec {
            host: self.host,
            repository: self.repository,
            digest: self.reference,
            tag: self.tag,
            source: self.source.unwrap_or_else(|| "api".to_owned()),
        })
    }
}

async fn add_job(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = check_secret(&state, &headers) {
        return r;
    }
    let req: AddJob = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid job request: {e}\n"),
            )
                .into_response()
        }
    };
    let spec = match req.into_spec() {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match state.enqueue(spec).await {
        Ok(outcome) => {
            let (result, st) = match outcome {
                Enqueued::Queued(j) => ("queued", j.state),
                Enqueued::Requeued(j) => ("requeued", j.state),
                Enqueued::Duplicate(s) => ("deduplicated", s),
            };
            axum::Json(AddJobAnswer {
                result: result.to_owned(),
                state: st.as_str().to_owned(),
            })
            .into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let workers = state.workers_alive.load(Ordering::SeqCst);
    if workers < state.config.concurrency {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{workers} of {} workers running\n",
                state.config.concurrency
            ),
        )
            .into_response();
    }
    match state.db(|q| q.check()).await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(secret_matches(b"Bearer abc", b"Bearer abc"));
        assert!(!secret_matches(b"Bearer abd", b"Bearer abc"));
        assert!(!secret_matches(b"Bearer abc ", b"Bearer abc"));
        assert!(!secret_matches(b"", b"Bearer abc"));
    }

    #[test]
    fn job_requests_are_validated() {
        let ok = AddJob {
            repository: "team/app".into(),
            reference: format!("sha256:{}", "a".repeat(64)),
            tag: Some("1.0".into()),
            host: "127.0.0.1:5000".into(),
            source: None,
        };
        assert_eq!(ok.clone().into_spec().unwrap().source, "api");
        for bad in [
            AddJob {
                reference: "latest".into(),
                ..ok.clone()
            },
            AddJob {
                repository: "Team".into(),
                ..ok.clone()
            },
            AddJob {
                tag: Some("-x".into()),
                ..ok.clone()
            },
            AddJob {
                host: "http://x".into(),
                ..ok.clone()
            },
        ] {
            assert!(bad.into_spec().is_err());
        }
    }
}
