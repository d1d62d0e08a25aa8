//! Custom resource types (group `turnpike.dev`, version `v1alpha1`).

mod access;
mod apikey;
mod common;
mod cors;
mod headers;
mod ratelimit;

pub use access::*;
pub use apikey::*;
pub use common::*;
pub use cors::*;
pub use headers::*;
pub use ratelimit::*;
