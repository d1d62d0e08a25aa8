//! One path, decided and forwarded (DESIGN.md, "Security invariants").
//!
//! [`normalize`] turns the request path (without the query string) into the one form
//! that route, scope and limit decisions use and that the proxy forwards upstream:
//!
//! 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, and
//!    every other percent-encoding gets upper-case hex digits (RFC 3986 §6.2.2.1-2);
//! 2. empty segments are collapsed (`//` -> `/`);
//! 3. dot segments are removed (RFC 3986 §5.2.4), after decoding, so `/%2e%2e/` is a
//!    `..` too.
//!
//! Refused with 400, because a server behind us could read them differently from us:
//! `%2F` and `%5C` (an encoded separator), a raw `\`, NUL and other control
//! characters (raw or encoded), raw bytes outside ASCII, a `%` not followed by two hex
//! digits, `?`, `#` or a space in the path, a path not starting with `/`, an empty or
//! dot segment with a `;` parameter (`/..;/`, `/.;x/`, `/;x/`, also with `%3B`), which
//! Tomcat and Jetty collapse or climb after we have decided on the path, a double encoding (`%25` followed by
//! two hex digits: `%252e` is `%2e` to a server that decodes twice), and
//! percent-encoded bytes that are not well-formed UTF-8 (`%C0%AE` is an overlong `.` to
//! a lenient decoder).
//!
//! A path that needs no change is returned borrowed: the common case allocates
//! nothing.

use std::borrow::Cow;

/// Why a path was refused. The variant names the rule; never any part of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Does not start with `/` (asterisk form, relative, empty).
    #[error("path does not start with /")]
    NotAbsolute,
    /// `%2F`: an encoded `/`.
    #[error("path contains an encoded slash")]
    EncodedSlash,
    /// `%5C`: an encoded `\`.
    #[error("path contains an encoded backslash")]
    EncodedBackslash,
    /// A raw `\`.
    #[error("path contains a backslash")]
    Backslash,
    /// NUL or another control character, raw or percent-encoded.
    #[error("path contains a control character")]
    Control,
    /// A raw byte outside ASCII (it must be percent-encoded).
    #[error("path contains a raw non-ASCII byte")]
    NonAscii,
    /// A `%` not followed by two hex digits.
    #[error("path contains an invalid percent-encoding")]
    BadPercent,
    /// `?`, `#` or a space.
    #[error("path contains a character not allowed in a path")]
    InvalidChar,
    /// `;`, `.;` or `..;` segment (path parameters on an empty or dot segment; `%3B`
    /// counts as `;`).
    #[error("path contains an empty or dot segment with parameters")]
    DotParameter,
    /// `%25` followed by two hex digits: an encoding of an encoding.
    #[error("path contains a double percent-encoding")]
    DoubleEncoding,
    /// Percent-encoded bytes that are not well-formed UTF-8 (overlong forms,
    /// surrogates, stray continuation bytes, truncated sequences).
    #[error("path contains percent-encoded bytes that are not UTF-8")]
    InvalidUtf8,
}

impl PathError {
    /// Stable snake_case name (audit reason).
    pub const fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::EncodedSlash => "path_encoded_slash",
            PathError::EncodedBackslash => "path_encoded_backslash",
            PathError::Backslash => "path_backslash",
            PathError::Control => "path_control_character",
            PathError::NonAscii => "path_non_ascii",
            PathError::BadPercent => "path_bad_percent_encoding",
            PathError::InvalidChar => "path_invalid_character",
            PathError::DotParameter => "path_dot_segment_parameter",
            PathError::DoubleEncoding => "path_double_encoding",
            PathError::InvalidUtf8 => "path_invalid_utf8",
        }
    }
}

/// Normalises a request path; see the module documentation.
///
/// # Errors
/// A [`PathError`] naming the first rule the path breaks.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(raw)? {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw)?;
    match remove_dot_segments(&decoded)? {
        Some(rebuilt) => Ok(Cow::Owned(rebuilt)),
        None => Ok(decoded),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// What a `%XY` at some position becomes.
enum Escape {
    /// Decode to this unreserved byte.
    Decode(u8),
    /// Keep encoded, with upper-case hex; `true` when the input was not upper case.
    Keep(bool),
}

fn escape_at(b: &[u8], i: usize) -> Result<Escape, PathError> {
    let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
        return Err(PathError::BadPercent);
    };
    let (Some(hv), Some(lv)) = (hex_value(h), hex_value(l)) else {
        return Err(PathError::BadPercent);
    };
    let v = hv << 4 | lv;
    match v {
        b'%' if followed_by_two_hex_digits(b, i + 3) => Err(PathError::DoubleEncoding),
        b'/' => Err(PathError::EncodedSlash),
        b'\\' => Err(PathError::EncodedBackslash),
        0..=0x1f | 0x7f => Err(PathError::Control),
        v if is_unreserved(v) => Ok(Escape::Decode(v)),
        _ => Ok(Escape::Keep(
            h.is_ascii_lowercase() || l.is_ascii_lowercase(),
        )),
    }
}

