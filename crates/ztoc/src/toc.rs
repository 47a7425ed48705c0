//! Walks an uncompressed tar stream and records every entry with its data offset.
//!
//! Parsing of the tar format itself (ustar, GNU long names and links, PAX headers, checksums)
//! is done by the `tar` crate; this module turns its entries into [`FileMetadata`], applies the
//! PAX records the crate leaves to callers (mtime with sub-second precision, uname, gname),
//! keeps the remaining PAX records verbatim, normalizes names, and refuses GNU sparse files,
//! whose data is not one contiguous range.

use crate::error::{Error, Result};
use crate::gzip::from_io;
use crate::model::{FileMetadata, FileType, Toc, Xattr};
use std::io::Read;
use tar::EntryType;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Normalizes a tar entry name: drops leading `/` and `./`, resolves `.` and `..` lexically
/// without ever climbing above the root, and removes duplicate and trailing slashes.
/// The root itself becomes the empty string.
pub fn normalize_name(raw: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// Reads the whole tar stream from `reader` and returns its table of contents.
///
/// Offsets are counted from the first byte `reader` yields. The reader is left positioned
/// after the end-of-archive marker (or wherever the tar crate stopped); callers that need the
/// rest of the stream consumed must drain it.
pub fn read_toc<R: Read>(reader: R) -> Result<Toc> {
    let count = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let mut counting = CountingReader {
        inner: reader,
        count: count.clone(),
    };
    let files = {
        let mut archive = tar::Archive::new(&mut counting);
        let entries = archive.entries().map_err(tar_error(0))?;
        let mut files = Vec::new();
        let mut last: Option<(String, u64, u64)> = None;
        for entry in entries {
            let mut entry = match entry {
                Ok(entry) => entry,
                // A stream that ends right after the last entry's data, without the padding
                // and end-of-archive blocks, is accepted, as Go's archive/tar (and so
                // containerd and AWS's soci) accept it; some image tools write such layers.
                Err(e)
                    if (e.kind() == std::io::ErrorKind::UnexpectedEof
                        || e.to_string().contains("unexpected EOF"))
                        && last
                            .as_ref()
                            .is_some_and(|(_, offset, size)| offset + size <= count.get()) =>
                {
                    break
                }
                Err(e) => return Err(entry_error(e, last.as_ref(), count.get())),
            };
            let data_offset = entry.raw_file_position();
            let header_offset = data_offset.saturating_sub(512);
            let Some(meta) = entry_metadata(&mut entry, data_offset)
                .map_err(|e| with_offset(e, header_offset))?
            else {
                continue;
            };
            last = Some((meta.name.clone(), meta.uncompressed_offset, entry.size()));
            files.push(meta);
        }
        files
    };
    // The tar crate skips the data of the last entry lazily; make sure it really existed.
    if let Some(file) = files.last() {
        let end = file.uncompressed_offset + file.uncompressed_size;
        if end > count.get() {
            let mut sink = std::io::sink();
            let more = std::io::copy(&mut counting.inner, &mut sink).map_err(from_io)?;
            let total = count.get() + more;
            if end > total {
                return Err(Error::TarEntryPastEnd {
                    name: file.name.clone(),
                    size: file.uncompressed_size,
                    offset: file.uncompressed_offset,
                    end: total,
                });
            }
        }
    }
    Ok(Toc { files })
}

/// Converts one tar entry; `None` for entries that are not file system objects.
fn entry_metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    data_offset: u64,
) -> Result<Option<FileMetadata>> {
    let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let header = entry.header();
    let entry_type = header.entry_type();
    let file_type = match entry_type {
        EntryType::Regular | EntryType::Continuous => FileType::Regular,
        EntryType::Directory => FileType::Directory,
        EntryType::Symlink => FileType::Symlink,
        EntryType::Link => FileType::Hardlink,
        EntryType::Char => FileType::Char,
        EntryType::Block => FileType::Block,
        EntryType::Fifo => FileType::Fifo,
        EntryType::GNUSparse => return Err(Error::SparseEntry { name: raw_name }),
        // Global PAX headers and vendor extensions describe no file.
        EntryType::XGlobalHeader => return Ok(None),
        other => {
            return Err(Error::Tar {
                offset: 0,
                message: format!(
                    "entry {raw_name:?} has unsupported type {:?} ({})",
                    other.as_byte() as char,
                    other.as_byte()
                ),
            })
        }
    };
    let name = normalize_name(&raw_name);
    // Like Go's archive/tar (which AWS's builder uses), an empty numeric field means 0.
    let old = header.as_old();
    let mode = lenient(header.mode(), &old.mode, &raw_name, "mode")?;
    let uid = lenient(header.uid(), &old.uid, &raw_name, "uid")?;
    let gid = lenient(header.gid(), &old.gid, &raw_name, "gid")?;
    let mut mtime_secs = i128::from(lenient(header.mtime(), &old.mtime, &raw_name, "mtime")?);
    let mut mtime_nanos: u32 = 0;
    let mut uname = header
        .username_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let mut gname = header
        .groupname_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let (dev_major_raw, dev_minor_raw): (&[u8], &[u8]) = match header.as_ustar() {
        Some(u) => (&u.dev_major, &u.dev_minor),
        None => match header.as_gnu() {
            Some(g) => (&g.dev_major, &g.dev_minor),
            None => (&[], &[]),
        },
    };
    let devmajor =
        lenient(header.device_major(), dev_major_raw, &raw_name, "devmajor")?.unwrap_or(0);
    let devminor =
        lenient(header.device_minor(), dev_minor_raw, &raw_name, "devminor")?.unwrap_or(0);
    let linkname = entry
        .link_name_bytes()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let size = entry.size();

    // Every PAX record of the entry is kept verbatim and sorted by key, as AWS's builder does;
    // readers pick `SCHILY.xattr.*` out of them. A repeated key keeps its last value.
    let mut records = std::collections::BTreeMap::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| field_error(&raw_name, "PAX header", e))?
    {
        for record in pax {
            let record = record.map_err(|e| field_error(&raw_name, "PAX record", e))?;
            let key = String::from_utf8_lossy(record.key_bytes()).into_owned();
            let value = String::from_utf8_lossy(record.value_bytes()).into_owned();
            if key.starts_with("GNU.sparse.") {
                return Err(Error::SparseEntry { name: raw_name });
            }
            match key.as_str() {
                "mtime" => {
                    let (secs, nanos) = parse_pax_time(&value).ok_or_else(|| Error::Tar {
                        offset: 0,
                        message: format!("entry {raw_name:?} has an invalid PAX mtime {value:?}"),
                    })?;
                    mtime_secs = secs;
                    mtime_nanos = nanos;
                }
                "uname" => uname = value.clone(),
                "gname" => gname = value.clone(),
                _ => {}
            }
            records.insert(key, value);
        }
    }

    // Only regular files carry data a reader can address; hardlinks, links and devices
    // record size 0 even when a (malformed) header claims more.
    let uncompressed_size = if file_type == FileType::Regular {
        size
    } else {
        0
    };
    Ok(Some(FileMetadata {
        name,
        file_type,
        uncompressed_offset: data_offset,
        uncompressed_size,
        linkname,
        mode: i64::from(mode),
        uid: u32::try_from(uid).map_err(|_| Error::Tar {
            offset: 0,
            message: format!("entry {raw_name:?} has uid {uid}, larger than 32 bits"),
        })?,
        gid: u32::try_from(gid).map_err(|_| Error::Tar {
            offset: 0,
            message: format!("entry {raw_name:?} has gid {gid}, larger than 32 bits"),
        })?,
        uname,
        gname,
        mod_time: format_mod_time(mtime_secs, mtime_nanos),
        devmajor: i64::from(devmajor),
        devminor: i64::from(devminor),
        xattrs: records
            .into_iter()
            .map(|(key, value)| Xattr { key, value })
            .collect(),
    }))
}

