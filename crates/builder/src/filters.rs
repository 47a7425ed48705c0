//! The cheap decisions taken on each notification before anything is queued: which events are
//! candidates, which repositories and tags are wanted, and which pushes are the builder's own
//! (so it never loops on what it publishes).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use registry::notifications::Event;

/// Config media types of SOCI index manifests (v1 and v2): a manifest push whose references
/// include one of these is an index the builder (or `soci push`) published.
pub const SOCI_INDEX_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.amazon.soci.index.v1+json",
    "application/vnd.amazon.soci.index.v2+json",
];

/// Why an event is not queued. The labels are fixed so the metric has few series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// Not a push (pull, mount, delete).
    NotPush,
    /// A blob or an artifact media type, not an image manifest or index.
    NotManifest,
    /// A manifest media type left out by `[filters] media_types`.
    MediaType,
    /// Repository not allowed or denied.
    Repository,
    /// Tag not allowed or denied.
    Tag,
    /// Pushed by digest, while v2 mode or a tag allow-list needs a tag.
    NoTag,
    /// One of the builder's own artifacts (referrers tag, v2 tag, SOCI index, a digest it
    /// pushed).
    OwnArtifact,
    /// No registry to talk to: the event has no `request.host` and no endpoint is configured.
    NoHost,
    /// A job for this image is already queued, running, done or skipped.
    Deduplicated,
}

impl IgnoreReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            IgnoreReason::NotPush => "not_push",
            IgnoreReason::NotManifest => "not_manifest",
            IgnoreReason::MediaType => "media_type",
            IgnoreReason::Repository => "repository",
            IgnoreReason::Tag => "tag",
            IgnoreReason::NoTag => "no_tag",
            IgnoreReason::OwnArtifact => "own_artifact",
            IgnoreReason::NoHost => "no_host",
            IgnoreReason::Deduplicated => "deduplicated",
        }
    }
}

/// The v2 destination tag pattern (`{tag}-soci`): a prefix and a suffix around the source tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPattern {
    prefix: String,
    suffix: String,
}

impl TagPattern {
    /// Parses a pattern holding `{tag}` exactly once, with something around it, whose
    /// other characters may appear in a tag.
    pub fn parse(pattern: &str) -> Result<TagPattern, String> {
        let Some((prefix, suffix)) = pattern.split_once("{tag}") else {
            return Err(format!("{pattern:?} must contain {{tag}}"));
        };
        if suffix.contains("{tag}") {
            return Err(format!("{pattern:?} must contain {{tag}} only once"));
        }
        if prefix.is_empty() && suffix.is_empty() {
            return Err(format!(
                "{pattern:?} would overwrite the source tag; add a prefix or suffix"
            ));
        }
        let ok = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        };
        if !ok(prefix) || !ok(suffix) || prefix.starts_with(['.', '-']) {
            return Err(format!(
                "{pattern:?} does not make a valid tag (letters, digits, '_', '.', '-')"
            ));
        }
        Ok(TagPattern {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
        })
    }

    /// True when `tag` could have been written by this pattern.
    pub fn matches(&self, tag: &str) -> bool {
        tag.len() > self.prefix.len() + self.suffix.len()
            && tag.starts_with(&self.prefix)
            && tag.ends_with(&self.suffix)
    }
}

pub use indexer::is_referrers_tag;

/// Compiled intake filters.
#[derive(Debug, Clone)]
pub struct Filters {
    repositories: Option<GlobSet>,
    deny_repositories: GlobSet,
    tags: Option<GlobSet>,
    deny_tags: GlobSet,
    media_types: Vec<String>,
    tag_pattern: TagPattern,
    v2: bool,
}

/// A glob where `*` stays within a path component and `**` crosses them, as in a shell.
fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// Compiles a list of globs; `what` names the key in errors.
fn glob_set(what: &str, patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(glob(p).map_err(|e| format!("{what}: {e}"))?);
    }
    b.build().map_err(|e| format!("{what}: {e}"))
}

/// Compiles one glob pattern (used by `backfill <registry>/<repo-glob>`).
pub fn compile_glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    glob(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| e.to_string())
}

