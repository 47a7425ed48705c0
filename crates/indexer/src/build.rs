//! Building and publishing: every selected layer streamed once through the zTOC builder, then
//! the indexes pushed as `Publish` says.

use crate::binding::{self, BindingStep, V2Index};
use crate::check::Plan;
use crate::error::{Error, Result};
use crate::index::{index_manifest, platform_text, ztoc_descriptor};
use crate::layer::{blob_reader, build_layer_ztoc};
use crate::publish::{self, empty_config_blob};
use crate::{IndexedManifest, Report, Settings};
use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use oci::resolve::ResolvedImage;
use oci::soci_index::{self, IndexVersion};
use oci::{Descriptor, Digest};
use registry::Repository;
use std::collections::HashMap;
use std::time::Instant;

/// Blob uploads in flight at once (as `soci push`'s default).
const UPLOAD_CONCURRENCY: usize = 3;

/// A zTOC built, encoded.
struct BuiltZtoc {
    digest: Digest,
    bytes: Bytes,
}

/// One SOCI index built for an image.
struct BuiltIndex<'a> {
    image: &'a ResolvedImage,
    digest: Digest,
    bytes: Vec<u8>,
    /// The zTOCs it lists, in layer order.
    ztocs: Vec<(Digest, Bytes)>,
}

/// Streams and indexes the plan's layers, `layer_concurrency` at once; returns the zTOCs by
/// layer digest and the bytes streamed.
async fn build_ztocs(
    repo: &Repository,
    layers: &[Descriptor],
    settings: &Settings,
) -> Result<(HashMap<Digest, BuiltZtoc>, u64)> {
    let options = ztoc::BuildOptions {
        span_size: settings.span_size,
        build_tool_identifier: settings.build_tool.clone(),
    };
    let built: Vec<(Digest, BuiltZtoc, u64)> = stream::iter(layers.iter().cloned().map(|layer| {
        let options = options.clone();
        async move {
            let reader = blob_reader(repo, &layer).await?;
            let what = format!("indexing layer {}", layer.digest());
            tokio::task::spawn_blocking(move || {
                let z = build_layer_ztoc(reader, &layer, &options)?;
                let bytes = Bytes::from(ztoc::encode(&z));
                let digest = oci::digest::sha256(&bytes);
                // Verified against the descriptor: its size is what was streamed.
                let read = layer.size();
                Ok::<_, Error>((layer.digest().clone(), BuiltZtoc { digest, bytes }, read))
            })
            .await
            .map_err(|e| Error::Task {
                what,
                reason: e.to_string(),
            })?
        }
    }))
    .buffer_unordered(settings.layer_concurrency.max(1))
    .try_collect()
    .await?;
    let read = built.iter().map(|(_, _, n)| n).sum();
    Ok((built.into_iter().map(|(d, z, _)| (d, z)).collect(), read))
}

/// Builds the SOCI index of each image that has at least one zTOC.
fn build_indexes<'a>(
    plan: &'a Plan,
    ztocs: &HashMap<Digest, BuiltZtoc>,
    settings: &Settings,
    version: IndexVersion,
) -> Result<Vec<BuiltIndex<'a>>> {
    let mut out = Vec::new();
    for image in &plan.images {
        let mut descs = Vec::new();
        let mut blobs = Vec::new();
        for layer in image.manifest.layers() {
            if let Some(z) = ztocs.get(layer.digest()) {
                descs.push(ztoc_descriptor(
                    layer,
                    z.digest.clone(),
                    z.bytes.len() as u64,
                    settings.span_size,
                ));
                blobs.push((z.digest.clone(), z.bytes.clone()));
            }
        }
        if descs.is_empty() {
            continue;
        }
        let subject = (version == IndexVersion::V1).then_some(&image.manifest_desc);
        let (bytes, digest) = index_manifest(version, subject, &descs, &[], &settings.build_tool)?;
        out.push(BuiltIndex {
            image,
            digest,
            bytes,
            ztocs: blobs,
        });
    }
    Ok(out)
}

fn indexed(b: &BuiltIndex<'_>) -> IndexedManifest {
    let platform = platform_text(b.image);
    IndexedManifest {
        manifest: b.image.manifest_desc.digest().clone(),
        platform: (!platform.is_empty()).then_some(platform),
        index: b.digest.clone(),
        ztocs: b.ztocs.len(),
    }
}

