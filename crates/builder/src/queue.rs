//! The persistent job queue (redb, `<state_dir>/queue.redb`).
//!
//! One job per image: the key is registry host + repository + manifest digest (+ tag in v2
//! mode, where each tag gets its own converted tag). Every state change is one write
//! transaction, so a `kill -9` loses nothing: a job is either still queued or has moved on, and
//! jobs found `running` at start (their worker died with the process) go back to `queued`.
//!
//! Tables: `jobs` (key → JSON [`Job`]), `pending` (key → due time in ms, for the jobs in
//! `queued` or `retry_wait`, so finding the next job does not scan history) and
//! `own_manifests` (digest → time recorded: every manifest the builder pushed, so the
//! registry's notifications about them are dropped at intake).

use crate::config::RetryConfig;
use crate::error::{Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const PENDING: TableDefinition<&str, u64> = TableDefinition::new("pending");
const OWN: TableDefinition<&str, u64> = TableDefinition::new("own_manifests");

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker is on it.
    Running,
    /// Failed with a transient error; runs again at `next_attempt_ms`.
    RetryWait,
    /// Indexes published.
    Done,
    /// Nothing to do (already indexed, own artifact, too small…), with the reason.
    Skipped,
    /// Dead letter: a permanent error, or transient errors until `max_attempts`.
    Failed,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::RetryWait,
        JobState::Done,
        JobState::Skipped,
        JobState::Failed,
    ];

    /// The name used in JSON, the API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::RetryWait => "retry_wait",
            JobState::Done => "done",
            JobState::Skipped => "skipped",
            JobState::Failed => "failed",
        }
    }

    /// Parses [`JobState::as_str`].
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True for the states a duplicate request does not requeue from.
    pub fn blocks_duplicates(self) -> bool {
        self != JobState::Failed
    }
}

/// What to index: the request behind a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Registry host the job talks to.
    pub host: String,
    /// Repository.
    pub repository: String,
    /// Manifest (or index) digest pushed.
    pub digest: String,
    /// Tag it was pushed under, if any.
    pub tag: Option<String>,
    /// Where the job came from: `event`, `api`, `backfill`.
    pub source: String,
}

impl JobSpec {
    /// The queue key; `with_tag` in v2 mode.
    pub fn key(&self, with_tag: bool) -> String {
        let mut k = format!("{}/{}@{}", self.host, self.repository, self.digest);
        if with_tag {
            if let Some(t) = &self.tag {
                k.push('#');
                k.push_str(t);
            }
        }
        k
    }
}

/// One SOCI index a job published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexSummary {
    /// Image manifest indexed.
    pub manifest: String,
    /// Its platform, when known.
    pub platform: Option<String>,
    /// SOCI index manifest digest.
    pub index: String,
    /// zTOCs in it.
    pub ztocs: usize,
}

/// What a finished job did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Indexes published.
    pub indexes: Vec<IndexSummary>,
    /// v2: the tag written and the new image index digest.
    pub converted: Option<(String, String)>,
    /// Layer bytes streamed.
    pub layer_bytes_read: u64,
    /// Seconds spent building.
    pub build_seconds: f64,
}

impl Summary {
    /// A short human line: `2 index(es) sha256:abcd…, 12.3 MB read in 1.2 s`.
    pub fn line(&self) -> String {
        let idx: Vec<String> = self.indexes.iter().map(|i| short(&i.index)).collect();
        let mut s = format!("{} index(es) {}", self.indexes.len(), idx.join(","));
        if let Some((tag, _)) = &self.converted {
            s.push_str(&format!(" -> :{tag}"));
        }
        s.push_str(&format!(
            ", {:.1} MB read in {:.1} s",
            self.layer_bytes_read as f64 / 1e6,
            self.build_seconds
        ));
        s
    }
}

/// `sha256:0123456789ab` (12 hex digits) of a digest, for tables.
pub fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", hex.chars().take(12).collect::<String>())
}

