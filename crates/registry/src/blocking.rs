//! Blocking bridges over async byte sources, for synchronous code (the zTOC builder, the
//! layer unpacker, `soci ztoc get-file`) that runs off a tokio runtime's worker threads:
//! [`ChannelReader`] reads a stream that a task on the runtime pulls into a bounded channel,
//! [`RangeReader`] is a `Read + Seek` view of a registry blob fetched with Range requests,
//! [`chunked_blob_reader`] downloads a blob in pieces over several connections at once and
//! reads it in order.

use crate::client::Repository;
use crate::error::Result;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci::{Descriptor, Digest};
use std::io::{Read, Seek, SeekFrom};
use tokio::runtime::Handle;

/// Chunks in flight between the task pulling a stream and the reader: the network keeps
/// flowing while the reader works, within a bounded amount of memory.
const CHANNEL_CHUNKS: usize = 64;

/// Smallest Range request [`RangeReader`] makes: readers of zTOC spans ask for small pieces,
/// and one round trip per piece would dominate.
const MIN_RANGE_READ: u64 = 1 << 20;

/// A blocking reader over `stream`, which a task spawned on `handle` pulls into a bounded
/// channel; the task stops at the first error (handed to the reader) or when the reader is
/// dropped.
pub fn spawn_reader<S>(handle: &Handle, stream: S) -> ChannelReader
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    spawn_reader_with_slots(handle, stream, CHANNEL_CHUNKS)
}

/// [`spawn_reader`] with a channel of `slots` chunks: what it may hold ahead of the reader
/// is `slots` times the stream's chunk size.
fn spawn_reader_with_slots<S>(handle: &Handle, stream: S, slots: usize) -> ChannelReader
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(slots.max(1));
    handle.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            // The reader hung up (it failed or is done): stop fetching.
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    ChannelReader::new(rx)
}

/// Starts streaming blob `desc` from `repo` and returns a blocking reader over it. Call it on
/// the runtime (it waits for the registry's answer); read it off the runtime's threads.
pub async fn blob_reader(repo: &Repository, desc: &Descriptor) -> Result<ChannelReader> {
    let blob = repo.get_blob(desc.digest()).await?;
    Ok(spawn_reader(&Handle::current(), blob.stream))
}

/// How [`chunked_blob_reader`] splits a download.
#[derive(Debug, Clone)]
pub struct ChunkedDownload {
    /// Bytes per Range request.
    pub chunk_size: u64,
    /// Requests of this blob in flight at once.
    pub concurrency: usize,
    /// Limits shared with other downloads (all images, one image): each request holds one
    /// permit of each while it runs.
    pub permits: Vec<std::sync::Arc<tokio::sync::Semaphore>>,
}

/// Tries per piece of a chunked download: a connection that breaks mid-piece is resumed by
/// asking for that piece's range again (on another connection), after a short pause that
/// grows with each try.
const PIECE_ATTEMPTS: u32 = 5;
/// Pause before the second try of a piece; doubled for each further one.
const PIECE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Starts downloading blob `desc` from `repo` in pieces of `how.chunk_size` bytes, up to
/// `how.concurrency` Range requests at once, and returns a blocking reader that sees the
/// blob's bytes in order (pieces that arrive early wait, at most `concurrency` of them, so
/// at most `concurrency + 2` pieces are in memory whatever the link's speed). A
/// piece whose transfer fails is asked for again (its range only), up to five times. A blob
/// of one piece, one connection, or a registry that ignores Range requests is streamed as
/// one download. The bytes are not checked here: the reader's consumer checks the digest.
/// Call it on the runtime; read it off the runtime's threads.
pub async fn chunked_blob_reader(
    repo: &Repository,
    desc: &Descriptor,
    how: ChunkedDownload,
) -> Result<ChannelReader> {
    let size = desc.size();
    let chunk = how.chunk_size.max(1);
    let held = hold_permits(&how.permits).await;
    if size <= chunk || how.concurrency <= 1 {
        // One download: it holds its permits until the stream ends.
        let blob = repo.get_blob(desc.digest()).await?;
        let stream = blob.stream.map(move |chunk| {
            let _ = &held;
            chunk
        });
        return Ok(spawn_reader(&Handle::current(), stream));
    }
    let first = match first_piece(repo, desc.digest(), chunk).await? {
        crate::client::RangeReply::Partial(bytes) => bytes,
        crate::client::RangeReply::Whole(whole) => {
            return Ok(spawn_reader(&Handle::current(), whole.stream))
        }
    };
    drop(held);
    let (repo, digest) = (repo.clone(), desc.digest().clone());
    let permits = how.permits.clone();
    let rest = futures_util::stream::iter((1..size.div_ceil(chunk)).map(move |i| {
        let (repo, digest, permits) = (repo.clone(), digest.clone(), permits.clone());
        let range = (i * chunk, ((i + 1) * chunk).min(size));
        async move {
            let _held = hold_permits(&permits).await;
            fetch_piece(&repo, &digest, range).await
        }
    }))
    .buffered(how.concurrency);
    let stream = futures_util::stream::once(async move { Ok(first) }).chain(rest);
    // Pieces are big: one waiting for the reader is enough. A download that outruns its
    // reader then holds at most `concurrency` pieces in flight, one queued and one being
    // read, instead of a channel full of pieces.
    Ok(spawn_reader_with_slots(&Handle::current(), stream, 1))
}