/// Formats a modification time as RFC 3339 in UTC with nanoseconds, trailing zeros trimmed
/// (Go's `time.RFC3339Nano`). Out-of-range times are clamped to the representable range.
pub fn format_mod_time(secs: i128, nanos: u32) -> String {
    let total = secs * 1_000_000_000 + i128::from(nanos);
    let t = OffsetDateTime::from_unix_timestamp_nanos(total).unwrap_or(if total < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        // 9999-12-31T23:59:59Z, the last instant RFC 3339 can write.
        OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    });
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Parses a PAX time value `secs[.fraction]` (possibly negative) into seconds and nanoseconds.
pub fn parse_pax_time(value: &str) -> Option<(i128, u32)> {
    let (whole, frac) = match value.split_once('.') {
        Some((w, f)) => (w, f),
        None => (value, ""),
    };
    let negative = whole.starts_with('-');
    let digits = whole.strip_prefix('-').unwrap_or(whole);
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i128 = digits.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if negative {
        // -1.5 means 1.5 s before the epoch.
        if nanos == 0 {
            Some((-secs, 0))
        } else {
            Some((-secs - 1, 1_000_000_000 - nanos))
        }
    } else {
        Some((secs, nanos))
    }
}

/// Accepts a numeric header field, or 0 when the field is blank (all NUL or spaces).
fn lenient<T: Default>(
    parsed: std::io::Result<T>,
    raw: &[u8],
    name: &str,
    field: &str,
) -> Result<T> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(T::default()),
        Err(e) => Err(field_error(name, field, e)),
    }
}

