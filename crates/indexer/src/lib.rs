//! The SOCI build side as a library: the one pipeline behind `soci create`, `soci convert`,
//! `soci push` and `soci-index-builder`. An image is read from a registry, an OCI layout or
//! containerd's content store; each distinct layer is streamed once through the zTOC builder
//! (or its zTOC reused from the local store); one SOCI index is built per image manifest, with
//! prefetch artifacts; and the indexes are kept locally (v1, `soci create`), published with
//! referrers (v1, `soci push` and the builder) or bound to the images by a new image index
//! written to a registry or a layout (v2, `soci convert`).
//!
//! Modules:
//! - [`source`]: where an image is read from, resolved to its image manifests;
//! - [`layer`]: one layer through the zTOC builder, verified; which layers are skipped;
//! - [`ztocs`]: the zTOCs of every distinct layer, concurrently, with progress and reuse;
//! - [`prefetch`]: prefetch lists (paths, byte ranges) and their span ranges;
//! - [`index`]: SOCI index manifests, one per image;
//! - [`local`]: the local store and metadata database;
//! - [`pipeline`]: the build and its three ends (create, publish v1, convert);
//! - [`publish`]: v1 publishing (blobs, manifest, referrers tag schema);
//! - [`push`]: `soci push`: publishing the v1 indexes recorded locally;
//! - [`binding`]: the v2 image index binding (pure);
//! - [`destination`]: where converted images are written;
//! - `check`: the builder's decision to skip or build;
//! - [`error`]: typed errors, with which are worth retrying.

// `Error` wraps `registry::Error` (128 bytes) unboxed, as the builder matches on it; one
// error per image build is not worth boxing for.
#![allow(clippy::result_large_err)]

pub mod binding;
mod check;
pub mod destination;
pub mod error;
pub mod index;
pub mod layer;
pub mod local;
pub mod pipeline;
pub mod prefetch;
pub mod publish;
pub mod push;
pub mod source;
pub mod ztocs;

pub use check::is_referrers_tag;
pub use error::{Error, Result};
pub use layer::build_layer_ztoc;
pub use prefetch::PrefetchPath;
pub use source::{ImageSource, OpenedImage};

/// What to build.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Uncompressed bytes between gzip checkpoints (default [`DEFAULT_SPAN_SIZE`]).
    pub span_size: u64,
    /// Layers smaller than this get no zTOC (default 10 MiB, as `soci create`).
    pub min_layer_size: u64,
    /// An image whose layer sizes sum below this is skipped as
    /// [`SkipReason::TooSmall`] (default 0).
    pub min_image_size: u64,
    /// Which platforms of a multi-platform image to index (default all).
    pub platforms: oci::resolve::PlatformSelection,
    /// Layers streamed and indexed at once, each on a blocking thread (default 2).
    pub layer_concurrency: usize,
    /// Build tool identifier written into zTOCs and index annotations (default
    /// [`ztoc::DEFAULT_BUILD_TOOL`]).
    pub build_tool: String,
    /// Rebuild zTOCs even when the local store has one built with these settings.
    pub force: bool,
    /// Files to prefetch: each image's index gets prefetch artifacts for their spans.
    pub prefetch: Vec<PrefetchPath>,
    /// Where gzip checkpoints go (default uniform).
    pub checkpoints: CheckpointPolicy,
    /// List a lean zTOC beside each gzip zTOC (default on): soci-rs readers fetch it instead
    /// of the zTOC before a layer's first read, and only the checkpoint windows of the spans
    /// they read later; AWS's readers pass over it.
    pub lean_ztocs: bool,
}

