//! Rate-limit response headers, without heap allocation.
//!
//! For the limiting bucket of a request (the one with the fewest tokens left, or the
//! one that refused it) and, when a daily quota applies, for the quota:
//!
//! ```text
//! X-RateLimit-Limit: 20            burst of the bucket
//! X-RateLimit-Remaining: 19        tokens left
//! X-RateLimit-Reset: 1             seconds until the bucket is full again
//! RateLimit-Policy: "key";q=20;w=2, "daily";q=10000;w=86400
//! RateLimit: "key";r=19;t=1, "daily";r=9999;t=43200
//! Retry-After: 1                   429 and 503 only
//! ```
//!
//! `RateLimit-Policy` and `RateLimit` follow draft-ietf-httpapi-ratelimit-headers
//! (-09 and later): Structured Field lists whose items are the policy name as a
//! string with parameters `q` (quota), `w` (window, seconds), `r` (remaining) and `t`
//! (seconds until reset). A token bucket is described by its burst (`q`) and the time
//! an empty bucket takes to refill (`w`). Policy names are a fixed set: `ip`,
//! `ip-route`, `key`, `key-route`, `daily`. `X-RateLimit-Reset` is in delta seconds,
//! like `t`. With `hideLimitHeaders` only `Retry-After` is sent.

use std::fmt::{self, Write};

/// Names of the headers, lower case as HTTP/2 requires.
pub mod names {
    /// Burst of the reported bucket.
    pub const X_RATELIMIT_LIMIT: &str = "x-ratelimit-limit";
    /// Tokens left.
    pub const X_RATELIMIT_REMAINING: &str = "x-ratelimit-remaining";
    /// Seconds until the bucket is full.
    pub const X_RATELIMIT_RESET: &str = "x-ratelimit-reset";
    /// IETF policy field.
    pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
    /// IETF state field.
    pub const RATELIMIT: &str = "ratelimit";
    /// Seconds to wait.
    pub const RETRY_AFTER: &str = "retry-after";
}

/// One reported limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateItem {
    /// Policy name: `ip`, `ip-route`, `key`, `key-route` or `daily`.
    pub policy: &'static str,
    /// Capacity (`q`).
    pub quota: u64,
    /// Window in seconds (`w`).
    pub window_secs: u64,
    /// Units left (`r`).
    pub remaining: u64,
    /// Seconds until reset (`t`).
    pub reset_secs: u64,
}

/// The rate-limit headers of one response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// The limiting bucket.
    pub bucket: Option<RateItem>,
    /// The daily quota, when one applies.
    pub quota: Option<RateItem>,
    /// `Retry-After` in seconds.
    pub retry_after_secs: Option<u64>,
    /// `hideLimitHeaders`: only `Retry-After` is written.
    pub hidden: bool,
}

/// A header value formatted on the stack.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    /// Empty text.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }

    /// Empties the text (keeps the buffer).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `s`; text that does not fit is dropped whole.
    pub fn push_str(&mut self, s: &str) {
        if let Some(dst) = self.buf.get_mut(self.len..self.len + s.len()) {
            dst.copy_from_slice(s.as_bytes());
            self.len += s.len();
        }
    }

    /// Appends `n` in decimal, without going through `core::fmt` (this runs for every
    /// response).
    pub fn push_u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if let Some(dst) = self.buf.get_mut(self.len..self.len + (digits.len() - i)) {
            dst.copy_from_slice(&digits[i..]);
            self.len += digits.len() - i;
        }
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        // Only whole `&str`s and ASCII digits are ever appended, so this is UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Longest value written: two items of `"key-route";q=<u64>;w=<u64>`.
pub type HeaderText = Text<128>;

impl RateHeaders {
    /// Offers a bucket outcome; the one with the fewest tokens left is reported (the
    /// later one on ties: the more specific limit).
    pub fn offer(&mut self, item: RateItem) {
        match self.bucket {
            Some(current) if current.remaining < item.remaining => {}
            _ => self.bucket = Some(item),
        }
    }

    /// Reports `item` as the limiting bucket, whatever was offered before (the bucket
    /// that refused the request).
    pub fn force(&mut self, item: RateItem) {
        self.bucket = Some(item);
    }

    fn items(&self) -> impl Iterator<Item = &RateItem> {
        self.bucket.iter().chain(self.quota.iter())
    }

