//! argon2id hashing of API tokens, as PHC strings.
//!
//! What is hashed is the **whole token string** (`tpk_<id>_<secret><check>`), not only
//! the secret: the hash then binds the key id too, so a hash copied into another
//! ApiKey (with another `keyId`) never verifies, and the sidecar can pass the header
//! value it already parsed without slicing it. The id and checksum add no secrecy;
//! the 256-bit secret is what makes the input unguessable.
//!
//! Parameters: argon2id v19, m = 19456 KiB, t = 2, p = 1, 16-byte salt, 32-byte output
//! (OWASP Password Storage Cheat Sheet minimum; see `docs/security.md`).
//!
//! Hashes arrive in user-written ApiKey manifests, so [`PhcHash::parse`] bounds the
//! cost parameters: a crafted hash must not make the sidecar spend gigabytes or
//! seconds per verification.

use std::fmt;

use argon2::password_hash::phc::PasswordHash;
use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::token::{ParsedToken, Token};

/// Memory cost of new hashes, in KiB (19 MiB).
pub const M_COST_KIB: u32 = 19_456;
/// Iterations of new hashes.
pub const T_COST: u32 = 2;
/// Lanes of new hashes.
pub const P_COST: u32 = 1;
/// Salt length of new hashes, in bytes.
pub const SALT_LEN: usize = 16;
/// Output length of new hashes, in bytes.
pub const OUTPUT_LEN: usize = 32;

/// Accepted memory cost range, in KiB (8 MiB ..= 256 MiB).
pub const M_COST_RANGE: (u32, u32) = (8_192, 65_536);
/// Accepted iteration range.
pub const T_COST_RANGE: (u32, u32) = (1, 4);
/// Accepted lane range.
pub const P_COST_RANGE: (u32, u32) = (1, 4);
/// Shortest accepted salt, in bytes.
pub const MIN_SALT_LEN: usize = 8;
/// Accepted output length range, in bytes.
pub const OUTPUT_LEN_RANGE: (usize, usize) = (16, 64);

/// Why a hash could not be made or accepted. Never contains a token or a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not a PHC string at all.
    #[error("not a PHC string (expected $argon2id$v=19$m=...,t=...,p=...$<salt>$<hash>)")]
    Malformed,
    /// Another algorithm than argon2id (argon2i, argon2d, bcrypt, ...).
    #[error("unsupported algorithm: only argon2id is accepted")]
    Algorithm,
    /// Missing version or a version other than 19 (0x13).
    #[error("unsupported argon2 version: only v=19 is accepted")]
    Version,
    /// One of `m`, `t`, `p` is missing.
    #[error("argon2 parameter {0} is missing")]
    MissingParam(&'static str),
    /// A parameter other than `m`, `t`, `p` (e.g. `keyid`, `data`).
    #[error("unsupported argon2 parameter: only m, t and p are accepted")]
    UnknownParam,
    /// A cost parameter outside the accepted bounds.
    #[error("argon2 parameter {name}={value} is outside the accepted range {min}..={max}")]
    ParamOutOfRange {
        /// `m` (KiB), `t` or `p`.
        name: &'static str,
        /// The value found.
        value: u32,
        /// Smallest accepted value.
        min: u32,
        /// Largest accepted value.
        max: u32,
    },
    /// The combination of parameters is rejected by argon2 itself (e.g. m < 8 * p).
    #[error("argon2 rejected the parameters")]
    Params,
    /// Salt missing or shorter than [`MIN_SALT_LEN`].
    #[error("salt missing or shorter than 8 bytes")]
    Salt,
    /// Output missing or not within [`OUTPUT_LEN_RANGE`].
    #[error("hash output missing or not between 16 and 64 bytes")]
    Output,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Entropy(#[source] getrandom::Error),
    /// argon2 failed while hashing (out of memory, ...).
    #[error("argon2 hashing failed")]
    Hashing,
}

/// A validated argon2id PHC string (`$argon2id$v=19$m=..,t=..,p=..$<salt>$<hash>`)
/// with bounded cost parameters.
///
/// `Debug` prints `PhcHash(***)`; the string is reachable through
/// [`PhcHash::as_str`]. Deserializing validates.
#[derive(Clone)]
pub struct PhcHash {
    text: String,
    parsed: PasswordHash,
}

impl PhcHash {
    /// Parses and validates a PHC string: algorithm argon2id, version 19, exactly the
    /// parameters `m`, `t`, `p` within the accepted ranges, salt of at least 8 bytes,
    /// output of 16 to 64 bytes. No argon2 work is done.
    ///
    /// # Errors
    /// A [`HashError`] naming the first rule broken.
    pub fn parse(s: &str) -> Result<PhcHash, HashError> {
        let parsed = PasswordHash::new(s).map_err(|_| HashError::Malformed)?;
        if parsed.algorithm != ARGON2ID_IDENT {
            return Err(HashError::Algorithm);
        }
        if parsed.version != Some(Version::V0x13.into()) {
            return Err(HashError::Version);
        }
        let (mut m, mut t, mut p) = (None, None, None);
        for (name, value) in parsed.params.iter() {
            let slot = match name.as_str() {
                "m" => &mut m,
                "t" => &mut t,
                "p" => &mut p,
                _ => return Err(HashError::UnknownParam),
            };
            *slot = Some(value.decimal().map_err(|_| HashError::Malformed)?);
        }
        check_range("m", m, M_COST_RANGE)?;
        check_range("t", t, T_COST_RANGE)?;
        check_range("p", p, P_COST_RANGE)?;
        match &parsed.salt {
            Some(salt) if salt.len() >= MIN_SALT_LEN => {}
            _ => return Err(HashError::Salt),
        }
        match &parsed.hash {
            Some(out) if (OUTPUT_LEN_RANGE.0..=OUTPUT_LEN_RANGE.1).contains(&out.len()) => {}
            _ => return Err(HashError::Output),
        }
        // Whatever else argon2 itself requires (m >= 8 * p, ...).
        Params::try_from(&parsed).map_err(|_| HashError::Params)?;
        Ok(PhcHash {
            text: s.to_owned(),
            parsed,
        })
    }

    /// The PHC string, for manifests and bundles. Not for logs.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn check_range(name: &'static str, value: Option<u32>, range: (u32, u32)) -> Result<(), HashError> {
    let value = value.ok_or(HashError::MissingParam(name))?;
    let (min, max) = range;
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(HashError::ParamOutOfRange {
            name,
            value,
            min,
            max,
        })
    }
}

