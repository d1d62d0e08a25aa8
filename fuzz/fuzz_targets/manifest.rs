//! Local mode's manifest decode (multi-document YAML) never panics, whatever the
//! input; its errors never quote a `tpk_` token from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnpike_api::manifest::parse_documents;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = parse_documents(text) {
        let message = e.to_string();
        if let Some(i) = text.find("tpk_") {
            let token: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if token.len() > 20 {
                assert!(!message.contains(&token), "error quotes a token");
            }
        }
    }
});
