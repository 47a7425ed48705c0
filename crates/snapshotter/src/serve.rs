//! Running the daemon: the gRPC server on a unix socket, the FUSE manager, and the metrics
//! endpoint.

use crate::config::Config;
use crate::error::DaemonError;
use crate::proto::snapshots_server::SnapshotsServer;
use crate::service::Snapshotter;
use cri_api::runtime::image_service_server::ImageServiceServer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The gRPC socket containerd connects to.
    pub address: PathBuf,
    /// The data root.
    pub root: PathBuf,
    /// The config file to hand to the FUSE manager (`None`: the defaults).
    pub config_path: Option<PathBuf>,
    /// This executable (the FUSE manager is started from it).
    pub exe: PathBuf,
}

/// Runs the daemon until SIGINT or SIGTERM. Lazy layers stay mounted by the FUSE manager
/// after it returns, so running containers keep working across a restart.
pub async fn run_daemon(options: DaemonOptions, config: Config) -> Result<(), DaemonError> {
    let metrics_address = (!config.no_prometheus && !config.metrics_address.is_empty())
        .then(|| config.metrics_address.clone());
    let snapshotter = Arc::new(Snapshotter::open(
        &options.root,
        config,
        options.config_path.clone(),
        options.exe.clone(),
    )?);
    snapshotter
        .ensure_manager()
        .await
        .map_err(DaemonError::Manager)?;

    if let Some(addr) = metrics_address {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(DaemonError::io(format!(
                "metrics endpoint: listening on {addr}"
            )))?;
        tracing::info!(address = %addr, "metrics at http://{addr}/metrics");
        let s = snapshotter.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let s = s.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        s.metrics_text().await,
                    )
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("metrics endpoint stopped: {e}");
            }
        });
    }

    let cri = cri_image_service(&snapshotter);
    let listener = bind_socket(&options.address)?;
    tracing::info!(address = %options.address.display(), "soci-snapshotter-grpc ready");
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::info!("stopping; lazy layers stay mounted by the FUSE manager");
    };
    tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(snapshotter))
        .add_optional_service(cri)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(DaemonError::Grpc)?;
    let _ = std::fs::remove_file(&options.address);
    Ok(())
}

/// The CRI image service the kubelet may pull through (`[cri_keychain]`), when it is on: it
/// shares the snapshots socket, as AWS's does, and hands each new credential to the FUSE
/// manager.
fn cri_image_service(
    snapshotter: &Arc<Snapshotter>,
) -> Option<ImageServiceServer<crate::cri_keychain::CriKeychain>> {
    let keychain = snapshotter.keychain()?.clone();
    let backend = snapshotter.config().cri_keychain.image_service_path.clone();
    tracing::info!(backend = %backend.display(), "serving the CRI image service (cri_keychain); point the kubelet's --image-service-endpoint at this socket");
    let (changed, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let s = snapshotter.clone();
    tokio::spawn(async move {
        while let Some(entry) = rx.recv().await {
            s.hand_credentials(entry).await;
        }
    });
    let proxy = crate::cri_keychain::CriKeychain::new(keychain, backend, changed);
    Some(
        ImageServiceServer::new(proxy)
            .max_decoding_message_size(crate::cri_keychain::MAX_MESSAGE)
            .max_encoding_message_size(crate::cri_keychain::MAX_MESSAGE),
    )
}

/// Binds the gRPC socket, replacing a stale one but refusing to steal a live daemon's.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, DaemonError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(DaemonError::io(format!("creating {}", dir.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::SocketInUse {
                socket: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(DaemonError::io(format!(
            "removing the stale socket {}",
            path.display()
        )))?;
    }
    tokio::net::UnixListener::bind(path)
        .map_err(DaemonError::io(format!("listening on {}", path.display())))
}
