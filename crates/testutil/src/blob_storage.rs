//! Object storage for a registry that redirects blob reads: docker-registry's `redirect`
//! storage middleware answers a blob GET with a 307 to `<baseurl>/<storage path>`, and this
//! server serves those paths from the registry's storage directory, with Range, as S3 or a
//! CDN would. It can refuse requests (403), as storage does once a signed URL expired.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A running storage server on 127.0.0.1; stops when dropped.
pub struct BlobStorage {
    addr: String,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    root: Mutex<PathBuf>,
    /// Requests still to refuse with 403.
    refuse: AtomicUsize,
    served: AtomicUsize,
    refused: AtomicUsize,
}

impl BlobStorage {
    /// Starts serving; files come from the directory set with [`BlobStorage::serve_from`].
    pub fn start() -> BlobStorage {
        let state = Arc::new(State::default());
        let stop: Arc<AtomicBool> = Arc::default();
        let addr = {
            let state = state.clone();
            crate::http1::serve(stop.clone(), move |request, stream| {
                let (status, extra, body) = answer(&state, request);
                crate::http1::respond(request, stream, &status, &extra, &body);
            })
        };
        BlobStorage { addr, state, stop }
    }

    /// Serves files below `root` (a registry's storage directory).
    pub fn serve_from(&self, root: &Path) {
        if let Ok(mut r) = self.state.root.lock() {
            *r = root.to_owned();
        }
    }

    /// The registry config section that redirects blob reads here (for
    /// [`crate::Registry::start_with_config`]).
    pub fn registry_redirect_yaml(&self) -> String {
        format!(
            "middleware:\n  storage:\n    - name: redirect\n      options:\n        \
             baseurl: http://{}\n",
            self.addr
        )
    }

    /// Refuses the next `n` requests with 403 (an expired signed URL).
    pub fn refuse_next(&self, n: usize) {
        self.state.refuse.store(n, Ordering::SeqCst);
    }

    /// Requests answered with bytes so far.
    pub fn served(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }

    /// Requests refused so far.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for BlobStorage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn answer(state: &State, request: &crate::http1::Request) -> (String, String, Vec<u8>) {
    let refuse = state
        .refuse
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refuse {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return (
            "403 Forbidden".into(),
            String::new(),
            b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
                .to_vec(),
        );
    }
    let path = request.target.split('?').next().unwrap_or_default();
    // Only plain components below the root: no `..`, no absolute escapes.
    let relative = Path::new(path.trim_start_matches('/'));
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return ("400 Bad Request".into(), String::new(), Vec::new());
    }
    let root = state.root.lock().map(|r| r.clone()).unwrap_or_default();
    let Ok(data) = std::fs::read(root.join(relative)) else {
        return ("404 Not Found".into(), String::new(), Vec::new());
    };
    state.served.fetch_add(1, Ordering::SeqCst);
    let total = data.len();
    let range = request
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
    match range {
        Some((start, end)) if start <= end && end < total => (
            "206 Partial Content".into(),
            format!("Content-Range: bytes {start}-{end}/{total}\r\n"),
            data[start..=end].to_vec(),
        ),
        Some(_) => (
            "416 Range Not Satisfiable".into(),
            String::new(),
            Vec::new(),
        ),
        None => ("200 OK".into(), String::new(), data),
    }
}
