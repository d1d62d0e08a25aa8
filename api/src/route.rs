//! Route path patterns: exact segments, `*` for exactly one segment, and a final `**`
//! for any rest (including nothing). Compiled once, matched without allocating.

use std::fmt;

/// Why a path pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Not starting with `/`.
    #[error("path pattern {0:?} must start with /")]
    NoLeadingSlash(String),
    /// `**` somewhere else than as the whole last segment, or `*` inside a segment.
    #[error("path pattern {0:?}: `*` must be a whole segment and `**` only the last one")]
    Wildcard(String),
    /// Characters that cannot appear in a normalised path.
    #[error(
        "path pattern {0:?} contains characters not allowed in a path (`?`, `#`, `%`, `\\`, spaces or control characters)"
    )]
    Chars(String),
    /// `.` or `..` segments never survive normalisation, so they could never match.
    #[error("path pattern {0:?} contains a `.` or `..` segment")]
    DotSegment(String),
    /// Longer than 1024 bytes.
    #[error("path pattern is longer than 1024 bytes")]
    TooLong,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Compared with the request segment without its `;parameters`.
    Exact(Box<str>),
    /// A pattern segment with `;` of its own: compared with the whole request segment.
    ExactWithParams(Box<str>),
    One,
}

/// A request segment without its path parameters (`admin;jsessionid=x` -> `admin`, also
/// for `%3B`): what Tomcat, Jetty and other servlet containers route on, so a rule for
/// `/admin/**` covers `/admin;x/secret` as the server behind the sidecar reads it.
fn without_params(segment: &str) -> &str {
    let b = segment.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b';' {
            return &segment[..i];
        }
        if b[i] == b'%' && b.get(i + 1) == Some(&b'3') && matches!(b.get(i + 2), Some(b'B' | b'b'))
        {
            return &segment[..i];
        }
        i += 1;
    }
    segment
}

/// A compiled path pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: Box<str>,
    segments: Box<[Segment]>,
    any_rest: bool,
}

impl PathPattern {
    /// Compiles a pattern such as `/orders/*/items` or `/orders/**`.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.len() > 1024 {
            return Err(PatternError::TooLong);
        }
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(PatternError::NoLeadingSlash(pattern.to_string()));
        };
        if pattern
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '%' | '\\'))
        {
            return Err(PatternError::Chars(pattern.to_string()));
        }
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut segments = Vec::with_capacity(parts.len());
        let mut any_rest = false;
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "**" if i + 1 == parts.len() => any_rest = true,
                "*" => segments.push(Segment::One),
                "." | ".." => return Err(PatternError::DotSegment(pattern.to_string())),
                p if p.contains('*') => return Err(PatternError::Wildcard(pattern.to_string())),
                p if p.contains(';') => segments.push(Segment::ExactWithParams(p.into())),
                p => segments.push(Segment::Exact(p.into())),
            }
        }
        Ok(Self {
            source: pattern.into(),
            segments: segments.into_boxed_slice(),
            any_rest,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches a normalised request path (no query string, no dot segments, no `//`).
    /// A trailing slash is a segment of its own (`/a/` has segments `a` and ``), so
    /// `/a` does not match `/a/`; `/a/**` matches both `/a` and `/a/anything/below`.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = if rest.is_empty() {
            None
        } else {
            Some(rest.split('/'))
        };
        for seg in self.segments.iter() {
            let Some(part) = parts.as_mut().and_then(Iterator::next) else {
                return false;
            };
            match seg {
                Segment::One if without_params(part).is_empty() => return false,
                Segment::One => {}
                Segment::Exact(want) if **want == *without_params(part) => {}
                Segment::ExactWithParams(want) if **want == *part => {}
                Segment::Exact(_) | Segment::ExactWithParams(_) => return false,
            }
        }
        self.any_rest || parts.is_none_or(|mut p| p.next().is_none())
    }

    /// How specific the pattern is, for reporting: number of exact segments.
    pub fn exact_segments(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Exact(_) | Segment::ExactWithParams(_)))
            .count()
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({:?})", self.source)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, path: &str) -> bool {
        PathPattern::parse(p).unwrap().matches(path)
    }

    #[test]
    fn path_parameters_do_not_hide_a_segment() {
        assert!(m("/admin/**", "/admin;x/secret"));
        assert!(m("/admin/**", "/admin%3Bjsessionid=1/secret"));
        assert!(m("/admin/**", "/admin;"));
        assert!(m("/orders/*/items", "/orders/1;v=2/items"));
        assert!(!m("/orders/*/items", "/orders/;v=2/items"));
        assert!(!m("/admin/**", "/admi;n/secret"));
        // A pattern with its own parameters matches them exactly.
        assert!(m("/a;v=1", "/a;v=1"));
        assert!(!m("/a;v=1", "/a;v=2"));
        assert!(!m("/a;v=1", "/a"));
    }

    #[test]
    fn exact() {
        assert!(m("/healthz", "/healthz"));
        assert!(!m("/healthz", "/healthz/"));
        assert!(!m("/healthz", "/healthzz"));
        assert!(!m("/healthz", "/"));
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
    }

    #[test]
    fn one_segment() {
        assert!(m("/orders/*/items", "/orders/42/items"));
        assert!(!m("/orders/*/items", "/orders//items"));
        assert!(!m("/orders/*/items", "/orders/42/43/items"));
        assert!(!m("/orders/*", "/orders"));
        assert!(m("/orders/*", "/orders/1"));
    }

    #[test]
    fn any_rest() {
        assert!(m("/orders/**", "/orders"));
        assert!(m("/orders/**", "/orders/"));
        assert!(m("/orders/**", "/orders/1/2/3"));
        assert!(!m("/orders/**", "/ordersx"));
        assert!(!m("/orders/**", "/other/orders"));
        assert!(m("/**", "/"));
        assert!(m("/**", "/anything/at/all"));
    }

    #[test]
    fn refuses_bad_patterns() {
        for bad in [
            "orders", "/a/**/b", "/a*", "/a/b*c", "/a?b", "/a%2Fb", "/a/../b", "/a b", "/a\\b",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(p in "\\PC{0,40}", path in "\\PC{0,40}") {
            if let Ok(pat) = PathPattern::parse(&p) {
                let _ = pat.matches(&path);
            }
        }

        #[test]
        fn a_pattern_without_wildcards_matches_itself(segs in proptest::collection::vec("[a-z0-9]{1,5}", 0..5)) {
            let path = format!("/{}", segs.join("/"));
            let pat = PathPattern::parse(&path).unwrap();
            prop_assert!(pat.matches(&path));
            let any = PathPattern::parse(&format!("{}/**", path.trim_end_matches('/'))).unwrap();
            prop_assert!(any.matches(&path));
            let below = format!("{}/x/y", path.trim_end_matches('/'));
            prop_assert!(any.matches(&below));
        }
    }
}