/// A job and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Queue key.
    pub key: String,
    /// What to index.
    #[serde(flatten)]
    pub spec: JobSpec,
    /// Current state.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// When it was queued (ms since the epoch).
    pub created_ms: u64,
    /// Last state change (ms since the epoch).
    pub updated_ms: u64,
    /// `retry_wait`: when it runs again.
    pub next_attempt_ms: Option<u64>,
    /// Last error (with its causes), for `retry_wait` and `failed`.
    pub error: Option<String>,
    /// `done`: what was published.
    pub summary: Option<Summary>,
    /// `skipped`: why.
    pub skip_reason: Option<String>,
}

impl Job {
    /// The result column of `status`: the summary, the skip reason or the error.
    pub fn result_line(&self) -> String {
        match self.state {
            JobState::Done => self.summary.as_ref().map(Summary::line).unwrap_or_default(),
            JobState::Skipped => self.skip_reason.clone().unwrap_or_default(),
            JobState::Failed | JobState::RetryWait => {
                let mut s = self.error.clone().unwrap_or_default();
                if let (JobState::RetryWait, Some(n)) = (self.state, self.next_attempt_ms) {
                    s = format!(
                        "next attempt in {} s: {s}",
                        n.saturating_sub(now_ms()) / 1000
                    );
                }
                s
            }
            JobState::Queued | JobState::Running => String::new(),
        }
    }
}

/// What [`Queue::enqueue`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Enqueued {
    /// A new job.
    Queued(Job),
    /// A failed job was queued again (attempts reset).
    Requeued(Job),
    /// A job for the same key exists in this state; nothing changed.
    Duplicate(JobState),
}

/// What [`Queue::claim`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This job is now `running` (attempts already counted).
    Job(Box<Job>),
    /// Nothing is due; the earliest pending job is due at this time (ms), if any.
    Idle(Option<u64>),
}

/// How a job attempt ended.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Published; `pushed` are the manifests the indexer PUT (remembered as our own).
    Published {
        /// What was published.
        summary: Summary,
        /// Manifest digests pushed.
        pushed: Vec<String>,
    },
    /// Nothing to do.
    Skipped(String),
    /// An error; `transient` ones are retried while attempts remain.
    Error {
        /// The error chain.
        message: String,
        /// Whether trying again may help.
        transient: bool,
    },
}

/// The queue database.
pub struct Queue {
    db: Database,
    path: PathBuf,
    tag_in_key: bool,
}

