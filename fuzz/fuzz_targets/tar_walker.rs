//! Untrusted tar streams: the walker and the plain-tar zTOC builder never panic, and every
//! recorded file lies inside the stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    let _ = ztoc::toc::read_toc(Cursor::new(data));
    let options = ztoc::BuildOptions { span_size: 512, ..Default::default() };
    if let Ok(z) = ztoc::build_ztoc(Cursor::new(data), ztoc::CompressionAlgorithm::Uncompressed, &options) {
        for f in &z.toc.files {
            assert!(f.uncompressed_offset + f.uncompressed_size <= data.len() as u64);
            assert!(!f.name.split('/').any(|p| p == ".." || p == "."));
            assert!(!f.name.starts_with('/'));
        }
    }
});
