//! Invitations through the gateway: the whole sharing story, the anti-spam limits at their
//! bounds (also across two gateways, and with Redis down), concurrency, expiry, and who may
//! do what.

use std::time::Duration;

use tonic::Code;
use tonic::transport::Channel;
use ts_common::config::{Config, InvitationLimits};
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::item_content::Content;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{Session, TestCluster, query_content};

fn limits(c: &mut Config, f: impl FnOnce(&mut InvitationLimits)) {
    // Generous send rates unless a test is about them.
    c.invitation_limits.inviter_burst = 1000;
    c.invitation_limits.per_inviter_per_minute = 60_000;
    c.invitation_limits.license_burst = 1000;
    c.invitation_limits.per_license_per_minute = 60_000;
    f(&mut c.invitation_limits);
}

async fn new_folder(ch: &Channel, s: &Session, name: &str) -> anyhow::Result<String> {
    Ok(FolderServiceClient::new(ch.clone())
        .create_folder(s.request(CreateFolderRequest { name: name.into() }))
        .await?
        .into_inner()
        .folder
        .expect("f")
        .id)
}

async fn invite(
    ch: &Channel,
    s: &Session,
    folder_id: &str,
    email: &str,
    access: AccessLevel,
) -> Result<Invitation, tonic::Status> {
    let req =
        CreateInvitationRequest { folder_id: folder_id.into(), invitee_email: email.into(), access: access as i32 };
    InvitationServiceClient::new(ch.clone())
        .create_invitation(s.request(req))
        .await
        .map(|r| r.into_inner().invitation.expect("invitation"))
}

fn retry_hint(s: &tonic::Status) -> u64 {
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    s.metadata().get("retry-after-seconds").expect("retry hint").to_str().expect("ascii").parse().expect("seconds")
}

#[tokio::test]
async fn the_whole_sharing_story() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let folder_id = new_folder(&ch, &a, "Team queries").await?;
    let mut items = ItemServiceClient::new(ch.clone());
    let connection = ItemContent {
        content: Some(Content::Connection(Connection {
            connection_string: "mongodb://app:pw-123@db.internal:27017/".into(),
            hosts: vec!["db.internal:27017".into()],
            ..Default::default()
        })),
    };
    for (name, content) in [("Production", connection), ("Open orders", query_content(r#"{"status": "open"}"#))] {
        items
            .create_item(a.request(CreateItemRequest {
                folder_id: folder_id.clone(),
                name: name.into(),
                description: String::new(),
                content: Some(content),
            }))
            .await?;
    }
    invite(&ch, &a, &folder_id, "Bob@Example.com", AccessLevel::Edit).await?;
    assert!(
        ts_common::mail::FileMailer::read(&cluster.mail_dir, "bob@example.com")
            .iter()
            .any(|m| m.body.contains("Team queries"))
    );

    let b = cluster.sign_in("bob@example.com").await?;
    let mut inv = InvitationServiceClient::new(ch.clone());
    let mine = inv.list_my_invitations(b.request(ListMyInvitationsRequest::default())).await?.into_inner().invitations;
    assert_eq!(mine.len(), 1);
    assert_eq!((mine[0].folder_name.as_str(), mine[0].inviter_email.as_str()), ("Team queries", "alice@example.com"));
    inv.accept_invitation(b.request(AcceptInvitationRequest { invitation_id: mine[0].id.clone() })).await?;

    let listed = items
        .list_items(b.request(ListItemsRequest { folder_id: folder_id.clone(), page: None }))
        .await?
        .into_inner()
        .items;
    assert_eq!(listed.len(), 2);
    for i in &listed {
        items.get_item(b.request(GetItemRequest { folder_id: folder_id.clone(), item_id: i.id.clone() })).await?;
    }
    let mut members = MemberServiceClient::new(ch.clone());
    members
        .update_member_access(a.request(UpdateMemberAccessRequest {
            folder_id: folder_id.clone(),
            user_id: b.user_id.clone(),
            access: AccessLevel::View as i32,
        }))
        .await?;
    let edit = b.request(UpdateItemRequest {
        folder_id: folder_id.clone(),
        item_id: listed[1].id.clone(),
        expected_version: 1,
        name: "Mine now".into(),
        description: String::new(),
        content: Some(query_content("{}")),
    });
    assert_eq!(items.update_item(edit).await.unwrap_err().code(), Code::PermissionDenied);
    members
        .remove_member(a.request(RemoveMemberRequest { folder_id: folder_id.clone(), user_id: b.user_id.clone() }))
        .await?;
    let folders = FolderServiceClient::new(ch.clone())
        .list_folders(b.request(ListFoldersRequest::default()))
        .await?
        .into_inner()
        .folders;
    assert!(folders.is_empty());
    assert_eq!(
        items.list_items(b.request(ListItemsRequest { folder_id, page: None })).await.unwrap_err().code(),
        Code::NotFound
    );
    cluster.stop().await
}

#[tokio::test]
async fn pending_caps_and_the_fetch_maximum_hold_at_their_bounds() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| {
        limits(c, |l| {
            l.max_pending_per_folder = 3;
            l.max_pending_per_invitee = 2;
            l.max_per_fetch = 2;
        })
    })
    .await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let f1 = new_folder(&ch, &a, "One").await?;
    for i in 0..3 {
        invite(&ch, &a, &f1, &format!("p{i}@example.com"), AccessLevel::View).await?;
    }
    let err = invite(&ch, &a, &f1, "p3@example.com", AccessLevel::View).await.unwrap_err();
    let hint = retry_hint(&err);
    assert!(hint > 6 * 86_400 && hint <= 7 * 86_400, "capacity frees when the oldest expires: {hint}");

    let f2 = new_folder(&ch, &a, "Two").await?;
    let f3 = new_folder(&ch, &a, "Three").await?;
    invite(&ch, &a, &f2, "p0@example.com", AccessLevel::View).await?;
    retry_hint(&invite(&ch, &a, &f3, "p0@example.com", AccessLevel::View).await.unwrap_err());

    // Re-inviting a pending invitee refreshes that invitation instead of adding one.
    let again = invite(&ch, &a, &f1, "p1@example.com", AccessLevel::Edit).await?;
    assert_eq!(again.access, AccessLevel::Edit as i32);

    let p0 = cluster.sign_in("p0@example.com").await?;
    let mut inv = InvitationServiceClient::new(ch.clone());
    let asked = ListMyInvitationsRequest { page: Some(PageRequest { page_size: 500, page_token: String::new() }) };
    let page = inv.list_my_invitations(p0.request(asked)).await?.into_inner();
    assert_eq!(page.invitations.len(), 2, "at most 2 per fetch");
    cluster.stop().await
}

