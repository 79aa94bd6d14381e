//! "A folder with members keeps at least one MANAGE member" under concurrency (issue 9,
//! item 2): concurrent promotions, demotions, removals, leaves and accepts, on a
//! multi-threaded runtime so that requests really run in parallel, then the invariant and
//! the `managers` counter checked against what MongoDB holds.

use tonic::transport::Channel;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::Folders;
use ts_testkit::{Session, TestCluster};

/// One membership call by `actor` on `target`.
#[derive(Debug, Clone, Copy)]
enum Op {
    Set(AccessLevel),
    Remove,
    Leave,
}

async fn run(ch: Channel, folder_id: String, actor: Session, target: Session, op: Op) -> Result<(), tonic::Code> {
    let mut members = MemberServiceClient::new(ch.clone());
    let r = match op {
        Op::Set(level) => members
            .update_member_access(actor.request(UpdateMemberAccessRequest {
                folder_id,
                user_id: target.user_id,
                access: level as i32,
            }))
            .await
            .map(drop),
        Op::Remove => members
            .remove_member(actor.request(RemoveMemberRequest { folder_id, user_id: target.user_id }))
            .await
            .map(drop),
        Op::Leave => {
            FolderServiceClient::new(ch).leave_folder(actor.request(LeaveFolderRequest { folder_id })).await.map(drop)
        }
    };
    r.map_err(|s| s.code())
}

/// Members, managers among them, and the folder's `managers` counter, as stored.
async fn census(cluster: &TestCluster, folder_id: &str) -> anyhow::Result<(u64, u64, i64)> {
    let db = cluster.database().await?;
    let members = db.collection::<bson::Document>("members");
    let all = members.count_documents(bson::doc! { "folder_id": folder_id }).await?;
    let managers =
        members.count_documents(bson::doc! { "folder_id": folder_id, "access": AccessLevel::Manage as i32 }).await?;
    let folder = db.collection::<bson::Document>("folders").find_one(bson::doc! { "_id": folder_id }).await?;
    let counter = folder.and_then(|f| f.get_i64("managers").ok()).unwrap_or(-1);
    Ok((all, managers, counter))
}

fn assert_invariant(census: (u64, u64, i64), when: &str) {
    let (all, managers, counter) = census;
    assert!(all == 0 || managers >= 1, "{when}: {all} members and no manager");
    assert_eq!(counter, managers as i64, "{when}: the managers counter drifted from the managers it counts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_promotions_then_two_leaving_managers_keep_one_manager() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let a = cluster.sign_in("alice@example.com").await?;
    let b = cluster.sign_in("bob@example.com").await?;
    let c = cluster.sign_in("carol@example.com").await?;
    let folder_id = Folders::new(&ch, &a).create("Contended").await?;
    cluster.add_member(&folder_id, &b, AccessLevel::Manage).await?;
    cluster.add_member(&folder_id, &c, AccessLevel::Edit).await?;
    // The same promotion, many times at once: it must count once.
    let promote = (0..8)
        .map(|_| tokio::spawn(run(ch.clone(), folder_id.clone(), a.clone(), c.clone(), Op::Set(AccessLevel::Manage))));
    for r in futures::future::join_all(promote).await {
        r?.map_err(|c| anyhow::anyhow!("promotion failed: {c:?}"))?;
    }
    assert_invariant(census(&cluster, &folder_id).await?, "after concurrent promotions");
    run(ch.clone(), folder_id.clone(), a.clone(), c.clone(), Op::Set(AccessLevel::View))
        .await
        .map_err(|c| anyhow::anyhow!("{c:?}"))?;
    // Both remaining managers leave at once: one of them must be refused.
    let leaves =
        [a.clone(), b.clone()].map(|who| tokio::spawn(run(ch.clone(), folder_id.clone(), who.clone(), who, Op::Leave)));
    let results: Vec<_> = futures::future::join_all(leaves).await.into_iter().collect::<Result<_, _>>()?;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.contains(&Err(tonic::Code::FailedPrecondition)), "{results:?}");
    assert_invariant(census(&cluster, &folder_id).await?, "after two managers left at once");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_mixed_membership_calls_never_leave_a_folder_without_a_manager() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let mut users = Vec::new();
    for i in 0..6 {
        users.push(cluster.sign_in(&format!("u{i}@example.com")).await?);
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % n
    };
    let levels = [AccessLevel::View, AccessLevel::Edit, AccessLevel::Manage];
    for round in 0..6 {
        let folder_id = Folders::new(&ch, &users[0]).create("Contended").await?;
        for (i, u) in users.iter().enumerate().skip(1) {
            cluster.add_member(&folder_id, u, if i % 2 == 0 { AccessLevel::Manage } else { AccessLevel::Edit }).await?;
        }
        // Pending invitations accepted in the middle of it all.
        let mut tasks = Vec::new();
        let late = cluster.sign_in(&format!("late{round}@example.com")).await?;
        let invitation = InvitationServiceClient::new(ch.clone())
            .create_invitation(users[0].request(CreateInvitationRequest {
                folder_id: folder_id.clone(),
                invitee_email: late.email.clone(),
                access: AccessLevel::Manage as i32,
                ..Default::default()
            }))
            .await?
            .into_inner()
            .invitation
            .expect("invitation");
        for _ in 0..24 {
            let actor = users[next(users.len())].clone();
            let target = users[next(users.len())].clone();
            let op = match next(4) {
                0 => Op::Remove,
                1 => Op::Leave,
                _ => Op::Set(levels[next(3)]),
            };
            let (actor, target) = if matches!(op, Op::Leave) { (target.clone(), target) } else { (actor, target) };
            tasks.push(tokio::spawn(run(ch.clone(), folder_id.clone(), actor, target, op)));
        }
        let (late_ch, id) = (ch.clone(), invitation.id.clone());
        let late_session = late.clone();
        let accept = tokio::spawn(async move {
            InvitationServiceClient::new(late_ch)
                .accept_invitation(late_session.request(AcceptInvitationRequest { invitation_id: id }))
                .await
                .map(drop)
                .map_err(|s| s.code())
        });
        for t in tasks {
            let outcome = t.await?;
            assert!(
                matches!(
                    outcome,
                    Ok(())
                        | Err(tonic::Code::FailedPrecondition | tonic::Code::NotFound | tonic::Code::PermissionDenied)
                ),
                "round {round}: unexpected {outcome:?}"
            );
        }
        let accepted = accept.await?;
        assert!(
            matches!(accepted, Ok(()) | Err(tonic::Code::FailedPrecondition)),
            "round {round}: accept ended {accepted:?}"
        );
        assert_invariant(census(&cluster, &folder_id).await?, &format!("round {round}"));
    }
    cluster.stop().await
}