impl PartialEq for PhcHash {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for PhcHash {}

impl fmt::Debug for PhcHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhcHash(***)")
    }
}

impl std::str::FromStr for PhcHash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PhcHash::parse(s)
    }
}

impl Serialize for PhcHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for PhcHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        PhcHash::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Hashes a token (the whole `tpk_...` string) with argon2id and the parameters above,
/// under a fresh random 16-byte salt.
///
/// # Errors
/// [`HashError::Entropy`] if no salt could be drawn, [`HashError::Hashing`] if argon2
/// fails.
pub fn hash_token(token: &Token) -> Result<PhcHash, HashError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(HashError::Entropy)?;
    let params = Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN))
        .map_err(|_| HashError::Hashing)?;
    count_argon2_call();
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_with_salt(token.expose_token().as_bytes(), &salt)
        .map_err(|_| HashError::Hashing)?;
    PhcHash::parse(&hash.to_string())
}

/// Checks a token string against a hash. The token's format and checksum are checked
/// first, so a malformed or mistyped token returns `false` without any argon2 work.
pub fn verify(hash: &PhcHash, token: &str) -> bool {
    match Token::parse(token) {
        Ok(parsed) => verify_parsed(hash, &parsed),
        Err(_) => false,
    }
}

/// Checks an already parsed token against a hash: one argon2id computation with the
/// hash's own (bounded) parameters, compared in constant time (the `phc` crate's
/// `Output` equality uses a constant-time comparison).
///
/// This is the expensive step (tens of milliseconds); the sidecar runs it on a
/// bounded blocking pool and caches the result.
pub fn verify_parsed(hash: &PhcHash, token: &ParsedToken<'_>) -> bool {
    count_argon2_call();
    // The algorithm, version and parameters come from `hash` (validated by `parse`).
    Argon2::default()
        .verify_password(token.expose_token().as_bytes(), &hash.parsed)
        .is_ok()
}

