//! One layer through the zTOC builder: streamed once from the registry on a blocking thread,
//! its digest and size verified as it goes by.

use crate::error::{Error, Result};
use oci::manifest::LayerCompression;
use oci::Descriptor;
use registry::Repository;
use std::io::{BufReader, Read};

/// Chunks of a layer body in flight between the network task and the indexing thread: the
/// network keeps flowing while the builder works, within a bounded amount of memory.
const CHANNEL_CHUNKS: usize = 64;

/// Why a layer gets no zTOC under `min_layer_size`, or `None` when it is indexed: the same
/// words `soci create` prints after "ztoc skipped".
pub fn layer_skip_reason(layer: &Descriptor, min_layer_size: u64) -> Option<String> {
    if let Some(reason) = LayerCompression::of(layer.media_type()).skip_reason() {
        return Some(reason);
    }
    let size = layer.size();
    (size < min_layer_size)
        .then(|| format!("size {size} is less than min-layer-size {min_layer_size}"))
}

/// Builds the zTOC of one layer from `reader` (the whole layer blob), verifying the blob
/// against `layer`'s digest and size. Whatever the builder does not need is read and hashed
/// too, so a blob with extra bytes is caught. The mismatch wins over a builder error: a
/// corrupt blob is reported as corrupt, not as a broken tar.
pub fn build_layer_ztoc<R: Read>(
    reader: R,
    layer: &Descriptor,
    options: &ztoc::BuildOptions,
) -> Result<ztoc::Ztoc> {
    let algorithm = match LayerCompression::of(layer.media_type()) {
        LayerCompression::Gzip => ztoc::CompressionAlgorithm::Gzip,
        _ => ztoc::CompressionAlgorithm::Uncompressed,
    };
    let mut reader = oci::digest::DigestingReader::new(reader);
    let built = ztoc::build_ztoc(
        BufReader::with_capacity(1 << 20, &mut reader),
        algorithm,
        options,
    );
    // Drain anything the builder did not need (it reads gzip to the end, but a plain tar may
    // carry padding after its end-of-archive marker) so the digest covers the whole blob.
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|source| Error::LayerRead {
        layer: layer.digest().clone(),
        source,
    })?;
    let (actual, actual_size) = reader.finish();
    if &actual != layer.digest() || actual_size != layer.size() {
        return Err(Error::LayerMismatch {
            layer: layer.digest().clone(),
            expected_size: layer.size(),
            actual,
            actual_size,
        });
    }
    built.map_err(|source| Error::Ztoc {
        layer: layer.digest().clone(),
        media_type: layer.media_type().to_string(),
        source,
    })
}

/// Starts streaming a blob and returns a blocking reader over it (for use off the runtime's
/// threads, e.g. in `spawn_blocking`). A task on the current runtime pulls the HTTP body and
/// hands chunks over a bounded channel.
pub async fn blob_reader(repo: &Repository, desc: &Descriptor) -> Result<ChannelReader> {
    let stream = repo.get_blob(desc.digest()).await?;
    Ok(spawn_reader(
        &tokio::runtime::Handle::current(),
        stream.stream,
    ))
}

/// [`blob_reader`] for synchronous callers outside the runtime (the CLI): blocks on `handle`
/// until the registry answers.
pub fn open_blob(
    handle: &tokio::runtime::Handle,
    repo: &Repository,
    desc: &Descriptor,
) -> Result<ChannelReader> {
    let stream = handle.block_on(repo.get_blob(desc.digest()))?;
    Ok(spawn_reader(handle, stream.stream))
}

/// A blocking reader over `stream`, which a task spawned on `handle` pulls into a bounded
/// channel; the task stops at the first error (handed to the reader) or when the reader is
/// dropped.
pub fn spawn_reader<S>(handle: &tokio::runtime::Handle, stream: S) -> ChannelReader
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(CHANNEL_CHUNKS);
    handle.spawn(async move {
        use futures_util::StreamExt;
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            // The reader hung up (the layer failed to index): stop fetching.
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    ChannelReader::new(rx)
}

/// A blocking reader over chunks sent by a task on a runtime (a registry body, a containerd
/// content stream); an error chunk ends the stream with that error. Reads block, so it must
/// be used off the runtime's worker threads.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
    done: bool,
}

impl ChannelReader {
    /// Reads what arrives on `rx` until it closes.
    pub fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: bytes::Bytes::new(),
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
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
