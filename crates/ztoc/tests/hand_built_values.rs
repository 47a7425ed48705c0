//! A `Ztoc` value built by hand (its fields are public) can break the invariants decoding
//! checks: fewer checkpoints than span digests, a zero span size, a checkpoint with bits and
//! no preceding byte or with more than 7 bits, huge span ids. Every such value gives an
//! error from the span geometry and extraction, never a panic.

use ztoc::*;

mod common;
use common::{gzip, tar_of};

fn gzip_layer() -> (Ztoc, Vec<u8>) {
    let mut x: u32 = 0x1234_5678;
    let data: Vec<u8> = (0..1_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize]
        })
        .collect();
    // Level 6 is flate2's default level.
    let blob = gzip(&tar_of(&[("f", data)]), 6);
    let opts = BuildOptions {
        span_size: 65536,
        ..Default::default()
    };
    let z = build_ztoc(&blob[..], CompressionAlgorithm::Gzip, &opts).unwrap();
    assert!(z.span_count() > 2, "{}", z.span_count());
    (z, blob)
}

#[test]
fn fewer_checkpoints_than_span_digests_is_an_error() {
    let (mut z, blob) = gzip_layer();
    let Checkpoints::Gzip(zinfo) = &mut z.compression.checkpoints else {
        panic!("gzip")
    };
    zinfo.checkpoints.truncate(1);
    let last = z.span_count() - 1;
    assert!(z.span_uncompressed_range(last).is_err());
    assert!(z.span_compressed_range(last).is_err());
    assert!(extract_range(&z, last, &blob, 0..1).is_err());
    let f = z.find_file("f").unwrap().clone();
    assert!(read_file(&z, &mut std::io::Cursor::new(&blob), &f).is_err());
    // Span 0 still works.
    assert!(z.span_uncompressed_range(0).is_ok());
}

#[test]
fn bad_checkpoint_bits_are_errors() {
    let (mut z, blob) = gzip_layer();
    let Checkpoints::Gzip(zinfo) = &mut z.compression.checkpoints else {
        panic!("gzip")
    };
    zinfo.checkpoints[1].bits = 9;
    let r = z.span_uncompressed_range(1).unwrap();
    let c = z.span_compressed_range(1).unwrap();
    let compressed = &blob[c.start as usize..c.end as usize];
    assert!(extract_range(&z, 1, compressed, r.start..r.start + 1).is_err());
    // Bits with no byte before the checkpoint: the span start does not underflow.
    let Checkpoints::Gzip(zinfo) = &mut z.compression.checkpoints else {
        panic!("gzip")
    };
    zinfo.checkpoints[0].bits = 3;
    zinfo.checkpoints[0].compressed_offset = 0;
    assert_eq!(z.span_compressed_range(0).unwrap().start, 0);
}

#[test]
fn span_digests_past_the_end_and_huge_span_ids_are_errors() {
    let (z, _) = gzip_layer();
    assert!(z.verify_span(u64::MAX, b"").is_err());
    assert!(z.span_uncompressed_range(u64::MAX).is_err());
    let plain = Ztoc {
        compression: CompressionInfo {
            checkpoints: Checkpoints::Uncompressed {
                span_size: 0,
                size: 10,
            },
            span_digests: vec![SpanDigest::of(b""); 3],
        },
        uncompressed_archive_size: 10,
        compressed_archive_size: 10,
        ..z.clone()
    };
    // A zero span size divides nothing and multiplies to nothing.
    assert!(plain.span_of(5).is_ok());
    assert!(plain.span_uncompressed_range(2).is_ok());
    let huge = Ztoc {
        compression: CompressionInfo {
            checkpoints: Checkpoints::Uncompressed {
                span_size: u64::MAX,
                size: u64::MAX,
            },
            span_digests: vec![SpanDigest::of(b""); 3],
        },
        ..plain
    };
    assert!(huge.span_uncompressed_range(2).is_err());
}
