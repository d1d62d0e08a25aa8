//! `turnpike-sidecar` binary. The proxy around [`turnpike_sidecar::engine`] is written
//! separately; until then the binary does nothing.

fn main() {}
