//! A containerd client over its gRPC API (containerd 1.6 and later): content store reads and
//! writes, content labels, image records, leases, snapshots and the diff service. It is what
//! [`crate::pull`](mod@crate::pull) pulls through and what `soci create` reads images from.
//!
//! Every call carries the namespace in the `containerd-namespace` header and, when the client
//! holds a lease, its id in `containerd-lease`, as containerd's Go client does; content and
//! snapshots created under a lease are kept from garbage collection until it is deleted.

use bytes::Bytes;
use containerd_client::services::v1 as api;
use containerd_client::services::v1::snapshots as snap;
use containerd_client::types::{Descriptor as CtdDescriptor, Mount};
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

pub use containerd_client::services::v1::Image;

/// Default containerd socket (AWS's `soci --address` default).
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// Default namespace (`ctr`'s default).
pub const DEFAULT_NAMESPACE: &str = "default";
/// Bytes per content Write message; containerd's gRPC server accepts 16 MiB messages, its Go
/// client writes 1 MiB at a time.
const WRITE_CHUNK: usize = 1 << 20;
/// How long connecting to the socket may take before containerd is reported unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from containerd, by gRPC code where callers branch on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be connected to.
    #[error(
        "cannot connect to containerd at {}: {reason}; is containerd running? pass --address \
         (or set CONTAINERD_ADDRESS) to use another socket",
        address.display()
    )]
    Connect {
        /// The socket path.
        address: PathBuf,
        /// What the connection attempt said.
        reason: String,
    },
    /// The object does not exist (gRPC NotFound).
    #[error("{what}: not found in containerd ({message})")]
    NotFound {
        /// What was asked for.
        what: String,
        /// containerd's message.
        message: String,
    },
    /// The object exists already (gRPC AlreadyExists).
    #[error("{what}: already exists in containerd ({message})")]
    AlreadyExists {
        /// What was created.
        what: String,
        /// containerd's message.
        message: String,
    },
    /// containerd could not be reached during a call (gRPC Unavailable).
    #[error("{what}: containerd is unavailable ({message}); is containerd still running?")]
    Unavailable {
        /// The call.
        what: String,
        /// The transport's message.
        message: String,
    },
    /// Any other gRPC error.
    #[error("{what}: containerd answered {code:?}: {message}")]
    Rpc {
        /// The call.
        what: String,
        /// The gRPC code.
        code: tonic::Code,
        /// containerd's message.
        message: String,
    },
    /// A value cannot be sent (e.g. a namespace that is not a valid header value).
    #[error("{0}")]
    Invalid(String),
    /// Bytes written or read do not match their descriptor.
    #[error("{what}: got {actual} ({size} bytes), expected {expected} ({expected_size} bytes)")]
    DigestMismatch {
        /// The blob.
        what: String,
        /// Digest of what was seen.
        actual: String,
        /// Bytes seen.
        size: u64,
        /// The descriptor's digest.
        expected: String,
        /// The descriptor's size.
        expected_size: u64,
    },
    /// The data source of a write failed.
    #[error("{what}: reading the data failed")]
    Source {
        /// The blob.
        what: String,
        /// The source's error.
        source: std::io::Error,
    },
}

impl Error {
    fn from_status(what: impl Into<String>, status: tonic::Status) -> Self {
        let what = what.into();
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::NotFound => Error::NotFound { what, message },
            tonic::Code::AlreadyExists => Error::AlreadyExists { what, message },
            tonic::Code::Unavailable => Error::Unavailable { what, message },
            code => Error::Rpc {
                what,
                code,
                message,
            },
        }
    }

    /// True for gRPC NotFound.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for gRPC AlreadyExists.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A blob's metadata in containerd's content store.
#[derive(Debug, Clone)]
pub struct ContentInfo {
    /// Size in bytes.
    pub size: u64,
    /// Labels (GC references, distribution sources, …).
    pub labels: HashMap<String, String>,
}

/// What a content write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The blob was written and committed.
    Written,
    /// containerd already had the blob; nothing was written.
    Existed,
}

/// A gRPC channel over the unix socket at `address` (containerd's, or any gRPC server's).
pub async fn unix_channel(address: &Path) -> Result<Channel> {
    // The URI is required by tonic but unused: the connector dials the unix socket.
    let endpoint =
        Endpoint::from_static("http://containerd.invalid").connect_timeout(CONNECT_TIMEOUT);
    let path = address.to_path_buf();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| Error::Connect {
            address: address.to_path_buf(),
            reason: registry::error_chain(&e),
        })
}

