//! Invitations through the gateway: the whole sharing story, the anti-spam limits at their
//! bounds (also across two gateways, and with Redis down), concurrency, expiry, and who may
//! do what.

use std::time::Duration;

use crate::support::state_of;
use tonic::Code;
use ts_config::{Config, InvitationLimits};
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::item_content::Content;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{Folders, Invitations};
use ts_testkit::{Session, TestCluster, query_content};

fn limits(c: &mut Config, f: impl FnOnce(&mut InvitationLimits)) {
    // Generous send rates unless a test is about them.
    c.invitation_limits.inviter_burst = 1000;
    c.invitation_limits.per_inviter_per_minute = 60_000;
    c.invitation_limits.license_burst = 1000;
    c.invitation_limits.per_license_per_minute = 60_000;
    f(&mut c.invitation_limits);
}

fn retry_hint(s: &tonic::Status) -> u64 {
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    ts_contract::status::retry_delay(s).expect("RetryInfo").as_secs()
}

#[tokio::test]
async fn the_whole_sharing_story() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Team queries").await?;
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
                ..Default::default()
            }))
            .await?;
    }
    Invitations::new(&ch, &a).send(&folder_id, "Bob@Example.com", AccessLevel::Edit).await?;
    assert!(
        ts_mail::FileMailer::read(&cluster.mail_dir, "bob@example.com").iter().any(|m| m.body.contains("Team queries"))
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
async fn pending_caps_hold_at_their_bounds() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| {
        limits(c, |l| {
            l.max_pending_per_folder = 3;
            l.max_pending_per_invitee = 2;
        })
    })
    .await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let f1 = Folders::new(&ch, &a).create("One").await?;
    for i in 0..3 {
        Invitations::new(&ch, &a).send(&f1, &format!("p{i}@example.com"), AccessLevel::View).await?;
    }
    let err = Invitations::new(&ch, &a).send(&f1, "p3@example.com", AccessLevel::View).await.unwrap_err();
    let hint = retry_hint(&err);
    assert!(hint > 6 * 86_400 && hint <= 7 * 86_400, "capacity frees when the oldest expires: {hint}");

    let f2 = Folders::new(&ch, &a).create("Two").await?;
    let f3 = Folders::new(&ch, &a).create("Three").await?;
    Invitations::new(&ch, &a).send(&f2, "p0@example.com", AccessLevel::View).await?;
    retry_hint(&Invitations::new(&ch, &a).send(&f3, "p0@example.com", AccessLevel::View).await.unwrap_err());

    // Re-inviting a pending invitee refreshes that invitation instead of adding one.
    let again = Invitations::new(&ch, &a).send(&f1, "p1@example.com", AccessLevel::Edit).await?;
    assert_eq!(again.access, AccessLevel::Edit as i32);

    cluster.stop().await
}

