//! Property test: random file trees → tar → gzip (several compressors with different block
//! structures) → zTOC → every file read back through the span path equals the original.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::io::{Cursor, Write};
use std::process::{Command, Stdio};
use ztoc::*;

const SPAN: u64 = 48 * 1024;

#[derive(Debug, Clone)]
enum Kind {
    Regular(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(usize),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (u64, u32),
    xattrs: Vec<(String, String)>,
    pax: bool,
}

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        // Compressible text-like data: produces dynamic Huffman blocks, so checkpoints land at
        // bit (not byte) boundaries.
        6 => (1usize..200_000, any::<u64>()).prop_map(|(len, seed)| text_like(len, seed)),
        // Incompressible data: stored blocks.
        2 => (1usize..120_000, any::<u64>()).prop_map(|(len, seed)| noise(len, seed)),
    ]
}

fn text_like(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "import ",
        "numpy",
        " as np\n",
        "def ",
        "return ",
        "self",
        ".append(",
        "value",
        "):\n",
        "    ",
        "lambda ",
        "0123",
        "Hello",
        "container ",
        "layer",
        "\n",
        "{",
        "}",
        " = ",
    ];
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let w = WORDS[(state % WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        if state % 11 == 0 {
            out.push((state >> 40) as u8);
        }
    }
    out.truncate(len);
    out
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn name_part() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-z0-9_]{1,12}",
        1 => "[a-z]{90,140}",          // forces GNU long names / PAX path
        1 => "[a-zé ü-]{1,10}",        // non-ASCII, spaces
    ]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    let one = (
        prop::collection::vec(name_part(), 1..4),
        0u8..10,
        content(),
        "[a-z]{1,8}(/[a-z_]{1,8}){0,3}",
        (0u32..300, 0u32..300),
        (0o000u32..0o7777, 0u64..70_000, 0u64..70_000),
        (0u64..4_000_000_000, 0u32..1_000_000_000),
        prop::collection::vec(("[a-z]{1,8}", "[ -~]{0,20}"), 0..3),
        any::<bool>(),
    );
    prop::collection::vec(one, 1..24).prop_map(|raw| {
        let mut out: Vec<Entry> = Vec::new();
        for (i, (parts, kind, data, target, dev, (mode, uid, gid), mtime, xattrs, pax)) in
            raw.into_iter().enumerate()
        {
            // Unique names: the walker reports names, so duplicates would make the oracle
            // ambiguous (a later entry shadows an earlier one).
            let name = format!("{}{}", parts.join("/"), i);
            let regulars: Vec<usize> = out
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e.kind, Kind::Regular(_)))
                .map(|(i, _)| i)
                .collect();
            let kind = match kind {
                0..=4 => Kind::Regular(data),
                5 => Kind::Dir,
                6 => Kind::Symlink(target),
                7 if !regulars.is_empty() => {
                    Kind::Hardlink(regulars[dev.0 as usize % regulars.len()])
                }
                7 => Kind::Fifo,
                8 => {
                    if dev.0 % 2 == 0 {
                        Kind::Char(dev.0, dev.1)
                    } else {
                        Kind::Block(dev.0, dev.1)
                    }
                }
                _ => Kind::Fifo,
            };
            let xattrs = xattrs
                .into_iter()
                .map(|(k, v)| (format!("SCHILY.xattr.user.{k}"), v))
                .collect::<Vec<_>>();
            let pax = pax || !xattrs.is_empty();
            out.push(Entry {
                name,
                kind,
                mode,
                uid,
                gid,
                mtime,
                xattrs,
                pax,
            });
        }
        out
    })
}

