//! Untrusted gzip blobs: building a zTOC never panics; when it succeeds, every span decodes.
//! Each blob is indexed with uniform checkpoints and with dense non-uniform ones (starts and
//! ends every few hundred bytes), so the candidate logic of read-range placement is fuzzed too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;

fuzz_target!(|data: &[u8]| {
    let breaks = ztoc::Placement::Breaks {
        starts: (1..2048).map(|i| i * 700).collect(),
        ends: (1..2048).map(|i| i * 1100).collect(),
    };
    for placement in [ztoc::Placement::Uniform, breaks] {
        let options = ztoc::BuildOptions { span_size: 1024, placement, ..Default::default() };
        let Ok(z) = ztoc::build_ztoc(Cursor::new(data), ztoc::CompressionAlgorithm::Gzip, &options)
        else {
            continue;
        };
        for span in 0..z.span_count() {
            let c = z.span_compressed_range(span).expect("span in range");
            let u = z.span_uncompressed_range(span).expect("span in range");
            let bytes = &data[c.start as usize..c.end as usize];
            z.verify_span(span, bytes).expect("span digest");
            ztoc::extract_range(&z, span, bytes, u).expect("span decodes");
        }
    }
});
