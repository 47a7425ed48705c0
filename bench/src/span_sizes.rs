//! Span-size trade-off for a workload: for each span size, the bytes a lazy start must move
//! (the zTOCs plus every span holding a byte of the files the workload reads) against the
//! bytes of those files, with uniform checkpoints and with checkpoints around the reads
//! (`soci create --checkpoints reads`). Smaller spans fetch less around each file but make the zTOC larger
//! (one 32 KiB window per span), and the zTOC is fetched before the first read. No network:
//! the zTOCs are built from the layer files, so the figures are exact byte counts.
//!
//! Usage: span-sizes-bench --reads READS.json [--ranges RANGES.json] [--span-size N]... [--min-layer-size N] LAYER.tar.gz...
//! (layers bottom to top, as in the image manifest; READS.json as written by
//! `soci mount --record-reads`).

use anyhow::{Context, Result};
use clap::Parser;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Bytes a lazy start moves at each span size, from a recorded read list")]
struct Args {
    /// The workload's read list (JSON array of paths, `soci mount --record-reads`).
    #[arg(long)]
    reads: PathBuf,
    /// The byte ranges read of each file (`soci mount --record-read-ranges`); without it,
    /// every file in the read list counts whole.
    #[arg(long)]
    ranges: Option<PathBuf>,
    /// Span sizes to compare, in bytes (repeat the flag).
    #[arg(long = "span-size", default_values_t = [1u64 << 20, 2 << 20, 4 << 20, 8 << 20])]
    span_sizes: Vec<u64>,
    /// Layers smaller than this get no zTOC and are fetched whole (as `soci create`).
    #[arg(long, default_value_t = 10 << 20)]
    min_layer_size: u64,
    /// gzip layer files, bottom layer first.
    #[arg(required = true)]
    layers: Vec<PathBuf>,
}

/// The data range of `path` in `z`, following hard links (their entries carry no data).
fn file_range(z: &ztoc::Ztoc, path: &str) -> Option<(u64, u64)> {
    let mut f = z.find_file(path)?;
    for _ in 0..8 {
        if f.file_type != ztoc::FileType::Hardlink {
            break;
        }
        f = z.find_file(&f.linkname)?;
    }
    (f.file_type == ztoc::FileType::Regular).then_some((f.uncompressed_offset, f.uncompressed_size))
}

/// Builds the zTOC of each layer at or above `min_layer_size` (`None` below it), with
/// `placement(layer position)` deciding where checkpoints go.
fn build_all(
    args: &Args,
    sizes: &[u64],
    span_size: u64,
    placement: impl Fn(usize) -> ztoc::Placement,
) -> Result<Vec<Option<ztoc::Ztoc>>> {
    let mut ztocs = Vec::new();
    for (i, (path, &size)) in args.layers.iter().zip(sizes).enumerate() {
        if size < args.min_layer_size {
            ztocs.push(None);
            continue;
        }
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let options = ztoc::BuildOptions {
            span_size,
            placement: placement(i),
            ..Default::default()
        };
        let z = ztoc::build_ztoc(
            BufReader::with_capacity(1 << 20, file),
            ztoc::CompressionAlgorithm::Gzip,
            &options,
        )
        .with_context(|| format!("indexing {}", path.display()))?;
        ztocs.push(Some(z));
    }
    Ok(ztocs)
}

/// The tar-stream ranges read from each layer: every path from the topmost layer holding
/// it, the byte ranges recorded (or the whole file). Also the uncompressed bytes read.
fn read_extents(
    ztocs: &[Option<ztoc::Ztoc>],
    reads: &[String],
    ranges: Option<&HashMap<String, Vec<(u64, u64)>>>,
) -> (Vec<Vec<(u64, u64)>>, u64) {
    let mut extents = vec![Vec::new(); ztocs.len()];
    let mut read = 0u64;
    for path in reads {
        for (layer, z) in ztocs.iter().enumerate().rev() {
            let Some(z) = z else { continue };
            let Some((offset, size)) = file_range(z, path) else {
                continue;
            };
            let whole = [(0, size)];
            let parts: &[(u64, u64)] = match ranges {
                Some(r) => r.get(path).map_or(&[], Vec::as_slice),
                None => &whole,
            };
            for &(start, end) in parts {
                let end = end.min(size);
                if start < end {
                    read += end - start;
                    extents[layer].push((offset + start, offset + end));
                }
            }
            break;
        }
    }
    (extents, read)
}

/// zTOC bytes and the compressed bytes of every span holding a byte of `extents`.
fn moved(ztocs: &[Option<ztoc::Ztoc>], extents: &[Vec<(u64, u64)>]) -> Result<(u64, u64)> {
    let mut ztoc_bytes = 0;
    let mut span_bytes = 0;
    for (z, layer_extents) in ztocs.iter().zip(extents) {
        let Some(z) = z else { continue };
        ztoc_bytes += ztoc::encode(z).len() as u64;
        let mut spans = BTreeSet::new();
        for &(start, end) in layer_extents {
            spans.extend(z.span_of(start)?..=z.span_of(end - 1)?);
        }
        for s in spans {
            let r = z.span_compressed_range(s)?;
            span_bytes += r.end - r.start;
        }
    }
    Ok((ztoc_bytes, span_bytes))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let reads: Vec<String> = serde_json::from_slice(
        &std::fs::read(&args.reads).with_context(|| format!("reading {}", args.reads.display()))?,
    )
    .context("the read list is not a JSON array of paths")?;
    let ranges: Option<HashMap<String, Vec<(u64, u64)>>> = match &args.ranges {
        Some(p) => Some(
            serde_json::from_slice(
                &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .context("the ranges file is not a JSON object of path -> [[start, end], ...]")?,
        ),
        None => None,
    };
    let sizes: Vec<u64> = args
        .layers
        .iter()
        .map(|l| std::fs::metadata(l).map(|m| m.len()))
        .collect::<std::io::Result<_>>()
        .context("reading the layer files")?;
    println!(
        "| span size | checkpoints | zTOC bytes | span bytes | small layers | total moved | read ({}) | moved / read |",
        if ranges.is_some() { "byte ranges" } else { "whole files" }
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &span_size in &args.span_sizes {
        let uniform = build_all(&args, &sizes, span_size, |_| ztoc::Placement::Uniform)?;
        let small_layers: u64 = uniform
            .iter()
            .zip(&sizes)
            .filter(|(z, _)| z.is_none())
            .map(|(_, s)| s)
            .sum();
        let (extents, read) = read_extents(&uniform, &reads, ranges.as_ref());
        // As `soci create --checkpoints reads` places them (the TOC, hence the extents, is
        // the same whatever the checkpoints).
        let placed = build_all(&args, &sizes, span_size, |i| {
            let layer_extents: &[(u64, u64)] = extents.get(i).map_or(&[], Vec::as_slice);
            ztoc::Placement::around_ranges(layer_extents, ztoc::placement::DEFAULT_MERGE_GAP)
        })?;
        for (label, ztocs) in [("uniform", &uniform), ("around reads", &placed)] {
            let (ztoc_bytes, span_bytes) = moved(ztocs, &extents)?;
            let total = ztoc_bytes + span_bytes + small_layers;
            println!(
                "| {} MiB | {label} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB | {:.2} |",
                span_size as f64 / (1 << 20) as f64,
                ztoc_bytes as f64 / 1e6,
                span_bytes as f64 / 1e6,
                small_layers as f64 / 1e6,
                total as f64 / 1e6,
                read as f64 / 1e6,
                total as f64 / read.max(1) as f64
            );
        }
    }
    Ok(())
}
