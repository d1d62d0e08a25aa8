//! Strict HTTP/1.1 message framing, checked on the bytes before hyper parses them
//! (request hygiene, step 1, against request smuggling).
//!
//! hyper's parser is lenient where RFC 9112 allows it to be, and a security proxy
//! should not be (nginx and Envoy refuse these outright). It accepts a bare LF as a line
//! end, two `Host` lines, two equal `Content-Length` lines, `Content-Length` together
//! with `Transfer-Encoding` (it drops the length before the proxy can see it), and
//! `Transfer-Encoding: gzip, chunked`. [`Framing`] follows the framing of every request
//! on an HTTP/1 connection, byte by byte and without allocating, and refuses:
//!
//! - a bare LF or a bare CR in a head, a chunk line or a trailer section;
//! - a field line starting with whitespace (obs-fold);
//! - no `Host` (HTTP/1.1) or more than one;
//! - more than one `Content-Length`, or one that is not 1-19 digits;
//! - `Transfer-Encoding` other than exactly one `chunked` (on HTTP/1.1 only), and
//!   `Transfer-Encoding` with `Content-Length`;
//! - a chunk size that is not 1-16 hex digits, whitespace not followed by a chunk
//!   extension, a chunk not followed by CRLF.
//!
//! A refused request is turned into bytes hyper refuses with 400 (a NUL where the
//! request's head ends, or at the fault when the head was already handed over, then a
//! head terminator): hyper answers 400 and closes the connection. A head whose request line does not end in
//! `HTTP/1.0` or `HTTP/1.1` is not HTTP/1 at all (an invalid HTTP/2 preface on the
//! h2c port, RFC 9113 §3.4): the connection is closed without an answer.
//!
//! Limits: checks apply to what arrives with the head; a body fault that arrives later
//! than the head cuts the stream already forwarded (the workload sees a failed body).
//! HTTP/2 connections (the preface) and everything after an `Upgrade` or `CONNECT`
//! request are not HTTP/1 framing and pass untouched; the proxy closes the connection
//! after an upgrade request that was not switched (see [`crate::proxy`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest field name of interest (`transfer-encoding`).
const NAME_CAP: usize = 17;
/// Longest value of interest kept (`Content-Length` digits, `chunked` with spaces).
const VALUE_CAP: usize = 24;
/// Longest chunk extension accepted on one chunk line.
const EXT_CAP: usize = 4096;

/// What [`Framing::scan`] says about a run of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong (yet).
    Pass,
    /// Refuse with 400: hand over the bytes before this offset, then bytes hyper
    /// refuses (see `POISON`).
    Poison(usize),
    /// Not HTTP/1: hand over the bytes before this offset, then close the connection.
    Close(usize),
}

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Comparing the first bytes with the HTTP/2 preface; `n` matched so far.
    Preface(usize),
    /// In a head (request line and fields) or a trailer section.
    Head,
    /// In a `Content-Length` body; bytes left.
    Fixed(u64),
    /// In a chunk-size line.
    ChunkSize(SizeLine),
    /// In chunk data; bytes left.
    ChunkData(u64),
    /// Expecting the CR, then the LF after chunk data.
    ChunkDataCr,
    ChunkDataLf,
    /// HTTP/2 or an upgraded connection: not HTTP/1 framing.
    Tunnel,
    /// Refused; nothing more is looked at.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeLine {
    size: u64,
    digits: u8,
    part: SizePart,
    ext: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizePart {
    Digits,
    /// Whitespace after the digits: a `;` must follow.
    Ws,
    Ext,
    Lf,
}

/// Which field a line names, as far as framing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Upgrade,
}

