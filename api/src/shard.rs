//! Key shards: one target's [`KeyBundle`] spread over several Secrets when it does not
//! fit in one.
//!
//! The primary Secret `turnpike-<target>` keeps [`KEYS_FILE`]; when the keys outgrow
//! [`SHARD_BUDGET`], the primary holds the first keys plus a list of the extra shards it
//! expects ([`KeyBundle::shards`]: file name and content hash of each), and each extra
//! Secret [`crate::bundle::shard_object_name`] holds one sealed [`KeyShard`] under
//! [`shard_file`]. The injector projects every possible shard Secret as an optional
//! source into the sidecar's volume, so the sidecar finds them next to `keys.json`.
//!
//! The primary pins each shard by content hash, and its own content hash covers that
//! list, so a sidecar that sees a new primary with an old (or missing) shard — a torn
//! update, as the kubelet refreshes projected sources one by one — knows it and keeps
//! its last good bundle until the set is whole ([`merge`]).
//!
//! A target whose keys fit in one budget gets exactly the `keys.json` it got before
//! sharding existed: no `shards` field, same bytes, same hash.
//!
//! # Why the format version stays [`FORMAT`]
//!
//! The change is additive and fails closed on its own: a sidecar built before sharding
//! refuses a primary that carries `shards` (every bundle type denies unknown fields),
//! logs it, counts it in its reload-failure metric and keeps its last good bundle, which
//! is what a format mismatch would do too; unsharded bundles, by far the common case,
//! stay byte-identical, so operator and sidecars can be upgraded in either order without
//! any sidecar refusing a bundle it could enforce. Bumping the format would have made
//! every older sidecar refuse every bundle during an upgrade.
//!
//! # Budget
//!
//! Kubernetes refuses a Secret whose `data` values add up to more than 1 MiB
//! (1,048,576 bytes). `ValidateSecret` sums the *decoded* lengths: base64 is only how
//! JSON carries the bytes on the wire (etcd stores them raw, in protobuf), so it does
//! not count against the limit. The whole stored object (data, plus labels, up to 32
//! owner references, managed fields and any encryption-at-rest overhead) must also fit
//! etcd's request limit, 1.5 MiB by default. [`SHARD_BUDGET`] = 900 KiB of JSON per
//! file stays 124 KiB under the data limit and over 500 KiB under etcd's; base64 makes
//! the apply request body about 1.2 MiB, well under the API server's 3 MiB.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    bundle::{FORMAT, KEYS_FILE, KeyBundle, KeyEntry, MAX_KEY_SHARDS, Sealed, shard_file},
    signing::{BundleSignature, MAX_SIGNATURES, SignatureError},
    token::KeyId,
};

/// Most bytes of JSON put in one key file (`keys.json` or `keys-<n>.json`): 900 KiB,
/// under the 1 MiB a Secret's data may hold (see the module documentation).
pub const SHARD_BUDGET: usize = 900 * 1024;

/// An extra shard the primary `keys.json` expects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardRef {
    /// Its file (Secret data key): [`shard_file`] of its 1-based position in the list.
    pub file: String,
    /// The content hash the shard must carry.
    pub content_hash: String,
}

/// One extra shard of a target's keys (the payload of Secret
/// [`crate::bundle::shard_object_name`]`(target, shard)` under [`shard_file`]`(shard)`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyShard {
    /// [`FORMAT`].
    pub format: u32,
    /// SHA-256 (hex) of this shard serialised with an empty `contentHash`.
    pub content_hash: String,
    /// Namespace of the target.
    pub namespace: String,
    /// Target name.
    pub target: String,
    /// Session epoch, the primary's.
    pub epoch: u64,
    /// Position of this shard, 1-based (the primary is 0).
    pub shard: usize,
    /// Keys by id; no id appears in two files of one target.
    pub keys: BTreeMap<KeyId, KeyEntry>,
    /// Signatures over this file (see [`crate::signing`]); empty when unsigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<BundleSignature>,
}