fn db_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Database {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl Queue {
    /// Opens (creating if needed) the queue at `path`. `tag_in_key` is true in v2 mode.
    pub fn open(path: &Path, tag_in_key: bool) -> Result<Queue> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::Io {
                what: format!("creating the state directory {}", parent.display()),
                source: e,
            })?;
        }
        let db = Database::create(path).map_err(|e| Error::Database {
            path: path.to_owned(),
            reason: format!("{e} (is another soci-index-builder using this state_dir?)"),
        })?;
        let q = Queue {
            db,
            path: path.to_owned(),
            tag_in_key,
        };
        // Create the tables once so readers never meet a missing table.
        q.write(|txn| {
            let e = |x: redb::TableError| db_err(path)(&x);
            txn.open_table(JOBS).map_err(e)?;
            txn.open_table(PENDING).map_err(e)?;
            txn.open_table(OWN).map_err(e)?;
            Ok(())
        })?;
        Ok(q)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        db_err(&self.path)(&e)
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<T, Error>,
    ) -> Result<T> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let value = f(&txn)?;
        txn.commit().map_err(|e| self.err(e))?;
        Ok(value)
    }

    /// Checks the database answers a read (for `/healthz`).
    pub fn check(&self) -> Result<()> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        txn.open_table(PENDING).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Queues a job unless one with the same key is queued, running, waiting for a retry,
    /// done or skipped. A failed job is queued again with its attempts reset.
    pub fn enqueue(&self, spec: JobSpec, now: u64) -> Result<Enqueued> {
        let key = spec.key(self.tag_in_key);
        let path = self.path.clone();
        let e = move |x: &dyn std::fmt::Display| db_err(&path)(x);
        self.write(|txn| {
            let mut jobs = txn.open_table(JOBS).map_err(|x| e(&x))?;
            let existing: Option<Job> = match jobs.get(key.as_str()).map_err(|x| e(&x))? {
                Some(v) => Some(decode(&key, v.value()).map_err(|x| e(&x))?),
                None => None,
            };
            if let Some(j) = &existing {
                if j.state.blocks_duplicates() {
                    return Ok(Enqueued::Duplicate(j.state));
                }
            }
            let job = Job {
                key: key.clone(),
                spec,
                state: JobState::Queued,
                attempts: 0,
                created_ms: now,
                updated_ms: now,
                next_attempt_ms: None,
                error: None,
                summary: None,
                skip_reason: None,
            };
            jobs.insert(key.as_str(), encode(&job).as_slice())
                .map_err(|x| e(&x))?;
            txn.open_table(PENDING)
                .map_err(|x| e(&x))?
                .insert(key.as_str(), now)
                .map_err(|x| e(&x))?;
            Ok(if existing.is_some() {
                Enqueued::Requeued(job)
            } else {
                Enqueued::Queued(job)
            })
        })
    }

    /// Takes the earliest due job (`queued`, or `retry_wait` whose time has come), marks it
    /// `running` and counts the attempt.
    pub fn claim(&self, now: u64) -> Result<Claim> {
        let path = self.path.clone();
        let e = move |x: &dyn std::fmt::Display| db_err(&path)(x);
        self.write(|txn| {
            let mut pending = txn.open_table(PENDING).map_err(|x| e(&x))?;
            let mut best: Option<(u64, String)> = None;
            for row in pending.iter().map_err(|x| e(&x))? {
                let (k, due) = row.map_err(|x| e(&x))?;
                let cand = (due.value(), k.value().to_owned());
                if best.as_ref().is_none_or(|b| cand < *b) {
                    best = Some(cand);
                }
            }
            let Some((due, key)) = best else {
                return Ok(Claim::Idle(None));
            };
            if due > now {
                return Ok(Claim::Idle(Some(due)));
            }
            pending.remove(key.as_str()).map_err(|x| e(&x))?;
            let mut jobs = txn.open_table(JOBS).map_err(|x| e(&x))?;
            let mut job: Job = match jobs.get(key.as_str()).map_err(|x| e(&x))? {
                Some(v) => decode(&key, v.value()).map_err(|x| e(&x))?,
                // A pending key without its job cannot be run; dropping it keeps the queue
                // moving (it can only come from a bug, not from a crash: both are written in
                // one transaction).
                None => return Ok(Claim::Idle(Some(now))),
            };
            job.state = JobState::Running;
            job.attempts += 1;
            job.updated_ms = now;
            job.next_attempt_ms = None;
            jobs.insert(key.as_str(), encode(&job).as_slice())
                .map_err(|x| e(&x))?;
            Ok(Claim::Job(Box::new(job)))
        })
    }

    /// Records how an attempt of `key` ended and returns the job as stored.
    pub fn finish(&self, key: &str, how: Finish, retry: &RetryConfig, now: u64) -> Result<Job> {
        let path = self.path.clone();
        let e = move |x: &dyn std::fmt::Display| db_err(&path)(x);
        self.write(|txn| {
            let mut jobs = txn.open_table(JOBS).map_err(|x| e(&x))?;
            let mut job: Job = match jobs.get(key).map_err(|x| e(&x))? {
                Some(v) => decode(key, v.value()).map_err(|x| e(&x))?,
                None => return Err(Error::InvalidJob(format!("no job {key} in the queue"))),
            };
            job.updated_ms = now;
            match how {
                Finish::Published { summary, pushed } => {
                    job.state = JobState::Done;
                    job.summary = Some(summary);
                    job.error = None;
                    let mut own = txn.open_table(OWN).map_err(|x| e(&x))?;
                    for d in &pushed {
                        own.insert(d.as_str(), now).map_err(|x| e(&x))?;
                    }
                }
                Finish::Skipped(reason) => {
                    job.state = JobState::Skipped;
                    job.skip_reason = Some(reason);
                    job.error = None;
                }
                Finish::Error { message, transient } => {
                    job.error = Some(message);
                    if transient && job.attempts < retry.max_attempts {
                        let due = now.saturating_add(
                            u64::try_from(retry.backoff(job.attempts).as_millis())
                                .unwrap_or(u64::MAX),
                        );
                        job.state = JobState::RetryWait;
                        job.next_attempt_ms = Some(due);
                        txn.open_table(PENDING)
                            .map_err(|x| e(&x))?
                            .insert(key, due)
                            .map_err(|x| e(&x))?;
                    } else {
                        job.state = JobState::Failed;
                    }
                }
            }
            jobs.insert(key, encode(&job).as_slice())
                .map_err(|x| e(&x))?;
            Ok(job)
        })
    }

    /// Puts jobs left `running` (their process died) back to `queued`; returns how many.
    pub fn recover(&self, now: u64) -> Result<usize> {
        let path = self.path.clone();
        let e = move |x: &dyn std::fmt::Display| db_err(&path)(x);
        self.write(|txn| {
            let mut jobs = txn.open_table(JOBS).map_err(|x| e(&x))?;
            let mut stale = Vec::new();
            for row in jobs.iter().map_err(|x| e(&x))? {
                let (k, v) = row.map_err(|x| e(&x))?;
                let job: Job = decode(k.value(), v.value()).map_err(|x| e(&x))?;
                if job.state == JobState::Running {
                    stale.push(job);
                }
            }
            let mut pending = txn.open_table(PENDING).map_err(|x| e(&x))?;
            for mut job in stale.iter().cloned() {
                job.state = JobState::Queued;
                job.updated_ms = now;
                jobs.insert(job.key.as_str(), encode(&job).as_slice())
                    .map_err(|x| e(&x))?;
                pending.insert(job.key.as_str(), now).map_err(|x| e(&x))?;
            }
            Ok(stale.len())
        })
    }

    /// Whether the builder pushed this manifest digest itself.
    pub fn is_own(&self, digest: &str) -> Result<bool> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(OWN).map_err(|e| self.err(e))?;
        Ok(t.get(digest).map_err(|e| self.err(e))?.is_some())
    }

    /// One job by key.
    pub fn get(&self, key: &str) -> Result<Option<Job>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(JOBS).map_err(|e| self.err(e))?;
        match t.get(key).map_err(|e| self.err(e))? {
            Some(v) => Ok(Some(decode(key, v.value()).map_err(|e| self.err(e))?)),
            None => Ok(None),
        }
    }

    /// Jobs, most recently updated first, optionally in one state, at most `limit`.
    pub fn list(&self, state: Option<JobState>, limit: usize) -> Result<Vec<Job>> {
        list_jobs(&self.db, &self.path, state, limit)
    }

    /// Jobs waiting: `(queued, retry_wait)`. Reads only the pending jobs, not the history, so
    /// it stays cheap however many jobs are done.
    pub fn pending_counts(&self) -> Result<(usize, usize)> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let pending = txn.open_table(PENDING).map_err(|e| self.err(e))?;
        let jobs = txn.open_table(JOBS).map_err(|e| self.err(e))?;
        let (mut queued, mut retry_wait) = (0, 0);
        for row in pending.iter().map_err(|e| self.err(e))? {
            let (k, _) = row.map_err(|e| self.err(e))?;
            let key = k.value();
            if let Some(v) = jobs.get(key).map_err(|e| self.err(e))? {
                match decode(key, v.value()).map_err(|e| self.err(e))?.state {
                    JobState::RetryWait => retry_wait += 1,
                    _ => queued += 1,
                }
            }
        }
        Ok((queued, retry_wait))
    }

    /// Number of jobs in each state (reads every job).
    pub fn counts(&self) -> Result<Vec<(JobState, usize)>> {
        let all = self.list(None, usize::MAX)?;
        Ok(JobState::ALL
            .into_iter()
            .map(|s| (s, all.iter().filter(|j| j.state == s).count()))
            .collect())
    }
}

