//! `soci index list --remote IMAGE`: the SOCI indexes a registry holds for an image.

use crate::remote::{self, Remote};
use crate::IndexListArgs;
use anyhow::{Context, Result};
use oci::platform::Platform;
use oci::reference::ImageRef;
use oci::resolve::PlatformSelection;
use oci::soci_index;
use registry::ReferrersSource;
use serde::Serialize;
use serde_json::Value;
use std::io::Write;

/// One SOCI index found in a registry.
#[derive(Serialize)]
struct Found {
    digest: String,
    size: u64,
    platform: String,
    version: &'static str,
    image_manifest: String,
    /// How it was found: "image index" (v2), "referrers API" or "tag schema" (v1).
    found_through: &'static str,
}

pub fn run(args: &IndexListArgs) -> Result<()> {
    let image = args.remote.as_deref().context("--remote needs an image")?;
    let reference = ImageRef::parse(image)?;
    let remote = Remote::new(&args.registry)?;
    let repo = remote.repository(&reference)?;
    let wanted: Vec<Platform> = args
        .platform
        .iter()
        .map(|p| Platform::parse(p))
        .collect::<Result<_, _>>()?;
    let (_, top_bytes, images) =
        remote::resolve_images(&remote, &repo, &reference, &PlatformSelection::All)?;
    let keep = |p: &str| {
        wanted.is_empty() || Platform::parse(p).is_ok_and(|p| wanted.iter().any(|w| w.matches(&p)))
    };
    let mut found = Vec::new();

    // v2: SOCI index descriptors inside the image index itself.
    let top_json: Value = serde_json::from_slice(&top_bytes).unwrap_or(Value::Null);
    for m in top_json["manifests"].as_array().into_iter().flatten() {
        if m["artifactType"].as_str() != Some(soci_index::SOCI_INDEX_V2) {
            continue;
        }
        let platform = match (
            m["platform"]["os"].as_str(),
            m["platform"]["architecture"].as_str(),
        ) {
            (Some(os), Some(arch)) => match m["platform"]["variant"].as_str() {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            },
            _ => String::new(),
        };
        if !keep(&platform) {
            continue;
        }
        found.push(Found {
            digest: m["digest"].as_str().unwrap_or_default().to_owned(),
            size: m["size"].as_u64().unwrap_or(0),
            platform,
            version: "v2",
            image_manifest: m["annotations"][soci_index::ANNOTATION_IMAGE_MANIFEST_DIGEST]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            found_through: "image index",
        });
    }

    // v1: referrers of each image manifest.
    for image in &images {
        let platform = image
            .platform
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        if !keep(&platform) {
            continue;
        }
        let refs = remote.rt.block_on(repo.referrers(
            image.manifest_desc.digest(),
            Some(soci_index::SOCI_INDEX_V1),
        ))?;
        for d in refs.descriptors {
            found.push(Found {
                digest: d.digest().to_string(),
                size: d.size(),
                platform: platform.clone(),
                version: "v1",
                image_manifest: image.manifest_desc.digest().to_string(),
                found_through: match refs.source {
                    ReferrersSource::Api => "referrers API",
                    ReferrersSource::TagSchema => "tag schema",
                },
            });
        }
    }

    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &found)?;
        writeln!(out)?;
    } else if args.quiet {
        for f in &found {
            writeln!(out, "{}", f.digest)?;
        }
    } else {
        let mut table = vec![[
            "DIGEST",
            "SIZE",
            "PLATFORM",
            "MANIFEST VERSION",
            "IMAGE MANIFEST",
            "FOUND THROUGH",
        ]
        .map(String::from)
        .to_vec()];
        for f in &found {
            table.push(vec![
                f.digest.clone(),
                f.size.to_string(),
                f.platform.clone(),
                f.version.to_owned(),
                f.image_manifest.clone(),
                f.found_through.to_owned(),
            ]);
        }
        write!(out, "{}", crate::table::render(&table))?;
        if found.is_empty() {
            writeln!(
                out,
                "(no SOCI index in {image}; create and push one with `soci create {image} && soci push {image}`)"
            )?;
        }
    }
    Ok(())
}
