//! Multi-member gzip, plain tar layers, and bad input: each gives a correct result or a clear
//! error, never wrong offsets.

use std::io::Cursor;
use ztoc::*;

mod common;
use common::{gzip, tar_of};

fn text(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| b"abcdefghij klmnop\n"[((i.wrapping_mul(seed) >> 3) % 18) as usize])
        .collect()
}

fn opts(span: u64) -> BuildOptions {
    BuildOptions {
        span_size: span,
        ..Default::default()
    }
}

/// Builds a zTOC of a gzip blob with spans of `span` bytes.
fn build_gzip(blob: &[u8], span: u64) -> Result<Ztoc, Error> {
    build_ztoc(Cursor::new(blob), CompressionAlgorithm::Gzip, &opts(span))
}

/// Builds a zTOC of an uncompressed tar with spans of `span` bytes.
fn build_tar(tarball: &[u8], span: u64) -> Result<Ztoc, Error> {
    build_ztoc(
        Cursor::new(tarball),
        CompressionAlgorithm::Uncompressed,
        &opts(span),
    )
}

/// A gzip layer of one 200 kB text file, for the bad-input tests to damage.
fn one_file_gzip() -> Vec<u8> {
    gzip(&tar_of(&[("f", text(200_000, 3))]), 6)
}

fn read_all_files(z: &Ztoc, blob: &[u8], files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        let f = z
            .find_file(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let got = read_file(z, &mut Cursor::new(blob), f).unwrap();
        assert!(&got == data, "{name} differs");
    }
}

#[test]
fn concatenated_gzip_members_are_indexed_whole() {
    let files = vec![
        ("one", text(300_000, 7)),
        ("two", text(500_000, 13)),
        ("three", text(200_000, 29)),
    ];
    let tarball = tar_of(&files);
    // Split the tar at an arbitrary point inside a file and compress the parts separately.
    let cut = 400_123;
    let mut blob = gzip(&tarball[..cut], 6);
    blob.extend(gzip(&tarball[cut..], 1));
    let z = build_gzip(&blob, 64 * 1024).unwrap();
    assert_eq!(z.uncompressed_archive_size, tarball.len() as u64);
    assert_eq!(z.compressed_archive_size, blob.len() as u64);
    read_all_files(&z, &blob, &files);
    // Every span, including the one crossing the member boundary, decodes correctly.
    for span in 0..z.span_count() {
        let c = z.span_compressed_range(span).unwrap();
        let u = z.span_uncompressed_range(span).unwrap();
        let got =
            extract_range(&z, span, &blob[c.start as usize..c.end as usize], u.clone()).unwrap();
        assert!(
            got == tarball[u.start as usize..u.end as usize],
            "span {span}"
        );
    }
}

/// Every span of `z` inflated piece by piece (`chunk` bytes at a time) is the span's bytes of
/// `tarball`, in pieces of exactly `chunk` bytes but the last.
fn spans_inflate_in_pieces(z: &Ztoc, blob: &[u8], tarball: &[u8], chunk: usize) {
    for span in 0..z.span_count() {
        let c = z.span_compressed_range(span).unwrap();
        let u = z.span_uncompressed_range(span).unwrap();
        let mut pieces = Vec::new();
        inflate_span(
            z,
            span,
            &blob[c.start as usize..c.end as usize],
            chunk,
            |p| pieces.push(p),
        )
        .unwrap();
        let (last, full) = pieces.split_last().unwrap();
        assert!(full.iter().all(|p| p.len() == chunk), "span {span}");
        assert!(!last.is_empty() && last.len() <= chunk, "span {span}");
        assert!(
            pieces.concat() == tarball[u.start as usize..u.end as usize],
            "span {span} with pieces of {chunk}"
        );
    }
}

#[test]
fn spans_inflate_piece_by_piece_across_members_and_in_plain_tars() {
    let files = vec![("one", text(300_000, 7)), ("two", text(500_000, 13))];
    let tarball = tar_of(&files);
    let cut = 400_123;
    let mut blob = gzip(&tarball[..cut], 6);
    blob.extend(gzip(&tarball[cut..], 1));
    let z = build_gzip(&blob, 64 * 1024).unwrap();
    for chunk in [1, 4096, 100_003, 1 << 20] {
        spans_inflate_in_pieces(&z, &blob, &tarball, chunk);
    }
    let z = build_tar(&tarball, 64 * 1024).unwrap();
    spans_inflate_in_pieces(&z, &tarball, &tarball, 10_000);
    // Too few compressed bytes is an error, not a short span.
    let c = build_gzip(&blob, 64 * 1024).unwrap();
    let r = c.span_compressed_range(1).unwrap();
    let short = &blob[r.start as usize..(r.end as usize - 100).max(r.start as usize + 1)];
    assert!(inflate_span(&c, 1, short, 4096, |_| {}).is_err());
}

