//! No code, token or refresh secret appears in MongoDB, in Redis, or in the logs. Its own
//! test binary, because it captures every log line through the global subscriber.

use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::{
    CompleteEmailVerificationRequest, RefreshSessionRequest, SignOutRequest, StartEmailVerificationRequest,
};
use ts_testkit::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_tokens_and_refresh_secrets_are_never_stored_or_logged() -> anyhow::Result<()> {
    let logs = ts_testkit::capture_logs();

    let cluster = TestCluster::start().await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    let email = "judy@example.com";
    auth.start_email_verification(StartEmailVerificationRequest { email: email.into() }).await?;
    let code = cluster.latest_code(email).expect("code");
    // A wrong try first, so that failure paths are logged too.
    let wrong = format!("{}{}", (code.as_bytes()[0] - b'0' + 1) % 10, &code[1..]);
    let err = auth
        .complete_email_verification(CompleteEmailVerificationRequest { email: email.into(), code: wrong.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "the wrong code was refused: {err:?}");
    let first = auth
        .complete_email_verification(CompleteEmailVerificationRequest { email: email.into(), code: code.clone() })
        .await?
        .into_inner();
    let first = first.tokens.expect("tokens");
    let second = auth
        .refresh_session(RefreshSessionRequest { refresh_token: first.refresh_token.clone() })
        .await?
        .into_inner()
        .tokens
        .expect("tokens");
    // Reuse of a spent refresh token (past the retry window): refused, and logged as a reuse.
    cluster.clock.advance(std::time::Duration::from_secs(11));
    let err =
        auth.refresh_session(RefreshSessionRequest { refresh_token: first.refresh_token.clone() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let third = cluster.sign_in(email).await?;
    auth.sign_out(third.request(SignOutRequest {})).await?;

    let mut secrets = vec![code.clone(), wrong];
    for t in [&first.access_token, &second.access_token, &third.access] {
        secrets.push(t.clone());
        secrets.push(t.rsplit('.').next().unwrap_or_default().to_owned()); // the signature alone
    }
    for r in [&first.refresh_token, &second.refresh_token, &third.refresh] {
        secrets.push(r.clone());
        secrets.push(r.split_once('.').map(|(_, s)| s.to_owned()).unwrap_or_default()); // the secret part
    }

    // Every document in every collection of the cluster's database, as raw BSON bytes.
    let db = cluster.database().await?;
    let stored = ts_testkit::raw_documents(&db).await?;
    assert!(!ts_testkit::collections_containing(&stored, email.as_bytes()).is_empty(), "the scan sees the documents");
    let stored: Vec<u8> = stored.into_iter().flat_map(|d| d.bytes).collect();

    // Every key and value in Redis, of every type, as raw bytes.
    let servers = ts_testkit::shared()?;
    let redis = ts_testkit::redis_bytes(servers.redis.port)?;
    assert!(
        ts_testkit::contains_bytes(&redis, b"ts:{revocations}:session:"),
        "the scan sees Redis (the sign-out revocation)"
    );

    cluster.stop().await?;
    let logged = logs.bytes();
    assert!(ts_testkit::contains_bytes(&logged, b"verification code sent"), "the scan sees the logs");
    for secret in secrets.iter().filter(|s| s.len() >= 6) {
        for (place, bytes) in [("MongoDB", &stored), ("the logs", &logged), ("Redis", &redis)] {
            assert!(!ts_testkit::fixtures::contains_token(bytes, secret.as_bytes()), "a secret is in {place}");
        }
    }
    Ok(())
}
