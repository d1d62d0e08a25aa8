//! HTTP/2 frames sent after the sidecar answered a request early (a 401 before the body
//! was read) are still checked (RFC 9113 §5.1, §8.1): the client waits for the whole
//! answer, then sends a malformed frame on the stream, and must get the stream (or
//! connection) error the RFC names. h2spec sends the same frames without waiting, so
//! there the outcome depended on timing; here it does not.
#![allow(clippy::unwrap_used)]

mod proxy_common;

use std::time::Duration;

use proxy_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const PROTOCOL_ERROR: u32 = 1;
const STREAM_CLOSED: u32 = 5;
const CANCEL: u32 = 8;

/// HPACK: `:method POST`, `:scheme http`, `:path /` (static table), `:authority a`.
const REQUEST: &[u8] = &[0x83, 0x86, 0x84, 0x41, 0x01, b'a'];
/// HPACK: `x-test: ok` (literal, not indexed).
const TRAILER: &[u8] = &[0x00, 6, b'x', b'-', b't', b'e', b's', b't', 2, b'o', b'k'];

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

struct Conn {
    io: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(sidecar: &Sidecar) -> Conn {
        let mut io = TcpStream::connect(sidecar.addr).await.unwrap();
        io.write_all(PREFACE).await.unwrap();
        let mut conn = Conn {
            io,
            buf: Vec::new(),
        };
        conn.send(SETTINGS, 0, 0, &[]).await;
        conn
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        self.io.write_all(&f).await.unwrap();
    }

    /// The next frame (SETTINGS are acknowledged on the way); `None` when the
    /// connection ends or nothing comes for a while.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = usize::from(self.buf[0]) << 16
                    | usize::from(self.buf[1]) << 8
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let frame = Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload: head[9..].to_vec(),
                    };
                    if frame.kind == SETTINGS && frame.flags & ACK == 0 {
                        self.send(SETTINGS, ACK, 0, &[]).await;
                    }
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Opens stream 1 without ending it and waits until the sidecar's whole answer
    /// (its 401) has arrived.
    async fn answered_early(&mut self) {
        self.send(HEADERS, END_HEADERS, 1, REQUEST).await;
        loop {
            let f = self.next().await.expect("no answer on stream 1");
            if f.stream == 1 && matches!(f.kind, DATA | HEADERS) && f.flags & END_STREAM != 0 {
                return;
            }
        }
    }

    /// Waits for a RST_STREAM on stream 1 or a GOAWAY with `code`.
    async fn expect_error(&mut self, code: u32) {
        while let Some(f) = self.next().await {
            let error = |at: usize| {
                f.payload
                    .get(at..at + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            };
            match f.kind {
                RST_STREAM if f.stream == 1 && error(0) == Some(code) => return,
                GOAWAY if error(4) == Some(code) => return,
                _ => {}
            }
        }
        panic!("no stream or connection error {code} after the early answer");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_after_an_early_answer_are_errors() {
    let upstream = start_upstream().await;
    let dir = bundle_dir(&Setup::default());
    let sidecar = Sidecar::with_bundle(dir.path(), &upstream, &[]);

    // A second HEADERS without END_STREAM (RFC 9113 §8.1).
    let mut c = Conn::open(&sidecar).await;
    c.answered_early().await;
    c.send(DATA, 0, 1, b"test").await;
    c.send(HEADERS, END_HEADERS, 1, TRAILER).await;
    c.expect_error(PROTOCOL_ERROR).await;

    // A pseudo-header field in trailers (§8.3).
    let mut c = Conn::open(&sidecar).await;
    c.answered_early().await;
    let mut trailer = TRAILER.to_vec();
    trailer.push(0x84);
    c.send(HEADERS, END_HEADERS | END_STREAM, 1, &trailer).await;
    c.expect_error(PROTOCOL_ERROR).await;

    // DATA after RST_STREAM (§5.1, closed).
    let mut c = Conn::open(&sidecar).await;
    c.answered_early().await;
    c.send(RST_STREAM, 0, 1, &CANCEL.to_be_bytes()).await;
    c.send(DATA, END_STREAM, 1, b"test").await;
    c.expect_error(STREAM_CLOSED).await;
}
