//! Failed sign-ins, refused refreshes, license-admin and operator actions land in the audit
//! trail, where the people they concern can read them (issue 9, item 8).

use std::time::{Duration, Instant};

use tonic::Code;
use ts_proto::public::audit_service_client::AuditServiceClient;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::license_admin_service_client::LicenseAdminServiceClient;
use ts_proto::public::*;
use ts_testkit::{Session, TestCluster};

/// The caller's errors, polled for up to 5 s until `pred` holds (audit writes are
/// asynchronous to the answer).
async fn my_errors_until(
    cluster: &TestCluster,
    s: &Session,
    pred: impl Fn(&[AuditEvent]) -> bool,
) -> anyhow::Result<Vec<AuditEvent>> {
    let mut audit = AuditServiceClient::new(cluster.gateway().await?);
    let start = Instant::now();
    loop {
        let events = audit.list_my_errors(s.request(ListMyErrorsRequest::default())).await?.into_inner().events;
        if pred(&events) || start.elapsed() > Duration::from_secs(5) {
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has(events: &[AuditEvent], action: &str, code: &str) -> bool {
    events.iter().any(|e| e.action == action && e.status_code == code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_and_refused_refreshes_reach_the_users_errors() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    // Someone guesses a code for an address that has no account yet.
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.start_email_verification(StartEmailVerificationRequest { email: "uma@example.com".into() }).await?;
    let code = cluster.latest_code("uma@example.com").expect("code");
    let wrong = if code == "987654" { "456789" } else { "987654" };
    let err = auth
        .complete_email_verification(CompleteEmailVerificationRequest {
            email: "Uma@Example.com".into(),
            code: wrong.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let uma = cluster.sign_in("uma@example.com").await?;
    let events =
        my_errors_until(&cluster, &uma, |e| has(e, "auth.complete_email_verification", "UNAUTHENTICATED")).await?;
    assert!(has(&events, "auth.complete_email_verification", "UNAUTHENTICATED"), "{events:?}");
    assert!(events.iter().all(|e| e.actor_email == "uma@example.com"), "{events:?}");
    let text = |e: &AuditEvent| {
        [&e.actor_email, &e.action, &e.folder_id, &e.license_id, &e.request_id].map(|s| s.as_str()).join(" ")
    };
    assert!(events.iter().all(|e| !text(e).contains(wrong) && !text(e).contains(&code)), "no code in the audit trail");

    // A reused refresh token: the session dies and the owner sees why.
    let rotated = auth
        .refresh_session(RefreshSessionRequest { refresh_token: uma.refresh.clone() })
        .await?
        .into_inner()
        .tokens
        .expect("tokens");
    // (Past the retry window, in which the same token would get the same answer again.)
    cluster.clock.advance(std::time::Duration::from_secs(11));
    let err = auth.refresh_session(RefreshSessionRequest { refresh_token: uma.refresh.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let uma = cluster.sign_in("uma@example.com").await?;
    let events = my_errors_until(&cluster, &uma, |e| has(e, "auth.refresh_session", "UNAUTHENTICATED")).await?;
    assert!(has(&events, "auth.refresh_session", "UNAUTHENTICATED"), "{events:?}");
    let dump = ts_testkit::dump_database(&cluster.database().await?).await?;
    assert!(!dump.contains(&rotated.refresh_token) && !dump.contains(&uma.refresh), "no tokens stored");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_license_action_reaches_the_actors_errors() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    cluster.upsert_license("acme", "admin@acme.test", "acme.test").await?;
    let mallory = cluster.sign_in("mallory@acme.test").await?;
    let mut api = LicenseAdminServiceClient::new(cluster.gateway().await?);
    let err = api
        .set_license_sharing_blocked(
            mallory.request(SetLicenseSharingBlockedRequest { license_id: "acme".into(), blocked: true }),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let events = my_errors_until(&cluster, &mallory, |e| has(e, "license.block", "PERMISSION_DENIED")).await?;
    assert!(has(&events, "license.block", "PERMISSION_DENIED"), "{events:?}");

    // The license admin sees the refused attempt, their own block, and the operator's upsert.
    let admin = cluster.sign_in("admin@acme.test").await?;
    api.set_license_sharing_blocked(
        admin.request(SetLicenseSharingBlockedRequest { license_id: "acme".into(), blocked: true }),
    )
    .await?;
    let start = Instant::now();
    let events = loop {
        let events = api
            .list_license_audit(admin.request(ListLicenseAuditRequest { license_id: "acme".into(), page: None }))
            .await?
            .into_inner()
            .events;
        let done = has(&events, "license.block", "OK") && has(&events, "operator.upsert_license", "OK");
        if done || start.elapsed() > Duration::from_secs(5) {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(events.iter().any(|e| e.actor_email == "mallory@acme.test" && e.status_code == "PERMISSION_DENIED"));
    assert!(events.iter().any(|e| e.actor_email == "admin@acme.test" && e.action == "license.block"));
    assert!(events.iter().any(|e| e.actor_email == "operator" && e.action == "operator.upsert_license"));
    assert!(events.iter().all(|e| e.license_id == "acme"), "{events:?}");
    // Someone who is not its admin cannot read it.
    let err = api
        .list_license_audit(mallory.request(ListLicenseAuditRequest { license_id: "acme".into(), page: None }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "mallory was signed out by the block");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declines_and_operator_rewraps_are_recorded() -> anyhow::Result<()> {
    use teamshare::Service;
    use ts_contract::identity::Peer;
    use ts_proto::internal::RewrapAllRequest;
    use ts_proto::internal::key_vault_operator_service_client::KeyVaultOperatorServiceClient;
    use ts_proto::public::folder_service_client::FolderServiceClient;
    use ts_proto::public::invitation_service_client::InvitationServiceClient;

    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let folder = FolderServiceClient::new(ch.clone())
        .create_folder(alice.request(CreateFolderRequest { name: "Declined".into(), ..Default::default() }))
        .await?
        .into_inner()
        .folder
        .expect("folder");
    let mut invitations = InvitationServiceClient::new(ch.clone());
    let invite = CreateInvitationRequest {
        folder_id: folder.id.clone(),
        invitee_email: "bob@example.com".into(),
        access: AccessLevel::View as i32,
        ..Default::default()
    };
    let invitation = invitations.create_invitation(alice.request(invite)).await?.into_inner().invitation.expect("inv");
    let decline = || bob.request(DeclineInvitationRequest { invitation_id: invitation.id.clone() });
    invitations.decline_invitation(decline()).await?;
    let err = invitations.decline_invitation(decline()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // Bob sees his refused second decline; Alice sees the decline in her folder's trail.
    let events = my_errors_until(&cluster, &bob, |e| has(e, "invitation.decline", "FAILED_PRECONDITION")).await?;
    assert!(has(&events, "invitation.decline", "FAILED_PRECONDITION"), "{events:?}");
    let mut audit = AuditServiceClient::new(ch.clone());
    let request = || alice.request(ListFolderAuditRequest { folder_id: folder.id.clone(), page: None });
    let start = Instant::now();
    loop {
        let events = audit.list_folder_audit(request()).await?.into_inner().events;
        if events.iter().any(|e| e.action == "invitation.decline" && e.actor_email == "bob@example.com") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "the decline is not in the folder's trail: {events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An operator's master-key rewrap, refused or not, is in the deployment's trail.
    let mut op = KeyVaultOperatorServiceClient::new(cluster.internal(Service::Keyvault, Peer::Operator).await?);
    let err = op.rewrap_all(RewrapAllRequest { new_kms_key_id: "  ".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let db = cluster.database().await?;
    let start = Instant::now();
    let filter =
        bson::doc! { "action": "operator.rewrap_all", "status_code": "INVALID_ARGUMENT", "actor_email": "operator" };
    while db.collection::<bson::Document>("audit_events").count_documents(filter.clone()).await? == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "the refused rewrap was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.stop().await
}
