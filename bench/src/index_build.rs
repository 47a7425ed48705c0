//! Index-build benchmark: times building a zTOC for gzip layers against `gzip -dc` of the same
//! files in the same run, then all layers in parallel against the sequential sum.
//!
//! Usage: index-build-bench [--runs N] LAYER.tar.gz...

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Time zTOC builds against gzip -dc on the same gzip layers")]
struct Args {
    /// Repetitions of each measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Span size in bytes.
    #[arg(long, default_value_t = ztoc::DEFAULT_SPAN_SIZE)]
    span_size: u64,
    /// gzip layer files (tar.gz).
    #[arg(required = true)]
    layers: Vec<PathBuf>,
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn build(path: &Path, span_size: u64) -> Result<ztoc::Ztoc> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let options = ztoc::BuildOptions {
        span_size,
        ..Default::default()
    };
    ztoc::build_ztoc(
        BufReader::with_capacity(1 << 20, file),
        ztoc::CompressionAlgorithm::Gzip,
        &options,
    )
    .with_context(|| format!("indexing {}", path.display()))
}

fn gunzip(path: &Path) -> Result<()> {
    let status = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .context("running gzip -dc")?;
    if !status.success() {
        bail!("gzip -dc {} failed", path.display());
    }
    Ok(())
}

fn time<F: FnMut() -> Result<()>>(runs: usize, mut f: F) -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed());
    }
    Ok(median(samples))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runs = args.runs.max(1);
    println!("| layer | compressed MB | uncompressed MB | spans | files | gzip -dc (s) | soci index (s) | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut sequential = Duration::ZERO;
    for layer in &args.layers {
        let z = build(layer, args.span_size)?;
        // Alternate the two measurements so drift on a noisy machine hits both alike.
        let mut gz = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..runs {
            gz.push(time(1, || gunzip(layer))?);
            ours.push(time(1, || build(layer, args.span_size).map(|_| ()))?);
        }
        let (gz, ours) = (median(gz), median(ours));
        sequential += ours;
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2}x |",
            layer
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            z.compressed_archive_size as f64 / 1e6,
            z.uncompressed_archive_size as f64 / 1e6,
            z.span_count(),
            z.toc.files.len(),
            gz.as_secs_f64(),
            ours.as_secs_f64(),
            ours.as_secs_f64() / gz.as_secs_f64(),
        );
    }
    if args.layers.len() > 1 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parallel = time(runs, || {
            std::thread::scope(|scope| {
                let handles: Vec<_> = args
                    .layers
                    .iter()
                    .map(|l| scope.spawn(move || build(l, args.span_size).map(|_| ())))
                    .collect();
                handles
                    .into_iter()
                    .try_for_each(|h| h.join().expect("bench thread panicked"))
            })
        })?;
        let ideal = sequential.as_secs_f64() / cores.min(args.layers.len()) as f64;
        println!();
        println!(
            "all {} layers in parallel on {cores} cores: {:.2} s (sequential sum {:.2} s, ideal sum/cores {:.2} s, {:.2}x of ideal)",
            args.layers.len(),
            parallel.as_secs_f64(),
            sequential.as_secs_f64(),
            ideal,
            parallel.as_secs_f64() / ideal
        );
    }
    Ok(())
}