    /// Calls `emit(name, value)` for each header to write, in a fixed order.
    pub fn for_each(&self, mut emit: impl FnMut(&'static str, &str)) {
        let mut text = HeaderText::new();
        if !self.hidden {
            if let Some(b) = self.bucket.as_ref().or(self.quota.as_ref()) {
                for (name, value) in [
                    (names::X_RATELIMIT_LIMIT, b.quota),
                    (names::X_RATELIMIT_REMAINING, b.remaining),
                    (names::X_RATELIMIT_RESET, b.reset_secs),
                ] {
                    text.clear();
                    text.push_u64(value);
                    emit(name, text.as_str());
                }
            }
            if self.items().next().is_some() {
                text.clear();
                self.write_list(&mut text, |i| (";q=", i.quota, ";w=", i.window_secs));
                emit(names::RATELIMIT_POLICY, text.as_str());
                text.clear();
                self.write_list(&mut text, |i| (";r=", i.remaining, ";t=", i.reset_secs));
                emit(names::RATELIMIT, text.as_str());
            }
        }
        if let Some(secs) = self.retry_after_secs {
            text.clear();
            text.push_u64(secs);
            emit(names::RETRY_AFTER, text.as_str());
        }
    }

    /// A Structured Field list: `"name";a=1;b=2, "name";a=3;b=4`.
    fn write_list(
        &self,
        text: &mut HeaderText,
        params: impl Fn(&RateItem) -> (&'static str, u64, &'static str, u64),
    ) {
        for (i, item) in self.items().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            let (a, av, b, bv) = params(item);
            text.push_str("\"");
            text.push_str(item.policy);
            text.push_str("\"");
            text.push_str(a);
            text.push_u64(av);
            text.push_str(b);
            text.push_u64(bv);
        }
    }
}

/// Milliseconds to whole seconds for headers, rounded up.
pub fn ms_to_secs_ceil(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(h: &RateHeaders) -> Vec<(String, String)> {
        let mut out = Vec::new();
        h.for_each(|n, v| out.push((n.to_string(), v.to_string())));
        out
    }

    fn item(policy: &'static str, remaining: u64) -> RateItem {
        RateItem {
            policy,
            quota: 20,
            window_secs: 2,
            remaining,
            reset_secs: 1,
        }
    }

    #[test]
    fn full_set() {
        let mut h = RateHeaders::default();
        h.offer(item("ip", 99));
        h.offer(item("key", 19));
        h.offer(item("key-route", 25));
        h.quota = Some(RateItem {
            policy: "daily",
            quota: 10_000,
            window_secs: 86_400,
            remaining: 9_999,
            reset_secs: 43_200,
        });
        let got = collect(&h);
        let want = [
            ("x-ratelimit-limit", "20"),
            ("x-ratelimit-remaining", "19"),
            ("x-ratelimit-reset", "1"),
            (
                "ratelimit-policy",
                "\"key\";q=20;w=2, \"daily\";q=10000;w=86400",
            ),
            ("ratelimit", "\"key\";r=19;t=1, \"daily\";r=9999;t=43200"),
        ];
        assert_eq!(got.len(), want.len());
        for ((n, v), (wn, wv)) in got.iter().zip(want) {
            assert_eq!((n.as_str(), v.as_str()), (wn, wv));
        }
    }

    #[test]
    fn hidden_keeps_retry_after() {
        let h = RateHeaders {
            bucket: Some(item("key", 0)),
            quota: None,
            retry_after_secs: Some(3),
            hidden: true,
        };
        assert_eq!(
            collect(&h),
            vec![("retry-after".to_string(), "3".to_string())]
        );
    }

    #[test]
    fn longest_values_fit() {
        let big = RateItem {
            policy: "key-route",
            quota: u64::MAX,
            window_secs: u64::MAX,
            remaining: u64::MAX,
            reset_secs: u64::MAX,
        };
        let h = RateHeaders {
            bucket: Some(big),
            quota: Some(big),
            retry_after_secs: None,
            hidden: false,
        };
        let got = collect(&h);
        assert_eq!(got.len(), 5);
        assert!(got[3].1.ends_with(&u64::MAX.to_string()));
    }

    #[test]
    fn nothing_without_limits() {
        assert!(collect(&RateHeaders::default()).is_empty());
    }
}
