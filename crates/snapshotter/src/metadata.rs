//! Snapshot metadata: what containerd's snapshots API manipulates (keys, names, parents,
//! kinds, labels), persisted as one JSON document written atomically after every change, so
//! a restarted daemon knows every snapshot containerd's own database refers to.
//!
//! The rules follow containerd's overlay snapshotter (its bolt storage): a parent must exist
//! and be committed; only active snapshots are committed; a snapshot with children cannot be
//! removed; keys and names share one namespace.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// File name of the metadata document under the snapshotter's directory.
pub const METADATA_FILE: &str = "metadata.json";

/// The kind of a snapshot (containerd's `snapshots.Kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Read-only view of a parent.
    View,
    /// Writable; becomes committed on Commit.
    Active,
    /// Immutable, may be a parent.
    Committed,
}

/// What makes a committed snapshot a lazily mounted layer: enough to mount it again after a
/// restart without asking the registry for anything but the zTOC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteLayerInfo {
    /// The image reference the layer was pulled for (`cri.image-ref`).
    pub image_ref: String,
    /// The image manifest digest.
    pub manifest_digest: String,
    /// Digest of the SOCI index used.
    pub index_digest: String,
    /// The layer blob's digest.
    pub layer_digest: String,
    /// The layer blob's size.
    pub layer_size: u64,
    /// The layer's media type.
    pub layer_media_type: String,
    /// The zTOC's digest.
    pub ztoc_digest: String,
    /// The zTOC's size.
    pub ztoc_size: u64,
    /// The layer's prefetch artifact (digest, size), if the index has one.
    #[serde(default)]
    pub prefetch: Option<(String, u64)>,
    /// The zTOC's lean zTOC (digest, size), if the index lists one.
    #[serde(default)]
    pub lean: Option<(String, u64)>,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Directory id: `<root>/snapshots/<id>`.
    pub id: u64,
    /// Kind.
    pub kind: Kind,
    /// Parent's key (name), empty for none.
    pub parent: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time.
    pub created: SystemTime,
    /// Last update time.
    pub updated: SystemTime,
    /// Set for lazily mounted layers.
    #[serde(default)]
    pub remote: Option<RemoteLayerInfo>,
}

/// Why an operation on the metadata failed; each maps to the gRPC code containerd expects.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// NotFound.
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    /// NotFound, for the parent of a new snapshot.
    #[error("parent snapshot {0} does not exist")]
    ParentNotFound(String),
    /// AlreadyExists.
    #[error("snapshot {0} already exists")]
    AlreadyExists(String),
    /// InvalidArgument: the parent is not committed.
    #[error("parent snapshot {0} is not committed")]
    ParentNotCommitted(String),
    /// FailedPrecondition: the operation needs another kind.
    #[error("snapshot {key} is {kind:?}, but {operation} needs {needed}")]
    WrongKind {
        /// The snapshot.
        key: String,
        /// Its kind.
        kind: Kind,
        /// The operation.
        operation: &'static str,
        /// What kind the operation needs.
        needed: &'static str,
    },
    /// FailedPrecondition: children exist.
    #[error("snapshot {0} has children; remove them first")]
    HasChildren(String),
    /// InvalidArgument: an empty key or name.
    #[error("empty snapshot key")]
    EmptyKey,
    /// The metadata file could not be read or written.
    #[error("snapshot metadata {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The metadata file does not parse.
    #[error("snapshot metadata {path} is corrupt: {message}; move it away to start empty (containerd will then re-pull)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    next_id: u64,
    snapshots: BTreeMap<String, Snapshot>,
}

/// The snapshot table, backed by a JSON file.
#[derive(Debug)]
pub struct Metadata {
    path: PathBuf,
    doc: Document,
}

