//! Route scope check (step 10): the first AccessPolicy rule matching the method and
//! the normalised path decides the scopes the key must hold (all of them); an empty
//! list means any authenticated key. A request matching no rule is refused (`Deny`,
//! 403) or allowed for any authenticated key (`AllowAuthenticated`).

use turnpike_api::bundle::RuleSpec;
use turnpike_api::route::PatternError;
use turnpike_api::types::{DefaultAction, Method};

use super::refusal::Refusal;
use super::routes::Route;

/// A compiled scope rule.
#[derive(Clone, Debug)]
pub struct Rule {
    route: Route,
    /// Required scopes, sorted.
    scopes: Box<[String]>,
}

impl Rule {
    /// Compiles a rule.
    ///
    /// # Errors
    /// An invalid path pattern.
    pub fn compile(spec: &RuleSpec) -> Result<Self, PatternError> {
        let mut scopes = spec.scopes.clone();
        scopes.sort();
        scopes.dedup();
        Ok(Self {
            route: Route::compile(&spec.matches)?,
            scopes: scopes.into_boxed_slice(),
        })
    }
}

/// Decides whether a key holding `held` (sorted) may make the request.
///
/// # Errors
/// [`Refusal::ScopeDenied`] or [`Refusal::NoMatchingRule`].
pub fn check(
    rules: &[Rule],
    default: DefaultAction,
    method: Option<Method>,
    path: &str,
    held: &[String],
) -> Result<(), Refusal> {
    match rules.iter().find(|r| r.route.matches(method, path)) {
        Some(rule) => {
            let all_held = rule
                .scopes
                .iter()
                .all(|s| held.binary_search_by(|h| h.as_str().cmp(s)).is_ok());
            if all_held {
                Ok(())
            } else {
                Err(Refusal::ScopeDenied)
            }
        }
        None => match default {
            DefaultAction::AllowAuthenticated => Ok(()),
            DefaultAction::Deny => Err(Refusal::NoMatchingRule),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use turnpike_api::bundle::RouteSpec;

    fn rule(methods: &[Method], path: &str, scopes: &[&str]) -> Rule {
        Rule::compile(&RuleSpec {
            matches: RouteSpec {
                methods: methods.to_vec(),
                path: path.into(),
            },
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    fn held(s: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = s.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn first_match_wins() {
        let rules = [
            rule(&[Method::Get], "/orders/**", &["orders:read"]),
            rule(&[], "/orders/**", &["orders:write"]),
            rule(&[], "/open", &[]),
        ];
        let reader = held(&["orders:read"]);
        let get = Some(Method::Get);
        let post = Some(Method::Post);
        assert_eq!(
            check(&rules, DefaultAction::Deny, get, "/orders/1", &reader),
            Ok(())
        );
        assert_eq!(
            check(&rules, DefaultAction::Deny, post, "/orders/1", &reader),
            Err(Refusal::ScopeDenied)
        );
        assert_eq!(
            check(&rules, DefaultAction::Deny, post, "/open", &[]),
            Ok(())
        );
        assert_eq!(
            check(&rules, DefaultAction::Deny, get, "/other", &reader),
            Err(Refusal::NoMatchingRule)
        );
        assert_eq!(
            check(
                &rules,
                DefaultAction::AllowAuthenticated,
                get,
                "/other",
                &[]
            ),
            Ok(())
        );
    }

    #[test]
    fn all_scopes_are_required() {
        let rules = [rule(&[], "/**", &["b", "a"])];
        assert_eq!(
            check(
                &rules,
                DefaultAction::Deny,
                None,
                "/x",
                &held(&["a", "b", "c"])
            ),
            Ok(())
        );
        assert_eq!(
            check(&rules, DefaultAction::Deny, None, "/x", &held(&["a"])),
            Err(Refusal::ScopeDenied)
        );
    }
}
