//! Unpacking a whole layer into a directory that overlayfs can use as a lower layer.
//!
//! Layers below the zTOC size threshold have no zTOC, so they cannot be served lazily; they are
//! fetched whole and unpacked here instead. The result must look exactly like what overlayfs
//! expects of a lower directory, which differs from a plain `tar -x` in two ways:
//!
//! - OCI whiteouts are files named `.wh.<name>`; overlayfs marks a deleted name with a character
//!   device 0:0 called `<name>`, and an opaque directory (`.wh..wh..opq`) with the xattr
//!   `trusted.overlay.opaque=y`.
//! - The whole metadata must survive (owner, setuid bits, device nodes, xattrs, mtimes of
//!   directories), because the lower directory *is* the container's file system.
//!
//! The `tar` crate's `Entry::unpack_in` is not used: it writes device nodes and fifos as regular
//! files, silently skips `..` instead of failing, cannot replace a directory by a file, fails on
//! `security.*` xattrs that the host refuses, and leaves directory mtimes to be clobbered by their
//! children. We only use the crate to iterate raw entries and decode headers, and merge PAX and GNU
//! long-name headers ourselves: the crate's PAX parser splits records at newlines, which breaks
//! binary xattr values (a `security.capability` may contain 0x0a).
//!
//! Safety model: the destination is the root. Entry paths are normalized lexically (leading `/` and
//! `.` dropped, `..` allowed only while it stays inside). Every parent directory is then walked one
//! component at a time with `lstat`; a symlink on the way is followed only if its target is
//! relative and stays inside the destination, so nothing is ever written through a link that leads
//! outside (e.g. `etc -> /etc` followed by `etc/passwd` fails). The final component is never
//! followed: an existing entry there is removed and a new one created with `O_EXCL`/`O_NOFOLLOW`,
//! `lchown`, `lsetxattr` and `utimensat(AT_SYMLINK_NOFOLLOW)`. The path checks are not race-free
//! against a concurrent writer in the destination; the destination is expected to be a fresh
//! directory that only this function writes to.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use oci::digest::DigestingReader;
use oci::manifest::LayerCompression;
use oci::Descriptor;
use tar::EntryType;

/// Prefix of OCI whiteout file names.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Prefix of AUFS metadata names (`.wh..wh.plnk`, `.wh..wh.aufs`), which are not whiteouts.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// The OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// PAX record prefix carrying extended attributes (the form Go's archive/tar and GNU tar write).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Same limit as Linux `MAXSYMLINKS`, so a symlink loop in a layer ends with an error.
const MAX_SYMLINK_HOPS: usize = 40;

/// What [`unpack_layer`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries applied to the destination: files, directories, links, devices, fifos,
    /// whiteouts and opaque markers (PAX and GNU long-name headers are not counted; neither are
    /// skipped entries).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Whiteout character devices created (one per `.wh.<name>` entry whose name was not also
    /// created by the same layer).
    pub whiteouts: u64,
    /// Directories marked opaque (one per `.wh..wh..opq` entry).
    pub opaque_dirs: u64,
}

