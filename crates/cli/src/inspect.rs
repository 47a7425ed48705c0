//! `soci ls IMAGE [PATH]` and `soci cat IMAGE PATH`: look inside an image in a registry
//! through its SOCI index, fetching the zTOCs and only the spans that hold what is read.

use crate::remote::{self, RegistryArgs, Remote};
use anyhow::{bail, Context, Result};
use clap::Args;
use lazyfs::tree::{Node, NodeKind};
use lazyfs::view::{Entry, ImageView, LayerData};
use oci::reference::ImageRef;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// Bytes read per request when copying a file out.
const CHUNK: u64 = 4 << 20;

/// Image selection shared by `ls` and `cat`.
#[derive(Args)]
pub struct ImageArgs {
    /// Platform of a multi-platform image (default: this machine's).
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `soci ls`.
#[derive(Args)]
pub struct LsArgs {
    /// Image in a registry: HOST/REPO[:TAG|@DIGEST].
    image: String,
    /// Directory or file inside the image.
    #[arg(default_value = "/")]
    path: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    image_args: ImageArgs,
}

/// `soci cat`.
#[derive(Args)]
pub struct CatArgs {
    /// Image in a registry: HOST/REPO[:TAG|@DIGEST].
    image: String,
    /// File inside the image (symlinks are followed).
    path: String,
    /// Write the file here instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<std::path::PathBuf>,
    /// Print bytes and spans fetched to standard error.
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    image_args: ImageArgs,
}

/// Opens the merged view of an image: its SOCI index, each indexed layer's zTOC, and small
/// layers without a zTOC read whole.
fn open_view(root: &Path, image: &str, args: &ImageArgs) -> Result<(Remote, ImageView)> {
    let remote = Remote::new(&args.registry)?;
    let reference = ImageRef::parse(image)?;
    let repo = remote.repository(&reference)?;
    let (resolved, found) =
        remote::resolve_indexed_image(&remote, &repo, &reference, image, args.platform.as_deref())?;
    let cache_root = root.join("cache");
    let view = remote
        .rt
        .block_on(ImageView::open(&repo, &resolved, &found.index, &cache_root))?;
    Ok((remote, view))
}

fn mode_string(node: &Node) -> String {
    let kind = match node.kind {
        NodeKind::Dir => 'd',
        NodeKind::Regular => '-',
        NodeKind::Symlink => 'l',
        NodeKind::Char => 'c',
        NodeKind::Block => 'b',
        NodeKind::Fifo => 'p',
    };
    let p = node.perm;
    let bit = |mask: u16, c: char| if p & mask != 0 { c } else { '-' };
    let special = |x: u16, s: u16, lower: char, upper: char| match (p & x != 0, p & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

fn mtime_string(node: &Node) -> String {
    let t = time::OffsetDateTime::from(node.mtime);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

#[derive(Serialize)]
struct JsonEntry {
    name: String,
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_target: Option<String>,
    layer: String,
}

pub fn ls(root: &Path, args: LsArgs) -> Result<()> {
    let (_remote, view) = open_view(root, &args.image, &args.image_args)?;
    let follow = args.path.ends_with('/');
    let entry = view.resolve(&args.path, follow)?;
    let entries: Vec<Entry<'_>> = if entry.node.kind == NodeKind::Dir {
        view.list(&entry)?
    } else {
        vec![entry]
    };
    let name_of = |e: &Entry<'_>| e.path.rsplit('/').next().unwrap_or_default().to_owned();
    let mut out = std::io::stdout().lock();
    if args.json {
        let json: Vec<JsonEntry> = entries
            .iter()
            .map(|e| JsonEntry {
                name: name_of(e),
                path: e.path.clone(),
                kind: match e.node.kind {
                    NodeKind::Dir => "dir",
                    NodeKind::Regular => "reg",
                    NodeKind::Symlink => "symlink",
                    NodeKind::Char => "char",
                    NodeKind::Block => "block",
                    NodeKind::Fifo => "fifo",
                },
                mode: format!("{:04o}", e.node.perm),
                uid: e.node.uid,
                gid: e.node.gid,
                size: e.node.size,
                mtime: mtime_string(e.node),
                link_target: (e.node.kind == NodeKind::Symlink)
                    .then(|| e.node.link_target.to_string_lossy().into_owned()),
                layer: view
                    .layers()
                    .get(e.layer)
                    .map(|l| l.digest.clone())
                    .unwrap_or_default(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &json)?;
        writeln!(out)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut name = name_of(e);
            if e.node.kind == NodeKind::Symlink {
                name = format!("{name} -> {}", e.node.link_target.to_string_lossy());
            }
            let size = match e.node.kind {
                NodeKind::Char | NodeKind::Block => {
                    format!("{}, {}", (e.node.rdev >> 8) & 0xfff, e.node.rdev & 0xff)
                }
                _ => e.node.size.to_string(),
            };
            vec![
                mode_string(e.node),
                e.node.uid.to_string(),
                e.node.gid.to_string(),
                size,
                mtime_string(e.node),
                name,
            ]
        })
        .collect();
    // Right-align sizes, as ls -l does.
    let width = rows.iter().map(|r| r[3].len()).max().unwrap_or(0);
    for r in rows {
        writeln!(
            out,
            "{} {:>5} {:>5} {:>width$} {} {}",
            r[0], r[1], r[2], r[3], r[4], r[5]
        )?;
    }
    Ok(())
}

pub fn cat(root: &Path, args: CatArgs) -> Result<()> {
    let (remote, view) = open_view(root, &args.image, &args.image_args)?;
    let entry = view.resolve(&args.path, true)?;
    if entry.node.kind != NodeKind::Regular {
        bail!("{} is not a regular file in {}", entry.path, args.image);
    }
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let size = entry.node.size;
    let mut offset = 0;
    while offset < size {
        let end = (offset + CHUNK).min(size);
        let bytes = remote.rt.block_on(view.read(&entry, offset..end))?;
        out.write_all(&bytes)?;
        offset = end;
    }
    out.flush()?;
    if args.stats {
        let layer = view
            .layers()
            .get(entry.layer)
            .context("internal error: the entry's layer is not in the view")?;
        let (spans, bytes) = match &layer.data {
            LayerData::Lazy(s) => {
                let m = s.metrics().snapshot();
                (m.spans_fetched, m.bytes_fetched)
            }
            LayerData::Memory(_) => (0, 0),
        };
        let compressed: u64 = view
            .layers()
            .iter()
            .map(|l| match &l.data {
                LayerData::Lazy(s) => s.ztoc().compressed_archive_size,
                LayerData::Memory(_) => 0,
            })
            .sum();
        eprintln!(
            "{}: {size} bytes from layer {}; fetched {spans} spans, {bytes} compressed bytes (of {compressed} in the indexed layers)",
            entry.path, layer.digest
        );
    }
    Ok(())
}