/// Builds and publishes what `plan` says.
pub(crate) async fn run(repo: &Repository, plan: &Plan, settings: &Settings) -> Result<Report> {
    let started = Instant::now();
    let (ztocs, layer_bytes_read) = build_ztocs(repo, &plan.layers, settings).await?;
    let build_seconds = started.elapsed().as_secs_f64();
    let version = match plan.dest_tag {
        None => IndexVersion::V1,
        Some(_) => IndexVersion::V2,
    };
    let built = build_indexes(plan, &ztocs, settings, version)?;
    let mut report = Report {
        indexes: built.iter().map(indexed).collect(),
        converted: None,
        layer_bytes_read,
        build_seconds,
        pushed_manifests: Vec::new(),
    };
    match &plan.dest_tag {
        None => {
            for b in &built {
                let index = soci_index::parse_index_manifest(&b.bytes, b.digest.as_ref())?;
                let pushed = publish::publish_v1(
                    repo,
                    b.image.manifest_desc.digest(),
                    Bytes::from(b.bytes.clone()),
                    &index,
                    b.ztocs.clone(),
                    UPLOAD_CONCURRENCY,
                )
                .await?;
                report
                    .pushed_manifests
                    .extend(pushed.pushed_manifests(&b.digest));
            }
        }
        Some(dest) => {
            let converted = publish_v2(repo, plan, &built, dest, &mut report).await?;
            report.converted = Some((dest.clone(), converted));
        }
    }
    Ok(report)
}

/// Writes the manifest copies, the SOCI indexes (blobs first) and the new image index tagged
/// `dest`, all in the source repository (layers and configs are shared, nothing to copy).
async fn publish_v2(
    repo: &Repository,
    plan: &Plan,
    built: &[BuiltIndex<'_>],
    dest: &str,
    report: &mut Report,
) -> Result<Digest> {
    let indexes: Vec<V2Index> = built
        .iter()
        .map(|b| V2Index::new(b.image, &b.digest, b.bytes.len() as u64))
        .collect();
    // The binding reads manifests synchronously: fetch the image manifests it will ask for.
    let mut manifests: HashMap<Digest, Vec<u8>> =
        HashMap::from([(plan.top.desc.digest().clone(), plan.top.bytes.clone())]);
    let entries = plan
        .top_json
        .get("manifests")
        .and_then(serde_json::Value::as_array);
    for entry in entries.into_iter().flatten() {
        let Ok(desc) = serde_json::from_value::<Descriptor>(entry.clone()) else {
            continue; // reported by the binding
        };
        let media = desc.media_type().to_string();
        if media == oci::manifest::OCI_MANIFEST || media == oci::manifest::DOCKER_MANIFEST {
            let m = repo.get_manifest(desc.digest().as_ref()).await?;
            manifests.insert(desc.digest().clone(), m.bytes.to_vec());
        }
    }
    let binding = binding::v2_binding(
        &plan.top.desc,
        &plan.top_json,
        &plan.images,
        &indexes,
        |d: &Descriptor| {
            manifests
                .get(d.digest())
                .cloned()
                .ok_or_else(|| Error::InvalidImage {
                    what: d.digest().to_string(),
                    reason: "manifest listed twice with different contents".into(),
                })
        },
    )?;
    for step in &binding.steps {
        let BindingStep::Copy {
            digest,
            bytes,
            index,
            ..
        } = step
        else {
            continue; // same repository: already there
        };
        repo.put_manifest(
            digest.as_ref(),
            oci::manifest::OCI_MANIFEST,
            Bytes::from(bytes.clone()),
        )
        .await?;
        report.pushed_manifests.push(digest.clone());
        if let Some(b) = index.and_then(|i| built.get(i)) {
            // zTOCs and the empty config before the index that names them.
            let mut blobs = b.ztocs.clone();
            blobs.push(empty_config_blob()?);
            publish::push_blobs(repo, blobs, UPLOAD_CONCURRENCY).await?;
            repo.put_manifest(
                b.digest.as_ref(),
                oci::manifest::OCI_MANIFEST,
                Bytes::from(b.bytes.clone()),
            )
            .await?;
            report.pushed_manifests.push(b.digest.clone());
        }
    }
    repo.put_manifest(
        dest,
        oci::manifest::OCI_INDEX,
        Bytes::from(binding.index_bytes.clone()),
    )
    .await?;
    report.pushed_manifests.push(binding.index_digest.clone());
    Ok(binding.index_digest)
}
