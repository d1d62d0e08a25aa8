//! Reading Turnpike resources from YAML manifests (the files you would `kubectl apply`),
//! for the sidecar's local mode, the CLI and tests.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::types::{AccessPolicy, ApiKey, CorsPolicy, GROUP, RateLimitPolicy, VERSION};

/// One Turnpike resource read from a manifest.
#[derive(Debug, Clone)]
pub enum Resource {
    /// An ApiKey.
    ApiKey(ApiKey),
    /// An AccessPolicy.
    AccessPolicy(AccessPolicy),
    /// A RateLimitPolicy.
    RateLimitPolicy(RateLimitPolicy),
    /// A CorsPolicy.
    CorsPolicy(CorsPolicy),
}

impl Resource {
    /// The resource as the JSON object the API server would store.
    pub fn to_json(&self) -> Result<Value, serde_json::Error> {
        match self {
            Resource::ApiKey(r) => serde_json::to_value(r),
            Resource::AccessPolicy(r) => serde_json::to_value(r),
            Resource::RateLimitPolicy(r) => serde_json::to_value(r),
            Resource::CorsPolicy(r) => serde_json::to_value(r),
        }
    }
}

/// Why a manifest could not be read. Messages name the file and document, never echo
/// field values (an ApiKey document may hold a hash).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Not valid YAML.
    #[error("{origin}: not valid YAML: {message}")]
    Yaml {
        /// File (or `<input>`).
        origin: String,
        /// Parser message.
        message: String,
    },
    /// A document has the right apiVersion and kind but does not fit the type.
    #[error("{origin}: document {index} ({kind} {name}): {message}")]
    Invalid {
        /// File (or `<input>`).
        origin: String,
        /// 1-based document number in the file.
        index: usize,
        /// Kind of the document.
        kind: String,
        /// `metadata.name`, if any.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A `turnpike.dev` document of a kind or version we do not know.
    #[error("{origin}: document {index}: unknown Turnpike kind {kind:?} in {api_version:?}")]
    UnknownKind {
        /// File (or `<input>`).
        origin: String,
        /// 1-based document number.
        index: usize,
        /// apiVersion of the document.
        api_version: String,
        /// kind of the document.
        kind: String,
    },
}

/// Parses a multi-document YAML stream. Documents of other API groups (a Deployment in
/// the same folder, say) and empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ManifestError> {
    parse_with_origin(text, "<input>")
}

fn parse_with_origin(text: &str, origin: &str) -> Result<Vec<Resource>, ManifestError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
        origin: origin.to_string(),
        message: yaml_message(&e.to_string()),
    })?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let index = i + 1;
        if doc.is_null() {
            continue;
        }
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let Some((group, version)) = api_version.split_once('/') else {
            continue;
        };
        if group != GROUP {
            continue;
        }
        let name = doc["metadata"]["name"]
            .as_str()
            .unwrap_or("<unnamed>")
            .to_string();
        let invalid = |message: String| ManifestError::Invalid {
            origin: origin.to_string(),
            index,
            kind: kind.clone(),
            name: name.clone(),
            message,
        };
        if version != VERSION {
            return Err(ManifestError::UnknownKind {
                origin: origin.to_string(),
                index,
                api_version,
                kind,
            });
        }
        if doc["metadata"]["name"].as_str().is_none() {
            return Err(invalid("metadata.name is required".into()));
        }
        let resource = match kind.as_str() {
            "ApiKey" => serde_json::from_value(doc).map(Resource::ApiKey),
            "AccessPolicy" => serde_json::from_value(doc).map(Resource::AccessPolicy),
            "RateLimitPolicy" => serde_json::from_value(doc).map(Resource::RateLimitPolicy),
            "CorsPolicy" => serde_json::from_value(doc).map(Resource::CorsPolicy),
            _ => {
                return Err(ManifestError::UnknownKind {
                    origin: origin.to_string(),
                    index,
                    api_version,
                    kind,
                });
            }
        }
        .map_err(|e| invalid(e.to_string()))?;
        out.push(resource);
    }
    Ok(out)
}

/// The parser's message without any quoted source line (which could hold a secret).
fn yaml_message(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_string()
}

/// Reads every `*.yaml` / `*.yml` file of a directory (not recursive), in file-name order.
pub fn read_dir(dir: &Path) -> Result<Vec<Resource>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        out.extend(parse_with_origin(&text, &path.display().to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn skips_foreign_documents_and_reads_ours() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\n---\napiVersion: turnpike.dev/v1alpha1\nkind: CorsPolicy\nmetadata: {name: c, namespace: shop}\nspec: {allowOrigins: ['*']}\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 1);
        assert!(matches!(&docs[0], Resource::CorsPolicy(c) if c.spec.allow_origins == ["*"]));
    }

    #[test]
    fn errors_name_the_document_and_never_echo_values() {
        let text = "apiVersion: turnpike.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: k}\nspec: {keyId: 7k2m9q4xw3ab, hash: 12345, revoked: maybe}\n";
        let err = parse_documents(text).unwrap_err().to_string();
        assert!(err.contains("document 1 (ApiKey k)"), "{err}");
        let err = parse_documents(
            "apiVersion: turnpike.dev/v1beta9\nkind: ApiKey\nmetadata: {name: k}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown Turnpike kind"), "{err}");
        let err = parse_documents("key: [unclosed\nsecret: tpk_aaaaaaaaaaaa_zzz\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("tpk_"), "{err}");
    }
}