#[test]
fn trailing_zero_padding_is_accepted_and_garbage_is_not() {
    let files = vec![("f", text(100_000, 3))];
    let mut blob = gzip(&tar_of(&files), 6);
    blob.extend([0u8; 1000]);
    let z = build_gzip(&blob, 1 << 22).unwrap();
    assert_eq!(z.compressed_archive_size, blob.len() as u64);
    read_all_files(&z, &blob, &files);
    // The last span's digest covers the padding too.
    let last = z.span_count() - 1;
    let c = z.span_compressed_range(last).unwrap();
    z.verify_span(last, &blob[c.start as usize..]).unwrap();

    blob.extend(b"garbage");
    let err = build_gzip(&blob, 1 << 22).unwrap_err();
    assert!(matches!(err, Error::TrailingGarbage { .. }), "{err}");
}

#[test]
fn plain_tar_layers_use_fixed_spans() {
    let files = vec![
        ("a", text(250_000, 5)),
        ("b", Vec::new()),
        ("c", text(90_000, 11)),
    ];
    let tarball = tar_of(&files);
    let z = build_tar(&tarball, 64 * 1024).unwrap();
    assert_eq!(
        z.compression.algorithm(),
        CompressionAlgorithm::Uncompressed
    );
    assert_eq!(z.span_count(), (tarball.len() as u64).div_ceil(64 * 1024));
    let back = decode(&encode(&z)).unwrap();
    assert_eq!(back, z);
    read_all_files(&z, &tarball, &files);
}

#[test]
fn truncated_gzip_is_an_error() {
    let blob = one_file_gzip();
    for cut in [5, 20, blob.len() / 2, blob.len() - 4] {
        let err = build_gzip(&blob[..cut], 1 << 16).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TruncatedGzip { .. } | Error::TarEntryPastEnd { .. } | Error::Tar { .. }
            ),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn corrupt_gzip_is_an_error() {
    let mut blob = one_file_gzip();
    let mid = blob.len() / 2;
    for b in &mut blob[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let err = build_gzip(&blob, 1 << 16).unwrap_err();
    // Depending on what the flipped bits decode to, inflate fails outright or runs past
    // the end of the blob; either way the build fails.
    assert!(
        matches!(
            err,
            Error::CorruptGzip { .. } | Error::TruncatedGzip { .. } | Error::Tar { .. }
        ),
        "{err}"
    );
}

#[test]
fn gzip_checksum_mismatch_is_an_error() {
    let mut blob = one_file_gzip();
    let crc_at = blob.len() - 8;
    blob[crc_at] ^= 1;
    let err = build_gzip(&blob, 1 << 16).unwrap_err();
    assert!(matches!(err, Error::CorruptGzip { .. }), "{err}");
}

#[test]
fn zstd_declared_as_gzip_says_so() {
    let blob = [0x28u8, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
    let err = build_gzip(&blob, 1 << 16).unwrap_err();
    assert!(err.to_string().contains("zstd"), "{err}");
}

#[test]
fn size_past_end_of_stream_is_an_error_naming_the_file() {
    let mut tarball = tar_of(&[("big", text(10_000, 3))]);
    // Claim 1 MiB in the header (octal), fix the checksum, and cut the stream after the data.
    let mut h = tar::Header::from_byte_slice(&tarball[..512]).clone();
    h.set_size(1 << 20);
    h.set_cksum();
    tarball[..512].copy_from_slice(h.as_bytes());
    for algorithm in [
        CompressionAlgorithm::Uncompressed,
        CompressionAlgorithm::Gzip,
    ] {
        let blob = match algorithm {
            CompressionAlgorithm::Gzip => gzip(&tarball, 6),
            CompressionAlgorithm::Uncompressed => tarball.clone(),
        };
        let err = build_ztoc(Cursor::new(&blob), algorithm, &opts(1 << 16)).unwrap_err();
        assert!(
            matches!(err, Error::TarEntryPastEnd { ref name, .. } if name == "big"),
            "{err}"
        );
    }
}

#[test]
fn gnu_sparse_entries_are_refused_by_name() {
    let mut tarball = tar_of(&[("holes", text(1024, 3))]);
    let mut h = tar::Header::from_byte_slice(&tarball[..512]).clone();
    h.set_entry_type(tar::EntryType::GNUSparse);
    // A well-formed sparse map: 1024 data bytes at offset 0 of a 1 MiB file.
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_real_size(1 << 20);
    gnu.sparse[0].set_offset(0);
    gnu.sparse[0].set_length(1024);
    gnu.sparse[1].set_offset(1 << 20);
    gnu.sparse[1].set_length(0);
    h.set_cksum();
    tarball[..512].copy_from_slice(h.as_bytes());
    let err = build_tar(&tarball, 1 << 16).unwrap_err();
    assert!(
        matches!(err, Error::SparseEntry { ref name } if name == "holes"),
        "{err}"
    );
}

#[test]
fn pax_sparse_entries_are_refused_by_name() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([
        ("GNU.sparse.major", &b"1"[..]),
        ("GNU.sparse.minor", &b"0"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "GNUSparseFile.0/holes", &b"abc"[..])
        .unwrap();
    let tarball = b.into_inner().unwrap();
    let err = build_tar(&tarball, 1 << 16).unwrap_err();
    assert!(matches!(err, Error::SparseEntry { .. }), "{err}");
}

#[test]
fn dangerous_names_are_normalized() {
    let mut tarball = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tarball);
        for name in ["./ok", "x"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &b"1"[..]).unwrap();
        }
        b.finish().unwrap();
    }
    // The tar builder refuses such names, so write them into the header by hand.
    let second = 1024;
    for (at, name) in [
        (0usize, &b"/abs/../../etc/passwd"[..]),
        (second, &b"../../escape"[..]),
    ] {
        let mut h = tar::Header::from_byte_slice(&tarball[at..at + 512]).clone();
        h.as_old_mut().name = [0; 100];
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        tarball[at..at + 512].copy_from_slice(h.as_bytes());
    }
    let z = build_tar(&tarball, 1 << 16).unwrap();
    let names: Vec<_> = z.toc.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["etc/passwd", "escape"]);
}