#[tokio::test]
async fn one_fetch_never_returns_more_than_the_maximum_and_paging_reaches_the_rest() -> anyhow::Result<()> {
    // The invitee may hold 10 pending invitations and holds 5, so only the fetch maximum (2)
    // can keep a page at 2.
    let cluster = TestCluster::start_with(|c| {
        limits(c, |l| {
            l.max_pending_per_invitee = 10;
            l.max_per_fetch = 2;
        })
    })
    .await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let mut sent = Vec::new();
    for i in 0..5 {
        let f = Folders::new(&ch, &a).create(&format!("Folder {i}")).await?;
        sent.push(Invitations::new(&ch, &a).send(&f, "many@example.com", AccessLevel::View).await?.id);
    }
    let invitee = cluster.sign_in("many@example.com").await?;
    let mut inv = InvitationServiceClient::new(ch.clone());
    let fetch = |size: u32, token: &str| {
        invitee
            .request(ListMyInvitationsRequest { page: Some(PageRequest { page_size: size, page_token: token.into() }) })
    };
    for size in [0, 3, 500, u32::MAX] {
        let page = inv.list_my_invitations(fetch(size, "")).await?.into_inner();
        assert_eq!(page.invitations.len(), 2, "page_size {size}: at most 2 per fetch");
    }
    let page = inv.list_my_invitations(invitee.request(ListMyInvitationsRequest { page: None })).await?.into_inner();
    assert_eq!(page.invitations.len(), 2, "no page request: at most 2 per fetch");

    // Every invitation is still reachable, two at a time.
    let (mut seen, mut token, mut fetches) = (Vec::new(), String::new(), 0);
    loop {
        let page = inv.list_my_invitations(fetch(500, &token)).await?.into_inner();
        assert!(page.invitations.len() <= 2);
        seen.extend(page.invitations.into_iter().map(|i| i.id));
        fetches += 1;
        token = page.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() || fetches > 5 {
            break;
        }
    }
    seen.sort();
    sent.sort();
    assert_eq!((seen, fetches), (sent, 3));
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
    let folder_id = Folders::new(&gateways[0], &a).create("Spammy").await?;
    for i in 0..5 {
        Invitations::new(&gateways[i % 2], &a)
            .send(&folder_id, &format!("r{i}@example.com"), AccessLevel::View)
            .await?;
    }
    let err =
        Invitations::new(&gateways[1], &a).send(&folder_id, "r5@example.com", AccessLevel::View).await.unwrap_err();
    assert_eq!(retry_hint(&err), 3, "20 per minute: one every 3 s");
    retry_hint(
        &Invitations::new(&gateways[0], &a).send(&folder_id, "r6@example.com", AccessLevel::View).await.unwrap_err(),
    );
    cluster.clock.advance(Duration::from_secs(3));
    Invitations::new(&gateways[0], &a).send(&folder_id, "r7@example.com", AccessLevel::View).await?;
    retry_hint(
        &Invitations::new(&gateways[1], &a).send(&folder_id, "r8@example.com", AccessLevel::View).await.unwrap_err(),
    );
    // The refusals are in the inviter's own error trail.
    let db = cluster.database().await?;
    let filter = bson::doc! { "actor_email": "alice@example.com", "status_code": "RESOURCE_EXHAUSTED" };
    let events = db.collection::<bson::Document>("audit_events");
    ts_testkit::eventually("three RESOURCE_EXHAUSTED refusals audited for alice", || async {
        Ok((events.count_documents(filter.clone()).await? >= 3).then_some(()))
    })
    .await?;
    cluster.stop().await?;

    // Redis unreachable: each gateway still limits on its own.
    let cluster = TestCluster::start_with(|c| {
        per_inviter(c);
        c.redis = Some(ts_config::RedisConfig { url: "redis://127.0.0.1:1".to_owned().into() });
    })
    .await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Spammy").await?;
    for i in 0..5 {
        Invitations::new(&ch, &a).send(&folder_id, &format!("r{i}@example.com"), AccessLevel::View).await?;
    }
    retry_hint(&Invitations::new(&ch, &a).send(&folder_id, "r5@example.com", AccessLevel::View).await.unwrap_err());
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_accepts_make_one_membership_and_concurrent_invites_stop_at_the_cap() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |l| l.max_pending_per_folder = 5)).await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Busy").await?;
    let invitation = Invitations::new(&ch, &a).send(&folder_id, "bob@example.com", AccessLevel::Edit).await?;
    // Each request is its own task on a multi-threaded runtime, over its own connection, so
    // that the services (spawned on the same runtime) really handle them in parallel.
    let mut accepts = Vec::new();
    for _ in 0..20 {
        let mut inv = InvitationServiceClient::new(cluster.gateway().await?);
        let req = b.request(AcceptInvitationRequest { invitation_id: invitation.id.clone() });
        accepts.push(tokio::spawn(async move { inv.accept_invitation(req).await.map(|_| ()).map_err(|s| s.code()) }));
    }
    let results: Vec<_> = futures::future::try_join_all(accepts).await?;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let db = cluster.database().await?;
    let memberships = db
        .collection::<bson::Document>("members")
        .count_documents(bson::doc! { "folder_id": &folder_id, "user_id": &b.user_id })
        .await?;
    assert_eq!(memberships, 1);

    for i in 0..4 {
        Invitations::new(&ch, &a).send(&folder_id, &format!("c{i}@example.com"), AccessLevel::View).await?;
    }
    let mut invites = Vec::new();
    for i in 0..20 {
        let ch = cluster.gateway().await?;
        let (a, folder_id) = (a.clone(), folder_id.clone());
        invites.push(tokio::spawn(async move {
            Invitations::new(&ch, &a)
                .send(&folder_id, &format!("race{i}@example.com"), AccessLevel::View)
                .await
                .map(drop)
                .map_err(|s| s.code())
        }));
    }
    let results: Vec<_> = futures::future::try_join_all(invites).await?;
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
    let folder_id = Folders::new(&ch, &a).create("Short-lived").await?;
    let old = Invitations::new(&ch, &a).send(&folder_id, "late@example.com", AccessLevel::View).await?;
    retry_hint(&Invitations::new(&ch, &a).send(&folder_id, "other@example.com", AccessLevel::View).await.unwrap_err());
    cluster.clock.advance(Duration::from_secs(7 * 86_400 + 1));
    // A week later access tokens have long expired too: sign in again, on the same clock.
    let a = cluster.sign_in("alice@example.com").await?;
    Invitations::new(&ch, &a).send(&folder_id, "other@example.com", AccessLevel::View).await?;
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
    let folder_id = Folders::new(&ch, &a).create("Guarded").await?;
    cluster.add_member(&folder_id, &editor, AccessLevel::Edit).await?;
    let for_carol = Invitations::new(&ch, &a).send(&folder_id, "carol@example.com", AccessLevel::View).await?;
    let mut inv = InvitationServiceClient::new(ch.clone());

    assert_eq!(
        Invitations::new(&ch, &editor).send(&folder_id, "x@example.com", AccessLevel::View).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        Invitations::new(&ch, &b).send(&folder_id, "x@example.com", AccessLevel::View).await.unwrap_err().code(),
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
        Invitations::new(&ch, &a).send(&folder_id, "ed@example.com", AccessLevel::View).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    let bad = Invitations::new(&ch, &a).send(&folder_id, "not an email", AccessLevel::View).await.unwrap_err();
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
        Invitations::new(&ch, &a).send(&folder_id, "x@blocked.example", AccessLevel::View).await.unwrap_err().code(),
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
    let (fx, fy, fz) = (
        Folders::new(&ch, &x).create("X").await?,
        Folders::new(&ch, &y).create("Y").await?,
        Folders::new(&ch, &outsider).create("Z").await?,
    );
    Invitations::new(&ch, &x).send(&fx, "a1@example.com", AccessLevel::View).await?;
    Invitations::new(&ch, &y).send(&fy, "a2@example.com", AccessLevel::View).await?;
    Invitations::new(&ch, &x).send(&fx, "a3@example.com", AccessLevel::View).await?;
    let err = Invitations::new(&ch, &y).send(&fy, "a4@example.com", AccessLevel::View).await.unwrap_err();
    assert_eq!(retry_hint(&err), 10, "6 per minute: one every 10 s");
    assert!(err.message().contains("per license"), "{}", err.message());
    Invitations::new(&ch, &outsider).send(&fz, "a5@example.com", AccessLevel::View).await?;
    cluster.stop().await
}

