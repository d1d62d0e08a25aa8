//! Turnpike's shared vocabulary: the custom resource types, the token format, key
//! hashing, the bundle format and the compiler from resources to bundles.
//!
//! Everything here is pure (no I/O, no clock reads): the operator, the sidecar's
//! local mode and the `kubectl-turnpike` CLI all call the same functions.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod compiler;
pub mod crd;
pub mod duration;
pub mod hash;
pub mod manifest;
pub mod pod;
pub mod route;
pub mod security_headers;
pub mod shard;
pub mod signing;
pub mod token;
pub mod types;
pub mod validate;
