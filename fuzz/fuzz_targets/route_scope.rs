//! Route patterns and scope checks: compiling any pattern and matching any path never
//! panic; a path refused by normalisation is never matched after it; and the scope
//! decision is the same for a path and its normal form (what the engine decides on is
//! what it forwards).
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_api::bundle::{RouteSpec, RuleSpec};
use turnpike_api::types::{DefaultAction, Method};
use turnpike_sidecar::engine::path::normalize;
use turnpike_sidecar::engine::routes::Route;
use turnpike_sidecar::engine::scope::{Rule, check};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or_default();
    let patterns: Vec<&str> = lines.take(8).collect();
    let mut rules = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let spec = RouteSpec {
            methods: vec![],
            path: (*p).to_owned(),
        };
        let Ok(route) = Route::compile(&spec) else {
            continue;
        };
        let _ = route.matches(Some(Method::Get), path);
        let rule = RuleSpec {
            matches: spec,
            scopes: vec![format!("s{i}")],
        };
        if let Ok(r) = Rule::compile(&rule) {
            rules.push(r);
        }
    }
    let held = vec!["s0".to_owned()];
    if let Ok(decided) = normalize(path) {
        let once = check(
            &rules,
            DefaultAction::Deny,
            Some(Method::Get),
            &decided,
            &held,
        );
        let again = normalize(&decided)
            .map(|p| check(&rules, DefaultAction::Deny, Some(Method::Get), &p, &held));
        assert_eq!(Ok(once), again, "{path:?} -> {decided:?}");
    }
});