/// Default span size of the zTOCs built: 1 MiB, not AWS's 4 MiB
/// ([`ztoc::DEFAULT_SPAN_SIZE`]). A start fetches whole spans, so smaller spans move fewer
/// bytes, and with lean zTOCs a span's 32 KiB window costs a reader nothing until it reads
/// the span. Measured by exact accounting on the three bench workloads (`bench/span-sizes.sh`,
/// 2026-12-07, the byte ranges each start reads): a lean reader moves 10.6, 23.3 and 124.2 MB
/// at 1 MiB against 21.9, 39.7 and 172.5 MB at 4 MiB, and a reader of whole zTOCs (AWS's
/// snapshotter) moves 16.0, 43.5 and 175.1 MB against 23.6, 45.4 and 188.3 MB, so neither pays
/// for it. Smaller still helps lean readers (512 KiB: 7.9, 19.6, 106.1 MB) but costs readers
/// of whole zTOCs more than AWS's default does on two of the three (57.8 and 200.4 MB).
pub const DEFAULT_SPAN_SIZE: u64 = 1 << 20;

/// Where the gzip checkpoints of the zTOCs built go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckpointPolicy {
    /// A checkpoint every `span_size` uncompressed bytes, as AWS's CLI places them.
    #[default]
    Uniform,
    /// Around the read set given as `prefetch` (the byte ranges `soci mount
    /// --record-read-ranges` writes, or whole files): spans begin just before and end just
    /// after what was read, so a start fetches little more than it reads; elsewhere spans
    /// of up to `span_size`. Layers the read set does not touch keep uniform spans.
    Reads,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            span_size: DEFAULT_SPAN_SIZE,
            min_layer_size: 10 << 20,
            min_image_size: 0,
            platforms: oci::resolve::PlatformSelection::All,
            layer_concurrency: 2,
            build_tool: ztoc::DEFAULT_BUILD_TOOL.to_owned(),
            force: false,
            prefetch: Vec::new(),
            checkpoints: CheckpointPolicy::Uniform,
            lean_ztocs: true,
        }
    }
}

/// How indexes are published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Publish {
    /// `soci create` + `soci push`: a v1 index per image manifest, with `subject`, pushed blobs
    /// first then the manifest, then the referrers tag schema (`sha256-<hex>`) when the registry
    /// did not handle the subject (distribution 2.8 does not).
    V1,
    /// `soci convert` within the same repository: a v2 index per image manifest and a new image
    /// index bound to them, tagged `tag_pattern` with `{tag}` replaced by the source tag
    /// (e.g. "{tag}-soci"). Needs a source tag.
    V2 {
        /// Destination tag, `{tag}` standing for the source tag.
        tag_pattern: String,
    },
}

/// Why nothing was built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The manifest is one of ours: a SOCI index manifest (v1 or v2 artifact/config type), a
    /// referrers tag-schema index (tag `sha256-<64 hex>`), or an already SOCI-enabled
    /// (converted) image / manifest copy carrying `com.amazon.soci.index-digest`. The string
    /// says which. This is what keeps an automatic builder from looping on its own pushes.
    OwnArtifact(String),
    /// Already indexed as `publish` would do it. v1: the referrers (API or tag schema) of every
    /// selected image manifest list a v1 SOCI index. v2: the destination tag exists and is a
    /// SOCI-enabled index whose manifests carry index-digest annotations for these images.
    AlreadyIndexed(Vec<oci::Digest>),
    /// Not a container image (e.g. a config media type that is not an image config, or a
    /// manifest media type we do not index); the string names it.
    NotAnImage(String),
    /// Sum of layer sizes (of the selected platforms' manifests) below `min_image_size`.
    TooSmall {
        /// Sum of the layer sizes.
        size: u64,
        /// The minimum asked for.
        min: u64,
    },
    /// `Publish::V2` without a source tag (pushed by digest).
    NoTag,
    /// Every layer was below `min_layer_size` or not gzip/uncompressed tar.
    NothingToIndex,
    /// The image has none of the platforms asked for (e.g. the platform-less entry of a
    /// multi-platform push); the string names what it has.
    NoSelectedPlatform(String),
}

/// One SOCI index published.
#[derive(Clone, Debug)]
pub struct IndexedManifest {
    /// Image manifest indexed (for v2: the original manifest, not its annotated copy).
    pub manifest: oci::Digest,
    /// Its platform (`os/arch[/variant]`), when known.
    pub platform: Option<String>,
    /// The SOCI index manifest's digest.
    pub index: oci::Digest,
    /// zTOCs the index lists.
    pub ztocs: usize,
}

