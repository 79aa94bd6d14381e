//! Single sign-on: OIDC ID tokens verified against a configured issuer's keys (a JWKS file or
//! URL), its issuer name and our audience, expiry, and `email_verified`.

use std::time::{Duration, Instant};
use ts_contract::status::Reason;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;
use ts_config::{ConfigError, SsoIssuerConfig};
use ts_contract::clock::unix_secs;

use crate::email::Email;
use crate::state::{Auth, AuthError, AuthResult};

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    File,
    Url(String),
}

/// A configured OIDC issuer with its keys.
#[derive(Debug)]
pub struct SsoIssuer {
    issuer: String,
    audience: String,
    source: KeySource,
    keys: RwLock<(JwkSet, Option<Instant>)>,
}

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;
/// Keys fetched from a URL are refreshed this often when used…
const REFRESH_EVERY: Duration = Duration::from_secs(600);
/// …and at most this often when a token names a key we do not have.
const REFRESH_AT_MOST: Duration = Duration::from_secs(30);

fn parse_jwks(bytes: &[u8]) -> Result<JwkSet, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))
}

/// Fetches a JWKS over https (or http to loopback), with a 5 s deadline.
async fn fetch(url: &str) -> Result<JwkSet, String> {
    use http_body_util::{BodyExt, Empty};
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    if body.len() > 1024 * 1024 {
        return Err("JWKS larger than 1 MiB".into());
    }
    parse_jwks(&body)
}

/// Accepts https, and plain http only to a loopback address (development and tests).
fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let uri: http::Uri = url.parse().map_err(|e| ConfigError::key(key, format!("bad URL: {e}")))?;
    let loopback = matches!(uri.host(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if loopback => Ok(()),
        _ => Err(ConfigError::key(key, "must be an https URL (plain http only to a loopback address)")),
    }
}

impl SsoIssuer {
    /// Loads each issuer's JWKS file, or fetches its JWKS URL (an issuer that cannot be
    /// reached at start is fetched again on first use rather than stopping auth).
    pub async fn load(configs: &[SsoIssuerConfig]) -> Result<Vec<SsoIssuer>, ConfigError> {
        let mut out = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let (source, keys, fetched) = match (&c.jwks_file, &c.jwks_url) {
                (Some(path), None) => {
                    let key = format!("accounts.sso[{i}].jwks_file");
                    ts_config::check_file(&key, path)?;
                    let text = std::fs::read(path).map_err(|e| ConfigError::key(&key, e.to_string()))?;
                    (KeySource::File, parse_jwks(&text).map_err(|e| ConfigError::key(&key, e))?, None)
                }
                (None, Some(url)) => {
                    check_url(&format!("accounts.sso[{i}].jwks_url"), url)?;
                    match fetch(url).await {
                        Ok(keys) => (KeySource::Url(url.clone()), keys, Some(Instant::now())),
                        Err(e) => {
                            tracing::warn!(issuer = %c.issuer, error = %e, "cannot fetch the issuer's JWKS yet");
                            (KeySource::Url(url.clone()), JwkSet { keys: Vec::new() }, None)
                        }
                    }
                }
                _ => {
                    return Err(ConfigError::key(
                        format!("accounts.sso[{i}]"),
                        "set exactly one of jwks_file and jwks_url",
                    ));
                }
            };
            out.push(SsoIssuer {
                issuer: c.issuer.clone(),
                audience: c.audience.clone(),
                source,
                keys: RwLock::new((keys, fetched)),
            });
        }
        Ok(out)
    }

    /// The key a token names, refreshing URL-sourced keys when stale or missing.
    async fn key_for(&self, kid: Option<&str>) -> Option<jsonwebtoken::jwk::Jwk> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let (found, fetched) = {
            let keys = self.keys.read().await;
            (find(&keys.0), keys.1)
        };
        let KeySource::Url(url) = &self.source else { return found };
        let age = fetched.map(|t| t.elapsed());
        let stale = age.is_none_or(|a| a > REFRESH_EVERY);
        let may_retry = age.is_none_or(|a| a > REFRESH_AT_MOST);
        if (found.is_none() && may_retry) || stale {
            match fetch(url).await {
                Ok(set) => {
                    let key = find(&set);
                    *self.keys.write().await = (set, Some(Instant::now()));
                    return key;
                }
                Err(e) => tracing::warn!(issuer = %self.issuer, error = %e, "cannot refresh the issuer's JWKS"),
            }
        }
        found
    }
}

#[derive(Deserialize)]
struct IdClaims {
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    exp: u64,
}

impl Auth {
    /// The email of an ID token that a configured issuer really signed, whatever else is
    /// wrong with it (expired, another audience, email not verified): only to tell that
    /// person a sign-in as them was refused. A token no trusted issuer signed names nobody,
    /// so a forged token cannot write into anyone's audit trail.
    pub async fn signed_email(&self, token: &str) -> Option<Email> {
        let header = jsonwebtoken::decode_header(token.trim()).ok()?;
        for issuer in &self.sso {
            let Some(jwk) = issuer.key_for(header.kid.as_deref()).await else { continue };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
            let mut validation = Validation::new(header.alg);
            validation.validate_exp = false;
            validation.validate_aud = false;
            validation.required_spec_claims = Default::default();
            if let Ok(data) = jsonwebtoken::decode::<IdClaims>(token.trim(), &key, &validation) {
                return data.claims.email.and_then(|e| Email::parse(&e).ok());
            }
        }
        None
    }

    /// Verifies an ID token and returns its verified email.
    pub async fn verify_id_token(&self, token: &str) -> AuthResult<Email> {
        let refused = |why: &str| {
            AuthError::Unauthenticated(Reason::SsoTokenInvalid, format!("single sign-on token refused: {why}"))
        };
        let header = jsonwebtoken::decode_header(token.trim()).map_err(|_| refused("malformed"))?;
        let now = unix_secs(self.now());
        for issuer in &self.sso {
            let Some(jwk) = issuer.key_for(header.kid.as_deref()).await else { continue };
            let key = DecodingKey::from_jwk(&jwk).map_err(|_| refused("issuer key unusable"))?;
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[&issuer.issuer]);
            validation.set_audience(&[&issuer.audience]);
            validation.validate_exp = false; // against the injected clock below
            validation.required_spec_claims = ["exp", "iss", "aud"].iter().map(|s| s.to_string()).collect();
            let claims = match jsonwebtoken::decode::<IdClaims>(token.trim(), &key, &validation) {
                Ok(data) => data.claims,
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    let why = match e.kind() {
                        ErrorKind::InvalidIssuer => "wrong issuer",
                        ErrorKind::InvalidAudience => "wrong audience",
                        ErrorKind::InvalidSignature => "bad signature",
                        ErrorKind::InvalidAlgorithm => "algorithm does not match the key",
                        _ => "invalid token",
                    };
                    return Err(refused(why));
                }
            };
            if now >= claims.exp + LEEWAY_SECS {
                return Err(refused("expired"));
            }
            let verified = matches!(claims.email_verified, Some(serde_json::Value::Bool(true)))
                || matches!(&claims.email_verified, Some(serde_json::Value::String(s)) if s == "true");
            if !verified {
                return Err(refused("the issuer has not verified this email"));
            }
            let email = claims.email.ok_or_else(|| refused("no email claim"))?;
            return Email::parse(&email).map_err(|_| refused("email claim is not a valid address"));
        }
        Err(refused("unknown issuer key"))
    }
}