/// Two hex digits from `j` on, raw or percent-encoded (`%32%65` is `2e` once the
/// unreserved characters are decoded).
fn followed_by_two_hex_digits(b: &[u8], j: usize) -> bool {
    let digit = |k: usize| -> Option<usize> {
        if b.get(k).copied().and_then(hex_value).is_some() {
            return Some(k + 1);
        }
        encoded_at(b, k).and_then(hex_value).map(|_| k + 3)
    };
    digit(j).and_then(digit).is_some()
}

/// The value of the `%XY` at `i`, if there is one.
fn encoded_at(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    Some(hex_value(*b.get(i + 1)?)? << 4 | hex_value(*b.get(i + 2)?)?)
}

/// Percent-encoded UTF-8: each escape of 0x80 or above either starts a well-formed
/// sequence whose continuation bytes are the next escapes, or is one of those.
#[derive(Default)]
struct Utf8Escapes {
    continuation_left: usize,
}

impl Utf8Escapes {
    /// Called for every `%XY` at `i`, in order.
    fn escape(&mut self, b: &[u8], i: usize) -> Result<(), PathError> {
        let v = encoded_at(b, i).ok_or(PathError::BadPercent)?;
        if self.continuation_left > 0 {
            // Checked with its lead byte.
            self.continuation_left -= 1;
            return Ok(());
        }
        if v < 0x80 {
            return Ok(());
        }
        let len = match v {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return Err(PathError::InvalidUtf8),
        };
        let mut seq = [v, 0, 0, 0];
        for (k, slot) in seq.iter_mut().enumerate().take(len).skip(1) {
            *slot = encoded_at(b, i + 3 * k).ok_or(PathError::InvalidUtf8)?;
        }
        std::str::from_utf8(&seq[..len]).map_err(|_| PathError::InvalidUtf8)?;
        self.continuation_left = len - 1;
        Ok(())
    }

    /// Called for every other byte: a sequence cannot be interrupted.
    fn raw(&self) -> Result<(), PathError> {
        if self.continuation_left > 0 {
            return Err(PathError::InvalidUtf8);
        }
        Ok(())
    }
}

fn check_raw(c: u8) -> Result<(), PathError> {
    match c {
        b'\\' => Err(PathError::Backslash),
        0..=0x1f | 0x7f => Err(PathError::Control),
        0x80.. => Err(PathError::NonAscii),
        b'?' | b'#' | b' ' => Err(PathError::InvalidChar),
        _ => Ok(()),
    }
}

/// One pass over a path that starts with `/`: refuses what must be refused and says
/// whether the path is already normal (the common case, decided without allocating
/// or splitting).
fn is_normal(raw: &str) -> Result<bool, PathError> {
    let b = raw.as_bytes();
    let mut normal = true;
    let mut seg_start = 1;
    let mut i = 1;
    let mut utf8 = Utf8Escapes::default();
    loop {
        let end = i >= b.len();
        if end || b[i] == b'/' {
            utf8.raw()?;
            let seg = &b[seg_start..i.min(b.len())];
            if is_dot_parameter(seg) {
                return Err(PathError::DotParameter);
            }
            if (seg.is_empty() && !end) || seg == b"." || seg == b".." {
                normal = false;
            }
            if end {
                return Ok(normal);
            }
            i += 1;
            seg_start = i;
        } else if b[i] == b'%' {
            match escape_at(b, i)? {
                Escape::Decode(_) | Escape::Keep(true) => normal = false,
                Escape::Keep(false) => {}
            }
            utf8.escape(b, i)?;
            i += 3;
        } else {
            check_raw(b[i])?;
            utf8.raw()?;
            i += 1;
        }
    }
}

