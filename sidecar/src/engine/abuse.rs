//! Abuse cooldown: a client (IP, or key id) whose requests produced more than
//! `maxNotFound` 404 or more than `maxBadRequest` 400 answers within `window` is
//! refused with 429 for `cooldown`. Fed from the response side
//! ([`crate::engine::Engine::observe_response`]), checked on the request side.

use turnpike_api::bundle::AbuseSpec;

use super::table::Expiring;

/// Abuse parameters in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbuseLimit {
    max_not_found: Option<u32>,
    max_bad_request: Option<u32>,
    window_ms: u64,
    cooldown_ms: u64,
}

impl AbuseLimit {
    /// From the policy; `None` when it would never trigger.
    pub fn new(spec: &AbuseSpec) -> Option<Self> {
        if (spec.max_not_found.is_none() && spec.max_bad_request.is_none())
            || spec.cooldown.is_zero()
        {
            return None;
        }
        Some(Self {
            max_not_found: spec.max_not_found,
            max_bad_request: spec.max_bad_request,
            window_ms: spec.window.as_millis().max(1),
            cooldown_ms: spec.cooldown.as_millis(),
        })
    }
}

/// Which answer was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 404.
    NotFound,
    /// 400.
    BadRequest,
}

impl Answer {
    /// The answers that count, by status code.
    pub fn from_status(status: u16) -> Option<Answer> {
        match status {
            404 => Some(Answer::NotFound),
            400 => Some(Answer::BadRequest),
            _ => None,
        }
    }
}

/// Counted answers of one client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbuseState {
    not_found: u32,
    bad_request: u32,
    window_end_ms: u64,
    cooldown_until_ms: u64,
}

impl AbuseState {
    /// Milliseconds until the cooldown ends, if cooling down at `now_ms`.
    pub fn cooldown_for_ms(&self, now_ms: u64) -> Option<u64> {
        (now_ms < self.cooldown_until_ms).then(|| self.cooldown_until_ms - now_ms)
    }

    /// Counts one answer; true when it started a cooldown.
    pub fn record(&mut self, answer: Answer, limit: &AbuseLimit, now_ms: u64) -> bool {
        let (counter, max) = match answer {
            Answer::NotFound => (&mut self.not_found, limit.max_not_found),
            Answer::BadRequest => (&mut self.bad_request, limit.max_bad_request),
        };
        let Some(max) = max else { return false };
        if now_ms < self.cooldown_until_ms {
            return false;
        }
        if now_ms >= self.window_end_ms {
            self.not_found = 0;
            self.bad_request = 0;
            self.window_end_ms = now_ms.saturating_add(limit.window_ms);
            return self.record(answer, limit, now_ms);
        }
        *counter = counter.saturating_add(1);
        if *counter <= max {
            return false;
        }
        self.not_found = 0;
        self.bad_request = 0;
        self.window_end_ms = now_ms;
        self.cooldown_until_ms = now_ms.saturating_add(limit.cooldown_ms);
        true
    }
}

impl Expiring for AbuseState {
    fn idle_at_ms(&self) -> u64 {
        self.window_end_ms.max(self.cooldown_until_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use turnpike_api::duration::Duration;

    fn limit() -> AbuseLimit {
        AbuseLimit::new(&AbuseSpec {
            max_not_found: Some(2),
            max_bad_request: None,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(60),
        })
        .unwrap()
    }

    #[test]
    fn cooldown_after_too_many_not_found() {
        let l = limit();
        let mut s = AbuseState::default();
        assert!(!s.record(Answer::NotFound, &l, 0));
        assert!(!s.record(Answer::NotFound, &l, 1));
        // 400s are not limited by this policy.
        assert!(!s.record(Answer::BadRequest, &l, 2));
        assert!(s.record(Answer::NotFound, &l, 3));
        assert_eq!(s.cooldown_for_ms(3), Some(60_000));
        assert_eq!(s.cooldown_for_ms(60_003), None);
    }

    #[test]
    fn window_resets() {
        let l = limit();
        let mut s = AbuseState::default();
        s.record(Answer::NotFound, &l, 0);
        s.record(Answer::NotFound, &l, 1);
        assert!(!s.record(Answer::NotFound, &l, 10_000));
        assert_eq!(Answer::from_status(404), Some(Answer::NotFound));
        assert_eq!(Answer::from_status(500), None);
    }
}
