//! The API token format: `tpk_<id>_<secret><check>`.
//!
//! | part | length | alphabet | meaning |
//! | --- | --- | --- | --- |
//! | `tpk_` | 4 | literal | prefix, lets secret scanners and humans recognise a token |
//! | `id` | 12 | `0-9a-z` without `i l o u` (lowercase Crockford base32) | public [`KeyId`], appears in logs, Events and metrics |
//! | `_` | 1 | literal | separator |
//! | `secret` | 43 | `0-9A-Za-z` (base62) | 32 random bytes, fixed width (leading `0`s) |
//! | `check` | 6 | `0-9A-Za-z` (base62) | CRC32 of everything before it, fixed width |
//!
//! Every token is exactly [`TOKEN_LEN`] (66) ASCII characters. [`Token::parse`] checks
//! length, prefix, alphabet and checksum without allocating, so the sidecar rejects a
//! mistyped, truncated or made-up token before any key lookup or argon2 work.
//!
//! The plaintext is never printed by `Debug` or `Display`: both show `tpk_<id>_***`.
//! Reading it requires a call named `expose_*`.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The literal every token starts with.
pub const PREFIX: &str = "tpk_";
/// Length of a [`KeyId`] in characters.
pub const KEY_ID_LEN: usize = 12;
/// Number of random bytes in a token's secret.
pub const SECRET_BYTES: usize = 32;
/// Length of the base62 secret in characters (62^43 > 2^256 > 62^42).
pub const SECRET_LEN: usize = 43;
/// Length of the base62 CRC32 checksum in characters (62^6 > 2^32).
pub const CHECK_LEN: usize = 6;
/// Total length of a token in characters (and bytes: it is ASCII).
pub const TOKEN_LEN: usize = PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN + CHECK_LEN;

/// Regular expression matching a whole [`KeyId`] (for CRD schemas and docs); the same
/// as `types::apikey::KEY_ID_PATTERN`.
pub const KEY_ID_PATTERN: &str = "^[0-9a-hjkmnp-tv-z]{12}$";
/// Regular expression matching a token inside arbitrary text, for secret scanners
/// (GitHub custom patterns, gitleaks, trufflehog). A hit still needs [`Token::parse`]
/// (checksum) to rule out false positives.
pub const TOKEN_SCAN_PATTERN: &str = r"\btpk_[0-9a-hjkmnp-tv-z]{12}_[0-9A-Za-z]{49}\b";

// Byte offsets inside a token.
const ID_START: usize = PREFIX.len();
const ID_END: usize = ID_START + KEY_ID_LEN;
const SEP: usize = ID_END;
const SECRET_START: usize = SEP + 1;
const SECRET_END: usize = SECRET_START + SECRET_LEN;
const CHECK_START: usize = SECRET_END;

/// The largest valid secret (2^256 - 1) in base62. Fixed-width base62 digits sort in
/// the same order as ASCII, so a secret is in range iff it is `<=` this, bytewise.
const SECRET_MAX: [u8; SECRET_LEN] = base62::encode::<SECRET_BYTES, SECRET_LEN>(&[0xff; 32]);

/// Why a string is not a token. Never contains any part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The string does not have the token's shape.
    #[error("malformed token: {0}")]
    Malformed(Malformed),
    /// The shape is right but the checksum does not match: a typo, a truncated copy or
    /// a made-up token.
    #[error("token checksum does not match (mistyped or corrupted token)")]
    BadChecksum,
    /// A key id is not 12 lowercase Crockford base32 characters.
    #[error("invalid key id: expected 12 characters from 0-9 and a-z except i, l, o, u")]
    InvalidKeyId,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Entropy(#[source] getrandom::Error),
}

