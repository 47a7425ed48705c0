//! The span manager of one layer: turns reads of the uncompressed tar stream into span
//! fetches, verifies and inflates them, and keeps the result in a local disk cache.
//!
//! Reads name byte ranges of the *uncompressed* layer. Each range maps to spans; spans already
//! on disk are read from there, missing ones are fetched with one Range request per run of
//! adjacent missing spans (capped in size), at most `fetch_concurrency` requests at a time.
//! Two readers wanting the same span share one fetch. A span's compressed bytes are checked
//! against the zTOC's digest before they are inflated: a reader never sees an unverified byte.

use crate::error::{Error, Result};
use crate::metrics::LayerMetrics;
use crate::source::{Fetched, FileSource, SpanSource};
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use ztoc::{SpanId, Ztoc};

/// Error shared by every reader waiting on the same fetch.
pub type SharedError = Arc<Error>;

/// How many span files are kept open per layer (sequential readers stay within one span for
/// many reads, so a handful is plenty).
const OPEN_SPAN_FILES: usize = 8;

/// Compressed bytes per prefetch request: small enough that an on-demand read arriving while
/// one is in flight waits a few tens of milliseconds at 200 Mbit/s, not a whole run.
pub const PREFETCH_REQUEST_BYTES: u64 = 2 << 20;

/// Default [`SpanConfig::whole_file_bytes`]: Python modules, shared objects of libraries and
/// configuration files are mostly below it and read whole once opened, while a large file
/// (a model, an archive) is read only where the process looks.
pub const WHOLE_FILE_BYTES: u64 = 1 << 20;

/// Name of the whole blob kept when a registry ignores Range requests.
const WHOLE_BLOB: &str = "blob";

/// Tunables of a [`SpanManager`].
#[derive(Debug, Clone)]
pub struct SpanConfig {
    /// Range requests in flight at once for this layer.
    pub fetch_concurrency: usize,
    /// Adjacent missing spans are merged into one request up to this many compressed bytes.
    pub max_request_bytes: u64,
    /// On-demand reads, shared by every layer built from clones of this config.
    pub activity: Arc<DemandActivity>,
    /// The order of prefetch requests, shared by every layer built from clones of this
    /// config: lowest rank first across layers, a few at a time.
    pub prefetch_queue: Arc<crate::prefetch_queue::PrefetchQueue>,
    /// The background fetcher starts a request only after this long without on-demand reads
    /// in any layer sharing `activity`.
    pub background_silence: Duration,
    /// A read of a file at most this large (uncompressed) fetches the file's other missing
    /// spans too, in the same requests: its next reads find them local.
    pub whole_file_bytes: u64,
}

impl Default for SpanConfig {
    fn default() -> Self {
        SpanConfig {
            fetch_concurrency: 4,
            max_request_bytes: 16 << 20,
            activity: Arc::new(DemandActivity::default()),
            prefetch_queue: Arc::default(),
            background_silence: Duration::from_secs(1),
            whole_file_bytes: WHOLE_FILE_BYTES,
        }
    }
}

/// On-demand read activity of several layers (the layers of one mount or one daemon), so that
/// no layer's background fetcher uses the network while any container is reading. A start-up
/// reads in bursts with short gaps; a background request slipped into a gap delays the next
/// read by a whole span's transfer, and on a slow link that adds up to most of the start.
#[derive(Debug, Default)]
pub struct DemandActivity {
    in_flight: AtomicUsize,
    /// Prefetches running: background fetches wait for them too, on-demand reads do not.
    prefetching: AtomicUsize,
    last_end: Mutex<Option<Instant>>,
}

impl DemandActivity {
    fn begin(&self) -> ActivityGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        ActivityGuard(self, &self.in_flight)
    }

    fn begin_prefetch(&self) -> ActivityGuard<'_> {
        self.prefetching.fetch_add(1, Ordering::SeqCst);
        ActivityGuard(self, &self.prefetching)
    }

    /// Returns once no on-demand read is running (prefetch requests go between reads).
    async fn demand_clear(&self) {
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Counts as the end of a read now: a layer just mounted gets the same silence before
    /// background fetches start as a burst of reads does, so they do not take the link
    /// while the container that mounted it is still starting.
    fn touch(&self) {
        *lock(&self.last_end) = Some(Instant::now());
    }

    /// How long no on-demand read has been running (`None` while one is; a long time when
    /// none ever ran).
    pub fn quiet_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::SeqCst) > 0 || self.prefetching.load(Ordering::SeqCst) > 0
        {
            return None;
        }
        Some(lock(&self.last_end).map_or(Duration::MAX, |t| t.elapsed()))
    }
}

/// Ends one on-demand read (or prefetch, by the counter it holds) of a [`DemandActivity`].
struct ActivityGuard<'a>(&'a DemandActivity, &'a AtomicUsize);

impl Drop for ActivityGuard<'_> {
    fn drop(&mut self) {
        *lock(&self.0.last_end) = Some(Instant::now());
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Inflated bytes of a span from its first byte, in the pieces inflate produced them.
#[derive(Clone, Default)]
struct Inflated {
    chunks: Vec<Bytes>,
    len: u64,
}

impl Inflated {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len() as u64;
        self.chunks.push(chunk);
    }

    /// Copies the bytes at `from` (span offset) into all of `dest`; false when they are not
    /// all here.
    fn copy_to(&self, from: u64, dest: &mut [u8]) -> bool {
        if from.saturating_add(dest.len() as u64) > self.len {
            return false;
        }
        let (mut at, mut done) = (0u64, 0usize);
        for chunk in &self.chunks {
            let end = at + chunk.len() as u64;
            let want = from + done as u64;
            if done < dest.len() && want < end {
                let a = (want - at) as usize;
                let n = (chunk.len() - a).min(dest.len() - done);
                dest[done..done + n].copy_from_slice(&chunk[a..a + n]);
                done += n;
            }
            at = end;
        }
        done == dest.len()
    }

    /// Bytes `a..b` (span offsets) when they lie inside one piece: no copy needed.
    fn slice(&self, a: u64, b: u64) -> Option<&[u8]> {
        let mut at = 0u64;
        for chunk in &self.chunks {
            let end = at + chunk.len() as u64;
            if a >= at && b <= end {
                return chunk.get((a - at) as usize..(b - at) as usize);
            }
            at = end;
        }
        None
    }
}

/// What a span's readers see of its fetch: the bytes inflated so far (verified before any
/// was inflated), and once it ends, whether it worked. A reader is answered as soon as the
/// bytes it asked for are inflated, while the rest of the span still inflates; and the bytes
/// come with the news, so it is answered even if the span leaves memory (its cache write
/// failed, or it was evicted) before it looks.
#[derive(Clone, Default)]
struct Progress {
    inflated: Inflated,
    outcome: Option<std::result::Result<(), SharedError>>,
}

/// Spans a read waited for, with the bytes their fetches delivered.
type Delivered = Vec<(SpanId, Arc<Inflated>)>;

/// Pieces a span is inflated and handed to its readers in (a kernel read is 128 KiB).
const INFLATE_PIECE: usize = 128 << 10;

