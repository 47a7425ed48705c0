use std::io::{Cursor, Write};
use ztoc::*;

#[test]
fn smoke() {
    let mut b = tar::Builder::new(Vec::new());
    let mut data = Vec::new();
    for i in 0..3_000_000u32 { data.extend_from_slice(&(i.wrapping_mul(2654435761) >> 7).to_le_bytes()[..3]); }
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64); h.set_mode(0o644); h.set_cksum();
    b.append_data(&mut h, "a/big.bin", &data[..]).unwrap();
    let tarball = b.into_inner().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(&tarball).unwrap();
    let gz = enc.finish().unwrap();
    let opts = BuildOptions { span_size: 1 << 20, ..Default::default() };
    let z = build_ztoc(Cursor::new(&gz), CompressionAlgorithm::Gzip, &opts).unwrap();
    eprintln!("spans {} files {:?}", z.span_count(), z.toc.files.iter().map(|f| (&f.name, f.uncompressed_offset, f.uncompressed_size)).collect::<Vec<_>>());
    if let Checkpoints::Gzip(zi) = &z.compression.checkpoints { eprintln!("{:?}", zi.checkpoints); }
    let bytes = encode(&z);
    let z2 = decode(&bytes).unwrap();
    assert_eq!(z, z2);
    let f = z.find_file("a/big.bin").unwrap();
    let got = read_file(&z, &mut Cursor::new(&gz), f).unwrap();
    assert!(got == data);
}
