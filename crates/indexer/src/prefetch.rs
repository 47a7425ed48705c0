//! Prefetch artifacts: what a container reads at start, as per-layer span ranges a snapshotter
//! fetches before it reports a layer ready. The list comes from `--prefetch-file` paths and a
//! `--prefetch-files-json` file (paths, or the byte ranges `soci mount --record-read-ranges`
//! writes); each path is found in the topmost indexed layer holding it.

use crate::error::{Error, Result};
use oci::prefetch::PrefetchArtifact;
use std::collections::BTreeMap;

/// One entry of the prefetch list: a TOC name and, when known, the byte ranges of the file
/// that were read (`None`: the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchPath {
    /// Normalized TOC name (no leading `/`, `.` and `..` resolved).
    pub name: String,
    /// `[start, end)` byte ranges within the file, or `None` for all of it.
    pub ranges: Option<Vec<(u64, u64)>>,
}

/// The two forms a prefetch list file takes.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ListFile {
    /// `["/path", ...]`.
    Paths(Vec<String>),
    /// `{"/path": [[start, end], ...], ...}`, in the file's order (first read first).
    Ranges(OrderedRanges),
}

/// The byte ranges of a ranges file, per path, in the order the file lists them: the order
/// of first reads, which the prefetch artifact keeps as its priorities.
struct OrderedRanges(Vec<(String, Vec<(u64, u64)>)>);

impl<'de> serde::Deserialize<'de> for OrderedRanges {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OrderedRanges;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of path -> [[start, end], ...]")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> std::result::Result<OrderedRanges, M::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(OrderedRanges(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A prefetch list and what was dropped from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefetchList {
    /// The entries, first-listed first, without repeats.
    pub paths: Vec<PrefetchPath>,
    /// Entries ignored because they name the root directory (warn about them).
    pub ignored: Vec<String>,
}

impl PrefetchList {
    /// The list from `paths` (whole files) then the JSON `file` (if any; `what` names it in
    /// errors): names trimmed, blanks dropped, normalized as TOC names are, without repeats;
    /// a path listed whole and with ranges is prefetched whole, ranges listed twice combine.
    pub fn parse(paths: &[String], file: Option<(&[u8], &str)>) -> Result<Self> {
        let whole = |name: String| PrefetchPath { name, ranges: None };
        let mut raw: Vec<PrefetchPath> = paths.iter().cloned().map(whole).collect();
        if let Some((bytes, what)) = file {
            let listed: ListFile = serde_json::from_slice(bytes).map_err(|_| {
                Error::Settings(format!(
                    "{what}: expected a JSON array of path strings, or an object of path -> \
                     [[start, end], ...] byte ranges"
                ))
            })?;
            match listed {
                ListFile::Paths(p) => raw.extend(p.into_iter().map(whole)),
                ListFile::Ranges(OrderedRanges(by_path)) => {
                    raw.extend(by_path.into_iter().map(|(name, r)| PrefetchPath {
                        name,
                        ranges: Some(r),
                    }))
                }
            }
        }
        let mut list = PrefetchList::default();
        for entry in raw.iter().filter(|e| !e.name.trim().is_empty()) {
            list.add(entry);
        }
        Ok(list)
    }

    /// The list of what a mount's read log saw: each file with the byte ranges read of it
    /// (as `soci mount --record-read-ranges` writes them, without the file).
    pub fn from_read_ranges(reads: impl IntoIterator<Item = (String, Vec<(u64, u64)>)>) -> Self {
        let mut list = PrefetchList::default();
        for (name, ranges) in reads.into_iter().filter(|(n, _)| !n.trim().is_empty()) {
            list.add(&PrefetchPath {
                name,
                ranges: Some(ranges),
            });
        }
        list
    }

