//! Upgraded connections (WebSocket and other `Upgrade` protocols, HTTP/1.1): once the
//! engine allowed the request and the workload answered 101, both sides are upgraded
//! and bytes are copied both ways until either closes. The tunnel holds the request's
//! in-flight slot, and is tracked so shutdown waits for it (up to the grace period).

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use crate::engine::overload::InFlightSlot;

/// Starts the tunnel between the client's and the workload's upgraded connections.
pub fn tunnel(tracker: &TaskTracker, client: OnUpgrade, upstream: OnUpgrade, slot: InFlightSlot) {
    tracker.spawn(async move {
        let _slot = slot;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
            Err(e) => tracing::debug!(error = %e, "upgraded connection failed"),
        }
    });
}
