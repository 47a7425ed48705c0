//! Span-size trade-off for a workload: for each span size, the bytes a lazy start must move
//! (the zTOCs plus every span holding a byte of the files the workload reads) against the
//! bytes of those files, with uniform checkpoints and with checkpoints around the reads
//! (`soci create --checkpoints reads`). Smaller spans fetch less around each file but make the zTOC larger
//! (one 32 KiB window per span), and the zTOC is fetched before the first read. No network:
//! the zTOCs are built from the layer files, so the figures are exact byte counts.
//!
//! Each row also gives the bytes with lean zTOCs: the lean zTOCs, the spans, and the windows
//! a reader must fetch (those of spans whose preceding 32 KiB it did not fetch; with
//! checkpoints around the reads, the prefetch list's windows are inline and none is fetched).
//!
//! Usage: span-sizes-bench [--reads READS.json] [--ranges RANGES.json] [--span-size N]...
//! [--whole-file-bytes N] [--min-layer-size N] LAYER.tar.gz...
//! (layers bottom to top, as in the image manifest; READS.json as written by
//! `soci mount --record-reads`, RANGES.json by `--record-read-ranges` or `soci optimize`).

use anyhow::{Context, Result};
use clap::Parser;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Bytes a lazy start moves at each span size, from a recorded read list")]
struct Args {
    /// The workload's read list (JSON array of paths, `soci mount --record-reads`); without
    /// it, the files of `--ranges`.
    #[arg(long)]
    reads: Option<PathBuf>,
    /// The byte ranges read of each file (`soci mount --record-read-ranges`); without it,
    /// every file in the read list counts whole.
    #[arg(long)]
    ranges: Option<PathBuf>,
    /// Span sizes to compare, in bytes (repeat the flag).
    #[arg(long = "span-size", default_values_t = [256u64 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20])]
    span_sizes: Vec<u64>,
    /// A reader fetches the whole of a file up to this size on its first read (the span
    /// manager's `whole_file_bytes`); 0: only the spans read.
    #[arg(long, default_value_t = 1 << 20)]
    whole_file_bytes: u64,
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
    claim_bytes: u64,
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
            let mut parts: &[(u64, u64)] = match ranges {
                Some(r) => r.get(path).map_or(&[], Vec::as_slice),
                None => &whole,
            };
            // A reader fetches the whole of a file up to this size on its first read.
            if !parts.is_empty() && size <= claim_bytes {
                parts = &whole;
            }
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

/// What a start moves for one layer set: the zTOCs fetched before the first read, the spans
/// holding a byte read, and with lean zTOCs instead of full ones, the lean zTOCs plus the
/// windows a reader must still fetch (those neither inline nor made from spans it fetched).
struct Moved {
    ztoc: u64,
    spans: u64,
    lean: u64,
    windows: u64,
}

/// The spans of `z` holding a byte of `extents`.
fn touched(z: &ztoc::Ztoc, extents: &[(u64, u64)]) -> Result<BTreeSet<u64>> {
    let mut spans = BTreeSet::new();
    for &(start, end) in extents {
        spans.extend(z.span_of(start)?..=z.span_of(end - 1)?);
    }
    Ok(spans)
}

/// Whether the window of `span` can be made from the uncompressed bytes of `have`.
fn derivable(z: &ztoc::Ztoc, span: u64, have: &BTreeSet<u64>) -> Result<bool> {
    let out = z.span_uncompressed_range(span)?.start;
    let r = ztoc::lean::window_source_range(out);
    if r.is_empty() {
        return Ok(true);
    }
    Ok((z.span_of(r.start)?..=z.span_of(r.end - 1)?).all(|s| have.contains(&s)))
}

/// Bytes moved for `extents` with `ztocs`; `inline_hot`: the lean zTOCs carry the windows of
/// the spans read whose windows cannot be made from other spans read (as with a prefetch
/// list of those spans).
fn moved(
    ztocs: &[Option<ztoc::Ztoc>],
    extents: &[Vec<(u64, u64)>],
    inline_hot: bool,
) -> Result<Moved> {
    let mut m = Moved {
        ztoc: 0,
        spans: 0,
        lean: 0,
        windows: 0,
    };
    for (z, layer_extents) in ztocs.iter().zip(extents) {
        let Some(z) = z else { continue };
        let full = ztoc::encode(z);
        m.ztoc += full.len() as u64;
        let spans = touched(z, layer_extents)?;
        let mut need = BTreeSet::new();
        for &s in &spans {
            let r = z.span_compressed_range(s)?;
            m.spans += r.end - r.start;
            if !derivable(z, s, &spans)? {
                need.insert(s);
            }
        }
        let inline = if inline_hot {
            need.clone()
        } else {
            BTreeSet::new()
        };
        m.lean += ztoc::lean::encode_lean(&full, &inline)?.len() as u64;
        if !inline_hot {
            m.windows += need.len() as u64 * ztoc::WINDOW_SIZE as u64;
        }
    }
    Ok(m)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ranges: Option<HashMap<String, Vec<(u64, u64)>>> = match &args.ranges {
        Some(p) => Some(
            serde_json::from_slice(
                &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .context("the ranges file is not a JSON object of path -> [[start, end], ...]")?,
        ),
        None => None,
    };
    let reads: Vec<String> = match (&args.reads, &ranges) {
        (Some(p), _) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .context("the read list is not a JSON array of paths")?,
        (None, Some(r)) => r.keys().cloned().collect(),
        (None, None) => anyhow::bail!("give --reads, --ranges or both"),
    };
    let sizes: Vec<u64> = args
        .layers
        .iter()
        .map(|l| std::fs::metadata(l).map(|m| m.len()))
        .collect::<std::io::Result<_>>()
        .context("reading the layer files")?;
    println!(
        "| span size | checkpoints | zTOC bytes | span bytes | small layers | total moved | lean zTOC bytes | windows fetched | total with lean zTOCs | read ({}) | moved / read (lean) |",
        if ranges.is_some() { "byte ranges" } else { "whole files" }
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &span_size in &args.span_sizes {
        let uniform = build_all(&args, &sizes, span_size, |_| ztoc::Placement::Uniform)?;
        let small_layers: u64 = uniform
            .iter()
            .zip(&sizes)
            .filter(|(z, _)| z.is_none())
            .map(|(_, s)| s)
            .sum();
        let (extents, read) = read_extents(&uniform, &reads, ranges.as_ref(), 0);
        let (fetched, _) = read_extents(&uniform, &reads, ranges.as_ref(), args.whole_file_bytes);
        // As `soci create --checkpoints reads` places them (the TOC, hence the extents, is
        // the same whatever the checkpoints).
        let placed = build_all(&args, &sizes, span_size, |i| {
            let layer_extents: &[(u64, u64)] = extents.get(i).map_or(&[], Vec::as_slice);
            ztoc::Placement::around_ranges(layer_extents, ztoc::placement::DEFAULT_MERGE_GAP)
        })?;
        for (label, ztocs) in [("uniform", &uniform), ("around reads", &placed)] {
            // Checkpoints around the reads come with a prefetch list of those spans, whose
            // windows the lean zTOC carries.
            let m = moved(ztocs, &fetched, label != "uniform")?;
            let total = m.ztoc + m.spans + small_layers;
            let lean_total = m.lean + m.windows + m.spans + small_layers;
            let mb = |b: u64| b as f64 / 1e6;
            println!(
                "| {} KiB | {label} | {:.1} MB | {:.1} MB | {:.1} MB | {:.1} MB | {:.2} MB | {:.2} MB | {:.1} MB | {:.1} MB | {:.2} |",
                span_size >> 10,
                mb(m.ztoc),
                mb(m.spans),
                mb(small_layers),
                mb(total),
                mb(m.lean),
                mb(m.windows),
                mb(lean_total),
                mb(read),
                lean_total as f64 / read.max(1) as f64
            );
        }
    }
    Ok(())
}