enum SpanState {
    Missing,
    /// A fetch is running; its outcome will be published here.
    Fetching(watch::Receiver<Progress>),
    /// Verified and inflated, served from memory while its cache file is written: a reader
    /// never waits for the disk. `pins` and `last_used` as for `Cached`, which it becomes.
    Fresh {
        data: Arc<Inflated>,
        last_used: u64,
        pins: u32,
    },
    /// On disk. `pins` counts reads copying from it right now (eviction skips it);
    /// `last_used` orders eviction.
    Cached {
        last_used: u64,
        pins: u32,
    },
}

impl SpanState {
    fn cached(last_used: u64) -> Self {
        SpanState::Cached { last_used, pins: 0 }
    }

    /// True when a read can be answered without a fetch (from memory or from disk).
    fn is_available(&self) -> bool {
        matches!(self, SpanState::Fresh { .. } | SpanState::Cached { .. })
    }
}

/// The disk budget shared by every layer of a process: when inflated spans exceed the limit,
/// the least recently used spans that no read is copying from are deleted (they are fetched
/// again if read later).
pub struct CacheBudget {
    limit: Option<u64>,
    used: AtomicU64,
    clock: AtomicU64,
    layers: Mutex<Vec<std::sync::Weak<Inner>>>,
}

impl CacheBudget {
    /// A budget of `limit` bytes of inflated spans (`None`: unlimited).
    pub fn new(limit: Option<u64>) -> Arc<Self> {
        Arc::new(CacheBudget {
            limit,
            used: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            layers: Mutex::new(Vec::new()),
        })
    }

    /// Bytes of spans on disk, as counted by this process.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// The limit, if any.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// True when `more` bytes would not fit without evicting.
    pub(crate) fn is_full_for(&self, more: u64) -> bool {
        self.limit
            .is_some_and(|l| self.used().saturating_add(more) > l)
    }

    pub(crate) fn add(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::SeqCst);
        self.make_room();
    }

    /// Evicts least recently used, unpinned spans until usage is 90% of the limit.
    fn make_room(&self) {
        let Some(limit) = self.limit else {
            return;
        };
        if self.used() <= limit {
            return;
        }
        let target = limit / 10 * 9;
        let layers: Vec<Arc<Inner>> = {
            let mut registered = lock(&self.layers);
            registered.retain(|w| w.strong_count() > 0);
            registered.iter().filter_map(|w| w.upgrade()).collect()
        };
        let mut candidates = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let states = lock(&layer.states);
            for (span, st) in states.iter().enumerate() {
                if let SpanState::Cached { last_used, pins: 0 } = st {
                    candidates.push((*last_used, i, span as SpanId));
                }
            }
        }
        candidates.sort_unstable();
        for (_, i, span) in candidates {
            if self.used() <= target {
                break;
            }
            let layer = &layers[i];
            if let Some(bytes) = layer.evict(span) {
                self.used.fetch_sub(bytes, Ordering::SeqCst);
            }
        }
    }
}

/// Serves uncompressed byte ranges of one layer through its zTOC.
#[derive(Clone)]
pub struct SpanManager {
    inner: Arc<Inner>,
}

struct Inner {
    layer: String,
    ztoc: Arc<Ztoc>,
    source: Box<dyn SpanSource>,
    cache_dir: PathBuf,
    config: SpanConfig,
    states: Mutex<Vec<SpanState>>,
    fetch_slots: Semaphore,
    /// The whole blob on local disk, once a range-less registry forced a full download.
    whole_blob: tokio::sync::Mutex<Option<FileSource>>,
    open_files: Mutex<VecDeque<(SpanId, Arc<SpanFile>)>>,
    metrics: Arc<LayerMetrics>,
    budget: Arc<CacheBudget>,
    /// Spans served from memory whose cache file is still being written.
    writes_pending: AtomicUsize,
    writes_done: tokio::sync::Notify,
    /// For a layer served from a lean zTOC: where the windows it lacks are fetched.
    windows: std::sync::OnceLock<crate::windows::WindowSource>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind, still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spans pinned against eviction while a read copies from them, with the in-memory bytes of
/// those still being written to the cache.
struct Pins<'a> {
    inner: &'a Inner,
    first: SpanId,
    /// Per span from `first`: its bytes when they are in memory (`None`: on disk).
    memory: Vec<Option<Arc<Inflated>>>,
    /// Per span from `first`: whether its state's pin count was raised (and is lowered on
    /// drop); a span read only from delivered bytes holds no pin.
    pinned: Vec<bool>,
}

impl Pins<'_> {
    /// The last span pinned.
    fn last(&self) -> SpanId {
        self.first + (self.memory.len() as u64).saturating_sub(1)
    }

    /// The in-memory bytes of `span`, if it was not on disk yet when pinned.
    fn memory(&self, span: SpanId) -> Option<&Arc<Inflated>> {
        let i = span.checked_sub(self.first)? as usize;
        self.memory.get(i).and_then(Option::as_ref)
    }
}

impl Drop for Pins<'_> {
    fn drop(&mut self) {
        let mut states = lock(&self.inner.states);
        for (s, pinned) in (self.first..).zip(&self.pinned) {
            if !pinned {
                continue;
            }
            if let Some(SpanState::Cached { pins, .. } | SpanState::Fresh { pins, .. }) =
                states.get_mut(s as usize)
            {
                *pins = pins.saturating_sub(1);
            }
        }
    }
}

/// The fetch of one span, owned by whoever is producing it: hands inflated pieces to the
/// waiting readers and publishes the outcome exactly once. Dropped unpublished (a task that
/// panicked or was cancelled), it marks the span missing again and tells the waiters, so no
/// reader waits forever.
struct SpanFetch {
    inner: Arc<Inner>,
    span: SpanId,
    tx: Option<watch::Sender<Progress>>,
}

impl SpanFetch {
    /// Hands the next inflated piece of the span to its readers.
    fn piece(&self, chunk: Bytes) {
        if let Some(tx) = &self.tx {
            tx.send_modify(|p| p.inflated.push(chunk));
        }
    }

    /// Ends the fetch: on success the span becomes `Fresh` from the pieces handed over (and
    /// they are returned, to be written to the cache), on error missing again; either way
    /// its readers are woken.
    fn publish(mut self, outcome: std::result::Result<(), SharedError>) -> Option<Arc<Inflated>> {
        let tx = self.tx.take()?;
        let data = outcome
            .is_ok()
            .then(|| Arc::new(tx.borrow().inflated.clone()));
        {
            let mut states = lock(&self.inner.states);
            if let Some(slot) = states.get_mut(self.span as usize) {
                *slot = match &data {
                    Some(data) => SpanState::Fresh {
                        data: data.clone(),
                        last_used: self.inner.budget.tick(),
                        pins: 0,
                    },
                    None => SpanState::Missing,
                };
            }
        }
        tx.send_modify(|p| p.outcome = Some(outcome));
        data
    }
}

impl Drop for SpanFetch {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let abandoned = Error::Abandoned {
                layer: self.inner.layer.clone(),
                first: self.span,
                last: self.span,
            };
            if let Some(slot) = lock(&self.inner.states).get_mut(self.span as usize) {
                *slot = SpanState::Missing;
            }
            tx.send_modify(|p| p.outcome = Some(Err(Arc::new(abandoned))));
        }
    }
}