    /// Adds one raw entry, merging it with an earlier one of the same name.
    fn add(&mut self, entry: &PrefetchPath) {
        let name = ztoc::toc::normalize_name(entry.name.trim());
        if name.is_empty() {
            self.ignored.push(entry.name.clone());
            return;
        }
        match self.paths.iter_mut().find(|e| e.name == name) {
            None => self.paths.push(PrefetchPath {
                name,
                ranges: entry.ranges.clone(),
            }),
            Some(existing) => match (&mut existing.ranges, &entry.ranges) {
                (Some(mine), Some(more)) => mine.extend(more.iter().copied()),
                (Some(_), None) => existing.ranges = None,
                (None, _) => {}
            },
        }
    }
}

/// Inclusive span ranges per layer position (bottom first), each with the position in the
/// prefetch list of the entry it serves (its rank across all layers).
pub type LayerRanges = BTreeMap<usize, Vec<(u64, u64, i64)>>;

/// `[start, end)` ranges of the uncompressed tar stream per layer position (bottom first).
pub type LayerExtents = BTreeMap<usize, Vec<(u64, u64)>>;

/// For each of `paths`, finds the topmost of `layers` (bottom first) whose TOC has an entry
/// of exactly that name and takes the tar-stream range of its data, or of each byte range
/// given (clipped to the file; an empty whole file is an empty range at its offset).
/// Returns the ranges per layer position (ascending) and the paths no layer has.
pub fn read_extents(layers: &[&ztoc::Ztoc], paths: &[PrefetchPath]) -> (LayerExtents, Vec<String>) {
    let (ranked, missing) = ranked_extents(layers, paths);
    let extents = ranked
        .into_iter()
        .map(|(i, r)| (i, r.into_iter().map(|(a, b, _)| (a, b)).collect()))
        .collect();
    (extents, missing)
}

/// [`LayerExtents`] with each range's rank: the position of its entry in the list.
type RankedExtents = BTreeMap<usize, Vec<(u64, u64, i64)>>;

/// [`read_extents`] with each range's rank: the position of its entry in `paths`.
fn ranked_extents(layers: &[&ztoc::Ztoc], paths: &[PrefetchPath]) -> (RankedExtents, Vec<String>) {
    let mut extents = RankedExtents::new();
    let mut missing = Vec::new();
    for (rank, path) in paths.iter().enumerate() {
        let found = layers.iter().enumerate().rev().find_map(|(i, z)| {
            if z.span_count() == 0 {
                return None;
            }
            let file = toc_file(z, &path.name)?;
            let at = |start: u64, end: u64| {
                let offset = file.uncompressed_offset;
                (
                    offset.saturating_add(start),
                    offset.saturating_add(end),
                    rank as i64,
                )
            };
            let ranges = match &path.ranges {
                None => vec![at(0, file.uncompressed_size)],
                Some(read) => read
                    .iter()
                    .map(|&(start, end)| (start, end.min(file.uncompressed_size)))
                    .filter(|(start, end)| start < end)
                    .map(|(start, end)| at(start, end))
                    .collect(),
            };
            Some((i, ranges))
        });
        match found {
            Some((i, ranges)) => extents.entry(i).or_default().extend(ranges),
            None => missing.push(path.name.clone()),
        }
    }
    (extents, missing)
}

/// As [`read_extents`], but the inclusive spans holding those bytes (an empty range: the
/// span of its offset), clamped to each layer's last span.
pub fn prefetch_ranges(
    layers: &[&ztoc::Ztoc],
    paths: &[PrefetchPath],
) -> (LayerRanges, Vec<String>) {
    let (extents, missing) = ranked_extents(layers, paths);
    let ranges = extents
        .into_iter()
        .filter_map(|(i, ranges)| {
            let z = layers.get(i)?;
            let spans = ranges
                .iter()
                .map(|&(a, b, rank)| {
                    let (first, last) = extent_spans(z, (a, b));
                    (first, last, rank)
                })
                .collect();
            Some((i, spans))
        })
        .collect();
    (ranges, missing)
}

/// The artifact of one layer's ranges (in the order of the list: first read first, each
/// with its rank in the whole list as its priority) and its JSON bytes.
pub fn artifact(ranges: Vec<(u64, u64, i64)>) -> (PrefetchArtifact, Vec<u8>) {
    let artifact = PrefetchArtifact::ranked(ranges);
    let json = artifact.to_json();
    (artifact, json)
}