/// What was done.
#[derive(Clone, Debug)]
pub struct Report {
    /// The indexes published, in image order.
    pub indexes: Vec<IndexedManifest>,
    /// For V2: the tag written and the digest of the new image index.
    pub converted: Option<(String, oci::Digest)>,
    /// Layer bytes streamed from the registry.
    pub layer_bytes_read: u64,
    /// Wall time of streaming + indexing the layers.
    pub build_seconds: f64,
    /// Every manifest/index this call PUT to the registry (SOCI index manifests, the
    /// referrers tag-schema index, v2 manifest copies, the converted image index): the
    /// builder remembers them so the registry's notifications about them are dropped at once.
    pub pushed_manifests: Vec<oci::Digest>,
}

/// The result of [`index_image`].
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Indexes were built and published.
    Published(Report),
    /// Nothing was built, for this reason.
    Skipped(SkipReason),
}

/// Resolves `reference` (a tag or `sha256:` digest) in `repo`, and unless skipped, builds and
/// publishes SOCI indexes for the selected platforms. Idempotent: a second call returns
/// Skipped(AlreadyIndexed). `tag` is the tag the image was pushed under, if any (used by V2 and
/// for own-artifact detection; when `reference` is a tag, pass it as `tag` too).
pub async fn index_image(
    repo: &registry::Repository,
    reference: &str,
    tag: Option<&str>,
    settings: &Settings,
    publish: &Publish,
) -> Result<Outcome, Error> {
    let source = ImageSource::registry(repo.clone(), reference);
    let plan = match check::check(&source, repo, tag, settings, publish).await? {
        check::Check::Skip(reason) => return Ok(Outcome::Skipped(reason)),
        check::Check::Build(plan) => plan,
    };
    let build = pipeline::Build {
        source: &source,
        opened: &plan.opened,
        settings,
        local: None,
        progress: std::sync::Arc::new(ztocs::NoProgress),
    };
    let (built, pushed_manifests, converted) = match &plan.dest_tag {
        None => {
            let built = pipeline::build(&build, oci::soci_index::IndexVersion::V1).await?;
            let pushed = pipeline::publish_v1(repo, &built.indexes.indexes).await?;
            (built, pushed, None)
        }
        Some(dest) => {
            let destination = destination::Destination::Registry {
                repo: repo.clone(),
                tag: dest.clone(),
                mount_from: None,
            };
            let c = pipeline::convert(&build, &destination, &destination.name()).await?;
            (c.built, c.written, Some((dest.clone(), c.index_digest)))
        }
    };
    Ok(Outcome::Published(Report {
        indexes: built.indexes.indexes.iter().map(indexed).collect(),
        converted,
        layer_bytes_read: built.ztocs.bytes_read,
        build_seconds: built.ztocs.seconds,
        pushed_manifests,
    }))
}

/// The report line of one index.
fn indexed(b: &index::BuiltIndex) -> IndexedManifest {
    let platform = b.platform();
    IndexedManifest {
        manifest: b.image.manifest_desc.digest().clone(),
        platform: (!platform.is_empty()).then_some(platform),
        index: b.digest.clone(),
        ztocs: b.ztocs.len(),
    }
}

/// Cheap check, no layer is read: `Ok(Some(reason))` when `index_image` would skip this image
/// (own artifact, already indexed, not an image, too small, no tag), `Ok(None)` when it would
/// build. Used by `soci-index-builder backfill` to queue only images without an index.
pub async fn skip_reason(
    repo: &registry::Repository,
    reference: &str,
    tag: Option<&str>,
    settings: &Settings,
    publish: &Publish,
) -> Result<Option<SkipReason>, Error> {
    let source = ImageSource::registry(repo.clone(), reference);
    match check::check(&source, repo, tag, settings, publish).await? {
        check::Check::Skip(reason) => Ok(Some(reason)),
        check::Check::Build(_) => Ok(None),
    }
}
