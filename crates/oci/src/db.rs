//! The metadata database behind `soci index list` and `soci ztoc list` (redb, one file).
//!
//! Records are JSON values keyed by digest. An index and its zTOCs are written in one
//! transaction, so an interrupted `soci create` never leaves a half-listed index.

use crate::error::{Error, Result};
use crate::soci_index::parse_index_manifest;
use crate::store::ContentStore;
use oci_spec::image::Digest;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const INDEXES: TableDefinition<&str, &[u8]> = TableDefinition::new("indexes");
const ZTOCS: TableDefinition<&str, &[u8]> = TableDefinition::new("ztocs");

/// One SOCI index known locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// Digest of the index manifest blob.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// The image reference it was built from (empty if unknown).
    pub image_ref: String,
    /// Platform of the indexed image (empty if unknown).
    pub platform: String,
    /// SOCI index media type (v1 or v2).
    pub media_type: String,
    /// Digest of the image manifest it indexes (empty if unknown).
    pub manifest_digest: String,
    /// Creation time, RFC 3339 UTC.
    pub created: String,
    /// zTOCs listed in the index.
    pub ztocs: Vec<String>,
    /// Span size used.
    pub span_size: u64,
    /// Minimum layer size used.
    pub min_layer_size: u64,
}

/// One zTOC known locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZtocRecord {
    /// Digest of the zTOC blob.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Digest of the layer it indexes.
    pub layer_digest: String,
    /// Media type of that layer.
    pub layer_media_type: String,
    /// Size of that layer.
    pub layer_size: u64,
    /// Span size used.
    pub span_size: u64,
    /// Where the layer blob can be read again (an OCI layout directory), if known.
    pub source: Option<String>,
    /// How its checkpoints were placed when not uniformly: `reads:<sha256 of the read
    /// ranges>`. Reuse needs the same placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
}

/// What `rebuild` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildSummary {
    /// Indexes listed after the rebuild.
    pub indexes: usize,
    /// zTOCs listed after the rebuild.
    pub ztocs: usize,
    /// Records dropped because their blobs are gone.
    pub dropped: usize,
}

/// The metadata database.
pub struct MetadataDb {
    db: Database,
    path: PathBuf,
}