/// Lists jobs of a database opened read-only (`status` when no service answers; redb lets
/// only one process open a database for writing).
pub fn list_read_only(path: &Path, state: Option<JobState>, limit: usize) -> Result<Vec<Job>> {
    let open_err = |e: redb::DatabaseError| Error::Database {
        path: path.to_owned(),
        reason: format!("{e} (is a soci-index-builder service using it?)"),
    };
    match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => list_jobs(&db, path, state, limit),
        // A process killed while holding the database leaves it needing a repair, which a
        // read-only handle cannot do; the writable open repairs it (as the service's next
        // start would) and still fails if a service holds it.
        Err(redb::DatabaseError::RepairAborted) => {
            let db = Database::open(path).map_err(open_err)?;
            list_jobs(&db, path, state, limit)
        }
        Err(e) => Err(open_err(e)),
    }
}

fn list_jobs(
    db: &impl ReadableDatabase,
    path: &Path,
    state: Option<JobState>,
    limit: usize,
) -> Result<Vec<Job>> {
    let e = db_err(path);
    let txn = db.begin_read().map_err(|x| e(&x))?;
    let t = txn.open_table(JOBS).map_err(|x| e(&x))?;
    let mut out = Vec::new();
    for row in t.iter().map_err(|x| e(&x))? {
        let (k, v) = row.map_err(|x| e(&x))?;
        let job: Job = decode(k.value(), v.value()).map_err(|x| e(&x))?;
        if state.is_none_or(|s| s == job.state) {
            out.push(job);
        }
    }
    out.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(a.key.cmp(&b.key)));
    out.truncate(limit);
    Ok(out)
}