/// The head being read.
#[derive(Debug, Clone, Copy)]
struct Head {
    trailers: bool,
    /// The request line has been read.
    line_done: bool,
    at_line_start: bool,
    cr: bool,
    // Request line.
    spaces: u8,
    method: [u8; 8],
    method_len: u8,
    version: [u8; 8],
    version_len: u8,
    version_long: bool,
    http10: bool,
    // The current field line.
    name: [u8; NAME_CAP],
    name_len: usize,
    in_value: bool,
    field: Field,
    value: [u8; VALUE_CAP],
    value_len: usize,
    value_long: bool,
    // The head so far.
    hosts: u8,
    lengths: u8,
    length: Option<u64>,
    encodings: u8,
    chunked: bool,
    upgrade: bool,
}

impl Head {
    fn new(trailers: bool) -> Self {
        Self {
            trailers,
            line_done: trailers,
            at_line_start: true,
            cr: false,
            spaces: 0,
            method: [0; 8],
            method_len: 0,
            version: [0; 8],
            version_len: 0,
            version_long: false,
            http10: false,
            name: [0; NAME_CAP],
            name_len: 0,
            in_value: false,
            field: Field::Other,
            value: [0; VALUE_CAP],
            value_len: 0,
            value_long: false,
            hosts: 0,
            lengths: 0,
            length: None,
            encodings: 0,
            chunked: false,
            upgrade: false,
        }
    }
}

/// What ended a line of a head.
enum LineEnd {
    /// More lines follow.
    More,
    /// The empty line: the head (or trailer section) is complete.
    Complete,
    /// A fault.
    Refuse,
    /// Not HTTP/1.
    NotHttp1,
}

/// The framing state of one connection.
#[derive(Debug, Clone)]
pub struct Framing {
    state: State,
    head: Head,
}

impl Default for Framing {
    fn default() -> Self {
        Self::new()
    }
}

impl Framing {
    /// A new connection.
    pub fn new() -> Self {
        Self {
            state: State::Preface(0),
            head: Head::new(false),
        }
    }

