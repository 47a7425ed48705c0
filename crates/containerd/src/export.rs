//! Storing SOCI indexes in containerd's content store (`soci create --content-store
//! containerd`): each index manifest with its zTOCs, prefetch artifacts and empty config.
//! The index blob carries GC references to its blobs (`containerd.io/gc.ref.content.l.<i>`,
//! `….config`) and the image record, when containerd has the image, references the indexes
//! ([`labels::GC_REF_SOCI_INDEX`], AWS's label), so containerd's garbage collector keeps
//! them exactly as long as the image.

use crate::client::Client;
use crate::labels;
use oci::soci_index;
use oci::Digest;
use std::collections::HashMap;
use std::time::Duration;

/// How long the export's lease survives if the export dies before deleting it.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);

/// An error the caller's blob reader returns.
pub type ReadBlobError = Box<dyn std::error::Error + Send + Sync>;

/// One SOCI index stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedIndex {
    /// The index manifest.
    pub digest: Digest,
    /// Its zTOCs and prefetch artifacts stored with it.
    pub blobs: usize,
}

/// What an export stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The indexes, in the order given.
    pub indexes: Vec<ExportedIndex>,
    /// The image record now referencing them; `None` when no image was named, and nothing
    /// keeps the indexes from garbage collection (pull the image into containerd first).
    pub image: Option<String>,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// containerd refused or failed a call.
    #[error(transparent)]
    Containerd(#[from] crate::client::Error),
    /// An index manifest cannot be parsed.
    #[error("SOCI index {index} cannot be stored in containerd")]
    Index {
        /// The index.
        index: Digest,
        /// Why it cannot be parsed.
        #[source]
        source: oci::Error,
    },
    /// The caller could not read one of an index's blobs.
    #[error("reading {blob} (of SOCI index {index}) to store it in containerd")]
    ReadBlob {
        /// The blob.
        blob: Digest,
        /// The index listing it.
        index: Digest,
        /// The reader's error.
        #[source]
        source: ReadBlobError,
    },
}

/// Stores `indexes` (digest, manifest bytes) with the zTOCs and prefetch artifacts they
/// list, which `read_blob` supplies, and labels image record `image_name` with references to
/// them. Every blob is verified against its digest as it is written. Runs under its own
/// lease, deleted at the end: what the labels do not reference becomes collectable.
pub async fn export_soci_indexes<F, E>(
    client: &Client,
    indexes: &[(Digest, Vec<u8>)],
    read_blob: F,
    image_name: Option<&str>,
) -> Result<ExportReport, ExportError>
where
    F: Fn(&Digest) -> Result<Vec<u8>, E>,
    E: Into<ReadBlobError>,
{
    let lease = client.create_lease(LEASE_EXPIRY).await?;
    let leased = client.with_lease(&lease);
    let result = export_leased(&leased, indexes, &read_blob, image_name).await;
    if let Err(e) = client.delete_lease(&lease).await {
        tracing::warn!("deleting lease {lease}: {e}");
    }
    result
}

async fn export_leased<F, E>(
    client: &Client,
    indexes: &[(Digest, Vec<u8>)],
    read_blob: &F,
    image_name: Option<&str>,
) -> Result<ExportReport, ExportError>
where
    F: Fn(&Digest) -> Result<Vec<u8>, E>,
    E: Into<ReadBlobError>,
{
    let mut image_labels = HashMap::new();
    let mut exported = Vec::with_capacity(indexes.len());
    for (n, (digest, bytes)) in indexes.iter().enumerate() {
        let blobs = store_index(client, digest, bytes, read_blob).await?;
        let (key, value) = labels::soci_index_gc_ref(n, digest);
        image_labels.insert(key, value);
        tracing::info!(index = %digest, blobs, "SOCI index stored in containerd");
        exported.push(ExportedIndex {
            digest: digest.clone(),
            blobs,
        });
    }
    if let Some(name) = image_name {
        client.set_image_labels(name, &image_labels).await?;
    }
    Ok(ExportReport {
        indexes: exported,
        image: image_name.map(str::to_owned),
    })
}

/// Stores one index, its blobs first so its GC references never dangle; returns how many
/// blobs it lists.
async fn store_index<F, E>(
    client: &Client,
    digest: &Digest,
    bytes: &[u8],
    read_blob: &F,
) -> Result<usize, ExportError>
where
    F: Fn(&Digest) -> Result<Vec<u8>, E>,
    E: Into<ReadBlobError>,
{
    let index = soci_index::parse_index_manifest(bytes, digest.as_ref()).map_err(|source| {
        ExportError::Index {
            index: digest.clone(),
            source,
        }
    })?;
    let blobs: Vec<&Digest> = index.blobs().into_iter().map(|(d, _)| d).collect();
    for blob in &blobs {
        let data = read_blob(blob).map_err(|e| ExportError::ReadBlob {
            blob: (*blob).clone(),
            index: digest.clone(),
            source: e.into(),
        })?;
        write_verified(client, blob.as_ref(), &data, &HashMap::new()).await?;
    }
    write_verified(
        client,
        soci_index::EMPTY_CONFIG_DIGEST,
        soci_index::EMPTY_CONFIG,
        &HashMap::new(),
    )
    .await?;
    let refs = labels::manifest_gc_refs(soci_index::EMPTY_CONFIG_DIGEST, blobs.iter().copied());
    write_verified(client, digest.as_ref(), bytes, &refs).await?;
    Ok(blobs.len())
}

/// Writes `bytes` as blob `digest`: containerd refuses them if they are not that blob.
async fn write_verified(
    client: &Client,
    digest: &str,
    bytes: &[u8],
    labels: &HashMap<String, String>,
) -> Result<(), ExportError> {
    let data = futures_util::stream::iter([Ok(bytes::Bytes::copy_from_slice(bytes))]);
    client
        .write_blob(
            &format!("soci-{digest}"),
            digest,
            bytes.len() as u64,
            labels,
            data,
        )
        .await?;
    Ok(())
}
