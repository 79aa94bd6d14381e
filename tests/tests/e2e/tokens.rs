//! Access and refresh tokens at the gateway: expiry, tampering, unknown keys, revocation,
//! and refresh-token reuse.

use std::time::Duration;

use tonic::Code;
use ts_contract::tokens::{AUDIENCE, Claims, ISSUER, header, key_id};
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

/// A token for `claims` signed with auth's own signing key (the file the cluster configured),
/// so that a refusal can only come from the claims.
fn signed_by_auth(cluster: &TestCluster, claims: &Claims) -> String {
    signed_with(&cluster.certs.token_signing_key(), claims)
}

/// A token for `claims` signed with the key in `key_file`, under that key's own key id.
fn signed_with(key_file: &std::path::Path, claims: &Claims) -> String {
    let signer = ts_auth::signing::Signer::load(&[key_file.to_owned()]).expect("signing key");
    signer.sign(claims).expect("sign")
}

/// The claims of a real token (unverified decoding; the test minted nothing yet).
fn claims_of(token: &str) -> Claims {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64");
    serde_json::from_slice(&json).expect("claims")
}

/// A token with the right shape and claims, signed by a key auth does not have.
fn forged(claims: &Claims, same_kid_as: Option<&str>) -> String {
    let pem = ts_devca::generate_signing_key().expect("key");
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
async fn tokens_signed_by_auths_real_key_are_refused_for_wrong_audience_issuer_or_expiry() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let session = cluster.sign_in("ivan@example.com").await?;
    let real = claims_of(&session.access);
    assert_eq!((real.iss.as_str(), real.aud.as_str()), (ISSUER, AUDIENCE));

    // The control: the test's own minting with auth's key and the real claims is accepted, so
    // each refusal below is caused by the one claim that changed and nothing else.
    let control = signed_by_auth(&cluster, &real);
    assert_eq!(
        jsonwebtoken::decode_header(&control)?.kid,
        jsonwebtoken::decode_header(&session.access)?.kid,
        "minted under auth's key id"
    );
    assert_eq!(me(&cluster, &control).await?, "ivan@example.com");

    let wrong_audience = Claims { aud: "another-service".into(), ..real.clone() };
    assert_refused(me(&cluster, &signed_by_auth(&cluster, &wrong_audience)).await, "wrong audience");
    let wrong_issuer = Claims { iss: "someone-else-auth".into(), ..real.clone() };
    assert_refused(me(&cluster, &signed_by_auth(&cluster, &wrong_issuer)).await, "wrong issuer");

    // Expired against the injected clock: exp one second in the past of the cluster's clock.
    let now = ts_contract::clock::unix_secs(ts_contract::clock::Clock::now(&cluster.clock));
    let expired = Claims { iat: now - 120, exp: now - 1, ..real.clone() };
    let err = me(&cluster, &signed_by_auth(&cluster, &expired)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("expired"), "{}", err.message());
    // A token that expires in a minute works now and is refused once the clock passes it.
    let short = signed_by_auth(&cluster, &Claims { exp: now + 60, ..real.clone() });
    assert_eq!(me(&cluster, &short).await?, "ivan@example.com");
    cluster.clock.advance(Duration::from_secs(61));
    assert_refused(me(&cluster, &short).await, "expired after the clock moved");
    cluster.stop().await
}

#[tokio::test]
async fn every_configured_signing_key_verifies_and_only_the_first_signs() -> anyhow::Result<()> {
    // A rotation: a new key signs, the previous key is still published for tokens it signed.
    let keys = tempfile::tempdir()?;
    let write_key = |name: &str| -> anyhow::Result<std::path::PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = keys.path().join(name);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        std::io::Write::write_all(&mut f, ts_devca::generate_signing_key()?.as_bytes())?;
        Ok(path)
    };
    let (new_key, old_key, retired_key) = (write_key("new.pem")?, write_key("old.pem")?, write_key("retired.pem")?);
    let configured = vec![new_key.clone(), old_key.clone()];
    let cluster = TestCluster::start_with(move |c| c.accounts.token_signing_keys = configured).await?;
    let session = cluster.sign_in("judy@example.com").await?;
    let claims = claims_of(&session.access);
    let kid = |t: &str| jsonwebtoken::decode_header(t).map(|h| h.kid).ok().flatten();

    // Auth signs with the first key only.
    let by_new = signed_with(&new_key, &claims);
    assert_eq!(kid(&session.access), kid(&by_new), "the first configured key signs");
    assert_eq!(me(&cluster, &session.access).await?, "judy@example.com");
    // A token signed before the rotation, by the previous key, still verifies.
    let by_old = signed_with(&old_key, &claims);
    assert_ne!(kid(&by_old), kid(&by_new));
    assert_eq!(me(&cluster, &by_old).await?, "judy@example.com", "the previous key still verifies");
    // A key that is no longer configured verifies nothing, though it once was auth's.
    assert_refused(me(&cluster, &signed_with(&retired_key, &claims)).await, "retired key");
    // The old key's id with the new key's signature is refused too: keys are not interchangeable.
    let old_kid = kid(&by_old).expect("kid");
    let parts_old: Vec<&str> = by_old.split('.').collect();
    let parts_new: Vec<&str> = by_new.split('.').collect();
    let spliced = format!("{}.{}.{}", parts_old[0], parts_old[1], parts_new[2]);
    assert_eq!(kid(&spliced).as_deref(), Some(old_kid.as_str()));
    assert_refused(me(&cluster, &spliced).await, "new key's signature under the old key id");
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

    // The old refresh token again within seconds (a client whose answer was lost): the same
    // new refresh token, and the session lives.
    let again = auth
        .refresh_session(RefreshSessionRequest { refresh_token: session.refresh.clone() })
        .await?
        .into_inner()
        .tokens
        .expect("tokens");
    assert_eq!(again.refresh_token, rotated.refresh_token);
    assert_eq!(me(&cluster, &again.access_token).await?, "grace@example.com");

    // After the retry window: reuse, so the whole session dies.
    cluster.clock.advance(std::time::Duration::from_secs(11));
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
        c.redis = Some(ts_config::RedisConfig { url: "redis://127.0.0.1:1".to_owned().into() });
    })
    .await?;
    let session = cluster.sign_in("heidi@example.com").await?;
    assert_eq!(me(&cluster, &session.access).await?, "heidi@example.com");
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.sign_out(session.request(SignOutRequest {})).await?;
    assert_refused(me(&cluster, &session.access).await, "revoked session with redis down");
    cluster.stop().await
}

/// A client that gives up at once (a 1 ms deadline) while a fresh gateway fetches auth's
/// token keys must not leave that gateway without keys (and without a retry for a while): the
/// same valid token works on the next call. Four fresh gateways, four chances to cut a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_cut_off_while_keys_are_fetched_leaves_the_gateway_able_to_verify() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let session = cluster.sign_in("ivan@example.com").await?;
    for _ in 0..4 {
        let (addr, _stop) = cluster.extra_gateway().await?;
        let channel = cluster.gateway_at(addr).await?;
        let mut first = bearer(&session.access, GetMeRequest {});
        first.set_timeout(std::time::Duration::from_millis(1));
        let _ = AuthServiceClient::new(channel.clone()).get_me(first).await;
        let me = AuthServiceClient::new(channel).get_me(bearer(&session.access, GetMeRequest {})).await?;
        assert_eq!(me.into_inner().user.map(|u| u.email).as_deref(), Some("ivan@example.com"));
    }
    cluster.stop().await
}
