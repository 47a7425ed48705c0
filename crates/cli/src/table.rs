//! Column output shaped like Go's `tabwriter` as AWS's soci uses it (min width 8, padding 4,
//! every cell followed by padding), so scripts that split on whitespace keep working.

/// Renders rows (the first is the header) as padded columns.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
                .max(8)
                + 4
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push('\n');
    }
    out
}

/// "3m12s ago"-style age of an RFC 3339 timestamp, like Go's rounded durations.
pub fn age(created: &str) -> String {
    let Ok(t) =
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
    else {
        return "n/a".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s ago")
    } else if m > 0 {
        format!("{m}m{s}s ago")
    } else {
        format!("{s}s ago")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_padded() {
        let out = super::render(&[
            vec!["DIGEST".into(), "SIZE".into()],
            vec!["sha256:abc".into(), "1".into()],
        ]);
        assert_eq!(
            out,
            "DIGEST        SIZE        \nsha256:abc    1           \n"
        );
    }
}