    /// Scans the next bytes the client sent.
    pub fn scan(&mut self, bytes: &[u8]) -> Verdict {
        // Where, in `bytes`, the current request's head ended / began (if in `bytes`).
        let mut head_end: Option<usize> = None;
        let mut head_start: Option<usize> = match self.state {
            State::Preface(0) | State::Head if self.head_is_fresh() => Some(0),
            _ => None,
        };
        let refuse = |at: usize, head_end: Option<usize>| Verdict::Poison(head_end.unwrap_or(at));
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Preface(n) => {
                    if bytes[i] == PREFACE[n] {
                        self.state = if n + 1 == PREFACE.len() {
                            State::Tunnel
                        } else {
                            State::Preface(n + 1)
                        };
                        i += 1;
                        continue;
                    }
                    // Not HTTP/2: the bytes matched so far were a head's first bytes.
                    self.state = State::Head;
                    for &b in &PREFACE[..n] {
                        match self.head_byte(b) {
                            None | Some(LineEnd::More) => {}
                            Some(LineEnd::NotHttp1) => {
                                self.state = State::Done;
                                return Verdict::Close(0);
                            }
                            // The preface's own bytes hold no other fault; a head
                            // cannot end within them.
                            Some(LineEnd::Refuse | LineEnd::Complete) => {
                                self.state = State::Done;
                                return Verdict::Poison(i);
                            }
                        }
                    }
                }
                State::Head => {
                    let b = bytes[i];
                    match self.head_byte(b) {
                        None => {}
                        Some(LineEnd::Refuse) => {
                            self.state = State::Done;
                            return refuse(i, head_end);
                        }
                        Some(LineEnd::NotHttp1) => {
                            self.state = State::Done;
                            return Verdict::Close(head_start.unwrap_or(0));
                        }
                        Some(LineEnd::More) => {}
                        Some(LineEnd::Complete) => {
                            if self.head.trailers {
                                self.next_request();
                                head_start = Some(i + 1);
                                head_end = None;
                            } else {
                                match self.finish_head() {
                                    Ok(()) => head_end = Some(i),
                                    Err(()) => {
                                        self.state = State::Done;
                                        return Verdict::Poison(i);
                                    }
                                }
                                if self.state == State::Head {
                                    head_start = Some(i + 1);
                                    head_end = None;
                                }
                            }
                        }
                    }
                    i += 1;
                }
                State::Fixed(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    if take == left {
                        self.next_request();
                        head_start = Some(i);
                        head_end = None;
                    } else {
                        self.state = State::Fixed(left - take);
                    }
                }
                State::ChunkData(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = if take == left {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData(left - take)
                    };
                }
                State::ChunkDataCr | State::ChunkDataLf => {
                    let want = if self.state == State::ChunkDataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    if bytes[i] != want {
                        self.state = State::Done;
                        return refuse(i, head_end);
                    }
                    self.state = if want == b'\r' {
                        State::ChunkDataLf
                    } else {
                        State::ChunkSize(SizeLine {
                            size: 0,
                            digits: 0,
                            part: SizePart::Digits,
                            ext: 0,
                        })
                    };
                    i += 1;
                }
                State::ChunkSize(line) => {
                    match size_byte(line, bytes[i]) {
                        Some(next) => self.state = next,
                        None => {
                            self.state = State::Done;
                            return refuse(i, head_end);
                        }
                    }
                    if self.state == State::Head {
                        // The last chunk: a trailer section follows.
                        self.head = Head::new(true);
                    }
                    i += 1;
                }
                State::Tunnel | State::Done => return Verdict::Pass,
            }
        }
        Verdict::Pass
    }

    /// True at the very start of a head (nothing of it read yet).
    fn head_is_fresh(&self) -> bool {
        let h = &self.head;
        !h.trailers && !h.line_done && h.at_line_start && !h.cr && h.method_len == 0
    }

    fn next_request(&mut self) {
        self.state = State::Head;
        self.head = Head::new(false);
    }

    /// One byte of a head; `Some` when a line ended (or a fault was found).
    fn head_byte(&mut self, b: u8) -> Option<LineEnd> {
        let h = &mut self.head;
        if h.cr {
            if b != b'\n' {
                return Some(LineEnd::Refuse);
            }
            h.cr = false;
            return Some(Self::line_end(h));
        }
        match b {
            b'\r' => {
                h.cr = true;
                None
            }
            b'\n' => Some(LineEnd::Refuse),
            b' ' | b'\t' if h.at_line_start && h.line_done => Some(LineEnd::Refuse),
            _ => {
                h.at_line_start = false;
                if !h.line_done {
                    if !request_line_byte(h, b) {
                        return Some(LineEnd::NotHttp1);
                    }
                } else {
                    field_byte(h, b);
                }
                None
            }
        }
    }

    fn line_end(h: &mut Head) -> LineEnd {
        if h.at_line_start {
            // An empty line: before the request line it is ignored (RFC 9112 §2.2).
            return if h.line_done {
                LineEnd::Complete
            } else {
                LineEnd::More
            };
        }
        h.at_line_start = true;
        if !h.line_done {
            h.line_done = true;
            let version = &h.version[..usize::from(h.version_len)];
            if h.spaces == 0 || h.version_long {
                return LineEnd::NotHttp1;
            }
            match version {
                b"HTTP/1.1" => {}
                b"HTTP/1.0" => h.http10 = true,
                _ => return LineEnd::NotHttp1,
            }
            return LineEnd::More;
        }
        let end = if h.trailers {
            LineEnd::More
        } else {
            match finish_field(h) {
                Ok(()) => LineEnd::More,
                Err(()) => LineEnd::Refuse,
            }
        };
        h.name_len = 0;
        h.in_value = false;
        h.field = Field::Other;
        h.value_len = 0;
        h.value_long = false;
        end
    }

    /// The head is complete: its framing rules, then the next state.
    fn finish_head(&mut self) -> Result<(), ()> {
        let h = &self.head;
        let host_ok = if h.http10 { h.hosts <= 1 } else { h.hosts == 1 };
        let length_ok = h.lengths == 0 || (h.lengths == 1 && h.length.is_some());
        let encoding_ok =
            h.encodings == 0 || (h.encodings == 1 && h.chunked && !h.http10 && h.lengths == 0);
        if !(host_ok && length_ok && encoding_ok) {
            return Err(());
        }
        let connect = &h.method[..usize::from(h.method_len)] == b"CONNECT";
        self.state = if h.upgrade || connect {
            State::Tunnel
        } else if h.chunked {
            State::ChunkSize(SizeLine {
                size: 0,
                digits: 0,
                part: SizePart::Digits,
                ext: 0,
            })
        } else {
            match h.length {
                Some(n) if n > 0 => State::Fixed(n),
                _ => {
                    self.head = Head::new(false);
                    State::Head
                }
            }
        };
        Ok(())
    }
}

