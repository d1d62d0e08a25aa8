#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

/// Scans `bytes` in one piece.
fn whole(bytes: &[u8]) -> Verdict {
    Framing::new().scan(bytes)
}

/// Refused (or closed) at all, scanning in pieces split at `cuts`.
fn pieces(bytes: &[u8], cuts: &[usize]) -> Verdict {
    let mut f = Framing::new();
    let mut start = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.sort_unstable();
    ends.push(bytes.len());
    for end in ends {
        if end < start {
            continue;
        }
        match f.scan(&bytes[start..end]) {
            Verdict::Pass => {}
            Verdict::Poison(at) => return Verdict::Poison(start + at),
            Verdict::Close(_) => return Verdict::Close(0),
        }
        start = end;
    }
    Verdict::Pass
}

const GOOD: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab\ncdGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: Chunked \r\n\r\n5\r\nab\ncd\r\n5;x=\"y\"\r\n12345\r\n0\r\nx-t: 1\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nA ;e\r\n0123456789\r\n0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n\n\n\x00anything",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\n\n",
];

const BAD: &[&[u8]] = &[
    // Host
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    // Content-Length
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
    // Content-Length and Transfer-Encoding
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    // Transfer-Encoding
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    // Line ends and folding
    b"GET / HTTP/1.1\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\n",
    b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n\tb\r\n\r\n",
    b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    // Chunk sizes
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\ng\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
    // Trailers
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx: 1\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx: 1\r\n y\r\n\r\n",
    // A good request, then a smuggled bad one.
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
];

const NOT_HTTP1: &[&[u8]] = &[
    b"INVALID CONNECTION PREFACE\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ",
    b"GET /\r\n\r\n",
    b"GET / HTTP/2\r\nHost: a\r\n\r\n",
    // Refused as soon as the version cannot be HTTP/1 (hyper answers that early).
    b"INVALID CONNECTION PREFA",
];

#[test]
fn good_requests_pass() {
    for g in GOOD {
        assert_eq!(whole(g), Verdict::Pass, "{}", String::from_utf8_lossy(g));
    }
}

#[test]
fn bad_requests_are_poisoned() {
    for b in BAD {
        assert!(
            matches!(whole(b), Verdict::Poison(_)),
            "{}",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn non_http1_is_closed() {
    for b in NOT_HTTP1 {
        assert!(
            matches!(whole(b), Verdict::Close(_)),
            "{}",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn the_head_is_poisoned_when_the_fault_is_in_its_body() {
    let req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n";
    let end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 3;
    assert_eq!(whole(req), Verdict::Poison(end));
    // Once the head is handed over, the fault itself is poisoned.
    let mut f = Framing::new();
    assert_eq!(f.scan(&req[..=end]), Verdict::Pass);
    assert_eq!(f.scan(&req[end + 1..]), Verdict::Poison(1));
}

#[test]
fn good_requests_after_a_pipelined_one_keep_their_bytes() {
    let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nINVALID\r\n\r\n";
    assert_eq!(whole(req), Verdict::Close(27));
}

proptest! {
    /// The verdict does not depend on how the bytes were split into reads.
    #[test]
    fn split_reads_agree(which in 0usize..(GOOD.len() + BAD.len() + NOT_HTTP1.len()),
                         cuts in proptest::collection::vec(0usize..400, 0..6)) {
        let all: Vec<&[u8]> = GOOD.iter().chain(BAD).chain(NOT_HTTP1).copied().collect();
        let bytes = all[which];
        let one = whole(bytes);
        let split = pieces(bytes, &cuts);
        prop_assert_eq!(std::mem::discriminant(&one), std::mem::discriminant(&split));
    }
}
