//! The CRI keychain: the daemon serves the Kubernetes CRI image service (`runtime.v1`) and
//! forwards every call to containerd's. On the way it keeps the credentials of each
//! `PullImage` (the kubelet's image pull secret) for that image's registry and repository,
//! so the lazy fetches of the image's SOCI index, zTOCs and spans authenticate as the pull
//! did. Credentials are kept in memory only and never logged.

use cri_api::runtime::image_service_client::ImageServiceClient;
use cri_api::runtime::image_service_server::ImageService;
use cri_api::runtime::{
    AuthConfig, ImageFsInfoRequest, ImageFsInfoResponse, ImageStatusRequest, ImageStatusResponse,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse,
};
use oci::reference::ImageRef;
use registry::credentials::Credential;
use registry::{Keychain, KeychainEntry};
use std::path::PathBuf;
use tokio::sync::mpsc::UnboundedSender;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Largest CRI message forwarded (image lists of a busy node), as containerd allows.
pub const MAX_MESSAGE: usize = 16 << 20;

/// The image service proxy.
pub struct CriKeychain {
    keychain: Keychain,
    backend_path: PathBuf,
    backend: tokio::sync::Mutex<Option<Channel>>,
    /// Told each credential that is new or changed (to hand it to the FUSE manager).
    changed: UnboundedSender<KeychainEntry>,
}

impl CriKeychain {
    /// A proxy to the CRI image service at `backend_path` that remembers pull credentials in
    /// `keychain` and sends each new or changed one to `changed`.
    pub fn new(
        keychain: Keychain,
        backend_path: PathBuf,
        changed: UnboundedSender<KeychainEntry>,
    ) -> Self {
        CriKeychain {
            keychain,
            backend_path,
            backend: tokio::sync::Mutex::new(None),
            changed,
        }
    }

    /// A client of containerd's image service, connecting on first use (containerd may
    /// start after us); the channel reconnects by itself afterwards.
    async fn backend(&self) -> Result<ImageServiceClient<Channel>, Status> {
        let mut slot = self.backend.lock().await;
        let channel = match &*slot {
            Some(c) => c.clone(),
            None => {
                let c = containerd::client::unix_channel(&self.backend_path)
                    .await
                    .map_err(|e| {
                        Status::unavailable(format!(
                            "the CRI image service at {} (cri_keychain.image_service_path): {}",
                            self.backend_path.display(),
                            registry::error_chain(&e)
                        ))
                    })?;
                *slot = Some(c.clone());
                c
            }
        };
        Ok(ImageServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// The keychain entry a pull of `image` with `auth` brings, if it brings usable
    /// credentials for the image's registry.
    fn entry_of(image: &str, auth: &AuthConfig) -> Option<KeychainEntry> {
        let Ok(ImageRef::Registry {
            registry,
            repository,
            ..
        }) = ImageRef::parse(image)
        else {
            return None;
        };
        // containerd ignores credentials meant for another registry; so do we.
        if !auth.server_address.is_empty()
            && !registry::credentials::server_address_is(&auth.server_address, &registry)
        {
            tracing::debug!(%registry, "CRI pull credentials name another registry; not kept");
            return None;
        }
        match credential_of(auth) {
            Ok(Some(credential)) => Some(KeychainEntry {
                registry,
                repository,
                credential,
            }),
            Ok(None) => None,
            Err(reason) => {
                tracing::warn!(%registry, %repository, "CRI pull credentials not usable: {reason}");
                None
            }
        }
    }

    /// Forwards a pull. Its credentials are kept before it is forwarded, since containerd
    /// asks us for the snapshots (and we fetch the SOCI index) while the pull runs; if the
    /// pull fails they are dropped again and what was kept before stays, so a pull with a
    /// wrong secret cannot break the lazy layers of an earlier, good one.
    async fn forward_pull(
        &self,
        request: PullImageRequest,
    ) -> Result<Response<PullImageResponse>, Status> {
        let entry = match (&request.image, &request.auth) {
            (Some(image), Some(auth)) => Self::entry_of(&image.image, auth),
            _ => None,
        };
        let Some(entry) = entry else {
            return self.backend().await?.pull_image(request).await;
        };
        let previous = self.keychain.get(&entry.registry, &entry.repository);
        let changed = self.keychain.remember(entry.clone());
        let result = match self.backend().await {
            Ok(mut backend) => backend.pull_image(request).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(_) if changed => {
                tracing::info!(registry = %entry.registry, repository = %entry.repository, "keeping the credentials of a CRI pull");
                let _ = self.changed.send(entry);
            }
            Ok(_) => {}
            Err(_) => self
                .keychain
                .restore(&entry.registry, &entry.repository, previous),
        }
        result
    }
}

/// The credential in a CRI `AuthConfig`, in containerd's order of preference: user name and
/// password, identity token, `auth`, registry token.
pub fn credential_of(auth: &AuthConfig) -> Result<Option<Credential>, &'static str> {
    if !auth.username.is_empty() {
        return Ok(Some(Credential::Basic {
            username: auth.username.clone(),
            password: auth.password.clone(),
        }));
    }
    if !auth.identity_token.is_empty() {
        return Ok(Some(Credential::IdentityToken(auth.identity_token.clone())));
    }
    if !auth.auth.is_empty() {
        let (username, password) = registry::credentials::decode_auth(&auth.auth)?;
        return Ok(Some(Credential::Basic { username, password }));
    }
    if !auth.registry_token.is_empty() {
        return Ok(Some(Credential::RegistryToken(auth.registry_token.clone())));
    }
    Ok(None)
}

#[tonic::async_trait]
impl ImageService for CriKeychain {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        self.backend()
            .await?
            .list_images(request.into_inner())
            .await
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        self.backend()
            .await?
            .image_status(request.into_inner())
            .await
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        self.forward_pull(request.into_inner()).await
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        self.backend()
            .await?
            .remove_image(request.into_inner())
            .await
    }