/// The TOC entry holding the data of `name`: the last entry of that name (as when the layer
/// is unpacked), or for a hard link the entry it links to (a hard link's own entry has no
/// data, and a read list may name a file by any of its links).
fn toc_file<'a>(z: &'a ztoc::Ztoc, name: &str) -> Option<&'a ztoc::FileMetadata> {
    let mut file = z.toc.files.iter().rev().find(|f| f.name == name)?;
    // Links to links are not made by tar, but a bound keeps a hostile TOC from looping.
    for _ in 0..8 {
        if file.file_type != ztoc::FileType::Hardlink {
            break;
        }
        let target = ztoc::toc::normalize_name(&file.linkname);
        file = z.toc.files.iter().rev().find(|f| f.name == target)?;
    }
    Some(file)
}

/// The inclusive spans holding tar bytes `[start, end)` (just the span of `start` when
/// empty), clamped to the layer's last span.
fn extent_spans(z: &ztoc::Ztoc, (start, end): (u64, u64)) -> (u64, u64) {
    let last = z.span_count().saturating_sub(1);
    let span = |offset: u64| z.span_of(offset).unwrap_or(last).min(last);
    let first = span(start);
    if end > start {
        (first, span(end - 1).max(first))
    } else {
        (first, first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An uncompressed-layer zTOC of `size` bytes in spans of 100, listing `files`
    /// (name, data offset, size).
    fn ztoc_with(size: u64, files: &[(&str, u64, u64)]) -> ztoc::Ztoc {
        ztoc::Ztoc {
            version: ztoc::ZTOC_VERSION.into(),
            build_tool_identifier: "test".into(),
            compressed_archive_size: size,
            uncompressed_archive_size: size,
            toc: ztoc::Toc {
                files: files
                    .iter()
                    .map(|&(name, offset, len)| ztoc::FileMetadata {
                        uncompressed_offset: offset,
                        uncompressed_size: len,
                        ..ztoc::FileMetadata::new(name, ztoc::FileType::Regular)
                    })
                    .collect(),
            },
            compression: ztoc::CompressionInfo {
                checkpoints: ztoc::Checkpoints::Uncompressed {
                    span_size: 100,
                    size,
                },
                span_digests: (0..size.div_ceil(100))
                    .map(|i| ztoc::SpanDigest::of(&i.to_le_bytes()))
                    .collect(),
            },
        }
    }

    #[test]
    fn a_file_covers_the_spans_of_its_first_to_its_last_byte() {
        let z = ztoc_with(
            1000,
            &[
                ("a", 150, 50),    // 150..200: span 1 only (200 is not its byte)
                ("b", 199, 2),     // 199..201: spans 1-2
                ("empty", 300, 0), // start span only
                ("end", 990, 0),   // empty at the very end
                ("past", 1200, 5), // beyond the layer: clamped to the last span
            ],
        );
        let range = |name: &str| {
            let f = z.find_file(name).unwrap();
            let start = f.uncompressed_offset;
            extent_spans(&z, (start, start + f.uncompressed_size))
        };
        assert_eq!(range("a"), (1, 1));
        assert_eq!(range("b"), (1, 2));
        assert_eq!(range("empty"), (3, 3));
        assert_eq!(range("end"), (9, 9));
        assert_eq!(range("past"), (9, 9));
    }

    #[test]
    fn a_ranges_file_keeps_its_order_into_the_artifact() {
        // "z" was read first, then "a": the artifact fetches z's spans first.
        let file = br#"{"/z": [[0, 10]], "/a": [[0, 150]]}"#;
        let list = PrefetchList::parse(&[], Some((file, "ranges.json"))).unwrap();
        let names: Vec<_> = list.paths.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["z", "a"]);
        let z = ztoc_with(1000, &[("a", 100, 200), ("z", 700, 50)]);
        let (ranges, missing) = prefetch_ranges(&[&z], &list.paths);
        assert!(missing.is_empty());
        let (artifact, _) = artifact(ranges[&0].clone());
        assert_eq!(artifact.spans(), [7, 1, 2]);
    }

    #[test]
    fn byte_ranges_cover_only_the_spans_read() {
        // Spans of 100 bytes; "model" is 150..950 (spans 1-9).
        let mut z = ztoc_with(1000, &[("model", 150, 800), ("link", 0, 0)]);
        let link = z.toc.files.iter_mut().find(|f| f.name == "link").unwrap();
        link.file_type = ztoc::FileType::Hardlink;
        link.linkname = "/model".into();
        let read = |name: &str, ranges: Vec<(u64, u64)>| PrefetchPath {
            name: name.into(),
            ranges: Some(ranges),
        };
        let paths = [
            // Its first 40 bytes (150..190: span 1), and 400..460 (550..610: spans 5-6).
            read("model", vec![(0, 40), (400, 460)]),
            // Past the end of the file, or empty: nothing.
            read("model", vec![(900, 1000), (7, 7)]),
            // Through the hard link: bytes 790..800 (940..950: span 9).
            read("link", vec![(790, 2000)]),
        ];
        let (ranges, missing) = prefetch_ranges(&[&z], &paths);
        assert!(missing.is_empty());
        // Each range ranked by its entry's place in the list.
        assert_eq!(ranges[&0], [(1, 1, 0), (5, 6, 0), (9, 9, 2)]);
    }

    #[test]
    fn the_topmost_indexed_layer_holding_a_path_wins() {
        let bottom = ztoc_with(1000, &[("etc/x", 0, 10), ("usr/y", 500, 250)]);
        let top = ztoc_with(300, &[("etc/x", 120, 100), ("etc/z", 0, 1)]);
        let paths: Vec<PrefetchPath> = ["etc/x", "usr/y", "etc/z", "nope"]
            .iter()
            .map(|s| PrefetchPath {
                name: s.to_string(),
                ranges: None,
            })
            .collect();
        let (ranges, missing) = prefetch_ranges(&[&bottom, &top], &paths);
        assert_eq!(
            ranges,
            BTreeMap::from([(0, vec![(5, 7, 1)]), (1, vec![(1, 2, 0), (0, 0, 2)])])
        );
        assert_eq!(missing, ["nope"]);
        // In list order: etc/x's spans before etc/z's, ranked across both layers (usr/y,
        // in the bottom layer, comes between them).
        let (artifact, _) = artifact(ranges[&1].clone());
        assert_eq!(artifact.ranked_spans(), [(1, 0), (2, 0), (0, 2)]);
    }

    #[test]
    fn prefetch_paths_are_normalized_and_merged_with_the_json_list() {
        let flags = vec!["/usr/bin/small".to_owned(), "".to_owned(), "/".to_owned()];
        let json = br#"["/opt/data.bin", " ", "usr//bin/./small", "/x/../etc/c"]"#;
        let whole = |name: &str| PrefetchPath {
            name: name.into(),
            ranges: None,
        };
        let list = PrefetchList::parse(&flags, Some((json, "p.json"))).unwrap();
        assert_eq!(
            list.paths,
            [
                whole("usr/bin/small"),
                whole("opt/data.bin"),
                whole("etc/c")
            ]
        );
        assert_eq!(list.ignored, ["/"]);
        // The byte-range form: ranges of one path are combined, and a path also listed
        // whole (by a flag) is prefetched whole.
        let json = br#"{"/opt/model.bin": [[0, 10]], "opt//model.bin": [[50, 60]], "/usr/bin/small": [[0, 1]]}"#;
        let list = PrefetchList::parse(&flags[..1], Some((json, "p.json"))).unwrap();
        assert_eq!(
            list.paths,
            [
                whole("usr/bin/small"),
                PrefetchPath {
                    name: "opt/model.bin".into(),
                    ranges: Some(vec![(0, 10), (50, 60)])
                }
            ]
        );
        let err = PrefetchList::parse(&[], Some((br#"{"files": ["a"]}"#, "p.json"))).unwrap_err();
        assert!(err.to_string().contains("JSON array"), "{err}");
    }
}
