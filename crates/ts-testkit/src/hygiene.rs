//! Secrets hygiene across a whole system: every secret a run produced or saw (plaintext item
//! fields, verification codes, access and refresh tokens, and every folder's data key, taken
//! back out of KMS) looked for in every place the system keeps things (each MongoDB
//! document's raw BSON, each Redis key and value, each service's log output), in the forms a
//! leak would take (as is; data keys also as base64, URL-safe base64 and hex).

use anyhow::Context;
use base64::Engine;
use futures::TryStreamExt;

/// One secret and what it is, for the report (which never prints the secret itself).
#[derive(Clone)]
pub struct Secret {
    /// What kind of secret it is ("item field", "verification code", "data key", ...).
    pub kind: &'static str,
    /// The forms to look for.
    forms: Vec<Vec<u8>>,
    /// Match only where the secret stands alone (not inside a longer run of letters and
    /// digits): a 6-digit code must not match inside a timestamp or an id.
    whole: bool,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl Secret {
    /// A text secret, looked for as is.
    pub fn text(kind: &'static str, value: &str) -> Secret {
        Secret { kind, forms: vec![value.as_bytes().to_vec()], whole: false }
    }

    /// A short secret (a verification code), looked for only where it stands alone.
    pub fn token(kind: &'static str, value: &str) -> Secret {
        Secret { kind, forms: vec![value.as_bytes().to_vec()], whole: true }
    }

    /// Key material, looked for raw and in the text encodings a log line or a document would
    /// use.
    pub fn key(kind: &'static str, bytes: &[u8]) -> Secret {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let forms = vec![
            bytes.to_vec(),
            base64::engine::general_purpose::STANDARD.encode(bytes).into_bytes(),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes).into_bytes(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
            hex.clone().into_bytes(),
            hex.to_ascii_uppercase().into_bytes(),
        ];
        Secret { kind, forms, whole: false }
    }

    /// Whether `haystack` holds this secret in any of its forms.
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        self.forms.iter().any(|form| {
            if self.whole {
                crate::fixtures::contains_token(haystack, form)
            } else {
                crate::fixtures::contains_bytes(haystack, form)
            }
        })
    }
}

