//! The Kubernetes CRI v1 API (`runtime.v1`), generated from the proto containerd 1.6 vendors.
//! The snapshotter serves [`runtime::image_service_server::ImageService`] (its CRI keychain)
//! and forwards to containerd's with [`runtime::image_service_client::ImageServiceClient`].

/// Generated types, clients and servers of `runtime.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod runtime {
    tonic::include_proto!("runtime.v1");
}