impl Sealed for KeyShard {
    /// The file pattern; errors about a shard name its actual file.
    const FILE: &'static str = "keys-<n>.json";
    fn content_hash_mut(&mut self) -> &mut String {
        &mut self.content_hash
    }
    fn content_hash(&self) -> &str {
        &self.content_hash
    }
    fn format(&self) -> u32 {
        self.format
    }
    fn signatures(&self) -> &[BundleSignature] {
        &self.signatures
    }
    fn signatures_mut(&mut self) -> &mut Vec<BundleSignature> {
        &mut self.signatures
    }
    fn signed_file(&self) -> String {
        shard_file(self.shard)
    }
    fn scope(&self) -> (&str, &str) {
        (&self.namespace, &self.target)
    }
}

/// A target's keys as written: the primary `keys.json` and the extra shards, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharded {
    /// `keys.json`: the first keys and, when there are shards, the list of them.
    pub primary: KeyBundle,
    /// Shards 1, 2, ... in order.
    pub shards: Vec<KeyShard>,
}

impl Sharded {
    /// `(file, JSON)` of every extra shard, in order.
    pub fn shard_files(&self) -> Vec<(String, String)> {
        self.shards
            .iter()
            .map(|s| (shard_file(s.shard), s.to_json()))
            .collect()
    }
}

/// Why keys could not be split, or a shard set could not be merged. Messages name
/// targets, files, counts and key ids (public), never a hash.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    /// The keys need more Secrets than a target may use.
    #[error(
        "target {namespace}/{target}: its {keys} keys need {needed} Secrets of at most {budget} bytes each, more than the {max} one target may use; spread the keys over more targets (ApiKey spec.targets) or retire unused keys"
    )]
    TooManyShards {
        /// Namespace of the target.
        namespace: String,
        /// Target.
        target: String,
        /// Keys of the target.
        keys: usize,
        /// Secrets they need.
        needed: usize,
        /// [`MAX_KEY_SHARDS`].
        max: usize,
        /// [`SHARD_BUDGET`] (or the budget given).
        budget: usize,
    },
    /// One key entry alone does not fit in a shard.
    #[error(
        "target {namespace}/{target}: the entry of ApiKey {name} alone takes {size} bytes, more than a key file may hold ({budget})"
    )]
    EntryTooLarge {
        /// Namespace of the target.
        namespace: String,
        /// Target.
        target: String,
        /// ApiKey name.
        name: String,
        /// Its serialised size.
        size: usize,
        /// The budget.
        budget: usize,
    },
    /// The primary's shard list is malformed.
    #[error("{KEYS_FILE}: shard list entry {index} names {found:?}, expected {expected}")]
    BadList {
        /// 1-based position in the list.
        index: usize,
        /// File named.
        found: String,
        /// File expected there.
        expected: String,
    },
    /// The primary lists more shards than a target may have.
    #[error("{KEYS_FILE}: lists {found} shards, at most {} are allowed", MAX_KEY_SHARDS - 1)]
    TooManyListed {
        /// How many it lists.
        found: usize,
    },
    /// A listed shard is not in the bundle directory (yet).
    #[error("{file}: listed by {KEYS_FILE} but missing (update still arriving?)")]
    Missing {
        /// The file.
        file: String,
    },
    /// Not JSON of the shard shape.
    #[error("{file}: not a valid key shard: {message}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong (no values echoed).
        message: String,
    },
    /// Another format version.
    #[error("{file}: bundle format {found} is not supported (this build reads format {FORMAT})")]
    Format {
        /// The file.
        file: String,
        /// Format found.
        found: u32,
    },
    /// The shard's own content hash does not match (torn write or tampering).
    #[error("{file}: content hash mismatch (torn or modified file)")]
    Hash {
        /// The file.
        file: String,
    },
    /// An intact shard, but not the one the primary lists (old or new: a torn update).
    #[error("{file}: not the shard {KEYS_FILE} lists (torn update: one of them is newer)")]
    Stale {
        /// The file.
        file: String,
    },
    /// The shard belongs to another target, epoch or position.
    #[error("{file}: {field} is {found}, but {KEYS_FILE} says {expected}")]
    Mismatch {
        /// The file.
        file: String,
        /// Which field differs.
        field: &'static str,
        /// Value in the primary.
        expected: String,
        /// Value in the shard.
        found: String,
    },
    /// The same key id in two files.
    #[error("key id {id} appears in both {first} and {second}")]
    Duplicate {
        /// The key id (public).
        id: String,
        /// First file holding it.
        first: String,
        /// Second file holding it.
        second: String,
    },
    /// A shard's signature is missing or not by a trusted key.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Splits a compiled key bundle into `keys.json` and extra shards of at most