/// Why a layer could not be unpacked. Entry variants name the entry as written in the archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The destination is missing or not a directory.
    #[error("unpack destination {path:?}: {source}")]
    Destination {
        /// The destination given by the caller.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: io::Error,
    },
    /// The tar (or gzip) stream could not be read or parsed.
    #[error("reading layer stream{}: {source}", after.as_ref().map(|p| format!(" (after entry {p:?})")).unwrap_or_default())]
    Stream {
        /// The last entry read successfully, to locate the damage.
        after: Option<PathBuf>,
        /// The read or format error.
        #[source]
        source: io::Error,
    },
    /// The entry's header is malformed or describes something that cannot exist.
    #[error("layer entry {path:?}: {reason}")]
    InvalidEntry {
        /// The entry's path in the archive.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The entry's path, its link target, or a symlink on its way leads outside the destination.
    #[error("layer entry {path:?}: {reason}; refusing to write outside the destination")]
    Escape {
        /// The entry's path in the archive.
        path: PathBuf,
        /// Which component escapes.
        reason: String,
    },
    /// The entry is of a type we do not create.
    #[error("layer entry {path:?}: unsupported {kind}")]
    Unsupported {
        /// The entry's path in the archive.
        path: PathBuf,
        /// The entry type or feature.
        kind: String,
    },
    /// A file system operation on the entry failed.
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        /// The entry's path in the archive.
        path: PathBuf,
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl UnpackError {
    /// The archive path of the entry that failed, if the failure belongs to one entry.
    pub fn entry_path(&self) -> Option<&Path> {
        match self {
            UnpackError::Destination { .. } | UnpackError::Stream { .. } => None,
            UnpackError::InvalidEntry { path, .. }
            | UnpackError::Escape { path, .. }
            | UnpackError::Unsupported { path, .. }
            | UnpackError::Io { path, .. } => Some(path),
        }
    }
}

/// Unpacks an uncompressed layer tar stream into `dest` in overlayfs lower-layer form.
///
/// `dest` must be an existing directory, normally empty: entries replace whatever is already at
/// their path, and a whiteout for a name that already exists is treated as coming from the same
/// layer (which, per the OCI spec, it cannot hide) and skipped. After the end-of-archive marker the
/// rest of `tar_stream` is read and discarded, so a decompressor underneath checks its trailer and
/// a digesting reader sees every byte.
///
/// Must run as root (or with `CAP_CHOWN`, `CAP_MKNOD`, `CAP_FOWNER`, `CAP_SYS_ADMIN` for
/// `trusted.*` xattrs): ownership, device nodes and whiteouts are not optional for a lower layer.
/// On error the destination is left partially written; the caller should discard it.
pub fn unpack_layer<R: Read>(tar_stream: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(UnpackError::Destination {
                path: dest.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::ENOTDIR),
            })
        }
        Err(source) => {
            return Err(UnpackError::Destination {
                path: dest.to_path_buf(),
                source,
            })
        }
    }

    let mut unpacker = Unpacker {
        dest,
        stats: UnpackStats::default(),
        dir_times: BTreeMap::new(),
        buf: vec![0; 128 * 1024],
    };
    let mut archive = tar::Archive::new(tar_stream);
    let mut last: Option<PathBuf> = None;
    {
        // Raw iteration: the crate's own PAX handling splits records at every newline, which
        // breaks binary xattr values (a `security.capability` may contain 0x0a) and then silently
        // drops the PAX path and ids that follow. Extension headers are merged here instead.
        let entries = archive
            .entries()
            .map_err(|source| UnpackError::Stream {
                after: None,
                source,
            })?
            .raw(true);
        let mut ext = Extensions::default();
        for entry in entries {
            let mut entry = match entry {
                Ok(entry) => entry,
                // A stream that ends right after the last entry's data, without padding and
                // end-of-archive blocks, is complete for Go's archive/tar (and so containerd);
                // umoci writes such layers. Each file's data was checked to be whole when it
                // was written, so only the padding is missing here.
                Err(e)
                    if last.is_some()
                        && ext.is_empty()
                        && (e.kind() == io::ErrorKind::UnexpectedEof
                            || e.to_string().contains("unexpected EOF")) =>
                {
                    break
                }
                Err(source) => {
                    return Err(UnpackError::Stream {
                        after: last.clone(),
                        source,
                    })
                }
            };
            let header_path = lossy(&entry.header().path_bytes());
            let kind = entry.header().entry_type();
            let special = match kind {
                EntryType::XHeader => Some(Special::Pax),
                EntryType::GNULongName => Some(Special::LongName),
                EntryType::GNULongLink => Some(Special::LongLink),
                // Archive-wide defaults; Go's archive/tar and containerd ignore them too.
                EntryType::XGlobalHeader => Some(Special::Global),
                _ => None,
            };
            if let Some(special) = special {
                ext.absorb(special, &mut entry)
                    .map_err(|cause| cause.at(&header_path, &last))?;
                continue;
            }
            let ext = std::mem::take(&mut ext);
            let path_bytes = ext.path(entry.header());
            // The lossy form is only for messages; the raw bytes are what gets created.
            let shown = lossy(&path_bytes);
            unpacker
                .apply(&mut entry, &path_bytes, &ext)
                .map_err(|cause| cause.at(&shown, &last))?;
            last = Some(shown);
        }
        if !ext.is_empty() {
            return Err(UnpackError::Stream {
                after: last,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "extension header (PAX or GNU long name) without a following entry",
                ),
            });
        }
    }
    // Drain what follows the end-of-archive blocks (padding, the gzip trailer): a truncated or
    // corrupt compressed stream then fails here instead of passing unnoticed.
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(|source| UnpackError::Stream {
        after: last.clone(),
        source,
    })?;

    unpacker
        .finish()
        .map_err(|(path, cause)| cause.at(&path, &last))?;
    Ok(unpacker.stats)
}

/// Unpacks a gzip-compressed layer (as stored in a registry) into `dest`; see [`unpack_layer`].
///
/// Uses a multi-member decoder because some compressors (pigz, concatenated layers) emit several
/// gzip members, all of which belong to the tar stream.
pub fn unpack_gzip_layer<R: Read>(gzip: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    unpack_layer(flate2::read::MultiGzDecoder::new(gzip), dest)
}

/// Why a layer blob could not be unpacked by [`unpack_layer_blob`].
#[derive(Debug, thiserror::Error)]
pub enum LayerBlobError {
    /// The layer's media type is not one of a tar layer (gzip, zstd or uncompressed).
    #[error("layer {layer} {}: only gzip, zstd and uncompressed tar layers can be unpacked", compression_words(.compression))]
    Unsupported {
        /// Layer digest.
        layer: String,
        /// How the layer is compressed, judged from its media type.
        compression: LayerCompression,
    },
    /// The blob's content did not unpack.
    #[error("unpacking layer {layer}: {source}")]
    Unpack {
        /// Layer digest.
        layer: String,
        /// What went wrong.
        #[source]
        source: UnpackError,
    },
    /// Reading what the unpacker left of the blob (padding after the archive) failed.
    #[error("reading layer {layer}: {source}")]
    Read {
        /// Layer digest.
        layer: String,
        /// The read error.
        #[source]
        source: io::Error,
    },
    /// The uncompressed tar is not the one the image config names (its diff ID): what was
    /// unpacked must be discarded.
    #[error("layer {layer} unpacked to {digest}, but the image config says its diff ID is {diff_id}: the image is corrupt; discard what was unpacked")]
    DiffIdMismatch {
        /// Layer digest.
        layer: String,
        /// Digest of the uncompressed tar read.
        digest: String,
        /// The diff ID the config gives.
        diff_id: String,
    },
    /// The blob is not the one its descriptor names: what was unpacked must be discarded.
    #[error("layer {layer} ({expected_size} bytes) arrived as {digest} ({size} bytes): the source sent other bytes; discard what was unpacked")]
    Mismatch {
        /// Layer digest (the expected one).
        layer: String,
        /// Size the descriptor gives.
        expected_size: u64,
        /// Digest of the bytes read.
        digest: String,
        /// Bytes read (one more than `expected_size` when the source sent too many).
        size: u64,
    },
}