/// One permit of each limit, held until the returned permits are dropped (a closed limit
/// is skipped).
pub async fn hold_permits(
    limits: &[std::sync::Arc<tokio::sync::Semaphore>],
) -> Vec<tokio::sync::OwnedSemaphorePermit> {
    let mut held = Vec::with_capacity(limits.len());
    for limit in limits {
        if let Ok(permit) = limit.clone().acquire_owned().await {
            held.push(permit);
        }
    }
    held
}

/// The first piece of a chunked download (which also tells whether the registry answers
/// Range requests), asked for again when its transfer fails.
async fn first_piece(
    repo: &Repository,
    digest: &Digest,
    chunk: u64,
) -> Result<crate::client::RangeReply> {
    with_retries(digest, (0, chunk), || {
        repo.get_blob_range(digest, (0, chunk))
    })
    .await
}

/// One piece of a chunked download, asked for again when its transfer fails.
async fn fetch_piece(
    repo: &Repository,
    digest: &Digest,
    range: (u64, u64),
) -> std::io::Result<Bytes> {
    with_retries(digest, range, || repo.read_blob_range(digest, range))
        .await
        .map_err(std::io::Error::other)
}

/// Runs `get` up to [`PIECE_ATTEMPTS`] times, pausing between tries, until it succeeds.
async fn with_retries<T, F, Fut>(digest: &Digest, range: (u64, u64), mut get: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 1;
    let mut pause = PIECE_RETRY_PAUSE;
    loop {
        match get().await {
            Ok(value) => return Ok(value),
            Err(e) if attempt < PIECE_ATTEMPTS => {
                tracing::warn!(%digest, start = range.0, end = range.1, attempt, "piece of a download failed, asking for it again: {e}");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A blocking reader over chunks sent by a task on a runtime (a registry body, a containerd
/// content stream); an error chunk ends the stream with that error. Reads block, so it must
/// be used off the runtime's worker threads.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
    done: bool,
}

impl ChannelReader {
    /// Reads what arrives on `rx` until it closes.
    pub fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
            done: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.current.len());
        let chunk = self.current.split_to(n);
        out[..n].copy_from_slice(&chunk);
        Ok(n)
    }
}

/// A `Read + Seek` view of a registry blob that fetches what is read with HTTP Range requests
/// (at least 1 MiB per request), so a reader that seeks reads only what it needs. It blocks on
/// `handle`, so it must be used off that runtime's worker threads.
pub struct RangeReader {
    handle: Handle,
    repo: Repository,
    digest: Digest,
    size: u64,
    pos: u64,
    buf: Bytes,
    buf_start: u64,
    fetched: u64,
}

impl RangeReader {
    /// A reader over blob `digest` of `size` bytes in `repo`.
    pub fn new(handle: Handle, repo: Repository, digest: Digest, size: u64) -> Self {
        RangeReader {
            handle,
            repo,
            digest,
            size,
            pos: 0,
            buf: Bytes::new(),
            buf_start: 0,
            fetched: 0,
        }
    }

    /// Bytes fetched from the registry so far.
    pub fn fetched(&self) -> u64 {
        self.fetched
    }

    /// The buffered bytes at the current position, fetching when the position is outside the
    /// buffer; empty at the end of the blob.
    fn buffered(&mut self, want: usize) -> std::io::Result<&[u8]> {
        if self.pos >= self.size {
            return Ok(&[]);
        }
        let buf_end = self.buf_start.saturating_add(self.buf.len() as u64);
        if self.pos < self.buf_start || self.pos >= buf_end {
            let end = self
                .size
                .min(self.pos.saturating_add((want as u64).max(MIN_RANGE_READ)));
            let bytes = self
                .handle
                .block_on(self.repo.read_blob_range(&self.digest, (self.pos, end)))
                .map_err(std::io::Error::other)?;
            self.fetched += bytes.len() as u64;
            self.buf = bytes;
            self.buf_start = self.pos;
        }
        let offset = usize::try_from(self.pos - self.buf_start).unwrap_or(usize::MAX);
        Ok(self.buf.get(offset..).unwrap_or_default())
    }
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let available = self.buffered(out.len())?;
        let n = out.len().min(available.len());
        out[..n].copy_from_slice(&available[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the blob",
            )
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_reader_reads_every_chunk_then_ends_with_the_error() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let chunks = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"world")),
        ];
        let mut r = spawn_reader(rt.handle(), futures_util::stream::iter(chunks));
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");

        let failing = vec![
            Ok(Bytes::from_static(b"x")),
            Err(std::io::Error::other("connection reset")),
            Ok(Bytes::from_static(b"never")),
        ];
        let mut r = spawn_reader(rt.handle(), futures_util::stream::iter(failing));
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, b"x");
        assert!(err.to_string().contains("connection reset"), "{err}");
        // After the error the reader stays ended.
        assert_eq!(r.read(&mut [0; 4]).unwrap(), 0);
    }
}
