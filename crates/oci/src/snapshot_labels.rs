//! The snapshot labels a pull puts on each layer's Prepare for a remote snapshotter, shared by
//! the puller (`soci image rpull`) and the snapshotter so both sides agree by construction.
//! Names are containerd's (`pkg/snapshotters`, as CRI sets them) and AWS SOCI's.

/// The layer's chain ID: containerd's signal that a remote snapshotter may provide it.
pub const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
/// The image reference.
pub const IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
/// The image manifest digest.
pub const MANIFEST_DIGEST: &str = "containerd.io/snapshot/cri.manifest-digest";
/// This layer's (compressed) digest.
pub const LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";
/// This and the following layers' digests, comma-joined (cut to fit the label size limit).
pub const IMAGE_LAYERS: &str = "containerd.io/snapshot/cri.image-layers";
/// This layer's size (AWS SOCI).
pub const SOCI_SIZE: &str = "containerd.io/snapshot/remote/soci.size";
/// The sizes of the layers in [`IMAGE_LAYERS`], comma-joined (AWS SOCI).
pub const LAYERS_SIZE: &str = "containerd.io/snapshot/remote/image.layers.size";
/// The SOCI index digest the pull asked for (AWS SOCI's `--soci-index-digest`).
pub const SOCI_INDEX_DIGEST: &str = "containerd.io/snapshot/remote/soci.index.digest";
