//! containerd label policy, in one place.
//!
//! - The remote-snapshotter labels a pull puts on each layer's Prepare: [`LayerLabels`] is
//!   both what the puller ([`crate::pull`](mod@crate::pull)) builds with [`LayerLabels::to_labels`] and what the
//!   snapshotter reads back with [`LayerLabels::parse`], so the two sides agree by
//!   construction. Names are containerd's (`pkg/snapshotters`, as CRI sets them) and AWS
//!   SOCI's.
//! - containerd's garbage-collection references (`containerd.io/gc.ref.*`), the
//!   distribution-source labels a pull leaves on content, and `containerd.io/uncompressed`.

use oci::{Descriptor, Digest};
use std::collections::HashMap;

/// Largest key + value containerd accepts for one label (`labels.Validate`).
pub const MAX_LABEL_SIZE: usize = 4096;

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

/// Prefix of a GC reference from a blob or image record to content (`….<name>` = digest).
pub const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Prefix of a GC reference from a blob to a snapshot (`….<snapshotter>` = snapshot name).
pub const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot";
/// The image-record label AWS's `soci create` sets so containerd's GC keeps the SOCI index
/// as long as the image (`….<n>` for the indexes after the first).
pub const GC_REF_SOCI_INDEX: &str = "containerd.io/gc.ref.content.soci-index";
/// When a lease expires by itself (RFC 3339).
pub const GC_EXPIRE: &str = "containerd.io/gc.expire";
/// Prefix of where content came from, per registry host (value: repositories, comma-joined).
pub const DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source";
/// The uncompressed digest (diff ID) of a layer blob, set once it was applied.
pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// The remote-snapshotter labels of one layer's Prepare (and Commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerLabels {
    /// The layer's chain ID ([`SNAPSHOT_REF`]): the name of the committed snapshot.
    pub chain_id: String,
    /// The image reference ([`IMAGE_REF`]), as the image record names it.
    pub image_ref: String,
    /// The image manifest ([`MANIFEST_DIGEST`]).
    pub manifest_digest: Digest,
    /// This layer's blob ([`LAYER_DIGEST`]).
    pub layer_digest: Digest,
    /// This layer's blob size ([`SOCI_SIZE`]); CRI pulls do not send it.
    pub layer_size: Option<u64>,
    /// This layer and the ones above it ([`IMAGE_LAYERS`]); the label holds as many as fit.
    pub image_layers: Vec<Digest>,
    /// The sizes of [`LayerLabels::image_layers`], in the same order ([`LAYERS_SIZE`]).
    pub layer_sizes: Vec<u64>,
    /// The SOCI index the pull asked for ([`SOCI_INDEX_DIGEST`]), if any.
    pub soci_index_digest: Option<Digest>,
}

/// Why a label map does not describe a remote-snapshotter layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// A required label is absent (an ordinary Prepare, not one from an image pull).
    #[error("label {label} is missing")]
    Missing {
        /// The label.
        label: &'static str,
    },
    /// A label's value cannot be read.
    #[error("label {label} is {value:?}, which is not {expected}")]
    Invalid {
        /// The label.
        label: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
}

impl LayerLabels {
    /// The labels of the first layer of `layers` (that layer, then the ones above it, in
    /// manifest order) of image `image_ref`; `None` when `layers` is empty.
    pub fn for_layers(
        image_ref: &str,
        manifest_digest: &Digest,
        chain_id: &str,
        layers: &[Descriptor],
        soci_index_digest: Option<&Digest>,
    ) -> Option<Self> {
        let layer = layers.first()?;
        Some(LayerLabels {
            chain_id: chain_id.to_owned(),
            image_ref: image_ref.to_owned(),
            manifest_digest: manifest_digest.clone(),
            layer_digest: layer.digest().clone(),
            layer_size: Some(layer.size()),
            image_layers: layers.iter().map(|l| l.digest().clone()).collect(),
            layer_sizes: layers.iter().map(Descriptor::size).collect(),
            soci_index_digest: soci_index_digest.cloned(),
        })
    }

    /// The label map. The two lists are cut (to the same number of layers) so each label
    /// stays within containerd's [`MAX_LABEL_SIZE`], as containerd does for
    /// `cri.image-layers`.
    pub fn to_labels(&self) -> HashMap<String, String> {
        let (digests, fitted) = bounded_list(IMAGE_LAYERS, &self.image_layers);
        let sizes = self.layer_sizes.get(..fitted).unwrap_or(&self.layer_sizes);
        let (sizes, _) = bounded_list(LAYERS_SIZE, sizes);
        let mut labels = HashMap::from([
            (SNAPSHOT_REF.to_owned(), self.chain_id.clone()),
            (IMAGE_REF.to_owned(), self.image_ref.clone()),
            (MANIFEST_DIGEST.to_owned(), self.manifest_digest.to_string()),
            (LAYER_DIGEST.to_owned(), self.layer_digest.to_string()),
            (IMAGE_LAYERS.to_owned(), digests),
            (LAYERS_SIZE.to_owned(), sizes),
        ]);
        if let Some(size) = self.layer_size {
            labels.insert(SOCI_SIZE.to_owned(), size.to_string());
        }
        if let Some(d) = &self.soci_index_digest {
            labels.insert(SOCI_INDEX_DIGEST.to_owned(), d.to_string());
        }
        labels
    }

