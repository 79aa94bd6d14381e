//! The public edge as an attacker meets it (issue 9, items 5, 6 and 10): oversized and
//! malformed ids are refused before any store, cache or audit write; the gateway's
//! reflection describes only the public API; and a malformed invitation never spends the
//! sender's rate-limit budget, while the default limits let a manager invite a team of 20.

use teamshare::Service;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient as ClientV1;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest as RequestV1;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as ResponseV1;
use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as ClientV1Alpha;
use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as RequestV1Alpha;
use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as ResponseV1Alpha;
use ts_contract::identity::Peer;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{Folders, Invitations, assert_code};
use ts_testkit::{TestCluster, as_gateway, redis_dump};

/// Whether reflection on `ch` (v1 and v1alpha) can describe `symbol`; both must agree.
async fn describes(ch: &Channel, symbol: &str) -> anyhow::Result<bool> {
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(RequestV1::FileContainingSymbol(symbol.into())),
    };
    let mut v1 = ClientV1::new(ch.clone()).server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
    // An unknown symbol comes back as a NOT_FOUND status (tonic) or an error response.
    let v1 = match v1.next().await.transpose() {
        Err(s) if s.code() == Code::NotFound => None,
        other => other?.and_then(|r| r.message_response),
    };
    let v1 = match v1 {
        None => false,
        Some(ResponseV1::FileDescriptorResponse(f)) => !f.file_descriptor_proto.is_empty(),
        Some(ResponseV1::ErrorResponse(_)) => false,
        other => anyhow::bail!("unexpected v1 reflection answer {other:?}"),
    };
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(RequestV1Alpha::FileContainingSymbol(symbol.into())),
    };
    let mut alpha =
        ClientV1Alpha::new(ch.clone()).server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
    // An unknown symbol comes back as a NOT_FOUND status (tonic) or an error response.
    let alpha = match alpha.next().await.transpose() {
        Err(s) if s.code() == Code::NotFound => None,
        other => other?.and_then(|r| r.message_response),
    };
    let alpha = match alpha {
        None => false,
        Some(ResponseV1Alpha::FileDescriptorResponse(f)) => !f.file_descriptor_proto.is_empty(),
        Some(ResponseV1Alpha::ErrorResponse(_)) => false,
        other => anyhow::bail!("unexpected v1alpha reflection answer {other:?}"),
    };
    assert_eq!(v1, alpha, "v1 and v1alpha disagree on {symbol}");
    Ok(v1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_never_describes_the_internal_api() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let gateway = cluster.gateway().await?;
    assert!(describes(&gateway, "teamshare.v1.ItemService").await?, "the public API is described");
    assert!(describes(&gateway, "teamshare.v1.Connection").await?);
    for internal in [
        "teamshare.internal.v1.KeyVaultService",
        "teamshare.internal.v1.FolderMembershipService",
        "teamshare.internal.v1.AddMemberRequest",
        "teamshare.internal.v1.GetDataKeyResponse",
        "teamshare.internal.v1.LicenseOperatorService",
    ] {
        assert!(!describes(&gateway, internal).await?, "the gateway describes {internal}");
    }
    // Behind mTLS, the internal ports still describe their own API for operators.
    let folders = cluster.internal(Service::Folders, Peer::Gateway).await?;
    assert!(describes(&folders, "teamshare.internal.v1.FolderMembershipService").await?);
    cluster.stop().await
}

