//! Checkpoint windows of a layer served from a lean zTOC (`ztoc::lean`), fetched one at a
//! time from the full zTOC blob with Range requests and checked against their digests.
//!
//! The span manager asks here only for a window it cannot make from local bytes (the
//! 32 KiB before a span are the span's window): the first span a read needs after a gap.

use crate::error::Error;
use crate::source::{Fetched, SpanSource};
use futures_util::StreamExt;
use std::ops::Range;
use ztoc::lean::WindowIndex;
use ztoc::SpanId;

/// Where the windows a lean zTOC leaves out are: the full zTOC blob, and what each window
/// hashes to.
pub struct WindowSource {
    index: WindowIndex,
    blob: Box<dyn SpanSource>,
    /// The whole zTOC, once a registry that ignores Range requests sent it: later windows
    /// are cut from it.
    whole: tokio::sync::Mutex<Option<bytes::Bytes>>,
}

/// Why a window could not be had.
#[derive(Debug)]
pub enum WindowError {
    /// The request failed.
    Fetch {
        /// The bytes of the zTOC asked for.
        range: Range<u64>,
        /// What went wrong.
        message: String,
    },
    /// The bytes do not match the window's digest (or the lean zTOC names no window).
    Invalid(String),
}

impl WindowError {
    /// The span manager's error for span `span` of `layer`.
    pub fn into_error(self, layer: &str, span: SpanId) -> Error {
        match self {
            WindowError::Fetch { range, message } => Error::Fetch {
                layer: layer.to_owned(),
                first: span,
                last: span,
                start: range.start,
                end: range.end,
                message: format!("the checkpoint window, from the zTOC: {message}"),
            },
            WindowError::Invalid(message) => Error::Verification {
                layer: layer.to_owned(),
                span,
                message,
            },
        }
    }
}

impl WindowSource {
    /// Windows described by `index`, read from the full zTOC through `blob`.
    pub fn new(index: WindowIndex, blob: Box<dyn SpanSource>) -> Self {
        WindowSource {
            index,
            blob,
            whole: tokio::sync::Mutex::new(None),
        }
    }

    /// Fetches the window of checkpoint `span` and checks it; also says how many bytes
    /// were received for it (the whole zTOC, once, from a registry that ignores ranges).
    pub async fn fetch(&self, span: SpanId) -> Result<(Vec<u8>, u64), WindowError> {
        let range = self.index.range(span).ok_or_else(|| {
            WindowError::Invalid(format!("the lean zTOC names no window for span {span}"))
        })?;
        let (window, received) = self.read(range).await?;
        self.index
            .verify(span, &window)
            .map_err(|e| WindowError::Invalid(e.to_string()))?;
        Ok((window, received))
    }

    async fn read(&self, range: Range<u64>) -> Result<(Vec<u8>, u64), WindowError> {
        let fail = |message: String| WindowError::Fetch {
            range: range.clone(),
            message,
        };
        let cut = |whole: &bytes::Bytes| {
            whole
                .get(range.start as usize..range.end as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| fail("the zTOC is shorter than the lean zTOC says".into()))
        };
        if let Some(whole) = self.whole.lock().await.as_ref() {
            return Ok((cut(whole)?, 0));
        }
        match self.blob.read_range(range.clone()).await {
            Ok(Fetched::Range(bytes)) => Ok((bytes.to_vec(), bytes.len() as u64)),
            Ok(Fetched::Whole(mut stream)) => {
                let mut whole = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| fail(e.to_string()))?;
                    whole.extend_from_slice(&chunk);
                    if whole.len() as u64 > self.index.ztoc_size {
                        return Err(fail(format!(
                            "the registry sent more than the {} bytes of the zTOC",
                            self.index.ztoc_size
                        )));
                    }
                }
                let whole = bytes::Bytes::from(whole);
                let window = cut(&whole)?;
                let received = whole.len() as u64;
                *self.whole.lock().await = Some(whole);
                Ok((window, received))
            }
            Err(e) => Err(fail(registry::error_chain(e.as_ref()))),
        }
    }
}