    /// Reads the labels of a Prepare back. The chain ID, image reference, manifest digest
    /// and layer digest are required (CRI and `soci image rpull` both send them); the
    /// others are optional (CRI sends no sizes), absent lists are empty.
    pub fn parse<'a>(
        labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<Self, LabelError> {
        let mut found: HashMap<&str, &str> = HashMap::new();
        for (key, value) in labels {
            found.insert(key.as_str(), value.as_str());
        }
        let required = |label: &'static str| {
            found
                .get(label)
                .copied()
                .ok_or(LabelError::Missing { label })
        };
        let optional = |label: &'static str| found.get(label).copied();
        Ok(LayerLabels {
            chain_id: required(SNAPSHOT_REF)?.to_owned(),
            image_ref: required(IMAGE_REF)?.to_owned(),
            manifest_digest: parse_digest(MANIFEST_DIGEST, required(MANIFEST_DIGEST)?)?,
            layer_digest: parse_digest(LAYER_DIGEST, required(LAYER_DIGEST)?)?,
            layer_size: optional(SOCI_SIZE)
                .map(|v| parse_size(SOCI_SIZE, v))
                .transpose()?,
            image_layers: parse_list(IMAGE_LAYERS, optional(IMAGE_LAYERS), parse_digest)?,
            layer_sizes: parse_list(LAYERS_SIZE, optional(LAYERS_SIZE), parse_size)?,
            soci_index_digest: optional(SOCI_INDEX_DIGEST)
                .map(|v| parse_digest(SOCI_INDEX_DIGEST, v))
                .transpose()?,
        })
    }
}

fn parse_digest(label: &'static str, value: &str) -> Result<Digest, LabelError> {
    oci::digest::parse(value).map_err(|_| LabelError::Invalid {
        label,
        value: value.to_owned(),
        expected: "a digest (sha256:<64 hex digits>)",
    })
}

fn parse_size(label: &'static str, value: &str) -> Result<u64, LabelError> {
    value.parse().map_err(|_| LabelError::Invalid {
        label,
        value: value.to_owned(),
        expected: "a size in bytes",
    })
}

/// The items of a comma-joined list label; none when the label is absent or empty.
fn parse_list<T>(
    label: &'static str,
    value: Option<&str>,
    parse_item: fn(&'static str, &str) -> Result<T, LabelError>,
) -> Result<Vec<T>, LabelError> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter(|item| !item.is_empty())
        .map(|item| parse_item(label, item))
        .collect()
}

/// Joins `items` with commas, dropping trailing items so `key` + value stays within
/// [`MAX_LABEL_SIZE`]; returns the value and how many items it holds.
fn bounded_list<T: ToString>(key: &str, items: &[T]) -> (String, usize) {
    let mut value = String::new();
    let mut fitted = 0;
    for item in items {
        let item = item.to_string();
        let separator = usize::from(!value.is_empty());
        if key.len() + value.len() + separator + item.len() > MAX_LABEL_SIZE {
            break;
        }
        if separator == 1 {
            value.push(',');
        }
        value.push_str(&item);
        fitted += 1;
    }
    (value, fitted)
}

/// The GC references of an image manifest (or SOCI index manifest) blob: `….config` to its
/// config and `….l.<i>` to each layer (or zTOC / prefetch artifact), as containerd's pull
/// sets them, so collecting the manifest is what frees them.
pub fn manifest_gc_refs<'a>(
    config: &str,
    layers: impl IntoIterator<Item = &'a Digest>,
) -> HashMap<String, String> {
    let mut labels = HashMap::from([(format!("{GC_REF_CONTENT}.config"), config.to_owned())]);
    for (i, layer) in layers.into_iter().enumerate() {
        labels.insert(format!("{GC_REF_CONTENT}.l.{i}"), layer.to_string());
    }
    labels
}

/// The GC reference of an image index blob to the child manifest (or index) that was
/// followed (`….m.0`).
pub fn index_gc_ref(child: &Digest) -> (String, String) {
    (format!("{GC_REF_CONTENT}.m.0"), child.to_string())
}

/// The GC reference of an image config blob to the unpacked image's top snapshot in
/// `snapshotter` (through its parents, all of its snapshots).
pub fn snapshot_gc_ref(snapshotter: &str, snapshot: &str) -> (String, String) {
    (
        format!("{GC_REF_SNAPSHOT}.{snapshotter}"),
        snapshot.to_owned(),
    )
}

