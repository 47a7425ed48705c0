//! Checkpoint placement: uniform, around files, around read ranges. Each placement must give a
//! zTOC that reads every file back and verifies every span, and the non-uniform ones must cost
//! a reader fewer compressed bytes where they promise to.

use std::io::Cursor;
use std::ops::Range;
use ztoc::*;

mod common;
use common::{gzip, tar_of};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Text that compresses about 3:1, so deflate blocks are many and of realistic size.
fn words(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&[u8]] = &[
        b"import ",
        b"numpy",
        b" as np\n",
        b"def ",
        b"return ",
        b"self",
        b".append(",
        b"value",
        b"):\n",
        b"    ",
        b"lambda ",
        b"Hello",
        b"world",
        b"\n",
    ];
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pick = (state >> 33) as usize;
        if pick % 5 == 0 {
            out.extend_from_slice(format!("{:x}", state >> 40).as_bytes());
        } else {
            out.extend_from_slice(WORDS[pick % WORDS.len()]);
        }
    }
    out.truncate(len);
    out
}

/// Files (name, data), the tar of them, and its gzip.
type Layer = (Vec<(String, Vec<u8>)>, Vec<u8>, Vec<u8>);

/// A gzip layer of `count` files of `size` bytes each, with the tar it compresses.
fn layer(count: usize, size: usize) -> Layer {
    let files: Vec<(String, Vec<u8>)> = (0..count)
        .map(|i| (format!("lib/f{i:04}.py"), words(size, i as u64 + 7)))
        .collect();
    let tarball = tar_of(&files);
    let gz = gzip(&tarball, 6);
    (files, tarball, gz)
}

fn build(gz: &[u8], span_size: u64, placement: Placement) -> Ztoc {
    let opts = BuildOptions {
        span_size,
        placement,
        ..Default::default()
    };
    build_ztoc(Cursor::new(gz), CompressionAlgorithm::Gzip, &opts).unwrap()
}

/// Every file reads back, every span verifies and decodes to the tar bytes it claims, and
/// the zTOC survives encoding.
fn check_all(z: &Ztoc, files: &[(String, Vec<u8>)], tarball: &[u8], gz: &[u8]) {
    assert_eq!(&decode(&encode(z)).unwrap(), z);
    for (name, data) in files {
        let f = z.find_file(name).unwrap();
        assert_eq!(
            &read_file(z, &mut Cursor::new(gz), f).unwrap(),
            data,
            "{name}"
        );
    }
    for span in 0..z.span_count() {
        let c = z.span_compressed_range(span).unwrap();
        let u = z.span_uncompressed_range(span).unwrap();
        let bytes = &gz[c.start as usize..c.end as usize];
        z.verify_span(span, bytes).unwrap();
        let got = extract_range(z, span, bytes, u.clone()).unwrap();
        assert!(
            got == tarball[u.start as usize..u.end as usize],
            "span {span}"
        );
    }
}

/// Compressed bytes a reader fetches (whole spans) to read `range` of the tar stream.
fn cost(z: &Ztoc, range: Range<u64>) -> u64 {
    let (first, last) = z.spans_for_range(&range).unwrap();
    let start = z.span_compressed_range(first).unwrap().start;
    let end = z.span_compressed_range(last).unwrap().end;
    end - start
}

fn data_range(z: &Ztoc, name: &str) -> Range<u64> {
    let f = z.find_file(name).unwrap();
    f.uncompressed_offset..f.uncompressed_offset + f.uncompressed_size
}

fn checkpoint_offsets(z: &Ztoc) -> Vec<u64> {
    let Checkpoints::Gzip(zinfo) = &z.compression.checkpoints else {
        panic!("not gzip");
    };
    zinfo
        .checkpoints
        .iter()
        .map(|c| c.uncompressed_offset)
        .collect()
}