#[cfg(test)]
thread_local! {
    /// argon2 computations started on this thread (tests only).
    static ARGON2_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
fn count_argon2_call() {
    ARGON2_CALLS.with(|c| c.set(c.get() + 1));
}

#[cfg(not(test))]
fn count_argon2_call() {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn argon2_calls() -> u32 {
        ARGON2_CALLS.with(std::cell::Cell::get)
    }

    /// A valid hash string with the given middle part (`v=..$m=..`), real salt and
    /// output shapes. Only parsed, never verified.
    fn phc(alg: &str, version_and_params: &str) -> String {
        format!(
            "${alg}${version_and_params}$c2FsdHNhbHRzYWx0c2FsdA$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI"
        )
    }

    #[test]
    fn hash_then_verify() -> Result<(), Box<dyn std::error::Error>> {
        let token = Token::mint()?;
        let other = Token::mint_with_id(&token.key_id())?;
        let before = argon2_calls();
        let hash = hash_token(&token)?;
        let text = hash.as_str();
        assert!(
            text.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{text}"
        );
        // 16-byte salt -> 22 base64 chars, 32-byte output -> 43.
        let parts: Vec<&str> = text.split('$').collect();
        assert_eq!(parts.len(), 6);
        assert_eq!(parts[4].len(), 22);
        assert_eq!(parts[5].len(), 43);

        assert!(verify(&hash, token.expose_token()));
        // Same id, other secret: full argon2 run, mismatch.
        assert!(!verify(&hash, other.expose_token()));
        assert_eq!(argon2_calls() - before, 3);

        // Round trip through the string form.
        let again = PhcHash::parse(text)?;
        assert_eq!(again, hash);
        Ok(())
    }

    #[test]
    fn tampered_token_is_rejected_before_argon2() -> Result<(), Box<dyn std::error::Error>> {
        // A fixed, syntactically valid hash: no argon2 work needed to build it.
        let hash = PhcHash::parse(&phc("argon2id", "v=19$m=19456,t=2,p=1"))?;
        let token = Token::mint()?;
        let mut tampered = token.expose_token().as_bytes().to_vec();
        tampered[30] = if tampered[30] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered)?;

        let before = argon2_calls();
        assert_eq!(
            Token::parse(&tampered).err(),
            Some(crate::token::TokenError::BadChecksum)
        );
        assert!(!verify(&hash, &tampered));
        assert!(!verify(&hash, "not a token"));
        assert!(!verify(&hash, ""));
        assert_eq!(argon2_calls(), before, "argon2 ran for a malformed token");
        Ok(())
    }

    #[test]
    fn parse_accepts_bounds() {
        for ok in [
            "v=19$m=19456,t=2,p=1",
            "v=19$m=8192,t=1,p=1",
            "v=19$m=65536,t=4,p=4",
            "v=19$p=1,t=2,m=19456",
        ] {
            assert!(PhcHash::parse(&phc("argon2id", ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn parse_rejects() {
        let cases: Vec<(String, HashError)> = vec![
            (phc("argon2i", "v=19$m=19456,t=2,p=1"), HashError::Algorithm),
            (phc("argon2d", "v=19$m=19456,t=2,p=1"), HashError::Algorithm),
            (phc("scrypt", "v=19$m=19456,t=2,p=1"), HashError::Algorithm),
            (phc("argon2id", "v=16$m=19456,t=2,p=1"), HashError::Version),
            (
                "$argon2id$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI".into(),
                HashError::Version,
            ),
            (
                phc("argon2id", "v=19$m=4194304,t=2,p=1"),
                HashError::ParamOutOfRange { name: "m", value: 4_194_304, min: 8192, max: 65_536 },
            ),
            (
                phc("argon2id", "v=19$m=4096,t=2,p=1"),
                HashError::ParamOutOfRange { name: "m", value: 4096, min: 8192, max: 65_536 },
            ),
            (
                phc("argon2id", "v=19$m=19456,t=1000,p=1"),
                HashError::ParamOutOfRange { name: "t", value: 1000, min: 1, max: 4 },
            ),
            (
                phc("argon2id", "v=19$m=19456,t=0,p=1"),
                HashError::ParamOutOfRange { name: "t", value: 0, min: 1, max: 4 },
            ),
            (
                phc("argon2id", "v=19$m=19456,t=2,p=64"),
                HashError::ParamOutOfRange { name: "p", value: 64, min: 1, max: 4 },
            ),
            (phc("argon2id", "v=19$m=19456,t=2"), HashError::MissingParam("p")),
            (phc("argon2id", "v=19$m=19456,t=2,p=1,data=YWJj"), HashError::UnknownParam),
            (phc("argon2id", "v=19$m=19456,t=2,p=1,keyid=YWJj"), HashError::UnknownParam),
            (phc("argon2id", "v=19$m=abc,t=2,p=1"), HashError::Malformed),
            (
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA".into(),
                HashError::Output,
            ),
            (
                // 10-byte output: valid PHC, below our minimum.
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$MTIzNDU2Nzg5MA".into(),
                HashError::Output,
            ),
            ("$argon2id$v=19$m=19456,t=2,p=1".into(), HashError::Salt),
            ("".into(), HashError::Malformed),
            ("garbage".into(), HashError::Malformed),
            ("$argon2id$v=19$m=19456,t=2,p=1$!!!$???".into(), HashError::Malformed),
            ("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".into(), HashError::Malformed),
        ];
        for (input, expected) in cases {
            assert_eq!(PhcHash::parse(&input).err(), Some(expected), "{input}");
        }
    }

    #[test]
    fn debug_hides_token_and_hash() -> Result<(), Box<dyn std::error::Error>> {
        let hash = PhcHash::parse(&phc("argon2id", "v=19$m=19456,t=2,p=1"))?;
        assert_eq!(format!("{hash:?}"), "PhcHash(***)");
        let token = Token::mint()?;
        let secret = token.as_parsed().expose_secret();
        assert!(!format!("{token:?} {token}").contains(secret));
        Ok(())
    }

    /// Cost of one verification and of one `Token::parse`, for `docs/security.md`.
    /// Prints figures, asserts nothing about time. Run in release mode:
    /// `cargo test --release -p turnpike-api --lib hash::tests::measure -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement, run by hand in release mode"]
    fn measure_verify_cost() -> Result<(), Box<dyn std::error::Error>> {
        use std::time::Instant;
        const RUNS: usize = 30;
        let token = Token::mint()?;
        let hash = hash_token(&token)?;
        let mut millis: Vec<f64> = (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                let ok = verify(&hash, token.expose_token());
                let elapsed = start.elapsed().as_secs_f64() * 1e3;
                assert!(ok);
                elapsed
            })
            .collect();
        millis.sort_by(f64::total_cmp);
        println!(
            "argon2id m=19456,t=2,p=1 verify over {RUNS} runs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
            millis[0],
            millis[RUNS / 2],
            millis[RUNS - 1]
        );

        // Worst case `PhcHash::parse` lets through: the upper bounds of every range.
        let worst = Params::new(M_COST_RANGE.1, T_COST_RANGE.1, P_COST_RANGE.1, Some(32))
            .map_err(|_| HashError::Params)?;
        let worst = Argon2::new(Algorithm::Argon2id, Version::V0x13, worst)
            .hash_password_with_salt(token.expose_token().as_bytes(), b"saltsaltsaltsalt")
            .map_err(|_| HashError::Hashing)?;
        let worst = PhcHash::parse(&worst.to_string())?;
        let start = Instant::now();
        assert!(verify(&worst, token.expose_token()));
        println!(
            "argon2id at the accepted maximum (m=65536,t=4,p=4): {:.0} ms for one verification",
            start.elapsed().as_secs_f64() * 1e3
        );

        const PARSES: u32 = 1_000_000;
        let text = token.expose_token();
        let start = Instant::now();
        for _ in 0..PARSES {
            std::hint::black_box(Token::parse(std::hint::black_box(text)))?;
        }
        let per_parse = start.elapsed().as_secs_f64() * 1e9 / f64::from(PARSES);
        println!("Token::parse (valid token): {per_parse:.0} ns per call over {PARSES} calls");
        Ok(())
    }

    #[test]
    fn serde_validates() -> Result<(), Box<dyn std::error::Error>> {
        let text = phc("argon2id", "v=19$m=19456,t=2,p=1");
        let hash: PhcHash = serde_json::from_value(serde_json::Value::String(text.clone()))?;
        assert_eq!(
            serde_json::to_value(&hash)?,
            serde_json::Value::String(text)
        );
        let bad = phc("argon2id", "v=19$m=19456,t=2,p=100");
        let err = serde_json::from_value::<PhcHash>(serde_json::Value::String(bad))
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("p=100")));
        Ok(())
    }
}
