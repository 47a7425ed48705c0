//! With the `cri` feature, generates a client of the Kubernetes CRI image service so tests
//! can pull through containerd's CRI plugin as the kubelet does. Needs `protoc`.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    if std::env::var_os("CARGO_FEATURE_CRI").is_none() {
        return;
    }
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(
            &["proto/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto"],
            &["proto"],
        )
        .expect("generate the CRI client (is protoc installed? scripts/install-deps.sh)");
}
