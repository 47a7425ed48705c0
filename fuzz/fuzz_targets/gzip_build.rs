//! Untrusted gzip blobs: building a zTOC never panics; when it succeeds, every span decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    let options = ztoc::BuildOptions { span_size: 1024, ..Default::default() };
    if let Ok(z) = ztoc::build_ztoc(Cursor::new(data), ztoc::CompressionAlgorithm::Gzip, &options) {
        for span in 0..z.span_count() {
            let c = z.span_compressed_range(span).expect("span in range");
            let u = z.span_uncompressed_range(span).expect("span in range");
            let bytes = &data[c.start as usize..c.end as usize];
            z.verify_span(span, bytes).expect("span digest");
            ztoc::extract_range(&z, span, bytes, u).expect("span decodes");
        }
    }
});
