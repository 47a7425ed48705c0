//! The local store under the data root: blobs by digest ([`oci::store`]) and the metadata
//! database ([`oci::db`]) that `soci index list` and `soci ztoc list` read. The pipeline
//! reuses zTOCs from it, writes what it builds into it, and records indexes there.

use crate::error::Result;
use crate::index::BuiltIndex;
use crate::ztocs::ZtocBlob;
use bytes::Bytes;
use oci::db::{IndexRecord, MetadataDb, ZtocRecord};
use oci::soci_index::IndexVersion;
use oci::store::ContentStore;
use oci::{Descriptor, Digest};
use std::path::Path;

/// The content store and metadata database under one data root.
pub struct LocalStore {
    /// Blobs: zTOCs, SOCI index manifests, prefetch artifacts.
    pub store: ContentStore,
    /// Records of the indexes and zTOCs built.
    pub db: MetadataDb,
}

/// A zTOC found in the local store for reuse, with where its layer was read when it was
/// built (kept, so `soci ztoc get-file` still finds the layer).
#[derive(Debug, Clone)]
pub struct ReusedZtoc {
    /// The zTOC.
    pub ztoc: ZtocBlob,
    /// The location recorded when it was built.
    pub source: Option<String>,
}

impl LocalStore {
    /// Opens (creating if needed) the store and database under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        Ok(LocalStore {
            store: ContentStore::open(root)?,
            db: MetadataDb::open(&root.join("soci.db"))?,
        })
    }

    /// A recorded zTOC of `layer` built with `span_size` and checkpoint placement
    /// `placement` (its key; `None`: uniform) whose blob is still stored.
    pub fn reusable_ztoc(
        &self,
        layer: &Digest,
        span_size: u64,
        placement: Option<&str>,
    ) -> Result<Option<ReusedZtoc>> {
        for record in self.db.find_ztocs_by_layer(layer)? {
            if record.span_size != span_size || record.placement.as_deref() != placement {
                continue;
            }
            let Ok(digest) = oci::digest::parse(&record.digest) else {
                continue;
            };
            if !self.store.exists(&digest) {
                continue;
            }
            // `get` verifies the digest: a damaged blob is rebuilt, not reused.
            let Ok(bytes) = self.store.get(&digest) else {
                continue;
            };
            return Ok(Some(ReusedZtoc {
                ztoc: ZtocBlob {
                    digest,
                    bytes: Bytes::from(bytes),
                    placement: record.placement,
                },
                source: record.source,
            }));
        }
        Ok(None)
    }

    /// Stores a blob (a zTOC just built, an index, a prefetch artifact). Unlisted until an
    /// index naming it is recorded; blobs are immutable and content-addressed, so one left by
    /// a failed run is simply reused by the next.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        Ok(self.store.put_bytes(bytes)?)
    }

    /// Copies `indexes` (with their zTOCs and prefetch artifacts, from this store) into
    /// containerd's content store, with the GC references that keep them while image record
    /// `image_name` exists (AWS's `--content-store containerd`).
    pub async fn export_to_containerd(
        &self,
        client: &containerd::Client,
        indexes: &[BuiltIndex],
        image_name: Option<&str>,
    ) -> Result<containerd::ExportReport> {
        let manifests: Vec<(Digest, Vec<u8>)> = indexes
            .iter()
            .map(|i| (i.digest.clone(), i.bytes.clone()))
            .collect();
        let read = |d: &Digest| self.store.get(d);
        Ok(containerd::export_soci_indexes(client, &manifests, read, image_name).await?)
    }

    /// Stores `index`'s manifest, prefetch artifacts and lean zTOCs and records it (and its zTOCs) in
    /// one transaction. `image_ref` is what `soci index list` shows, `manifest` the image
    /// manifest it belongs to (for v2: the annotated copy), `source` where its layers were
    /// read.
    pub fn record_index(
        &self,
        index: &BuiltIndex,
        image_ref: &str,
        manifest: &Digest,
        source: &str,
    ) -> Result<IndexRecord> {
        self.put_blob(&index.bytes)?;
        for prefetch in &index.prefetch {
            self.put_blob(&prefetch.bytes)?;
        }
        for lean in index.ztocs.iter().filter_map(|z| z.lean.as_ref()) {
            self.put_blob(&lean.bytes)?;
        }
        let ztocs: Vec<ZtocRecord> = index
            .ztocs
            .iter()
            .map(|z| ztoc_record(&z.layer, &z.ztoc, index.span_size, z.source_or(source)))
            .collect();
        let record = IndexRecord {
            digest: index.digest.to_string(),
            size: index.bytes.len() as u64,
            image_ref: image_ref.to_owned(),
            platform: index.platform(),
            media_type: match index.version {
                IndexVersion::V1 => oci::soci_index::SOCI_INDEX_V1,
                IndexVersion::V2 => oci::soci_index::SOCI_INDEX_V2,
            }
            .to_owned(),
            manifest_digest: manifest.to_string(),
            created: now_rfc3339(),
            ztocs: ztocs.iter().map(|z| z.digest.clone()).collect(),
            span_size: index.span_size,
            min_layer_size: index.min_layer_size,
        };
        self.db.put_index(&record, &ztocs)?;
        Ok(record)
    }
}

/// The record of zTOC `ztoc` built for `layer`.
fn ztoc_record(layer: &Descriptor, ztoc: &ZtocBlob, span_size: u64, source: &str) -> ZtocRecord {
    ZtocRecord {
        digest: ztoc.digest.to_string(),
        size: ztoc.bytes.len() as u64,
        layer_digest: layer.digest().to_string(),
        layer_media_type: layer.media_type().to_string(),
        layer_size: layer.size(),
        span_size,
        source: (!source.is_empty()).then(|| source.to_owned()),
        placement: ztoc.placement.clone(),
    }
}

/// Now, RFC 3339 UTC, as index records carry it.
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