/// Which structural check a malformed token failed; safe to log and to use as a
/// bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not exactly [`TOKEN_LEN`] bytes.
    Length,
    /// Does not start with `tpk_`.
    Prefix,
    /// The id is not lowercase Crockford base32.
    KeyId,
    /// No `_` between id and secret.
    Separator,
    /// The secret or checksum contains a character outside `0-9A-Za-z`.
    Charset,
    /// The secret encodes a number of more than 256 bits: no minted token looks like this.
    SecretRange,
}

impl Malformed {
    /// A stable snake_case name (audit reason, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::Length => "length",
            Malformed::Prefix => "prefix",
            Malformed::KeyId => "key_id",
            Malformed::Separator => "separator",
            Malformed::Charset => "charset",
            Malformed::SecretRange => "secret_range",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Malformed::Length => "wrong length",
            Malformed::Prefix => "does not start with tpk_",
            Malformed::KeyId => "key id is not 12 characters from 0-9 and a-z except i, l, o, u",
            Malformed::Separator => "missing _ after the key id",
            Malformed::Charset => "secret contains characters outside 0-9A-Za-z",
            Malformed::SecretRange => "secret out of range",
        };
        f.write_str(what)
    }
}

fn malformed(reason: Malformed) -> TokenError {
    TokenError::Malformed(reason)
}

/// Lowercase Crockford base32: digits and letters except `i`, `l`, `o`, `u`, so an id
/// read aloud or copied from a log has no look-alike characters.
const ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn is_id_char(b: u8) -> bool {
    b.is_ascii_digit() || (b.is_ascii_lowercase() && !matches!(b, b'i' | b'l' | b'o' | b'u'))
}

/// The public identifier of a key: 12 lowercase Crockford base32 characters (60 bits).
///
/// Crockford rather than RFC 4648 base32: the contract's canonical example id
/// `7k2m9q4xw3ab` and the ApiKey CRD's pattern use it.
///
/// Appears in logs, Events, metrics' exemplars and the `X-Turnpike-Key-Id` header; it
/// is not a secret. Implements `Borrow<str>`, so a `HashMap<KeyId, _>` can be queried
/// with the borrowed id of a [`ParsedToken`] without allocating.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Validates a key id.
    ///
    /// # Errors
    /// [`TokenError::InvalidKeyId`] unless `s` is exactly 12 characters of
    /// [`KEY_ID_PATTERN`].
    pub fn parse(s: &str) -> Result<KeyId, TokenError> {
        if is_key_id(s) {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(TokenError::InvalidKeyId)
        }
    }

    /// A new random key id from the operating system's generator.
    ///
    /// # Errors
    /// [`TokenError::Entropy`] if the generator fails.
    pub fn generate() -> Result<KeyId, TokenError> {
        let bits = getrandom::u64().map_err(TokenError::Entropy)?;
        Ok(Self::from_bits(bits))
    }

    /// The low 60 bits of `bits` as 12 base32 characters. data-encoding works on whole
    /// bytes (8 bytes would give 13 characters); 12 shifts are simpler than trimming its
    /// output.
    fn from_bits(bits: u64) -> KeyId {
        let id = (0..KEY_ID_LEN)
            .rev()
            .map(|i| {
                let index = (bits >> (5 * i)) & 0x1f;
                char::from(ID_ALPHABET[index as usize])
            })
            .collect();
        KeyId(id)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_key_id(s: &str) -> bool {
    s.len() == KEY_ID_LEN && s.bytes().all(is_id_char)
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl AsRef<str> for KeyId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyId::parse(s)
    }
}

impl TryFrom<String> for KeyId {
    type Error = TokenError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if is_key_id(&s) {
            Ok(KeyId(s))
        } else {
            Err(TokenError::InvalidKeyId)
        }
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        KeyId::try_from(s).map_err(serde::de::Error::custom)
    }
}

/// An owned, valid token (plaintext). Made by [`Token::mint`] or from a
/// [`ParsedToken`]. `Debug` and `Display` print `tpk_<id>_***`; the plaintext is
/// only reachable through [`Token::expose_token`].
///
/// Deliberately not `PartialEq`: comparing secrets with `==` is not constant-time.
#[derive(Clone)]
pub struct Token {
    /// Invariant: a string [`Token::parse`] accepts.
    text: String,
}

