//! An accepted invitation is spent (issue 9, item 1): replaying it after the membership
//! changed never restores or raises access; a crash between recording the accept and making
//! the member is repaired by a retry; an invitation whose inviter lost MANAGE, or whose folder
//! was deleted, cannot be accepted.

use crate::support::state_of;
use tonic::Code;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{Folders, Invitations};
use ts_testkit::{Session, TestCluster};

/// The user's access in the folder as MongoDB has it (None: not a member).
async fn stored_access(cluster: &TestCluster, folder_id: &str, user: &Session) -> anyhow::Result<Option<i32>> {
    let db = cluster.database().await?;
    let m = db
        .collection::<bson::Document>("members")
        .find_one(bson::doc! { "folder_id": folder_id, "user_id": &user.user_id })
        .await?;
    Ok(m.map(|m| m.get_i32("access").unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_or_lowered_member_cannot_replay_their_old_invitation() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Team").await?;
    let id = Invitations::new(&ch, &a).send(&folder_id, "bob@example.com", AccessLevel::Manage).await.map(|i| i.id)?;
    Invitations::new(&ch, &b).accept(&id).await?;
    // A plain retry while nothing has changed is harmless and changes nothing.
    assert_eq!(Invitations::new(&ch, &b).accept(&id).await?.access, AccessLevel::Manage as i32);

    let mut members = MemberServiceClient::new(ch.clone());
    let lower = UpdateMemberAccessRequest {
        folder_id: folder_id.clone(),
        user_id: b.user_id.clone(),
        access: AccessLevel::View as i32,
    };
    members.update_member_access(a.request(lower)).await?;
    let e = Invitations::new(&ch, &b).accept(&id).await.expect_err("a lowered member replays their MANAGE invitation");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(stored_access(&cluster, &folder_id, &b).await?, Some(AccessLevel::View as i32), "still VIEW");

    members
        .remove_member(a.request(RemoveMemberRequest { folder_id: folder_id.clone(), user_id: b.user_id.clone() }))
        .await?;
    let e = Invitations::new(&ch, &b).accept(&id).await.expect_err("a removed member replays their invitation");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(stored_access(&cluster, &folder_id, &b).await?, None, "still removed");
    let e = FolderServiceClient::new(ch.clone())
        .get_folder(b.request(GetFolderRequest { folder_id: folder_id.clone() }))
        .await
        .expect_err("bob is out");
    assert_eq!(e.code(), Code::NotFound);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_recorded_before_a_crash_is_repaired_by_a_retry_once() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Crashy").await?;
    let id = Invitations::new(&ch, &a).send(&folder_id, "bob@example.com", AccessLevel::Edit).await.map(|i| i.id)?;
    // What a crash between the two steps leaves: the accept recorded, no member.
    let db = cluster.database().await?;
    db.collection::<bson::Document>("invitations")
        .update_one(bson::doc! { "_id": &id }, bson::doc! { "$set": { "state": "accepted" } })
        .await?;
    assert_eq!(stored_access(&cluster, &folder_id, &b).await?, None);
    Invitations::new(&ch, &b).accept(&id).await?;
    assert_eq!(stored_access(&cluster, &folder_id, &b).await?, Some(AccessLevel::Edit as i32), "repaired");
    assert_eq!(state_of(&cluster, &id).await?, "accepted");
    // Once made and then removed, the same invitation repairs nothing more.
    MemberServiceClient::new(ch.clone())
        .remove_member(a.request(RemoveMemberRequest { folder_id: folder_id.clone(), user_id: b.user_id.clone() }))
        .await?;
    assert_eq!(Invitations::new(&ch, &b).accept(&id).await.expect_err("spent").code(), Code::FailedPrecondition);
    assert_eq!(stored_access(&cluster, &folder_id, &b).await?, None);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_dies_with_its_inviters_manage_right_and_with_its_folder() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let m = cluster.sign_in("mallory@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let c = cluster.sign_in("carol@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Team").await?;
    let for_m =
        Invitations::new(&ch, &a).send(&folder_id, "mallory@example.com", AccessLevel::Manage).await.map(|i| i.id)?;
    Invitations::new(&ch, &m).accept(&for_m).await?;
    // Mallory invites Bob, then loses MANAGE before Bob accepts.
    let from_m =
        Invitations::new(&ch, &m).send(&folder_id, "bob@example.com", AccessLevel::Manage).await.map(|i| i.id)?;
    MemberServiceClient::new(ch.clone())
        .update_member_access(a.request(UpdateMemberAccessRequest {
            folder_id: folder_id.clone(),
            user_id: m.user_id.clone(),
            access: AccessLevel::View as i32,
        }))
        .await?;
    let e = Invitations::new(&ch, &b).accept(&from_m).await.expect_err("the inviter lost MANAGE");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(stored_access(&cluster, &folder_id, &b).await?, None);
    assert_eq!(state_of(&cluster, &from_m).await?, "revoked");

    // Deleting the folder revokes its pending invitations.
    let for_c =
        Invitations::new(&ch, &a).send(&folder_id, "carol@example.com", AccessLevel::View).await.map(|i| i.id)?;
    FolderServiceClient::new(ch.clone())
        .delete_folder(a.request(DeleteFolderRequest { folder_id: folder_id.clone() }))
        .await?;
    let mine = InvitationServiceClient::new(ch.clone())
        .list_my_invitations(c.request(ListMyInvitationsRequest { page: None }))
        .await?
        .into_inner()
        .invitations;
    assert!(
        mine.iter().all(|i| i.state != InvitationState::Pending as i32),
        "an invitation to a deleted folder is still shown pending: {mine:?}"
    );
    let e = Invitations::new(&ch, &c).accept(&for_c).await.expect_err("the folder is gone");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(state_of(&cluster, &for_c).await?, "revoked");
    assert_eq!(stored_access(&cluster, &folder_id, &c).await?, None);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_stays_dead_when_its_inviter_gets_manage_back() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let m = cluster.sign_in("mallory@example.com").await?;
    let c = cluster.sign_in("carol@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Team").await?;
    let for_m =
        Invitations::new(&ch, &a).send(&folder_id, "mallory@example.com", AccessLevel::Manage).await.map(|i| i.id)?;
    Invitations::new(&ch, &m).accept(&for_m).await?;
    let from_m =
        Invitations::new(&ch, &m).send(&folder_id, "carol@example.com", AccessLevel::Manage).await.map(|i| i.id)?;
    // Demoted and promoted back with nobody listing invitations in between.
    let mut members = MemberServiceClient::new(ch.clone());
    for level in [AccessLevel::View, AccessLevel::Manage] {
        members
            .update_member_access(a.request(UpdateMemberAccessRequest {
                folder_id: folder_id.clone(),
                user_id: m.user_id.clone(),
                access: level as i32,
            }))
            .await?;
    }
    let e = Invitations::new(&ch, &c).accept(&from_m).await.expect_err("an invitation from before the break");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(stored_access(&cluster, &folder_id, &c).await?, None);
    // A fresh one from the restored manager works.
    let again =
        Invitations::new(&ch, &m).send(&folder_id, "carol@example.com", AccessLevel::Edit).await.map(|i| i.id)?;
    Invitations::new(&ch, &c).accept(&again).await?;
    assert_eq!(stored_access(&cluster, &folder_id, &c).await?, Some(AccessLevel::Edit as i32));
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_invites_of_one_email_make_one_invitation_so_none_is_left_to_replay() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Twins").await?;
    let invites = (0..12).map(|_| {
        let (ch, a, f) = (ch.clone(), a.clone(), folder_id.clone());
        tokio::spawn(async move {
            Invitations::new(&ch, &a).send(&f, "carol@example.com", AccessLevel::Edit).await.map(|i| i.id)
        })
    });
    let mut ids = Vec::new();
    for r in futures::future::join_all(invites).await {
        ids.push(r??);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "concurrent invites of one email made {} invitations", ids.len());
    let db = cluster.database().await?;
    let pending = db
        .collection::<bson::Document>("invitations")
        .count_documents(
            bson::doc! { "folder_id": &folder_id, "invitee_email": "carol@example.com", "state": "pending" },
        )
        .await?;
    assert_eq!(pending, 1);
    cluster.stop().await
}
