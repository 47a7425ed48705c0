//! What an image runs: the process part of its config (entrypoint, command, environment,
//! working directory, user), as a container runtime reads it.

use crate::error::{Error, Result};
use oci_spec::image::ImageConfiguration;

/// The process an image's config describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// `Entrypoint` (may be empty).
    pub entrypoint: Vec<String>,
    /// `Cmd`: the arguments after the entrypoint, or the command without one.
    pub cmd: Vec<String>,
    /// `Env`, `NAME=value` each.
    pub env: Vec<String>,
    /// `WorkingDir` (empty: `/`).
    pub working_dir: String,
    /// `User`: `user[:group]`, by name or number (empty: root).
    pub user: String,
}

impl RunConfig {
    /// Parses an image config blob (`what` names it in errors).
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let parsed: ImageConfiguration =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest {
                what: what.to_owned(),
                reason: format!("not an image config: {e}"),
            })?;
        let Some(c) = parsed.config() else {
            return Ok(RunConfig::default());
        };
        Ok(RunConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
        })
    }

    /// The command line a runtime starts: `args` when given (they replace `Cmd`, after the
    /// entrypoint, as `docker run IMAGE ARGS` does), else entrypoint then cmd.
    pub fn command(&self, args: &[String]) -> Vec<String> {
        let tail = if args.is_empty() { &self.cmd } else { args };
        self.entrypoint.iter().chain(tail).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
        "config":{"Entrypoint":["/usr/bin/python3"],"Cmd":["-c","print(1)"],
        "Env":["PATH=/usr/bin"],"WorkingDir":"/app","User":"1000:1000"}}"#;

    #[test]
    fn reads_the_process_of_a_config() {
        let c = RunConfig::parse(CONFIG.as_bytes(), "config").expect("parse");
        assert_eq!(c.entrypoint, ["/usr/bin/python3"]);
        assert_eq!(c.env, ["PATH=/usr/bin"]);
        assert_eq!(c.working_dir, "/app");
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.command(&[]), ["/usr/bin/python3", "-c", "print(1)"]);
        let args = ["-V".to_owned()];
        assert_eq!(c.command(&args), ["/usr/bin/python3", "-V"]);
    }

    #[test]
    fn a_config_without_a_process_runs_nothing_and_garbage_is_an_error() {
        let bare =
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = RunConfig::parse(bare.as_bytes(), "config").expect("parse");
        assert!(c.command(&[]).is_empty());
        assert!(RunConfig::parse(b"{", "config").is_err());
    }
}
