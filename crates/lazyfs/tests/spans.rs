//! The span manager over a real gzip layer (built by the test image builder, indexed with a
//! 1 MiB span size) read from a local file: request counts prove coalescing, sharing of
//! in-flight fetches and cache hits; a corrupted copy proves verification; a small budget
//! proves eviction. Registry-backed behaviour is covered by the CLI's mount tests.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use lazyfs::source::{Fetched, FileSource, SourceError, SpanSource};
use lazyfs::{CacheBudget, LayerMetrics, SpanConfig, SpanManager};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use ztoc::{BuildOptions, CompressionAlgorithm, Ztoc};

const SPAN: u64 = 1 << 20;

/// A file source that records every request (and can pretend to ignore ranges).
struct Recording {
    file: FileSource,
    path: PathBuf,
    requests: Arc<Mutex<Vec<Range<u64>>>>,
    ignore_ranges: bool,
    whole_sent: Arc<AtomicUsize>,
}

impl SpanSource for Recording {
    fn read_range(&self, range: Range<u64>) -> BoxFuture<'_, Result<Fetched, SourceError>> {
        self.requests.lock().unwrap().push(range.clone());
        Box::pin(async move {
            if self.ignore_ranges {
                self.whole_sent.fetch_add(1, Ordering::SeqCst);
                let bytes = Bytes::from(std::fs::read(&self.path)?);
                let chunks: Vec<std::io::Result<Bytes>> = bytes
                    .chunks(100_000)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect();
                return Ok(Fetched::Whole(Box::pin(futures_util::stream::iter(chunks))));
            }
            // Slow enough that concurrent readers overlap.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok(Fetched::Range(Bytes::from(self.file.read_at(range)?)))
        })
    }

    fn describe(&self) -> String {
        "test file".into()
    }
}

struct Layer {
    _dir: tempfile::TempDir,
    blob: PathBuf,
    digest: String,
    ztoc: Arc<Ztoc>,
    /// The uncompressed tar, to check bytes against.
    tar: Vec<u8>,
}

fn layer() -> Layer {
    let dir = tempfile::tempdir().unwrap();
    let built = testutil::write_oci_layout(dir.path(), "latest", &[testutil::sample_image()]);
    let digest = built[0].layers[0].digest.clone();
    let blob = dir
        .path()
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let ztoc = ztoc::build_ztoc(
        std::fs::File::open(&blob).unwrap(),
        CompressionAlgorithm::Gzip,
        &BuildOptions {
            span_size: SPAN,
            ..Default::default()
        },
    )
    .unwrap();
    let mut tar = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&blob).unwrap()),
        &mut tar,
    )
    .unwrap();
    Layer {
        _dir: dir,
        blob,
        digest,
        ztoc: Arc::new(ztoc),
        tar,
    }
}

struct Setup {
    spans: SpanManager,
    requests: Arc<Mutex<Vec<Range<u64>>>>,
    whole_sent: Arc<AtomicUsize>,
    metrics: Arc<LayerMetrics>,
}

fn manager(
    l: &Layer,
    blob: &Path,
    cache: &Path,
    budget: Arc<CacheBudget>,
    ignore_ranges: bool,
) -> Setup {
    manager_with(l, blob, cache, budget, ignore_ranges, SpanConfig::default())
}

fn manager_with(
    l: &Layer,
    blob: &Path,
    cache: &Path,
    budget: Arc<CacheBudget>,
    ignore_ranges: bool,
    config: SpanConfig,
) -> Setup {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let whole_sent = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(LayerMetrics::default());
    let source = Recording {
        file: FileSource::open(blob.to_owned()).unwrap(),
        path: blob.to_owned(),
        requests: requests.clone(),
        ignore_ranges,
        whole_sent: whole_sent.clone(),
    };
    let spans = SpanManager::new(
        l.digest.clone(),
        l.ztoc.clone(),
        Box::new(source),
        cache.to_owned(),
        config,
        metrics.clone(),
        budget,
    )
    .unwrap();
    Setup {
        spans,
        requests,
        whole_sent,
        metrics,
    }
}