fn refused(r: Result<impl std::fmt::Debug, tonic::Status>, field: &str) {
    let e = assert_code!(r, Code::InvalidArgument, &format!("{field} "));
    assert!(e.message().len() < 200, "the value is not echoed back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_ids_never_reach_a_store_a_cache_or_the_audit_trail() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Edge").await?;
    let marker = "zq".repeat(16);
    let huge = format!("{marker}{}", "x".repeat(1 << 20));
    let odd = [
        huge.as_str(),
        "../../etc",
        "0B8C5F7E-1A2B-4C3D-9E8F-001122334455",
        "0b8c5f7e-1a2b-4c3d-9e8f-00112233445\u{e9}",
    ];
    for bad in odd {
        let bad = bad.to_owned();
        let mut folders = FolderServiceClient::new(ch.clone());
        refused(folders.get_folder(alice.request(GetFolderRequest { folder_id: bad.clone() })).await, "folder_id");
        refused(
            folders
                .rename_folder(alice.request(RenameFolderRequest { folder_id: bad.clone(), name: "n".into() }))
                .await,
            "folder_id",
        );
        let mut items = ItemServiceClient::new(ch.clone());
        refused(
            items.get_item(alice.request(GetItemRequest { folder_id: folder_id.clone(), item_id: bad.clone() })).await,
            "item_id",
        );
        refused(
            items
                .move_item(alice.request(MoveItemRequest {
                    folder_id: folder_id.clone(),
                    item_id: folder_id.clone(),
                    expected_version: 1,
                    target_folder_id: bad.clone(),
                }))
                .await,
            "target_folder_id",
        );
        let mut members = MemberServiceClient::new(ch.clone());
        refused(
            members
                .update_member_access(alice.request(UpdateMemberAccessRequest {
                    folder_id: folder_id.clone(),
                    user_id: bad.clone(),
                    access: AccessLevel::View as i32,
                }))
                .await,
            "user_id",
        );
        let mut inv = InvitationServiceClient::new(ch.clone());
        refused(
            inv.accept_invitation(alice.request(AcceptInvitationRequest { invitation_id: bad.clone() })).await,
            "invitation_id",
        );
        refused(
            inv.create_invitation(alice.request(CreateInvitationRequest {
                folder_id: bad.clone(),
                invitee_email: "bob@example.com".into(),
                access: AccessLevel::View as i32,
                ..Default::default()
            }))
            .await,
            "folder_id",
        );
        // Straight at folders, as a compromised or buggy gateway would send it.
        let direct = FolderServiceClient::new(cluster.internal(Service::Folders, Peer::Gateway).await?)
            .get_folder(as_gateway(&alice, GetFolderRequest { folder_id: bad.clone() }))
            .await;
        refused(direct, "folder_id");
    }
    let db = cluster.database().await?;
    let events = db.collection::<bson::Document>("audit_events");
    let mut cursor = events.find(bson::doc! {}).await?;
    while let Some(event) = futures::TryStreamExt::try_next(&mut cursor).await? {
        let bytes = bson::to_vec(&event)?;
        assert!(bytes.len() < 4096, "an audit event of {} bytes", bytes.len());
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&marker) && !text.contains("../../etc"), "a malformed id reached the audit trail");
    }
    let servers = ts_testkit::shared()?;
    let redis = redis_dump(servers.redis.port)?;
    assert!(!redis.contains(&marker) && !redis.contains("../../etc"), "a malformed id reached Redis");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_invitations_spend_no_budget_and_a_team_of_20_fits_the_defaults() -> anyhow::Result<()> {
    // The shipped defaults, not a test's generous ones.
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let manager = cluster.sign_in("manager@example.com").await?;
    let folder_id = Folders::new(&ch, &manager).create("Edge").await?;
    for _ in 0..50 {
        let mut invitations = Invitations::new(&ch, &manager);
        let not_an_email = invitations.send_raw(&folder_id, "not an email", AccessLevel::View as i32).await;
        assert_code!(not_an_email, Code::InvalidArgument, "invitee_email ");
        let no_access = invitations.send_raw(&folder_id, "someone@example.com", 0).await;
        assert_code!(no_access, Code::InvalidArgument, "access ");
    }
    // None of that was charged: a team of 20, in one sitting, on a frozen clock.
    for i in 0..20 {
        Invitations::new(&ch, &manager)
            .send_raw(&folder_id, &format!("teammate{i}@example.com"), AccessLevel::Edit as i32)
            .await
            .map_err(|e| anyhow::anyhow!("teammate {i} refused: {e:?}"))?;
    }
    // A spammer is still stopped soon after.
    let spammer = cluster.sign_in("spammer@example.com").await?;
    let spam_folder = Folders::new(&ch, &spammer).create("Edge").await?;
    let mut sent = 0;
    let mut stopped = None;
    for i in 0..100 {
        match Invitations::new(&ch, &spammer)
            .send_raw(&spam_folder, &format!("victim{i}@example.org"), AccessLevel::View as i32)
            .await
        {
            Ok(_) => sent += 1,
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
    }
    let e = stopped.expect("the spammer was never stopped");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(sent <= 30, "{sent} invitations went out before the limit");
    cluster.stop().await
}

/// The folder's `items` counter and the items it holds.
async fn counted_and_held(cluster: &TestCluster, folder_id: &str) -> anyhow::Result<(i64, u64)> {
    let db = cluster.database().await?;
    let folder = db.collection::<bson::Document>("folders").find_one(bson::doc! { "_id": folder_id }).await?;
    let counted = folder.and_then(|f| f.get_i64("items").ok()).unwrap_or_default();
    let held = db.collection::<bson::Document>("items").count_documents(bson::doc! { "folder_id": folder_id }).await?;
    Ok((counted, held))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_cut_off_by_their_deadline_leak_no_item_slots() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let gateway = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let (from, to) =
        (Folders::new(&gateway, &alice).create("Edge").await?, Folders::new(&gateway, &alice).create("Edge").await?);
    // Straight at folders, as the gateway would call it, with deadlines from 1 to 30 ms: many
    // creates, moves and deletes are dropped half-way by the server when theirs passes.
    let direct = ItemServiceClient::new(cluster.internal(Service::Folders, Peer::Gateway).await?);
    let mut tasks = Vec::new();
    for round in 0..60u64 {
        let (mut items, alice, from, to) = (direct.clone(), alice.clone(), from.clone(), to.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = std::time::Duration::from_millis(1 + round % 30);
            let create = CreateItemRequest {
                folder_id: from.clone(),
                name: format!("item {round}"),
                description: String::new(),
                content: Some(ts_testkit::query_content("{}")),
                ..Default::default()
            };
            let mut request = as_gateway(&alice, create);
            request.set_timeout(deadline * 4);
            let Ok(created) = items.create_item(request).await else { return };
            let Some(id) = created.into_inner().item.and_then(|i| i.summary).map(|s| s.id) else { return };
            let mut request = if round % 2 == 0 {
                let moved = MoveItemRequest { folder_id: from, item_id: id, target_folder_id: to, expected_version: 1 };
                let mut r = as_gateway(&alice, moved);
                r.set_timeout(deadline);
                return drop(items.move_item(r).await);
            } else {
                as_gateway(&alice, DeleteItemRequest { folder_id: from, item_id: id, expected_version: 1 })
            };
            request.set_timeout(deadline);
            drop(items.delete_item(request).await);
        }));
    }
    for t in tasks {
        t.await?;
    }
    // Whatever was cut off where, each folder counts exactly the items it holds.
    for folder in [&from, &to] {
        let (counted, held) = counted_and_held(&cluster, folder).await?;
        assert_eq!(counted, i64::try_from(held)?, "folder {folder}: counter {counted}, items {held}");
    }
    cluster.stop().await
}

