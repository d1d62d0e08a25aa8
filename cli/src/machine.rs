//! Output for scripts: `-o json` and `-o yaml` of `list`, `describe` and `usage`.
//!
//! Each command builds a view of its own (never a raw object: an ApiKey's `spec.hash`
//! has no field in any view), and [`write`] prints it. Before printing, every string
//! in the document goes through [`redact`], so a token or an argon2 hash that reached
//! free text (an owner, a condition message, an Event note, a sidecar's answer) is
//! masked there too.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;
use serde_json::Value;
use turnpike_api::token::PREFIX as TOKEN_PREFIX;

use crate::error::Error;

/// Output formats of `list`, `describe` and `usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table (or, for `describe`, labelled fields) for people.
    #[default]
    Table,
    /// One pretty-printed JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

impl Format {
    /// The flag value, for messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Yaml => "yaml",
        }
    }
}

/// What replaces a token (`tpk_...` up to the end of the token's characters).
pub const TOKEN_MASK: &str = "tpk_***";
/// What replaces an argon2 PHC string (`$argon2...` up to the next blank).
pub const HASH_MASK: &str = "$argon2***";
/// Start of every argon2 PHC string (`$argon2id$v=19$...`, and the i/d variants).
const HASH_PREFIX: &str = "$argon2";

/// Characters a token is made of after its prefix (base32 id, `_`, base62 secret and
/// check): a masked token is cut at the first other character.
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `text` with every token and argon2 hash masked. A token is masked from its `tpk_`
/// prefix on, whether its checksum is right or not (a mistyped token is still mostly
/// secret); a hash from `$argon2` to the next whitespace.
pub fn redact_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = [
            rest.find(TOKEN_PREFIX).map(|at| (at, true)),
            rest.find(HASH_PREFIX).map(|at| (at, false)),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some((at, is_token)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let (mask, prefix_len, keep): (&str, usize, fn(char) -> bool) = if is_token {
            (TOKEN_MASK, TOKEN_PREFIX.len(), token_char)
        } else {
            (HASH_MASK, HASH_PREFIX.len(), |c: char| !c.is_whitespace())
        };
        out.push_str(mask);
        let tail = &rest[at + prefix_len..];
        let end = tail.find(|c: char| !keep(c)).unwrap_or(tail.len());
        rest = &tail[end..];
    }
}

/// `value` with [`redact_str`] applied to every string in it, keys included.
pub fn redact(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(redact_str(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (redact_str(&k), redact(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `view` as the text `format` prints: pretty JSON or YAML, redacted, ending in a
/// newline.
///
/// # Errors
/// [`Error::Encode`] when the view cannot be encoded (not expected for the plugin's
/// views), and when `format` is [`Format::Table`], which is not a machine format.
pub fn render<T: Serialize>(view: &T, format: Format) -> Result<String, Error> {
    let encode = |message: String| Error::Encode {
        format: format.as_str(),
        message,
    };
    let value = redact(serde_json::to_value(view).map_err(|e| encode(e.to_string()))?);
    let mut text = match format {
        Format::Json => serde_json::to_string_pretty(&value).map_err(|e| encode(e.to_string()))?,
        Format::Yaml => serde_saphyr::to_string(&value).map_err(|e| encode(e.to_string()))?,
        Format::Table => return Err(encode("a table is not a machine format".to_owned())),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// Prints `view` to `out` as [`render`] does.
///
/// # Errors
/// See [`render`]; [`Error::Output`] when writing fails.
pub fn write<T: Serialize>(view: &T, format: Format, out: &mut dyn Write) -> Result<(), Error> {
    out.write_all(render(view, format)?.as_bytes())?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use turnpike_api::token::Token;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";

    #[test]
    fn tokens_and_hashes_are_masked_wherever_they_are() {
        let token = Token::mint().unwrap();
        let t = token.expose_token();
        assert_eq!(redact_str(t), TOKEN_MASK);
        assert_eq!(
            redact_str(&format!("owner pasted {t}, oops")),
            "owner pasted tpk_***, oops"
        );
        assert_eq!(
            redact_str(&format!("{HASH} and {t}/x")),
            "$argon2*** and tpk_***/x"
        );
        // A token with a wrong checksum or cut short is still mostly secret.
        assert_eq!(redact_str(&t[..30]), TOKEN_MASK);
        assert_eq!(redact_str("tpk_"), TOKEN_MASK);
        assert_eq!(redact_str("no secrets here"), "no secrets here");
        assert_eq!(redact_str("Équipe ✓"), "Équipe ✓");

        let v = redact(json!({"a": [t, {"b": HASH}], t: 1, "n": 3, "z": null}));
        let text = v.to_string();
        assert!(!text.contains(t) && !text.contains("c29tZXNhbHR"), "{text}");
        assert_eq!(v["a"][1]["b"], HASH_MASK);
        assert_eq!(v[TOKEN_MASK], 1);
        assert_eq!(v["n"], 3);
    }

    #[test]
    fn json_and_yaml_say_the_same() {
        let view = json!({"name": "billing", "scopes": ["a", "b"], "quota": 5, "owner": null});
        let from_json: Value = serde_json::from_str(&render(&view, Format::Json).unwrap()).unwrap();
        let from_yaml: Value =
            serde_saphyr::from_str(&render(&view, Format::Yaml).unwrap()).unwrap();
        assert_eq!(from_json, view);
        assert_eq!(from_yaml, view);
        assert!(render(&view, Format::Table).is_err());
    }
}