#[tokio::test]
async fn the_send_rate_limit_holds_across_two_gateways_and_without_redis() -> anyhow::Result<()> {
    let per_inviter = |c: &mut Config| {
        limits(c, |l| {
            l.inviter_burst = 5;
            l.per_inviter_per_minute = 20;
        })
    };
    let cluster = TestCluster::start_with(per_inviter).await?;
    let (addr, _stop) = cluster.extra_gateway().await?;
    let gateways = [cluster.gateway().await?, cluster.gateway_at(addr).await?];
    let a = cluster.sign_in("alice@example.com").await?;
    let folder_id = new_folder(&gateways[0], &a, "Spammy").await?;
    for i in 0..5 {
        invite(&gateways[i % 2], &a, &folder_id, &format!("r{i}@example.com"), AccessLevel::View).await?;
    }
    let err = invite(&gateways[1], &a, &folder_id, "r5@example.com", AccessLevel::View).await.unwrap_err();
    assert_eq!(retry_hint(&err), 3, "20 per minute: one every 3 s");
    retry_hint(&invite(&gateways[0], &a, &folder_id, "r6@example.com", AccessLevel::View).await.unwrap_err());
    cluster.clock.advance(Duration::from_secs(3));
    invite(&gateways[0], &a, &folder_id, "r7@example.com", AccessLevel::View).await?;
    retry_hint(&invite(&gateways[1], &a, &folder_id, "r8@example.com", AccessLevel::View).await.unwrap_err());
    // The refusals are in the inviter's own error trail.
    let db = cluster.database().await?;
    let filter = bson::doc! { "actor_email": "alice@example.com", "status_code": "RESOURCE_EXHAUSTED" };
    let mut audited = 0;
    for _ in 0..100 {
        audited = db.collection::<bson::Document>("audit_events").count_documents(filter.clone()).await?;
        if audited >= 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(audited >= 3, "{audited}");
    cluster.stop().await?;

    // Redis unreachable: each gateway still limits on its own.
    let cluster = TestCluster::start_with(|c| {
        per_inviter(c);
        c.redis = Some(ts_common::config::RedisConfig { url: "redis://127.0.0.1:1".to_owned().into() });
    })
    .await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let folder_id = new_folder(&ch, &a, "Spammy").await?;
    for i in 0..5 {
        invite(&ch, &a, &folder_id, &format!("r{i}@example.com"), AccessLevel::View).await?;
    }
    retry_hint(&invite(&ch, &a, &folder_id, "r5@example.com", AccessLevel::View).await.unwrap_err());
    cluster.stop().await
}

#[tokio::test]
async fn concurrent_accepts_make_one_membership_and_concurrent_invites_stop_at_the_cap() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |l| l.max_pending_per_folder = 5)).await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let folder_id = new_folder(&ch, &a, "Busy").await?;
    let invitation = invite(&ch, &a, &folder_id, "bob@example.com", AccessLevel::Edit).await?;
    let accepts = (0..20).map(|_| {
        let mut inv = InvitationServiceClient::new(ch.clone());
        let req = b.request(AcceptInvitationRequest { invitation_id: invitation.id.clone() });
        async move { inv.accept_invitation(req).await.map(|_| ()).map_err(|s| s.code()) }
    });
    let results = futures::future::join_all(accepts).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let db = cluster.database().await?;
    let memberships = db
        .collection::<bson::Document>("members")
        .count_documents(bson::doc! { "folder_id": &folder_id, "user_id": &b.user_id })
        .await?;
    assert_eq!(memberships, 1);

    for i in 0..4 {
        invite(&ch, &a, &folder_id, &format!("c{i}@example.com"), AccessLevel::View).await?;
    }
    let invites = (0..20).map(|i| {
        let ch = ch.clone();
        let (a, folder_id) = (a.clone(), folder_id.clone());
        async move {
            invite(&ch, &a, &folder_id, &format!("race{i}@example.com"), AccessLevel::View)
                .await
                .map(drop)
                .map_err(|s| s.code())
        }
    });
    let results = futures::future::join_all(invites).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(()) | Err(Code::ResourceExhausted))));
    let pending = db
        .collection::<bson::Document>("invitations")
        .count_documents(bson::doc! { "folder_id": &folder_id, "state": "pending" })
        .await?;
    assert_eq!(pending, 5);
    cluster.stop().await
}