fn make_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = if e.pax {
            tar::Header::new_ustar()
        } else {
            tar::Header::new_gnu()
        };
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime.0);
        h.set_username("user").unwrap();
        h.set_groupname("group").unwrap();
        if e.pax {
            let mut recs: Vec<(String, Vec<u8>)> = e
                .xattrs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect();
            recs.push((
                "mtime".into(),
                format!("{}.{:09}", e.mtime.0, e.mtime.1).into_bytes(),
            ));
            if e.name.len() > 99 {
                recs.push(("path".into(), e.name.clone().into_bytes()));
            }
            b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let (ty, data): (tar::EntryType, &[u8]) = match &e.kind {
            Kind::Regular(d) => (tar::EntryType::Regular, d),
            Kind::Dir => (tar::EntryType::Directory, &[]),
            Kind::Symlink(_) => (tar::EntryType::Symlink, &[]),
            Kind::Hardlink(_) => (tar::EntryType::Link, &[]),
            Kind::Char(..) => (tar::EntryType::Char, &[]),
            Kind::Block(..) => (tar::EntryType::Block, &[]),
            Kind::Fifo => (tar::EntryType::Fifo, &[]),
        };
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        if let Kind::Char(maj, min) | Kind::Block(maj, min) = e.kind {
            h.set_device_major(maj).unwrap();
            h.set_device_minor(min).unwrap();
        }
        match &e.kind {
            Kind::Symlink(t) => {
                b.append_link(&mut h, &e.name, t).unwrap();
            }
            Kind::Hardlink(i) => {
                b.append_link(&mut h, &e.name, &entries[*i].name).unwrap();
            }
            _ if e.pax && e.name.len() > 99 => {
                // The PAX record carries the path; the header gets a truncated placeholder.
                h.as_mut_bytes()[..99].copy_from_slice(&e.name.as_bytes()[..99]);
                h.set_cksum();
                b.append(&h, data).unwrap();
            }
            _ => {
                b.append_data(&mut h, &e.name, data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Compressor {
    Flate(u32),
    Gzip,
    Pigz,
}

fn compress(c: Compressor, data: &[u8]) -> Vec<u8> {
    match c {
        Compressor::Flate(level) => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compressor::Gzip => external(&["gzip", "-c", "-6", "-n"], data),
        // Small blocks (-b 32 KiB) and several threads: many independently deflated chunks
        // joined with empty stored blocks.
        Compressor::Pigz => external(&["pigz", "-c", "-b", "32", "-p", "2"], data),
    }
}

fn external(cmd: &[&str], data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} is required for this test (apt-get install {}): {e}",
                cmd[0], cmd[0]
            )
        });
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{} failed", cmd[0]);
    out.stdout
}

#[derive(Default)]
struct Coverage {
    files_checked: usize,
    bits_checkpoints: usize,
    reads_from_bits_span: usize,
    multi_span_files: usize,
    empty_files: usize,
}

/// The placements every tree is checked with: uniform, a start at every entry (from the
/// uniform build's TOC), and around read ranges that include the first and the last byte of the tar.
fn placements(gz: &[u8]) -> Result<Vec<Placement>, TestCaseError> {
    let uniform = BuildOptions {
        span_size: SPAN,
        ..Default::default()
    };
    let z = build_ztoc(Cursor::new(gz), CompressionAlgorithm::Gzip, &uniform)
        .map_err(|e| TestCaseError::fail(format!("build: {e}")))?;
    let end = z.uncompressed_archive_size;
    let mut hot = vec![(0, 1), (end.saturating_sub(1), end)];
    for f in z.toc.files.iter().step_by(2) {
        let third = f.uncompressed_size / 3;
        let start = f.uncompressed_offset + third;
        hot.push((start, start + third.max(1)));
    }
    Ok(vec![
        Placement::Uniform,
        // A start at every entry: spans of single deflate blocks.
        Placement::Breaks {
            starts: z.toc.files.iter().map(|f| f.uncompressed_offset).collect(),
            ends: Vec::new(),
        },
        Placement::around_ranges(&hot, 0),
    ])
}