#[tokio::test]
async fn get_memberships_answers_in_order_and_names_the_field_of_a_bad_lookup() -> anyhow::Result<()> {
    use ts_proto::internal::folder_membership_service_client::FolderMembershipServiceClient;
    use ts_proto::internal::{GetMembershipRequest, GetMembershipsRequest};
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let folder_id = cluster.folders(&alice).await?.create("Batch").await?;
    let mut folders = FolderMembershipServiceClient::new(cluster.internal(Service::Folders, Peer::Invitations).await?);
    let lookup = |f: &str, u: &str| GetMembershipRequest { folder_id: f.into(), user_id: u.into() };

    // In order, a member and a non-member of the same folder; no MANAGE epoch leaks out.
    let lookups = vec![lookup(&folder_id, &alice.user_id), lookup(&folder_id, &bob.user_id)];
    let got = folders.get_memberships(GetMembershipsRequest { lookups }).await?.into_inner().memberships;
    let seen: Vec<_> = got.iter().map(|m| (m.access, m.folder_name.as_str(), m.folder_exists)).collect();
    assert_eq!(seen, [(AccessLevel::Manage as i32, "Batch", true), (AccessLevel::Unspecified as i32, "", true)]);
    assert!(got.iter().all(|m| m.manage_epoch.is_empty()), "a listing never carries MANAGE epochs");

    // Odd spellings of a real id, an empty one, and too many lookups are refused by field.
    for (bad_folder, bad_user, field) in [
        (folder_id.to_uppercase(), alice.user_id.clone(), "lookups.folder_id"),
        (folder_id.clone(), format!("{}%00", alice.user_id), "lookups.user_id"),
        (String::new(), alice.user_id.clone(), "lookups.folder_id"),
    ] {
        let lookups = vec![lookup(&folder_id, &alice.user_id), lookup(&bad_folder, &bad_user)];
        let refused = folders.get_memberships(GetMembershipsRequest { lookups }).await;
        assert_code!(refused, Code::InvalidArgument, field);
    }
    let lookups = vec![lookup(&folder_id, &alice.user_id); 501];
    assert_code!(folders.get_memberships(GetMembershipsRequest { lookups }).await, Code::InvalidArgument, "lookups");
    // Only invitations (and the gateway) may ask.
    let mut as_keyvault = FolderMembershipServiceClient::new(cluster.internal(Service::Folders, Peer::Keyvault).await?);
    let lookups = vec![lookup(&folder_id, &alice.user_id)];
    assert_code!(as_keyvault.get_memberships(GetMembershipsRequest { lookups }).await, Code::PermissionDenied);
    cluster.stop().await
}
