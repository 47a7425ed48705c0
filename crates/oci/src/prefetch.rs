//! Prefetch artifacts (`application/vnd.amazon.soci.prefetch.v1+json`): for one layer, the
//! span ranges a snapshotter fetches before it reports the layer ready. They sit in a SOCI
//! index next to the zTOCs, annotated with the layer digest. The JSON matches AWS's soci:
//! `{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":2}]}` with inclusive ranges
//! and an optional `priority` (lower first).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The only artifact version defined.
pub const PREFETCH_VERSION: &str = "1.0";
/// Largest artifact accepted (a few thousand ranges at most in practice).
pub const MAX_PREFETCH_SIZE: u64 = 1 << 20;

/// One inclusive range of span ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchSpan {
    /// First span.
    pub start_span: u64,
    /// Last span (inclusive).
    pub end_span: u64,
    /// Lower values first; 0 (omitted) for all when unused.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The spans of one layer to fetch before it is used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchArtifact {
    /// Format version ("1.0").
    pub version: String,
    /// Span ranges.
    pub prefetch_spans: Vec<PrefetchSpan>,
}

impl PrefetchArtifact {
    /// An artifact for `ranges` (inclusive span ids) in the order they are wanted (a
    /// workload's first reads, first-read first): each range carries its rank as `priority`,
    /// so a snapshotter fetching in priority order fetches what the workload needs next,
    /// not what lies at the lowest offset. Spans already listed earlier are dropped, and a
    /// range that continues the one before it joins it.
    pub fn in_order(ranges: Vec<(u64, u64)>) -> Self {
        let mut artifact = Self::ranked(
            ranges
                .into_iter()
                .enumerate()
                .map(|(i, (a, b))| (a, b, i as i64))
                .collect(),
        );
        // Ranks of what is listed, not of what was given (some ranges add nothing).
        for (rank, span) in artifact.prefetch_spans.iter_mut().enumerate() {
            span.priority = rank as i64;
        }
        artifact
    }

    /// Like [`PrefetchArtifact::in_order`], with each range's priority given: the rank of
    /// the read it serves in the whole image's list, so that a snapshotter fetching several
    /// layers at once can put their spans in one order. Ranges are taken in the order given;
    /// a span listed again is dropped, and a range that continues the one before it with no
    /// lower priority joins it.
    pub fn ranked(ranges: Vec<(u64, u64, i64)>) -> Self {
        let mut seen = std::collections::BTreeSet::new();
        let mut listed: Vec<PrefetchSpan> = Vec::new();
        for (a, b, priority) in ranges {
            for span in a.min(b)..=a.max(b) {
                if !seen.insert(span) {
                    continue;
                }
                match listed.last_mut() {
                    Some(last)
                        if last.end_span.checked_add(1) == Some(span)
                            && last.priority <= priority =>
                    {
                        last.end_span = span
                    }
                    _ => listed.push(PrefetchSpan {
                        start_span: span,
                        end_span: span,
                        priority,
                    }),
                }
            }
        }
        PrefetchArtifact {
            version: PREFETCH_VERSION.into(),
            prefetch_spans: listed,
        }
    }

