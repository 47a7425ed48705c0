//! A client of the Kubernetes CRI image service (`runtime.v1.ImageService`) over a unix socket
//! (containerd's, or the snapshotter's CRI keychain proxy): pulls and removes images the way
//! the kubelet does, so tests exercise the labels and the remote-snapshot path CRI uses.

use cri_api::runtime::image_service_client::ImageServiceClient;
use cri_api::runtime::{AuthConfig, ImageSpec, PullImageRequest, RemoveImageRequest};
use std::path::Path;

/// A gRPC channel over the unix socket `socket` (containerd's, or a snapshotter's).
pub async fn unix_channel(socket: &Path) -> tonic::transport::Channel {
    containerd::client::unix_channel(socket)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()))
}

async fn client(socket: &Path) -> ImageServiceClient<tonic::transport::Channel> {
    ImageServiceClient::new(unix_channel(socket).await)
}

/// `PullImage(image)` through CRI (namespace `k8s.io`); returns the image id CRI reports.
pub async fn pull_image(socket: &Path, image: &str) -> Result<String, tonic::Status> {
    pull_image_with_auth(socket, image, None).await
}

/// `PullImage(image)` with the user name and password a kubelet takes from an image pull
/// secret.
pub async fn pull_image_with_auth(
    socket: &Path,
    image: &str,
    user: Option<(&str, &str)>,
) -> Result<String, tonic::Status> {
    let auth = user.map(|(username, password)| AuthConfig {
        username: username.to_owned(),
        password: password.to_owned(),
        ..Default::default()
    });
    let reply = client(socket)
        .await
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            auth,
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