/// How an [`LayerBlobError::Unsupported`] message names the compression.
fn compression_words(compression: &LayerCompression) -> String {
    match compression {
        LayerCompression::Unknown(media_type) => format!("has media type {media_type}"),
        other => format!("is {other:?}"),
    }
}

/// Unpacks the layer blob `blob` described by `layer` into `dest` (see [`unpack_layer`]),
/// decompressing gzip or zstd (or reading plain tar) by the layer's media type as the bytes
/// arrive, and verifies that the bytes read are the layer: its digest and size, padding after
/// the archive included, and when `diff_id` is given, the digest of the uncompressed tar.
/// Reads at most one byte past the descriptor's size, so a source that never stops is refused
/// too.
///
/// Decompressing and hashing run on a thread of their own, handing the tar to the unpacker
/// through a bounded pipe ([`PIPE_CHUNKS`] pieces of [`PIPE_CHUNK`] bytes), so a layer
/// unpacks at the speed of the slower of the two rather than of their sum.
///
/// On any error `dest` holds partial or untrusted content and must be discarded.
pub fn unpack_layer_blob<R: Read + Send>(
    blob: R,
    layer: &Descriptor,
    diff_id: Option<&oci::Digest>,
    dest: &Path,
) -> Result<UnpackStats, LayerBlobError> {
    let name = layer.digest().to_string();
    let compression = LayerCompression::of(layer.media_type());
    if let LayerCompression::Unknown(_) = compression {
        return Err(LayerBlobError::Unsupported {
            layer: name,
            compression,
        });
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(PIPE_CHUNKS);
    let (unpacked, decoded) = std::thread::scope(|scope| {
        let decoder = scope.spawn(|| decode_layer(blob, layer, &compression, tx));
        // The pipe ends when the decoder finishes or fails (its error is the pipe's last
        // piece); when the unpacker stops early, dropping the pipe stops the decoder.
        let unpacked = unpack_layer(PipeReader::new(rx), dest);
        let decoded = decoder.join().unwrap_or_else(|_| {
            Err(LayerBlobError::Read {
                layer: name.clone(),
                source: io::Error::other("the decompressing thread panicked"),
            })
        });
        (unpacked, decoded)
    });
    let stats = unpacked.map_err(|source| LayerBlobError::Unpack {
        layer: name.clone(),
        source,
    })?;
    let decoded = decoded?;
    if let Some(diff_id) = diff_id.filter(|d| **d != decoded.tar_digest) {
        return Err(LayerBlobError::DiffIdMismatch {
            layer: name,
            digest: decoded.tar_digest.to_string(),
            diff_id: diff_id.to_string(),
        });
    }
    if &decoded.digest != layer.digest() || decoded.size != layer.size() {
        return Err(LayerBlobError::Mismatch {
            layer: name,
            expected_size: layer.size(),
            digest: decoded.digest.to_string(),
            size: decoded.size,
        });
    }
    Ok(stats)
}

/// Bytes per piece of the pipe between the decompressing thread and the unpacker.
pub const PIPE_CHUNK: usize = 256 << 10;
/// Pieces the pipe holds: enough to ride out a burst of small files, little memory.
pub const PIPE_CHUNKS: usize = 16;

/// What the decompressing thread saw: the tar's digest and the blob's digest and size.
struct Decoded {
    tar_digest: oci::Digest,
    digest: oci::Digest,
    size: u64,
}

/// Reads blob `blob`, hashing it, decompresses it by `compression`, hashes the tar and sends
/// it down `pipe`; after the tar, reads the blob to its end (padding), at most one byte past
/// the descriptor's size. A read error is sent down the pipe too, for the unpacker to report.
fn decode_layer<R: Read>(
    blob: R,
    layer: &Descriptor,
    compression: &LayerCompression,
    pipe: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> Result<Decoded, LayerBlobError> {
    let name = || layer.digest().to_string();
    let mut reader = DigestingReader::new(blob.take(layer.size().saturating_add(1)));
    let tar: Box<dyn Read + '_> = match compression {
        // Several gzip members (pigz, concatenated layers) all belong to the tar stream.
        LayerCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut reader)),
        LayerCompression::Zstd => match zstd::stream::read::Decoder::new(&mut reader) {
            Ok(decoder) => Box::new(decoder),
            Err(e) => return Err(hand_over(e, &pipe, name())),
        },
        _ => Box::new(&mut reader),
    };
    let mut tar = DigestingReader::new(tar);
    loop {
        let mut piece = vec![0u8; PIPE_CHUNK];
        let n = match read_full(&mut tar, &mut piece) {
            Ok(n) => n,
            Err(e) => return Err(hand_over(e, &pipe, name())),
        };
        if n == 0 {
            break;
        }
        piece.truncate(n);
        if pipe.send(Ok(piece)).is_err() {
            // The unpacker stopped (and reports why); nothing more to check.
            return Err(LayerBlobError::Read {
                layer: name(),
                source: io::Error::other("the unpacker stopped reading"),
            });
        }
    }
    drop(pipe);
    let (tar_digest, _) = tar.finish();
    io::copy(&mut reader, &mut io::sink()).map_err(|source| LayerBlobError::Read {
        layer: name(),
        source,
    })?;
    let (digest, size) = reader.finish();
    Ok(Decoded {
        tar_digest,
        digest,
        size,
    })
}

