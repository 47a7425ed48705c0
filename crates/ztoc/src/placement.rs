//! Where a gzip layer's checkpoints go.
//!
//! A reader fetches and verifies whole spans, so the bytes a read costs are those of the spans
//! around it. Checkpoints need not be evenly spaced: AWS's reader finds a span by walking the
//! checkpoints' uncompressed offsets, and `span_size` in the zinfo is informational. So a
//! builder may put span starts where reads begin and end, and keep spans coarse elsewhere.
//!
//! Checkpoints can only sit at deflate block boundaries. A [`Placement`] names *break points*
//! in the uncompressed tar stream; the checkpointer turns each into a real checkpoint:
//! - a **start** `b` becomes a checkpoint at the last block boundary at or before `b`, so the
//!   span holding `b` begins as close before it as the stream allows;
//! - an **end** `e` becomes a checkpoint at the first block boundary at or after `e`, so the
//!   span holding the byte before `e` ends as soon after it as the stream allows.
//!
//! `span_size` still bounds every span: past it, the next block boundary is a checkpoint.

/// Uncompressed gap below which two read ranges share a span: one more checkpoint costs a
/// 32 KiB window in the zTOC, about what 128 KiB of tar compresses to.
pub const DEFAULT_MERGE_GAP: u64 = 128 << 10;

/// Where a gzip layer's checkpoints go (plain-tar layers always use fixed spans).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Placement {
    /// A checkpoint at the first block boundary past every `span_size` bytes (AWS's).
    #[default]
    Uniform,
    /// Span starts at `starts` and span ends at `ends` (uncompressed tar offsets, any order),
    /// with spans no longer than `span_size` in between.
    Breaks {
        /// Offsets a span should begin at or just before.
        starts: Vec<u64>,
        /// Offsets a span should end at or just after.
        ends: Vec<u64>,
    },
}

impl Placement {
    /// Spans that begin just before and end just after each of `ranges` (`[start, end)` in
    /// the uncompressed tar stream), ranges closer than `merge_gap` sharing a span.
    pub fn around_ranges(ranges: &[(u64, u64)], merge_gap: u64) -> Placement {
        let (starts, ends) = merge_ranges(ranges, merge_gap).into_iter().unzip();
        Placement::Breaks { starts, ends }
    }
}

/// Sorts `ranges`, drops empty ones and joins those that overlap or are closer than `gap`.
pub fn merge_ranges(ranges: &[(u64, u64)], gap: u64) -> Vec<(u64, u64)> {
    let mut sorted: Vec<(u64, u64)> = ranges.iter().copied().filter(|(s, e)| s < e).collect();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (start, end) in sorted {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(gap) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// A [`Placement`] being applied as the stream goes by.
#[derive(Debug)]
pub(crate) struct Planner {
    span_size: u64,
    starts: Vec<u64>,
    ends: Vec<u64>,
    next_start: usize,
    next_end: usize,
}

impl Planner {
    pub fn new(placement: &Placement, span_size: u64) -> Self {
        let (mut starts, mut ends) = match placement {
            Placement::Uniform => (Vec::new(), Vec::new()),
            Placement::Breaks { starts, ends } => (starts.clone(), ends.clone()),
        };
        starts.sort_unstable();
        starts.dedup();
        ends.sort_unstable();
        ends.dedup();
        Planner {
            span_size,
            starts,
            ends,
            next_start: 0,
            next_end: 0,
        }
    }

    /// Whether a start is still ahead, so every boundary must be kept as a candidate.
    pub fn wants_candidates(&self) -> bool {
        self.next_start < self.starts.len()
    }

    /// At the block boundary (or member end) at uncompressed offset `here`, given the last
    /// checkpoint and the previous boundary if kept as a candidate: whether a start lies
    /// between the candidate and here, so the candidate must become a checkpoint. Starts up
    /// to `here` are consumed.
    pub fn starts_passed(&mut self, last: u64, candidate: Option<u64>, here: u64) -> bool {
        let mut take = false;
        while let Some(&start) = self.starts.get(self.next_start) {
            // A start exactly on this boundary is for `wants_here`.
            if start >= here {
                break;
            }
            take |= candidate.is_some_and(|c| c <= start && c > last);
            self.next_start += 1;
        }
        take
    }

    /// Whether the block boundary at `here` must be a checkpoint, given the last one: a start
    /// sits exactly on it, an end was reached since the last checkpoint, or the span would
    /// outgrow `span_size`. Break points up to `here` are consumed.
    pub fn wants_here(&mut self, last: u64, here: u64) -> bool {
        if here <= last {
            return false;
        }
        let mut take = here - last > self.span_size;
        if self.starts.get(self.next_start) == Some(&here) {
            take = true;
            self.next_start += 1;
        }
        while let Some(&end) = self.ends.get(self.next_end) {
            if end > here {
                break;
            }
            take |= end > last;
            self.next_end += 1;
        }
        take
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_when_close_and_drop_when_empty() {
        let merged = merge_ranges(&[(500, 600), (0, 100), (150, 200), (700, 700)], 50);
        assert_eq!(merged, vec![(0, 200), (500, 600)]);
        assert_eq!(merge_ranges(&[(0, 10), (5, 8)], 0), vec![(0, 10)]);
    }

    #[test]
    fn planner_takes_candidate_for_a_start_and_the_next_boundary_for_an_end() {
        let placement = Placement::Breaks {
            starts: vec![250],
            ends: vec![320],
        };
        let mut p = Planner::new(&placement, 10_000);
        assert!(p.wants_candidates());
        assert!(!p.starts_passed(0, None, 100) && !p.wants_here(0, 100));
        assert!(!p.starts_passed(0, Some(100), 200) && !p.wants_here(0, 200));
        // 250 lies between the boundaries at 200 and 300: the one at 200 becomes a checkpoint.
        assert!(p.starts_passed(0, Some(200), 300));
        assert!(!p.wants_here(200, 300));
        assert!(!p.wants_candidates());
        // The end at 320 is covered by the first boundary at or after it.
        assert!(!p.wants_here(200, 310));
        assert!(p.wants_here(200, 330));
        // Past the break points only span_size counts.
        assert!(!p.wants_here(330, 10_330));
        assert!(p.wants_here(330, 10_331));
    }

    #[test]
    fn planner_takes_a_boundary_that_sits_exactly_on_a_start() {
        let placement = Placement::around_ranges(&[(300, 400)], 0);
        let mut p = Planner::new(&placement, u64::MAX);
        assert!(!p.starts_passed(0, Some(100), 300));
        assert!(p.wants_here(0, 300));
        // A candidate already past the start is not taken.
        let mut p = Planner::new(&placement, u64::MAX);
        assert!(!p.starts_passed(0, Some(350), 400));
    }
}
