//! Registry notification envelopes reach the index builder from the network: parsing and
//! validating them must succeed or fail, never panic, and whatever passes must be safe to act
//! on (the fields that become registry requests are well-formed).
#![no_main]
use libfuzzer_sys::fuzz_target;
use registry::notifications;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = notifications::parse_envelope(data) {
        for event in envelope.events.iter().filter(|e| e.is_manifest_push()) {
            assert!(oci::digest::parse(&event.target.descriptor.digest).is_ok());
            assert!(notifications::check_repository(&event.target.repository).is_ok());
            assert!(event.tag().is_none_or(notifications::valid_tag));
            assert!(event.request.host.is_empty() || notifications::valid_host(&event.request.host));
        }
    }
});