impl Filters {
    /// Compiles the `[filters]` lists. Empty allow-lists allow everything.
    pub fn new(
        repositories: &[String],
        deny_repositories: &[String],
        tags: &[String],
        deny_tags: &[String],
        media_types: &[String],
        tag_pattern: TagPattern,
        v2: bool,
    ) -> Result<Filters, String> {
        let allow = |what: &str, list: &[String]| -> Result<Option<GlobSet>, String> {
            if list.is_empty() {
                Ok(None)
            } else {
                glob_set(what, list).map(Some)
            }
        };
        Ok(Filters {
            repositories: allow("repositories", repositories)?,
            deny_repositories: glob_set("deny_repositories", deny_repositories)?,
            tags: allow("tags", tags)?,
            deny_tags: glob_set("deny_tags", deny_tags)?,
            media_types: media_types.to_vec(),
            tag_pattern,
            v2,
        })
    }

    /// Whether `repository` passes the repository allow and deny lists.
    pub fn repository_allowed(&self, repository: &str) -> bool {
        self.repositories
            .as_ref()
            .is_none_or(|s| s.is_match(repository))
            && !self.deny_repositories.is_match(repository)
    }

    /// Whether a manifest media type is one `[filters] media_types` acts on.
    pub fn media_type_allowed(&self, media_type: &str) -> bool {
        let base = media_type.split(';').next().unwrap_or("").trim();
        self.media_types.iter().any(|m| m == base)
    }

    /// Whether a tag is one the builder itself writes: a referrers tag-schema tag, or (in v2
    /// mode) a tag the destination pattern produces.
    pub fn is_own_tag(&self, tag: &str) -> bool {
        is_referrers_tag(tag) || (self.v2 && self.tag_pattern.matches(tag))
    }

    /// Decides on a tag: `None` when it passes, else why not. `None` tag = pushed by digest.
    /// A manifest pushed by digest passes only in v1 mode without a tag allow-list: with one,
    /// it has no tag to match (the platform manifests of a multi-platform image come this
    /// way, and are indexed through their tagged image index's event).
    pub fn tag_decision(&self, tag: Option<&str>) -> Option<IgnoreReason> {
        match tag {
            None if self.v2 || self.tags.is_some() => Some(IgnoreReason::NoTag),
            None => None,
            Some(t) if self.is_own_tag(t) => Some(IgnoreReason::OwnArtifact),
            Some(t) => {
                let allowed =
                    self.tags.as_ref().is_none_or(|s| s.is_match(t)) && !self.deny_tags.is_match(t);
                (!allowed).then_some(IgnoreReason::Tag)
            }
        }
    }

