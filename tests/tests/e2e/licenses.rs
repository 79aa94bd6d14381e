//! Licenses: a license admin blocks and unblocks Team Sharing; removal from a license ends
//! privileges; the operator's switch turns sharing off and on without losing anything.
//!

use tonic::Code;
use ts_proto::internal::{SetSharingEnabledRequest, UpsertLicenseRequest};
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::license_admin_service_client::LicenseAdminServiceClient;
use ts_proto::public::*;
use ts_testkit::{Session, TestCluster};

/// The code a sharing call (listing one's folders) gets.
async fn sharing_call(cluster: &TestCluster, s: &Session) -> Code {
    let mut folders = FolderServiceClient::new(cluster.gateway().await.expect("gateway"));
    match folders.list_folders(s.request(ListFoldersRequest::default())).await {
        Ok(_) => Code::Ok,
        Err(e) => e.code(),
    }
}

fn acme() -> UpsertLicenseRequest {
    UpsertLicenseRequest {
        license_id: "acme".into(),
        admin_emails: vec!["admin@acme.test".into()],
        emails: vec!["contractor@gmail.test".into()],
        domains: vec!["acme.test".into()],
    }
}

#[tokio::test]
async fn a_license_admin_blocks_and_unblocks_sharing() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    cluster.license_operator().await?.upsert_license(acme()).await?;
    let admin = cluster.sign_in("admin@acme.test").await?;
    let alice = cluster.sign_in("alice@acme.test").await?;
    let contractor = cluster.sign_in("contractor@gmail.test").await?;
    let outsider = cluster.sign_in("olivia@other.test").await?;
    for s in [&alice, &contractor, &outsider] {
        assert_eq!(sharing_call(&cluster, s).await, Code::Ok, "{} may share", s.email);
    }

    let mut admin_api = LicenseAdminServiceClient::new(cluster.gateway().await?);
    let emails = admin_api
        .list_license_emails(admin.request(ListLicenseEmailsRequest { license_id: "acme".into(), page: None }))
        .await?
        .into_inner();
    assert_eq!(
        (emails.emails, emails.domains),
        (vec!["contractor@gmail.test".to_owned()], vec!["acme.test".to_owned()])
    );

    // A non-admin cannot block, and learns nothing about other licenses.
    let mut alice_api = LicenseAdminServiceClient::new(cluster.gateway().await?);
    for license_id in ["acme", "no-such-license"] {
        let err = alice_api
            .set_license_sharing_blocked(
                alice.request(SetLicenseSharingBlockedRequest { license_id: license_id.into(), blocked: true }),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{license_id}");
    }

    // A hand-made account whose id is not a server-made one cannot stop the block from
    // ending everyone else's session.
    let legacy = bson::doc! { "_id": "LEGACY-1", "email": "legacy@acme.test", "email_verified": true };
    cluster.database().await?.collection::<bson::Document>("users").insert_one(legacy).await?;
    admin_api
        .set_license_sharing_blocked(
            admin.request(SetLicenseSharingBlockedRequest { license_id: "acme".into(), blocked: true }),
        )
        .await?;
    // Every associated user's session ended; the outsider is untouched.
    for s in [&alice, &contractor] {
        assert_eq!(sharing_call(&cluster, s).await, Code::Unauthenticated, "{}", s.email);
    }
    assert_eq!(sharing_call(&cluster, &outsider).await, Code::Ok);
    // Signing in again works, but sharing stays blocked.
    let alice = cluster.sign_in("alice@acme.test").await?;
    assert_eq!(sharing_call(&cluster, &alice).await, Code::FailedPrecondition);

    let admin = cluster.sign_in("admin@acme.test").await?;
    let mut admin_api = LicenseAdminServiceClient::new(cluster.gateway().await?);
    let state = admin_api
        .get_license_sharing_state(admin.request(GetLicenseSharingStateRequest { license_id: "acme".into() }))
        .await?
        .into_inner();
    assert!(state.blocked && !state.disabled_by_operator);
    admin_api
        .set_license_sharing_blocked(
            admin.request(SetLicenseSharingBlockedRequest { license_id: "acme".into(), blocked: false }),
        )
        .await?;

    // Alice verified again during the block, so she shares again; the contractor has not.
    assert_eq!(sharing_call(&cluster, &alice).await, Code::Ok);
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    let err =
        auth.refresh_session(RefreshSessionRequest { refresh_token: contractor.refresh.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "the blocked session stays ended");
    let contractor = cluster.sign_in("contractor@gmail.test").await?;
    assert_eq!(sharing_call(&cluster, &contractor).await, Code::Ok);
    cluster.stop().await
}

#[tokio::test]
async fn removal_from_a_license_ends_the_session_and_requires_verification() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut operator = cluster.license_operator().await?;
    operator.upsert_license(acme()).await?;
    let contractor = cluster.sign_in("contractor@gmail.test").await?;
    let alice = cluster.sign_in("alice@acme.test").await?;
    operator.upsert_license(UpsertLicenseRequest { emails: vec![], ..acme() }).await?;
    assert_eq!(sharing_call(&cluster, &contractor).await, Code::Unauthenticated);
    assert_eq!(sharing_call(&cluster, &alice).await, Code::Ok, "still in the license by domain");
    let db = cluster.database().await?;
    let user = db
        .collection::<bson::Document>("users")
        .find_one(bson::doc! { "email": "contractor@gmail.test" })
        .await?
        .expect("user");
    assert!(!user.get_bool("email_verified")?, "must verify again");

    let err = operator
        .upsert_license(UpsertLicenseRequest { domains: vec!["not a domain".into()], ..acme() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("domains"), "{}", err.message());
    cluster.stop().await
}

#[tokio::test]
async fn the_operator_switch_disables_sharing_for_everyone_and_loses_nothing() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut operator = cluster.license_operator().await?;
    operator.upsert_license(acme()).await?;
    let alice = cluster.sign_in("alice@acme.test").await?;
    let olivia = cluster.sign_in("olivia@other.test").await?;

    operator.set_sharing_enabled(SetSharingEnabledRequest { license_id: "acme".into(), enabled: false }).await?;
    assert_eq!(sharing_call(&cluster, &alice).await, Code::FailedPrecondition);
    assert_eq!(sharing_call(&cluster, &olivia).await, Code::Ok, "other licenses unaffected");
    operator.set_sharing_enabled(SetSharingEnabledRequest { license_id: "acme".into(), enabled: true }).await?;

    operator.set_sharing_enabled(SetSharingEnabledRequest { license_id: String::new(), enabled: false }).await?;
    for s in [&alice, &olivia] {
        let mut folders = FolderServiceClient::new(cluster.gateway().await?);
        let err = folders.list_folders(s.request(ListFoldersRequest::default())).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(err.message(), "team sharing is disabled");
    }
    // Accounts still work while sharing is off; sessions survive.
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    let me = auth.get_me(alice.request(GetMeRequest {})).await?.into_inner().user.expect("me");
    assert!(!me.sharing_allowed);
    operator.set_sharing_enabled(SetSharingEnabledRequest { license_id: String::new(), enabled: true }).await?;
    for s in [&alice, &olivia] {
        assert_eq!(sharing_call(&cluster, s).await, Code::Ok, "same session works again");
    }
    cluster.stop().await
}