#[tokio::test]
async fn accepting_as_an_existing_member_keeps_their_level_and_spends_the_invitation() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |_| {})).await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Crashy").await?;
    let invitation = Invitations::new(&ch, &a).send(&folder_id, "bob@example.com", AccessLevel::Edit).await?;
    // Bob became a member some other way while the invitation was pending.
    cluster.add_member(&folder_id, &b, AccessLevel::Edit).await?;
    let mut inv = InvitationServiceClient::new(ch.clone());
    inv.accept_invitation(b.request(AcceptInvitationRequest { invitation_id: invitation.id.clone() })).await?;
    // The membership was not made by this invitation: accepting again is a replay.
    let again =
        inv.accept_invitation(b.request(AcceptInvitationRequest { invitation_id: invitation.id.clone() })).await;
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

fn mails_to(cluster: &TestCluster, email: &str) -> usize {
    ts_mail::FileMailer::read(&cluster.mail_dir, email).len()
}

#[tokio::test]
async fn view_and_edit_members_cannot_invite_list_revoke_or_resend() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |_| {})).await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let viewer = cluster.sign_in("viewer@example.com").await?;
    let editor = cluster.sign_in("editor@example.com").await?;
    let outsider = cluster.sign_in("outsider@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Read-only for some").await?;
    cluster.add_member(&folder_id, &viewer, AccessLevel::View).await?;
    cluster.add_member(&folder_id, &editor, AccessLevel::Edit).await?;
    let for_carol = Invitations::new(&ch, &a).send(&folder_id, "carol@example.com", AccessLevel::View).await?;
    let mut inv = InvitationServiceClient::new(ch.clone());

    for (who, want) in
        [(&viewer, Code::PermissionDenied), (&editor, Code::PermissionDenied), (&outsider, Code::NotFound)]
    {
        let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |e| e.code());
        let created =
            code(Invitations::new(&ch, who).send(&folder_id, "x@example.com", AccessLevel::View).await.map(drop));
        let listed = code(
            inv.list_folder_invitations(
                who.request(ListFolderInvitationsRequest { folder_id: folder_id.clone(), page: None }),
            )
            .await
            .map(drop),
        );
        let revoked = code(
            inv.revoke_invitation(who.request(RevokeInvitationRequest { invitation_id: for_carol.id.clone() }))
                .await
                .map(drop),
        );
        let resent = code(
            inv.resend_invitation(who.request(ResendInvitationRequest { invitation_id: for_carol.id.clone() }))
                .await
                .map(drop),
        );
        assert_eq!([created, listed, revoked, resent], [want; 4], "{}: create, list, revoke, resend", who.email);
        if want == Code::NotFound {
            // An outsider learns nothing about the folder behind an invitation id.
            let err = inv
                .revoke_invitation(who.request(RevokeInvitationRequest { invitation_id: for_carol.id.clone() }))
                .await
                .unwrap_err();
            assert_eq!(err.message(), "invitation not found");
        }
    }
    // Nothing happened: carol's invitation is pending, mailed once; no one else was invited.
    assert_eq!(state_of(&cluster, &for_carol.id).await?, "pending");
    assert_eq!(mails_to(&cluster, "carol@example.com"), 1);
    assert_eq!(mails_to(&cluster, "x@example.com"), 0);
    let pending = inv
        .list_folder_invitations(a.request(ListFolderInvitationsRequest { folder_id: folder_id.clone(), page: None }))
        .await?
        .into_inner()
        .invitations;
    assert_eq!(pending.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), [for_carol.id.as_str()]);
    cluster.stop().await
}