/// One byte of the request line; false once its version cannot be `HTTP/1.x` (checked
/// as the bytes come: hyper refuses a wrong version before the line ends).
fn request_line_byte(h: &mut Head, b: u8) -> bool {
    if b == b' ' {
        h.spaces = h.spaces.saturating_add(1);
        h.version_len = 0;
        h.version_long = false;
        return true;
    }
    if h.spaces == 0 && usize::from(h.method_len) < h.method.len() {
        h.method[usize::from(h.method_len)] = b;
        h.method_len += 1;
    }
    if usize::from(h.version_len) < h.version.len() {
        h.version[usize::from(h.version_len)] = b;
        h.version_len += 1;
    } else {
        h.version_long = true;
    }
    if h.spaces < 2 {
        return true;
    }
    let v = &h.version[..usize::from(h.version_len)];
    !h.version_long && (b"HTTP/1.1".starts_with(v) || b"HTTP/1.0".starts_with(v))
}

fn field_byte(h: &mut Head, b: u8) {
    if !h.in_value {
        if b == b':' {
            h.in_value = true;
            h.field = match &h.name[..h.name_len.min(NAME_CAP)] {
                _ if h.name_len > NAME_CAP => Field::Other,
                b"host" => Field::Host,
                b"content-length" => Field::ContentLength,
                b"transfer-encoding" => Field::TransferEncoding,
                b"upgrade" => Field::Upgrade,
                _ => Field::Other,
            };
        } else {
            if h.name_len < NAME_CAP {
                h.name[h.name_len] = b.to_ascii_lowercase();
            }
            h.name_len += 1;
        }
        return;
    }
    if matches!(h.field, Field::ContentLength | Field::TransferEncoding) {
        if h.value_len < VALUE_CAP {
            h.value[h.value_len] = b;
            h.value_len += 1;
        } else {
            h.value_long = true;
        }
    }
}

/// Records a complete field line of a head.
fn finish_field(h: &mut Head) -> Result<(), ()> {
    let value = h.value[..h.value_len].trim_ascii();
    match h.field {
        Field::Other => {}
        Field::Host => h.hosts = h.hosts.saturating_add(1),
        Field::Upgrade => h.upgrade = true,
        Field::ContentLength => {
            h.lengths = h.lengths.saturating_add(1);
            if h.value_long || value.is_empty() || value.len() > 19 {
                return Err(());
            }
            let mut n: u64 = 0;
            for &d in value {
                if !d.is_ascii_digit() {
                    return Err(());
                }
                n = n * 10 + u64::from(d - b'0');
            }
            h.length = Some(n);
        }
        Field::TransferEncoding => {
            h.encodings = h.encodings.saturating_add(1);
            h.chunked = !h.value_long && value.eq_ignore_ascii_case(b"chunked");
        }
    }
    Ok(())
}

