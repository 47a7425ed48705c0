//! containerd's snapshots service. Ordinary snapshots behave like containerd's overlayfs
//! snapshotter (directories, bind and overlay mounts that containerd performs itself). A
//! Prepare that carries `containerd.io/snapshot.ref` and the image labels is a chance to
//! mount the layer lazily: the committed snapshot is made here, served through FUSE by the
//! FUSE manager, and containerd is told it already exists so it skips the download.

use crate::config::Config;
use crate::filter::Filters;
use crate::index_lookup::{LayerPlan, Resolver};
use crate::manager::{self, ManagerError, MountSpec, Reply, Request as ManagerRequest};
use crate::metadata::{Kind, Metadata, MetadataError, RemoteLayerInfo, Snapshot, UpdateError};
use crate::parallel_pull::{ParallelPuller, PullRequest};
use crate::proto::snapshots_server::Snapshots;
use containerd_client::services::v1::snapshots as pb;
use containerd_client::types::Mount;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use containerd::labels::{LabelError, LayerLabels, SNAPSHOT_REF as LABEL_SNAPSHOT_REF};
/// Marks the snapshots this daemon mounted lazily (visible in `ctr snapshots info`).
pub const LABEL_REMOTE: &str = "containerd.io/snapshot/soci.remote";

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    /// Layers mounted lazily.
    pub layers_lazy: AtomicU64,
    /// Layers left to containerd to pull (no index, no zTOC, or a failure).
    pub layers_pulled: AtomicU64,
    /// Lazy mounts that failed or timed out (and were pulled instead).
    pub mount_failures: AtomicU64,
    /// Layers pulled and unpacked by the snapshotter (parallel pull mode).
    pub layers_parallel: AtomicU64,
    /// Parallel pulls that failed (the Prepare failed with the reason).
    pub parallel_failures: AtomicU64,
}

/// The snapshotter.
pub struct Snapshotter {
    dir: PathBuf,
    root: PathBuf,
    config: Config,
    config_path: Option<PathBuf>,
    exe: PathBuf,
    meta: Mutex<Metadata>,
    resolver: Resolver,
    /// Pulls layers itself when `[pull_modes.parallel_pull_unpack]` is on.
    parallel: Option<Arc<ParallelPuller>>,
    /// Serializes starting the FUSE manager and restoring its mounts.
    manager_start: Mutex<()>,
    /// Credentials of CRI pulls (`[cri_keychain]`), shared with the registry client.
    keychain: Option<registry::Keychain>,
    /// Counters for `/metrics`.
    pub counters: DaemonCounters,
}

