//! Untrusted lean zTOC bytes (`ztoc::lean`): decoding returns a value or an error, never a
//! panic, and a decoded one's windows and spans are only ever looked up within bounds. The
//! input is gzipped here first, so libFuzzer explores the layout inside the gzip stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let _ = ztoc::lean::decode_lean(data, ztoc::lean::MAX_ZTOC_BYTES);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if gz.write_all(data).is_err() {
        return;
    }
    let Ok(bytes) = gz.finish() else { return };
    if let Ok(lean) = ztoc::lean::decode_lean(&bytes, ztoc::lean::MAX_ZTOC_BYTES) {
        let z = &lean.ztoc;
        for span in 0..z.span_count().min(64) + 1 {
            let _ = z.span_compressed_range(span);
            let _ = z.span_uncompressed_range(span);
            if let Some(r) = lean.windows.range(span) {
                assert!(r.end <= lean.windows.ztoc_size + ztoc::WINDOW_SIZE as u64);
            }
            let _ = lean.windows.verify(span, &[0; ztoc::WINDOW_SIZE]);
        }
    }
});
