//! containerd's filter syntax for `List` (Walk), the part snapshotters need:
//! `field==value`, `field!=value` and presence (`field`), joined by `,` (and); several filter
//! strings are alternatives (or). Fields are `name`, `parent`, `kind` and `labels.<key>`, where
//! the key may be quoted (`labels."containerd.io/snapshot.ref"`); values may be quoted.
//!
//! containerd uses `labels."containerd.io/snapshot.ref"==<chain id>,parent==<parent>` to find
//! the snapshot a remote snapshotter made; it checks the result again itself, so a filter we
//! cannot parse (e.g. a regular expression, `~=`) matches everything rather than failing.

use crate::metadata::{Kind, Snapshot};

/// One `field op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    field: Field,
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Name,
    Parent,
    Kind,
    Label(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
}

/// A parsed list of filters (alternatives of conjunctions); empty matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    alternatives: Vec<Vec<Term>>,
}

impl Filters {
    /// Parses `filters`; any string that does not parse makes the whole list match everything
    /// (logged by the caller through the returned message).
    pub fn parse(filters: &[String]) -> (Filters, Option<String>) {
        let mut alternatives = Vec::new();
        for f in filters {
            if f.trim().is_empty() {
                continue;
            }
            match parse_conjunction(f) {
                Ok(terms) => alternatives.push(terms),
                Err(e) => {
                    return (
                        Filters::default(),
                        Some(format!(
                            "filter {f:?} not understood ({e}); listing everything"
                        )),
                    )
                }
            }
        }
        (Filters { alternatives }, None)
    }

    /// Whether the snapshot called `name` matches.
    pub fn matches(&self, name: &str, s: &Snapshot) -> bool {
        self.alternatives.is_empty()
            || self
                .alternatives
                .iter()
                .any(|terms| terms.iter().all(|t| t.matches(name, s)))
    }
}

impl Term {
    fn matches(&self, name: &str, s: &Snapshot) -> bool {
        let kind = match s.kind {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        };
        let value: Option<&str> = match &self.field {
            Field::Name => Some(name),
            Field::Parent => Some(&s.parent),
            Field::Kind => Some(kind),
            Field::Label(k) => s.labels.get(k).map(String::as_str),
        };
        match &self.op {
            Op::Present => value.is_some_and(|v| !v.is_empty()),
            Op::Equal(want) => value.unwrap_or("") == want,
            Op::NotEqual(want) => value.unwrap_or("") != want,
        }
    }
}

fn parse_conjunction(s: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    let mut rest = s.trim();
    loop {
        let (term, after) = parse_term(rest)?;
        terms.push(term);
        let after = after.trim_start();
        if after.is_empty() {
            return Ok(terms);
        }
        rest = after
            .strip_prefix(',')
            .ok_or_else(|| format!("expected ',' at {after:?}"))?
            .trim_start();
    }
}