/// [`SHARD_BUDGET`] bytes each. See [`split_with_budget`].
pub fn split(bundle: &KeyBundle) -> Result<Sharded, ShardError> {
    split_with_budget(bundle, SHARD_BUDGET)
}

/// Splits `bundle` (as the compiler makes it: sealed, no shard list) so that every file's
/// JSON is at most `budget` bytes.
///
/// Deterministic: keys are taken in id order and each file is filled greedily, so the
/// same keys give the same files, byte for byte. A bundle whose JSON fits in `budget` is
/// returned unchanged, with no shards. Errors when one entry alone exceeds the budget or
/// when the keys need more than [`MAX_KEY_SHARDS`] files.
pub fn split_with_budget(bundle: &KeyBundle, budget: usize) -> Result<Sharded, ShardError> {
    // Each entry as `"id":{...},`; the JSON has one comma fewer than entries.
    let sizes: Vec<usize> = bundle
        .keys
        .iter()
        .map(|(id, entry)| json_len(id) + 1 + json_len(entry) + 1)
        .collect();
    let whole = json_len(&bundle.clone_envelope()) + sizes.iter().sum::<usize>()
        - usize::from(!sizes.is_empty());
    // Signing comes after the split: keep room for the largest signature list and
    // generation, so a signed file stays within the budget too.
    if bundle.shards.is_empty() && whole + signing_room() <= budget {
        return Ok(Sharded {
            primary: bundle.clone(),
            shards: Vec::new(),
        });
    }
    // Room left for keys in each file, after its envelope at its largest: 64-character
    // hashes, and for the primary a full shard list.
    let primary_room = budget.saturating_sub(primary_envelope(bundle));
    let shard_room = budget.saturating_sub(shard_envelope(bundle));
    let mut chunks: Vec<BTreeMap<KeyId, KeyEntry>> = vec![BTreeMap::new()];
    let mut used = 0usize;
    for ((id, entry), &size) in bundle.keys.iter().zip(&sizes) {
        if size > primary_room.min(shard_room) {
            return Err(ShardError::EntryTooLarge {
                namespace: bundle.namespace.clone(),
                target: bundle.target.clone(),
                name: entry.name.clone(),
                size,
                budget,
            });
        }
        let room = if chunks.len() == 1 {
            primary_room
        } else {
            shard_room
        };
        if used + size > room {
            chunks.push(BTreeMap::new());
            used = 0;
        }
        used += size;
        if let Some(chunk) = chunks.last_mut() {
            chunk.insert(id.clone(), entry.clone());
        }
    }
    if chunks.len() > MAX_KEY_SHARDS {
        return Err(ShardError::TooManyShards {
            namespace: bundle.namespace.clone(),
            target: bundle.target.clone(),
            keys: bundle.keys.len(),
            needed: chunks.len(),
            max: MAX_KEY_SHARDS,
            budget,
        });
    }
    let mut chunks = chunks.into_iter();
    let first = chunks.next().unwrap_or_default();
    let shards: Vec<KeyShard> = chunks
        .enumerate()
        .map(|(i, keys)| {
            let mut shard = KeyShard {
                format: FORMAT,
                content_hash: String::new(),
                namespace: bundle.namespace.clone(),
                target: bundle.target.clone(),
                epoch: bundle.epoch,
                shard: i + 1,
                keys,
                signatures: Vec::new(),
            };
            shard.seal();
            shard
        })
        .collect();
    let mut primary = KeyBundle {
        format: FORMAT,
        content_hash: String::new(),
        namespace: bundle.namespace.clone(),
        target: bundle.target.clone(),
        epoch: bundle.epoch,
        generation: bundle.generation,
        shards: shards
            .iter()
            .map(|s| ShardRef {
                file: shard_file(s.shard),
                content_hash: s.content_hash.clone(),
            })
            .collect(),
        keys: first,
        signatures: Vec::new(),
    };
    primary.seal();
    Ok(Sharded { primary, shards })
}