/// A place the system keeps things, with its bytes.
#[derive(Debug)]
pub struct Place {
    /// Where it is ("mongo <collection>", "redis", "log gateway", ...).
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// Every document of `db` (one place per collection), as raw BSON.
pub async fn mongo_places(db: &mongodb::Database) -> anyhow::Result<Vec<Place>> {
    let mut places: Vec<Place> = Vec::new();
    for doc in crate::fixtures::raw_documents(db).await? {
        let name = format!("mongo {}", doc.collection);
        match places.iter_mut().find(|p| p.name == name) {
            Some(place) => place.bytes.extend_from_slice(&doc.bytes),
            None => places.push(Place { name, bytes: doc.bytes }),
        }
    }
    Ok(places)
}

/// Every folder's data key in `db`'s `data_keys` collection, unwrapped by the KMS API on
/// `kms_port` under the encryption context keyvault binds each key to.
pub async fn data_keys(db: &mongodb::Database, kms_port: u16) -> anyhow::Result<Vec<Vec<u8>>> {
    let kms = crate::kms_client(kms_port);
    let docs: Vec<bson::Document> =
        db.collection::<bson::Document>("data_keys").find(bson::doc! {}).await?.try_collect().await?;
    let mut keys = Vec::new();
    for d in docs {
        let folder_id = d.get_str("folder_id").context("data key without folder_id")?;
        let version = d.get_i64("version").context("data key without version")?;
        let blob = match d.get("wrapped") {
            Some(bson::Bson::Binary(b)) => b.bytes.clone(),
            _ => anyhow::bail!("data key of folder {folder_id} has no wrapped bytes"),
        };
        let out = kms
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
            .encryption_context("folder_id", folder_id)
            .encryption_context("key_version", version.to_string())
            .send()
            .await
            .with_context(|| format!("KMS cannot unwrap the data key of folder {folder_id}"))?;
        keys.push(out.plaintext.map(aws_sdk_kms::primitives::Blob::into_inner).context("no plaintext")?);
    }
    Ok(keys)
}

/// What a scan of a whole stack looked at and found.
#[derive(Debug, Clone)]
pub struct StackScan {
    /// Secrets looked for.
    pub secrets: usize,
    /// How many of each kind, as "36 data key, 24 token, …".
    pub kinds: String,
    /// Places scanned.
    pub places: usize,
    /// Bytes scanned.
    pub bytes: usize,
    /// Where a secret was found (empty when clean).
    pub hits: Vec<String>,
}

/// Scans a running stack for `secrets` plus every folder's data key (taken back out of its
/// KMS): the raw BSON of every MongoDB collection, every Redis key and value, every
/// process's log. Fails when a service's log is empty or no item is stored (the scan would
/// see nothing).
pub async fn scan_stack(stack: &crate::ProcessStack, mut secrets: Vec<Secret>) -> anyhow::Result<StackScan> {
    let db = stack.database().await?;
    for key in data_keys(&db, stack.kms.port).await? {
        secrets.push(Secret::key("data key", &key));
    }
    let mut places = mongo_places(&db).await?;
    places.push(Place { name: "redis".into(), bytes: crate::redis_bytes(stack.redis.port)? });
    for (name, process) in stack.processes() {
        places
            .push(Place { name: format!("log {name}"), bytes: std::fs::read(process.log_path()).unwrap_or_default() });
    }
    // The services always log (their start at least); the stores may have nothing to say.
    let services: Vec<String> = teamshare::Service::ALL.iter().map(|s| format!("log {}", s.name())).collect();
    let empty: Vec<&str> =
        places.iter().filter(|p| services.contains(&p.name) && p.bytes.is_empty()).map(|p| p.name.as_str()).collect();
    anyhow::ensure!(empty.is_empty(), "the hygiene scan found these service logs empty: {empty:?}");
    anyhow::ensure!(places.iter().any(|p| p.name == "mongo items" && !p.bytes.is_empty()), "no stored item to scan");
    let mut kinds: Vec<&str> = secrets.iter().map(|s| s.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let counted: Vec<String> =
        kinds.iter().map(|k| format!("{} {k}", secrets.iter().filter(|s| s.kind == *k).count())).collect();
    let hits = scan(&places, &secrets)?;
    Ok(StackScan {
        secrets: secrets.len(),
        kinds: counted.join(", "),
        places: places.len(),
        bytes: places.iter().map(|p| p.bytes.len()).sum(),
        hits,
    })
}

/// Each (place, secret kind) where a secret was found, once per pair, with how many secrets
/// of that kind were found there. Empty when the system is clean. One pass over each place
/// for all secrets at once (Aho-Corasick), so a soak's megabytes of logs and thousands of
/// secrets take seconds.
pub fn scan(places: &[Place], secrets: &[Secret]) -> anyhow::Result<Vec<String>> {
    let mut patterns: Vec<&[u8]> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        for form in secret.forms.iter().filter(|f| !f.is_empty()) {
            patterns.push(form);
            owner.push(i);
        }
    }
    let mut hits = Vec::new();
    if patterns.is_empty() {
        return Ok(hits);
    }
    let matcher = aho_corasick::AhoCorasick::new(&patterns).context("building the secrets matcher")?;
    for place in places {
        let mut found = std::collections::BTreeSet::new();
        for m in matcher.find_overlapping_iter(&place.bytes) {
            let secret = owner[m.pattern().as_usize()];
            if !secrets[secret].whole || crate::fixtures::stands_alone(&place.bytes, m.start(), m.len()) {
                found.insert(secret);
            }
        }
        let mut by_kind: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for secret in found {
            *by_kind.entry(secrets[secret].kind).or_default() += 1;
        }
        hits.extend(by_kind.into_iter().map(|(kind, n)| format!("{}: {n} {kind}(s)", place.name)));
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(bytes: &[u8]) -> Vec<Place> {
        vec![Place { name: "log x".into(), bytes: bytes.to_vec() }]
    }

    #[test]
    fn a_planted_secret_is_found_in_every_form_and_a_code_only_where_it_stands_alone() {
        let key = [0xABu8; 32];
        let secrets =
            vec![Secret::key("data key", &key), Secret::token("code", "123456"), Secret::text("field", "Q3-m4rk")];
        assert!(scan(&place(b"nothing here 1234567 t=2026-11-28T07:00:00.123456Z"), &secrets).unwrap().is_empty());
        assert_eq!(scan(&place(b"code=123456;"), &secrets).unwrap(), ["log x: 1 code(s)"]);
        assert_eq!(scan(&place(b"{\"name\":\"Q3-m4rk\"}"), &secrets).unwrap(), ["log x: 1 field(s)"]);
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        for form in [key.to_vec(), hex.into_bytes(), b64.into_bytes(), b64url.into_bytes()] {
            let mut bytes = b"key: ".to_vec();
            bytes.extend_from_slice(&form);
            assert_eq!(scan(&place(&bytes), &secrets).unwrap(), ["log x: 1 data key(s)"]);
        }
    }
}
