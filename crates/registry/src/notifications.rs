//! CNCF distribution registry notifications (the registry's `notifications.endpoints` webhook):
//! the JSON envelope `{"events": [...]}` it POSTs, parsed and validated without panicking.
//!
//! The shapes follow distribution 2.8 (`notifications/event.go`): each event has an `id`, a
//! `timestamp`, an `action` (`push`, `pull`, `mount`, `delete`), a `target` (the manifest or blob
//! concerned) and the `request` that caused it. Fields we do not use (`actor`, `source`, newer
//! additions) are ignored, so envelopes from newer registries keep parsing.
//!
//! Validation is limited to what a consumer acts on: the events that name a manifest push must
//! carry a well-formed `sha256:` digest, repository name and (when present) tag, because those
//! become registry requests. Other events (blob pushes, pulls) are kept as sent: a strict check
//! on them would make the registry retry, and block, an envelope nobody cares about.

use serde::{Deserialize, Serialize};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The media types of image manifests and image indexes (what can be indexed).
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// Largest repository name distribution accepts (`reference.NameTotalLengthMax`).
pub const MAX_REPOSITORY_LEN: usize = 255;

/// What the registry POSTs: one or more events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The events, in the order the registry queued them.
    pub events: Vec<Event>,
}

/// One registry event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id of the event (a UUID for distribution).
    #[serde(default)]
    pub id: String,
    /// When it happened (RFC 3339), as the registry wrote it.
    #[serde(default)]
    pub timestamp: String,
    /// `push`, `pull`, `mount` or `delete`.
    pub action: String,
    /// The object concerned.
    #[serde(default)]
    pub target: Target,
    /// The request that caused the event.
    #[serde(default)]
    pub request: RequestRecord,
}

/// The object an event is about (distribution's `Event.Target`, which embeds a descriptor).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Media type, size and digest of the manifest or blob.
    #[serde(flatten)]
    pub descriptor: Reference,
    /// Same as `size` (kept by distribution for compatibility).
    #[serde(default)]
    pub length: u64,
    /// Repository name.
    #[serde(default)]
    pub repository: String,
    /// URL of the content on the registry.
    #[serde(default)]
    pub url: String,
    /// Tag of a manifest pushed or pulled by tag; empty otherwise.
    #[serde(default)]
    pub tag: String,
    /// Descriptors the manifest references (config and layers, or an index's manifests),
    /// sent only with the registry's `notifications.events.includereferences: true`.
    #[serde(default)]
    pub references: Vec<Reference>,
}

/// A descriptor as distribution sends it: the target's own, or one listed in
/// [`Target::references`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
    /// Digest.
    #[serde(default)]
    pub digest: String,
}

/// The request behind an event (distribution's `RequestRecord`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Request id.
    #[serde(default)]
    pub id: String,
    /// Client address.
    #[serde(default)]
    pub addr: String,
    /// `Host` the client used to reach the registry (`host[:port]`).
    #[serde(default)]
    pub host: String,
    /// HTTP method.
    #[serde(default)]
    pub method: String,
    /// Client's user agent.
    #[serde(default)]
    pub useragent: String,
}

impl Event {
    /// True for a push of an image manifest or index (the events an index builder acts on).
    pub fn is_manifest_push(&self) -> bool {
        self.action == "push" && is_manifest_media_type(&self.target.descriptor.media_type)
    }

    /// The tag, if the manifest was pushed by tag.
    pub fn tag(&self) -> Option<&str> {
        Some(self.target.tag.as_str()).filter(|t| !t.is_empty())
    }
}

/// True for the media types of image manifests and indexes ([`MANIFEST_MEDIA_TYPES`]),
/// ignoring parameters such as `; charset=utf-8`.
pub fn is_manifest_media_type(media_type: &str) -> bool {
    let base = media_type.split(';').next().unwrap_or("").trim();
    MANIFEST_MEDIA_TYPES.contains(&base)
}