impl SpanManager {
    /// Creates the manager of layer `layer` (its digest, for logs and errors), caching
    /// inflated spans under `cache_dir`. Spans already in the cache from an earlier run are
    /// reused when their size is right; leftovers of interrupted writes are removed.
    pub fn new(
        layer: String,
        ztoc: Arc<Ztoc>,
        source: Box<dyn SpanSource>,
        cache_dir: PathBuf,
        config: SpanConfig,
        metrics: Arc<LayerMetrics>,
        budget: Arc<CacheBudget>,
    ) -> Result<Self> {
        let cache_error = |path: &Path, source| Error::Cache {
            layer: layer.clone(),
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&cache_dir).map_err(|e| cache_error(&cache_dir, e))?;
        let mut found_bytes = 0u64;
        let mut states: Vec<SpanState> =
            (0..ztoc.span_count()).map(|_| SpanState::Missing).collect();
        for entry in std::fs::read_dir(&cache_dir).map_err(|e| cache_error(&cache_dir, e))? {
            let entry = entry.map_err(|e| cache_error(&cache_dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(writer) = name.strip_prefix(".tmp.") {
                // Another process (a mount and `soci cat` share the cache) may be writing
                // this span right now: only leftovers of dead writers are removed.
                let pid = writer
                    .rsplit('.')
                    .next()
                    .and_then(|p| p.parse::<u32>().ok());
                if !pid.is_some_and(process_alive) {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            let Ok(span) = name.parse::<SpanId>() else {
                continue;
            };
            let expected = ztoc
                .span_uncompressed_range(span)
                .map(|r| r.end - r.start)
                .ok();
            let actual = entry.metadata().map(|m| m.len()).ok();
            match (expected, actual) {
                (Some(e), Some(a)) if e == a => {
                    states[span as usize] = SpanState::cached(0);
                    found_bytes += a;
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let whole = FileSource::open(cache_dir.join(WHOLE_BLOB)).ok();
        let inner = Arc::new(Inner {
            layer,
            fetch_slots: Semaphore::new(config.fetch_concurrency.max(1)),
            ztoc,
            source,
            cache_dir,
            config,
            states: Mutex::new(states),
            whole_blob: tokio::sync::Mutex::new(whole),
            open_files: Mutex::new(VecDeque::new()),
            metrics,
            budget: budget.clone(),
            writes_pending: AtomicUsize::new(0),
            writes_done: tokio::sync::Notify::new(),
            windows: std::sync::OnceLock::new(),
        });
        lock(&budget.layers).push(Arc::downgrade(&inner));
        budget.add(found_bytes);
        Ok(SpanManager { inner })
    }

    /// Serves the layer from a lean zTOC (`ztoc::lean`): the checkpoint windows its zTOC
    /// lacks are made from the uncompressed bytes before each span when those are local or
    /// on their way, and fetched from the full zTOC through `windows` otherwise.
    pub fn with_windows(self, windows: crate::windows::WindowSource) -> Self {
        let _ = self.inner.windows.set(windows);
        self
    }

    /// The layer's zTOC.
    pub fn ztoc(&self) -> &Arc<Ztoc> {
        &self.inner.ztoc
    }

    /// The layer's counters.
    pub fn metrics(&self) -> &Arc<LayerMetrics> {
        &self.inner.metrics
    }

    /// The layer digest this manager serves.
    pub fn layer(&self) -> &str {
        &self.inner.layer
    }

    /// Number of spans in the layer, and how many are on local disk.
    pub fn progress(&self) -> (u64, u64) {
        let states = lock(&self.inner.states);
        let cached = states.iter().filter(|s| s.is_available()).count();
        (states.len() as u64, cached as u64)
    }

    /// Where this layer's spans are cached.
    pub fn cache_dir(&self) -> &Path {
        &self.inner.cache_dir
    }

    /// The tunables this layer was made with.
    pub fn config(&self) -> &SpanConfig {
        &self.inner.config
    }

    /// The disk budget this layer counts against.
    pub(crate) fn budget(&self) -> &Arc<CacheBudget> {
        &self.inner.budget
    }

    /// True when every span holding uncompressed bytes `range` is on local disk (an empty or
    /// out-of-layer range counts as local).
    pub fn is_range_cached(&self, range: Range<u64>) -> bool {
        match self.clip(range) {
            Ok(Some((_, first, last))) => self.all_cached(first, last),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// True once every span is on local disk: reads no longer touch the network.
    pub fn is_complete(&self) -> bool {
        let (total, cached) = self.progress();
        total == cached
    }

    /// Reads uncompressed bytes `range` of the layer (clipped to its size), fetching what is
    /// missing. Meant for async callers; FUSE threads use [`SpanManager::read_blocking`].
    pub async fn read(&self, range: Range<u64>) -> std::result::Result<Vec<u8>, SharedError> {
        self.read_claiming(range.clone(), range).await
    }

    /// Like [`SpanManager::read`] for a read of a file whose data is `file` (uncompressed
    /// offsets of the layer): when the file is at most [`SpanConfig::whole_file_bytes`], its
    /// missing spans are fetched along with the read's, in the same requests, so its later
    /// reads do not wait on the network. The read is answered as soon as its own spans are in.
    pub async fn read_file_range(
        &self,
        range: Range<u64>,
        file: Range<u64>,
    ) -> std::result::Result<Vec<u8>, SharedError> {
        self.read_claiming(range, file).await
    }

    async fn read_claiming(
        &self,
        range: Range<u64>,
        file: Range<u64>,
    ) -> std::result::Result<Vec<u8>, SharedError> {
        let Some((range, first, last)) = self.clip(range)? else {
            return Ok(Vec::new());
        };
        let claim = self.claim_for(first, last, file)?;
        let _demand = self.inner.config.activity.begin();
        let mut hit = true;
        // Eviction may remove a span between the fetch and the copy; fetch it again then.
        for _ in 0..3 {
            let (was_local, delivered) =
                self.ensure_claiming(first, last, range.end, claim).await?;
            hit &= was_local;
            if let Some(pins) = self.pin(first, last, &delivered) {
                self.inner.metrics.record_span_read(hit);
                let bytes = self.copy_out(range, &pins).map_err(Arc::new)?;
                self.inner.metrics.record_served(bytes.len() as u64);
                return Ok(bytes);
            }
        }
        Err(Arc::new(Error::Abandoned {
            layer: self.inner.layer.clone(),
            first,
            last,
        }))
    }

    /// Pins spans `first..=last` if each is available or was `delivered` to this read:
    /// eviction leaves them alone until the returned guard is dropped.
    fn pin(&self, first: SpanId, last: SpanId, delivered: &Delivered) -> Option<Pins<'_>> {
        let given = |s: SpanId| delivered.iter().find(|(d, _)| *d == s).map(|(_, b)| b);
        let mut states = lock(&self.inner.states);
        let usable = |s: SpanId| {
            given(s).is_some() || states.get(s as usize).is_some_and(SpanState::is_available)
        };
        if !(first..=last).all(usable) {
            return None;
        }
        let now = self.inner.budget.tick();
        let mut memory = Vec::with_capacity((last - first + 1) as usize);
        let mut pinned = Vec::with_capacity((last - first + 1) as usize);
        for s in first..=last {
            let (bytes, pin) = match states.get_mut(s as usize) {
                Some(SpanState::Cached { last_used, pins }) => {
                    *last_used = now;
                    *pins += 1;
                    (None, true)
                }
                Some(SpanState::Fresh {
                    data,
                    last_used,
                    pins,
                }) => {
                    *last_used = now;
                    *pins += 1;
                    (Some(data.clone()), true)
                }
                _ => (None, false),
            };
            // Bytes delivered to this read are used before any copy on disk.
            memory.push(given(s).cloned().or(bytes));
            pinned.push(pin);
        }
        Some(Pins {
            inner: &self.inner,
            first,
            memory,
            pinned,
        })
    }

    /// The spans whose missing ones a read of spans `first..=last` of a file with data
    /// `file` fetches: the whole file's when it is small, else just the read's.
    fn claim_for(
        &self,
        first: SpanId,
        last: SpanId,
        file: Range<u64>,
    ) -> std::result::Result<(SpanId, SpanId), SharedError> {
        if file.end.saturating_sub(file.start) > self.inner.config.whole_file_bytes {
            return Ok((first, last));
        }
        Ok(match self.clip(file)? {
            Some((_, a, b)) => (a.min(first), b.max(last)),
            None => (first, last),
        })
    }

    /// Waits until every span served from memory so far is also in the cache on disk (reads
    /// never wait for this; a restart finds those spans there afterwards).
    pub async fn cache_writes_done(&self) {
        loop {
            let done = self.inner.writes_done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.inner.writes_pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }

    /// Like [`SpanManager::read`], from a thread outside the runtime, into `buf` (grown when
    /// too small, never shrunk, so a thread's buffer is allocated and zeroed once); returns how
    /// many bytes of `buf` hold the data. Cached spans are read straight from disk, and only a
    /// miss enters the runtime to fetch.
    pub fn read_blocking(
        &self,
        runtime: &tokio::runtime::Handle,
        range: Range<u64>,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<usize, SharedError> {
        self.read_blocking_claiming(runtime, range.clone(), range, buf)
    }

    /// [`SpanManager::read_blocking`] of a read of a file with data `file` (see
    /// [`SpanManager::read_file_range`]).
    fn read_blocking_claiming(
        &self,
        runtime: &tokio::runtime::Handle,
        range: Range<u64>,
        file: Range<u64>,
        buf: &mut Vec<u8>,
    ) -> std::result::Result<usize, SharedError> {
        let Some((clipped, first, last)) = self.clip(range.clone())? else {
            return Ok(0);
        };
        let n = (clipped.end - clipped.start) as usize;
        if buf.len() < n {
            buf.resize(n, 0);
        }
        if let Some(pins) = self.pin(first, last, &Vec::new()) {
            if self.copy_into(clipped, &pins, &mut buf[..n]).is_ok() {
                self.inner.metrics.record_span_read(true);
                self.inner.metrics.record_served(n as u64);
                return Ok(n);
            }
        }
        let bytes = runtime.block_on(self.read_claiming(range, file))?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    /// Fetches every span holding any of `ranges` (uncompressed offsets), in parallel.
    pub async fn prefetch(&self, ranges: &[Range<u64>]) -> std::result::Result<(), SharedError> {
        let mut spans = Vec::new();
        for r in ranges {
            if let Some((_, first, last)) = self.clip(r.clone())? {
                spans.extend(first..=last);
            }
        }
        self.prefetch_spans(spans).await
    }

    /// Fetches spans by id in the order given (ids past the last span and repeats are
    /// ignored): [`SpanManager::prefetch_ranked`] with every span of one rank.
    pub async fn prefetch_spans(&self, spans: Vec<SpanId>) -> std::result::Result<(), SharedError> {
        self.prefetch_ranked(spans.into_iter().map(|s| (s, 0)).collect())
            .await
    }

    /// Fetches spans by id, each with its rank (a prefetch artifact's priorities: the
    /// position of the read it serves in the image's read list), in the order given; ids
    /// past the last span and repeats are ignored. Ids that follow each other are merged
    /// into requests of up to [`PREFETCH_REQUEST_BYTES`], and each request waits for its
    /// turn in the [`SpanConfig::prefetch_queue`] every layer shares (lowest rank first,
    /// whichever layer it is in), then until no on-demand read is running: a container
    /// that starts while its prefetch runs is never queued behind it, so a prefetch costs
    /// a start no more time than reading lazily would.
    pub async fn prefetch_ranked(
        &self,
        mut spans: Vec<(SpanId, i64)>,
    ) -> std::result::Result<(), SharedError> {
        // Background fetches keep off the link until the prefetch is done.
        let activity = &self.inner.config.activity;
        let queue = &self.inner.config.prefetch_queue;
        let _prefetching = activity.begin_prefetch();
        let count = self.inner.ztoc.span_count();
        let mut seen = std::collections::HashSet::new();
        spans.retain(|(s, _)| *s < count && seen.insert(*s));
        let requests = self.prefetch_requests(&spans);
        let results =
            futures_util::future::join_all(requests.into_iter().map(|(a, b, rank)| async move {
                let _turn = queue.turn(rank).await;
                activity.demand_clear().await;
                self.ensure(a, b).await
            }))
            .await;
        results.into_iter().try_for_each(|r| r.map(|_| ()))
    }

    /// Runs of consecutive spans (ids in fetch order) of at most [`PREFETCH_REQUEST_BYTES`]
    /// each (a longer span is a run of its own), with the rank of their first span.
    fn prefetch_requests(&self, spans: &[(SpanId, i64)]) -> Vec<(SpanId, SpanId, i64)> {
        let size = |s: SpanId| {
            self.inner
                .ztoc
                .span_compressed_range(s)
                .map_or(0, |r| r.end - r.start)
        };
        let mut runs: Vec<(SpanId, SpanId, i64, u64)> = Vec::new();
        for &(s, rank) in spans {
            match runs.last_mut() {
                Some((_, last, _, bytes))
                    if *last + 1 == s && *bytes + size(s) <= PREFETCH_REQUEST_BYTES =>
                {
                    *last = s;
                    *bytes += size(s);
                }
                _ => runs.push((s, s, rank, size(s))),
            }
        }
        runs.into_iter()
            .map(|(a, b, rank, _)| (a, b, rank))
            .collect()
    }

    /// Fetches the rest of the layer in span order, at most `rate` compressed bytes per second
    /// (unlimited when `None`), pausing whenever an on-demand read is in progress. Failed
    /// fetches are retried with a growing pause, spans that fail verification are skipped;
    /// returns when every span was tried, or at the cache limit.
    pub async fn background_fetch(&self, rate: Option<u64>) {
        let total = self.inner.ztoc.span_count();
        let mut span = 0;
        let mut backoff = Duration::from_millis(500);
        self.inner.config.activity.touch();
        while span < total {
            let silence = self.inner.config.background_silence;
            loop {
                match self.inner.config.activity.quiet_for() {
                    Some(quiet) if quiet >= silence => break,
                    Some(quiet) => tokio::time::sleep(silence - quiet).await,
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            if self.all_cached(span, span) {
                span += 1;
                continue;
            }
            let span_bytes = self
                .inner
                .ztoc
                .span_uncompressed_range(span)
                .map_or(0, |r| r.end - r.start);
            if self.inner.budget.is_full_for(span_bytes) {
                // Filling the cache further would only evict what readers use.
                tracing::info!(layer = %self.inner.layer, span, "span cache limit reached; background fetch stops here");
                return;
            }
            let started = Instant::now();
            match self.ensure(span, span).await {
                Ok(_) => {
                    backoff = Duration::from_millis(500);
                    if let (Some(rate), Ok(r)) = (rate, self.inner.ztoc.span_compressed_range(span))
                    {
                        let budget =
                            Duration::from_secs_f64((r.end - r.start) as f64 / rate as f64);
                        if let Some(wait) = budget.checked_sub(started.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    span += 1;
                }
                // Bytes that do not match the zTOC will not match on the next try either:
                // leave the span to on-demand reads (which fail with EIO) and go on.
                Err(e)
                    if matches!(
                        *e,
                        Error::Verification { .. } | Error::Inflate { .. } | Error::Ztoc { .. }
                    ) =>
                {
                    tracing::error!(layer = %self.inner.layer, span, "background fetch skips the span: {e}");
                    span += 1;
                }
                Err(e) => {
                    tracing::warn!(layer = %self.inner.layer, span, "background fetch failed, retrying in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        if self.is_complete() {
            tracing::info!(layer = %self.inner.layer, "layer complete: every span is on local disk");
        }
    }

    fn clip(
        &self,
        range: Range<u64>,
    ) -> std::result::Result<Option<(Range<u64>, SpanId, SpanId)>, SharedError> {
        let size = self.inner.ztoc.uncompressed_archive_size;
        let range = range.start.min(size)..range.end.min(size);
        if range.start >= range.end {
            return Ok(None);
        }
        let (first, last) = self
            .inner
            .ztoc
            .spans_for_range(&range)
            .map_err(|e| Arc::new(self.inner.ztoc_error(e)))?;
        Ok(Some((range, first, last)))
    }

    fn all_cached(&self, first: SpanId, last: SpanId) -> bool {
        let states = lock(&self.inner.states);
        (first..=last).all(|s| states.get(s as usize).is_some_and(SpanState::is_available))
    }

    /// Makes spans `first..=last` available. Returns true when they already were.
    async fn ensure(&self, first: SpanId, last: SpanId) -> std::result::Result<bool, SharedError> {
        let (hit, _) = self
            .ensure_claiming(first, last, u64::MAX, (first, last))
            .await?;
        Ok(hit)
    }

    /// Makes the bytes of spans `first..=last` up to uncompressed offset `until` available,
    /// starting fetches for the missing spans of `claim` as well (adjacent missing spans share
    /// a request, up to `max_request_bytes`), but waiting only for those bytes: a span being
    /// inflated is waited for only until it has reached `until`. Returns whether the spans
    /// already were available, and the bytes of those it waited for.
    async fn ensure_claiming(
        &self,
        first: SpanId,
        last: SpanId,
        until: u64,
        claim: (SpanId, SpanId),
    ) -> std::result::Result<(bool, Delivered), SharedError> {
        let (claim_first, claim_last) = (claim.0.min(first), claim.1.max(last));
        let count = self.inner.ztoc.span_count();
        if claim_last >= count {
            return Err(Arc::new(self.inner.ztoc_error(ztoc::Error::NoSuchSpan {
                span: claim_last,
                count,
            })));
        }
        let mut waits = Vec::new();
        // Runs of adjacent missing spans: first span, and one sender per span.
        let mut runs: Vec<(SpanId, Vec<watch::Sender<Progress>>)> = Vec::new();
        {
            let mut states = lock(&self.inner.states);
            let mut open_run = false;
            for span in claim_first..=claim_last {
                let wanted = (first..=last).contains(&span);
                let Some(state) = states.get_mut(span as usize) else {
                    break;
                };
                match state {
                    SpanState::Fresh { .. } | SpanState::Cached { .. } => open_run = false,
                    SpanState::Fetching(rx) => {
                        if wanted {
                            waits.push((span, rx.clone()));
                        }
                        open_run = false;
                    }
                    SpanState::Missing => {
                        let (tx, rx) = watch::channel(Progress::default());
                        if wanted {
                            waits.push((span, rx.clone()));
                        }
                        *state = SpanState::Fetching(rx);
                        let max = self.inner.config.max_request_bytes;
                        match runs.last_mut() {
                            Some((start, senders))
                                if open_run && self.inner.compressed_len(*start, span) <= max =>
                            {
                                senders.push(tx)
                            }
                            _ => {
                                runs.push((span, vec![tx]));
                                open_run = true;
                            }
                        }
                    }
                }
            }
        }
        for (start, senders) in runs {
            let fetches = (start..)
                .zip(senders)
                .map(|(span, tx)| SpanFetch {
                    inner: self.inner.clone(),
                    span,
                    tx: Some(tx),
                })
                .collect();
            // A task of its own, so the fetch completes (and its waiters hear about it) even
            // if the reader that started it goes away.
            tokio::spawn(self.inner.clone().fetch_run(start, fetches));
        }
        let hit = waits.is_empty();
        let mut delivered = Vec::with_capacity(waits.len());
        let abandoned = || {
            Arc::new(Error::Abandoned {
                layer: self.inner.layer.clone(),
                first,
                last,
            })
        };
        for (span, mut rx) in waits {
            let (need, whole) = self
                .inner
                .ztoc
                .span_uncompressed_range(span)
                .map_or((0, true), |r| {
                    (until.min(r.end).saturating_sub(r.start), until >= r.end)
                });
            // A reader of the whole span waits for its end, so the span is available after.
            let progress = rx
                .wait_for(|p| p.outcome.is_some() || (!whole && p.inflated.len >= need))
                .await
                .map_err(|_| abandoned())?;
            let worked = progress.outcome.as_ref().is_none_or(|o| o.is_ok());
            if progress.inflated.len >= need && (worked || !whole) {
                delivered.push((span, Arc::new(progress.inflated.clone())));
                continue;
            }
            return Err(match &progress.outcome {
                Some(Err(e)) => e.clone(),
                _ => Arc::new(self.inner.short_span(span, progress.inflated.len as usize)),
            });
        }
        Ok((hit, delivered))
    }

    /// The open file of `span` if it is cached (no fetch).
    fn cached_span_file(&self, span: SpanId) -> Option<Arc<SpanFile>> {
        if !self.all_cached(span, span) {
            return None;
        }
        self.inner.open_span(span).ok()
    }

    /// Copies `range` out of the pinned spans.
    fn copy_out(&self, range: Range<u64>, pins: &Pins<'_>) -> Result<Vec<u8>> {
        let mut out = vec![0u8; (range.end - range.start) as usize];
        self.copy_into(range, pins, &mut out)?;
        Ok(out)
    }

    /// Copies `range` into `out` (exactly its length) from the pinned spans: from memory for
    /// those still being written to the cache, else from their cache files.
    fn copy_into(&self, range: Range<u64>, pins: &Pins<'_>, out: &mut [u8]) -> Result<()> {
        for span in pins.first..=pins.last() {
            let sr = self
                .inner
                .ztoc
                .span_uncompressed_range(span)
                .map_err(|e| self.inner.ztoc_error(e))?;
            let a = range.start.max(sr.start);
            let b = range.end.min(sr.end);
            if a >= b {
                continue;
            }
            let dest = &mut out[(a - range.start) as usize..(b - range.start) as usize];
            if let Some(data) = pins.memory(span) {
                if !data.copy_to(a - sr.start, dest) {
                    return Err(self.inner.short_span(span, data.len as usize));
                }
                continue;
            }
            let file = self.inner.open_span(span)?;
            // pread, not the mapping: a page fault on a cold mapping reads ahead around it,
            // which small random reads pay for in latency.
            std::os::unix::fs::FileExt::read_exact_at(&file.file, dest, a - sr.start)
                .map_err(|e| self.inner.cache_error(&self.inner.span_path(span), e))?;
            if out.len() >= SEQUENTIAL_READ {
                self.read_ahead(span, &file, b - sr.start, sr.end - b);
            }
        }
        Ok(())
    }

    /// Large reads come from kernel readahead of a sequential reader: start reading the rest
    /// of this span (and the next, near its end) from disk now, so the following requests find
    /// it in memory instead of waiting on the disk.
    fn read_ahead(&self, span: SpanId, file: &SpanFile, from: u64, rest: u64) {
        advise_willneed(&file.file, from, rest);
        if rest < (SEQUENTIAL_READ * 8) as u64 {
            if let Some(next) = self.cached_span_file(span + 1) {
                advise_willneed(&next.file, 0, self.inner.config.max_request_bytes);
            }
        }
    }

    /// Calls `f` with the uncompressed bytes `range` (clipped to the layer), fetching what is
    /// missing. A large range inside one cached span is handed over straight from the span
    /// file's memory mapping, without a copy (the FUSE read path); otherwise the bytes are
    /// gathered in `buf` as [`SpanManager::read_blocking`] does.
    ///
    /// `file` is the data of the file being read (see [`SpanManager::read_file_range`]).
    pub fn with_bytes<R>(
        &self,
        runtime: &tokio::runtime::Handle,
        range: Range<u64>,
        file: Range<u64>,
        buf: &mut Vec<u8>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::result::Result<R, SharedError> {
        let Some((clipped, first, last)) = self.clip(range.clone())? else {
            return Ok(f(&[]));
        };
        // Only large (readahead-driven, sequential) reads use the mapping; see `copy_into`.
        if first == last && clipped.end - clipped.start >= SEQUENTIAL_READ as u64 {
            if let Some(pins) = self.pin(first, last, &Vec::new()) {
                let sr = self
                    .inner
                    .ztoc
                    .span_uncompressed_range(first)
                    .map_err(|e| Arc::new(self.inner.ztoc_error(e)))?;
                let (a, b) = (clipped.start - sr.start, clipped.end - sr.start);
                if let Some(bytes) = pins.memory(first).and_then(|data| data.slice(a, b)) {
                    self.inner.metrics.record_span_read(true);
                    self.inner.metrics.record_served(bytes.len() as u64);
                    return Ok(f(bytes));
                }
                if let Ok(file) = self.inner.open_span(first) {
                    if let Some(bytes) = file.map.get(a as usize..b as usize) {
                        self.read_ahead(first, &file, b, sr.end - clipped.end);
                        self.inner.metrics.record_span_read(true);
                        self.inner.metrics.record_served(bytes.len() as u64);
                        return Ok(f(bytes));
                    }
                }
            }
        }
        let n = self.read_blocking_claiming(runtime, range, file, buf)?;
        Ok(f(&buf[..n]))
    }
}

impl Inner {
    fn ztoc_error(&self, source: ztoc::Error) -> Error {
        Error::Ztoc {
            layer: self.layer.clone(),
            source,
        }
    }

    fn cache_error(&self, path: &Path, source: std::io::Error) -> Error {
        Error::Cache {
            layer: self.layer.clone(),
            path: path.display().to_string(),
            source,
        }
    }

    fn span_path(&self, span: SpanId) -> PathBuf {
        self.cache_dir.join(span.to_string())
    }

    /// Compressed bytes of spans `first..=last`.
    fn compressed_len(&self, first: SpanId, last: SpanId) -> u64 {
        match (
            self.ztoc.span_compressed_range(first),
            self.ztoc.span_compressed_range(last),
        ) {
            (Ok(a), Ok(b)) => b.end.saturating_sub(a.start),
            _ => u64::MAX,
        }
    }

    fn open_span(&self, span: SpanId) -> Result<Arc<SpanFile>> {
        let mut open = lock(&self.open_files);
        if let Some(pos) = open.iter().position(|(s, _)| *s == span) {
            let entry = open.remove(pos).expect("position is in range");
            let file = entry.1.clone();
            open.push_front(entry);
            return Ok(file);
        }
        let path = self.span_path(span);
        let file = File::open(&path).map_err(|e| self.cache_error(&path, e))?;
        // Populated at once: replies are written to /dev/fuse straight from the mapping, and
        // the kernel copies them with a fast page-table walk that needs every page mapped.
        // Otherwise it falls back to a slow walk that fails when the process has a kill
        // pending, and ends the request with EIO instead of letting the FUSE keeper's next
        // manager answer it: a reader would see an error from a crash it should never notice.
        //
        // SAFETY: span files are never modified or truncated once renamed into place (a span
        // is rewritten through a new file and rename; eviction unlinks), so the mapping can
        // never change or shrink under a reader.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }
            .map_err(|e| self.cache_error(&path, e))?;
        let file = Arc::new(SpanFile { file, map });
        open.push_front((span, file.clone()));
        open.truncate(OPEN_SPAN_FILES);
        Ok(file)
    }

    /// Fetches the spans of `fetches` (consecutive, from `first`) with one request, then
    /// verifies and inflates each on a blocking thread of its own, so independent spans
    /// inflate on all cores and each span's readers are answered as soon as it is ready.
    ///
    /// A span whose window the zTOC lacks (lean) resumes from a window found by
    /// [`Inner::window_for`]: the first span's comes beside the run's bytes, each later one
    /// from the span before it once that is inflated.
    async fn fetch_run(self: Arc<Self>, first: SpanId, fetches: Vec<SpanFetch>) {
        let last = first + (fetches.len() as u64).saturating_sub(1);
        let (fetched, first_window) =
            tokio::join!(self.fetch_compressed(first, last), self.window_for(first));
        let (base, bytes) = match fetched {
            Err(e) => {
                let e = Arc::new(e);
                for fetch in fetches {
                    fetch.publish(Err(e.clone()));
                }
                return;
            }
            Ok(fetched) => fetched,
        };
        let mut first_window = Some(first_window);
        for fetch in fetches {
            let window = match first_window.take() {
                Some(w) => w,
                None => self.window_for(fetch.span).await,
            };
            match window {
                Err(e) => {
                    fetch.publish(Err(Arc::new(e)));
                }
                Ok(window) => {
                    let this = self.clone();
                    let bytes = bytes.clone();
                    tokio::task::spawn_blocking(move || {
                        this.store_span(fetch, window.as_deref().map(Vec::as_slice), base, &bytes)
                    });
                }
            }
        }
    }

    /// The window span `span` resumes from when the zTOC lacks it (a lean zTOC's): made from
    /// the uncompressed bytes before the span when they are local or being fetched, else
    /// fetched from the full zTOC and checked against its digest. `None`: the zTOC has it.
    async fn window_for(self: &Arc<Self>, span: SpanId) -> Result<Option<Arc<Vec<u8>>>> {
        let Some(source) = self.windows.get() else {
            return Ok(None);
        };
        let ztoc::Checkpoints::Gzip(zinfo) = &self.ztoc.compression.checkpoints else {
            return Ok(None);
        };
        let Some(checkpoint) = zinfo.checkpoints.get(span as usize) else {
            return Err(self.ztoc_error(ztoc::Error::NoSuchSpan {
                span,
                count: zinfo.checkpoints.len() as u64,
            }));
        };
        if checkpoint.window.len() == ztoc::WINDOW_SIZE {
            return Ok(None);
        }
        let out = checkpoint.uncompressed_offset;
        if let Some(window) = self.window_from_local(out).await {
            self.metrics.record_window(false, 0);
            return Ok(Some(Arc::new(window)));
        }
        match source.fetch(span).await {
            Ok((window, received)) => {
                self.metrics.record_window(true, received);
                Ok(Some(Arc::new(window)))
            }
            Err(e) => {
                // The zTOC is damaged, gone or unreachable: the spans before this one are
                // still verified by their digests, and their bytes make the window.
                let e = e.into_error(&self.layer, span);
                tracing::warn!(layer = %self.layer, span, "{e}; making the window from the spans before it");
                self.window_from_fetched(out)
                    .await
                    .map(|w| Some(Arc::new(w)))
            }
        }
    }

    /// The window of a checkpoint at `out` from the spans before it, fetched for this when
    /// missing (each needing its own window, found the same way, back to checkpoint 0 at
    /// worst). Boxed: it reaches `window_for` again through the fetches it starts.
    fn window_from_fetched(
        self: &Arc<Self>,
        out: u64,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<u8>>> {
        let this = self.clone();
        Box::pin(async move {
            let source = ztoc::lean::window_source_range(out);
            let manager = SpanManager {
                inner: this.clone(),
            };
            let preceding = manager
                .read(source.clone())
                .await
                .map_err(|e| this.window_error(source.start, e.to_string()))?;
            ztoc::lean::window_from_preceding(out, &preceding)
                .ok_or_else(|| this.window_error(source.start, "too few bytes before it".into()))
        })
    }

    /// A window that could not be made from the bytes at `at` before its span.
    fn window_error(&self, at: u64, message: String) -> Error {
        Error::Inflate {
            layer: self.layer.clone(),
            span: self.ztoc.span_of(at).unwrap_or(0),
            message: format!("no checkpoint window: {message}"),
        }
    }

    /// The window of a checkpoint at uncompressed offset `out`, from the spans holding the
    /// 32 KiB before it, when each is available or being fetched (then it is waited for).
    /// `None` when one is missing, failed or was evicted meanwhile.
    async fn window_from_local(self: &Arc<Self>, out: u64) -> Option<Vec<u8>> {
        let source = ztoc::lean::window_source_range(out);
        let (first, last) = self.ztoc.spans_for_range(&source).ok()?;
        for span in first..=last {
            let pending = match lock(&self.states).get(span as usize)? {
                SpanState::Missing => return None,
                SpanState::Fetching(rx) => Some(rx.clone()),
                SpanState::Fresh { .. } | SpanState::Cached { .. } => None,
            };
            if let Some(mut rx) = pending {
                let progress = rx.wait_for(|p| p.outcome.is_some()).await.ok()?;
                if !progress.outcome.as_ref().is_some_and(|o| o.is_ok()) {
                    return None;
                }
            }
        }
        let manager = SpanManager {
            inner: self.clone(),
        };
        let pins = manager.pin(first, last, &Vec::new())?;
        let preceding = manager.copy_out(source, &pins).ok()?;
        ztoc::lean::window_from_preceding(out, &preceding)
    }

    /// The compressed bytes of spans `first..=last` (one request, within a fetch slot), and
    /// the blob offset they start at.
    async fn fetch_compressed(&self, first: SpanId, last: SpanId) -> Result<(u64, Bytes)> {
        let _slot = self
            .fetch_slots
            .acquire()
            .await
            .map_err(|_| Error::Abandoned {
                layer: self.layer.clone(),
                first,
                last,
            })?;
        let start = self
            .ztoc
            .span_compressed_range(first)
            .map_err(|e| self.ztoc_error(e))?
            .start;
        let end = self
            .ztoc
            .span_compressed_range(last)
            .map_err(|e| self.ztoc_error(e))?
            .end;
        let started = Instant::now();
        let (bytes, from_network) = match self.fetch_bytes(start..end).await {
            Ok(b) => b,
            Err(message) => {
                self.metrics.record_fetch_error();
                let err = Error::Fetch {
                    layer: self.layer.clone(),
                    first,
                    last,
                    start,
                    end,
                    message,
                };
                tracing::error!(layer = %self.layer, first, last, source = %self.source.describe(), "{err}");
                return Err(err);
            }
        };
        tracing::debug!(layer = %self.layer, first, last, bytes = bytes.len(), elapsed = ?started.elapsed(), "fetched");
        if from_network {
            self.metrics
                .record_fetch(bytes.len() as u64, last - first + 1, started.elapsed());
        } else {
            // Read from the whole blob already on disk: no request, no bytes fetched.
            self.metrics.record_local_spans(last - first + 1);
        }
        Ok((start, bytes))
    }

    /// Compressed bytes `range`, from the local whole blob if there is one, else the source.
    /// Also says whether the bytes came over the network as asked (a range request); the
    /// whole-blob download records itself.
    async fn fetch_bytes(&self, range: Range<u64>) -> std::result::Result<(Bytes, bool), String> {
        let local = self.whole_blob.lock().await.clone();
        if let Some(local) = local {
            return Ok((read_local(local, range).await?, false));
        }
        match self.source.read_range(range.clone()).await {
            Ok(Fetched::Range(bytes)) => Ok((bytes, true)),
            Ok(Fetched::Whole(stream)) => {
                let local = self.download_whole(stream).await?;
                Ok((read_local(local, range).await?, false))
            }
            Err(e) => Err(registry::error_chain(e.as_ref())),
        }
    }

    /// Keeps the whole blob a range-less registry sent (once per layer), checked against the
    /// layer digest, so later spans are read from local disk.
    async fn download_whole(
        &self,
        mut stream: futures_util::stream::BoxStream<'static, std::io::Result<Bytes>>,
    ) -> std::result::Result<FileSource, String> {
        let mut slot = self.whole_blob.lock().await;
        if let Some(local) = slot.as_ref() {
            // Another fetch finished the download while this one waited.
            return Ok(local.clone());
        }
        let started = Instant::now();
        tracing::warn!(layer = %self.layer, source = %self.source.describe(), size = self.ztoc.compressed_archive_size,
            "the registry does not support Range requests; downloading the whole layer once");
        let part = self
            .cache_dir
            .join(format!(".tmp.{WHOLE_BLOB}.{}", std::process::id()));
        let mut file =
            std::fs::File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        let mut hasher = ztoc::sha256::Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading the blob: {e}"))?;
            size += chunk.len() as u64;
            if size > self.ztoc.compressed_archive_size {
                let _ = std::fs::remove_file(&part);
                return Err(format!(
                    "the blob is larger than the {} bytes the zTOC records",
                    self.ztoc.compressed_archive_size
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| format!("{}: {e}", part.display()))?;
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if digest != self.layer {
            let _ = std::fs::remove_file(&part);
            return Err(format!(
                "the downloaded blob has digest {digest} ({size} bytes), not {}",
                self.layer
            ));
        }
        let path = self.cache_dir.join(WHOLE_BLOB);
        std::fs::rename(&part, &path).map_err(|e| format!("{}: {e}", path.display()))?;
        self.metrics.record_fetch(size, 0, started.elapsed());
        let local =
            FileSource::open(path.clone()).map_err(|e| format!("{}: {e}", path.display()))?;
        *slot = Some(local.clone());
        Ok(local)
    }

    /// Verifies one span of a fetched run (`bytes` start at blob offset `base`), inflates it
    /// piece by piece to its readers (each answered once its bytes are in), then writes it to
    /// the cache, off their path.
    fn store_span(&self, fetch: SpanFetch, window: Option<&[u8]>, base: u64, bytes: &[u8]) {
        let span = fetch.span;
        // Counted from before the first reader can be answered until the cache file is
        // written (or not), so `cache_writes_done` never returns between the two.
        self.writes_pending.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let inflated = self.verified_slice(span, base, bytes).and_then(|slice| {
            let verified = started.elapsed();
            let inflated = self.inflate_pieces(&fetch, window, slice);
            tracing::debug!(layer = %self.layer, span, ?verified, elapsed = ?started.elapsed(), "verified and inflated");
            inflated
        });
        match inflated {
            Err(e) => {
                fetch.publish(Err(Arc::new(e)));
            }
            Ok(()) => {
                if let Some(data) = fetch.publish(Ok(())) {
                    self.persist(span, &data);
                }
            }
        }
        self.writes_pending.fetch_sub(1, Ordering::SeqCst);
        self.writes_done.notify_waiters();
    }

    /// Writes a span served from memory to the cache; it is `Cached` after, or missing again
    /// if the write failed (readers holding its bytes keep them; later ones fetch again).
    fn persist(&self, span: SpanId, data: &Inflated) {
        let written = self.write_span(span, data);
        {
            let mut states = lock(&self.states);
            if let Some(state) = states.get_mut(span as usize) {
                if let SpanState::Fresh {
                    last_used, pins, ..
                } = *state
                {
                    *state = match &written {
                        Ok(()) => SpanState::Cached { last_used, pins },
                        Err(_) => SpanState::Missing,
                    };
                }
            }
        }
        match written {
            // Not under the states lock: making room locks every layer's states.
            Ok(()) => self.budget.add(data.len),
            Err(e) => {
                tracing::warn!(layer = %self.layer, span, "span served from memory, not cached: {e}")
            }
        }
    }

    /// The compressed bytes of `span` within a fetched run, checked against its digest.
    fn verified_slice<'b>(&self, span: SpanId, base: u64, bytes: &'b [u8]) -> Result<&'b [u8]> {
        let r = self
            .ztoc
            .span_compressed_range(span)
            .map_err(|e| self.ztoc_error(e))?;
        let slice = r
            .start
            .checked_sub(base)
            .and_then(|a| bytes.get(a as usize..(r.end - base) as usize))
            .ok_or_else(|| Error::Verification {
                layer: self.layer.clone(),
                span,
                message: format!("the fetched bytes do not cover {}-{}", r.start, r.end),
            })?;
        if let Err(e) = self.ztoc.verify_span(span, slice) {
            self.metrics.record_verification_failure();
            let err = Error::Verification {
                layer: self.layer.clone(),
                span,
                message: e.to_string(),
            };
            tracing::error!(layer = %self.layer, span, source = %self.source.describe(), "{err}");
            return Err(err);
        }
        Ok(slice)
    }

    /// Inflates a verified span (from `window` when the zTOC lacks the span's), handing each
    /// piece to the fetch's readers as it comes.
    fn inflate_pieces(&self, fetch: &SpanFetch, window: Option<&[u8]>, slice: &[u8]) -> Result<()> {
        let span = fetch.span;
        let mut len = 0u64;
        ztoc::inflate_span_with(&self.ztoc, span, window, slice, INFLATE_PIECE, |piece| {
            len += piece.len() as u64;
            fetch.piece(Bytes::from(piece));
        })
        .map_err(|e| Error::Inflate {
            layer: self.layer.clone(),
            span,
            message: e.to_string(),
        })?;
        let expected = self
            .ztoc
            .span_uncompressed_range(span)
            .map_or(0, |r| r.end - r.start);
        if len != expected {
            return Err(self.short_span(span, len as usize));
        }
        Ok(())
    }

    /// A span whose inflated bytes do not fill its uncompressed range.
    fn short_span(&self, span: SpanId, len: usize) -> Error {
        let expected = self
            .ztoc
            .span_uncompressed_range(span)
            .map_or(0, |r| r.end - r.start);
        Error::Inflate {
            layer: self.layer.clone(),
            span,
            message: format!("inflated to {len} bytes, expected {expected}"),
        }
    }

    /// Writes a span file atomically: a reader sees the whole span or none.
    fn write_span(&self, span: SpanId, data: &Inflated) -> Result<()> {
        let tmp = self
            .cache_dir
            .join(format!(".tmp.{span}.{}", std::process::id()));
        let path = self.span_path(span);
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            for chunk in &data.chunks {
                file.write_all(chunk)?;
            }
            Ok(())
        };
        write().map_err(|e| self.cache_error(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| self.cache_error(&path, e))?;
        Ok(())
    }

    /// Deletes a cached span no read is using; returns its size.
    fn evict(&self, span: SpanId) -> Option<u64> {
        let mut states = lock(&self.states);
        match states.get(span as usize) {
            Some(SpanState::Cached { pins: 0, .. }) => {}
            _ => return None,
        }
        let path = self.span_path(span);
        let size = std::fs::metadata(&path).map(|m| m.len()).ok()?;
        std::fs::remove_file(&path).ok()?;
        states[span as usize] = SpanState::Missing;
        drop(states);
        lock(&self.open_files).retain(|(s, _)| *s != span);
        tracing::debug!(layer = %self.layer, span, size, "evicted from the span cache");
        Some(size)
    }
}

/// An open, memory-mapped span file.
struct SpanFile {
    file: File,
    map: memmap2::Mmap,
}

/// Reads at least this large are taken as part of a sequential scan.
const SEQUENTIAL_READ: usize = 128 << 10;

/// Asks the kernel to start reading `len` bytes at `offset` of `file` in the background.
fn advise_willneed(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return;
    }
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

pub(crate) fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid == std::process::id() || unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

async fn read_local(local: FileSource, range: Range<u64>) -> std::result::Result<Bytes, String> {
    tokio::task::spawn_blocking(move || local.read_at(range))
        .await
        .map_err(|e| e.to_string())?
        .map(Bytes::from)
        .map_err(|e| format!("reading the local blob: {e}"))
}
