//! `soci ztoc list|info|get-file`: the zTOCs recorded locally, and one file extracted from a
//! layer through its zTOC (from a layout on disk, or from the registry with Range requests).

use crate::remote::{RegistryArgs, Remote};
use crate::table;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indexer::local::LocalStore;
use oci::db::ZtocRecord;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// `soci ztoc` subcommands.
#[derive(Subcommand)]
pub enum ZtocCommand {
    /// List zTOCs.
    #[command(visible_alias = "ls")]
    List(ZtocListArgs),
    /// Print a zTOC's contents as JSON.
    Info {
        /// Digest of the zTOC.
        digest: String,
    },
    /// Extract one file from a layer, reading only the spans that hold it.
    GetFile(GetFileArgs),
}

/// Arguments of `soci ztoc list`.
#[derive(Args)]
pub struct ZtocListArgs {
    /// Only this zTOC.
    #[arg(long)]
    ztoc_digest: Option<String>,
    /// Only zTOCs of indexes built for this image reference.
    #[arg(long)]
    image_ref: Option<String>,
    /// Print digests only.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `soci ztoc get-file`.
#[derive(Args)]
pub struct GetFileArgs {
    /// Digest of the zTOC.
    digest: String,
    /// Path of the file inside the layer.
    path: String,
    /// Write the file here instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Layer blob to read (default: where `soci create` found the layer).
    #[arg(long)]
    layer: Option<PathBuf>,
    /// Print how many spans and bytes were read to standard error.
    #[arg(long)]
    stats: bool,
    /// Registry access, for zTOCs built from an image in a registry (the layer's spans are
    /// then fetched with HTTP Range requests).
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Runs a `soci ztoc` subcommand.
pub fn run(root: &Path, cmd: ZtocCommand) -> Result<()> {
    let local = LocalStore::open(root)?;
    match cmd {
        ZtocCommand::List(args) => list(&local, &args),
        ZtocCommand::Info { digest } => {
            let (_, bytes, z) = load(&local, &crate::digest_arg(&digest)?)?;
            let info = crate::ztoc_info::info(&z, bytes.len() as u64);
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(())
        }
        ZtocCommand::GetFile(args) => get_file(&local, &args),
    }
}

fn list(local: &LocalStore, args: &ZtocListArgs) -> Result<()> {
    let mut rows = local.db.list_ztocs()?;
    if let Some(r) = &args.image_ref {
        let r = crate::normalize_ref(r)?;
        let of_image: std::collections::HashSet<String> = local
            .db
            .list_indexes()?
            .into_iter()
            .filter(|i| i.image_ref == r)
            .flat_map(|i| i.ztocs)
            .collect();
        rows.retain(|z| of_image.contains(&z.digest));
    }
    if let Some(d) = &args.ztoc_digest {
        rows.retain(|z| &z.digest == d);
        if rows.is_empty() {
            let why = match args.image_ref {
                Some(_) => " or is not part of that image's indexes",
                None => "",
            };
            bail!("zTOC {d} does not exist{why}");
        }
    }
    rows.sort_by(|a, b| a.digest.cmp(&b.digest));
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
    } else if args.quiet {
        for z in &rows {
            writeln!(out, "{}", z.digest)?;
        }
    } else {
        let mut cells = vec![vec![
            "DIGEST".to_owned(),
            "SIZE".into(),
            "LAYER DIGEST".into(),
        ]];
        cells.extend(
            rows.iter()
                .map(|z| vec![z.digest.clone(), z.size.to_string(), z.layer_digest.clone()]),
        );
        write!(out, "{}", table::render(&cells))?;
    }
    Ok(())
}

/// Looks a zTOC up once: its record, its verified blob, and the decoded zTOC.
fn load(local: &LocalStore, d: &oci::Digest) -> Result<(ZtocRecord, Vec<u8>, ztoc::Ztoc)> {
    let Some(record) = local.db.get_ztoc(d)? else {
        if local.db.get_index(d)?.is_some() {
            bail!("{d} is a SOCI index, not a zTOC; use `soci index info {d}`");
        }
        bail!("zTOC {d} not found; `soci ztoc list` shows what exists");
    };
    let bytes = local.store.get(d)?;
    let z = ztoc::decode(&bytes).with_context(|| format!("decoding zTOC {d}"))?;
    Ok((record, bytes, z))
}

fn get_file(local: &LocalStore, args: &GetFileArgs) -> Result<()> {
    let (record, _, z) = load(local, &crate::digest_arg(&args.digest)?)?;
    let file = z.resolve_regular_file(&args.path)?;
    let (data, read) = extract(&record, &z, file, args)?;
    match &args.output {
        Some(out) => {
            // Write next to the target, then rename: a failed extraction never leaves a
            // truncated file behind.
            let tmp = out.with_extension("soci-partial");
            std::fs::write(&tmp, &data).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        }
        None => std::io::stdout().lock().write_all(&data)?,
    }
    if args.stats {
        let (first, last) = if file.uncompressed_size == 0 {
            (0, 0)
        } else {
            let start = file.uncompressed_offset;
            z.spans_for_range(&(start..start.saturating_add(file.uncompressed_size)))?
        };
        eprintln!(
            "{}: {} bytes from spans {first}..={last} of {}; read {read} of {} compressed layer bytes ({:.2}%)",
            args.path,
            data.len(),
            z.span_count(),
            z.compressed_archive_size,
            100.0 * read as f64 / z.compressed_archive_size.max(1) as f64
        );
    }
    Ok(())
}

/// The file's bytes and how many compressed layer bytes were read: from the registry the
/// layer was indexed from (Range requests), or from a layer blob on disk (`--layer`, or the
/// layout it was indexed from).
fn extract(
    record: &ZtocRecord,
    z: &ztoc::Ztoc,
    file: &ztoc::FileMetadata,
    args: &GetFileArgs,
) -> Result<(Vec<u8>, u64)> {
    let layer_digest = crate::digest_arg(&record.layer_digest)?;
    let in_registry = record
        .source
        .as_deref()
        .and_then(|s| s.strip_prefix("docker://"))
        .filter(|_| args.layer.is_none());
    if let Some(location) = in_registry {
        let (host, repository) = location
            .split_once('/')
            .with_context(|| format!("bad layer location {location:?}"))?;
        let remote = Remote::new(&args.registry)?;
        let repo = remote.client.repository(host, repository)?;
        let handle = remote.rt.handle().clone();
        let mut blob =
            registry::blocking::RangeReader::new(handle, repo, layer_digest, record.layer_size);
        let data = ztoc::read_file(z, &mut blob, file)
            .with_context(|| format!("extracting {} from layer in {location}", args.path))?;
        return Ok((data, blob.fetched()));
    }
    let path = match &args.layer {
        Some(p) => p.clone(),
        None => {
            let source = record.source.as_deref().with_context(|| {
                format!(
                    "zTOC {} has no known layer location; pass the layer blob with --layer FILE",
                    args.digest
                )
            })?;
            Path::new(source)
                .join("blobs/sha256")
                .join(layer_digest.digest())
        }
    };
    let mut blob = CountingFile::open(&path)?;
    let data = ztoc::read_file(z, &mut blob, file)
        .with_context(|| format!("extracting {} from layer {}", args.path, path.display()))?;
    Ok((data, blob.read))
}

/// A layer file that counts the bytes read from it (for `--stats`).
struct CountingFile {
    file: std::fs::File,
    read: u64,
}

impl CountingFile {
    fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening layer blob {}", path.display()))?;
        Ok(Self { file, read: 0 })
    }
}

impl Read for CountingFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl Seek for CountingFile {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}
