//! One credential (DESIGN.md, "Security invariants").
//!
//! Only the sources the AccessPolicy lists are read. Two `X-API-Key` headers, two
//! `Authorization` headers, or an `X-API-Key` and a Bearer token that differ are a 400
//! (`invalid_request`), never "first one wins": a proxy or framework in front of or
//! behind us could pick the other one. The same token sent both ways is accepted.
//! An `Authorization` header with another scheme (`Basic ...`) is not ours and is
//! ignored. Header names are matched by the proxy as HTTP defines (case-insensitive,
//! `_` is not `-`); this module sees the values only.

use turnpike_api::token::{ParsedToken, Token};
use turnpike_api::types::CredentialSource;

use super::facts::HeaderValues;
use super::refusal::{Refusal, TokenFault};

/// Which credential sources a target accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources {
    /// `X-API-Key`.
    pub api_key_header: bool,
    /// `Authorization: Bearer`.
    pub bearer: bool,
}

impl Sources {
    /// From the AccessPolicy's list.
    pub fn from_list(list: &[CredentialSource]) -> Self {
        Self {
            api_key_header: list.contains(&CredentialSource::ApiKeyHeader),
            bearer: list.contains(&CredentialSource::Bearer),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value; `None` for other schemes.
/// The scheme is case-insensitive (RFC 9110 §11.1), followed by one or more spaces.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let scheme = value.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &value[SCHEME.len()..];
    if rest.first() != Some(&b' ') {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let token = &rest[start..];
    let end = token.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1);
    Some(&token[..end])
}

/// The one credential of a request, as raw bytes; `Ok(None)` when there is none.
///
/// # Errors
/// [`Refusal::ConflictingCredentials`] per the module documentation.
pub fn extract<'a>(
    sources: Sources,
    api_key: HeaderValues<'a>,
    authorization: HeaderValues<'a>,
) -> Result<Option<&'a [u8]>, Refusal> {
    let from_header = if sources.api_key_header {
        match api_key {
            HeaderValues::Absent => None,
            HeaderValues::One(v) => Some(v),
            HeaderValues::Many => return Err(Refusal::ConflictingCredentials),
        }
    } else {
        None
    };
    let from_bearer = if sources.bearer {
        match authorization {
            HeaderValues::Absent => None,
            HeaderValues::One(v) => bearer_token(v),
            HeaderValues::Many => return Err(Refusal::ConflictingCredentials),
        }
    } else {
        None
    };
    match (from_header, from_bearer) {
        (Some(a), Some(b)) if a != b => Err(Refusal::ConflictingCredentials),
        (Some(a), _) => Ok(Some(a)),
        (None, b) => Ok(b),
    }
}

/// Checks the credential's format and checksum (no lookup, no argon2).
///
/// # Errors
/// [`Refusal::MalformedCredential`] with the failed check.
pub fn parse(raw: &[u8]) -> Result<ParsedToken<'_>, Refusal> {
    let text =
        std::str::from_utf8(raw).map_err(|_| Refusal::MalformedCredential(TokenFault::Encoding))?;
    Token::parse(text).map_err(|e| Refusal::MalformedCredential(TokenFault::from_error(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Sources = Sources {
        api_key_header: true,
        bearer: true,
    };

    fn one(s: &str) -> HeaderValues<'_> {
        HeaderValues::one(s)
    }

    #[test]
    fn one_credential() {
        let none = HeaderValues::Absent;
        assert_eq!(extract(BOTH, none, none), Ok(None));
        assert_eq!(extract(BOTH, one("k"), none), Ok(Some(b"k".as_slice())));
        assert_eq!(
            extract(BOTH, none, one("Bearer k")),
            Ok(Some(b"k".as_slice()))
        );
        assert_eq!(
            extract(BOTH, none, one("bearer   k  ")),
            Ok(Some(b"k".as_slice()))
        );
        assert_eq!(
            extract(BOTH, one("k"), one("Bearer k")),
            Ok(Some(b"k".as_slice()))
        );
        assert_eq!(
            extract(BOTH, one("k"), one("Bearer j")),
            Err(Refusal::ConflictingCredentials)
        );
        assert_eq!(
            extract(BOTH, HeaderValues::Many, none),
            Err(Refusal::ConflictingCredentials)
        );
        assert_eq!(
            extract(BOTH, none, HeaderValues::Many),
            Err(Refusal::ConflictingCredentials)
        );
        // Other schemes are not ours.
        assert_eq!(extract(BOTH, none, one("Basic dXNlcjpwYXNz")), Ok(None));
        assert_eq!(extract(BOTH, none, one("Bearerk")), Ok(None));
        assert_eq!(
            extract(BOTH, one("k"), one("Basic x")),
            Ok(Some(b"k".as_slice()))
        );
    }

    #[test]
    fn only_listed_sources_are_read() {
        let header_only = Sources {
            api_key_header: true,
            bearer: false,
        };
        let bearer_only = Sources {
            api_key_header: false,
            bearer: true,
        };
        assert_eq!(
            extract(header_only, HeaderValues::Absent, one("Bearer k")),
            Ok(None)
        );
        assert_eq!(
            extract(header_only, one("k"), one("Bearer j")),
            Ok(Some(b"k".as_slice()))
        );
        assert_eq!(
            extract(header_only, one("k"), HeaderValues::Many),
            Ok(Some(b"k".as_slice()))
        );
        assert_eq!(
            extract(bearer_only, HeaderValues::Many, one("Bearer j")),
            Ok(Some(b"j".as_slice()))
        );
    }

    #[test]
    fn parse_reports_the_fault() {
        assert_eq!(
            parse(b"nope").err(),
            Some(Refusal::MalformedCredential(TokenFault::Malformed(
                turnpike_api::token::Malformed::Length
            )))
        );
        assert_eq!(
            parse(&[0xff, 0xfe]).err(),
            Some(Refusal::MalformedCredential(TokenFault::Encoding))
        );
    }
}
