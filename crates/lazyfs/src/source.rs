//! Where a layer's compressed bytes come from: a registry (HTTP Range requests) or a local
//! file (an OCI layout, or a blob downloaded whole when the registry ignores ranges).

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use oci::Digest;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Error from a [`SpanSource`], rendered with its whole cause chain.
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// The answer to a range read.
pub enum Fetched {
    /// Exactly the bytes asked for.
    Range(Bytes),
    /// The source ignored the range and streams the whole blob from its first byte.
    Whole(BoxStream<'static, std::io::Result<Bytes>>),
}

/// Reads byte ranges of one layer blob.
pub trait SpanSource: Send + Sync + 'static {
    /// Reads compressed bytes `range` of the blob.
    fn read_range(&self, range: Range<u64>) -> BoxFuture<'_, Result<Fetched, SourceError>>;
    /// Describes the source in log lines ("registry 127.0.0.1:5000/app").
    fn describe(&self) -> String;
}

/// A layer blob in a registry repository.
pub struct RegistrySource {
    repository: registry::Repository,
    digest: Digest,
}

impl RegistrySource {
    /// Reads blob `digest` of `repository`.
    pub fn new(repository: registry::Repository, digest: Digest) -> Self {
        RegistrySource { repository, digest }
    }
}

impl SpanSource for RegistrySource {
    fn read_range(&self, range: Range<u64>) -> BoxFuture<'_, Result<Fetched, SourceError>> {
        Box::pin(async move {
            match self
                .repository
                .get_blob_range(&self.digest, (range.start, range.end))
                .await?
            {
                registry::RangeReply::Partial(bytes) => Ok(Fetched::Range(bytes)),
                registry::RangeReply::Whole(stream) => Ok(Fetched::Whole(stream.stream)),
            }
        })
    }

    fn describe(&self) -> String {
        format!(
            "registry {}/{}",
            self.repository.registry(),
            self.repository.name()
        )
    }
}

/// A layer blob in a local file.
#[derive(Clone)]
pub struct FileSource {
    path: Arc<PathBuf>,
    file: Arc<std::fs::File>,
}

impl FileSource {
    /// Opens `path`.
    pub fn open(path: PathBuf) -> std::io::Result<Self> {
        let file = std::fs::File::open(&path)?;
        Ok(FileSource {
            path: Arc::new(path),
            file: Arc::new(file),
        })
    }

    /// Reads `range` synchronously.
    pub fn read_at(&self, range: Range<u64>) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        self.file.read_exact_at(&mut buf, range.start)?;
        Ok(buf)
    }
}

impl SpanSource for FileSource {
    fn read_range(&self, range: Range<u64>) -> BoxFuture<'_, Result<Fetched, SourceError>> {
        let this = self.clone();
        Box::pin(async move {
            let bytes = tokio::task::spawn_blocking(move || this.read_at(range)).await??;
            Ok(Fetched::Range(Bytes::from(bytes)))
        })
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}
