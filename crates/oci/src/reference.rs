//! Image references: `oci:<dir>[:<tag>|@<digest>]` for OCI image layouts on disk, and registry
//! references in Docker's grammar (`[host[:port]/]repo[:tag][@digest]`).

use crate::error::{Error, Result};
use oci_spec::image::Digest;
use std::fmt;
use std::path::PathBuf;

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An OCI image layout directory.
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// Tag (`org.opencontainers.image.ref.name`), if given.
        tag: Option<String>,
        /// Manifest digest, if given.
        digest: Option<Digest>,
    },
    /// An image in a registry.
    Registry {
        /// Registry host (with port), e.g. `docker.io`, `127.0.0.1:5000`.
        registry: String,
        /// Repository path, e.g. `library/ubuntu`.
        repository: String,
        /// Tag, if given (`latest` is filled in when neither tag nor digest is given).
        tag: Option<String>,
        /// Digest, if given.
        digest: Option<Digest>,
    },
}

fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn valid_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && part
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
        })
}

impl ImageRef {
    /// Parses a reference.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidReference {
            reference: s.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                return Err(invalid("oci: needs a directory, e.g. oci:./image:latest"));
            }
            let (rest, digest) = match rest.rsplit_once('@') {
                Some((dir, d)) if d.starts_with("sha256:") => (dir, Some(crate::digest::parse(d)?)),
                _ => (rest, None),
            };
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((dir, tag)) if !dir.is_empty() && valid_tag(tag) && digest.is_none() => {
                    (dir, Some(tag.to_owned()))
                }
                _ => (rest, None),
            };
            return Ok(ImageRef::OciLayout {
                dir: PathBuf::from(dir),
                tag,
                digest,
            });
        }
        let (name, digest) = match s.split_once('@') {
            Some((name, d)) => (name, Some(crate::digest::parse(d)?)),
            None => (s, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(invalid(
                        "the tag may use letters, digits, '_', '.', '-' (at most 128)",
                    ));
                }
                (&name[..last_slash + i], Some(tag.to_owned()))
            }
            None => (name, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((host, rest))
                if host.contains('.') || host.contains(':') || host == "localhost" =>
            {
                (host.to_owned(), rest.to_owned())
            }
            _ => ("docker.io".to_owned(), name.to_owned()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !valid_repository(&repository) {
            return Err(invalid(
                "the repository may use lower-case letters, digits and . _ - separated by /",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(ImageRef::Registry {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::OciLayout { dir, tag, digest } => {
                write!(f, "oci:{}", dir.display())?;
                if let Some(tag) = tag {
                    write!(f, ":{tag}")?;
                }
                if let Some(digest) = digest {
                    write!(f, "@{digest}")?;
                }
                Ok(())
            }
            ImageRef::Registry {
                registry,
                repository,
                tag,
                digest,
            } => {
                write!(f, "{registry}/{repository}")?;
                if let Some(tag) = tag {
                    write!(f, ":{tag}")?;
                }
                if let Some(digest) = digest {
                    write!(f, "@{digest}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_layouts() {
        assert_eq!(
            ImageRef::parse("oci:/tmp/img:v1").unwrap(),
            ImageRef::OciLayout {
                dir: "/tmp/img".into(),
                tag: Some("v1".into()),
                digest: None
            }
        );
        assert_eq!(
            ImageRef::parse("oci:img").unwrap(),
            ImageRef::OciLayout {
                dir: "img".into(),
                tag: None,
                digest: None
            }
        );
        // A ':' followed by something that is not a tag belongs to the directory.
        assert_eq!(
            ImageRef::parse("oci:/a:b/c").unwrap(),
            ImageRef::OciLayout {
                dir: "/a:b/c".into(),
                tag: None,
                digest: None
            }
        );
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let r = ImageRef::parse(&format!("oci:img@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("oci:img@{d}"));
        assert!(ImageRef::parse("oci:").is_err());
    }

    #[test]
    fn registry_refs() {
        assert_eq!(
            ImageRef::parse("ubuntu").unwrap().to_string(),
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/app/web:1.2")
                .unwrap()
                .to_string(),
            "127.0.0.1:5000/app/web:1.2"
        );
        assert_eq!(
            ImageRef::parse("localhost/x").unwrap().to_string(),
            "localhost/x:latest"
        );
        assert!(ImageRef::parse("Upper/case").is_err());
        assert!(ImageRef::parse("x:bad tag").is_err());
    }
}