    /// The JSON bytes (deterministic: same ranges, same digest).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain structs serialize")
    }

    /// Parses an artifact, refusing unknown versions, empty lists and reversed ranges.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidManifest {
            what: what.to_owned(),
            reason,
        };
        if bytes.len() as u64 > MAX_PREFETCH_SIZE {
            return Err(invalid(format!(
                "{} bytes is over the {MAX_PREFETCH_SIZE} byte limit",
                bytes.len()
            )));
        }
        let artifact: PrefetchArtifact =
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if artifact.version != PREFETCH_VERSION {
            return Err(invalid(format!(
                "version {:?} is not the supported {PREFETCH_VERSION:?}",
                artifact.version
            )));
        }
        if artifact.prefetch_spans.is_empty() {
            return Err(invalid("it lists no spans".into()));
        }
        if let Some(s) = artifact
            .prefetch_spans
            .iter()
            .find(|s| s.start_span > s.end_span)
        {
            return Err(invalid(format!(
                "span range {}-{} is reversed",
                s.start_span, s.end_span
            )));
        }
        Ok(artifact)
    }

    /// Every span id listed, in priority order then ascending, without repeats.
    pub fn spans(&self) -> Vec<u64> {
        self.ranked_spans().into_iter().map(|(s, _)| s).collect()
    }

    /// Every span id listed with the priority of the range listing it (the lowest, for a
    /// span listed twice), in priority order then ascending.
    pub fn ranked_spans(&self) -> Vec<(u64, i64)> {
        let mut ranges = self.prefetch_spans.clone();
        ranges.sort_by_key(|r| (r.priority, r.start_span));
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for r in ranges {
            for s in r.start_span..=r.end_span {
                if seen.insert(s) {
                    out.push((s, r.priority));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_round_trips_in_aws_form() {
        let a = PrefetchArtifact::in_order(vec![(0, 1), (2, 2), (5, 6), (6, 7), (9, 9)]);
        assert_eq!(
            String::from_utf8(a.to_json()).unwrap(),
            r#"{"version":"1.0","prefetch_spans":[{"start_span":0,"end_span":2},{"start_span":5,"end_span":7,"priority":1},{"start_span":9,"end_span":9,"priority":2}]}"#
        );
        let back = PrefetchArtifact::parse(&a.to_json(), "t").unwrap();
        assert_eq!(back, a);
        assert_eq!(back.spans(), [0, 1, 2, 5, 6, 7, 9]);
        // AWS's form without priorities reads as ascending spans.
        let aws = r#"{"version":"1.0","prefetch_spans":[{"start_span":5,"end_span":6},{"start_span":0,"end_span":1}]}"#;
        let a = PrefetchArtifact::parse(aws.as_bytes(), "t").unwrap();
        assert_eq!(a.spans(), [0, 1, 5, 6]);
    }

    #[test]
    fn in_order_ranks_ranges_by_first_appearance() {
        let a = PrefetchArtifact::in_order(vec![(7, 8), (2, 2), (3, 4), (8, 9), (0, 0), (2, 3)]);
        let listed: Vec<_> = a
            .prefetch_spans
            .iter()
            .map(|s| (s.start_span, s.end_span, s.priority))
            .collect();
        // 8 repeats, so (8, 9) adds only 9, after 2-4 (not joined to 7-8: it comes later);
        // (2, 3) adds nothing.
        assert_eq!(listed, [(7, 8, 0), (2, 4, 1), (9, 9, 2), (0, 0, 3)]);
        let back = PrefetchArtifact::parse(&a.to_json(), "t").unwrap();
        assert_eq!(back.spans(), [7, 8, 2, 3, 4, 9, 0]);
    }

    #[test]
    fn ranked_keeps_the_priorities_given() {
        let a = PrefetchArtifact::ranked(vec![(4, 5, 3), (6, 6, 9), (7, 7, 2), (1, 1, 40)]);
        let listed: Vec<_> = a
            .prefetch_spans
            .iter()
            .map(|s| (s.start_span, s.end_span, s.priority))
            .collect();
        // 6 continues 4-5 at a later rank and joins it; 7 continues it at an earlier rank
        // and stands alone, so that it is fetched when its rank says.
        assert_eq!(listed, [(4, 6, 3), (7, 7, 2), (1, 1, 40)]);
        let back = PrefetchArtifact::parse(&a.to_json(), "t").unwrap();
        assert_eq!(
            back.ranked_spans(),
            [(7, 2), (4, 3), (5, 3), (6, 3), (1, 40)]
        );
    }

    #[test]
    fn refuses_bad_artifacts() {
        for bad in [
            r#"{"version":"2.0","prefetch_spans":[{"start_span":0,"end_span":0}]}"#,
            r#"{"version":"1.0","prefetch_spans":[]}"#,
            r#"{"version":"1.0","prefetch_spans":[{"start_span":3,"end_span":1}]}"#,
            r#"{"version":"1.0"}"#,
            "not json",
        ] {
            assert!(
                PrefetchArtifact::parse(bad.as_bytes(), "t").is_err(),
                "{bad}"
            );
        }
        let with_priority = r#"{"version":"1.0","prefetch_spans":[{"start_span":4,"end_span":4},{"start_span":1,"end_span":1,"priority":-1}]}"#;
        let a = PrefetchArtifact::parse(with_priority.as_bytes(), "t").unwrap();
        assert_eq!(a.spans(), [1, 4]);
    }
}