/// Sends read error `e` down the pipe for the unpacker to report (it names the entry it was
/// in), and returns the same error for the decoder's own result.
fn hand_over(
    e: io::Error,
    pipe: &std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    layer: String,
) -> LayerBlobError {
    let source = io::Error::new(e.kind(), e.to_string());
    let _ = pipe.send(Err(e));
    LayerBlobError::Read { layer, source }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The unpacker's end of the pipe: the pieces in order, then the decoder's error if it
/// failed, then the end of the stream.
struct PipeReader {
    pipe: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    piece: Vec<u8>,
    at: usize,
}

impl PipeReader {
    fn new(pipe: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>) -> Self {
        PipeReader {
            pipe,
            piece: Vec::new(),
            at: 0,
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.piece.len() {
            match self.pipe.recv() {
                Ok(Ok(piece)) => (self.piece, self.at) = (piece, 0),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let rest = self.piece.get(self.at..).unwrap_or_default();
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

/// Largest PAX or GNU long-name header we read, as in Go's archive/tar: they hold names and
/// attributes, and a bigger one is a corrupt size field rather than data to allocate for.
const MAX_SPECIAL_SIZE: u64 = 1 << 20;

/// Kinds of extension header that describe the next entry (or, for `Global`, the archive).
#[derive(Debug, Clone, Copy)]
enum Special {
    Pax,
    LongName,
    LongLink,
    Global,
}

/// A PAX record's key and value, as raw bytes.
type PaxRecord = (Vec<u8>, Vec<u8>);

/// Extension headers collected for the next entry.
#[derive(Debug, Default)]
struct Extensions {
    /// PAX records in order; a later record for the same key wins.
    pax: Vec<PaxRecord>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Extensions {
    fn absorb<R: Read>(
        &mut self,
        special: Special,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), Cause> {
        if let Special::Global = special {
            // Its data is skipped by the iterator.
            return Ok(());
        }
        if entry.size() > MAX_SPECIAL_SIZE {
            return Err(Cause::Invalid(format!(
                "extension header of {} bytes (limit {MAX_SPECIAL_SIZE})",
                entry.size()
            )));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(Cause::Stream)?;
        match special {
            Special::Pax => self.pax.extend(parse_pax(&data)?),
            Special::LongName | Special::LongLink => {
                // GNU tar terminates the name with NUL (and the block padding adds more).
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                data.truncate(end);
                if let Special::LongName = special {
                    self.long_name = Some(data);
                } else {
                    self.long_link = Some(data);
                }
            }
            Special::Global => {}
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.pax.is_empty() && self.long_name.is_none() && self.long_link.is_none()
    }

    /// The last non-empty value of a PAX record (an empty value un-sets a keyword).
    fn pax_value(&self, key: &[u8]) -> Option<&[u8]> {
        self.pax
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .filter(|v| !v.is_empty())
    }

    /// The entry's path: PAX `path`, else the GNU long name, else the header's (prefix + name).
    fn path(&self, header: &tar::Header) -> Vec<u8> {
        if let Some(p) = self.pax_value(b"path") {
            return p.to_vec();
        }
        if let Some(p) = &self.long_name {
            return p.clone();
        }
        header.path_bytes().into_owned()
    }

    /// The link target, with the same precedence as [`Extensions::path`].
    fn link(&self, header: &tar::Header) -> Option<Vec<u8>> {
        if let Some(p) = self.pax_value(b"linkpath") {
            return Some(p.to_vec());
        }
        if let Some(p) = &self.long_link {
            return Some(p.clone());
        }
        header.link_name_bytes().map(|l| l.into_owned())
    }
}

/// Parses PAX records, `<len> <key>=<value>\n`, by their length prefix: values may hold any byte,
/// newlines included.
fn parse_pax(data: &[u8]) -> Result<Vec<PaxRecord>, Cause> {
    let bad = |why: &str| Cause::Invalid(format!("malformed PAX header: {why}"));
    let mut records = Vec::new();
    let mut rest = data;
    // Some writers pad the data with NULs.
    while !rest.is_empty() && rest.iter().any(|&b| b != 0) {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("record without length"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad record length"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("record length does not match"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("record without '='"))?;
        records.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(records)
}

fn lossy(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

/// A failure not yet tied to its entry; [`Cause::at`] adds the entry path.
#[derive(Debug)]
enum Cause {
    Io(&'static str, io::Error),
    Stream(io::Error),
    Invalid(String),
    Escape(String),
    Unsupported(String),
}

impl Cause {
    fn at(self, path: &Path, last: &Option<PathBuf>) -> UnpackError {
        let path = path.to_path_buf();
        match self {
            Cause::Io(op, source) => UnpackError::Io { path, op, source },
            // A read error inside an entry's data is a problem of the stream, not of the entry.
            Cause::Stream(source) => UnpackError::Stream {
                after: last.clone(),
                source,
            },
            Cause::Invalid(reason) => UnpackError::InvalidEntry { path, reason },
            Cause::Escape(reason) => UnpackError::Escape { path, reason },
            Cause::Unsupported(kind) => UnpackError::Unsupported { path, kind },
        }
    }
}

/// Attaches the failed operation's name to an `io::Result`.
trait OpContext<T> {
    fn op(self, op: &'static str) -> Result<T, Cause>;
}

impl<T> OpContext<T> for io::Result<T> {
    fn op(self, op: &'static str) -> Result<T, Cause> {
        self.map_err(|e| Cause::Io(op, e))
    }
}

/// A point in time with nanoseconds, as `utimensat` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timespec {
    sec: i64,
    nsec: u32,
}

/// The metadata every created object gets.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct Unpacker<'a> {
    dest: &'a Path,
    stats: UnpackStats,
    /// Directory mtimes, applied last: creating children changes a directory's mtime.
    dir_times: BTreeMap<PathBuf, Timespec>,
    /// Copy buffer reused across entries.
    buf: Vec<u8>,
}

impl Unpacker<'_> {
    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path_bytes: &[u8],
        ext: &Extensions,
    ) -> Result<(), Cause> {
        let kind = entry.header().entry_type();
        let raw_path = Path::new(OsStr::from_bytes(path_bytes));
        let comps = normalize(raw_path)?;
        let meta = read_meta(entry.header(), ext)?;

        // Old (pre-POSIX) archives mark directories only by a trailing slash on a regular entry.
        let is_dir = kind.is_dir()
            || (kind.is_file()
                && entry.header().as_ustar().is_none()
                && path_bytes.ends_with(b"/"));

        let Some((name, parents)) = comps.split_last() else {
            // The layer's root (`./`): its metadata belongs to the destination itself.
            if !is_dir {
                return Err(Cause::Invalid(
                    "the layer root must be a directory".to_string(),
                ));
            }
            let dest = self.dest.to_path_buf();
            self.set_owner_mode(&dest, &meta)?;
            set_xattrs(&dest, &meta.xattrs)?;
            self.dir_times.insert(dest, meta.mtime);
            self.stats.entries += 1;
            return Ok(());
        };

        if let Some(p) = parents
            .iter()
            .find(|p| p.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
        {
            // AUFS keeps hardlink bookkeeping under `.wh..wh.plnk/`; nothing under a whiteout
            // name is part of the file system.
            tracing::warn!(entry = %raw_path.display(), parent = ?p, "skipping entry below a whiteout name");
            return Ok(());
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(parents, name, hidden);
        }

        let parent = self.resolve_dir(parents, true)?;
        let path = parent.join(name);

        if is_dir {
            self.make_dir(&path, &meta)?;
        } else {
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    self.make_file(entry, &path, &meta)?
                }
                EntryType::Symlink => {
                    let target = ext
                        .link(entry.header())
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| Cause::Invalid("symlink without target".to_string()))?;
                    self.make_symlink(&path, OsStr::from_bytes(&target), &meta)?
                }
                EntryType::Link => {
                    let target = ext
                        .link(entry.header())
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| Cause::Invalid("hardlink without target".to_string()))?;
                    self.make_hardlink(&path, Path::new(OsStr::from_bytes(&target)))?
                }
                // Raw iteration does not expand old GNU sparse maps, and no OCI tooling writes
                // them (Go's archive/tar cannot).
                EntryType::GNUSparse => {
                    return Err(Cause::Unsupported("GNU sparse file".to_string()))
                }
                EntryType::Char | EntryType::Block => {
                    let major = device_number(entry.header().device_major(), "major")?;
                    let minor = device_number(entry.header().device_minor(), "minor")?;
                    let fmt = if kind == EntryType::Char {
                        libc::S_IFCHR
                    } else {
                        libc::S_IFBLK
                    };
                    self.make_node(&path, fmt, libc::makedev(major, minor), &meta)?
                }
                EntryType::Fifo => self.make_node(&path, libc::S_IFIFO, 0, &meta)?,
                other => return Err(Cause::Unsupported(format!("entry type {other:?}"))),
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// Turns `.wh.<hidden>` into the overlayfs form: a 0:0 character device, or the opaque xattr.
    fn whiteout(&mut self, parents: &[OsString], name: &OsStr, hidden: &[u8]) -> Result<(), Cause> {
        if name == OPAQUE_MARKER {
            let dir = self.resolve_dir(parents, true)?;
            xattr::set(&dir, OVERLAY_OPAQUE_XATTR, b"y").op("set trusted.overlay.opaque")?;
            self.stats.opaque_dirs += 1;
            self.stats.entries += 1;
            return Ok(());
        }
        if name.as_bytes().starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
            // AUFS metadata (`.wh..wh.aufs`, `.wh..wh.plnk`): meaningless to overlayfs, and it must
            // not appear as a regular file in the container.
            tracing::warn!(name = ?name, "skipping AUFS whiteout metadata entry");
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(Cause::Invalid(format!("whiteout {name:?} names no file")));
        }
        let dir = self.resolve_dir(parents, true)?;
        let path = dir.join(OsStr::from_bytes(hidden));
        match fs::symlink_metadata(&path) {
            Ok(_) => {
                // The name exists, so this layer created it: a whiteout only hides lower layers,
                // and the layer's own entry already does.
                tracing::debug!(path = %path.display(), "whiteout for a name created by the same layer; keeping the entry");
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Cause::Io("inspect whiteout target", e)),
        }
        mknod(&path, libc::S_IFCHR, 0).op("create whiteout device")?;
        self.stats.whiteouts += 1;
        self.stats.entries += 1;
        Ok(())
    }

    /// Walks `comps` below the destination and returns the real directory they name.
    ///
    /// Symlinks on the way are followed only when their target is relative and stays inside the
    /// destination; missing directories are created (mode 0755, like tar) when `create` is set.
    fn resolve_dir(&self, comps: &[OsString], create: bool) -> Result<PathBuf, Cause> {
        let mut resolved = self.dest.to_path_buf();
        let mut depth = 0usize;
        let mut pending: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut hops = 0usize;
        // `..` only ever comes from symlink targets here (entry paths are normalized); as a
        // Normal component cannot be `..`, the marker is unambiguous.
        let dotdot = OsStr::new("..");
        while let Some(c) = pending.pop_front() {
            if c == dotdot {
                if depth == 0 {
                    return Err(Cause::Escape(format!(
                        "a symlink below {} leads above the destination",
                        self.shown(&resolved)
                    )));
                }
                resolved.pop();
                depth -= 1;
                continue;
            }
            let candidate = resolved.join(&c);
            match fs::symlink_metadata(&candidate) {
                Ok(m) if m.is_dir() => {
                    resolved = candidate;
                    depth += 1;
                }
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(Cause::Invalid(format!(
                            "too many levels of symbolic links at {}",
                            self.shown(&candidate)
                        )));
                    }
                    let target = fs::read_link(&candidate).op("read symlink in path")?;
                    let mut spliced = VecDeque::new();
                    for part in target.components() {
                        match part {
                            Component::RootDir | Component::Prefix(_) => {
                                return Err(Cause::Escape(format!(
                                    "{} is a symlink to the absolute path {}",
                                    self.shown(&candidate),
                                    target.display()
                                )))
                            }
                            Component::CurDir => {}
                            Component::ParentDir => spliced.push_back(dotdot.to_owned()),
                            Component::Normal(n) => spliced.push_back(n.to_owned()),
                        }
                    }
                    spliced.extend(pending.drain(..));
                    pending = spliced;
                }
                Ok(_) => {
                    return Err(Cause::Invalid(format!(
                        "{} is not a directory",
                        self.shown(&candidate)
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&candidate)
                        .op("create parent directory")?;
                    resolved = candidate;
                    depth += 1;
                }
                Err(e) => return Err(Cause::Io("inspect parent directory", e)),
            }
        }
        Ok(resolved)
    }

    /// A destination path as the layer sees it, for messages.
    fn shown(&self, path: &Path) -> String {
        match path.strip_prefix(self.dest) {
            Ok(rel) if rel.as_os_str().is_empty() => "/".to_string(),
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => path.display().to_string(),
        }
    }

    /// Makes room for a new entry at `path`: a later entry replaces an earlier one, except that a
    /// directory over a directory merges. Returns whether a directory to merge into is there.
    fn clear(&mut self, path: &Path, new_is_dir: bool) -> Result<bool, Cause> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                if new_is_dir {
                    return Ok(true);
                }
                // Never follows symlinks inside (std's remove_dir_all is symlink-race safe).
                fs::remove_dir_all(path).op("remove replaced directory")?;
                let stale: Vec<PathBuf> = self
                    .dir_times
                    .range(path.to_path_buf()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(path))
                    .cloned()
                    .collect();
                for k in stale {
                    self.dir_times.remove(&k);
                }
                Ok(false)
            }
            Ok(_) => {
                fs::remove_file(path).op("remove replaced entry")?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Cause::Io("inspect existing entry", e)),
        }
    }

    fn make_dir(&mut self, path: &Path, meta: &Meta) -> Result<(), Cause> {
        if !self.clear(path, true)? {
            // Owner-only until chown/chmod below give it its real identity.
            DirBuilder::new()
                .mode(0o700)
                .create(path)
                .op("create directory")?;
        }
        self.set_owner_mode(path, meta)?;
        set_xattrs(path, &meta.xattrs)?;
        self.dir_times.insert(path.to_path_buf(), meta.mtime);
        Ok(())
    }

    /// `lchown` then `chmod`, in that order because `chown` clears setuid/setgid.
    fn set_owner_mode(&self, path: &Path, meta: &Meta) -> Result<(), Cause> {
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).op("chown")?;
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode)).op("chmod")?;
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        meta: &Meta,
    ) -> Result<(), Cause> {
        self.clear(path, false)?;
        // O_EXCL + O_NOFOLLOW: the name was just cleared, so anything found there now is not ours.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .op("create file")?;
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Cause::Stream(e)),
            };
            file.write_all(&self.buf[..n]).op("write file data")?;
            written += n as u64;
        }
        if written != entry.size() {
            return Err(Cause::Stream(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file data truncated: {written} of {} bytes", entry.size()),
            )));
        }
        self.stats.bytes += written;
        std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid)).op("chown")?;
        file.set_permissions(fs::Permissions::from_mode(meta.mode))
            .op("chmod")?;
        // After the data and chown: both clear `security.capability`.
        set_xattrs(path, &meta.xattrs)?;
        set_fd_times(&file, meta.mtime).op("set mtime")?;
        Ok(())
    }

    fn make_symlink(&mut self, path: &Path, target: &OsStr, meta: &Meta) -> Result<(), Cause> {
        self.clear(path, false)?;
        std::os::unix::fs::symlink(target, path).op("create symlink")?;
        // Symlink permissions are meaningless on Linux, but ownership matters (sticky dirs).
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).op("chown")?;
        set_xattrs(path, &meta.xattrs)?;
        set_path_times(path, meta.mtime).op("set mtime")?;
        Ok(())
    }

    fn make_hardlink(&mut self, path: &Path, target: &Path) -> Result<(), Cause> {
        let comps = normalize(target)?;
        let Some((name, parents)) = comps.split_last() else {
            return Err(Cause::Invalid("hardlink to the layer root".to_string()));
        };
        let source = self.resolve_dir(parents, false)?.join(name);
        let source_meta = match fs::symlink_metadata(&source) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Cause::Invalid(format!(
                    "hardlink target {} does not exist (it must come earlier in the layer)",
                    target.display()
                )))
            }
            Err(e) => return Err(Cause::Io("inspect hardlink target", e)),
        };
        if source_meta.is_dir() {
            return Err(Cause::Invalid(format!(
                "hardlink target {} is a directory",
                target.display()
            )));
        }
        if let Ok(existing) = fs::symlink_metadata(path) {
            if existing.dev() == source_meta.dev() && existing.ino() == source_meta.ino() {
                // Already the same inode (a repeated entry, or a link to itself).
                return Ok(());
            }
        }
        self.clear(path, false)?;
        // linkat without AT_SYMLINK_FOLLOW: a symlink target is linked itself, never followed.
        fs::hard_link(&source, path).op("create hardlink")?;
        Ok(())
    }

    fn make_node(
        &mut self,
        path: &Path,
        fmt: libc::mode_t,
        dev: libc::dev_t,
        meta: &Meta,
    ) -> Result<(), Cause> {
        self.clear(path, false)?;
        mknod(path, fmt, dev).op("mknod")?;
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid)).op("chown")?;
        // chmod on a fresh device or fifo does not open it, so it cannot block.
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode)).op("chmod")?;
        set_xattrs(path, &meta.xattrs)?;
        set_path_times(path, meta.mtime).op("set mtime")?;
        Ok(())
    }

    /// Applies the deferred directory mtimes, now that no child will be written any more.
    fn finish(&mut self) -> Result<(), (PathBuf, Cause)> {
        for (path, time) in &self.dir_times {
            set_path_times(path, *time).map_err(|e| {
                let shown = PathBuf::from(self.shown(path));
                (shown, Cause::Io("set directory mtime", e))
            })?;
        }
        Ok(())
    }
}

