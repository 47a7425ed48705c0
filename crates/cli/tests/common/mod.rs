//! Helpers shared by the `soci` end-to-end tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `soci` binary with `--root ROOT`, isolated from the machine's credentials
/// (`SOCI_USER` unset, `DOCKER_CONFIG` pointing inside the root).
pub fn soci(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_soci"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("SOCI_USER")
        .env("DOCKER_CONFIG", root.join("no-docker-config"))
        .output()
        .unwrap()
}

/// Asserts success and returns standard output.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts failure and returns standard error.
#[allow(dead_code)] // not every test binary checks failures
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