/// Length of `value`'s JSON, counted without building it.
fn json_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        // Plain data with string keys always serialises; if not, count it as too big.
        Err(_) => usize::MAX / 4,
    }
}

impl KeyBundle {
    /// Everything but the keys.
    fn clone_envelope(&self) -> KeyBundle {
        KeyBundle {
            format: self.format,
            content_hash: self.content_hash.clone(),
            namespace: self.namespace.clone(),
            target: self.target.clone(),
            epoch: self.epoch,
            generation: self.generation,
            shards: self.shards.clone(),
            keys: BTreeMap::new(),
            signatures: self.signatures.clone(),
        }
    }
}

/// The largest signature list a file may carry, for the envelope sizes: signing happens
/// after the split, so the budget keeps room for it.
fn room_for_signatures() -> Vec<BundleSignature> {
    vec![
        BundleSignature {
            key_id: "0".repeat(16),
            value: "A".repeat(88),
        };
        MAX_SIGNATURES
    ]
}

/// Bytes that signing may add to a file: the largest signature list and generation
/// with their field names.
pub fn signing_room() -> usize {
    json_len(&room_for_signatures())
        + r#","signatures":"#.len()
        + r#","generation":"#.len()
        + json_len(&u64::MAX)
}

fn primary_envelope(bundle: &KeyBundle) -> usize {
    let full_hash = "0".repeat(64);
    let envelope = KeyBundle {
        format: FORMAT,
        content_hash: full_hash.clone(),
        namespace: bundle.namespace.clone(),
        target: bundle.target.clone(),
        epoch: bundle.epoch,
        generation: u64::MAX,
        shards: (1..MAX_KEY_SHARDS)
            .map(|n| ShardRef {
                file: shard_file(n),
                content_hash: full_hash.clone(),
            })
            .collect(),
        keys: BTreeMap::new(),
        signatures: room_for_signatures(),
    };
    json_len(&envelope)
}

fn shard_envelope(bundle: &KeyBundle) -> usize {
    let envelope = KeyShard {
        format: FORMAT,
        content_hash: "0".repeat(64),
        namespace: bundle.namespace.clone(),
        target: bundle.target.clone(),
        epoch: bundle.epoch,
        shard: MAX_KEY_SHARDS,
        keys: BTreeMap::new(),
        signatures: room_for_signatures(),
    };
    json_len(&envelope)
}

/// The shard files `primary` lists, checked: at most `MAX_KEY_SHARDS - 1`, named
/// [`shard_file`]`(1)`, `(2)`, ... in order (so a reader never opens a path a bundle
/// chose). Returns `(shard number, file)` pairs.
pub fn listed(primary: &KeyBundle) -> Result<Vec<(usize, String)>, ShardError> {
    if primary.shards.len() > MAX_KEY_SHARDS - 1 {
        return Err(ShardError::TooManyListed {
            found: primary.shards.len(),
        });
    }
    primary
        .shards
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let expected = shard_file(i + 1);
            if r.file == expected {
                Ok((i + 1, expected))
            } else {
                Err(ShardError::BadList {
                    index: i + 1,
                    found: r.file.chars().take(64).collect(),
                    expected,
                })
            }
        })
        .collect()
}

