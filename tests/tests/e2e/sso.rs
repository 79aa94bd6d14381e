//! Single sign-on with OIDC ID tokens from a test issuer whose keys the cluster is configured
//! with (a JWKS file).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use tonic::Code;
use ts_config::SsoIssuerConfig;
use ts_proto::public::SignInWithSsoRequest;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_testkit::TestCluster;

const ISSUER: &str = "https://login.example.test";
const AUDIENCE: &str = "teamshare-desktop";

struct TestIssuer {
    key: rcgen::KeyPair,
    /// Holds `jwks.json`.
    _dir: tempfile::TempDir,
    config: SsoIssuerConfig,
}

impl TestIssuer {
    fn new() -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?; // ECDSA P-256
        let raw = key.public_key_raw();
        let (x, y) = raw[1..].split_at(32);
        let jwks = json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "kid": "test-1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, serde_json::to_vec(&jwks)?)?;
        let config =
            SsoIssuerConfig { issuer: ISSUER.into(), audience: AUDIENCE.into(), jwks_file: Some(path), jwks_url: None };
        Ok(TestIssuer { key, _dir: dir, config })
    }

    fn token(&self, claims: serde_json::Value) -> String {
        self.token_with(&self.key, claims)
    }

    fn token_with(&self, key: &rcgen::KeyPair, claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("test-1".into());
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("ec key");
        jsonwebtoken::encode(&header, &claims, &encoding).expect("sign")
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn claims() -> serde_json::Value {
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "idp-user-1", "email": "Ivan@Example.com", "email_verified": true, "iat": now(), "exp": now() + 300 })
}