#[tokio::test]
async fn blocked_and_unverified_users_get_failed_precondition_from_every_invitation_rpc() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |_| {})).await?;
    let ch = cluster.gateway().await?;
    cluster
        .license_operator()
        .await?
        .upsert_license(ts_proto::internal::UpsertLicenseRequest {
            license_id: "lic".into(),
            admin_emails: vec!["admin@lic.test".into()],
            emails: vec![],
            domains: vec!["lic.test".into()],
        })
        .await?;
    let owner = cluster.sign_in("owner@example.com").await?;
    let owners_folder = Folders::new(&ch, &owner).create("Owner's").await?;
    let mut people = Vec::new();
    for email in ["blocked@lic.test", "unverified@example.com"] {
        let s = cluster.sign_in(email).await?;
        // Each is invited somewhere, and manages a folder with a pending invitation of their own.
        let to_them = Invitations::new(&ch, &owner).send(&owners_folder, email, AccessLevel::Edit).await?;
        let own_folder = Folders::new(&ch, &s).create("Theirs").await?;
        let guest = format!("guest.{}@example.com", email.split('@').next().unwrap_or_default());
        let from_them = Invitations::new(&ch, &s).send(&own_folder, &guest, AccessLevel::View).await?;
        people.push((email, own_folder, to_them, from_them));
    }

    // Now the license admin blocks the license, and the other user loses verification.
    let admin = cluster.sign_in("admin@lic.test").await?;
    ts_proto::public::license_admin_service_client::LicenseAdminServiceClient::new(ch.clone())
        .set_license_sharing_blocked(
            admin.request(SetLicenseSharingBlockedRequest { license_id: "lic".into(), blocked: true }),
        )
        .await?;
    let blocked = cluster.sign_in("blocked@lic.test").await?; // the block ended the old session
    let unverified = cluster.sign_in("unverified@example.com").await?;
    cluster
        .database()
        .await?
        .collection::<bson::Document>("users")
        .update_one(
            bson::doc! { "email": "unverified@example.com" },
            bson::doc! { "$set": { "email_verified": false } },
        )
        .await?;
    crate::support::forget_sharing_answers()?;

    let mut inv = InvitationServiceClient::new(ch.clone());
    for (s, (email, own_folder, to_them, from_them)) in [&blocked, &unverified].into_iter().zip(&people) {
        let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |e| e.code());
        let guest_mails = mails_to(&cluster, &from_them.invitee_email);
        let got = [
            (
                "create",
                code(Invitations::new(&ch, s).send(own_folder, "new@example.com", AccessLevel::View).await.map(drop)),
            ),
            (
                "list mine",
                code(inv.list_my_invitations(s.request(ListMyInvitationsRequest::default())).await.map(drop)),
            ),
            (
                "list folder",
                code(
                    inv.list_folder_invitations(
                        s.request(ListFolderInvitationsRequest { folder_id: own_folder.clone(), page: None }),
                    )
                    .await
                    .map(drop),
                ),
            ),
            (
                "accept",
                code(
                    inv.accept_invitation(s.request(AcceptInvitationRequest { invitation_id: to_them.id.clone() }))
                        .await
                        .map(drop),
                ),
            ),
            (
                "decline",
                code(
                    inv.decline_invitation(s.request(DeclineInvitationRequest { invitation_id: to_them.id.clone() }))
                        .await
                        .map(drop),
                ),
            ),
            (
                "revoke",
                code(
                    inv.revoke_invitation(s.request(RevokeInvitationRequest { invitation_id: from_them.id.clone() }))
                        .await
                        .map(drop),
                ),
            ),
            (
                "resend",
                code(
                    inv.resend_invitation(s.request(ResendInvitationRequest { invitation_id: from_them.id.clone() }))
                        .await
                        .map(drop),
                ),
            ),
        ];
        let wrong: Vec<_> = got.iter().filter(|(_, c)| *c != Code::FailedPrecondition).collect();
        assert!(wrong.is_empty(), "{email}: {wrong:?}");
        // And none of it took effect.
        assert_eq!(state_of(&cluster, &to_them.id).await?, "pending", "{email}");
        assert_eq!(state_of(&cluster, &from_them.id).await?, "pending", "{email}");
        assert_eq!(mails_to(&cluster, &from_them.invitee_email), guest_mails, "{email}: nothing resent");
    }
    assert_eq!(mails_to(&cluster, "new@example.com"), 0);
    cluster.stop().await
}