/// Lexically normalizes an archive path into components below the root: leading `/` and `.`
/// are dropped, `..` pops, and a `..` with nothing to pop escapes.
fn normalize(path: &Path) -> Result<Vec<OsString>, Cause> {
    let mut comps: Vec<OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                if comps.pop().is_none() {
                    return Err(Cause::Escape(format!(
                        "path {} climbs above the layer root",
                        path.display()
                    )));
                }
            }
            Component::Normal(n) => comps.push(n.to_owned()),
        }
    }
    Ok(comps)
}

/// Decodes the header fields and PAX records every created object needs.
fn read_meta(header: &tar::Header, ext: &Extensions) -> Result<Meta, Cause> {
    let invalid = |what: &str, e: io::Error| Cause::Invalid(format!("bad {what} field: {e}"));
    let mode = header.mode().map_err(|e| invalid("mode", e))? & 0o7777;
    // PAX carries ids too large for the header field.
    let id = |key: &str, field: io::Result<u64>| -> Result<u32, Cause> {
        let value = match ext.pax_value(key.as_bytes()) {
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Cause::Invalid(format!("bad PAX {key} {:?}", lossy(v))))?,
            None => field.map_err(|e| invalid(key, e))?,
        };
        u32::try_from(value).map_err(|_| Cause::Invalid(format!("{key} {value} out of range")))
    };
    let uid = id("uid", header.uid())?;
    let gid = id("gid", header.gid())?;
    let mtime = match ext.pax_value(b"mtime") {
        // The PAX mtime carries the sub-second part the header field cannot.
        Some(v) => parse_pax_time(v)
            .ok_or_else(|| Cause::Invalid(format!("bad PAX mtime {:?}", lossy(v))))?,
        None => {
            let secs = header.mtime().map_err(|e| invalid("mtime", e))?;
            Timespec {
                sec: i64::try_from(secs)
                    .map_err(|_| Cause::Invalid(format!("mtime {secs} out of range")))?,
                nsec: 0,
            }
        }
    };
    if let Some(size) = ext.pax_value(b"size") {
        // Raw iteration frames the data by the header's size field; a PAX size that disagrees
        // (files over 8 GiB) would desynchronize the stream, and a small layer has none.
        let header_size = header.size().map_err(|e| invalid("size", e))?;
        if std::str::from_utf8(size)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            != Some(header_size)
        {
            return Err(Cause::Unsupported(format!(
                "PAX size {:?} differing from the header size {header_size}",
                lossy(size)
            )));
        }
    }

    let mut xattrs: Vec<(OsString, Vec<u8>)> = Vec::new();
    for (key, value) in &ext.pax {
        if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
            let name = OsStr::from_bytes(name).to_owned();
            // A repeated key: the later record wins.
            xattrs.retain(|(n, _)| *n != name);
            xattrs.push((name, value.clone()));
        } else if key.starts_with(b"GNU.sparse.") {
            // PAX-format sparse files store a map inside the data; writing it verbatim would
            // corrupt the file.
            return Err(Cause::Unsupported("PAX (GNU 1.0) sparse file".to_string()));
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

/// Parses a PAX time (`[-]seconds[.fraction]`).
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(value).ok()?;
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sec: i64 = int.parse().ok()?;
    // Nanosecond precision is all utimensat takes; further digits are dropped.
    let mut nsec = 0u32;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| u32::from(b - b'0'));
        nsec = nsec * 10 + digit;
    }
    if !negative {
        return Some(Timespec { sec, nsec });
    }
    // -1.25 is 1.25 s before the epoch: seconds -2, plus 0.75 s.
    if nsec == 0 {
        Some(Timespec { sec: -sec, nsec: 0 })
    } else {
        Some(Timespec {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        })
    }
}

