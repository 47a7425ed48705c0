//! Registry answers are untrusted: challenge headers, token bodies, Content-Range, Retry-After,
//! Link headers, manifests and SOCI index manifests must parse or fail, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = registry::auth::parse_challenge(&text);
    let _ = registry::auth::parse_token_response(data);
    let _ = registry::client::parse_content_range(&text);
    let _ = registry::client::parse_link_next(&text);
    let _ = registry::retry::parse_retry_after(&text);
    let _ = oci::manifest::parse(data, "fuzz");
    let _ = oci::soci_index::parse_index_manifest(data, "fuzz");
});