impl Metadata {
    /// Opens (or starts empty) the metadata at `dir/metadata.json`.
    pub fn open(dir: &Path) -> Result<Self, MetadataError> {
        let path = dir.join(METADATA_FILE);
        let io = |source| MetadataError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let doc = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MetadataError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Document::default(),
            Err(e) => return Err(io(e)),
        };
        Ok(Metadata { path, doc })
    }

    /// Writes the table: temporary file, fsync, rename, so a crash leaves the old or the new
    /// document, never a torn one.
    fn save(&self) -> Result<(), MetadataError> {
        let io = |source| MetadataError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&self.doc).map_err(|e| io(e.into()))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }

    /// The snapshot called `key`.
    pub fn get(&self, key: &str) -> Result<&Snapshot, MetadataError> {
        self.doc
            .snapshots
            .get(key)
            .ok_or_else(|| MetadataError::NotFound(key.to_owned()))
    }

    /// Every snapshot, by key.
    pub fn all(&self) -> impl Iterator<Item = (&String, &Snapshot)> {
        self.doc.snapshots.iter()
    }

    /// Ids of `parent` and its ancestors, nearest first (overlayfs `lowerdir` order).
    pub fn parent_chain(&self, parent: &str) -> Result<Vec<(String, &Snapshot)>, MetadataError> {
        let mut chain = Vec::new();
        let mut next = parent.to_owned();
        while !next.is_empty() {
            let s = self
                .doc
                .snapshots
                .get(&next)
                .ok_or_else(|| MetadataError::ParentNotFound(next.clone()))?;
            chain.push((next.clone(), s));
            if chain.len() > self.doc.snapshots.len() {
                // A cycle can only come from a hand-edited file; do not loop forever.
                return Err(MetadataError::Corrupt {
                    path: self.path.clone(),
                    message: format!("the parents of {parent} form a cycle"),
                });
            }
            next = s.parent.clone();
        }
        Ok(chain)
    }

    /// Adds a view or active snapshot (or, with `remote`, a committed lazily mounted layer) and
    /// saves; returns its id.
    pub fn create(
        &mut self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        remote: Option<RemoteLayerInfo>,
    ) -> Result<u64, MetadataError> {
        if key.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if self.doc.snapshots.contains_key(key) {
            return Err(MetadataError::AlreadyExists(key.to_owned()));
        }
        if !parent.is_empty() {
            let p = self
                .doc
                .snapshots
                .get(parent)
                .ok_or_else(|| MetadataError::ParentNotFound(parent.to_owned()))?;
            if p.kind != Kind::Committed {
                return Err(MetadataError::ParentNotCommitted(parent.to_owned()));
            }
        }
        self.doc.next_id += 1;
        let id = self.doc.next_id;
        let now = SystemTime::now();
        self.doc.snapshots.insert(
            key.to_owned(),
            Snapshot {
                id,
                kind,
                parent: parent.to_owned(),
                labels,
                created: now,
                updated: now,
                remote,
            },
        );
        if let Err(e) = self.save() {
            self.doc.snapshots.remove(key);
            return Err(e);
        }
        Ok(id)
    }

    /// Turns active snapshot `key` into committed snapshot `name`, adding `labels`.
    pub fn commit(
        &mut self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<u64, MetadataError> {
        if name.is_empty() {
            return Err(MetadataError::EmptyKey);
        }
        if self.doc.snapshots.contains_key(name) {
            return Err(MetadataError::AlreadyExists(name.to_owned()));
        }
        let s = self.get(key)?;
        if s.kind != Kind::Active {
            return Err(MetadataError::WrongKind {
                key: key.to_owned(),
                kind: s.kind,
                operation: "commit",
                needed: "an active snapshot",
            });
        }
        let mut s = self
            .doc
            .snapshots
            .remove(key)
            .ok_or_else(|| MetadataError::NotFound(key.to_owned()))?;
        let before = s.clone();
        s.kind = Kind::Committed;
        s.labels.extend(labels);
        s.updated = SystemTime::now();
        let id = s.id;
        self.doc.snapshots.insert(name.to_owned(), s);
        if let Err(e) = self.save() {
            self.doc.snapshots.remove(name);
            self.doc.snapshots.insert(key.to_owned(), before);
            return Err(e);
        }
        Ok(id)
    }

    /// Removes `key` (which must have no children); returns what it was.
    pub fn remove(&mut self, key: &str) -> Result<Snapshot, MetadataError> {
        self.get(key)?;
        if self.doc.snapshots.values().any(|s| s.parent == key) {
            return Err(MetadataError::HasChildren(key.to_owned()));
        }
        let s = self
            .doc
            .snapshots
            .remove(key)
            .ok_or_else(|| MetadataError::NotFound(key.to_owned()))?;
        if let Err(e) = self.save() {
            self.doc.snapshots.insert(key.to_owned(), s);
            return Err(e);
        }
        Ok(s)
    }

    /// Updates labels of `key` following containerd's field paths: no paths or `labels`
    /// replaces all labels; `labels.<k>` sets or (when absent from `labels`) deletes one.
    pub fn update_labels(
        &mut self,
        key: &str,
        labels: &BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<&Snapshot, UpdateError> {
        let s = self
            .doc
            .snapshots
            .get_mut(key)
            .ok_or_else(|| MetadataError::NotFound(key.to_owned()))?;
        let before = s.clone();
        if paths.is_empty() {
            s.labels = labels.clone();
        }
        for p in paths {
            if p == "labels" {
                s.labels = labels.clone();
            } else if let Some(k) = p.strip_prefix("labels.") {
                match labels.get(k) {
                    Some(v) => s.labels.insert(k.to_owned(), v.clone()),
                    None => s.labels.remove(k),
                };
            } else {
                *s = before;
                return Err(UpdateError::Field(p.clone()));
            }
        }
        s.updated = SystemTime::now();
        if let Err(e) = self.save() {
            if let Some(s) = self.doc.snapshots.get_mut(key) {
                *s = before;
            }
            return Err(e.into());
        }
        self.get(key).map_err(UpdateError::from)
    }
}

/// Why an Update failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// A metadata error.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// InvalidArgument: only labels can change.
    #[error("cannot update field {0}: only labels can be updated")]
    Field(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn prepare_commit_and_remove_follow_containerds_rules() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Metadata::open(dir.path()).unwrap();
        let a = m.create(Kind::Active, "a", "", labels(&[]), None).unwrap();
        assert!(matches!(
            m.create(Kind::Active, "a", "", labels(&[]), None),
            Err(MetadataError::AlreadyExists(_))
        ));
        assert!(matches!(
            m.create(Kind::Active, "b", "a", labels(&[]), None),
            Err(MetadataError::ParentNotCommitted(_))
        ));
        assert!(matches!(
            m.create(Kind::Active, "b", "nope", labels(&[]), None),
            Err(MetadataError::ParentNotFound(_))
        ));
        assert_eq!(m.commit("A", "a", labels(&[("x", "1")])).unwrap(), a);
        assert!(matches!(m.get("a"), Err(MetadataError::NotFound(_))));
        assert!(matches!(
            m.commit("A2", "A", labels(&[])),
            Err(MetadataError::WrongKind { .. })
        ));
        m.create(Kind::View, "v", "A", labels(&[]), None).unwrap();
        assert!(matches!(
            m.commit("V", "v", labels(&[])),
            Err(MetadataError::WrongKind { .. })
        ));
        assert!(matches!(m.remove("A"), Err(MetadataError::HasChildren(_))));
        let chain = m.parent_chain("A").unwrap();
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].1.id, a);
        m.remove("v").unwrap();
        m.remove("A").unwrap();
        assert_eq!(m.all().count(), 0);
    }

    #[test]
    fn the_table_survives_a_reopen_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Metadata::open(dir.path()).unwrap();
        m.create(Kind::Active, "a", "", labels(&[("k", "v")]), None)
            .unwrap();
        m.commit("A", "a", labels(&[])).unwrap();
        let b = m.create(Kind::Active, "b", "A", labels(&[]), None).unwrap();
        m.remove("b").unwrap();
        drop(m);
        let mut m = Metadata::open(dir.path()).unwrap();
        assert_eq!(m.get("A").unwrap().labels, labels(&[("k", "v")]));
        assert_eq!(m.get("A").unwrap().kind, Kind::Committed);
        let c = m.create(Kind::Active, "c", "A", labels(&[]), None).unwrap();
        assert!(c > b);
    }

    #[test]
    fn label_updates_follow_field_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Metadata::open(dir.path()).unwrap();
        m.create(
            Kind::Active,
            "a",
            "",
            labels(&[("x", "1"), ("y", "2")]),
            None,
        )
        .unwrap();
        let s = m
            .update_labels(
                "a",
                &labels(&[("z", "3")]),
                &["labels.z".into(), "labels.x".into()],
            )
            .unwrap();
        assert_eq!(s.labels, labels(&[("y", "2"), ("z", "3")]));
        let s = m.update_labels("a", &labels(&[("q", "1")]), &[]).unwrap();
        assert_eq!(s.labels, labels(&[("q", "1")]));
        assert!(matches!(
            m.update_labels("a", &labels(&[]), &["parent".into()]),
            Err(UpdateError::Field(_))
        ));
        assert_eq!(m.get("a").unwrap().labels, labels(&[("q", "1")]));
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METADATA_FILE), b"{not json").unwrap();
        let e = Metadata::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("move it away"), "{e}");
    }
}
