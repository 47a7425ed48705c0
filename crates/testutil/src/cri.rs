//! A client of the Kubernetes CRI image service (`runtime.v1.ImageService`) over containerd's
//! socket: pulls and removes images the way the kubelet does, so tests exercise the labels
//! and the remote-snapshot path CRI uses.

#[allow(missing_docs, clippy::all)]
mod runtime {
    tonic::include_proto!("runtime.v1");
}

use runtime::image_service_client::ImageServiceClient;
use runtime::{ImageSpec, PullImageRequest, RemoveImageRequest};
use std::path::Path;

/// A gRPC channel over the unix socket `socket` (containerd's, or a snapshotter's).
pub async fn unix_channel(socket: &Path) -> tonic::transport::Channel {
    let path = socket.to_owned();
    tonic::transport::Endpoint::try_from("http://[::]:50051")
        .expect("a valid placeholder URI")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()))
}

async fn client(socket: &Path) -> ImageServiceClient<tonic::transport::Channel> {
    ImageServiceClient::new(unix_channel(socket).await)
}

/// `PullImage(image)` through CRI (namespace `k8s.io`); returns the image id CRI reports.
pub async fn pull_image(socket: &Path, image: &str) -> Result<String, tonic::Status> {
    let reply = client(socket)
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await?;
    Ok(reply.into_inner().image_ref)
}

/// `RemoveImage(image)` through CRI.
pub async fn remove_image(socket: &Path, image: &str) -> Result<(), tonic::Status> {
    client(socket)
        .await
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
        })
        .await?;
    Ok(())
}
