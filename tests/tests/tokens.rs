//! Access and refresh tokens at the gateway: expiry, tampering, unknown keys, revocation,
//! and refresh-token reuse.

use std::time::Duration;

use tonic::Code;
use ts_common::tokens::{AUDIENCE, Claims, ISSUER, header, key_id};
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::{GetMeRequest, RefreshSessionRequest, SignOutRequest};
use ts_testkit::{TestCluster, bearer};

async fn me(cluster: &TestCluster, token: &str) -> Result<String, tonic::Status> {
    let mut auth = AuthServiceClient::new(cluster.gateway().await.expect("gateway"));
    auth.get_me(bearer(token, GetMeRequest {})).await.map(|r| r.into_inner().user.map(|u| u.email).unwrap_or_default())
}

fn assert_refused(result: Result<String, tonic::Status>, what: &str) {
    match result {
        Err(s) => assert_eq!(s.code(), Code::Unauthenticated, "{what}: {s:?}"),
        Ok(v) => panic!("{what}: accepted ({v})"),
    }
}

/// A token with the right shape and claims, signed by a key auth does not have.
fn forged(claims: &Claims, same_kid_as: Option<&str>) -> String {
    let pem = ts_common::tls::generate_signing_key().expect("key");
    let kid = same_kid_as.map(str::to_owned).unwrap_or_else(|| key_id(b"not auth's key"));
    jsonwebtoken::encode(&header(&kid), claims, &jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).expect("pem"))
        .expect("sign")
}

#[tokio::test]
async fn expired_tampered_and_foreign_tokens_are_refused() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let session = cluster.sign_in("erin@example.com").await?;
    assert_eq!(me(&cluster, &session.access).await?, "erin@example.com");

    // Tampered: one character of the signature changed.
    let mut tampered = session.access.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    assert_refused(me(&cluster, std::str::from_utf8(&tampered)?).await, "tampered signature");
    // Tampered claims: the payload swapped for another email, signature kept.
    let parts: Vec<&str> = session.access.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1])?)?;
    payload["email"] = "mallory@example.com".into();
    let swapped = format!("{}.{}.{}", parts[0], b64.encode(serde_json::to_vec(&payload)?), parts[2]);
    assert_refused(me(&cluster, &swapped).await, "tampered claims");

    // Signed by another key: unknown key id, and auth's key id with the wrong key.
    let claims: Claims = serde_json::from_value(payload)?;
    let claims = Claims { email: "erin@example.com".into(), ..claims };
    let auth_kid = jsonwebtoken::decode_header(&session.access)?.kid.expect("kid");
    assert_refused(me(&cluster, &forged(&claims, None)).await, "unknown key");
    assert_refused(me(&cluster, &forged(&claims, Some(&auth_kid))).await, "wrong key under auth's key id");
    let wrong_audience = Claims { aud: "someone-else".into(), iss: ISSUER.into(), ..claims.clone() };
    assert_refused(me(&cluster, &forged(&wrong_audience, Some(&auth_kid))).await, "wrong audience");
    assert_eq!(claims.aud, AUDIENCE);

    // Expired: 15 minutes by default.
    cluster.clock.advance(Duration::from_secs(15 * 60));
    let err = me(&cluster, &session.access).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("expired"), "{}", err.message());
    assert!(!err.message().contains(&session.access[..20]));
    cluster.stop().await
}

#[tokio::test]
async fn sign_out_revokes_access_tokens_within_the_request() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let session = cluster.sign_in("frank@example.com").await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.sign_out(session.request(SignOutRequest {})).await?;
    assert_refused(me(&cluster, &session.access).await, "revoked session");
    let err = auth.refresh_session(RefreshSessionRequest { refresh_token: session.refresh.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    cluster.stop().await
}

#[tokio::test]
async fn refresh_rotates_and_reuse_kills_the_session() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let session = cluster.sign_in("grace@example.com").await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    let rotated = auth
        .refresh_session(RefreshSessionRequest { refresh_token: session.refresh.clone() })
        .await?
        .into_inner()
        .tokens
        .expect("tokens");
    assert_ne!(rotated.refresh_token, session.refresh);
    assert_eq!(me(&cluster, &rotated.access_token).await?, "grace@example.com");

    // The old refresh token again: reuse, so the whole session dies.
    let err = auth.refresh_session(RefreshSessionRequest { refresh_token: session.refresh.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("already used"), "{}", err.message());
    let err =
        auth.refresh_session(RefreshSessionRequest { refresh_token: rotated.refresh_token.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the newest refresh token died with the session");
    assert_refused(me(&cluster, &rotated.access_token).await, "access token of a killed session");
    assert_refused(me(&cluster, &session.access).await, "first access token of a killed session");

    let err = auth.refresh_session(RefreshSessionRequest { refresh_token: "garbage".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    cluster.stop().await
}

#[tokio::test]
async fn with_redis_down_revocation_falls_back_to_auth() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| {
        c.redis = Some(ts_common::config::RedisConfig { url: "redis://127.0.0.1:1".to_owned().into() });
    })
    .await?;
    let session = cluster.sign_in("heidi@example.com").await?;
    assert_eq!(me(&cluster, &session.access).await?, "heidi@example.com");
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.sign_out(session.request(SignOutRequest {})).await?;
    assert_refused(me(&cluster, &session.access).await, "revoked session with redis down");
    cluster.stop().await
}