fn check(
    entries: &[Entry],
    gz: &[u8],
    tarball: &[u8],
    placement: Placement,
    cov: &mut Coverage,
) -> Result<(), TestCaseError> {
    let opts = BuildOptions {
        span_size: SPAN,
        placement,
        ..Default::default()
    };
    let z = build_ztoc(Cursor::new(gz), CompressionAlgorithm::Gzip, &opts)
        .map_err(|e| TestCaseError::fail(format!("build: {e}")))?;
    prop_assert_eq!(z.uncompressed_archive_size, tarball.len() as u64);
    prop_assert_eq!(z.compressed_archive_size, gz.len() as u64);
    let decoded = decode(&encode(&z)).map_err(|e| TestCaseError::fail(format!("decode: {e}")))?;
    prop_assert_eq!(&decoded, &z);
    let Checkpoints::Gzip(zinfo) = &z.compression.checkpoints else {
        return Err(TestCaseError::fail("not gzip"));
    };
    cov.bits_checkpoints += zinfo.checkpoints.iter().filter(|c| c.bits != 0).count();
    prop_assert_eq!(z.toc.files.len(), entries.len());
    for (e, f) in entries.iter().zip(&z.toc.files) {
        prop_assert_eq!(&f.name, &e.name);
        prop_assert_eq!(f.mode, i64::from(e.mode));
        prop_assert_eq!(u64::from(f.uid), e.uid);
        prop_assert_eq!(u64::from(f.gid), e.gid);
        prop_assert_eq!(&f.uname, "user");
        let (secs, nanos) = if e.pax { e.mtime } else { (e.mtime.0, 0) };
        prop_assert_eq!(
            &f.mod_time,
            &ztoc::toc::format_mod_time(i128::from(secs), nanos)
        );
        // Every PAX record is kept verbatim, sorted by key.
        let xattrs: Vec<(String, String)> = f
            .xattrs
            .iter()
            .map(|x| (x.key.clone(), x.value.clone()))
            .collect();
        let mut want: std::collections::BTreeMap<String, String> =
            e.xattrs.iter().cloned().collect();
        if e.pax {
            want.insert("mtime".into(), format!("{}.{:09}", e.mtime.0, e.mtime.1));
            if e.name.len() > 99 {
                want.insert("path".into(), e.name.clone());
            }
        }
        let want: Vec<(String, String)> = want.into_iter().collect();
        prop_assert_eq!(&xattrs, &want);
        match &e.kind {
            Kind::Regular(data) => {
                prop_assert_eq!(f.file_type, FileType::Regular);
                let (first, last) = if data.is_empty() {
                    cov.empty_files += 1;
                    (0, 0)
                } else {
                    z.spans_for_range(
                        &(f.uncompressed_offset..f.uncompressed_offset + data.len() as u64),
                    )
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                };
                if last > first {
                    cov.multi_span_files += 1;
                }
                if zinfo.checkpoints[first as usize].bits != 0 && !data.is_empty() {
                    cov.reads_from_bits_span += 1;
                }
                let got = read_file(&z, &mut Cursor::new(gz), f)
                    .map_err(|e| TestCaseError::fail(format!("read {}: {e}", f.name)))?;
                prop_assert!(&got == data, "file {} differs", f.name);
                cov.files_checked += 1;
            }
            Kind::Dir => prop_assert_eq!(f.file_type, FileType::Directory),
            Kind::Symlink(t) => {
                prop_assert_eq!(f.file_type, FileType::Symlink);
                prop_assert_eq!(&f.linkname, t);
            }
            Kind::Hardlink(i) => {
                prop_assert_eq!(f.file_type, FileType::Hardlink);
                prop_assert_eq!(&f.linkname, &entries[*i].name);
            }
            Kind::Char(maj, min) | Kind::Block(maj, min) => {
                let want = if matches!(e.kind, Kind::Char(..)) {
                    FileType::Char
                } else {
                    FileType::Block
                };
                prop_assert_eq!(f.file_type, want);
                prop_assert_eq!((f.devmajor, f.devminor), (i64::from(*maj), i64::from(*min)));
            }
            Kind::Fifo => prop_assert_eq!(f.file_type, FileType::Fifo),
        }
    }
    // Every whole span decodes to exactly the tar bytes it claims.
    for span in 0..z.span_count() {
        let c = z.span_compressed_range(span).unwrap();
        let u = z.span_uncompressed_range(span).unwrap();
        let bytes = &gz[c.start as usize..c.end as usize];
        z.verify_span(span, bytes)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = extract_range(&z, span, bytes, u.clone())
            .map_err(|e| TestCaseError::fail(format!("span {span}: {e}")))?;
        prop_assert!(
            got == tarball[u.start as usize..u.end as usize],
            "span {} differs",
            span
        );
    }
    Ok(())
}

#[test]
fn random_trees_round_trip_through_every_compressor() {
    let compressors = [
        Compressor::Flate(1),
        Compressor::Flate(6),
        Compressor::Flate(9),
        Compressor::Gzip,
        Compressor::Pigz,
    ];
    let cases: u32 = std::env::var("ZTOC_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let mut cov = Coverage::default();
    let cov_cell = std::cell::RefCell::new(&mut cov);
    runner
        .run(&entries(), |entries| {
            let tarball = make_tar(&entries);
            for c in compressors {
                let gz = compress(c, &tarball);
                for placement in placements(&gz)? {
                    let what = format!("{c:?}, {placement:?}");
                    check(
                        &entries,
                        &gz,
                        &tarball,
                        placement,
                        &mut cov_cell.borrow_mut(),
                    )
                    .map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "checked {} files; {} checkpoints with bits != 0; {} file reads starting in such spans; \
         {} multi-span files; {} empty files",
        cov.files_checked,
        cov.bits_checkpoints,
        cov.reads_from_bits_span,
        cov.multi_span_files,
        cov.empty_files
    );
    // The corpus must exercise the hard cases, or this test proves less than it claims.
    assert!(
        cov.bits_checkpoints > 0,
        "no checkpoint with bits != 0 was produced"
    );
    assert!(
        cov.reads_from_bits_span > 0,
        "no file read started in a span with bits != 0"
    );
    assert!(
        cov.multi_span_files > 0,
        "no file straddled a span boundary"
    );
    assert!(cov.empty_files > 0, "no empty file was generated");
}
