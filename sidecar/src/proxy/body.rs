//! Bodies in both directions, streamed, never buffered whole.
//!
//! [`RequestBody`] wraps the client's body on its way to the workload and enforces
//! request hygiene while it streams: the byte limit (413) and the longest pause
//! between chunks (408). [`ResponseBody`] is what the sidecar answers with: either
//! its own small body or the workload's body passed through, holding the request's
//! in-flight slot until the last byte is sent (or the client goes away).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::engine::overload::InFlightSlot;

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More bytes than `--max-body-bytes`.
    #[error("request body larger than the limit")]
    TooLarge,
    /// No data for `--body-idle-timeout`.
    #[error("request body stalled")]
    Idle,
    /// The client's connection failed.
    #[error("reading the request body: {0}")]
    Client(#[from] hyper::Error),
}

impl BodyError {
    /// Finds a body error in an upstream client error's source chain.
    pub fn find<'e>(mut e: &'e (dyn std::error::Error + 'static)) -> Option<&'e BodyError> {
        loop {
            if let Some(b) = e.downcast_ref::<BodyError>() {
                return Some(b);
            }
            e = e.source()?;
        }
    }
}

/// The client's request body, limited.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: u64,
    seen: u64,
    idle: Duration,
    /// Armed while waiting for data; allocated once, on the first wait.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl RequestBody {
    /// Wraps `inner`: at most `limit` bytes, at most `idle` between chunks.
    pub fn new(inner: Incoming, limit: u64, idle: Duration) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            idle,
            timer: None,
            armed: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if !this.armed {
                    timer
                        .as_mut()
                        .reset(crate::clock::deadline_after(this.idle));
                    this.armed = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Idle))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
    /// Released when the body is dropped: after the last frame, or when the client
    /// goes away.
    _slot: Option<InFlightSlot>,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Upstream(Incoming),
}

impl ResponseBody {
    /// A body of the sidecar's own.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            _slot: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
            _slot: None,
        }
    }

    /// The workload's body, holding `slot` until it is done.
    pub fn upstream(body: Incoming, slot: InFlightSlot) -> Self {
        Self {
            kind: Kind::Upstream(body),
            _slot: Some(slot),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(body) => body.size_hint(),
        }
    }
}
