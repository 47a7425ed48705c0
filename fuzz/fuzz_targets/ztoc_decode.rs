//! Untrusted zTOC bytes: decoding returns a value or an error, and a decoded zTOC's span
//! arithmetic never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(z) = ztoc::decode(data) {
        for span in 0..z.span_count().min(64) {
            let _ = z.span_compressed_range(span);
            let _ = z.span_uncompressed_range(span);
        }
        for f in z.toc.files.iter().take(64) {
            if f.uncompressed_size > 0 {
                let r = f.uncompressed_offset..f.uncompressed_offset + f.uncompressed_size;
                let _ = z.spans_for_range(&r);
            }
        }
        // Re-encoding a decoded zTOC and decoding again gives the same value.
        let again = ztoc::decode(&ztoc::encode(&z)).expect("re-encoded zTOC decodes");
        assert_eq!(again, z);
    }
});