impl Token {
    /// Mints a new token with a random key id and a random 32-byte secret.
    ///
    /// # Errors
    /// [`TokenError::Entropy`] if the operating system's generator fails.
    pub fn mint() -> Result<Token, TokenError> {
        Self::mint_with_id(&KeyId::generate()?)
    }

    /// Mints a new secret for an existing key id (rotation: same id, new secret).
    ///
    /// # Errors
    /// [`TokenError::Entropy`] if the operating system's generator fails.
    pub fn mint_with_id(id: &KeyId) -> Result<Token, TokenError> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(TokenError::Entropy)?;
        Ok(Self::from_parts(id, &secret))
    }

    /// Builds the token for a given id and secret. Deterministic; used by `mint` and by
    /// tests.
    pub(crate) fn from_parts(id: &KeyId, secret: &[u8; SECRET_BYTES]) -> Token {
        let mut text = String::with_capacity(TOKEN_LEN);
        text.push_str(PREFIX);
        text.push_str(id.as_str());
        text.push('_');
        let encoded = base62::encode::<SECRET_BYTES, SECRET_LEN>(secret);
        text.extend(encoded.iter().copied().map(char::from));
        let check = checksum(text.as_bytes());
        text.extend(check.iter().copied().map(char::from));
        Token { text }
    }

    /// Checks that `s` is a well-formed token and borrows its parts.
    ///
    /// Cheap and allocation-free; the checks run in this order and stop at the first
    /// failure: length, prefix, key id alphabet, separator, secret/checksum alphabet,
    /// CRC32 checksum, secret range. It says nothing about whether the key exists or
    /// the secret is right: that is the key lookup and [`crate::hash::verify_parsed`].
    ///
    /// # Errors
    /// [`TokenError::Malformed`] or [`TokenError::BadChecksum`]; the error never
    /// contains any part of `s`.
    pub fn parse(s: &str) -> Result<ParsedToken<'_>, TokenError> {
        let b = s.as_bytes();
        if b.len() != TOKEN_LEN {
            return Err(malformed(Malformed::Length));
        }
        if !b.starts_with(PREFIX.as_bytes()) {
            return Err(malformed(Malformed::Prefix));
        }
        let (head, check) = b.split_at(CHECK_START);
        if !head[ID_START..ID_END].iter().copied().all(is_id_char) {
            return Err(malformed(Malformed::KeyId));
        }
        if head[SEP] != b'_' {
            return Err(malformed(Malformed::Separator));
        }
        if !b[SECRET_START..]
            .iter()
            .all(|&c| base62::digit_value(c).is_some())
        {
            return Err(malformed(Malformed::Charset));
        }
        // Not a secret comparison: anyone can compute the CRC of a token's head.
        if checksum(head) != check {
            return Err(TokenError::BadChecksum);
        }
        if head[SECRET_START..SECRET_END] > SECRET_MAX[..] {
            return Err(malformed(Malformed::SecretRange));
        }
        Ok(ParsedToken { text: s })
    }

    /// The public key id part.
    pub fn id(&self) -> &str {
        self.as_parsed().id()
    }

    /// The key id as an owned [`KeyId`].
    pub fn key_id(&self) -> KeyId {
        self.as_parsed().key_id()
    }

    /// The full plaintext token, `tpk_...`: the credential itself. Show it once, to the
    /// person who will store it; never log it.
    pub fn expose_token(&self) -> &str {
        &self.text
    }

    /// A borrowed view with the same accessors as a parsed request credential.
    pub fn as_parsed(&self) -> ParsedToken<'_> {
        ParsedToken { text: &self.text }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_parsed(), f)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_parsed(), f)
    }
}