fn status_of(e: MetadataError) -> Status {
    match e {
        MetadataError::NotFound(_) | MetadataError::ParentNotFound(_) => {
            Status::not_found(e.to_string())
        }
        MetadataError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        MetadataError::ParentNotCommitted(_) | MetadataError::EmptyKey => {
            Status::invalid_argument(e.to_string())
        }
        MetadataError::WrongKind { .. } | MetadataError::HasChildren(_) => {
            Status::failed_precondition(e.to_string())
        }
        MetadataError::Io { .. } | MetadataError::Corrupt { .. } => Status::internal(e.to_string()),
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

fn to_btree(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}

fn info(name: &str, s: &Snapshot) -> pb::Info {
    let kind = match s.kind {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    };
    pb::Info {
        name: name.to_owned(),
        parent: s.parent.clone(),
        kind: kind as i32,
        created_at: Some(prost_types::Timestamp::from(s.created)),
        updated_at: Some(prost_types::Timestamp::from(s.updated)),
        labels: s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

impl Snapshotter {
    /// Opens the snapshotter state under `root/snapshotter`; `exe` is this executable (to
    /// start the FUSE manager) and `config_path` the config file it should read.
    pub fn open(
        root: &Path,
        config: Config,
        config_path: Option<PathBuf>,
        exe: PathBuf,
    ) -> Result<Self, crate::error::OpenError> {
        let dir = root.join("snapshotter");
        let snapshots = dir.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(|source| crate::error::OpenError::Create {
            path: snapshots,
            source,
        })?;
        let meta = Metadata::open(&dir)?;
        let keychain = config
            .cri_keychain
            .enable_keychain
            .then(registry::Keychain::new);
        let client = manager::registry_client(&config, keychain.clone());
        let modes = lazyfs::discover::Modes {
            v1: config.pull_modes.soci_v1.enable,
            v2: config.pull_modes.soci_v2.enable,
        };
        let parallel_config = &config.pull_modes.parallel_pull_unpack;
        let parallel = parallel_config.enable.then(|| {
            Arc::new(ParallelPuller::new(
                client.clone(),
                parallel_config.clone(),
                dir.join("parallel-staging"),
                &config.content_store.containerd_address,
            ))
        });
        Ok(Snapshotter {
            resolver: Resolver::new(client, modes),
            parallel,
            dir,
            root: root.to_owned(),
            config,
            config_path,
            exe,
            meta: Mutex::new(meta),
            manager_start: Mutex::new(()),
            keychain,
            counters: DaemonCounters::default(),
        })
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The credentials of CRI pulls, when `[cri_keychain]` is on.
    pub fn keychain(&self) -> Option<&registry::Keychain> {
        self.keychain.as_ref()
    }

    /// Hands a CRI pull's credentials to a running FUSE manager (new ones, or a rotated
    /// secret for layers it already serves). Without a manager nothing is lost: it gets
    /// them with the next mount.
    pub async fn hand_credentials(&self, entry: registry::KeychainEntry) {
        if let Err(e) =
            manager::call(&self.manager_socket(), &ManagerRequest::Remember(entry)).await
        {
            tracing::debug!("credentials not handed to the FUSE manager now: {e}");
        }
    }

    /// The keychain's entry for the repository of `image_ref`, if any.
    fn credentials_of_image(&self, image_ref: &str) -> Option<registry::KeychainEntry> {
        let keychain = self.keychain.as_ref()?;
        match oci::reference::ImageRef::parse(image_ref).ok()? {
            oci::reference::ImageRef::Registry {
                registry,
                repository,
                ..
            } => keychain.entry(&registry, &repository),
            _ => None,
        }
    }

    /// The requests that mount `spec` in the FUSE manager: the credentials of its image
    /// first, when a CRI pull brought some, then the mount.
    fn mount_requests(&self, spec: MountSpec) -> Vec<ManagerRequest> {
        let remember = self
            .credentials_of_image(&spec.layer.image_ref)
            .map(ManagerRequest::Remember);
        remember
            .into_iter()
            .chain([ManagerRequest::Mount(spec)])
            .collect()
    }

    /// Mounts `spec` in the FUSE manager, starting one when none answers; returns the
    /// mount's reply.
    async fn mount_in_manager(&self, spec: MountSpec) -> Result<Reply, ManagerError> {
        let mut reply = Reply::Done;
        for request in self.mount_requests(spec) {
            reply = self.manager_call(&request).await?;
        }
        Ok(reply)
    }

    fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.dir.join("snapshots").join(id.to_string())
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("fs")
    }

    fn work_dir(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("work")
    }

    fn manager_socket(&self) -> PathBuf {
        self.dir.join(manager::SOCKET_NAME)
    }

    /// Sends a request to the FUSE manager, starting it (and restoring every lazy mount) when
    /// none is running.
    async fn manager_call(&self, request: &ManagerRequest) -> Result<Reply, ManagerError> {
        match manager::call(&self.manager_socket(), request).await {
            // A connection refused, or reset by a manager that is still exiting (a dying
            // process keeps its listening socket until its last thread is gone).
            Err(ManagerError::Unreachable { .. } | ManagerError::Protocol { .. }) => {
                self.ensure_manager().await?;
                manager::call(&self.manager_socket(), request).await
            }
            r => r,
        }
    }

    /// Has the FUSE manager, which runs another binary than this daemon (the package was
    /// upgraded), replaced with this one while its mounts stay live; waits until the new one
    /// answers. A failure is logged: the old manager keeps serving.
    async fn upgrade_manager(&self, socket: &Path, ours: Option<String>) {
        tracing::info!("the FUSE manager runs another binary: upgrading it live");
        if let Err(e) = manager::call(socket, &ManagerRequest::Upgrade).await {
            tracing::warn!("live upgrade of the FUSE manager refused: {e}");
            return;
        }
        for _ in 0..300 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            if let Ok(Reply::Pong { pid, exe, .. }) =
                manager::call(socket, &ManagerRequest::Ping).await
            {
                if exe == ours {
                    tracing::info!(pid, "FUSE manager upgraded");
                    return;
                }
            }
        }
        tracing::warn!("the upgraded FUSE manager did not answer within 15 s");
    }

    /// Starts the FUSE manager unless one answers, then mounts every lazy layer the metadata
    /// lists (a no-op for layers it still serves). Called at start and whenever the manager
    /// was found gone.
    pub async fn ensure_manager(&self) -> Result<(), ManagerError> {
        let _guard = self.manager_start.lock().await;
        let socket = self.manager_socket();
        match manager::call(&socket, &ManagerRequest::Ping).await {
            Ok(Reply::Pong { pid, keeper, exe }) => {
                tracing::info!(pid, ?keeper, "FUSE manager running");
                let ours = manager::exe_identity();
                if keeper.is_some() && exe != ours {
                    self.upgrade_manager(&socket, ours).await;
                } else if exe != ours {
                    tracing::warn!(pid, "the FUSE manager runs another binary and has no keeper to upgrade it; it keeps serving until the node restarts");
                }
            }
            _ => {
                let pid = manager::spawn(
                    &self.exe,
                    &self.root,
                    self.config_path.as_deref(),
                    &self.dir,
                )
                .await?;
                tracing::info!(pid, "FUSE manager started");
            }
        }
        let remote: Vec<(String, u64, RemoteLayerInfo)> = {
            let meta = self.meta.lock().await;
            meta.all()
                .filter_map(|(k, s)| Some((k.clone(), s.id, s.remote.clone()?)))
                .collect()
        };
        let mut restored = 0;
        for (name, id, layer) in remote {
            let spec = MountSpec {
                mountpoint: self.fs_dir(id),
                layer,
                connection: None,
            };
            let mut outcome = Ok(Reply::Done);
            for request in self.mount_requests(spec) {
                outcome = manager::call(&socket, &request).await;
                if outcome.is_err() {
                    break;
                }
            }
            match outcome {
                Ok(Reply::Mounted { already: false }) => restored += 1,
                Ok(_) => {}
                Err(e) => tracing::error!(
                    snapshot = %name,
                    "lazy layer not mounted; containers using it fail until it can be: {e}"
                ),
            }
        }
        if restored > 0 {
            tracing::info!(restored, "lazy layers mounted again from the metadata");
        }
        Ok(())
    }

    /// containerd's overlayfs mounts for snapshot `s`.
    fn mounts_for(&self, meta: &Metadata, s: &Snapshot) -> Result<Vec<Mount>, Status> {
        let parents: Vec<u64> = meta
            .parent_chain(&s.parent)
            .map_err(status_of)?
            .iter()
            .map(|(_, p)| p.id)
            .collect();
        let bind = |source: PathBuf, rw: bool| Mount {
            r#type: "bind".into(),
            source: source.display().to_string(),
            target: String::new(),
            options: vec![if rw { "rw" } else { "ro" }.into(), "rbind".into()],
        };
        if parents.is_empty() {
            return Ok(vec![bind(self.fs_dir(s.id), s.kind == Kind::Active)]);
        }
        let mut options = vec!["index=off".to_owned()];
        if s.kind == Kind::Active {
            options.push(format!("workdir={}", self.work_dir(s.id).display()));
            options.push(format!("upperdir={}", self.fs_dir(s.id).display()));
        } else if let [only] = parents[..] {
            return Ok(vec![bind(self.fs_dir(only), false)]);
        }
        let lower: Vec<String> = parents
            .iter()
            .map(|id| self.fs_dir(*id).display().to_string())
            .collect();
        options.push(format!("lowerdir={}", lower.join(":")));
        Ok(vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        }])
    }

    /// Checks that every lazy layer below `parent` is being served, mounting it again if the
    /// FUSE manager lost it: an unserved layer would look like an empty directory.
    async fn check_lazy_parents(&self, parent: &str) -> Result<(), Status> {
        let lazy: Vec<(u64, RemoteLayerInfo)> = {
            let meta = self.meta.lock().await;
            meta.parent_chain(parent)
                .map_err(status_of)?
                .into_iter()
                .filter_map(|(_, s)| Some((s.id, s.remote.clone()?)))
                .collect()
        };
        for (id, layer) in lazy {
            let mountpoint = self.fs_dir(id);
            if is_served(&mountpoint) {
                continue;
            }
            let digest = layer.layer_digest.clone();
            self.mount_in_manager(MountSpec {
                mountpoint,
                layer,
                connection: None,
            })
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "lazily mounted layer {digest} is not available: {e}"
                ))
            })?;
        }
        Ok(())
    }

    async fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, Status> {
        self.check_lazy_parents(parent).await?;
        let mut meta = self.meta.lock().await;
        let id = meta
            .create(kind, key, parent, labels, None)
            .map_err(status_of)?;
        let made = std::fs::create_dir_all(self.fs_dir(id)).and_then(|_| match kind {
            Kind::Active => std::fs::create_dir_all(self.work_dir(id)),
            _ => Ok(()),
        });
        if let Err(e) = made {
            let _ = meta.remove(key);
            let _ = std::fs::remove_dir_all(self.snapshot_dir(id));
            return Err(internal("creating the snapshot directory", e));
        }
        let s = meta.get(key).map_err(status_of)?.clone();
        self.mounts_for(&meta, &s)
    }

    /// Tries to satisfy a Prepare with a lazily mounted layer, described by `image_labels`
    /// (parsed from the Prepare's `labels`). `Some(status)` is the answer (AlreadyExists:
    /// containerd then finds the committed snapshot by label and parent); `None` means
    /// prepare normally so containerd pulls the layer.
    async fn try_remote(
        &self,
        key: &str,
        parent: &str,
        image_labels: &LayerLabels,
        labels: &BTreeMap<String, String>,
    ) -> Option<Status> {
        let target = image_labels.chain_id.as_str();
        let image_ref = image_labels.image_ref.as_str();
        let manifest: &str = image_labels.manifest_digest.as_ref();
        let layer: &str = image_labels.layer_digest.as_ref();
        {
            let meta = self.meta.lock().await;
            let exists = meta.all().any(|(_, s)| {
                s.kind == Kind::Committed
                    && s.parent == parent
                    && s.labels.get(LABEL_SNAPSHOT_REF).map(String::as_str) == Some(target)
            });
            if exists {
                return Some(Status::already_exists(format!(
                    "target snapshot {target:?} already exists"
                )));
            }
        }
        if let Err(e) = self.check_lazy_parents(parent).await {
            tracing::warn!(key, "{e}");
            return None;
        }
        let given_index = image_labels
            .soci_index_digest
            .as_ref()
            .map(AsRef::<str>::as_ref);
        let timeout = self.config.mount_timeout();
        let plan = tokio::time::timeout(
            timeout,
            self.resolver.plan(image_ref, manifest, layer, given_index),
        )
        .await;
        let info = match plan {
            Ok(LayerPlan::Lazy(info)) => info,
            Ok(LayerPlan::Pull(why)) => {
                if self.parallel.is_some() {
                    tracing::debug!(layer = %layer, image = %image_ref, "pulling in parallel mode: {why}");
                    return self
                        .pull_in_parallel(key, parent, image_labels, labels)
                        .await;
                }
                tracing::info!(layer = %layer, image = %image_ref, "pulling normally: {why}");
                self.counters.layers_pulled.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(_) => {
                tracing::warn!(layer = %layer, image = %image_ref, "finding the SOCI index took over {timeout:?}; pulling normally");
                self.counters.layers_pulled.fetch_add(1, Ordering::Relaxed);
                self.counters.mount_failures.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let name = format!("soci-remote/{target}/{}", unique_suffix());
        let mut snapshot_labels = labels.clone();
        snapshot_labels.insert(LABEL_REMOTE.into(), info.index_digest.clone());
        let id = {
            let mut meta = self.meta.lock().await;
            match meta.create(
                Kind::Committed,
                &name,
                parent,
                snapshot_labels,
                Some(info.clone()),
            ) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(key, "recording the lazy layer: {e}; pulling normally");
                    return None;
                }
            }
        };
        let mountpoint = self.fs_dir(id);
        let spec = MountSpec {
            mountpoint: mountpoint.clone(),
            layer: info,
            connection: None,
        };
        self.start_parallel_pull(key, image_labels).await;
        let mounted = tokio::time::timeout(timeout, self.mount_in_manager(spec)).await;
        let failure = match mounted {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("mounting took over {timeout:?}")),
        };
        if let Some(why) = failure {
            tracing::warn!(layer = %layer, image = %image_ref, "lazy mount failed, pulling normally: {why}");
            self.counters.mount_failures.fetch_add(1, Ordering::Relaxed);
            self.counters.layers_pulled.fetch_add(1, Ordering::Relaxed);
            // The manager may still finish the mount after a timeout: take it down again.
            let _ = self
                .manager_call(&ManagerRequest::Unmount { mountpoint })
                .await;
            {
                let mut meta = self.meta.lock().await;
                let _ = meta.remove(&name);
                let _ = std::fs::remove_dir_all(self.snapshot_dir(id));
            }
            if self.parallel.is_some() {
                return self
                    .pull_in_parallel(key, parent, image_labels, labels)
                    .await;
            }
            return None;
        }
        self.counters.layers_lazy.fetch_add(1, Ordering::Relaxed);
        tracing::info!(layer = %layer, image = %image_ref, snapshot = %name, "layer mounted lazily");
        Some(Status::already_exists(format!(
            "target snapshot {target:?} already exists (mounted lazily)"
        )))
    }

    /// What a parallel pull of the image of a Prepare (its `key` and `image_labels`) needs
    /// to know besides the image: which layers are served lazily or exist already.
    async fn pull_context(&self, key: &str, image_labels: &LayerLabels) -> PullContext {
        let given_index = image_labels
            .soci_index_digest
            .as_ref()
            .map(AsRef::<str>::as_ref);
        let lazy = self
            .resolver
            .lazy_layers(
                &image_labels.image_ref,
                image_labels.manifest_digest.as_ref(),
                given_index,
            )
            .await;
        let existing = {
            let meta = self.meta.lock().await;
            meta.all()
                .filter(|(_, s)| s.kind == Kind::Committed)
                .filter_map(|(_, s)| s.labels.get(LABEL_SNAPSHOT_REF).cloned())
                .collect()
        };
        // containerd names a remote snapshotter's keys `<namespace>/<n>/<key>`.
        let namespace = key
            .split('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_owned();
        PullContext {
            namespace,
            lazy,
            existing,
        }
    }

    /// In parallel mode, on the Prepare of a layer about to be served lazily: starts pulling
    /// the image's layers that are not (an app layer below the index's min-layer-size, say),
    /// in the background, so containerd's Prepare of each finds it on its way or done
    /// instead of starting it only then, after the lazy layers below it are mounted.
    async fn start_parallel_pull(&self, key: &str, image_labels: &LayerLabels) {
        let Some(puller) = self.parallel.clone() else {
            return;
        };
        let context = self.pull_context(key, image_labels).await;
        // The layer labels list this layer and those above it (as many as fit): nothing to
        // start when all of them are served lazily.
        let to_pull = image_labels
            .image_layers
            .iter()
            .skip(1)
            .any(|l| !context.lazy.contains(l));
        if to_pull {
            let labels = image_labels.clone();
            tokio::spawn(async move { puller.start(&context.request(&labels, None)).await });
        }
    }

    /// Satisfies a Prepare by pulling the layer in parallel mode: a committed snapshot is
    /// made from the unpacked, verified layer, and containerd told it exists. A failed pull
    /// fails the Prepare with the reason (no snapshot is left); `None` means containerd pulls
    /// the layer itself (a layer this image's job does not pull).
    async fn pull_in_parallel(
        &self,
        key: &str,
        parent: &str,
        image_labels: &LayerLabels,
        labels: &BTreeMap<String, String>,
    ) -> Option<Status> {
        let puller = self.parallel.as_ref()?;
        let target = image_labels.chain_id.as_str();
        let image = image_labels.image_ref.as_str();
        let layer = &image_labels.layer_digest;
        let context = self.pull_context(key, image_labels).await;
        let request = context.request(image_labels, Some(layer));
        let staging = match puller.pull_layer(&request).await {
            Ok(Some(staging)) => staging,
            Ok(None) => {
                self.counters.layers_pulled.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Err(e) => {
                self.counters
                    .parallel_failures
                    .fetch_add(1, Ordering::Relaxed);
                return Some(Status::data_loss(format!(
                    "parallel pull of layer {layer}: {e}"
                )));
            }
        };
        // The snapshot is recorded only now, with its content verified, so a crash during
        // the pull never leaves a committed snapshot without content.
        let name = format!("soci-parallel/{target}/{}", unique_suffix());
        let mut meta = self.meta.lock().await;
        let id = match meta.create(Kind::Committed, &name, parent, labels.clone(), None) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(image, "recording the layer: {e}; pulling normally");
                let _ = std::fs::remove_dir_all(&staging);
                return None;
            }
        };
        if let Err(e) = crate::parallel_pull::claim(&staging, &self.fs_dir(id)) {
            let _ = meta.remove(&name);
            let _ = std::fs::remove_dir_all(self.snapshot_dir(id));
            let _ = std::fs::remove_dir_all(&staging);
            self.counters
                .parallel_failures
                .fetch_add(1, Ordering::Relaxed);
            return Some(Status::internal(format!(
                "parallel pull of layer {layer}: {e}"
            )));
        }
        self.counters
            .layers_parallel
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(layer = %layer, image, snapshot = %name, "layer pulled in parallel mode");
        Some(Status::already_exists(format!(
            "target snapshot {target:?} already exists (pulled in parallel mode)"
        )))
    }

    /// Removes a snapshot's directory, unmounting its lazy layer first.
    async fn remove_storage(&self, s: &Snapshot) {
        let dir = self.snapshot_dir(s.id);
        if s.remote.is_some() {
            let mountpoint = self.fs_dir(s.id);
            if let Err(e) = self
                .manager_call(&ManagerRequest::Unmount {
                    mountpoint: mountpoint.clone(),
                })
                .await
            {
                tracing::warn!(mountpoint = %mountpoint.display(), "unmounting: {e}");
            }
            if lazyfs::overlay::is_mounted(&mountpoint) {
                let _ = lazyfs::overlay::unmount(&mountpoint, true);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), "removing: {e}");
            }
        }
    }

    /// Removes snapshot directories no snapshot owns (left by a crash mid-operation).
    async fn cleanup_orphans(&self) -> Result<usize, Status> {
        // The directories are listed under the metadata lock: a snapshot is recorded and its
        // directory made under that lock, and ids are never reused, so a directory without a
        // record at this point can only be an orphan.
        let orphans: Vec<PathBuf> = {
            let meta = self.meta.lock().await;
            let ids: std::collections::HashSet<u64> = meta.all().map(|(_, s)| s.id).collect();
            std::fs::read_dir(self.dir.join("snapshots"))
                .map_err(|e| internal("listing snapshot directories", e))?
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .parse::<u64>()
                        .is_ok_and(|id| !ids.contains(&id))
                })
                .map(|e| e.path())
                .collect()
        };
        let mut removed = 0;
        for dir in orphans {
            let fs = dir.join("fs");
            if lazyfs::overlay::is_mounted(&fs) {
                let _ = self
                    .manager_call(&ManagerRequest::Unmount {
                        mountpoint: fs.clone(),
                    })
                    .await;
                let _ = lazyfs::overlay::unmount(&fs, true);
            }
            if std::fs::remove_dir_all(&dir).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Prometheus text: the daemon's counters and every lazy layer's.
    pub async fn metrics_text(&self) -> String {
        use std::fmt::Write;
        let (snapshots, lazy) = {
            let meta = self.meta.lock().await;
            let all: Vec<_> = meta.all().collect();
            (
                all.len(),
                all.iter().filter(|(_, s)| s.remote.is_some()).count(),
            )
        };
        let mut out = String::new();
        let c = &self.counters;
        for (name, help, value) in [
            (
                "soci_snapshotter_layers_lazy_total",
                "Layers mounted lazily.",
                c.layers_lazy.load(Ordering::Relaxed),
            ),
            (
                "soci_snapshotter_layers_pulled_total",
                "Layers left to containerd to pull (no index, no zTOC, or a failure).",
                c.layers_pulled.load(Ordering::Relaxed),
            ),
            (
                "soci_snapshotter_mount_failures_total",
                "Lazy mounts that failed or timed out.",
                c.mount_failures.load(Ordering::Relaxed),
            ),
            (
                "soci_snapshotter_layers_parallel_pulled_total",
                "Layers pulled and unpacked by the snapshotter in parallel pull mode.",
                c.layers_parallel.load(Ordering::Relaxed),
            ),
            (
                "soci_snapshotter_parallel_pull_failures_total",
                "Parallel pulls that failed (their Prepare failed).",
                c.parallel_failures.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP soci_snapshotter_snapshots Snapshots known.\n# TYPE soci_snapshotter_snapshots gauge\nsoci_snapshotter_snapshots {snapshots}\n\
             # HELP soci_snapshotter_lazy_snapshots Snapshots that are lazily mounted layers.\n# TYPE soci_snapshotter_lazy_snapshots gauge\nsoci_snapshotter_lazy_snapshots {lazy}"
        );
        match manager::call(&self.manager_socket(), &ManagerRequest::Metrics).await {
            Ok(Reply::Metrics { text }) => out.push_str(&text),
            Ok(_) => {}
            Err(e) => tracing::debug!("layer metrics unavailable: {e}"),
        }
        out
    }

    /// Asks the FUSE manager to unmount everything and exit (for uninstalling; containers
    /// using lazy layers lose their files).
    pub async fn stop_manager(&self) -> Result<(), ManagerError> {
        match manager::call(&self.manager_socket(), &ManagerRequest::Shutdown).await {
            Ok(_) | Err(ManagerError::Unreachable { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// What [`Snapshotter::pull_context`] found out for a parallel pull.
struct PullContext {
    namespace: String,
    lazy: std::collections::HashSet<oci::Digest>,
    existing: std::collections::HashSet<String>,
}

impl PullContext {
    /// The request for the image `image_labels` describe, pulling `layer` if given.
    fn request<'a>(
        &'a self,
        image_labels: &'a LayerLabels,
        layer: Option<&'a oci::Digest>,
    ) -> PullRequest<'a> {
        PullRequest {
            image: &image_labels.image_ref,
            manifest: image_labels.manifest_digest.as_ref(),
            layer,
            lazy: &self.lazy,
            existing: &self.existing,
            namespace: &self.namespace,
        }
    }
}

/// A suffix that makes the name of a snapshot this daemon commits itself unique.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Whether a FUSE mountpoint is mounted and answered by a live server. The mount of a dead
/// server stays listed and fails with ENOTCONN, but `stat` may still be answered from the
/// kernel's attribute cache; `statfs` always goes to the server.
fn is_served(mountpoint: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if !lazyfs::overlay::is_mounted(mountpoint) {
        return false;
    }
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `path` is a valid C string and `buf` a properly sized, writable statfs.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(path.as_ptr(), &mut buf) == 0 }
}

/// `du`: apparent size and inode count of a directory tree (not following symlinks or
/// crossing into other filesystems, as containerd's fs.DiskUsage).
fn disk_usage(dir: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let mut seen = std::collections::HashSet::new();
    let (mut size, mut inodes) = (0i64, 0i64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.dev() != dev || !seen.insert(md.ino()) {
                continue;
            }
            inodes += 1;
            size += (md.blocks() * 512) as i64;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (size, inodes)
}

type ListStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ListSnapshotsResponse, Status>> + Send>>;

/// Snapshots per List message (containerd reads batches).
const LIST_BATCH: usize = 100;

#[tonic::async_trait]
impl Snapshots for Arc<Snapshotter> {
    async fn prepare(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        tracing::debug!(key = %r.key, parent = %r.parent, labels = ?r.labels, "Prepare");
        let labels = to_btree(r.labels);
        match LayerLabels::parse(&labels) {
            Ok(image_labels) => {
                let remote = self.try_remote(&r.key, &r.parent, &image_labels, &labels);
                if let Some(status) = remote.await {
                    return Err(status);
                }
            }
            Err(LabelError::Missing { label }) => {
                tracing::debug!(key = %r.key, "no {label} label: a normal Prepare");
            }
            Err(e) => tracing::info!(key = %r.key, "{e}; pulling normally"),
        }
        let mounts = self.create(Kind::Active, &r.key, &r.parent, labels).await?;
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        request: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        tracing::debug!(key = %r.key, parent = %r.parent, "View");
        let mounts = self
            .create(Kind::View, &r.key, &r.parent, to_btree(r.labels))
            .await?;
        Ok(Response::new(pb::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        request: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let key = request.into_inner().key;
        let parent = {
            let meta = self.meta.lock().await;
            let s = meta.get(&key).map_err(status_of)?;
            if s.kind == Kind::Committed {
                return Err(Status::failed_precondition(format!(
                    "snapshot {key} is committed; only active snapshots and views have mounts"
                )));
            }
            s.parent.clone()
        };
        self.check_lazy_parents(&parent).await?;
        let meta = self.meta.lock().await;
        let s = meta.get(&key).map_err(status_of)?.clone();
        let mounts = self.mounts_for(&meta, &s)?;
        Ok(Response::new(pb::MountsResponse { mounts }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        tracing::debug!(key = %r.key, name = %r.name, "Commit");
        let mut meta = self.meta.lock().await;
        let id = meta
            .commit(&r.name, &r.key, to_btree(r.labels))
            .map_err(status_of)?;
        // The work directory is only needed while the snapshot is writable.
        let _ = std::fs::remove_dir_all(self.work_dir(id));
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let key = request.into_inner().key;
        tracing::debug!(key = %key, "Remove");
        let removed = {
            let mut meta = self.meta.lock().await;
            meta.remove(&key).map_err(status_of)?
        };
        self.remove_storage(&removed).await;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let key = request.into_inner().key;
        let meta = self.meta.lock().await;
        let s = meta.get(&key).map_err(status_of)?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info(&key, s)),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let given = r
            .info
            .ok_or_else(|| Status::invalid_argument("Update without snapshot info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut meta = self.meta.lock().await;
        let labels = to_btree(given.labels);
        let s = meta
            .update_labels(&given.name, &labels, &paths)
            .map_err(|e| match e {
                UpdateError::Metadata(m) => status_of(m),
                UpdateError::Field(_) => Status::invalid_argument(e.to_string()),
            })?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info(&given.name, s)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let filters = request.into_inner().filters;
        let (filter, problem) = Filters::parse(&filters);
        if let Some(p) = problem {
            tracing::debug!("{p}");
        }
        let infos: Vec<pb::Info> = {
            let meta = self.meta.lock().await;
            meta.all()
                .filter(|(k, s)| filter.matches(k, s))
                .map(|(k, s)| info(k, s))
                .collect()
        };
        let batches: Vec<Result<pb::ListSnapshotsResponse, Status>> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(pb::ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let key = request.into_inner().key;
        let (id, remote) = {
            let meta = self.meta.lock().await;
            let s = meta.get(&key).map_err(status_of)?;
            (s.id, s.remote.is_some())
        };
        if remote {
            // Walking a lazy layer would stat every file through FUSE; it uses no local disk
            // beyond the shared span cache.
            return Ok(Response::new(pb::UsageResponse { size: 0, inodes: 0 }));
        }
        let dir = self.fs_dir(id);
        let (size, inodes) = tokio::task::spawn_blocking(move || disk_usage(&dir))
            .await
            .map_err(|e| internal("computing usage", e))?;
        Ok(Response::new(pb::UsageResponse { size, inodes }))
    }

    async fn cleanup(&self, _request: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let removed = self.cleanup_orphans().await?;
        if removed > 0 {
            tracing::info!(removed, "orphaned snapshot directories removed");
        }
        Ok(Response::new(()))
    }
}