/// A connection to containerd in one namespace, optionally under a lease.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    namespace: String,
    lease: Option<String>,
}

impl Client {
    /// Connects to the unix socket at `address`; calls are made in `namespace`.
    pub async fn connect(address: &Path, namespace: &str) -> Result<Self> {
        let channel = unix_channel(address).await?;
        tonic::metadata::MetadataValue::try_from(namespace).map_err(|_| {
            Error::Invalid(format!(
                "namespace {namespace:?} is not a valid namespace name"
            ))
        })?;
        Ok(Client {
            channel,
            namespace: namespace.to_owned(),
            lease: None,
        })
    }

    /// The namespace calls are made in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A copy of this client whose calls run under lease `id`.
    pub fn with_lease(&self, id: &str) -> Client {
        Client {
            lease: Some(id.to_owned()),
            ..self.clone()
        }
    }

    /// Wraps a message with the namespace (and lease) headers.
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        let md = r.metadata_mut();
        // Both were validated as header values when the client was made.
        if let Ok(v) = self.namespace.parse() {
            md.insert("containerd-namespace", v);
        }
        if let Some(Ok(v)) = self.lease.as_deref().map(str::parse) {
            md.insert("containerd-lease", v);
        }
        r
    }

    fn content(&self) -> api::content_client::ContentClient<Channel> {
        api::content_client::ContentClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    // ---- leases ----

    /// Creates a lease that expires by itself after `expire` (containerd's `gc.expire` label),
    /// so an interrupted command does not pin content forever. Returns its id.
    pub async fn create_lease(&self, expire: Duration) -> Result<String> {
        let id = format!(
            "soci-{}-{:06x}",
            unix_nanos(),
            fastrand::u32(..) & 0xff_ffff
        );
        let at = time::OffsetDateTime::now_utc() + expire;
        let at = at
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::Invalid(format!("formatting the lease expiry: {e}")))?;
        let labels = HashMap::from([(crate::labels::GC_EXPIRE.to_owned(), at)]);
        let mut c = api::leases_client::LeasesClient::new(self.channel.clone());
        c.create(self.req(api::CreateRequest {
            id: id.clone(),
            labels,
        }))
        .await
        .map_err(|s| Error::from_status(format!("creating lease {id}"), s))?;
        Ok(id)
    }

    /// Deletes a lease; what it held becomes collectable unless something else references it.
    pub async fn delete_lease(&self, id: &str) -> Result<()> {
        let mut c = api::leases_client::LeasesClient::new(self.channel.clone());
        c.delete(self.req(api::DeleteRequest {
            id: id.to_owned(),
            sync: false,
        }))
        .await
        .map_err(|s| Error::from_status(format!("deleting lease {id}"), s))?;
        Ok(())
    }

    // ---- content ----

    /// The content store's record of a blob; NotFound if it does not have it.
    pub async fn content_info(&self, digest: &str) -> Result<ContentInfo> {
        let r = self
            .content()
            .info(self.req(api::InfoRequest {
                digest: digest.to_owned(),
            }))
            .await
            .map_err(|s| Error::from_status(format!("content {digest}"), s))?
            .into_inner();
        let info = r.info.ok_or_else(|| Error::Rpc {
            what: format!("content {digest}"),
            code: tonic::Code::Internal,
            message: "Info answered without info".into(),
        })?;
        Ok(ContentInfo {
            size: u64::try_from(info.size).unwrap_or(0),
            labels: info.labels,
        })
    }

    /// Whether the content store has the blob.
    pub async fn has_content(&self, digest: &str) -> Result<bool> {
        match self.content_info(digest).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets `labels` on a blob (only those keys; other labels stay).
    pub async fn set_content_labels(
        &self,
        digest: &str,
        labels: &HashMap<String, String>,
    ) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.content()
            .update(self.req(api::UpdateRequest {
                info: Some(api::Info {
                    digest: digest.to_owned(),
                    labels: labels.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| Error::from_status(format!("labelling content {digest}"), s))?;
        Ok(())
    }

    /// Streams a blob from the content store (from `offset`, to the end).
    pub async fn read_stream(
        &self,
        digest: &str,
        offset: u64,
    ) -> Result<impl Stream<Item = Result<Bytes>> + Send + 'static> {
        let what = format!("reading content {digest}");
        let stream = self
            .content()
            .read(self.req(api::ReadContentRequest {
                digest: digest.to_owned(),
                offset: i64::try_from(offset).unwrap_or(i64::MAX),
                size: 0,
            }))
            .await
            .map_err(|s| Error::from_status(what.clone(), s))?
            .into_inner();
        Ok(stream.map(move |r| {
            r.map(|m| Bytes::from(m.data))
                .map_err(|s| Error::from_status(what.clone(), s))
        }))
    }

    /// Reads a whole blob of at most `limit` bytes and checks it against `digest`.
    pub async fn read_all(&self, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let info = self.content_info(digest).await?;
        if info.size > limit {
            return Err(Error::Invalid(format!(
                "content {digest} is {} bytes, more than the {limit} expected",
                info.size
            )));
        }
        let mut out = Vec::with_capacity(info.size as usize);
        let mut stream = std::pin::pin!(self.read_stream(digest, 0).await?);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() as u64 > limit {
                return Err(Error::Invalid(format!(
                    "content {digest} is longer than the {limit} bytes expected"
                )));
            }
        }
        let actual = sha256_str(&out);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("content {digest} read from containerd"),
                actual,
                size: out.len() as u64,
                expected: digest.to_owned(),
                expected_size: info.size,
            });
        }
        Ok(out)
    }

    /// A blocking reader over a blob, for synchronous code running off `rt`'s threads: a task
    /// on `rt` pulls the Read stream and hands chunks over a bounded channel.
    pub fn open_blocking(
        &self,
        rt: &tokio::runtime::Handle,
        digest: &str,
    ) -> Result<Box<dyn Read + Send>> {
        let stream = rt.block_on(self.read_stream(digest, 0))?;
        Ok(Box::new(registry::blocking::spawn_reader(
            rt,
            stream.map(|chunk| chunk.map_err(std::io::Error::other)),
        )))
    }

    /// Writes a blob of `size` bytes with digest `expected` from `data`, committing it with
    /// `labels`; `reference` names the ingest (containerd's `<kind>-<digest>` convention lets
    /// an interrupted write be found). The bytes are hashed as they go and the commit carries
    /// the expected digest and size, so containerd refuses anything else. When containerd
    /// already has the blob, nothing is sent and the labels are set on it instead.
    pub async fn write_blob<S>(
        &self,
        reference: &str,
        expected: &str,
        size: u64,
        labels: &HashMap<String, String>,
        data: S,
    ) -> Result<WriteOutcome>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send,
    {
        let total = i64::try_from(size)
            .map_err(|_| Error::Invalid(format!("{expected}: size {size} is too large")))?;
        let Some(mut session) = self.start_write(reference, expected, total).await? else {
            self.set_content_labels(expected, labels).await?;
            return Ok(WriteOutcome::Existed);
        };
        let offset = session.write_all(expected, size, data).await?;
        let commit = session
            .send(api::WriteContentRequest {
                action: api::WriteAction::Commit as i32,
                r#ref: reference.to_owned(),
                offset: offset as i64,
                total,
                expected: expected.to_owned(),
                labels: labels.clone(),
                ..Default::default()
            })
            .await;
        match commit {
            Ok(_) => Ok(WriteOutcome::Written),
            // Someone else committed the same blob meanwhile.
            Err(e) if e.is_already_exists() => {
                self.set_content_labels(expected, labels).await?;
                Ok(WriteOutcome::Existed)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens a content Write call for ingest `reference` and sends its Stat; `None` when
    /// containerd already has blob `expected`.
    async fn start_write(
        &self,
        reference: &str,
        expected: &str,
        total: i64,
    ) -> Result<Option<WriteSession>> {
        let what = format!("writing {expected} to containerd's content store");
        let (tx, rx) = tokio::sync::mpsc::channel::<api::WriteContentRequest>(2);
        let stat = api::WriteContentRequest {
            action: api::WriteAction::Stat as i32,
            r#ref: reference.to_owned(),
            total,
            expected: expected.to_owned(),
            ..Default::default()
        };
        // The server reads the first message before it answers (and sends headers), so it
        // must be queued before the call is awaited.
        let _ = tx.send(stat).await;
        let call = self
            .content()
            .write(self.req(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await;
        let responses = match call {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::AlreadyExists => return Ok(None),
            Err(s) => return Err(Error::from_status(what, s)),
        };
        let mut session = WriteSession {
            tx,
            responses,
            reference: reference.to_owned(),
            what,
        };
        // The Stat's answer.
        match session.next().await {
            Ok(_) => Ok(Some(session)),
            Err(e) if e.is_already_exists() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a blob held in memory (see [`Client::write_blob`]).
    pub async fn write_bytes(
        &self,
        reference: &str,
        bytes: &[u8],
        labels: &HashMap<String, String>,
    ) -> Result<(String, WriteOutcome)> {
        let digest = sha256_str(bytes);
        let data = futures_util::stream::iter([Ok(Bytes::copy_from_slice(bytes))]);
        let outcome = self
            .write_blob(reference, &digest, bytes.len() as u64, labels, data)
            .await?;
        Ok((digest, outcome))
    }

    // ---- images ----

    /// The image record named `name`; NotFound if there is none.
    pub async fn get_image(&self, name: &str) -> Result<Image> {
        let mut c = api::images_client::ImagesClient::new(self.channel.clone());
        let r = c
            .get(self.req(api::GetImageRequest {
                name: name.to_owned(),
            }))
            .await
            .map_err(|s| Error::from_status(format!("image {name}"), s))?
            .into_inner();
        r.image.ok_or_else(|| Error::NotFound {
            what: format!("image {name}"),
            message: "Get answered without an image".into(),
        })
    }

    /// Creates the image record, or replaces its target and labels if it exists (what
    /// containerd's client does at the end of a pull).
    pub async fn put_image(&self, image: Image) -> Result<()> {
        let name = image.name.clone();
        let mut c = api::images_client::ImagesClient::new(self.channel.clone());
        match c
            .create(self.req(api::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                c.update(self.req(api::UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .map_err(|s| Error::from_status(format!("updating image {name}"), s))?;
                Ok(())
            }
            Err(s) => Err(Error::from_status(format!("creating image {name}"), s)),
        }
    }

    /// Sets `labels` on an image record (only those keys).
    pub async fn set_image_labels(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
    ) -> Result<()> {
        let mut c = api::images_client::ImagesClient::new(self.channel.clone());
        c.update(self.req(api::UpdateImageRequest {
            image: Some(Image {
                name: name.to_owned(),
                labels: labels.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: labels.keys().map(|k| format!("labels.{k}")).collect(),
            }),
            source_date_epoch: None,
        }))
        .await
        .map_err(|s| Error::from_status(format!("labelling image {name}"), s))?;
        Ok(())
    }

    // ---- snapshots ----

    fn snapshots(&self) -> snap::snapshots_client::SnapshotsClient<Channel> {
        snap::snapshots_client::SnapshotsClient::new(self.channel.clone())
    }

    /// A snapshot's record; NotFound if `key` does not exist.
    pub async fn stat_snapshot(&self, snapshotter: &str, key: &str) -> Result<snap::Info> {
        let r = self
            .snapshots()
            .stat(self.req(snap::StatSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.to_owned(),
            }))
            .await
            .map_err(|s| Error::from_status(format!("snapshot {key} ({snapshotter})"), s))?
            .into_inner();
        r.info.ok_or_else(|| Error::NotFound {
            what: format!("snapshot {key} ({snapshotter})"),
            message: "Stat answered without info".into(),
        })
    }

    /// Prepares an active snapshot `key` on `parent` ("" for none) and returns its mounts.
    /// AlreadyExists from a remote snapshotter means it provided the layer itself.
    pub async fn prepare_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let r = self
            .snapshots()
            .prepare(self.req(snap::PrepareSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.to_owned(),
                parent: parent.to_owned(),
                labels,
            }))
            .await
            .map_err(|s| {
                Error::from_status(format!("preparing snapshot {key:?} ({snapshotter})"), s)
            })?
            .into_inner();
        Ok(r.mounts)
    }

    /// Commits active snapshot `key` as `name`.
    pub async fn commit_snapshot(
        &self,
        snapshotter: &str,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        self.snapshots()
            .commit(self.req(snap::CommitSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                name: name.to_owned(),
                key: key.to_owned(),
                labels,
            }))
            .await
            .map_err(|s| {
                Error::from_status(
                    format!("committing snapshot {key:?} as {name} ({snapshotter})"),
                    s,
                )
            })?;
        Ok(())
    }

    /// Removes a snapshot.
    pub async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()> {
        self.snapshots()
            .remove(self.req(snap::RemoveSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.to_owned(),
            }))
            .await
            .map_err(|s| {
                Error::from_status(format!("removing snapshot {key:?} ({snapshotter})"), s)
            })?;
        Ok(())
    }

    // ---- diff ----

    /// Applies layer blob `desc` (which must be in the content store) onto `mounts`; returns
    /// the descriptor of what was applied (its digest is the uncompressed diff ID).
    pub async fn apply_diff(
        &self,
        desc: CtdDescriptor,
        mounts: Vec<Mount>,
    ) -> Result<CtdDescriptor> {
        let what = format!("applying layer {}", desc.digest);
        let mut c = api::diff_client::DiffClient::new(self.channel.clone());
        let r = c
            .apply(self.req(api::ApplyRequest {
                diff: Some(desc),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            }))
            .await
            .map_err(|s| Error::from_status(what.clone(), s))?
            .into_inner();
        r.applied.ok_or_else(|| Error::Rpc {
            what,
            code: tonic::Code::Internal,
            message: "Apply answered without a descriptor".into(),
        })
    }
}

/// One content Write call: requests go out on `tx`, one answer comes back per request.
struct WriteSession {
    tx: tokio::sync::mpsc::Sender<api::WriteContentRequest>,
    responses: tonic::Streaming<api::WriteContentResponse>,
    /// The ingest being written.
    reference: String,
    /// The call, for errors.
    what: String,
}

impl WriteSession {
    /// Sends one request and waits for its answer.
    async fn send(&mut self, req: api::WriteContentRequest) -> Result<api::WriteContentResponse> {
        // A send fails only when the call has ended; the next answer then carries the status.
        let _ = self.tx.send(req).await;
        self.next().await
    }

    /// The next answer (or the call's final status).
    async fn next(&mut self) -> Result<api::WriteContentResponse> {
        match self.responses.message().await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(Error::Rpc {
                what: self.what.clone(),
                code: tonic::Code::Internal,
                message: "the write stream ended early".into(),
            }),
            Err(s) => Err(Error::from_status(self.what.clone(), s)),
        }
    }

    /// Sends `data` in [`WRITE_CHUNK`]-byte messages, hashing it on the way, and checks that
    /// it is blob `expected` of `size` bytes before anything is committed. Returns the
    /// number of bytes written.
    async fn write_all<S>(&mut self, expected: &str, size: u64, data: S) -> Result<u64>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send,
    {
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut offset: u64 = 0;
        let mut buf: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        let mut data = std::pin::pin!(data);
        loop {
            let chunk = data.next().await;
            let end = chunk.is_none();
            if let Some(chunk) = chunk {
                let chunk = chunk.map_err(|source| Error::Source {
                    what: expected.to_owned(),
                    source,
                })?;
                buf.extend_from_slice(&chunk);
            }
            while buf.len() >= WRITE_CHUNK || (end && !buf.is_empty()) {
                let n = buf.len().min(WRITE_CHUNK);
                let piece: Vec<u8> = buf.drain(..n).collect();
                if offset + piece.len() as u64 > size {
                    return Err(Error::DigestMismatch {
                        what: expected.to_owned(),
                        actual: "more data".into(),
                        size: offset + piece.len() as u64,
                        expected: expected.to_owned(),
                        expected_size: size,
                    });
                }
                hasher.update(&piece);
                offset = self.write_piece(offset, piece).await?;
            }
            if end {
                break;
            }
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finish()));
        if actual != expected || offset != size {
            return Err(Error::DigestMismatch {
                what: expected.to_owned(),
                actual,
                size: offset,
                expected: expected.to_owned(),
                expected_size: size,
            });
        }
        Ok(offset)
    }

    /// Writes `piece` at `offset`; returns the offset after it, which containerd confirms.
    async fn write_piece(&mut self, offset: u64, piece: Vec<u8>) -> Result<u64> {
        let end = offset + piece.len() as u64;
        let r = self
            .send(api::WriteContentRequest {
                action: api::WriteAction::Write as i32,
                r#ref: self.reference.clone(),
                offset: offset as i64,
                data: piece,
                ..Default::default()
            })
            .await?;
        if r.offset != end as i64 {
            return Err(Error::Rpc {
                what: self.what.clone(),
                code: tonic::Code::DataLoss,
                message: format!("containerd is at offset {}, we wrote to {end}", r.offset),
            });
        }
        Ok(end)
    }
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_str(bytes: &[u8]) -> String {
    oci::digest::sha256(bytes).to_string()
}

/// Nanoseconds since the epoch (for unique names).
pub(crate) fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
