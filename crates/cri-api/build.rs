//! Generates the Kubernetes CRI v1 API (client and server). Needs `protoc`
//! (Debian: protobuf-compiler; `scripts/install-deps.sh`).

fn main() {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(
            &["proto/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"],
            &["proto"],
        )
        .expect("generate the CRI API (is protoc installed? scripts/install-deps.sh)");
}