#[tokio::test]
async fn sso_tokens_are_verified_against_the_issuer() -> anyhow::Result<()> {
    let issuer = TestIssuer::new()?;
    let sso = issuer.config.clone();
    let cluster = TestCluster::start_with(move |c| c.accounts.sso = vec![sso]).await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    let sign_in = |token: String| SignInWithSsoRequest { id_token: token };

    let ok = auth.sign_in_with_sso(sign_in(issuer.token(claims()))).await?.into_inner();
    let user = ok.user.expect("user");
    assert_eq!(
        (user.email.as_str(), user.email_verified),
        ("ivan@example.com", true),
        "an SSO user counts as verified"
    );
    assert!(!ok.tokens.expect("tokens").access_token.is_empty());

    let mut cases: Vec<(&str, String)> = Vec::new();
    let good = issuer.token(claims());
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() - 3;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    cases.push(("tampered signature", String::from_utf8(tampered)?));
    let mut c = claims();
    c["aud"] = "another-app".into();
    cases.push(("wrong audience", issuer.token(c)));
    let mut c = claims();
    c["iss"] = "https://evil.example.test".into();
    cases.push(("wrong issuer", issuer.token(c)));
    let mut c = claims();
    c["exp"] = (now() - 3600).into();
    cases.push(("expired", issuer.token(c)));
    let mut c = claims();
    c["email_verified"] = false.into();
    cases.push(("email_verified=false", issuer.token(c)));
    let mut c = claims();
    c.as_object_mut().expect("object").remove("email_verified");
    cases.push(("no email_verified", issuer.token(c)));
    cases.push(("signed by another key", issuer.token_with(&rcgen::KeyPair::generate()?, claims())));
    cases.push(("garbage", "not.a.token".into()));

    for (what, token) in cases {
        let err = auth.sign_in_with_sso(sign_in(token)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{what}: {err:?}");
    }

    // Expiry follows the service clock too.
    cluster.clock.advance(Duration::from_secs(600));
    let err = auth.sign_in_with_sso(sign_in(issuer.token(claims()))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    cluster.stop().await
}

#[tokio::test]
async fn issuer_keys_can_come_from_a_url_fetched_on_first_use() -> anyhow::Result<()> {
    let issuer = TestIssuer::new()?;
    // Serve an empty folder first: the issuer is unreachable (404) when auth starts.
    let served = tempfile::tempdir()?;
    let http = tokio::task::spawn_blocking({
        let dir = served.path().to_owned();
        move || ts_testkit::ServerProcess::http(&dir)
    })
    .await??;
    let url = format!("http://127.0.0.1:{}/jwks.json", http.port);
    let sso = SsoIssuerConfig { jwks_file: None, jwks_url: Some(url), ..issuer.config.clone() };
    let cluster = TestCluster::start_with(move |c| c.accounts.sso = vec![sso]).await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);

    // The issuer publishes its keys; the first sign-in fetches them.
    std::fs::copy(issuer.config.jwks_file.as_ref().expect("file"), served.path().join("jwks.json"))?;
    let ok = auth.sign_in_with_sso(SignInWithSsoRequest { id_token: issuer.token(claims()) }).await?.into_inner();
    assert_eq!(ok.user.expect("user").email, "ivan@example.com");
    let other = rcgen::KeyPair::generate()?;
    let err = auth
        .sign_in_with_sso(SignInWithSsoRequest { id_token: issuer.token_with(&other, claims()) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    cluster.stop().await
}

#[tokio::test]
async fn a_plain_http_jwks_url_off_loopback_is_refused_at_start() -> anyhow::Result<()> {
    let config = SsoIssuerConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_file: None,
        jwks_url: Some("http://idp.example.com/jwks".into()),
    };
    let err = ts_auth::sso::SsoIssuer::load(&[config]).await.unwrap_err().to_string();
    assert!(err.contains("accounts.sso[0].jwks_url") && err.contains("https"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_name_nobody_and_failed_attempts_are_bounded_per_address() -> anyhow::Result<()> {
    use ts_proto::public::audit_service_client::AuditServiceClient;
    use ts_proto::public::{AuditEvent, ListMyErrorsRequest};

    let issuer = TestIssuer::new()?;
    let sso = issuer.config.clone();
    let cluster = TestCluster::start_with(move |c| {
        c.accounts.sso = vec![sso];
        c.accounts.failed_sign_ins_per_client_per_hour = 4;
    })
    .await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    let sign_in = |token: String| SignInWithSsoRequest { id_token: token };
    let ivan = auth.sign_in_with_sso(sign_in(issuer.token(claims()))).await?.into_inner();
    let access = ivan.tokens.expect("tokens").access_token;

    // Two forged tokens in Ivan's name (another key; a tampered signature), then a real
    // token of his that has expired: only the last is his to see.
    let forged = issuer.token_with(&rcgen::KeyPair::generate()?, claims());
    let mut tampered = issuer.token(claims()).into_bytes();
    let i = tampered.len() - 3;
    tampered[i] = if tampered[i] == b'x' { b'y' } else { b'x' };
    let mut expired = claims();
    expired["exp"] = (now() - 3600).into();
    for token in [forged.clone(), String::from_utf8(tampered)?, issuer.token(expired)] {
        assert_eq!(auth.sign_in_with_sso(sign_in(token)).await.unwrap_err().code(), Code::Unauthenticated);
    }
    let mut audit = AuditServiceClient::new(cluster.gateway().await?);
    let sso_errors =
        |events: Vec<AuditEvent>| events.into_iter().filter(|e| e.action == "auth.sign_in_with_sso").count();
    let seen = ts_testkit::eventually("the expired sign-in in Ivan's errors", || {
        let mut audit = audit.clone();
        let request = ts_testkit::bearer(&access, ListMyErrorsRequest::default());
        async move {
            let n = sso_errors(audit.list_my_errors(request).await?.into_inner().events);
            Ok((n > 0).then_some(n))
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = audit.list_my_errors(ts_testkit::bearer(&access, ListMyErrorsRequest::default())).await?;
    assert_eq!((seen, sso_errors(events.into_inner().events)), (1, 1), "forged tokens were attributed to Ivan");

    // A fourth failure from this address, then every attempt from it is refused, even a
    // good token, until the hour is over; nothing more reaches Ivan's trail.
    assert_eq!(auth.sign_in_with_sso(sign_in(forged.clone())).await.unwrap_err().code(), Code::Unauthenticated);
    let err = auth.sign_in_with_sso(sign_in(issuer.token(claims()))).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(ts_contract::status::retry_delay(&err).is_some(), "{err:?}");
    let refresh = ts_proto::public::RefreshSessionRequest { refresh_token: "not-a-refresh-token".into() };
    assert_eq!(auth.refresh_session(refresh).await.unwrap_err().code(), Code::ResourceExhausted);
    cluster.clock.advance(Duration::from_secs(3600));
    // Another hour: the good token (re-issued against the moved clock) works again.
    let mut fresh = claims();
    fresh["exp"] = (now() + 7200).into();
    auth.sign_in_with_sso(sign_in(issuer.token(fresh))).await?;
    cluster.stop().await
}