#[test]
fn hot_ranges_cost_a_fraction_of_uniform_spans_anywhere_in_the_layer() {
    let (files, tarball, gz) = layer(300, 24 * KIB as usize);
    let uniform = build(&gz, 2 * MIB, Placement::Uniform);
    check_all(&uniform, &files, &tarball, &gz);
    // Hot ranges: the first file (offset 0 of the data), one in the middle, the last one (the
    // end of the layer's data).
    let hot: Vec<Range<u64>> = ["lib/f0000.py", "lib/f0150.py", "lib/f0299.py"]
        .iter()
        .map(|n| data_range(&uniform, n))
        .collect();
    let ranges: Vec<(u64, u64)> = hot
        .iter()
        .map(|r| (r.start, r.end))
        .chain([(0, 1)])
        .collect();
    let placed = build(
        &gz,
        2 * MIB,
        Placement::around_ranges(&ranges, placement::DEFAULT_MERGE_GAP),
    );
    check_all(&placed, &files, &tarball, &gz);
    for (i, range) in hot.into_iter().enumerate() {
        let (before, after) = (cost(&uniform, range.clone()), cost(&placed, range.clone()));
        // A 24 KiB file compresses to about 8 KiB; around it the placement adds at most a
        // deflate block (~120 KiB of text here) each side, where uniform spans drag in a whole
        // 2 MiB span (~350 kB). The last uniform span is short, and the stream's last block
        // has no boundary after it, so the last file saves less.
        let factor = if i == 2 { 2 } else { 8 };
        assert!(
            after * factor < before,
            "{range:?}: {after} bytes placed vs {before} uniform"
        );
    }
    // Cold regions keep coarse spans: only a handful more checkpoints than uniform.
    let (u, p) = (
        checkpoint_offsets(&uniform).len(),
        checkpoint_offsets(&placed).len(),
    );
    assert!(p <= u + 2 * 3 + 2, "{p} checkpoints placed vs {u} uniform");
}

#[test]
fn close_ranges_share_a_span_and_far_ones_do_not() {
    let (files, tarball, gz) = layer(200, 24 * KIB as usize);
    let uniform = build(&gz, 4 * MIB, Placement::Uniform);
    let a = data_range(&uniform, "lib/f0050.py");
    let b = data_range(&uniform, "lib/f0051.py");
    let far = data_range(&uniform, "lib/f0150.py");
    let ranges = [(a.start, a.end), (b.start, b.end), (far.start, far.end)];
    let placed = build(&gz, 4 * MIB, Placement::around_ranges(&ranges, 64 * KIB));
    check_all(&placed, &files, &tarball, &gz);
    let span_of = |r: &Range<u64>| placed.spans_for_range(r).unwrap();
    assert_eq!(span_of(&a).1, span_of(&b).0, "neighbours share a span");
    assert!(
        span_of(&far).0 > span_of(&b).1,
        "a far range gets its own span"
    );
}

#[test]
fn a_start_at_every_file_gives_spans_of_single_blocks_that_still_verify() {
    let (files, tarball, gz) = layer(120, 24 * KIB as usize);
    let uniform = build(&gz, 4 * MIB, Placement::Uniform);
    let starts: Vec<u64> = uniform
        .toc
        .files
        .iter()
        .map(|f| f.uncompressed_offset)
        .collect();
    let dense = build(
        &gz,
        4 * MIB,
        Placement::Breaks {
            starts,
            ends: Vec::new(),
        },
    );
    check_all(&dense, &files, &tarball, &gz);
    let offsets = checkpoint_offsets(&dense);
    // Each checkpoint is a distinct block boundary, in order.
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    // Blocks hold more than one 24 KiB file here, so many starts share a boundary; still,
    // far more checkpoints than the one uniform span, each span a single deflate block.
    assert!(offsets.len() > 20, "{} checkpoints", offsets.len());
}

#[test]
fn uniform_placement_is_what_the_span_size_alone_gives() {
    let (_, _, gz) = layer(100, 24 * KIB as usize);
    let plain = build_ztoc(
        Cursor::new(&gz),
        CompressionAlgorithm::Gzip,
        &BuildOptions {
            span_size: 512 * KIB,
            ..Default::default()
        },
    )
    .unwrap();
    let empty_breaks = build(
        &gz,
        512 * KIB,
        Placement::Breaks {
            starts: Vec::new(),
            ends: Vec::new(),
        },
    );
    assert_eq!(plain, empty_breaks);
    assert!(checkpoint_offsets(&plain).len() > 1);
}
