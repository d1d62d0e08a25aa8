//! Human duration strings (`500ms`, `1s`, `5m`, `1h30m`, `24h`) as used in every policy.

use std::{borrow::Cow, fmt, str::FromStr};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Regular expression the CRD schema uses for duration strings. Kept in sync with
/// [`Duration::from_str`] by a test.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,9}(ms|s|m|h))+$";

/// Upper bound for any duration in a policy: 366 days. Longer windows make no sense for
/// rate limits and would overflow nothing, but they are almost certainly typos.
pub const MAX_DURATION_MS: u64 = 366 * 24 * 3600 * 1000;

/// A non-negative duration with millisecond resolution, written as a string of
/// `<number><unit>` parts (`ms`, `s`, `m`, `h`), e.g. `1h30m`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    millis: u64,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `<number><unit>`.
    #[error(
        "invalid duration {0:?}: expected a number followed by ms, s, m or h, e.g. 500ms, 1s, 5m, 1h"
    )]
    Syntax(String),
    /// Larger than [`MAX_DURATION_MS`].
    #[error("invalid duration {0:?}: longer than 366 days")]
    TooLong(String),
}

impl Duration {
    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self {
            millis: secs * 1000,
        }
    }

    /// Whole milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// Whole seconds, rounded down.
    pub const fn as_secs(self) -> u64 {
        self.millis / 1000
    }

    /// As a standard library duration.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }

    /// True for zero.
    pub const fn is_zero(self) -> bool {
        self.millis == 0
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || DurationError::Syntax(truncate(s));
        if s.is_empty() || s.len() > 64 {
            return Err(syntax());
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total: u64 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[start..i];
            if digits.is_empty() || digits.len() > 9 {
                return Err(syntax());
            }
            let n: u64 = digits.parse().map_err(|_| syntax())?;
            let unit_ms = if s[i..].starts_with("ms") {
                i += 2;
                1
            } else {
                let unit = match bytes.get(i) {
                    Some(b's') => 1_000,
                    Some(b'm') => 60_000,
                    Some(b'h') => 3_600_000,
                    _ => return Err(syntax()),
                };
                i += 1;
                unit
            };
            total = total
                .checked_add(n.saturating_mul(unit_ms))
                .ok_or_else(|| DurationError::TooLong(truncate(s)))?;
        }
        if total > MAX_DURATION_MS {
            return Err(DurationError::TooLong(truncate(s)));
        }
        Ok(Self { millis: total })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

impl fmt::Display for Duration {
    /// Canonical form: the largest units first, zero parts left out (`90s` prints `1m30s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.millis;
        for (unit, ms) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
            if rest >= ms {
                write!(f, "{}{unit}", rest / ms)?;
                rest %= ms;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 64,
            "description": "A duration such as 500ms, 1s, 5m, 1h or 1h30m.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("500ms", 500),
            ("1s", 1_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("24h", 86_400_000),
            ("1h30m", 5_400_000),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                text.parse::<Duration>(),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_bad_forms_with_a_clear_message() {
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "1.5s",
            "-1s",
            "1 s",
            "1d",
            "10000000000s",
            "9999h",
        ] {
            let err = bad.parse::<Duration>().expect_err(bad);
            assert!(err.to_string().contains("invalid duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(Duration::from_millis(90_000).to_string(), "1m30s");
        assert_eq!(Duration::from_millis(1_500).to_string(), "1s500ms");
        assert_eq!(Duration::from_secs(86_400).to_string(), "24h");
    }

    proptest! {
        #[test]
        fn display_round_trips(ms in 0u64..MAX_DURATION_MS) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Duration>();
        }

        #[test]
        fn agrees_with_the_schema_pattern(s in "[0-9]{0,3}(ms|s|m|h|d|x)?[0-9]{0,2}(ms|s|m|h)?") {
            let re = regex::Regex::new(DURATION_PATTERN).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // The pattern checks syntax; parse also bounds the total (TooLong), which the
            // compiler reports with its own message.
            let syntax_ok = !matches!(s.parse::<Duration>(), Err(DurationError::Syntax(_)));
            prop_assert_eq!(re.is_match(&s), syntax_ok);
        }
    }
}