#[tokio::test]
async fn expired_invitations_cannot_be_accepted_and_free_their_slot() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |l| l.max_pending_per_folder = 1)).await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let folder_id = new_folder(&ch, &a, "Short-lived").await?;
    let old = invite(&ch, &a, &folder_id, "late@example.com", AccessLevel::View).await?;
    retry_hint(&invite(&ch, &a, &folder_id, "other@example.com", AccessLevel::View).await.unwrap_err());
    cluster.clock.advance(Duration::from_secs(7 * 86_400 + 1));
    // A week later access tokens have long expired too: sign in again, on the same clock.
    let a = cluster.sign_in("alice@example.com").await?;
    invite(&ch, &a, &folder_id, "other@example.com", AccessLevel::View).await?;
    let late = cluster.sign_in("late@example.com").await?;
    let err = InvitationServiceClient::new(ch.clone())
        .accept_invitation(late.request(AcceptInvitationRequest { invitation_id: old.id }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("expired"));
    cluster.stop().await
}

#[tokio::test]
async fn only_managers_manage_invitations_and_only_the_invitee_accepts() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |_| {})).await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let editor = cluster.sign_in("ed@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let folder_id = new_folder(&ch, &a, "Guarded").await?;
    cluster.add_member(&folder_id, &editor, AccessLevel::Edit).await?;
    let for_carol = invite(&ch, &a, &folder_id, "carol@example.com", AccessLevel::View).await?;
    let mut inv = InvitationServiceClient::new(ch.clone());

    assert_eq!(
        invite(&ch, &editor, &folder_id, "x@example.com", AccessLevel::View).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        invite(&ch, &b, &folder_id, "x@example.com", AccessLevel::View).await.unwrap_err().code(),
        Code::NotFound
    );
    let revoke = |s: &Session| s.request(RevokeInvitationRequest { invitation_id: for_carol.id.clone() });
    assert_eq!(inv.revoke_invitation(revoke(&editor)).await.unwrap_err().code(), Code::PermissionDenied);
    let list = |s: &Session| s.request(ListFolderInvitationsRequest { folder_id: folder_id.clone(), page: None });
    assert_eq!(inv.list_folder_invitations(list(&editor)).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(inv.list_folder_invitations(list(&a)).await?.into_inner().invitations.len(), 1);
    let err = inv
        .accept_invitation(b.request(AcceptInvitationRequest { invitation_id: for_carol.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "bob cannot accept carol's invitation");
    assert_eq!(
        invite(&ch, &a, &folder_id, "ed@example.com", AccessLevel::View).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    let bad = invite(&ch, &a, &folder_id, "not an email", AccessLevel::View).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("invitee_email"));
    inv.revoke_invitation(revoke(&a)).await?;
    let carol = cluster.sign_in("carol@example.com").await?;
    let err = inv
        .accept_invitation(carol.request(AcceptInvitationRequest { invitation_id: for_carol.id }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // An invitee whose license blocks sharing cannot be invited.
    let mut op = cluster.license_operator().await?;
    op.upsert_license(ts_proto::internal::UpsertLicenseRequest {
        license_id: "blk".into(),
        admin_emails: vec![],
        emails: vec![],
        domains: vec!["blocked.example".into()],
    })
    .await?;
    op.set_sharing_enabled(ts_proto::internal::SetSharingEnabledRequest { license_id: "blk".into(), enabled: false })
        .await?;
    assert_eq!(
        invite(&ch, &a, &folder_id, "x@blocked.example", AccessLevel::View).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    cluster.stop().await
}

#[tokio::test]
async fn the_per_license_send_limit_counts_every_inviter_of_the_license() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| {
        limits(c, |l| {
            l.license_burst = 3;
            l.per_license_per_minute = 6;
        })
    })
    .await?;
    let mut op = cluster.license_operator().await?;
    op.upsert_license(ts_proto::internal::UpsertLicenseRequest {
        license_id: "acme".into(),
        admin_emails: vec![],
        emails: vec![],
        domains: vec!["acme.example".into()],
    })
    .await?;
    let ch = cluster.gateway().await?;
    let (x, y) = (cluster.sign_in("x@acme.example").await?, cluster.sign_in("y@acme.example").await?);
    let outsider = cluster.sign_in("z@other.example").await?;
    let (fx, fy, fz) =
        (new_folder(&ch, &x, "X").await?, new_folder(&ch, &y, "Y").await?, new_folder(&ch, &outsider, "Z").await?);
    invite(&ch, &x, &fx, "a1@example.com", AccessLevel::View).await?;
    invite(&ch, &y, &fy, "a2@example.com", AccessLevel::View).await?;
    invite(&ch, &x, &fx, "a3@example.com", AccessLevel::View).await?;
    let err = invite(&ch, &y, &fy, "a4@example.com", AccessLevel::View).await.unwrap_err();
    assert_eq!(retry_hint(&err), 10, "6 per minute: one every 10 s");
    assert!(err.message().contains("per license"), "{}", err.message());
    invite(&ch, &outsider, &fz, "a5@example.com", AccessLevel::View).await?;
    cluster.stop().await
}

#[tokio::test]
async fn accepting_as_an_existing_member_keeps_their_level_and_spends_the_invitation() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |_| {})).await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let folder_id = new_folder(&ch, &a, "Crashy").await?;
    let invitation = invite(&ch, &a, &folder_id, "bob@example.com", AccessLevel::Edit).await?;
    // Bob became a member some other way while the invitation was pending.
    cluster.add_member(&folder_id, &b, AccessLevel::Edit).await?;
    let mut inv = InvitationServiceClient::new(ch.clone());
    inv.accept_invitation(b.request(AcceptInvitationRequest { invitation_id: invitation.id.clone() })).await?;
    // The membership was not made by this invitation: accepting again is a replay.
    let again = inv.accept_invitation(b.request(AcceptInvitationRequest { invitation_id: invitation.id.clone() })).await;
    assert_eq!(again.unwrap_err().code(), Code::FailedPrecondition);
    let db = cluster.database().await?;
    let stored = db
        .collection::<bson::Document>("invitations")
        .find_one(bson::doc! { "_id": &invitation.id })
        .await?
        .expect("invitation");
    assert_eq!(stored.get_str("state")?, "accepted");
    let memberships = db
        .collection::<bson::Document>("members")
        .count_documents(bson::doc! { "folder_id": &folder_id, "user_id": &b.user_id })
        .await?;
    assert_eq!(memberships, 1);
    cluster.stop().await
}
