//! Passwordless email verification through the gateway, with codes read from the
//! development mailer and expiry driven by the cluster's clock.

use std::time::Duration;

use bson::doc;
use tonic::Code;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::{CompleteEmailVerificationRequest, GetMeRequest, StartEmailVerificationRequest};
use ts_testkit::TestCluster;

fn complete(email: &str, code: &str) -> CompleteEmailVerificationRequest {
    CompleteEmailVerificationRequest { email: email.into(), code: code.into() }
}

fn wrong(code: &str) -> String {
    let d = (code.as_bytes()[0] - b'0' + 1) % 10;
    format!("{d}{}", &code[1..])
}

#[tokio::test]
async fn a_code_from_the_mailer_verifies_and_signs_in() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.start_email_verification(StartEmailVerificationRequest { email: "  Alice@Example.COM ".into() }).await?;
    let code = cluster.latest_code("alice@example.com").expect("mail sent to the normalised address");
    assert_eq!(code.len(), 6);
    let reply = auth.complete_email_verification(complete("alice@example.com", &code)).await?.into_inner();
    let user = reply.user.expect("user");
    assert_eq!((user.email.as_str(), user.email_verified, user.sharing_allowed), ("alice@example.com", true, true));
    let tokens = reply.tokens.expect("tokens");
    let me =
        auth.get_me(ts_testkit::bearer(&tokens.access_token, GetMeRequest {})).await?.into_inner().user.expect("me");
    assert_eq!(me.id, user.id);

    // The code is single use.
    let err = auth.complete_email_verification(complete("alice@example.com", &code)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    cluster.stop().await
}

#[tokio::test]
async fn wrong_codes_count_down_and_the_sixth_try_fails_even_when_right() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let db = cluster.database().await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.start_email_verification(StartEmailVerificationRequest { email: "bob@example.com".into() }).await?;
    let code = cluster.latest_code("bob@example.com").expect("code");
    for left in (0..5).rev() {
        let err = auth.complete_email_verification(complete("bob@example.com", &wrong(&code))).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains(&format!("{left} tries left")), "{}", err.message());
        let stored = db
            .collection::<bson::Document>("verification_codes")
            .find_one(doc! { "_id": "bob@example.com" })
            .await?
            .expect("code doc");
        assert_eq!(stored.get_i64("tries_left")?, left);
    }
    let err = auth.complete_email_verification(complete("bob@example.com", &code)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "the right code on the 6th try: {err:?}");
    assert!(
        db.collection::<bson::Document>("users").find_one(doc! { "email": "bob@example.com" }).await?.is_none(),
        "no user made"
    );

    // A new code replaces the spent one.
    auth.start_email_verification(StartEmailVerificationRequest { email: "bob@example.com".into() }).await?;
    let fresh = cluster.latest_code("bob@example.com").expect("code");
    auth.complete_email_verification(complete("bob@example.com", &fresh)).await?;
    cluster.stop().await
}

#[tokio::test]
async fn an_expired_code_is_refused() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.start_email_verification(StartEmailVerificationRequest { email: "carol@example.com".into() }).await?;
    let code = cluster.latest_code("carol@example.com").expect("code");
    cluster.clock.advance(Duration::from_secs(10 * 60 + 1));
    let err = auth.complete_email_verification(complete("carol@example.com", &code)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("expired"), "{}", err.message());
    cluster.stop().await
}

#[tokio::test]
async fn bad_input_names_the_field_and_sending_is_rate_limited() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    let err = auth
        .start_email_verification(StartEmailVerificationRequest { email: "not-an-email".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("email"), "{}", err.message());
    let err = auth.complete_email_verification(complete("dave@example.com", "12ab")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("code"));

    for _ in 0..5 {
        auth.start_email_verification(StartEmailVerificationRequest { email: "dave@example.com".into() }).await?;
    }
    let err = auth
        .start_email_verification(StartEmailVerificationRequest { email: "dave@example.com".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let retry = ts_contract::status::retry_delay(&err).expect("RetryInfo").as_secs();
    assert_eq!(ts_contract::status::reason_of(&err).as_deref(), Some("RATE_LIMITED"));
    assert!((1..=3600).contains(&retry), "{retry}");
    // The window passes on the cluster's clock.
    cluster.clock.advance(Duration::from_secs(retry));
    auth.start_email_verification(StartEmailVerificationRequest { email: "dave@example.com".into() }).await?;
    cluster.stop().await
}

#[tokio::test]
async fn sends_are_limited_per_client_address_too() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| c.accounts.sends_per_client_per_hour = 3).await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    for i in 0..3 {
        auth.start_email_verification(StartEmailVerificationRequest { email: format!("user{i}@example.com") }).await?;
    }
    let err = auth
        .start_email_verification(StartEmailVerificationRequest { email: "user9@example.com".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("per-client"), "{}", err.message());
    assert!(cluster.latest_code("user9@example.com").is_none(), "nothing sent");
    cluster.stop().await
}

#[tokio::test]
async fn codes_go_out_over_smtp_through_lettre() -> anyhow::Result<()> {
    use ts_config::{MailConfig, SmtpSecurity};
    let smtp = tokio::task::spawn_blocking(ts_testkit::ServerProcess::smtp).await??;
    let port = smtp.port;
    let cluster = TestCluster::start_with(move |c| {
        c.mail = Some(MailConfig::Smtp {
            host: "127.0.0.1".into(),
            port,
            // A relay on loopback; production configurations use starttls or tls.
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "teamshare <no-reply@teamshare.test>".into(),
        });
    })
    .await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.start_email_verification(StartEmailVerificationRequest { email: "smtp-user@example.com".into() }).await?;
    // The SMTP server has the message once the RPC returned (lettre waits for the 250).
    let log = smtp.log_text();
    assert!(log.contains("smtp-user@example.com"), "{log}");
    let start = log.find("code is ").expect("code in the message") + "code is ".len();
    let code: String = log[start..].chars().take_while(char::is_ascii_digit).collect();
    auth.complete_email_verification(complete("smtp-user@example.com", &code)).await?;
    cluster.stop().await
}

#[tokio::test]
async fn code_attempts_for_an_address_without_a_code_count_against_the_client_too() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| c.accounts.failed_sign_ins_per_client_per_hour = 2).await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    let attempt = || CompleteEmailVerificationRequest { email: "victim@example.com".into(), code: "123456".into() };
    // No code was ever sent: each try is refused (and would be audited against the victim).
    for _ in 0..2 {
        assert_eq!(auth.complete_email_verification(attempt()).await.unwrap_err().code(), Code::FailedPrecondition);
    }
    let err = auth.complete_email_verification(attempt()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    cluster.stop().await
}