#[test]
fn span_digest_mismatch_is_detected() {
    // Stored (level 0) deflate blocks, so the blob is as long as the tar and has many spans.
    let files = vec![("f", text(300_000, 7))];
    let blob = gzip(&tar_of(&files), 0);
    let z = build_gzip(&blob, 1 << 14).unwrap();
    assert!(z.span_count() > 2);
    let mut bad = blob.clone();
    let c = z.span_compressed_range(1).unwrap();
    bad[(c.start + 5) as usize] ^= 1;
    let f = z.find_file("f").unwrap();
    let err = read_file(&z, &mut Cursor::new(&bad), f).unwrap_err();
    assert!(
        matches!(err, Error::SpanDigestMismatch { span: 1, .. }),
        "{err}"
    );
}

#[test]
fn corrupt_ztocs_are_rejected_without_panicking() {
    let blob = gzip(&tar_of(&[("f", text(100_000, 3))]), 6);
    let z = build_gzip(&blob, 1 << 15).unwrap();
    let bytes = encode(&z);
    assert!(decode(&bytes[..bytes.len() / 2]).is_err());
    assert!(decode(b"").is_err());
    // Flip bytes one at a time across the buffer: every outcome is Ok or Err, never a panic.
    for i in (0..bytes.len()).step_by(97) {
        let mut copy = bytes.clone();
        copy[i] ^= 0xff;
        let _ = decode(&copy);
    }
}

#[test]
fn tar_without_end_padding_or_marker_is_accepted_like_go_does() {
    // Some tools write layers that stop right after the last file's data: no padding to 512,
    // no end-of-archive blocks. Go's archive/tar (containerd, AWS's soci) reads them.
    let files = [("a", text(3000, 7)), ("last", text(10_000, 5))];
    let full = tar_of(&files);
    let cut = 512 + 3072 + 512 + 10_000; // header, padded data, header, unpadded data
    let tarball = full[..cut].to_vec();
    for algorithm in [
        CompressionAlgorithm::Uncompressed,
        CompressionAlgorithm::Gzip,
    ] {
        let blob = match algorithm {
            CompressionAlgorithm::Gzip => gzip(&tarball, 6),
            CompressionAlgorithm::Uncompressed => tarball.clone(),
        };
        let z = build_ztoc(Cursor::new(&blob), algorithm, &opts(1 << 12)).unwrap();
        assert_eq!(z.toc.files.len(), 2);
        read_all_files(&z, &blob, &files);
    }
    // One byte less and the last file really is short: still an error.
    let short = full[..cut - 1].to_vec();
    let err = build_tar(&short, 1 << 12).unwrap_err();
    assert!(
        matches!(err, Error::TarEntryPastEnd { ref name, .. } if name == "last"),
        "{err}"
    );
}
