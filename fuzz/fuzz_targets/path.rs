//! Path normalisation: never a panic, and what it accepts is a fixed point that holds
//! none of the forms a server behind the sidecar could read differently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_sidecar::engine::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(decided) = normalize(raw) else {
        return;
    };
    let decided = decided.into_owned();
    assert!(decided.starts_with('/'), "{decided:?}");
    assert!(!decided.contains("//"), "{decided:?}");
    for segment in decided.split('/').skip(1) {
        assert!(segment != "." && segment != "..", "{decided:?}");
        let name = segment.split(';').next().unwrap_or("");
        assert!(name != "." && name != "..", "{decided:?}");
    }
    for b in decided.bytes() {
        assert!(
            b.is_ascii_graphic() && !matches!(b, b'\\' | b'?' | b'#'),
            "{decided:?}"
        );
    }
    let bytes = decided.as_bytes();
    for (i, _) in decided.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).expect("two hex digits after %");
        assert!(
            hex.iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
            "{decided:?}"
        );
        let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16).expect("hex");
        assert!(
            !(v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~')),
            "unreserved left encoded: {decided:?}"
        );
        assert!(
            v != b'/' && v != b'\\' && v >= 0x20 && v != 0x7f,
            "{decided:?}"
        );
        if v == b'%' {
            let next = bytes.get(i + 3..i + 5).unwrap_or_default();
            assert!(
                next.len() < 2 || !next.iter().all(u8::is_ascii_hexdigit),
                "double encoding kept: {decided:?}"
            );
        }
    }
    // Percent-encoded bytes are UTF-8, so a decoder cannot find an overlong `.`.
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
            decoded.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    assert!(
        std::str::from_utf8(&decoded).is_ok(),
        "not UTF-8 once decoded: {decided:?}"
    );
    // What is forwarded decides the same way again.
    assert_eq!(normalize(&decided).map(|c| c.into_owned()), Ok(decided));
});
