//! Value parsers for command-line arguments. Each returns a message naming the
//! offending value, which clap prints as a usage error (exit code 2).
//!
//! Temporary: these mirror the ApiKey CRD's schema rules. When the validated model in
//! `turnpike-api` lands, the CLI calls it instead of keeping its own copy.

use jiff::Timestamp;

/// Longest DNS-1123 subdomain (object names).
const MAX_SUBDOMAIN_LEN: usize = 253;
/// Longest DNS-1123 label (namespaces, targets).
const MAX_LABEL_LEN: usize = 63;
/// Longest scope.
const MAX_SCOPE_LEN: usize = 128;
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

/// A scope: `^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`.
pub fn scope(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let valid = match b.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric()
                && b.len() <= MAX_SCOPE_LEN
                && rest
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"._:/-".contains(c))
        }
        None => false,
    };
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "scope {s:?} is invalid: use 1 to {MAX_SCOPE_LEN} characters from A-Z a-z 0-9 \
             . _ : / -, starting with a letter or digit (e.g. orders:read)"
        ))
    }
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

/// An expiry instant in RFC 3339 with an explicit offset (`2027-06-30T00:00:00Z`),
/// which must lie in the future.
pub fn expires(s: &str) -> Result<Timestamp, String> {
    let at: Timestamp = s.parse().map_err(|err| {
        format!("{s:?} is not an RFC 3339 timestamp (e.g. 2027-06-30T00:00:00Z): {err}")
    })?;
    if at <= Timestamp::now() {
        return Err(format!("{s:?} is in the past: a key would be born expired"));
    }
    Ok(at)
}

#[cfg(test)]
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
}