/// The image-record label referencing the `n`th SOCI index of the image
/// ([`GC_REF_SOCI_INDEX`] for the first, `….<n>` after it).
pub fn soci_index_gc_ref(n: usize, index: &Digest) -> (String, String) {
    let key = if n == 0 {
        GC_REF_SOCI_INDEX.to_owned()
    } else {
        format!("{GC_REF_SOCI_INDEX}.{n}")
    };
    (key, index.to_string())
}

/// The label recording a layer blob's diff ID once it was applied.
pub fn uncompressed(diff_id: &Digest) -> (String, String) {
    (UNCOMPRESSED.to_owned(), diff_id.to_string())
}

/// The distribution-source label for `host`/`repository`, merged with what the blob's
/// labels `existing` already list (containerd keeps a sorted, comma-joined set of
/// repositories per host).
pub fn distribution_source(
    existing: Option<&HashMap<String, String>>,
    host: &str,
    repository: &str,
) -> (String, String) {
    let key = format!("{DISTRIBUTION_SOURCE}.{}", hostname(host));
    let mut repos: Vec<&str> = existing
        .and_then(|l| l.get(&key))
        .map(|v| v.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if !repos.contains(&repository) {
        repos.push(repository);
    }
    repos.sort_unstable();
    (key, repos.join(","))
}

/// The host of `host[:port]` without the port (containerd keys distribution sources by URL
/// host name: `127.0.0.1:5000` -> `127.0.0.1`, `[::1]:5000` -> `::1`).
fn hostname(host: &str) -> &str {
    let without_port = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            if h.starts_with('[') || !h.contains(':') {
                h
            } else {
                host
            }
        }
        _ => host,
    };
    without_port
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(without_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layers(n: u32) -> Vec<Descriptor> {
        (0..n)
            .map(|i| {
                Descriptor::new(
                    oci::MediaType::ImageLayerGzip,
                    1000 + u64::from(i),
                    oci::digest::sha256(&i.to_le_bytes()),
                )
            })
            .collect()
    }

    fn digest(s: &str) -> Digest {
        oci::digest::sha256(s.as_bytes())
    }

    #[test]
    fn layer_lists_stay_within_the_label_limit() {
        let layers = layers(100);
        let labels = LayerLabels::for_layers("r/x:1", &digest("m"), "c", &layers[1..], None)
            .unwrap()
            .to_labels();
        let list = &labels[IMAGE_LAYERS];
        assert!(IMAGE_LAYERS.len() + list.len() <= MAX_LABEL_SIZE);
        let n = list.split(',').count();
        // 71 bytes per digest plus commas: about 57 fit, not all 99.
        assert!(n > 50 && n < 99, "{n}");
        assert_eq!(list.split(',').next(), Some(layers[1].digest().as_ref()));
        assert_eq!(labels[LAYERS_SIZE].split(',').count(), n);
        assert_eq!(labels[LAYERS_SIZE].split(',').next(), Some("1001"));
        assert_eq!(labels[SOCI_SIZE], "1001");
        assert!(!labels.contains_key(SOCI_INDEX_DIGEST));

        let index = digest("i");
        let last = LayerLabels::for_layers("r/x:1", &digest("m"), "c", &layers[99..], Some(&index))
            .unwrap()
            .to_labels();
        assert_eq!(last[IMAGE_LAYERS], layers[99].digest().to_string());
        assert_eq!(last[SOCI_INDEX_DIGEST], index.to_string());
        assert!(LayerLabels::for_layers("r/x:1", &digest("m"), "c", &[], None).is_none());
    }

    #[test]
    fn built_labels_parse_back_to_the_same_layer() {
        let layers = layers(3);
        let index = digest("i");
        for given in [None, Some(&index)] {
            let built = LayerLabels::for_layers(
                "127.0.0.1:5000/a:b",
                &digest("m"),
                "sha256:c",
                &layers,
                given,
            )
            .unwrap();
            let labels = built.to_labels();
            assert_eq!(LayerLabels::parse(&labels), Ok(built));
        }
    }

    #[test]
    fn cri_labels_parse_without_sizes() {
        let layers = layers(2);
        let labels: HashMap<String, String> = [
            (SNAPSHOT_REF, "sha256:c".to_owned()),
            (IMAGE_REF, "h/r:t".to_owned()),
            (MANIFEST_DIGEST, digest("m").to_string()),
            (LAYER_DIGEST, layers[0].digest().to_string()),
            (
                IMAGE_LAYERS,
                format!("{},{}", layers[0].digest(), layers[1].digest()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let parsed = LayerLabels::parse(&labels).unwrap();
        assert_eq!(parsed.layer_digest, *layers[0].digest());
        assert_eq!(parsed.image_layers.len(), 2);
        assert_eq!(parsed.layer_size, None);
        assert!(parsed.layer_sizes.is_empty());
        assert_eq!(parsed.soci_index_digest, None);
    }

    #[test]
    fn missing_or_bad_labels_are_errors_not_panics() {
        let full = LayerLabels::for_layers("h/r:t", &digest("m"), "sha256:c", &layers(2), None)
            .unwrap()
            .to_labels();
        for label in [SNAPSHOT_REF, IMAGE_REF, MANIFEST_DIGEST, LAYER_DIGEST] {
            let mut labels = full.clone();
            labels.remove(label);
            assert_eq!(
                LayerLabels::parse(&labels),
                Err(LabelError::Missing { label })
            );
        }
        assert_eq!(
            LayerLabels::parse(&HashMap::new()),
            Err(LabelError::Missing {
                label: SNAPSHOT_REF
            })
        );
        for (label, bad) in [
            (MANIFEST_DIGEST, "sha256:m"),
            (LAYER_DIGEST, ""),
            (SOCI_SIZE, "-1"),
            (LAYERS_SIZE, "1,x"),
            (IMAGE_LAYERS, "sha256:zz"),
            (SOCI_INDEX_DIGEST, "md5:0"),
        ] {
            let mut labels = full.clone();
            labels.insert(label.to_owned(), bad.to_owned());
            let err = LayerLabels::parse(&labels).unwrap_err();
            assert!(
                matches!(err, LabelError::Invalid { label: l, .. } if l == label),
                "{label}: {err}"
            );
        }
    }

    #[test]
    fn gc_references() {
        let (config, l0, l1) = (digest("c"), digest("l0"), digest("l1"));
        let refs = manifest_gc_refs(config.as_ref(), [&l0, &l1]);
        assert_eq!(refs.len(), 3);
        assert_eq!(
            refs["containerd.io/gc.ref.content.config"],
            config.to_string()
        );
        assert_eq!(refs["containerd.io/gc.ref.content.l.1"], l1.to_string());
        assert_eq!(index_gc_ref(&l0).0, "containerd.io/gc.ref.content.m.0");
        assert_eq!(
            snapshot_gc_ref("soci", "sha256:t"),
            (
                "containerd.io/gc.ref.snapshot.soci".to_owned(),
                "sha256:t".to_owned()
            )
        );
        assert_eq!(
            soci_index_gc_ref(0, &l0).0,
            "containerd.io/gc.ref.content.soci-index"
        );
        assert_eq!(
            soci_index_gc_ref(2, &l0).0,
            "containerd.io/gc.ref.content.soci-index.2"
        );
        assert_eq!(uncompressed(&l0).0, "containerd.io/uncompressed");
    }

    #[test]
    fn distribution_sources_merge_sorted() {
        let existing = HashMap::from([(
            "containerd.io/distribution.source.h".to_owned(),
            "b/x".to_owned(),
        )]);
        assert_eq!(
            distribution_source(Some(&existing), "h:1", "a/y"),
            (
                "containerd.io/distribution.source.h".to_owned(),
                "a/y,b/x".to_owned()
            )
        );
        assert_eq!(distribution_source(None, "h:1", "a/y").1, "a/y");
        assert_eq!(distribution_source(Some(&existing), "h:1", "b/x").1, "b/x");
        assert_eq!(hostname("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(hostname("[::1]:5000"), "::1");
        assert_eq!(hostname("docker.io"), "docker.io");
    }

    proptest! {
        #[test]
        fn bounded_lists_never_exceed_the_label_limit(
            count in 0u32..400,
            start in 0usize..400,
            big_sizes in any::<bool>(),
        ) {
            let mut layers = layers(count);
            if big_sizes {
                // The longest sizes there are: 20 digits each.
                for l in &mut layers {
                    l.set_size(u64::MAX);
                }
            }
            let rest = layers.get(start..).unwrap_or_default();
            let Some(built) = LayerLabels::for_layers("h/r:t", &digest("m"), "c", rest, None)
            else {
                prop_assert!(rest.is_empty());
                return Ok(());
            };
            let labels = built.to_labels();
            for (key, value) in &labels {
                prop_assert!(key.len() + value.len() <= MAX_LABEL_SIZE, "{key}");
            }
            // What fits is a prefix of the layers, the same count in both lists.
            let parsed = LayerLabels::parse(&labels).unwrap();
            prop_assert!(!parsed.image_layers.is_empty());
            prop_assert_eq!(parsed.image_layers.len(), parsed.layer_sizes.len());
            prop_assert!(built.image_layers.starts_with(&parsed.image_layers));
            prop_assert!(built.layer_sizes.starts_with(&parsed.layer_sizes));
        }
    }
}