fn parse_term(s: &str) -> Result<(Term, &str), String> {
    let (first, mut rest) = parse_word(s)?;
    let field = match first.as_str() {
        "name" => Field::Name,
        "parent" => Field::Parent,
        "kind" => Field::Kind,
        "labels" => {
            rest = rest
                .strip_prefix('.')
                .ok_or("labels needs a key: labels.<key>")?;
            let (key, after) = parse_word(rest)?;
            rest = after;
            Field::Label(key)
        }
        other => return Err(format!("unknown field {other:?}")),
    };
    let rest = rest.trim_start();
    let (op, rest) = if let Some(r) = rest.strip_prefix("==") {
        let (v, r) = parse_value(r.trim_start())?;
        (Op::Equal(v), r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        let (v, r) = parse_value(r.trim_start())?;
        (Op::NotEqual(v), r)
    } else if rest.is_empty() || rest.starts_with(',') {
        (Op::Present, rest)
    } else {
        return Err(format!("unsupported operator at {rest:?}"));
    };
    Ok((Term { field, op }, rest))
}

/// A field path component: a quoted string or a run of characters up to `.`, an operator, `,`
/// or space.
fn parse_word(s: &str) -> Result<(String, &str), String> {
    if s.starts_with('"') {
        return parse_quoted(s);
    }
    let end = s.find(['.', '=', '!', '~', ',', ' ']).unwrap_or(s.len());
    if end == 0 {
        return Err(format!("expected a field at {s:?}"));
    }
    Ok((s[..end].to_owned(), &s[end..]))
}

/// A value: quoted, or everything up to the next `,`.
fn parse_value(s: &str) -> Result<(String, &str), String> {
    if s.starts_with('"') {
        return parse_quoted(s);
    }
    let end = s.find(',').unwrap_or(s.len());
    Ok((s[..end].trim_end().to_owned(), &s[end..]))
}

/// A double-quoted string with backslash escapes.
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e)) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(format!("unterminated quote in {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    fn snap(parent: &str, kind: Kind, labels: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            id: 1,
            kind,
            parent: parent.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            created: SystemTime::UNIX_EPOCH,
            updated: SystemTime::UNIX_EPOCH,
            remote: None,
        }
    }

    #[test]
    fn containerds_remote_snapshot_query_matches_label_and_parent() {
        let (f, err) = Filters::parse(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="p1""#.to_string(),
        ]);
        assert!(err.is_none());
        let hit = snap(
            "p1",
            Kind::Committed,
            &[("containerd.io/snapshot.ref", "sha256:abc")],
        );
        let other_parent = snap(
            "p2",
            Kind::Committed,
            &[("containerd.io/snapshot.ref", "sha256:abc")],
        );
        let other_ref = snap(
            "p1",
            Kind::Committed,
            &[("containerd.io/snapshot.ref", "sha256:abd")],
        );
        assert!(f.matches("x", &hit));
        assert!(!f.matches("x", &other_parent));
        assert!(!f.matches("x", &other_ref));
        // An empty parent is written as parent=="" (or parent==).
        let (f, _) = Filters::parse(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent=="""#.into(),
        ]);
        assert!(f.matches(
            "x",
            &snap(
                "",
                Kind::Committed,
                &[("containerd.io/snapshot.ref", "sha256:abc")]
            )
        ));
    }

    #[test]
    fn alternatives_presence_kind_name_and_inequality() {
        let (f, _) = Filters::parse(&["kind==active".into(), "labels.keep".into()]);
        assert!(f.matches("a", &snap("", Kind::Active, &[])));
        assert!(f.matches("a", &snap("", Kind::Committed, &[("keep", "1")])));
        assert!(!f.matches("a", &snap("", Kind::Committed, &[])));
        let (f, _) = Filters::parse(&["name!=a, kind==view".into()]);
        assert!(f.matches("b", &snap("", Kind::View, &[])));
        assert!(!f.matches("a", &snap("", Kind::View, &[])));
    }

    proptest::proptest! {
        /// Filter strings come from any containerd client: parsing never panics, whatever
        /// the bytes, and matching a parsed filter never panics either.
        #[test]
        fn parsing_arbitrary_filters_never_panics(
            filters in proptest::collection::vec(r#"[a-z."=!~, \\/:]{0,40}|\PC{0,40}"#, 0..4)
        ) {
            let (f, _) = Filters::parse(&filters);
            let _ = f.matches("n", &snap("p", Kind::Committed, &[("a", "b")]));
        }
    }

    #[test]
    fn what_does_not_parse_matches_everything() {
        for bad in ["labels.x~=/a.*/", "bogus==1", "labels.\"x", "name==a,,"] {
            let (f, err) = Filters::parse(&[bad.to_string()]);
            assert!(err.is_some(), "{bad}");
            assert!(f.matches("zz", &snap("", Kind::Active, &[])), "{bad}");
        }
        let (f, err) = Filters::parse(&[]);
        assert!(err.is_none());
        assert!(f.matches("zz", &snap("", Kind::Active, &[])));
    }
}