impl From<ParsedToken<'_>> for Token {
    fn from(parsed: ParsedToken<'_>) -> Token {
        Token {
            text: parsed.text.to_owned(),
        }
    }
}

/// A well-formed token borrowed from the input [`Token::parse`] was given (a request
/// header, stdin). `Debug` and `Display` print `tpk_<id>_***`.
#[derive(Clone, Copy)]
pub struct ParsedToken<'a> {
    /// Invariant: [`TOKEN_LEN`] ASCII bytes that passed every check of `parse`.
    text: &'a str,
}

impl<'a> ParsedToken<'a> {
    /// The public key id part (12 lowercase Crockford base32 characters).
    pub fn id(&self) -> &'a str {
        // All bytes are ASCII (checked by `parse`), so every index is a char boundary.
        &self.text[ID_START..ID_END]
    }

    /// The key id as an owned [`KeyId`] (allocates).
    pub fn key_id(&self) -> KeyId {
        KeyId(self.id().to_owned())
    }

    /// The base62 secret part, without id and checksum.
    pub fn expose_secret(&self) -> &'a str {
        &self.text[SECRET_START..SECRET_END]
    }

    /// The whole token, `tpk_...`: what is hashed and verified.
    pub fn expose_token(&self) -> &'a str {
        self.text
    }

    /// An owned copy (allocates).
    pub fn to_token(&self) -> Token {
        Token::from(*self)
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}_***", self.id())
    }
}

impl fmt::Display for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}_***", self.id())
    }
}

/// True when `s` is exactly one valid token (checksum included).
pub fn looks_like_token(s: &str) -> bool {
    Token::parse(s).is_ok()
}

/// Every valid token (checksum included) inside `text`, for redaction and leak
/// checks. Regex-free; allocation-free.
pub fn find_tokens(text: &str) -> impl Iterator<Item = ParsedToken<'_>> {
    text.match_indices(PREFIX)
        .filter_map(|(start, _)| text.get(start..start + TOKEN_LEN))
        .filter_map(|candidate| Token::parse(candidate).ok())
}

/// CRC32 of `head`, as fixed-width base62.
fn checksum(head: &[u8]) -> [u8; CHECK_LEN] {
    let crc = crc32fast::hash(head);
    base62::encode::<4, CHECK_LEN>(&crc.to_be_bytes())
}