    /// The intake decision on one event, before the queue is consulted: `None` when it is a
    /// candidate. Own digests recorded in the queue are checked by the caller.
    pub fn decide(&self, event: &Event) -> Option<IgnoreReason> {
        if event.action != "push" {
            return Some(IgnoreReason::NotPush);
        }
        if !event.is_manifest_push() {
            return Some(IgnoreReason::NotManifest);
        }
        if !self.media_type_allowed(&event.target.descriptor.media_type) {
            return Some(IgnoreReason::MediaType);
        }
        if !self.repository_allowed(&event.target.repository) {
            return Some(IgnoreReason::Repository);
        }
        if let Some(r) = self.tag_decision(event.tag()) {
            return Some(r);
        }
        // With `includereferences`, a SOCI index manifest shows its config media type here,
        // before the job that pushed it has even finished.
        if event
            .target
            .references
            .iter()
            .any(|r| SOCI_INDEX_CONFIG_TYPES.contains(&r.media_type.as_str()))
        {
            return Some(IgnoreReason::OwnArtifact);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry::notifications::{Reference, Target};

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn filters(
        repos: &[&str],
        deny: &[&str],
        tags: &[&str],
        deny_tags: &[&str],
        v2: bool,
    ) -> Filters {
        let v = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Filters::new(
            &v(repos),
            &v(deny),
            &v(tags),
            &v(deny_tags),
            &v(&registry::notifications::MANIFEST_MEDIA_TYPES),
            TagPattern::parse("{tag}-soci").unwrap(),
            v2,
        )
        .unwrap()
    }

    fn event(action: &str, media: &str, repo: &str, tag: &str) -> Event {
        Event {
            id: "e".into(),
            timestamp: String::new(),
            action: action.into(),
            target: Target {
                descriptor: Reference {
                    media_type: media.into(),
                    digest: DIGEST.into(),
                    size: 0,
                },
                repository: repo.into(),
                tag: tag.into(),
                ..Default::default()
            },
            request: Default::default(),
        }
    }

    const M: &str = registry::notifications::OCI_MANIFEST;

    #[test]
    fn candidates_and_reasons() {
        let f = filters(
            &["team/*", "base"],
            &["team/secret"],
            &[],
            &["*-dev"],
            false,
        );
        assert_eq!(f.decide(&event("push", M, "team/app", "1.0")), None);
        assert_eq!(
            f.decide(&event("push", M, "base", "")),
            None,
            "v1 allows tagless"
        );
        assert_eq!(
            f.decide(&event("pull", M, "team/app", "1.0")),
            Some(IgnoreReason::NotPush)
        );
        assert_eq!(
            f.decide(&event("push", "application/octet-stream", "team/app", "")),
            Some(IgnoreReason::NotManifest)
        );
        assert_eq!(
            f.decide(&event("push", M, "team/secret", "1.0")),
            Some(IgnoreReason::Repository)
        );
        assert_eq!(
            f.decide(&event("push", M, "team/a/b", "1.0")),
            Some(IgnoreReason::Repository),
            "* stays within a component"
        );
        assert_eq!(
            f.decide(&event("push", M, "other", "1.0")),
            Some(IgnoreReason::Repository)
        );
        assert_eq!(
            f.decide(&event("push", M, "team/app", "1.0-dev")),
            Some(IgnoreReason::Tag)
        );
        let referrers = format!("sha256-{}", &DIGEST[7..]);
        assert_eq!(
            f.decide(&event("push", M, "team/app", &referrers)),
            Some(IgnoreReason::OwnArtifact)
        );
        // v1 mode: a "-soci" tag is not ours.
        assert_eq!(f.decide(&event("push", M, "team/app", "1.0-soci")), None);
        // With a tag allow-list, a manifest pushed by digest has no tag to match.
        let release_tags = filters(&["team/*"], &[], &["v*"], &[], false);
        assert_eq!(
            release_tags.decide(&event("push", M, "team/app", "")),
            Some(IgnoreReason::NoTag)
        );
        assert_eq!(
            release_tags.decide(&event("push", M, "team/app", "v2")),
            None
        );
    }

    #[test]
    fn v2_mode_needs_tags_and_knows_its_own() {
        let f = filters(&["**"], &[], &["1.*", "*-soci"], &[], true);
        assert_eq!(f.decide(&event("push", M, "a/b/c", "1.0")), None);
        assert_eq!(
            f.decide(&event("push", M, "a", "")),
            Some(IgnoreReason::NoTag)
        );
        assert_eq!(
            f.decide(&event("push", M, "a", "1.0-soci")),
            Some(IgnoreReason::OwnArtifact)
        );
        assert_eq!(
            f.decide(&event("push", M, "a", "2.0")),
            Some(IgnoreReason::Tag)
        );
    }

    #[test]
    fn soci_index_references_are_own() {
        let f = filters(&[], &[], &[], &[], false);
        let mut e = event("push", M, "a", "");
        e.target.references.push(Reference {
            media_type: SOCI_INDEX_CONFIG_TYPES[0].into(),
            size: 2,
            digest: DIGEST.into(),
        });
        assert_eq!(f.decide(&e), Some(IgnoreReason::OwnArtifact));
    }

    #[test]
    fn media_type_filter() {
        let f = Filters::new(
            &[],
            &[],
            &[],
            &[],
            &[M.to_owned()],
            TagPattern::parse("{tag}-soci").unwrap(),
            false,
        )
        .unwrap();
        assert_eq!(
            f.decide(&event("push", registry::notifications::OCI_INDEX, "a", "1")),
            Some(IgnoreReason::MediaType)
        );
        assert_eq!(f.decide(&event("push", M, "a", "1")), None);
    }

    #[test]
    fn tag_patterns() {
        let p = TagPattern::parse("{tag}-soci").unwrap();
        assert!(p.matches("1.0-soci"));
        assert!(!p.matches("-soci"));
        assert!(!p.matches("1.0"));
        let p = TagPattern::parse("soci-{tag}").unwrap();
        assert!(p.matches("soci-1.0") && !p.matches("1.0-soci"));
        for bad in ["{tag}", "soci", "{tag}-{tag}", "{tag}/x", "-{tag}"] {
            assert!(TagPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn referrers_tags() {
        assert!(is_referrers_tag(&format!("sha256-{}", "a".repeat(64))));
        assert!(!is_referrers_tag(&format!("sha256-{}", "A".repeat(64))));
        assert!(!is_referrers_tag("sha256-abc"));
        assert!(!is_referrers_tag("latest"));
    }

    #[test]
    fn bad_globs_are_refused_with_their_key() {
        let err = Filters::new(
            &["a[".to_owned()],
            &[],
            &[],
            &[],
            &[],
            TagPattern::parse("{tag}-soci").unwrap(),
            false,
        )
        .unwrap_err();
        assert!(err.starts_with("repositories:"), "{err}");
    }
}