fn device_number(field: io::Result<Option<u32>>, which: &str) -> Result<u32, Cause> {
    match field {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(Cause::Invalid(format!(
            "device entry in a pre-POSIX header without a {which} number"
        ))),
        Err(e) => Err(Cause::Invalid(format!("bad device {which} field: {e}"))),
    }
}

/// Sets the archive's extended attributes without following symlinks.
///
/// `trusted.*` is skipped: it is the administrator's namespace, and `trusted.overlay.*` in a lower
/// layer would let a layer forge overlayfs redirects and opaque markers (the OCI way to mark an
/// opaque directory is `.wh..wh..opq`). Failures on `security.*` (SELinux labels the host policy
/// refuses) and on file systems without xattr support are warnings, as in containerd.
fn set_xattrs(path: &Path, xattrs: &[(OsString, Vec<u8>)]) -> Result<(), Cause> {
    for (key, value) in xattrs {
        if key.as_bytes().starts_with(b"trusted.") {
            tracing::warn!(path = %path.display(), key = ?key, "ignoring trusted.* xattr from the layer");
            continue;
        }
        if let Err(e) = xattr::set(path, key, value) {
            let unsupported = e.raw_os_error() == Some(libc::EOPNOTSUPP);
            if unsupported || key.as_bytes().starts_with(b"security.") {
                tracing::warn!(path = %path.display(), key = ?key, error = %e, "xattr not set");
                continue;
            }
            return Err(Cause::Io("set xattr", e));
        }
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn mknod(path: &Path, fmt: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = c_path(path)?;
    // Permission bits are set by chmod afterwards (mknod's are filtered by the umask).
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::mknod(c.as_ptr(), fmt, dev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// atime and mtime both from the archive's mtime (tar does not reliably carry atime).
fn timespecs(t: Timespec) -> [libc::timespec; 2] {
    // SAFETY: timespec is plain data; zeroing also fills padding fields some targets have.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    ts.tv_sec = t.sec as libc::time_t;
    ts.tv_nsec = t.nsec as _;
    [ts, ts]
}

fn set_fd_times(file: &File, t: Timespec) -> io::Result<()> {
    let times = timespecs(t);
    // SAFETY: the fd is open for the duration of the call; `times` points to two timespecs.
    if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `utimensat` with `AT_SYMLINK_NOFOLLOW`, so a symlink gets its own time and a fifo or device is
/// never opened.
fn set_path_times(path: &Path, t: Timespec) -> io::Result<()> {
    let c = c_path(path)?;
    let times = timespecs(t);
    // SAFETY: `c` is NUL-terminated and `times` points to two timespecs, both live for the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes());
        assert_eq!(t("12"), Some(Timespec { sec: 12, nsec: 0 }));
        assert_eq!(
            t("1700000000.123456789123"),
            Some(Timespec {
                sec: 1_700_000_000,
                nsec: 123_456_789
            })
        );
        assert_eq!(
            t("1.5"),
            Some(Timespec {
                sec: 1,
                nsec: 500_000_000
            })
        );
        assert_eq!(
            t("-1.25"),
            Some(Timespec {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert_eq!(t("-3"), Some(Timespec { sec: -3, nsec: 0 }));
        assert_eq!(t(""), None);
        assert_eq!(t("1.x"), None);
        assert_eq!(t("+1"), None);
        assert_eq!(t(".5"), None);
    }

    #[test]
    fn pax_records() {
        let recs = parse_pax(b"11 path=ab\n26 SCHILY.xattr.user.x=\n\n\n\0\0").unwrap();
        assert_eq!(
            recs,
            vec![
                (b"path".to_vec(), b"ab".to_vec()),
                (b"SCHILY.xattr.user.x".to_vec(), b"\n\n".to_vec())
            ]
        );
        for bad in [
            &b"12 path=ab\n"[..],
            b"3 a\n",
            b"x path=ab\n",
            b"99999999999999999999999 a=b\n",
            b"9 nokey\n",
            b"0 \n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn normalization() {
        let n = |s: &str| {
            normalize(Path::new(s)).map(|v| {
                v.iter()
                    .map(|c| c.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
        };
        assert_eq!(n("/a/./b//c/").unwrap(), "a/b/c");
        assert_eq!(n("./a/../b").unwrap(), "b");
        assert_eq!(n("./").unwrap(), "");
        assert!(matches!(n("a/../../b"), Err(Cause::Escape(_))));
        assert!(matches!(n("../x"), Err(Cause::Escape(_))));
    }
}
