//! The Turnpike operator: reconciles ApiKeys and policies into per-target bundles,
//! issues and rotates keys, reports status and Events, and injects the sidecar into
//! pods that ask for it (the admission webhook).
#![forbid(unsafe_code)]

pub mod admin_secret;
pub mod bundle_signing;
pub mod controller;
pub mod http;
pub mod keys;
pub mod leader;
pub mod material;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod sidecar_rbac;
pub mod webhook;