#[tokio::test]
async fn a_declined_invitation_is_spent_and_frees_its_slot() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |l| l.max_pending_per_folder = 1)).await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let carol = cluster.sign_in("carol@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Declinable").await?;
    let for_bob = Invitations::new(&ch, &a).send(&folder_id, "bob@example.com", AccessLevel::Edit).await?;
    retry_hint(&Invitations::new(&ch, &a).send(&folder_id, "dan@example.com", AccessLevel::View).await.unwrap_err());
    let mut inv = InvitationServiceClient::new(ch.clone());
    let decline = |s: &Session| s.request(DeclineInvitationRequest { invitation_id: for_bob.id.clone() });

    // Only the invitee can decline; anyone else is told it does not exist.
    assert_eq!(inv.decline_invitation(decline(&carol)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(inv.decline_invitation(decline(&a)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(state_of(&cluster, &for_bob.id).await?, "pending");

    inv.decline_invitation(decline(&b)).await?;
    assert_eq!(state_of(&cluster, &for_bob.id).await?, "declined");
    let mine = inv.list_my_invitations(b.request(ListMyInvitationsRequest::default())).await?.into_inner();
    assert!(mine.invitations.is_empty(), "{:?}", mine.invitations);
    let err = inv
        .accept_invitation(b.request(AcceptInvitationRequest { invitation_id: for_bob.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(err.message(), "this invitation was declined", "the answer says why");
    let members = cluster
        .database()
        .await?
        .collection::<bson::Document>("members")
        .count_documents(bson::doc! { "folder_id": &folder_id, "user_id": &b.user_id })
        .await?;
    assert_eq!(members, 0, "a declined invitation makes no membership");
    let err = inv
        .resend_invitation(a.request(ResendInvitationRequest { invitation_id: for_bob.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "a declined invitation cannot be re-sent: {err:?}");
    assert_eq!(mails_to(&cluster, "bob@example.com"), 2, "one invitation and one sign-in code, nothing more");
    // The folder's only pending slot is free again.
    Invitations::new(&ch, &a).send(&folder_id, "dan@example.com", AccessLevel::View).await?;
    cluster.stop().await
}

#[tokio::test]
async fn resend_mails_again_and_really_extends_the_expiry() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| limits(c, |_| {})).await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Resent").await?;
    let first = Invitations::new(&ch, &a).send(&folder_id, "dave@example.com", AccessLevel::View).await?;
    assert_eq!(mails_to(&cluster, "dave@example.com"), 1);
    let first_expiry = first.expire_time.expect("expiry").seconds;

    cluster.clock.advance(Duration::from_secs(3 * 86_400));
    let a = cluster.sign_in("alice@example.com").await?;
    let resent = InvitationServiceClient::new(ch.clone())
        .resend_invitation(a.request(ResendInvitationRequest { invitation_id: first.id.clone() }))
        .await?
        .into_inner()
        .invitation
        .expect("invitation");
    assert_eq!((resent.id.as_str(), resent.state), (first.id.as_str(), InvitationState::Pending as i32));
    let new_expiry = resent.expire_time.expect("expiry").seconds;
    assert!(new_expiry >= first_expiry + 3 * 86_400 - 5, "expiry moved from {first_expiry} to {new_expiry}");
    assert_eq!(mails_to(&cluster, "dave@example.com"), 2, "the invitation was mailed again");

    // Past the original expiry, the re-sent invitation still works.
    cluster.clock.advance(Duration::from_secs(4 * 86_400 + 60));
    let dave = cluster.sign_in("dave@example.com").await?;
    InvitationServiceClient::new(ch.clone())
        .accept_invitation(dave.request(AcceptInvitationRequest { invitation_id: first.id.clone() }))
        .await?;
    assert_eq!(state_of(&cluster, &first.id).await?, "accepted");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_invitations_spend_nobody_s_send_budget() -> anyhow::Result<()> {
    // Its own license id: the limiter's Redis keys are shared by every test of this binary.
    let cluster = TestCluster::start_with(|c| {
        limits(c, |l| {
            l.inviter_burst = 2;
            l.per_inviter_per_minute = 1;
            l.license_burst = 2;
            l.per_license_per_minute = 1;
        })
    })
    .await?;
    let mut op = cluster.license_operator().await?;
    op.upsert_license(ts_proto::internal::UpsertLicenseRequest {
        license_id: "refunds".into(),
        admin_emails: vec![],
        emails: vec![],
        domains: vec!["refunds.example".into()],
    })
    .await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@refunds.example").await?;
    let mallory = cluster.sign_in("mallory@refunds.example").await?;
    let folder_id = Folders::new(&ch, &alice).create("Team").await?;
    cluster.add_member(&folder_id, &mallory, AccessLevel::View).await?;

    // Mallory, who may not invite to the folder, asks again and again: each answer says why,
    // none is the rate limit, and nothing is charged to her or to the license.
    for i in 0..6 {
        let err = Invitations::new(&ch, &mallory)
            .send(&folder_id, &format!("spam{i}@example.com"), AccessLevel::Manage)
            .await;
        assert_eq!(err.unwrap_err().code(), Code::PermissionDenied, "attempt {i}");
        let nowhere = uuid::Uuid::new_v4().to_string();
        let err = Invitations::new(&ch, &mallory).send(&nowhere, "spam@example.com", AccessLevel::View).await;
        assert_eq!(err.unwrap_err().code(), Code::NotFound, "attempt {i}");
    }
    // Re-inviting a member is refused as such and costs nothing either.
    let err =
        Invitations::new(&ch, &alice).send(&folder_id, "mallory@refunds.example", AccessLevel::View).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // The license's burst of two is whole: one from Mallory's own folder, one from Alice.
    let own = Folders::new(&ch, &mallory).create("Mine").await?;
    Invitations::new(&ch, &mallory).send(&own, "friend@example.com", AccessLevel::View).await?;
    Invitations::new(&ch, &alice).send(&folder_id, "new@example.com", AccessLevel::View).await?;
    // And then it is spent: the limit itself still holds.
    let err = Invitations::new(&ch, &alice).send(&folder_id, "third@example.com", AccessLevel::View).await.unwrap_err();
    assert_eq!(retry_hint(&err), 60, "one a minute");
    assert!(err.message().contains("per license"), "{}", err.message());
    cluster.stop().await
}