/// Fixed-width base62 (`0-9A-Za-z`) of big-endian byte strings.
///
/// Written here because the token needs fixed-width, allocation-free, `const`-capable
/// encoding of exactly two sizes (32 and 4 bytes); data-encoding only does power-of-two
/// bases and the base62 crates pad differently or allocate.
pub(crate) mod base62 {
    /// Digit `i` is `ALPHABET[i]`; ASCII order equals digit order.
    pub(crate) const ALPHABET: &[u8; 62] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    /// The value of one base62 digit.
    pub(crate) const fn digit_value(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'A'..=b'Z' => Some(c - b'A' + 10),
            b'a'..=b'z' => Some(c - b'a' + 36),
            _ => None,
        }
    }

    /// `bytes` (big-endian number) as exactly `M` digits, left-padded with `0`.
    pub(crate) const fn encode<const N: usize, const M: usize>(bytes: &[u8; N]) -> [u8; M] {
        // 62^M >= 256^N, i.e. M * log2(62) >= 8 * N, with log2(62) ~ 5.9542 rounded
        // down: any N-byte value fits in M digits.
        const { assert!(M * 5954 >= N * 8000, "base62 width too small") };
        let mut work = *bytes;
        let mut out = [b'0'; M];
        let mut pos = M;
        while pos > 0 {
            pos -= 1;
            // Divide `work` by 62 in place (schoolbook long division); the remainder
            // is the next digit from the right.
            let mut rem: u32 = 0;
            let mut i = 0;
            while i < N {
                let x = rem * 256 + work[i] as u32;
                work[i] = (x / 62) as u8;
                rem = x % 62;
                i += 1;
            }
            out[pos] = ALPHABET[rem as usize];
        }
        out
    }

    /// `M` base62 digits as an `N`-byte big-endian number; `None` on a non-digit or if
    /// the value does not fit in `N` bytes.
    #[cfg(test)]
    pub(crate) fn decode<const N: usize, const M: usize>(digits: &[u8; M]) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        for &c in digits {
            let mut carry = u32::from(digit_value(c)?);
            for byte in out.iter_mut().rev() {
                let x = u32::from(*byte) * 62 + carry;
                *byte = (x & 0xff) as u8;
                carry = x >> 8;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Token {
        let id = KeyId::parse("7k2m9q4xw3ab").unwrap();
        Token::from_parts(&id, &[0xa5; 32])
    }

    #[test]
    fn layout_constants() {
        assert_eq!(TOKEN_LEN, 66);
        assert_eq!(CHECK_START, 60);
        // 2^256 - 1 needs all 43 digits; 2^256 would not fit.
        assert_eq!(SECRET_MAX[0], b'y');
    }

    #[test]
    fn mint_parse_round_trip() -> Result<(), TokenError> {
        let token = Token::mint()?;
        let text = token.expose_token();
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(text.starts_with("tpk_"));
        let parsed = Token::parse(text)?;
        assert_eq!(parsed.id(), token.id());
        assert_eq!(parsed.expose_token(), text);
        assert_eq!(parsed.expose_secret(), &text[17..60]);
        assert_eq!(parsed.key_id(), token.key_id());
        assert_eq!(KeyId::parse(parsed.id())?, token.key_id());
        Ok(())
    }

    #[test]
    fn mint_with_id_keeps_id_and_changes_secret() -> Result<(), TokenError> {
        let first = Token::mint()?;
        let second = Token::mint_with_id(&first.key_id())?;
        assert_eq!(first.id(), second.id());
        assert_ne!(first.expose_token(), second.expose_token());
        Token::parse(second.expose_token())?;
        Ok(())
    }

    #[test]
    fn small_secrets_are_zero_padded() -> Result<(), TokenError> {
        let token = Token::from_parts(&KeyId::from_bits(0), &[0; 32]);
        let parsed = Token::parse(token.expose_token())?;
        assert_eq!(parsed.id(), "000000000000");
        assert_eq!(parsed.expose_secret(), "0".repeat(43));
        Ok(())
    }

    #[test]
    fn rejects_structural_errors() {
        let good = sample();
        let good = good.expose_token();
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), malformed(Malformed::Length)),
            (good[..65].to_owned(), malformed(Malformed::Length)),
            (format!("{good}x"), malformed(Malformed::Length)),
            (format!("tpx_{}", &good[4..]), malformed(Malformed::Prefix)),
            (format!("TPK_{}", &good[4..]), malformed(Malformed::Prefix)),
            (good.to_uppercase(), malformed(Malformed::Prefix)),
            (
                format!("tpk_{}{}", good[4..16].to_uppercase(), &good[16..]),
                malformed(Malformed::KeyId),
            ),
            (
                format!("tpk_7k2m9q4xw3al{}", &good[16..]),
                malformed(Malformed::KeyId),
            ),
            (
                format!("{}-{}", &good[..16], &good[17..]),
                malformed(Malformed::Separator),
            ),
            (
                format!("{}+{}", &good[..30], &good[31..]),
                malformed(Malformed::Charset),
            ),
            (
                format!("{}_{}", &good[..62], &good[63..]),
                malformed(Malformed::Charset),
            ),
            // Multi-byte character keeping the byte length at 66.
            (
                format!("{}é{}", &good[..30], &good[32..]),
                malformed(Malformed::Charset),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(Token::parse(&input).err(), Some(expected), "{input:?}");
        }
    }

    #[test]
    fn every_single_character_change_is_rejected() {
        let token = sample();
        let good = token.expose_token().as_bytes();
        let mut candidates: Vec<u8> = base62::ALPHABET.to_vec();
        candidates.extend_from_slice(b"_-+/= \0");
        for pos in 0..TOKEN_LEN {
            for &c in &candidates {
                if c == good[pos] {
                    continue;
                }
                let mut changed = good.to_vec();
                changed[pos] = c;
                let Ok(changed) = String::from_utf8(changed) else {
                    continue;
                };
                let result = Token::parse(&changed);
                assert!(result.is_err(), "position {pos} -> {}", c as char);
                let well_formed = if (ID_START..ID_END).contains(&pos) {
                    is_id_char(c)
                } else if pos >= SECRET_START {
                    base62::digit_value(c).is_some()
                } else {
                    false // prefix or separator
                };
                if well_formed {
                    // The shape is still right: only the checksum can catch it.
                    assert_eq!(
                        result.err(),
                        Some(TokenError::BadChecksum),
                        "position {pos}"
                    );
                }
            }
        }
    }

    #[test]
    fn secret_out_of_range_is_rejected() {
        // 43 'z's is 62^43 - 1 > 2^256 - 1; give it a valid checksum.
        let mut text = format!("tpk_aaaaaaaaaaaa_{}", "z".repeat(43));
        let check = checksum(text.as_bytes());
        text.push_str(std::str::from_utf8(&check).unwrap());
        assert_eq!(
            Token::parse(&text).err(),
            Some(malformed(Malformed::SecretRange))
        );
    }

    #[test]
    fn debug_and_display_hide_the_secret() {
        let token = sample();
        let secret = token.as_parsed().expose_secret().to_owned();
        for shown in [
            format!("{token:?}"),
            format!("{token}"),
            format!("{:?}", token.as_parsed()),
            format!("{}", token.as_parsed()),
        ] {
            assert_eq!(shown, "tpk_7k2m9q4xw3ab_***");
            assert!(!shown.contains(&secret));
        }
    }

    #[test]
    fn errors_do_not_echo_input() {
        let token = sample();
        let mut tampered = token.expose_token().to_owned();
        tampered.replace_range(20..21, if &tampered[20..21] == "A" { "B" } else { "A" });
        let err = Token::parse(&tampered).unwrap_err();
        assert_eq!(err, TokenError::BadChecksum);
        assert!(!err.to_string().contains(&tampered[17..60]));
    }

    #[test]
    fn key_id_validation() {
        assert!(KeyId::parse("7k2m9q4xw3ab").is_ok());
        for bad in [
            "",
            "7k2m9q4xw3a",
            "7k2m9q4xw3abc",
            "7K2M9Q4XW3AB",
            "7k2m9q4xw3ai",
            "7k2m9q4xw3al",
            "7k2m9q4xw3ao",
            "7k2m9q4xw3au",
            "7k2m9q4xw3a_",
            "7k2m9q4xw3a-",
        ] {
            assert_eq!(KeyId::parse(bad), Err(TokenError::InvalidKeyId), "{bad}");
        }
        let generated = KeyId::generate().unwrap();
        assert!(KeyId::parse(generated.as_str()).is_ok());
        assert_eq!(KeyId::from_bits(u64::MAX).as_str(), "zzzzzzzzzzzz");
        assert_eq!(
            KeyId::from_bits(0x0123_4567_89ab_cdef).as_str(),
            "28t5cy4tqkff"
        );
    }

    #[test]
    fn key_id_serde() {
        let id: KeyId = serde_json::from_str("\"7k2m9q4xw3ab\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"7k2m9q4xw3ab\"");
        assert!(serde_json::from_str::<KeyId>("\"NOPE\"").is_err());
    }

    #[test]
    fn key_id_map_lookup_by_borrowed_id() {
        let mut map = std::collections::HashMap::new();
        let token = sample();
        map.insert(token.key_id(), 1);
        let parsed = Token::parse(token.expose_token()).unwrap();
        assert_eq!(map.get(parsed.id()), Some(&1));
    }

    #[test]
    fn finds_tokens_in_text() {
        let a = Token::mint().unwrap();
        let b = Token::mint().unwrap();
        let text = format!(
            "export KEY={}\n tpk_ nothing tpk_{} \"{}\" tpk_é",
            a.expose_token(),
            "a".repeat(70),
            b.expose_token()
        );
        let found: Vec<&str> = find_tokens(&text).map(|t| t.expose_token()).collect();
        assert_eq!(found, vec![a.expose_token(), b.expose_token()]);
        assert!(looks_like_token(a.expose_token()));
        assert!(!looks_like_token(&text));
    }

    proptest! {
        #[test]
        fn prop_from_parts_round_trip(bits in any::<u64>(), secret in any::<[u8; 32]>()) {
            let id = KeyId::from_bits(bits);
            let token = Token::from_parts(&id, &secret);
            let parsed = Token::parse(token.expose_token());
            prop_assert!(parsed.is_ok());
            let parsed = parsed.unwrap();
            prop_assert_eq!(parsed.id(), id.as_str());
            let digits: [u8; SECRET_LEN] = parsed.expose_secret().as_bytes().try_into().unwrap();
            prop_assert_eq!(base62::decode::<SECRET_BYTES, SECRET_LEN>(&digits), Some(secret));
        }

        #[test]
        fn prop_parse_never_panics(s in "\\PC{0,80}") {
            let _ = Token::parse(&s);
        }

        #[test]
        fn prop_parse_near_valid_never_panics(
            s in "tpk_[0-9a-zA-Z]{11,13}[_-][0-9A-Za-z_é]{47,51}"
        ) {
            if let Ok(parsed) = Token::parse(&s) {
                // Anything accepted is canonical: re-encoding gives the same string.
                let digits: [u8; SECRET_LEN] = parsed.expose_secret().as_bytes().try_into().unwrap();
                let secret = base62::decode::<SECRET_BYTES, SECRET_LEN>(&digits).unwrap();
                let again = Token::from_parts(&parsed.key_id(), &secret);
                prop_assert_eq!(again.expose_token(), s.as_str());
            }
        }

        #[test]
        fn prop_any_single_byte_change_is_rejected(
            bits in any::<u64>(),
            secret in any::<[u8; 32]>(),
            pos in 0..TOKEN_LEN,
            byte in any::<u8>(),
        ) {
            let token = Token::from_parts(&KeyId::from_bits(bits), &secret);
            let mut bytes = token.expose_token().as_bytes().to_vec();
            prop_assume!(bytes[pos] != byte);
            bytes[pos] = byte;
            if let Ok(changed) = std::str::from_utf8(&bytes) {
                prop_assert!(Token::parse(changed).is_err());
            }
        }

        #[test]
        fn prop_parse_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 60..70)) {
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = Token::parse(s);
            }
        }

        #[test]
        fn prop_base62_round_trip_32(bytes in any::<[u8; 32]>()) {
            let digits = base62::encode::<32, 43>(&bytes);
            prop_assert!(digits[..] <= SECRET_MAX[..]);
            prop_assert_eq!(base62::decode::<32, 43>(&digits), Some(bytes));
        }

        #[test]
        fn prop_base62_round_trip_4(bytes in any::<[u8; 4]>()) {
            let digits = base62::encode::<4, 6>(&bytes);
            prop_assert_eq!(base62::decode::<4, 6>(&digits), Some(bytes));
        }

        #[test]
        fn prop_base62_order_matches_numeric_order(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            let (da, db) = (base62::encode::<32, 43>(&a), base62::encode::<32, 43>(&b));
            prop_assert_eq!(a.cmp(&b), da.cmp(&db));
        }
    }
}
