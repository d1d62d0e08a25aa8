//! Value parsers for command-line arguments. Each returns a message naming the
//! offending value, which clap prints as a usage error (exit code 2).
//!
//! Scopes are checked by `turnpike_api::validate` (the compiler's own rule); names
//! follow the Kubernetes rules for object names and namespaces.

use jiff::{SignedDuration, Timestamp};
use turnpike_api::duration::Duration;

/// Longest DNS-1123 subdomain (object names).
const MAX_SUBDOMAIN_LEN: usize = 253;
/// Longest DNS-1123 label (namespaces, targets).
const MAX_LABEL_LEN: usize = 63;
/// Longest ApiKey name the operator can issue: its Secrets `turnpike-key-<name>` and
/// `<name>-token` must fit in a 253-character name too.
const MAX_API_KEY_NAME_LEN: usize = MAX_SUBDOMAIN_LEN - "turnpike-key-".len();
/// Longest owner text.
const MAX_OWNER_LEN: usize = 256;

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            alnum(first) && alnum(last) && b.iter().all(|c| alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

/// An object name: a DNS-1123 subdomain (lowercase alphanumerics, `-` and `.`, starting
/// and ending with an alphanumeric, dot-separated labels, at most 253 characters).
pub fn resource_name(s: &str) -> Result<String, String> {
    if s.len() <= MAX_SUBDOMAIN_LEN && s.split('.').all(is_label) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a valid name: use at most {MAX_SUBDOMAIN_LEN} lowercase letters, \
             digits, '-' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// A namespace or target name: a DNS-1123 label (at most 63 lowercase alphanumerics or
/// `-`, starting and ending with an alphanumeric).
pub fn dns_label(s: &str) -> Result<String, String> {
    if s.len() <= MAX_LABEL_LEN && is_label(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a valid DNS label: use at most {MAX_LABEL_LEN} lowercase letters, \
             digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// The name of an ApiKey the operator issues: an object name short enough that the
/// operator's Secrets for it have valid names.
pub fn api_key_name(s: &str) -> Result<String, String> {
    let name = resource_name(s)?;
    if name.len() > MAX_API_KEY_NAME_LEN {
        return Err(format!(
            "{s:?} is too long: at most {MAX_API_KEY_NAME_LEN} characters, so that the \
             operator's Secrets turnpike-key-<name> and <name>-token fit"
        ));
    }
    Ok(name)
}

/// A scope such as `orders:read`, checked by the compiler's rule.
pub fn scope(s: &str) -> Result<String, String> {
    turnpike_api::validate::scope(s)?;
    Ok(s.to_owned())
}

/// Free text for audit: 1 to 256 characters, no control characters.
pub fn owner(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("owner must not be empty".to_owned());
    }
    if s.chars().count() > MAX_OWNER_LEN {
        return Err(format!("owner is longer than {MAX_OWNER_LEN} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("owner must not contain control characters".to_owned());
    }
    Ok(s.to_owned())
}

/// An expiry: an instant in RFC 3339 with an explicit offset (`2027-06-30T00:00:00Z`),
/// or a duration from now (`720h` for 30 days, `1h30m`). It must lie in the future.
pub fn expires(s: &str) -> Result<Timestamp, String> {
    expires_at(s, Timestamp::now())
}

/// [`expires`] with the clock as a parameter.
pub fn expires_at(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    let at = match s.parse::<Timestamp>() {
        Ok(at) => at,
        Err(err) => {
            let Ok(d) = s.parse::<Duration>() else {
                return Err(format!(
                    "{s:?} is neither an RFC 3339 timestamp (e.g. 2027-06-30T00:00:00Z: {err}) \
                     nor a duration from now (e.g. 720h, at most 366 days)"
                ));
            };
            let millis = i64::try_from(d.as_millis()).map_err(|_| format!("{s:?} is too long"))?;
            // Whole seconds (cut, never rounded up): `expiresAt` reads better without a
            // fraction.
            let whole = jiff::TimestampRound::new()
                .smallest(jiff::Unit::Second)
                .mode(jiff::RoundMode::Trunc);
            now.checked_add(SignedDuration::from_millis(millis))
                .and_then(|at| at.round(whole))
                .map_err(|err| format!("{s:?} is out of range: {err}"))?
        }
    };
    if at <= now {
        return Err(format!("{s:?} is in the past: a key would be born expired"));
    }
    Ok(at)
}

/// How long to wait for the operator: a positive duration such as `60s` or `2m`.
pub fn timeout(s: &str) -> Result<std::time::Duration, String> {
    let d: Duration = s.parse().map_err(|e| format!("{e}"))?;
    if d.is_zero() {
        return Err(format!("timeout {s:?} must be longer than zero"));
    }
    Ok(d.to_std())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "billing",
            "a",
            "billing-v2",
            "billing.shop",
            "0x",
            &"a".repeat(253),
        ] {
            assert!(resource_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Billing",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "a/b",
            &"a".repeat(254),
        ] {
            assert!(resource_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels() {
        for ok in ["shop", "orders-v2", "0", &"a".repeat(63)] {
            assert!(dns_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Shop", "a.b", "-a", "a-", &"a".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes() {
        for ok in [
            "orders:read",
            "a",
            "Orders/v1.write-all_x",
            &"a".repeat(128),
        ] {
            assert!(scope(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ":read",
            "-a",
            "orders read",
            "orders*",
            "é",
            &"a".repeat(129),
        ] {
            let err = scope(bad).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains(&format!("{bad:?}"))),
                "{bad}"
            );
        }
    }

    #[test]
    fn owners() {
        assert!(owner("team-billing@example.com").is_ok());
        assert!(owner("Équipe facturation").is_ok());
        assert!(owner("").is_err());
        assert!(owner("a\nb").is_err());
        assert!(owner(&"a".repeat(257)).is_err());
    }

    #[test]
    fn expiry() {
        assert!(expires("2999-06-30T00:00:00Z").is_ok());
        assert!(expires("2999-06-30T02:00:00+02:00").is_ok());
        assert!(expires("2000-01-01T00:00:00Z").is_err());
        assert!(expires("2999-06-30").is_err());
        assert!(expires("tomorrow").is_err());
    }

    #[test]
    fn expiry_as_a_duration_from_now() {
        let now: Timestamp = "2026-11-23T10:00:00.75Z".parse().unwrap();
        assert_eq!(
            expires_at("720h", now).unwrap().to_string(),
            "2026-12-23T10:00:00Z"
        );
        assert_eq!(
            expires_at("1h30m", now).unwrap().to_string(),
            "2026-11-23T11:30:00Z"
        );
        let err = expires_at("30d", now).unwrap_err();
        assert!(err.contains("\"30d\"") && err.contains("720h"), "{err}");
        assert!(expires_at("0s", now).unwrap_err().contains("in the past"));
        assert!(expires_at("9000h", now).is_err(), "over 366 days");
    }

    #[test]
    fn timeouts() {
        assert_eq!(timeout("60s").unwrap(), std::time::Duration::from_secs(60));
        assert_eq!(
            timeout("1m30s").unwrap(),
            std::time::Duration::from_secs(90)
        );
        assert!(timeout("0s").is_err());
        assert!(timeout("60").is_err());
        assert!(timeout("-1s").is_err());
    }

    #[test]
    fn api_key_names_leave_room_for_the_operators_secrets() {
        assert!(api_key_name(&"a".repeat(240)).is_ok());
        let err = api_key_name(&"a".repeat(241)).unwrap_err();
        assert!(err.contains("at most 240"), "{err}");
        assert!(api_key_name("Billing").is_err());
    }
}