fn span_start(z: &Ztoc, s: u64) -> u64 {
    z.span_uncompressed_range(s).unwrap().start
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesces_shares_and_caches_fetches() {
    let l = layer();
    assert!(l.ztoc.span_count() >= 8, "{} spans", l.ztoc.span_count());
    let cache = tempfile::tempdir().unwrap();
    let s = manager(&l, &l.blob, cache.path(), CacheBudget::new(None), false);

    // Inside one span: one request for exactly that span's compressed bytes.
    let a = span_start(&l.ztoc, 1) + 10;
    let got = s.spans.read(a..a + 1000).await.unwrap();
    assert_eq!(got, l.tar[a as usize..a as usize + 1000]);
    assert_eq!(
        s.requests.lock().unwrap().clone(),
        [l.ztoc.span_compressed_range(1).unwrap()]
    );

    // Spans 3..=5, all missing: one request covering the three.
    let b = span_start(&l.ztoc, 3) + 5..span_start(&l.ztoc, 5) + 5;
    let got = s.spans.read(b.clone()).await.unwrap();
    assert_eq!(got, l.tar[b.start as usize..b.end as usize]);
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1],
        l.ztoc.span_compressed_range(3).unwrap().start
            ..l.ztoc.span_compressed_range(5).unwrap().end
    );

    // Cached: no request.
    s.spans.read(a..a + 10).await.unwrap();
    assert_eq!(s.requests.lock().unwrap().len(), 2);

    // Ten readers of one missing span at once share one fetch.
    let c = span_start(&l.ztoc, 7);
    let readers: Vec<_> = (0..10)
        .map(|i| {
            let spans = s.spans.clone();
            tokio::spawn(async move { spans.read(c + i * 100..c + i * 100 + 50).await })
        })
        .collect();
    for (i, r) in readers.into_iter().enumerate() {
        let got = r.await.unwrap().unwrap();
        let at = (c + i as u64 * 100) as usize;
        assert_eq!(got, l.tar[at..at + 50]);
    }
    assert_eq!(s.requests.lock().unwrap().len(), 3);
    let m = s.metrics.snapshot();
    assert_eq!(m.spans_fetched, 5);
    assert_eq!(m.fetch_requests, 3);

    // Reads are answered from memory; the cache files follow off the read path.
    s.spans.cache_writes_done().await;
    // A new manager over the same cache directory (a restart) reuses what is there.
    let again = manager(&l, &l.blob, cache.path(), CacheBudget::new(None), false);
    assert_eq!(again.spans.progress().1, 5);
    let got = again.spans.read(b.clone()).await.unwrap();
    assert_eq!(got, l.tar[b.start as usize..b.end as usize]);
    assert!(again.requests.lock().unwrap().is_empty());

    // Background fill completes the layer; then everything is local.
    again.spans.background_fetch(None).await;
    assert!(again.spans.is_complete());
    let all = again
        .spans
        .read(0..l.ztoc.uncompressed_archive_size)
        .await
        .unwrap();
    assert_eq!(all, l.tar[..l.ztoc.uncompressed_archive_size as usize]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_bytes_fail_verification_and_are_never_served() {
    let l = layer();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad-blob");
    let mut bytes = std::fs::read(&l.blob).unwrap();
    let hit = l.ztoc.span_compressed_range(4).unwrap();
    let at = ((hit.start + hit.end) / 2) as usize;
    bytes[at] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    let s = manager(
        &l,
        &bad,
        &dir.path().join("cache"),
        CacheBudget::new(None),
        false,
    );

    let in4 = span_start(&l.ztoc, 4) + 1;
    let err = s.spans.read(in4..in4 + 100).await.unwrap_err();
    assert!(
        err.to_string().contains("span 4 failed verification"),
        "{err}"
    );
    assert_eq!(s.metrics.snapshot().verification_failures, 1);
    // A retry fetches again and fails again: a failure never turns into success.
    assert!(s.spans.read(in4..in4 + 100).await.is_err());
    assert_eq!(s.metrics.snapshot().verification_failures, 2);
    // Other spans are fine.
    let ok = span_start(&l.ztoc, 2);
    assert_eq!(
        s.spans.read(ok..ok + 100).await.unwrap(),
        l.tar[ok as usize..ok as usize + 100]
    );
    // Nothing of span 4 was cached.
    s.spans.cache_writes_done().await;
    assert_eq!(s.spans.progress().1, 1);
    // The background fill skips the bad span instead of retrying it forever.
    s.spans.background_fetch(None).await;
    let (total, cached) = s.spans.progress();
    assert_eq!(cached, total - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_budget_evicts_least_recently_used_spans() {
    let l = layer();
    let cache = tempfile::tempdir().unwrap();
    // Room for about three inflated spans.
    let budget = CacheBudget::new(Some(3 * SPAN + SPAN / 2));
    let s = manager(&l, &l.blob, cache.path(), budget.clone(), false);
    for span in 0..6 {
        let at = span_start(&l.ztoc, span);
        let got = s.spans.read(at..at + 4096).await.unwrap();
        assert_eq!(got, l.tar[at as usize..at as usize + 4096]);
        assert!(
            budget.used() <= budget.limit().unwrap(),
            "{} bytes used",
            budget.used()
        );
    }
    s.spans.cache_writes_done().await;
    let (_, cached) = s.spans.progress();
    assert!(cached <= 3, "{cached} spans cached");
    let files = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(files as u64, cached, "evicted spans are deleted from disk");
    // Span 0 was evicted first; reading it fetches it again, correctly.
    let before = s.requests.lock().unwrap().len();
    let got = s.spans.read(10..4106).await.unwrap();
    assert_eq!(got, l.tar[10..4106]);
    assert_eq!(s.requests.lock().unwrap().len(), before + 1);
    // The background fetcher stops at the limit instead of churning the cache.
    s.spans.background_fetch(None).await;
    assert!(!s.spans.is_complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_ranges_is_downloaded_once_and_checked() {
    let l = layer();
    let cache = tempfile::tempdir().unwrap();
    let s = manager(&l, &l.blob, cache.path(), CacheBudget::new(None), true);
    let a = span_start(&l.ztoc, 2);
    assert_eq!(
        s.spans.read(a..a + 100).await.unwrap(),
        l.tar[a as usize..a as usize + 100]
    );
    let b = span_start(&l.ztoc, 6);
    assert_eq!(
        s.spans.read(b..b + 100).await.unwrap(),
        l.tar[b as usize..b as usize + 100]
    );
    assert_eq!(s.whole_sent.load(Ordering::SeqCst), 1, "one whole download");
    assert!(cache.path().join("blob").exists());

    // A blob that is not the layer (wrong digest) is refused.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    let mut bytes = std::fs::read(&l.blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&other, &bytes).unwrap();
    let s = manager(
        &l,
        &other,
        &dir.path().join("cache"),
        CacheBudget::new(None),
        true,
    );
    let err = s.spans.read(a..a + 100).await.unwrap_err();
    assert!(err.to_string().contains("not sha256:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_reads_go_ahead_of_a_throttled_background_fetch() {
    let l = layer();
    let cache = tempfile::tempdir().unwrap();
    let s = manager(&l, &l.blob, cache.path(), CacheBudget::new(None), false);
    let total = l.ztoc.span_count();
    // About 5 MB/s: the background fill would take seconds to reach the last span.
    let background = {
        let spans = s.spans.clone();
        tokio::spawn(async move { spans.background_fetch(Some(5_000_000)).await })
    };
    while s.spans.progress().1 < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let last = total - 1;
    let at = span_start(&l.ztoc, last);
    let got = s.spans.read(at..at + 100).await.unwrap();
    assert_eq!(got, l.tar[at as usize..at as usize + 100]);
    let last_range = l.ztoc.span_compressed_range(last).unwrap();
    let position = s
        .requests
        .lock()
        .unwrap()
        .iter()
        .position(|r| r.end == last_range.end)
        .unwrap();
    assert!(
        position < (total - 1) as usize,
        "the read of the last span waited for the background fill (request #{position} of {total})"
    );
    background.await.unwrap();
    assert!(s.spans.is_complete());
    // Every span was requested once: the background fill skipped the one already read.
    assert_eq!(s.requests.lock().unwrap().len() as u64, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_fetch_keeps_off_the_link_until_the_prefetch_is_done() {
    let l = layer();
    let cache = tempfile::tempdir().unwrap();
    let s = manager(&l, &l.blob, cache.path(), CacheBudget::new(None), false);
    let total = l.ztoc.span_count();
    assert!(total > 5, "{total} spans");
    // As a mount starts them: the background fill (from span 0) as the layer is mounted,
    // the prefetch of spans 2 and 4 (two requests, not adjacent) a moment later — well
    // within the 1 s of silence the fill waits for after a mount or a read.
    let background = {
        let spans = s.spans.clone();
        tokio::spawn(async move { spans.background_fetch(None).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let prefetch = {
        let spans = s.spans.clone();
        tokio::spawn(async move { spans.prefetch_spans(vec![2, 4]).await })
    };
    prefetch.await.unwrap().unwrap();
    background.await.unwrap();
    let span_of_request = |r: &Range<u64>| {
        (0..total)
            .find(|&s| l.ztoc.span_compressed_range(s).unwrap().start == r.start)
            .unwrap()
    };
    let order: Vec<u64> = s
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(span_of_request)
        .collect();
    let mut first_two = order[..2].to_vec();
    first_two.sort_unstable();
    // Before the fix the fill started at once (no read had ever run, so the link counted as
    // quiet) and span 0 raced the prefetch; a start waited for bytes it did not need.
    assert_eq!(first_two, [2, 4], "prefetch first, alone: {order:?}");
    assert!(s.spans.is_complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_reads_go_ahead_of_a_running_prefetch() {
    let l = layer();
    let cache = tempfile::tempdir().unwrap();
    let s = manager(&l, &l.blob, cache.path(), CacheBudget::new(None), false);
    let total = l.ztoc.span_count();
    // Every span but the last, as a prefetch artifact might list them: consecutive spans,
    // which one request could carry (16 MiB cap), at 50 ms a request.
    let prefetch = {
        let spans = s.spans.clone();
        tokio::spawn(async move { spans.prefetch_spans((0..total - 1).collect()).await })
    };
    while s.requests.lock().unwrap().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    // The container starts and reads the last span, which the prefetch does not have.
    let last = total - 1;
    let at = span_start(&l.ztoc, last);
    let before = s.requests.lock().unwrap().len();
    let got = s.spans.read(at..at + 100).await.unwrap();
    let during = s.requests.lock().unwrap().len() - before;
    assert_eq!(got, l.tar[at as usize..at as usize + 100]);
    prefetch.await.unwrap().unwrap();
    assert!(s.spans.is_complete());
    // While the read ran, the prefetch started nothing new (its own request, and at most one
    // prefetch request that was let go just as the read began).
    assert!(during <= 2, "{during} requests started during the read");
    // Prefetch requests are small, so the one a read may wait for is short: at most
    // PREFETCH_REQUEST_BYTES, or one span when a span is larger.
    let span_bytes = |r: &Range<u64>| {
        (0..total)
            .filter(|&sp| {
                let c = l.ztoc.span_compressed_range(sp).unwrap();
                c.start >= r.start && c.end <= r.end
            })
            .count()
    };
    for r in s.requests.lock().unwrap().iter() {
        let len = r.end - r.start;
        assert!(
            len <= lazyfs::spans::PREFETCH_REQUEST_BYTES || span_bytes(r) == 1,
            "a {len} byte request of {} spans",
            span_bytes(r)
        );
    }
    assert!(s.requests.lock().unwrap().len() as u64 >= total / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_small_file_fetches_the_whole_file_in_one_request() {
    let l = layer();
    let cache = tempfile::tempdir().unwrap();
    let s = manager(&l, &l.blob, cache.path(), CacheBudget::new(None), false);
    // A "file" of 2000 bytes across the boundary of spans 2 and 3.
    let boundary = span_start(&l.ztoc, 3);
    let file = boundary - 1000..boundary + 1000;
    let head = file.start..file.start + 100;
    let got = s
        .spans
        .read_file_range(head.clone(), file.clone())
        .await
        .unwrap();
    assert_eq!(got, l.tar[head.start as usize..head.end as usize]);
    let whole = l.ztoc.span_compressed_range(2).unwrap().start
        ..l.ztoc.span_compressed_range(3).unwrap().end;
    assert_eq!(s.requests.lock().unwrap().clone(), [whole]);
    // Its tail, in the other span, needs no request of its own.
    let tail = boundary + 500..file.end;
    let got = s.spans.read_file_range(tail.clone(), file).await.unwrap();
    assert_eq!(got, l.tar[tail.start as usize..tail.end as usize]);
    assert_eq!(s.requests.lock().unwrap().len(), 1);

    // A file larger than the limit is fetched only where it is read.
    let boundary = span_start(&l.ztoc, 6);
    let big = boundary - lazyfs::WHOLE_FILE_BYTES..boundary + 10;
    let head = big.start..big.start + 100;
    let got = s.spans.read_file_range(head.clone(), big).await.unwrap();
    assert_eq!(got, l.tar[head.start as usize..head.end as usize]);
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1], l.ztoc.span_compressed_range(5).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_answered_from_memory_when_the_cache_cannot_be_written() {
    let l = layer();
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("layer");
    let s = manager(&l, &l.blob, &dir, CacheBudget::new(None), false);
    // The cache directory disappears under the manager: no span file can be written.
    std::fs::remove_dir_all(&dir).unwrap();
    let a = span_start(&l.ztoc, 2) + 10..span_start(&l.ztoc, 4) + 10;
    let got = s.spans.read(a.clone()).await.unwrap();
    assert_eq!(got, l.tar[a.start as usize..a.end as usize]);
    s.spans.cache_writes_done().await;
    // Nothing was cached, so the next read fetches again, and is still right.
    assert_eq!(s.spans.progress().1, 0);
    let got = s.spans.read(a.clone()).await.unwrap();
    assert_eq!(got, l.tar[a.start as usize..a.end as usize]);
    assert_eq!(s.requests.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetch_fetches_in_the_order_given() {
    let l = layer();
    let cache = tempfile::tempdir().unwrap();
    // One prefetch request at a time, so the order is exact.
    let config = SpanConfig {
        prefetch_queue: Arc::new(lazyfs::prefetch_queue::PrefetchQueue::new(1)),
        ..SpanConfig::default()
    };
    let s = manager_with(
        &l,
        &l.blob,
        cache.path(),
        CacheBudget::new(None),
        false,
        config,
    );
    // What a workload read first, first: 6, then 2-3 (one request: under
    // PREFETCH_REQUEST_BYTES), then 0; 3 repeats.
    s.spans.prefetch_spans(vec![6, 2, 3, 3, 0]).await.unwrap();
    let c = |a: u64, b: u64| {
        l.ztoc.span_compressed_range(a).unwrap().start..l.ztoc.span_compressed_range(b).unwrap().end
    };
    assert_eq!(
        s.requests.lock().unwrap().clone(),
        [c(6, 6), c(2, 3), c(0, 0)]
    );
    // Spans that follow each other only in offset, not in the order given, are not merged.
    s.spans.prefetch_spans(vec![8, 7]).await.unwrap();
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs[3..], [c(8, 8), c(7, 7)]);
}

/// Ranges a recording source was asked for.
type Requests = Arc<Mutex<Vec<Range<u64>>>>;

/// The layer served from its lean zTOC (windows of `inline` carried in it), with the full
/// zTOC in a file read through a recording source; returns the setup and the zTOC source's
/// requests.
fn lean_manager(
    l: &Layer,
    cache: &Path,
    inline: &[u64],
    ztoc_file: &Path,
    ignore_ranges: bool,
) -> (Setup, Requests, Arc<AtomicUsize>) {
    let full = ztoc::encode(&l.ztoc);
    if !ztoc_file.exists() {
        std::fs::write(ztoc_file, &full).unwrap();
    }
    let inline = inline.iter().copied().collect();
    let lean = ztoc::lean::decode_lean(&ztoc::lean::encode_lean(&full, &inline).unwrap(), u64::MAX)
        .unwrap();
    let layer = Layer {
        _dir: tempfile::tempdir().unwrap(),
        blob: l.blob.clone(),
        digest: l.digest.clone(),
        ztoc: Arc::new(lean.ztoc),
        tar: Vec::new(),
    };
    let s = manager(&layer, &l.blob, cache, CacheBudget::new(None), false);
    let window_requests = Arc::new(Mutex::new(Vec::new()));
    let whole_sent = Arc::new(AtomicUsize::new(0));
    let source = Recording {
        file: FileSource::open(ztoc_file.to_owned()).unwrap(),
        path: ztoc_file.to_owned(),
        requests: window_requests.clone(),
        ignore_ranges,
        whole_sent: whole_sent.clone(),
    };
    let spans = s
        .spans
        .clone()
        .with_windows(lazyfs::windows::WindowSource::new(
            lean.windows,
            Box::new(source),
        ));
    (Setup { spans, ..s }, window_requests, whole_sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_layer_fetches_only_the_windows_it_cannot_make() {
    let l = layer();
    let dir = tempfile::tempdir().unwrap();
    let ztoc_file = dir.path().join("ztoc");
    let (s, windows, _) = lean_manager(&l, &dir.path().join("cache"), &[6], &ztoc_file, false);
    let check =
        |got: Vec<u8>, r: &Range<u64>| assert_eq!(got, l.tar[r.start as usize..r.end as usize]);

    // Span 3 after nothing: its window comes from the full zTOC, one 32 KiB request.
    let r = span_start(&l.ztoc, 3) + 10..span_start(&l.ztoc, 3) + 5000;
    check(s.spans.read(r.clone()).await.unwrap(), &r);
    let first = windows.lock().unwrap().clone();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].end - first[0].start, 32768);

    // Span 4 follows a local span: its window is made from span 3's bytes.
    let r = span_start(&l.ztoc, 4)..span_start(&l.ztoc, 4) + 70_000;
    check(s.spans.read(r.clone()).await.unwrap(), &r);
    // Span 6's window is carried inline.
    let r = span_start(&l.ztoc, 6) + 1..span_start(&l.ztoc, 6) + 2;
    check(s.spans.read(r.clone()).await.unwrap(), &r);
    assert_eq!(windows.lock().unwrap().len(), 1);

    // A run of missing spans in one request: the first's window is fetched, each later one
    // is made from the span before it as that is inflated.
    let r = span_start(&l.ztoc, 8) + 3..l.ztoc.uncompressed_archive_size;
    check(s.spans.read(r.clone()).await.unwrap(), &r);
    assert_eq!(windows.lock().unwrap().len(), 2);
    let m = s.metrics.snapshot();
    assert_eq!(m.windows_fetched, 2);
    assert!(m.windows_made >= 2, "{m:?}");

    // Filling the rest in span order needs no window from the zTOC: each span's is made
    // from the one before it.
    s.spans.background_fetch(None).await;
    assert!(s.spans.is_complete());
    check(
        s.spans
            .read(0..l.ztoc.uncompressed_archive_size)
            .await
            .unwrap(),
        &(0..l.ztoc.uncompressed_archive_size),
    );
    assert_eq!(windows.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_window_is_never_used_the_spans_before_it_make_it() {
    let l = layer();
    let dir = tempfile::tempdir().unwrap();
    let ztoc_file = dir.path().join("ztoc");
    let mut full = ztoc::encode(&l.ztoc);
    // Flip a byte of span 3's window where it sits in the full zTOC.
    let lean = ztoc::lean::decode_lean(
        &ztoc::lean::encode_lean(&full, &Default::default()).unwrap(),
        u64::MAX,
    )
    .unwrap();
    let at = lean.windows.range(3).unwrap().start as usize + 20_000;
    full[at] ^= 0x40;
    std::fs::write(&ztoc_file, &full).unwrap();
    let (s, windows, _) = lean_manager(&l, &dir.path().join("cache"), &[], &ztoc_file, false);
    // The window fails its digest, so span 2 is fetched (its own window from the zTOC,
    // intact) and span 3's window is made from it: the bytes are right, not a guess.
    let a = span_start(&l.ztoc, 3);
    assert_eq!(
        s.spans.read(a..a + 100).await.unwrap(),
        l.tar[a as usize..a as usize + 100]
    );
    let fetched: Vec<u64> = windows.lock().unwrap().iter().map(|r| r.start).collect();
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    assert!(s.spans.is_range_cached(span_start(&l.ztoc, 2)..a));

    // With the zTOC gone altogether, reads walk back to checkpoint 0 and still succeed.
    std::fs::write(&ztoc_file, b"").unwrap();
    let again = tempfile::tempdir().unwrap();
    let (s, _, _) = lean_manager(&l, again.path(), &[], &ztoc_file, false);
    let b = span_start(&l.ztoc, 5) + 7;
    assert_eq!(
        s.spans.read(b..b + 10).await.unwrap(),
        l.tar[b as usize..b as usize + 10]
    );
    // Every span before it was fetched to make the windows.
    assert!(s.spans.is_range_cached(0..span_start(&l.ztoc, 5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ztoc_source_without_ranges_is_downloaded_once_for_its_windows() {
    let l = layer();
    let dir = tempfile::tempdir().unwrap();
    let ztoc_file = dir.path().join("ztoc");
    let (s, _, whole_sent) = lean_manager(&l, &dir.path().join("cache"), &[], &ztoc_file, true);
    for span in [2, 5, 7] {
        let a = span_start(&l.ztoc, span);
        assert_eq!(
            s.spans.read(a..a + 10).await.unwrap(),
            l.tar[a as usize..a as usize + 10]
        );
    }
    assert_eq!(whole_sent.load(Ordering::SeqCst), 1);
    assert_eq!(s.metrics.snapshot().windows_fetched, 3);
}