    async fn image_fs_info(
        &self,
        request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        self.backend()
            .await?
            .image_fs_info(request.into_inner())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_containerds_order() {
        let basic = |u: &str, p: &str| {
            Some(Credential::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        let mut a = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            identity_token: "idt".into(),
            auth: "dTI6cDI=".into(), // u2:p2
            registry_token: "rt".into(),
            ..Default::default()
        };
        assert_eq!(credential_of(&a), Ok(basic("u", "p")));
        a.username.clear();
        assert_eq!(
            credential_of(&a),
            Ok(Some(Credential::IdentityToken("idt".into())))
        );
        a.identity_token.clear();
        assert_eq!(credential_of(&a), Ok(basic("u2", "p2")));
        a.auth.clear();
        assert_eq!(
            credential_of(&a),
            Ok(Some(Credential::RegistryToken("rt".into())))
        );
        a.registry_token.clear();
        assert_eq!(credential_of(&a), Ok(None));
        a.auth = "not base64!".into();
        assert!(credential_of(&a).is_err());
    }

    #[test]
    fn pulls_bring_credentials_for_the_repository_of_their_registry() {
        let auth = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        let key = |image: &str, auth: &AuthConfig| {
            CriKeychain::entry_of(image, auth).map(|e| format!("{}/{}", e.registry, e.repository))
        };
        assert_eq!(
            key("reg.example:5000/team/app:v1", &auth).as_deref(),
            Some("reg.example:5000/team/app")
        );
        assert_eq!(
            key("busybox", &auth).as_deref(),
            Some("docker.io/library/busybox")
        );
        let hub = AuthConfig {
            server_address: "https://index.docker.io/v1/".into(),
            ..auth.clone()
        };
        assert!(key("busybox", &hub).is_some(), "Docker Hub's aliases");
        // Meant for another registry: containerd would not use them for this image.
        let elsewhere = AuthConfig {
            server_address: "https://other.example/v1/".into(),
            ..auth.clone()
        };
        assert_eq!(key("reg.example:5000/team/other:v1", &elsewhere), None);
        assert_eq!(
            key("reg.example:5000/team/app", &AuthConfig::default()),
            None
        );
    }
}
