//! Untrusted checkpoint blobs: decode never panics; what decodes re-encodes identically (v2).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((zinfo, version)) = ztoc::zinfo::GzipZinfo::decode(data, 10) {
        if version == ztoc::zinfo::ZinfoVersion::V2 {
            assert_eq!(zinfo.encode(), data);
        }
    }
});