impl MetadataDb {
    /// Opens (creating if needed) the database file.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(crate::error::io_err("creating", parent))?;
        }
        let db = Database::create(path).map_err(|e| Error::Database {
            path: path.to_owned(),
            reason: format!("{e} (is another soci command using it?)"),
        })?;
        let this = Self {
            db,
            path: path.to_owned(),
        };
        // Create the tables once so readers never meet a missing table.
        this.write(|txn| {
            txn.open_table(INDEXES)?;
            txn.open_table(ZTOCS)?;
            Ok(())
        })?;
        Ok(this)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Database {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let value = f(&txn).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))?;
        Ok(value)
    }

    fn read_all<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(table).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            let record = serde_json::from_slice(v.value()).map_err(|e| {
                self.err(format!(
                    "record {} is corrupt ({e}); run `soci rebuild-db`",
                    k.value()
                ))
            })?;
            out.push(record);
        }
        Ok(out)
    }

    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(table).map_err(|e| self.err(e))?;
        match t.get(key).map_err(|e| self.err(e))? {
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(|e| {
                self.err(format!(
                    "record {key} is corrupt ({e}); run `soci rebuild-db`"
                ))
            }),
            None => Ok(None),
        }
    }

    /// Records an index and its zTOCs atomically.
    pub fn put_index(&self, index: &IndexRecord, ztocs: &[ZtocRecord]) -> Result<()> {
        let index_json = serde_json::to_vec(index).map_err(|e| self.err(e))?;
        let ztoc_json: Vec<(String, Vec<u8>)> = ztocs
            .iter()
            .map(|z| serde_json::to_vec(z).map(|j| (z.digest.clone(), j)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))?;
        self.write(|txn| {
            let mut t = txn.open_table(ZTOCS)?;
            for (digest, json) in &ztoc_json {
                t.insert(digest.as_str(), json.as_slice())?;
            }
            drop(t);
            txn.open_table(INDEXES)?
                .insert(index.digest.as_str(), index_json.as_slice())?;
            Ok(())
        })
    }

    /// All indexes.
    pub fn list_indexes(&self) -> Result<Vec<IndexRecord>> {
        self.read_all(INDEXES)
    }

    /// All zTOCs.
    pub fn list_ztocs(&self) -> Result<Vec<ZtocRecord>> {
        self.read_all(ZTOCS)
    }

    /// One index, if known.
    pub fn get_index(&self, digest: &Digest) -> Result<Option<IndexRecord>> {
        self.get(INDEXES, digest.as_ref())
    }

    /// One zTOC, if known.
    pub fn get_ztoc(&self, digest: &Digest) -> Result<Option<ZtocRecord>> {
        self.get(ZTOCS, digest.as_ref())
    }

    /// zTOCs built for a layer (with any span size).
    pub fn find_ztocs_by_layer(&self, layer: &Digest) -> Result<Vec<ZtocRecord>> {
        let layer = layer.to_string();
        Ok(self
            .list_ztocs()?
            .into_iter()
            .filter(|z| z.layer_digest == layer)
            .collect())
    }

    /// Removes an index; returns the zTOC digests no remaining index references (their
    /// records are removed in the same transaction; the caller deletes the blobs).
    pub fn remove_index(&self, digest: &Digest) -> Result<Vec<String>> {
        let key = digest.to_string();
        let indexes = self.list_indexes()?;
        let Some(target) = indexes.iter().find(|i| i.digest == key) else {
            return Err(Error::NotFound {
                kind: "index",
                digest: key,
            });
        };
        let still_used: std::collections::HashSet<&String> = indexes
            .iter()
            .filter(|i| i.digest != key)
            .flat_map(|i| i.ztocs.iter())
            .collect();
        let orphans: Vec<String> = target
            .ztocs
            .iter()
            .filter(|z| !still_used.contains(z))
            .cloned()
            .collect();
        self.write(|txn| {
            txn.open_table(INDEXES)?.remove(key.as_str())?;
            let mut t = txn.open_table(ZTOCS)?;
            for z in &orphans {
                t.remove(z.as_str())?;
            }
            Ok(())
        })?;
        Ok(orphans)
    }

    /// Replaces every record (used by `rebuild`).
    pub fn replace_all(&self, indexes: &[IndexRecord], ztocs: &[ZtocRecord]) -> Result<()> {
        let index_rows: Vec<(String, Vec<u8>)> = indexes
            .iter()
            .map(|i| serde_json::to_vec(i).map(|j| (i.digest.clone(), j)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let ztoc_rows: Vec<(String, Vec<u8>)> = ztocs
            .iter()
            .map(|z| serde_json::to_vec(z).map(|j| (z.digest.clone(), j)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))?;
        self.write(|txn| {
            txn.delete_table(INDEXES)?;
            txn.delete_table(ZTOCS)?;
            let mut t = txn.open_table(INDEXES)?;
            for (k, v) in &index_rows {
                t.insert(k.as_str(), v.as_slice())?;
            }
            drop(t);
            let mut t = txn.open_table(ZTOCS)?;
            for (k, v) in &ztoc_rows {
                t.insert(k.as_str(), v.as_slice())?;
            }
            Ok(())
        })
    }

    /// Rebuilds the listings from the content store: every blob that parses as a SOCI index
    /// is listed, with its zTOCs whose blobs exist; details that only the old records knew
    /// (image reference, platform, creation time, layer source) are kept where they match.
    pub fn rebuild(&self, store: &ContentStore) -> Result<RebuildSummary> {
        let old_indexes: BTreeMap<String, IndexRecord> = self
            .list_indexes()
            .unwrap_or_default()
            .into_iter()
            .map(|i| (i.digest.clone(), i))
            .collect();
        let old_ztocs: BTreeMap<String, ZtocRecord> = self
            .list_ztocs()
            .unwrap_or_default()
            .into_iter()
            .map(|z| (z.digest.clone(), z))
            .collect();
        let mut indexes = Vec::new();
        let mut ztocs: BTreeMap<String, ZtocRecord> = BTreeMap::new();
        for digest in store.list()? {
            let size = store.size(&digest)?;
            // zTOCs and indexes are small; skip anything big without reading it.
            if !(10..=crate::manifest::MAX_MANIFEST_SIZE as u64).contains(&size) {
                continue;
            }
            let Ok(bytes) = store.get(&digest) else {
                continue;
            };
            let Ok(index) = parse_index_manifest(&bytes, digest.as_ref()) else {
                continue;
            };
            let key = digest.to_string();
            let old = old_indexes.get(&key);
            let span_size = index
                .ztocs
                .iter()
                .find_map(|z| z.span_size)
                .or(old.map(|o| o.span_size))
                .unwrap_or(0);
            let mut listed = Vec::new();
            for z in &index.ztocs {
                if !store.exists(&z.digest) {
                    continue;
                }
                let zkey = z.digest.to_string();
                let prev = old_ztocs.get(&zkey);
                listed.push(zkey.clone());
                ztocs.entry(zkey.clone()).or_insert_with(|| ZtocRecord {
                    digest: zkey,
                    size: z.size,
                    layer_digest: z.layer_digest.to_string(),
                    layer_media_type: z.layer_media_type.clone(),
                    layer_size: prev.map_or(0, |p| p.layer_size),
                    span_size: z
                        .span_size
                        .or(prev.map(|p| p.span_size))
                        .unwrap_or(span_size),
                    source: prev.and_then(|p| p.source.clone()),
                    placement: prev.and_then(|p| p.placement.clone()),
                });
            }
            indexes.push(IndexRecord {
                digest: key,
                size,
                image_ref: old.map(|o| o.image_ref.clone()).unwrap_or_default(),
                platform: old.map(|o| o.platform.clone()).unwrap_or_default(),
                media_type: index.version.media_type().to_owned(),
                manifest_digest: match (&index.subject, old) {
                    (Some(s), _) => s.digest().to_string(),
                    (None, Some(o)) => o.manifest_digest.clone(),
                    (None, None) => String::new(),
                },
                created: old
                    .map(|o| o.created.clone())
                    .unwrap_or_else(|| file_time(&store.path(&digest))),
                ztocs: listed,
                span_size,
                min_layer_size: old.map_or(0, |o| o.min_layer_size),
            });
        }
        let kept_ztocs: Vec<ZtocRecord> = ztocs.into_values().collect();
        let dropped = old_indexes
            .keys()
            .filter(|k| !indexes.iter().any(|i| &i.digest == *k))
            .count()
            + old_ztocs
                .keys()
                .filter(|k| !kept_ztocs.iter().any(|z| &z.digest == *k))
                .count();
        self.replace_all(&indexes, &kept_ztocs)?;
        Ok(RebuildSummary {
            indexes: indexes.len(),
            ztocs: kept_ztocs.len(),
            dropped,
        })
    }
}

/// Modification time of a file as RFC 3339 (used when rebuilding lost creation times).
fn file_time(path: &Path) -> String {
    let t = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let t = t
        .map(time::OffsetDateTime::from)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
