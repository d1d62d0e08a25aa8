//! Route matches compiled once per bundle: a method set and a [`PathPattern`].

use turnpike_api::bundle::RouteSpec;
use turnpike_api::route::{PathPattern, PatternError};
use turnpike_api::types::Method;

/// A set of methods as a bit mask; the empty set matches every method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MethodSet(u16);

impl MethodSet {
    /// From a list (empty: any method).
    pub fn from_list(methods: &[Method]) -> Self {
        Self(methods.iter().fold(0, |acc, m| acc | Self::bit(*m)))
    }

    fn bit(m: Method) -> u16 {
        1 << (m as u16)
    }

    /// True when `method` is in the set; every method, even one the bundle cannot
    /// name (`None`), is in the empty set.
    pub fn matches(&self, method: Option<Method>) -> bool {
        self.0 == 0 || method.is_some_and(|m| self.0 & Self::bit(m) != 0)
    }

    /// True when `method` is listed (no "empty means any").
    pub fn contains(&self, method: Method) -> bool {
        self.0 & Self::bit(method) != 0
    }
}

/// A compiled route match.
#[derive(Clone, Debug)]
pub struct Route {
    methods: MethodSet,
    pattern: PathPattern,
    /// Stable id of the match (same spec, same id across bundle reloads): per-route
    /// buckets are keyed by it so a reload keeps their state.
    id: u64,
}

impl Route {
    /// Compiles a route spec.
    ///
    /// # Errors
    /// The pattern error (the api compiler already validated it; a hand-made bundle
    /// may not have been).
    pub fn compile(spec: &RouteSpec) -> Result<Self, PatternError> {
        let mut id = Fnv::default();
        for m in &spec.methods {
            id.write(m.as_str().as_bytes());
            id.write(b" ");
        }
        id.write(spec.path.as_bytes());
        Ok(Self {
            methods: MethodSet::from_list(&spec.methods),
            pattern: PathPattern::parse(&spec.path)?,
            id: id.0,
        })
    }

    /// True when the request matches.
    pub fn matches(&self, method: Option<Method>, path: &str) -> bool {
        self.methods.matches(method) && self.pattern.matches(path)
    }

    /// Stable id of the match.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// FNV-1a, 64 bit: a deterministic hash for ids that must survive reloads (not for
/// tables keyed by client input).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Deterministic 64-bit hash of a string (FNV-1a).
pub fn stable_hash(s: &str) -> u64 {
    let mut h = Fnv::default();
    h.write(s.as_bytes());
    h.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(methods: &[Method], path: &str) -> Route {
        Route::compile(&RouteSpec {
            methods: methods.to_vec(),
            path: path.into(),
        })
        .unwrap()
    }

    #[test]
    fn methods_and_paths() {
        let r = route(&[Method::Get, Method::Head], "/orders/**");
        assert!(r.matches(Some(Method::Get), "/orders/1"));
        assert!(r.matches(Some(Method::Head), "/orders"));
        assert!(!r.matches(Some(Method::Post), "/orders/1"));
        assert!(!r.matches(None, "/orders/1"));
        let any = route(&[], "/x");
        assert!(any.matches(None, "/x"));
        assert!(any.matches(Some(Method::Delete), "/x"));
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(
            route(&[Method::Post], "/orders").id(),
            route(&[Method::Post], "/orders").id()
        );
        assert_ne!(
            route(&[Method::Post], "/orders").id(),
            route(&[Method::Get], "/orders").id()
        );
        assert_ne!(route(&[], "/a").id(), route(&[], "/b").id());
    }
}