/// Parses one shard file and checks its shape, format and own content hash.
pub fn parse_shard(file: &str, text: &str) -> Result<KeyShard, ShardError> {
    let shard: KeyShard = crate::bundle::parse_as(text).map_err(|message| ShardError::Parse {
        file: file.to_string(),
        message,
    })?;
    if shard.format != FORMAT {
        return Err(ShardError::Format {
            file: file.to_string(),
            found: shard.format,
        });
    }
    let mut copy = shard.clone();
    copy.seal();
    if copy.content_hash != shard.content_hash {
        return Err(ShardError::Hash {
            file: file.to_string(),
        });
    }
    Ok(shard)
}

/// Verifies a primary `keys.json` (already parsed and checked by
/// [`crate::bundle::parse`]) against the shard files found next to it (`file` ->
/// text; files it does not list are ignored), and merges them into one bundle.
///
/// Every listed shard must be present, intact, carry the content hash the primary
/// lists, and belong to the same namespace, target, epoch and position; no key id may
/// appear twice. The result has every key, no shard list, and the primary's content
/// hash (which covers the shards' hashes, so it still identifies the whole set).
pub fn merge(
    primary: KeyBundle,
    files: &BTreeMap<String, String>,
) -> Result<KeyBundle, ShardError> {
    merge_checked(primary, files, |_| Ok(()))
}

/// [`merge`], with `check` run on every shard once it is parsed (the sidecar checks
/// each shard's signature here).
pub fn merge_checked(
    mut primary: KeyBundle,
    files: &BTreeMap<String, String>,
    check: impl Fn(&KeyShard) -> Result<(), SignatureError>,
) -> Result<KeyBundle, ShardError> {
    let listed = listed(&primary)?;
    let mut origin: BTreeMap<KeyId, usize> = BTreeMap::new();
    let mut shards = Vec::with_capacity(listed.len());
    for ((n, file), r) in listed.into_iter().zip(&primary.shards) {
        let text = files
            .get(&file)
            .ok_or_else(|| ShardError::Missing { file: file.clone() })?;
        let shard = parse_shard(&file, text)?;
        if shard.content_hash != r.content_hash {
            return Err(ShardError::Stale { file });
        }
        let mismatch = |field: &'static str, expected: String, found: String| {
            Err(ShardError::Mismatch {
                file: file.clone(),
                field,
                expected,
                found,
            })
        };
        if shard.namespace != primary.namespace || shard.target != primary.target {
            return mismatch(
                "namespace/target",
                format!("{}/{}", primary.namespace, primary.target),
                format!("{}/{}", shard.namespace, shard.target),
            );
        }
        if shard.epoch != primary.epoch {
            return mismatch("epoch", primary.epoch.to_string(), shard.epoch.to_string());
        }
        if shard.shard != n {
            return mismatch("shard", n.to_string(), shard.shard.to_string());
        }
        check(&shard)?;
        shards.push(shard);
    }
    let file_of = |n: usize| {
        if n == 0 {
            KEYS_FILE.to_string()
        } else {
            shard_file(n)
        }
    };
    for id in primary.keys.keys() {
        origin.insert(id.clone(), 0);
    }
    for shard in shards {
        for (id, entry) in shard.keys {
            if let Some(first) = origin.get(&id) {
                return Err(ShardError::Duplicate {
                    id: id.to_string(),
                    first: file_of(*first),
                    second: file_of(shard.shard),
                });
            }
            origin.insert(id.clone(), shard.shard);
            primary.keys.insert(id, entry);
        }
    }
    primary.shards.clear();
    Ok(primary)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