/// Why an envelope was refused; the text is meant for a 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not the JSON of an envelope.
    #[error("not a notification envelope: {0}")]
    Json(String),
    /// An event the builder would act on has a bad field.
    #[error("event {index} (id {id:?}): {field} {reason}")]
    Invalid {
        /// Position of the event in `events`.
        index: usize,
        /// Its id.
        id: String,
        /// The field, e.g. `target.digest`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses and validates an envelope. Never panics, whatever the bytes.
///
/// Every event needs an `action`; manifest push events (see [`Event::is_manifest_push`]) also
/// need a valid `target.digest` (`sha256:` + 64 lower-case hex), `target.repository`
/// (distribution's name grammar) and, when set, `target.tag` and `request.host`.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, ParseError> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    for (index, event) in envelope.events.iter().enumerate() {
        let invalid = |field: &'static str, reason: String| ParseError::Invalid {
            index,
            id: event.id.clone(),
            field,
            reason,
        };
        if event.action.is_empty() {
            return Err(invalid("action", "is empty".to_owned()));
        }
        if !event.is_manifest_push() {
            continue;
        }
        let t = &event.target;
        if t.descriptor.digest.is_empty() {
            return Err(invalid("target.digest", "is missing".to_owned()));
        }
        if oci::digest::parse(&t.descriptor.digest).is_err() {
            return Err(invalid(
                "target.digest",
                format!(
                    "{:?} is not sha256:<64 lower-case hex>",
                    clip(&t.descriptor.digest)
                ),
            ));
        }
        if t.repository.is_empty() {
            return Err(invalid("target.repository", "is missing".to_owned()));
        }
        if let Err(why) = check_repository(&t.repository) {
            return Err(invalid(
                "target.repository",
                format!("{:?} {why}", clip(&t.repository)),
            ));
        }
        if !t.tag.is_empty() && !valid_tag(&t.tag) {
            return Err(invalid(
                "target.tag",
                format!(
                    "{:?} is not a tag (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')",
                    clip(&t.tag)
                ),
            ));
        }
        if !event.request.host.is_empty() && !valid_host(&event.request.host) {
            return Err(invalid(
                "request.host",
                format!("{:?} is not host[:port]", clip(&event.request.host)),
            ));
        }
    }
    Ok(envelope)
}

/// At most 80 characters of an untrusted value, for messages.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Checks a repository name against distribution's grammar: components of lower-case
/// letters and digits separated by `.`, `_`, `__` or dashes, joined by `/`, at most
/// [`MAX_REPOSITORY_LEN`] characters. Returns why it is not one.
pub fn check_repository(name: &str) -> Result<(), String> {
    if name.len() > MAX_REPOSITORY_LEN {
        return Err(format!("is longer than {MAX_REPOSITORY_LEN} characters"));
    }
    for component in name.split('/') {
        if !valid_component(component) {
            return Err(
                "is not a repository name (lower-case letters and digits, separated by '.', '_', '__' or '-', components joined by '/')"
                    .to_owned(),
            );
        }
    }
    Ok(())
}

