//! Rendering for people: kubectl-style tables, ages, and text from the cluster made
//! safe for a terminal.

use std::io::Write;

use jiff::Timestamp;

/// What an absent value prints as (kubectl's convention).
pub const NONE: &str = "<none>";

/// Where a command writes: results to `out` (stdout), progress and warnings to `err`
/// (stderr), so `out` stays parseable.
pub struct Out<'a> {
    /// Results.
    pub out: &'a mut dyn Write,
    /// Progress and warnings.
    pub err: &'a mut dyn Write,
}

/// Text from the cluster (owners, notes, messages) with control characters replaced,
/// so that a crafted value cannot move the cursor or recolour the terminal.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A kubectl-style table: upper-case headers, left-aligned columns three spaces
/// apart, no trailing blanks. Cells are [`clean`]ed.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut text = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// How long ago `then` was, the way kubectl prints ages: `45s`, `4m10s`, `25m`,
/// `5h3m`, `30h`, `3d4h`, `12d`.
pub fn age(then: Timestamp, now: Timestamp) -> String {
    let secs = now.as_second().saturating_sub(then.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 48 * 3600 => format!("{h}h"),
        s if s < 8 * 86_400 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let text = table(
            &["NAME", "KEY ID", "OWNER"],
            &[
                vec!["billing".into(), "7k2m9q4xw3ab".into(), "Équipe".into()],
                vec!["a".into(), NONE.into(), NONE.into()],
            ],
        );
        assert_eq!(
            text,
            "NAME      KEY ID         OWNER\n\
             billing   7k2m9q4xw3ab   Équipe\n\
             a         <none>         <none>\n"
        );
    }

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(clean("evil\x1b[31mred\nline"), "evil?[31mred?line");
        let text = table(&["OWNER"], &[vec!["a\rb".into()]]);
        assert_eq!(text, "OWNER\na?b\n");
    }

    #[test]
    fn ages_like_kubectl() {
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let ago = |s: i64| age(Timestamp::from_second(now.as_second() - s).unwrap(), now);
        assert_eq!(ago(0), "0s");
        assert_eq!(ago(45), "45s");
        assert_eq!(ago(250), "4m10s");
        assert_eq!(ago(25 * 60), "25m");
        assert_eq!(ago(5 * 3600 + 180), "5h3m");
        assert_eq!(ago(30 * 3600), "30h");
        assert_eq!(ago(3 * 86_400 + 4 * 3600), "3d4h");
        assert_eq!(ago(12 * 86_400), "12d");
        // A clock behind the API server's never gives a negative age.
        assert_eq!(ago(-5), "0s");
    }
}
