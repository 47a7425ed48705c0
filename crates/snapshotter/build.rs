//! Generates the server side of containerd's snapshots API (containerd-client only ships
//! clients). Message types are not generated: they are `containerd-client`'s, so the server
//! and the client share one set of types and one tonic stack. Needs `protoc`
//! (Debian: protobuf-compiler).

fn main() {
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .extern_path(".containerd.types", "::containerd_client::types")
        .extern_path(
            ".containerd.services.snapshots.v1",
            "::containerd_client::services::v1::snapshots",
        )
        .compile_protos(
            &["proto/github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto"],
            &["proto"],
        )
        .expect(
            "generate the snapshots gRPC server (is protoc installed? scripts/install-deps.sh)",
        );
    println!("cargo:rerun-if-changed=proto");
}