/// One path component: `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or any number of '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// `host[:port]` as it may appear in a `Host` header: a DNS name, an IPv4 address or a
/// bracketed IPv6 address, with an optional numeric port. Nothing that could change the URL
/// built from it (no `/`, `@`, `?`, `#`, spaces).
pub fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 261 {
        return false;
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn push(repo: &str, digest: &str, tag: &str) -> String {
        format!(
            r#"{{"events":[{{"id":"e1","timestamp":"2024-01-01T00:00:00Z","action":"push",
            "target":{{"mediaType":"{OCI_MANIFEST}","size":10,"digest":"{digest}","length":10,
            "repository":"{repo}","url":"http://x/v2/{repo}/manifests/{digest}","tag":"{tag}"}},
            "request":{{"id":"r","addr":"127.0.0.1:1","host":"127.0.0.1:5000","method":"PUT","useragent":"skopeo"}},
            "actor":{{}},"source":{{"addr":"h:5000","instanceID":"i"}},"futureField":1}}]}}"#
        )
    }

    #[test]
    fn parses_envelopes_captured_from_distribution_2_8() {
        let push = include_bytes!(
            "../../../fuzz/seeds/notification_envelope/distribution-2.8-manifest-push.json"
        );
        let env = parse_envelope(push).unwrap();
        let e = &env.events[0];
        assert!(e.is_manifest_push());
        assert_eq!(
            (e.target.repository.as_str(), e.tag()),
            ("team/app", Some("1.0"))
        );
        assert_eq!(e.target.references.len(), 2);
        let blob = include_bytes!(
            "../../../fuzz/seeds/notification_envelope/distribution-2.8-blob-push.json"
        );
        assert!(!parse_envelope(blob).unwrap().events[0].is_manifest_push());
        let index = include_bytes!(
            "../../../fuzz/seeds/notification_envelope/distribution-2.8-soci-index-push.json"
        );
        let env = parse_envelope(index).unwrap();
        assert_eq!(env.events[0].tag(), None);
        assert_eq!(
            env.events[0].target.references[0].media_type,
            "application/vnd.amazon.soci.index.v1+json"
        );
    }

    #[test]
    fn parses_a_push() {
        let env = parse_envelope(push("team/app", DIGEST, "1.0").as_bytes()).unwrap();
        let e = &env.events[0];
        assert!(e.is_manifest_push());
        assert_eq!(e.tag(), Some("1.0"));
        assert_eq!(e.target.repository, "team/app");
        assert_eq!(e.request.host, "127.0.0.1:5000");
    }

    #[test]
    fn refuses_bad_fields_of_manifest_pushes() {
        for (repo, digest, tag, field) in [
            ("Team/app", DIGEST, "", "target.repository"),
            ("team//app", DIGEST, "", "target.repository"),
            ("team/app-", DIGEST, "", "target.repository"),
            ("", DIGEST, "", "target.repository"),
            ("team/app", "sha256:abc", "", "target.digest"),
            ("team/app", "", "", "target.digest"),
            ("team/app", DIGEST, ".x", "target.tag"),
        ] {
            match parse_envelope(push(repo, digest, tag).as_bytes()) {
                Err(ParseError::Invalid { field: f, .. }) => {
                    assert_eq!(f, field, "{repo} {digest} {tag}")
                }
                other => panic!("{repo} {digest} {tag}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_events_are_kept_loosely() {
        let body = r#"{"events":[{"action":"pull","target":{"mediaType":"application/octet-stream","digest":"md5:x","repository":"Whatever"}}]}"#;
        let env = parse_envelope(body.as_bytes()).unwrap();
        assert!(!env.events[0].is_manifest_push());
    }

    #[test]
    fn refuses_non_envelopes() {
        for body in [
            "",
            "{}",
            "[]",
            "{\"events\":{}}",
            "{\"events\":[{}]}",
            "nope",
        ] {
            assert!(parse_envelope(body.as_bytes()).is_err(), "{body}");
        }
        assert!(matches!(
            parse_envelope(br#"{"events":[{"action":""}]}"#),
            Err(ParseError::Invalid {
                field: "action",
                ..
            })
        ));
    }

    #[test]
    fn repository_grammar() {
        for ok in ["a", "a/b", "a__b", "a--b", "a.b_c", "0x/y-z"] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "A",
            "a/",
            "/a",
            "a___b",
            "a..b",
            "a._b",
            "-a",
            "a b",
            &"a".repeat(256),
        ] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "127.0.0.1:5000",
            "registry.example.com",
            "localhost",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "", "a/b", "a@b", "a:b", "a:", "a b", "[::1", "[zz]", "a:123456", "-a.b",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn media_type_parameters_are_ignored() {
        assert!(is_manifest_media_type(
            "application/vnd.oci.image.index.v1+json; charset=utf-8"
        ));
        assert!(!is_manifest_media_type("application/octet-stream"));
    }
}