#[tokio::test]
async fn license_reads_and_writes_are_for_that_licenses_admins_only() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut operator = cluster.license_operator().await?;
    operator.upsert_license(acme()).await?;
    operator
        .upsert_license(UpsertLicenseRequest {
            license_id: "globex".into(),
            admin_emails: vec!["admin@globex.test".into()],
            emails: vec![],
            domains: vec!["globex.test".into()],
        })
        .await?;
    let acme_admin = cluster.sign_in("admin@acme.test").await?;
    let member = cluster.sign_in("alice@acme.test").await?; // in acme, not its admin
    let other_admin = cluster.sign_in("admin@globex.test").await?;
    let outsider = cluster.sign_in("olivia@other.test").await?;
    let mut api = LicenseAdminServiceClient::new(cluster.gateway().await?);

    let list = |s: &Session, id: &str| s.request(ListLicenseEmailsRequest { license_id: id.into(), page: None });
    let state = |s: &Session, id: &str| s.request(GetLicenseSharingStateRequest { license_id: id.into() });
    let block =
        |s: &Session, id: &str| s.request(SetLicenseSharingBlockedRequest { license_id: id.into(), blocked: true });
    // The control: acme's own admin reads and (below) writes acme.
    api.list_license_emails(list(&acme_admin, "acme")).await?;
    api.get_license_sharing_state(state(&acme_admin, "acme")).await?;

    for (who, license) in [
        (&member, "acme"),
        (&outsider, "acme"),
        (&other_admin, "acme"),
        (&acme_admin, "globex"),
        (&acme_admin, "no-such-license"),
    ] {
        let what = format!("{} on {license}", who.email);
        let err = api.list_license_emails(list(who, license)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "list emails, {what}: {err:?}");
        assert!(!err.message().contains("contractor@gmail.test"), "{what}: {}", err.message());
        let err = api.get_license_sharing_state(state(who, license)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "sharing state, {what}: {err:?}");
        let err = api.set_license_sharing_blocked(block(who, license)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "block, {what}: {err:?}");
    }
    // None of those blocks took effect: both licenses still share.
    assert_eq!(sharing_call(&cluster, &member).await, Code::Ok);
    assert_eq!(sharing_call(&cluster, &other_admin).await, Code::Ok);
    let acme_state = api.get_license_sharing_state(state(&acme_admin, "acme")).await?.into_inner();
    assert!(!acme_state.blocked);
    let globex_state = api.get_license_sharing_state(state(&other_admin, "globex")).await?.into_inner();
    assert!(!globex_state.blocked);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_keeps_admin_rights_through_their_own_block() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    cluster.license_operator().await?.upsert_license(acme()).await?;
    // The admin's own address is in the license (by domain), like every colleague's.
    let admin = cluster.sign_in("admin@acme.test").await?;
    let alice = cluster.sign_in("alice@acme.test").await?;
    assert_eq!(sharing_call(&cluster, &admin).await, Code::Ok);

    let mut admin_api = LicenseAdminServiceClient::new(cluster.gateway().await?);
    let block = |blocked| admin.request(SetLicenseSharingBlockedRequest { license_id: "acme".into(), blocked });
    admin_api.set_license_sharing_blocked(block(true)).await?;
    // Members are signed out; the admin is not, but their sharing is blocked like everyone's.
    assert_eq!(sharing_call(&cluster, &alice).await, Code::Unauthenticated);
    assert_eq!(sharing_call(&cluster, &admin).await, Code::FailedPrecondition, "the admin's sharing is blocked");
    let state = admin_api
        .get_license_sharing_state(admin.request(GetLicenseSharingStateRequest { license_id: "acme".into() }))
        .await?
        .into_inner();
    assert!(state.blocked);
    // The same session unblocks, with no new sign-in.
    admin_api.set_license_sharing_blocked(block(false)).await?;
    assert_eq!(sharing_call(&cluster, &admin).await, Code::Ok, "the admin shares again after unblocking");
    // A member signed out by the block verifies again, as before.
    let alice = cluster.sign_in("alice@acme.test").await?;
    assert_eq!(sharing_call(&cluster, &alice).await, Code::Ok);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn license_emails_list_domain_accounts_paged() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    cluster.license_operator().await?.upsert_license(acme()).await?;
    let admin = cluster.sign_in("admin@acme.test").await?;
    for email in ["bob@acme.test", "carol@acme.test", "contractor@gmail.test", "olivia@other.test"] {
        cluster.sign_in(email).await?;
    }
    let mut api = LicenseAdminServiceClient::new(cluster.gateway().await?);
    let mut accounts = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let reply = api
            .list_license_emails(admin.request(ListLicenseEmailsRequest {
                license_id: "acme".into(),
                page: Some(PageRequest { page_size: 2, page_token: token.clone() }),
            }))
            .await?
            .into_inner();
        assert!(reply.accounts.len() <= 2);
        accounts.extend(reply.accounts);
        token = reply.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(accounts, ["admin@acme.test", "bob@acme.test", "carol@acme.test", "contractor@gmail.test"]);
    let err = api
        .list_license_emails(admin.request(ListLicenseEmailsRequest {
            license_id: "acme".into(),
            page: Some(PageRequest { page_size: 2, page_token: "forged".into() }),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{}", err.message());
    cluster.stop().await
}
