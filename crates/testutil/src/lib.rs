//! Test harness for soci-rs (filled in by the harness work).