fn encode(job: &Job) -> Vec<u8> {
    // A Job is plain data (strings, numbers, options): serializing it cannot fail.
    serde_json::to_vec(job).unwrap_or_default()
}

fn decode(key: &str, bytes: &[u8]) -> std::result::Result<Job, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("job record {key} is corrupt: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn spec(tag: Option<&str>) -> JobSpec {
        JobSpec {
            host: "127.0.0.1:5000".into(),
            repository: "team/app".into(),
            digest: D1.into(),
            tag: tag.map(str::to_owned),
            source: "event".into(),
        }
    }

    fn retry() -> RetryConfig {
        RetryConfig {
            max_attempts: 3,
            initial_backoff_secs: 5,
            max_backoff_secs: 300,
        }
    }

    fn open(dir: &tempfile::TempDir, v2: bool) -> Queue {
        Queue::open(&dir.path().join("q.redb"), v2).unwrap()
    }

    #[test]
    fn dedup_by_image_in_v1_and_by_tag_in_v2() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, false);
        assert!(matches!(
            q.enqueue(spec(Some("1.0")), 1).unwrap(),
            Enqueued::Queued(_)
        ));
        assert_eq!(
            q.enqueue(spec(Some("other")), 2).unwrap(),
            Enqueued::Duplicate(JobState::Queued)
        );
        assert_eq!(
            q.enqueue(spec(None), 2).unwrap(),
            Enqueued::Duplicate(JobState::Queued)
        );
        drop(q);
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, true);
        assert!(matches!(
            q.enqueue(spec(Some("1.0")), 1).unwrap(),
            Enqueued::Queued(_)
        ));
        assert!(matches!(
            q.enqueue(spec(Some("1.1")), 1).unwrap(),
            Enqueued::Queued(_)
        ));
        assert_eq!(
            q.enqueue(spec(Some("1.0")), 1).unwrap(),
            Enqueued::Duplicate(JobState::Queued)
        );
    }

    #[test]
    fn life_of_a_job_with_retries_and_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, false);
        q.enqueue(spec(None), 1000).unwrap();
        let Claim::Job(j) = q.claim(1000).unwrap() else {
            panic!("nothing claimed")
        };
        assert_eq!((j.state, j.attempts), (JobState::Running, 1));
        assert_eq!(q.claim(1000).unwrap(), Claim::Idle(None));
        assert_eq!(
            q.enqueue(spec(None), 1).unwrap(),
            Enqueued::Duplicate(JobState::Running)
        );
        let err = |t| Finish::Error {
            message: "boom".into(),
            transient: t,
        };
        let j = q.finish(&j.key, err(true), &retry(), 2000).unwrap();
        assert_eq!(j.state, JobState::RetryWait);
        assert_eq!(q.pending_counts().unwrap(), (0, 1));
        assert_eq!(j.next_attempt_ms, Some(7000));
        assert_eq!(q.claim(6999).unwrap(), Claim::Idle(Some(7000)));
        assert_eq!(
            q.enqueue(spec(None), 1).unwrap(),
            Enqueued::Duplicate(JobState::RetryWait)
        );
        let Claim::Job(j) = q.claim(7000).unwrap() else {
            panic!("retry not claimed")
        };
        assert_eq!(j.attempts, 2);
        let j = q.finish(&j.key, err(true), &retry(), 8000).unwrap();
        assert_eq!(j.next_attempt_ms, Some(18000), "backoff doubles");
        let Claim::Job(j) = q.claim(20000).unwrap() else {
            panic!("retry not claimed")
        };
        let j = q.finish(&j.key, err(true), &retry(), 21000).unwrap();
        assert_eq!(
            (j.state, j.attempts),
            (JobState::Failed, 3),
            "attempts exhausted"
        );
        assert_eq!(j.error.as_deref(), Some("boom"));
        assert_eq!(q.claim(99999).unwrap(), Claim::Idle(None));
        // A failed job is queued again by a new request.
        let Enqueued::Requeued(j) = q.enqueue(spec(None), 30000).unwrap() else {
            panic!("failed job not requeued")
        };
        assert_eq!(j.attempts, 0);
        let Claim::Job(j) = q.claim(30000).unwrap() else {
            panic!("requeued not claimed")
        };
        let j = q.finish(&j.key, err(false), &retry(), 31000).unwrap();
        assert_eq!(
            (j.state, j.attempts),
            (JobState::Failed, 1),
            "permanent fails at once"
        );
    }

    #[test]
    fn done_records_own_manifests_and_blocks_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(&dir, false);
        q.enqueue(spec(Some("1")), 1).unwrap();
        let Claim::Job(j) = q.claim(1).unwrap() else {
            panic!()
        };
        let summary = Summary {
            indexes: vec![],
            converted: None,
            layer_bytes_read: 5,
            build_seconds: 0.5,
        };
        let own = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        let j = q
            .finish(
                &j.key,
                Finish::Published {
                    summary: summary.clone(),
                    pushed: vec![own.into()],
                },
                &retry(),
                2,
            )
            .unwrap();
        assert_eq!(j.state, JobState::Done);
        assert_eq!(j.summary, Some(summary));
        assert!(q.is_own(own).unwrap());
        assert!(!q.is_own(D1).unwrap());
        assert_eq!(
            q.enqueue(spec(Some("1")), 3).unwrap(),
            Enqueued::Duplicate(JobState::Done)
        );
        let counts = q.counts().unwrap();
        assert!(counts.contains(&(JobState::Done, 1)));
        assert_eq!(q.pending_counts().unwrap(), (0, 0));
    }

    #[test]
    fn running_jobs_are_recovered_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        {
            let q = Queue::open(&path, false).unwrap();
            q.enqueue(spec(None), 1).unwrap();
            let mut other = spec(None);
            other.digest = other.digest.replace('1', "3");
            q.enqueue(other, 2).unwrap();
            assert!(matches!(q.claim(5).unwrap(), Claim::Job(_)));
        }
        let q = Queue::open(&path, false).unwrap();
        assert_eq!(q.recover(10).unwrap(), 1);
        assert_eq!(q.list(Some(JobState::Queued), 10).unwrap().len(), 2);
        assert_eq!(q.recover(11).unwrap(), 0);
        drop(q);
        let jobs = list_read_only(&path, None, 10).unwrap();
        assert_eq!(jobs.len(), 2);
        assert!(
            jobs[0].updated_ms >= jobs[1].updated_ms,
            "most recent first"
        );
    }

    #[test]
    fn a_second_writer_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let _q = open(&dir, false);
        let err = match Queue::open(&dir.path().join("q.redb"), false) {
            Ok(_) => panic!("a second writer opened the queue"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("another soci-index-builder"), "{err}");
    }
}