/// Step 1: validates every byte and decodes unreserved percent-encodings. Borrowed
/// when nothing changes.
fn decode_unreserved(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let b = raw.as_bytes();
    // First pass: validate and find whether anything changes.
    let mut changes = false;
    let mut i = 0;
    let mut utf8 = Utf8Escapes::default();
    while i < b.len() {
        if b[i] == b'%' {
            match escape_at(b, i)? {
                Escape::Decode(_) | Escape::Keep(true) => changes = true,
                Escape::Keep(false) => {}
            }
            utf8.escape(b, i)?;
            i += 3;
        } else {
            check_raw(b[i])?;
            utf8.raw()?;
            i += 1;
        }
    }
    utf8.raw()?;
    if !changes {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match escape_at(b, i)? {
                Escape::Decode(v) => out.push(char::from(v)),
                Escape::Keep(_) => {
                    out.push('%');
                    out.push(char::from(b[i + 1].to_ascii_uppercase()));
                    out.push(char::from(b[i + 2].to_ascii_uppercase()));
                }
            }
            i += 3;
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    Ok(Cow::Owned(out))
}

/// A segment whose name, before its `;parameters` (`;` or `%3B`), is empty, `.` or
/// `..`: a servlet container strips the parameters and then collapses the segment or
/// climbs, after we have decided on the path.
fn is_dot_parameter(seg: &[u8]) -> bool {
    let mut i = 0;
    while i < seg.len() {
        let delimiter = seg[i] == b';'
            || (seg[i] == b'%'
                && seg.get(i + 1) == Some(&b'3')
                && matches!(seg.get(i + 2), Some(b'B' | b'b')));
        if delimiter {
            return matches!(&seg[..i], b"" | b"." | b"..");
        }
        i += 1;
    }
    false
}

/// Steps 2 and 3: collapses empty segments and removes dot segments. `None` when the
/// path is already in that form. `path` starts with `/` and contains only validated
/// ASCII.
fn remove_dot_segments(path: &str) -> Result<Option<String>, PathError> {
    let rest = &path[1..];
    let mut changes = false;
    let count = rest.split('/').count();
    for (i, seg) in rest.split('/').enumerate() {
        if is_dot_parameter(seg.as_bytes()) {
            return Err(PathError::DotParameter);
        }
        let last = i + 1 == count;
        if seg == "." || seg == ".." || (seg.is_empty() && !last) {
            changes = true;
        }
    }
    if !changes {
        return Ok(None);
    }
    let mut kept: Vec<&str> = Vec::with_capacity(count);
    let mut trailing_slash = false;
    for (i, seg) in rest.split('/').enumerate() {
        let last = i + 1 == count;
        match seg {
            "" | "." => trailing_slash = last,
            ".." => {
                kept.pop();
                trailing_slash = last;
            }
            s => {
                kept.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &kept {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    Ok(Some(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn double_encodings_and_malformed_utf8_are_refused() {
        for p in [
            "/%252e%252e/admin",
            "/a%252fb",
            "/%2561dmin",
            "/a/%25%32%65",
        ] {
            assert_eq!(n(p), Err(PathError::DoubleEncoding), "{p}");
        }
        // A literal percent sign stays possible: `%25` not followed by hex digits.
        assert_eq!(n("/100%25"), Ok("/100%25".into()));
        assert_eq!(n("/100%25off"), Ok("/100%25off".into()));
        for p in [
            "/%C0%AE%C0%AE/admin", // overlong `.`
            "/%c0%af",             // overlong `/`
            "/%E0%80%AE",          // overlong `.`, three bytes
            "/%ED%A0%80",          // a surrogate
            "/%80",                // a stray continuation byte
            "/%C3",                // truncated at the end
            "/%C3/x",              // truncated by a separator
            "/%C3a",               // interrupted by a raw byte
            "/%F5%80%80%80",       // beyond U+10FFFF
            "/%FF",
        ] {
            assert_eq!(n(p), Err(PathError::InvalidUtf8), "{p}");
        }
        assert_eq!(n("/caf%c3%a9"), Ok("/caf%C3%A9".into()));
        assert_eq!(
            n("/%E4%BD%A0%E5%A5%BD/%F0%9F%98%80"),
            Ok("/%E4%BD%A0%E5%A5%BD/%F0%9F%98%80".into())
        );
        assert_eq!(PathError::DoubleEncoding.as_str(), "path_double_encoding");
        assert_eq!(PathError::InvalidUtf8.as_str(), "path_invalid_utf8");
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        for p in [
            "/",
            "/orders",
            "/orders/42/items",
            "/a/",
            "/a%20b",
            "/%C3%A9",
            "/a/b.c/..d/...",
            "/~user",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        let cases = [
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("//", "/"),
            ("//a//b//", "/a/b/"),
            ("/a/..", "/"),
            ("/public/../admin", "/admin"),
            ("/.", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(n(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn decodes_unreserved_then_removes_dots() {
        assert_eq!(n("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(n("/public/%2e%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/public/%2E%2E/admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/a/.%2e/b").as_deref(), Ok("/b"));
        assert_eq!(n("/%7euser").as_deref(), Ok("/~user"));
        // Reserved and non-ASCII stay encoded, with upper-case hex.
        assert_eq!(n("/a%3bb").as_deref(), Ok("/a%3Bb"));
        assert_eq!(n("/%c3%a9").as_deref(), Ok("/%C3%A9"));
        assert_eq!(n("/100%25").as_deref(), Ok("/100%25"));
    }

    #[test]
    fn refusals() {
        let cases = [
            ("", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("orders", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%5Cb", PathError::EncodedBackslash),
            ("/a%5cb", PathError::EncodedBackslash),
            ("/a\\b", PathError::Backslash),
            ("/a%00", PathError::Control),
            ("/a\0", PathError::Control),
            ("/a%0a", PathError::Control),
            ("/a\tb", PathError::Control),
            ("/a%7F", PathError::Control),
            ("/é", PathError::NonAscii),
            ("/a%", PathError::BadPercent),
            ("/a%4", PathError::BadPercent),
            ("/a%zz", PathError::BadPercent),
            ("/a?b", PathError::InvalidChar),
            ("/a#b", PathError::InvalidChar),
            ("/a b", PathError::InvalidChar),
            ("/admin/..;/x", PathError::DotParameter),
            ("/a/.;x/b", PathError::DotParameter),
            ("/a/%2e%2e;/b", PathError::DotParameter),
        ];
        for (input, want) in cases {
            assert_eq!(n(input), Err(want), "{input:?}");
        }
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E".to_string()),
            Just("%41".to_string()),
            Just("%3b".to_string()),
            Just("%25".to_string()),
            Just(";".to_string()),
            "[a-z0-9]{1,3}",
            "%[0-9a-fA-F]{2}",
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,64}") {
            let _ = normalize(&s);
        }

        #[test]
        fn never_panics_on_bytes(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = String::from_utf8_lossy(&v);
            let _ = normalize(&s);
        }

        #[test]
        fn idempotent_and_clean(p in path_strategy()) {
            if let Ok(once) = normalize(&p) {
                let twice = normalize(&once).map(Cow::into_owned);
                prop_assert_eq!(twice.as_deref(), Ok(&*once));
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.contains("//"), "{}", once);
                prop_assert!(!once.contains("/./"), "{}", once);
                prop_assert!(!once.contains("/../"), "{}", once);
                prop_assert!(!once.ends_with("/.") && !once.ends_with("/.."), "{}", once);
                prop_assert!(!once.to_ascii_lowercase().contains("%2e"), "{}", once);
                // A normalised path is matched by the route patterns of the api crate.
                let pat = turnpike_api::route::PathPattern::parse("/**").unwrap();
                prop_assert!(pat.matches(&once));
            }
        }

        /// The one-pass fast path agrees with the full algorithm.
        #[test]
        fn fast_path_agrees(p in path_strategy()) {
            let slow = decode_unreserved(&p).and_then(|d| {
                Ok(match remove_dot_segments(&d)? {
                    Some(rebuilt) => rebuilt,
                    None => d.into_owned(),
                })
            });
            let fast = normalize(&p).map(Cow::into_owned);
            prop_assert_eq!(fast.is_ok(), slow.is_ok());
            if let (Ok(f), Ok(s)) = (&fast, &slow) {
                prop_assert_eq!(f, s);
            }
            if let Ok(true) = is_normal(&p) {
                prop_assert!(matches!(normalize(&p), Ok(Cow::Borrowed(_))));
                prop_assert_eq!(slow.as_deref(), Ok(p.as_str()));
            }
        }

        #[test]
        fn arbitrary_text_normalises_cleanly(s in "/[a-z./%0-9A-F;]{0,40}") {
            if let Ok(once) = normalize(&s) {
                let again = normalize(&once).map(Cow::into_owned);
                prop_assert_eq!(again.as_deref(), Ok(&*once));
                prop_assert!(!once.contains("//") && !once.contains("/./") && !once.contains("/../"));
            }
        }
    }
}