fn field_error(name: &str, field: &str, e: std::io::Error) -> Error {
    match from_io(e) {
        Error::Io(e) => Error::Tar {
            offset: 0,
            message: format!("entry {name:?}: bad {field}: {e}"),
        },
        other => other,
    }
}

fn with_offset(e: Error, at: u64) -> Error {
    match e {
        Error::Tar { offset: 0, message } => Error::Tar {
            offset: at,
            message,
        },
        other => other,
    }
}

fn tar_error(offset: u64) -> impl Fn(std::io::Error) -> Error {
    move |e| match from_io(e) {
        Error::Io(e) => Error::Tar {
            offset,
            message: e.to_string(),
        },
        other => other,
    }
}

/// Maps an error from the entry iterator, recognising a previous entry whose data ran past
/// the end of the stream.
fn entry_error(e: std::io::Error, last: Option<&(String, u64, u64)>, read: u64) -> Error {
    let message = e.to_string();
    match from_io(e) {
        Error::Io(_) if message.contains("unexpected EOF") => match last {
            Some((name, offset, size)) => Error::TarEntryPastEnd {
                name: name.clone(),
                size: *size,
                offset: *offset,
                end: read,
            },
            None => Error::Tar { offset: 0, message },
        },
        Error::Io(_) => Error::Tar {
            offset: last.map_or(0, |(_, o, s)| o + s),
            message,
        },
        other => other,
    }
}

/// Counts bytes read so a short stream can be told apart from a long entry.
struct CountingReader<R> {
    inner: R,
    count: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize_name("./usr/bin/"), "usr/bin");
        assert_eq!(normalize_name("/etc//passwd"), "etc/passwd");
        assert_eq!(normalize_name("../../etc/shadow"), "etc/shadow");
        assert_eq!(normalize_name("a/b/../../../c"), "c");
        assert_eq!(normalize_name("./"), "");
    }

    #[test]
    fn pax_times_parse() {
        assert_eq!(
            parse_pax_time("1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time("1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time("x"), None);
        assert_eq!(parse_pax_time(""), None);
    }

    #[test]
    fn mod_time_matches_go_rfc3339nano() {
        assert_eq!(format_mod_time(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_mod_time(1_700_000_000, 500_000_000),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(
            format_mod_time(1, 123_456_789),
            "1970-01-01T00:00:01.123456789Z"
        );
    }
}
