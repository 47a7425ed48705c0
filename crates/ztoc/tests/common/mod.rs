//! Layer builders shared by the zTOC integration tests.
#![allow(dead_code)]

use std::io::Write;

/// `data` gzip-compressed at `level`.
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A tar of regular files (name, data), mode 0644, fixed mtime.
pub fn tar_of(files: &[(impl AsRef<str>, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name.as_ref(), &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}