/// One byte of a chunk-size line; `None` on a fault.
fn size_byte(mut line: SizeLine, b: u8) -> Option<State> {
    match line.part {
        SizePart::Digits => {
            if let Some(d) = (b as char).to_digit(16) {
                if line.digits == 16 {
                    return None;
                }
                line.digits += 1;
                line.size = (line.size << 4) | u64::from(d);
            } else if line.digits == 0 {
                return None;
            } else {
                match b {
                    b' ' | b'\t' => line.part = SizePart::Ws,
                    b';' => line.part = SizePart::Ext,
                    b'\r' => line.part = SizePart::Lf,
                    _ => return None,
                }
            }
        }
        SizePart::Ws => match b {
            b' ' | b'\t' => {}
            b';' => line.part = SizePart::Ext,
            _ => return None,
        },
        SizePart::Ext => match b {
            b'\r' => line.part = SizePart::Lf,
            b'\t' | 0x20..=0x7e | 0x80..=0xff => {
                line.ext += 1;
                if line.ext > EXT_CAP {
                    return None;
                }
            }
            _ => return None,
        },
        SizePart::Lf => {
            if b != b'\n' {
                return None;
            }
            return Some(if line.size == 0 {
                State::Head
            } else {
                State::ChunkData(line.size)
            });
        }
    }
    Some(State::ChunkSize(line))
}

/// Handed to hyper in place of a refused request's bytes: a NUL, which hyper refuses
/// wherever it stands (head or chunk line), and a head terminator, without which
/// hyper would wait for more before parsing again.
const POISON: &[u8] = b"\0\r\n\r\n";

/// Writes what fits of [`POISON`] from `sent` on; what later reads return.
fn poison(buf: &mut ReadBuf<'_>, sent: usize) -> After {
    let n = buf.remaining().min(POISON.len() - sent);
    buf.put_slice(&POISON[sent..sent + n]);
    if sent + n == POISON.len() {
        After::Discard
    } else {
        After::Poison(sent + n)
    }
}

/// After a verdict, what later reads return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Open,
    /// Refused: the rest of [`POISON`] from this offset.
    Poison(usize),
    /// Refused: hyper has what it needs to answer 400 and close. What the client
    /// sends meanwhile is read and dropped (an end of stream now would make hyper
    /// give up before its 400 is written).
    Discard,
    /// Not HTTP/1: reads fail, the connection closes without an answer.
    Fail,
}

/// Reads and drops what the client sends; ready only at its end (or on an error).
fn discard<I: AsyncRead + Unpin>(io: &mut I, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let mut scratch = [0u8; 512];
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        ready!(Pin::new(&mut *io).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            return Poll::Ready(Ok(()));
        }
    }
}

/// A client connection whose HTTP/1 requests are checked by [`Framing`] before hyper
/// reads them. Writes pass through.
#[derive(Debug)]
pub struct Guarded<I> {
    io: I,
    framing: Framing,
    after: After,
}

impl<I> Guarded<I> {
    /// Wraps a fresh client connection.
    pub fn new(io: I) -> Self {
        Self {
            io,
            framing: Framing::new(),
            after: After::Open,
        }
    }
}

/// Fails the read (hyper then closes without answering), after dropping what the
/// client already sent: closing a socket with unread bytes would reset it instead of
/// ending it (RFC 9113 §3.4 asks for the connection to be closed).
fn fail<I: AsyncRead + Unpin>(io: &mut I, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let mut scratch = [0u8; 512];
    loop {
        let mut buf = ReadBuf::new(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
            _ => break,
        }
    }
    Poll::Ready(Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "not an HTTP/1 request",
    )))
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.after {
            After::Open => {}
            After::Poison(sent) => {
                this.after = poison(buf, sent);
                return Poll::Ready(Ok(()));
            }
            After::Discard => return discard(&mut this.io, cx),
            After::Fail => return fail(&mut this.io, cx),
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let new = &mut buf.filled_mut()[before..];
        match this.framing.scan(new) {
            Verdict::Pass => {}
            Verdict::Poison(at) => {
                buf.set_filled(before + at);
                this.after = poison(buf, 0);
            }
            Verdict::Close(keep) => {
                this.after = After::Fail;
                if keep == 0 {
                    return fail(&mut this.io, cx);
                }
                buf.set_filled(before + keep);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
