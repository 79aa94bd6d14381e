//! A person's rights, through the public API against real servers (PRIVACY.md): each
//! participant's export holds their part of a sharing story and nothing more; after an
//! erasure no MongoDB document, Redis key or value, or log line holds the email in any
//! letter case, nor any membership, session or invitation document the account id, while
//! the folders they shared into keep working under a pseudonym; the last manager is refused;
//! an operator erases an email that only appears in invitations and license lists; an
//! erasure interrupted part-way is completed; a concurrent accept or invitation cannot
//! bring back what was erased. Its own test binary: it captures every log line through the
//! global subscriber.

use std::time::Duration;

use futures::TryStreamExt;
use teamshare::Service;
use tonic::Code;
use ts_contract::identity::Peer;
use ts_proto::internal::privacy_operator_service_client::PrivacyOperatorServiceClient;
use ts_proto::internal::{
    BeginErasureRequest, EraseSubjectRequest, FinishErasureRequest, RunRetentionRequest, UpsertLicenseRequest,
};
use ts_proto::public::export_my_data_response::Part;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::privacy_service_client::PrivacyServiceClient;
use ts_proto::public::*;
use ts_testkit::{Session, TestCluster, assert_code, query_content};

mod attacks;

/// Every log line of every service in this binary, at every level.
pub(crate) fn logs() -> &'static ts_testkit::CapturedLogs {
    ts_testkit::capture_logs()
}

/// A cluster on a Redis of its own, which the test may stop and start again on its port.
pub(crate) async fn cluster_on_own_redis() -> anyhow::Result<(ts_testkit::ServerProcess, TestCluster)> {
    let redis = tokio::task::spawn_blocking(ts_testkit::ServerProcess::redis).await??;
    let port = redis.port;
    let cluster = TestCluster::start_with(|c| {
        c.redis = Some(ts_config::RedisConfig { url: format!("redis://127.0.0.1:{port}").into() });
    })
    .await?;
    Ok((redis, cluster))
}

/// Where `needle` occurs, in any letter case: MongoDB collections (raw BSON of every
/// document of the cluster's database), Redis (every key and value) and the logs.
pub(crate) async fn places_holding(cluster: &TestCluster, needle: &str) -> anyhow::Result<Vec<String>> {
    places_holding_with(cluster, ts_testkit::shared()?.redis.port, needle).await
}

/// As `places_holding`, for a cluster on its own Redis at `redis_port`.
pub(crate) async fn places_holding_with(
    cluster: &TestCluster,
    redis_port: u16,
    needle: &str,
) -> anyhow::Result<Vec<String>> {
    let needle = needle.to_ascii_lowercase();
    let mut found = Vec::new();
    let docs = ts_testkit::raw_documents(&cluster.database().await?).await?;
    for d in &docs {
        if ts_testkit::contains_bytes(&d.bytes.to_ascii_lowercase(), needle.as_bytes()) {
            found.push(format!("mongodb {}", d.collection));
        }
    }
    let redis = ts_testkit::redis_bytes(redis_port)?;
    if ts_testkit::contains_bytes(&redis.to_ascii_lowercase(), needle.as_bytes()) {
        found.push("redis".into());
    }
    let logged = logs().bytes().to_ascii_lowercase();
    if ts_testkit::contains_bytes(&logged, needle.as_bytes()) {
        found.push("logs".into());
    }
    found.dedup();
    Ok(found)
}

/// The collections where a document holds `user_id` among those that must not after an
/// erasure (memberships, sessions, invitations and the rest of the account's own).
async fn documents_holding_id(cluster: &TestCluster, user_id: &str) -> anyhow::Result<Vec<String>> {
    let docs = ts_testkit::raw_documents(&cluster.database().await?).await?;
    let mut found = ts_testkit::collections_containing(&docs, user_id.as_bytes());
    // The tombstone that keeps the id from ever being added to a folder again is the one
    // document meant to hold it; audit events keep no id either.
    found.retain(|c| c != "erased_users");
    Ok(found)
}

pub(crate) async fn export(cluster: &TestCluster, who: &Session) -> anyhow::Result<Vec<Part>> {
    let mut client = PrivacyServiceClient::new(cluster.gateway().await?);
    let stream = client.export_my_data(who.request(ExportMyDataRequest {})).await?.into_inner();
    let parts: Vec<ExportMyDataResponse> = stream.try_collect().await?;
    Ok(parts.into_iter().filter_map(|p| p.part).collect())
}

pub(crate) async fn delete_account(
    cluster: &TestCluster,
    who: &Session,
    confirm: &str,
) -> Result<DeleteMyAccountResponse, tonic::Status> {
    let mut client =
        PrivacyServiceClient::new(cluster.gateway().await.map_err(|e| tonic::Status::internal(e.to_string()))?);
    client
        .delete_my_account(who.request(DeleteMyAccountRequest { confirm_email: confirm.into() }))
        .await
        .map(|r| r.into_inner())
}

pub(crate) async fn privacy_operator(
    cluster: &TestCluster,
) -> anyhow::Result<PrivacyOperatorServiceClient<tonic::transport::Channel>> {
    Ok(PrivacyOperatorServiceClient::new(cluster.internal(Service::Auth, Peer::Operator).await?))
}

async fn update_item(
    cluster: &TestCluster,
    who: &Session,
    folder_id: &str,
    item_id: &str,
    version: u64,
) -> anyhow::Result<()> {
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    items
        .update_item(who.request(UpdateItemRequest {
            folder_id: folder_id.into(),
            item_id: item_id.into(),
            expected_version: version,
            name: "Orders (edited)".into(),
            description: "edited".into(),
            content: Some(query_content("{\"edited\": true}")),
        }))
        .await?;
    Ok(())
}

async fn list_items(cluster: &TestCluster, who: &Session, folder_id: &str) -> Result<Vec<ItemSummary>, tonic::Status> {
    let mut items =
        ItemServiceClient::new(cluster.gateway().await.map_err(|e| tonic::Status::internal(e.to_string()))?);
    let reply = items.list_items(who.request(ListItemsRequest { folder_id: folder_id.into(), page: None })).await?;
    Ok(reply.into_inner().items)
}

/// A story: alice manages "Team" with bob (EDIT); both share items and bob edits alice's;
/// bob alone has "Bob's own"; alice invited dave (never signed up); carol invited bob to
/// her folder (pending); bob invited erin to his own folder (pending).
struct Story {
    alice: Session,
    bob: Session,
    carol: Session,
    team: String,
    own: String,
    alice_item: String,
    bob_item: String,
}

async fn story(cluster: &TestCluster, tag: &str) -> anyhow::Result<Story> {
    let email = |name: &str| format!("{name}.{tag}@example.com");
    let alice = cluster.sign_in(&email("alice")).await?;
    let bob = cluster.sign_in(&email("bob")).await?;
    let carol = cluster.sign_in(&email("carol")).await?;
    let team = cluster.folders(&alice).await?.create("Team").await?;
    let invitation = cluster.invitations(&alice).await?.send(&team, &bob.email, AccessLevel::Edit).await?;
    cluster.invitations(&bob).await?.accept(&invitation.id).await?;
    cluster.invitations(&alice).await?.send(&team, &email("dave"), AccessLevel::View).await?;
    let alice_item = cluster.items(&alice).await?.create(&team, "Orders", query_content("{}")).await?;
    let alice_item = alice_item.item.and_then(|i| i.summary).expect("summary").id;
    let bob_item = cluster.items(&bob).await?.create(&team, "Bob's query", query_content("{\"b\": 1}")).await?;
    let bob_item = bob_item.item.and_then(|i| i.summary).expect("summary").id;
    update_item(cluster, &bob, &team, &alice_item, 1).await?;
    let own = cluster.folders(&bob).await?.create("Bob's own").await?;
    cluster.items(&bob).await?.create(&own, "Private", query_content("{\"p\": 1}")).await?;
    cluster.invitations(&bob).await?.send(&own, &email("erin"), AccessLevel::View).await?;
    let carols = cluster.folders(&carol).await?.create("Carol's").await?;
    cluster.invitations(&carol).await?.send(&carols, &bob.email, AccessLevel::View).await?;
    Ok(Story { alice, bob, carol, team, own, alice_item, bob_item })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_participants_export_holds_their_part_and_nothing_more() -> anyhow::Result<()> {
    logs();
    let cluster = TestCluster::start().await?;
    let s = story(&cluster, "exp").await?;

    let parts = export(&cluster, &s.bob).await?;
    assert!(matches!(parts.first(), Some(Part::Account(_))), "the account comes first");
    assert!(matches!(parts.last(), Some(Part::Summary(_))), "the summary comes last");
    let Some(Part::Account(account)) = parts.first() else { unreachable!() };
    let user = account.user.as_ref().expect("user");
    assert_eq!(
        (user.email.as_str(), user.id.as_str(), user.email_verified),
        (s.bob.email.as_str(), s.bob.user_id.as_str(), true)
    );
    assert!(account.create_time.is_some() && account.verify_time.is_some());

    let memberships: Vec<_> =
        parts.iter().filter_map(|p| if let Part::Membership(m) = p { Some(m) } else { None }).collect();
    let mut folders: Vec<_> = memberships.iter().map(|m| (m.folder_name.as_str(), m.access)).collect();
    folders.sort();
    assert_eq!(folders, [("Bob's own", AccessLevel::Manage as i32), ("Team", AccessLevel::Edit as i32)]);
    assert!(memberships.iter().any(|m| m.folder_id == s.own && m.created_by_caller));

    let invitations: Vec<_> =
        parts.iter().filter_map(|p| if let Part::Invitation(i) = p { Some(i) } else { None }).collect();
    let received: Vec<_> = invitations
        .iter()
        .filter(|i| i.direction == InvitationDirection::Received as i32)
        .filter_map(|i| i.invitation.as_ref())
        .map(|i| i.inviter_email.as_str())
        .collect();
    let mut received = received;
    received.sort();
    assert_eq!(received, [s.alice.email.as_str(), s.carol.email.as_str()], "both invitations bob received");
    let sent: Vec<_> = invitations
        .iter()
        .filter(|i| i.direction == InvitationDirection::Sent as i32)
        .filter_map(|i| i.invitation.as_ref())
        .map(|i| i.invitee_email.as_str())
        .collect();
    assert_eq!(sent, ["erin.exp@example.com"]);

    let items: Vec<_> = parts.iter().filter_map(|p| if let Part::Item(i) = p { Some(i) } else { None }).collect();
    let by_id =
        |id: &str| items.iter().find(|i| i.item.as_ref().and_then(|i| i.summary.as_ref()).is_some_and(|s| s.id == id));
    let edited = by_id(&s.alice_item).expect("the item bob edited last");
    assert!(!edited.shared_by_caller && edited.last_edited_by_caller);
    assert_eq!(edited.item.as_ref().map(|i| i.description.as_str()), Some("edited"), "decrypted whole");
    let shared = by_id(&s.bob_item).expect("the item bob shared");
    assert!(shared.shared_by_caller && shared.last_edited_by_caller);
    assert_eq!(items.len(), 3, "bob's two in Team and his private one: {items:?}");

    let sessions: Vec<_> = parts.iter().filter_map(|p| if let Part::Session(x) = p { Some(x) } else { None }).collect();
    assert_eq!(sessions.iter().filter(|x| x.current).count(), 1, "the export's own session is marked");
    let events: Vec<_> =
        parts.iter().filter_map(|p| if let Part::AuditEvent(e) = p { Some(e) } else { None }).collect();
    assert!(events.iter().any(|e| e.action == "item.create"), "bob's own actions: {events:?}");
    assert!(events.iter().all(|e| e.actor_email == s.bob.email), "only bob's events");

    let Some(Part::Summary(summary)) = parts.last() else { unreachable!() };
    assert_eq!(
        (summary.memberships, summary.invitations, summary.items, summary.sessions, summary.audit_events),
        (2, 3, 3, sessions.len() as u32, events.len() as u32)
    );
    // Nothing about people bob cannot see as a member: not dave, invited by alice to Team.
    let text = format!("{parts:?}");
    assert!(!text.contains("dave.exp"), "bob's export shows an invitation he cannot see");
    assert!(!text.contains(&s.carol.user_id) && !text.contains(&s.alice.user_id), "no one else's account id");

    // Alice's: her sent invitations (bob, accepted; dave, pending), no items (bob edited hers last? she shared it).
    let parts = export(&cluster, &s.alice).await?;
    let text = format!("{parts:?}");
    assert!(text.contains("dave.exp@example.com"), "alice sees the invitation she sent");
    assert!(
        !text.contains("erin.exp") && !text.contains("Bob's own") && !text.contains("Private"),
        "nothing of bob's own folder"
    );
    let items = parts.iter().filter(|p| matches!(p, Part::Item(_))).count();
    assert_eq!(items, 1, "the item alice shared (bob edited it)");

    // The export is itself audited.
    let db = cluster.database().await?;
    let audited = ts_testkit::eventually("the export is audited", || {
        let db = db.clone();
        let email = s.alice.email.clone();
        async move {
            let found = db
                .collection::<bson::Document>("audit_events")
                .find_one(bson::doc! { "action": "privacy.export", "actor_email": email })
                .await?;
            Ok(found)
        }
    })
    .await?;
    assert_eq!(audited.get_str("status_code")?, "OK");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_account_leaves_no_trace_and_its_folders_keep_working() -> anyhow::Result<()> {
    logs();
    let cluster = TestCluster::start().await?;
    let s = story(&cluster, "del").await?;
    // Bob's email in a license's list and as its admin; a failed sign-in under his address.
    let mut licenses = cluster.license_operator().await?;
    licenses
        .upsert_license(UpsertLicenseRequest {
            license_id: "acme-del".into(),
            admin_emails: vec![s.bob.email.clone()],
            emails: vec![s.bob.email.clone(), s.alice.email.clone()],
            domains: vec![],
        })
        .await?;
    let mut auth = ts_proto::public::auth_service_client::AuthServiceClient::new(cluster.gateway().await?);
    auth.start_email_verification(StartEmailVerificationRequest { email: s.bob.email.to_uppercase() }).await?;
    let wrong = auth
        .complete_email_verification(CompleteEmailVerificationRequest {
            email: s.bob.email.clone(),
            code: "000000".into(),
        })
        .await;
    assert!(wrong.is_err());
    let before = places_holding(&cluster, &s.bob.email).await?;
    assert!(before.iter().any(|p| p == "mongodb audit_events"), "the scan sees the trail: {before:?}");

    // Confirmation in another letter case is the same address.
    let erased = delete_account(&cluster, &s.bob, &s.bob.email.to_uppercase()).await?;
    assert!(erased.pseudonym.starts_with("erased-"), "{erased:?}");
    assert_eq!(erased.deleted_folder_ids, [s.own.as_str()], "the folder bob alone was in");
    assert_eq!(erased.memberships_removed, 1, "Team");

    // Background effects (the erasure's own audit event) land first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = places_holding(&cluster, &s.bob.email).await?;
    assert!(found.is_empty(), "bob's email is still in {found:?}");
    let found = documents_holding_id(&cluster, &s.bob.user_id).await?;
    assert!(found.is_empty(), "bob's account id is still in {found:?}");

    // Team still lists bob's items, attributed to the pseudonym; alice's access is untouched.
    let items = list_items(&cluster, &s.alice, &s.team).await?;
    let bobs = items.iter().find(|i| i.id == s.bob_item).expect("bob's item stays");
    assert_eq!(bobs.shared_by_email, erased.pseudonym);
    let edited = items.iter().find(|i| i.id == s.alice_item).expect("alice's item");
    assert_eq!(
        (edited.shared_by_email.as_str(), edited.updated_by_email.as_str()),
        (s.alice.email.as_str(), erased.pseudonym.as_str())
    );
    let mut members = MemberServiceClient::new(cluster.gateway().await?);
    let listed =
        members.list_members(s.alice.request(ListMembersRequest { folder_id: s.team.clone(), page: None })).await?;
    let emails: Vec<_> = listed.into_inner().members.into_iter().map(|m| m.email).collect();
    assert_eq!(emails, [s.alice.email.as_str()]);
    update_item(&cluster, &s.alice, &s.team, &s.bob_item, 1).await?;
    // Bob's own folder is gone with its keys; his tokens are dead.
    assert_code!(list_items(&cluster, &s.alice, &s.own).await, Code::NotFound);
    let keys = cluster.database().await?.collection::<bson::Document>("data_keys");
    let live = keys.count_documents(bson::doc! { "folder_id": &s.own, "destroyed": { "$ne": true } }).await?;
    assert_eq!(live, 0, "bob's own folder's data keys are destroyed");
    assert_code!(list_items(&cluster, &s.bob, &s.team).await, Code::Unauthenticated);
    assert!(auth.refresh_session(RefreshSessionRequest { refresh_token: s.bob.refresh.clone() }).await.is_err());

    // The pseudonym is stable: an operator's erasure of the same address finds it done.
    let again = privacy_operator(&cluster)
        .await?
        .erase_subject(EraseSubjectRequest { email: s.bob.email.clone(), hand_over_management: false })
        .await?
        .into_inner();
    assert_eq!(again.pseudonym, erased.pseudonym);
    assert!(again.had_account, "the record says the address had an account");
    assert_eq!(again.memberships_removed, 0, "nothing left to remove");
    // One person's history still reads as one person.
    let events = cluster.database().await?.collection::<bson::Document>("audit_events");
    let by_pseudonym = events.count_documents(bson::doc! { "actor_email": &erased.pseudonym }).await?;
    assert!(by_pseudonym >= 3, "bob's events kept under his pseudonym: {by_pseudonym}");
    let found = places_holding(&cluster, &s.bob.email).await?;
    assert!(found.is_empty(), "bob's email came back in {found:?}");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_manager_is_refused_naming_the_folders() -> anyhow::Result<()> {
    use tonic_types::StatusExt;
    logs();
    let cluster = TestCluster::start().await?;
    let s = story(&cluster, "lm").await?;
    assert_code!(delete_account(&cluster, &s.alice, &s.bob.email).await, Code::InvalidArgument, "confirm_email");
    let refused = assert_code!(delete_account(&cluster, &s.alice, &s.alice.email).await, Code::FailedPrecondition);
    assert_eq!(ts_contract::status::reason_of(&refused).as_deref(), Some("LAST_MANAGER"));
    let details = refused.get_error_details();
    let violations = details.precondition_failure().map(|p| p.violations.clone()).unwrap_or_default();
    let subjects: Vec<_> = violations.iter().map(|v| v.subject.as_str()).collect();
    assert_eq!(subjects, [format!("folders/{}", s.team).as_str()], "{refused:?}");
    assert!(violations[0].description.contains("Team"), "the folder's name: {violations:?}");
    // Nothing changed: alice is still a manager, her session works.
    assert_eq!(list_items(&cluster, &s.alice, &s.team).await?.len(), 2);

    // Management handed over: the erasure goes through.
    let mut members = MemberServiceClient::new(cluster.gateway().await?);
    members
        .update_member_access(s.alice.request(UpdateMemberAccessRequest {
            folder_id: s.team.clone(),
            user_id: s.bob.user_id.clone(),
            access: AccessLevel::Manage as i32,
        }))
        .await?;
    let erased = delete_account(&cluster, &s.alice, &s.alice.email).await?;
    assert_eq!(erased.memberships_removed, 1);
    assert_eq!(list_items(&cluster, &s.bob, &s.team).await?.len(), 2, "bob keeps the folder");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_erases_an_email_that_only_appears_in_invitations_and_license_lists() -> anyhow::Result<()> {
    logs();
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice.op@example.com").await?;
    let folder = cluster.folders(&alice).await?.create("Ops").await?;
    let zed = "Zed.Op@Example.com";
    cluster.invitations(&alice).await?.send(&folder, zed, AccessLevel::View).await?;
    let mut licenses = cluster.license_operator().await?;
    licenses
        .upsert_license(UpsertLicenseRequest {
            license_id: "acme-op".into(),
            admin_emails: vec![alice.email.clone()],
            emails: vec!["zed.op@example.com".into()],
            domains: vec![],
        })
        .await?;
    assert!(!places_holding(&cluster, zed).await?.is_empty(), "the scan sees zed");
    let erased = privacy_operator(&cluster)
        .await?
        .erase_subject(EraseSubjectRequest { email: zed.into(), hand_over_management: false })
        .await?
        .into_inner();
    assert!(!erased.had_account);
    assert_eq!((erased.invitations_removed, erased.license_lists), (1, 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = places_holding(&cluster, zed).await?;
    assert!(found.is_empty(), "zed's email is still in {found:?}");
    // Alice's folder and license are untouched otherwise; zed can be invited again later.
    cluster.invitations(&alice).await?.send(&folder, zed, AccessLevel::View).await?;
    let mut operator = privacy_operator(&cluster).await?;
    assert_code!(
        operator.erase_subject(EraseSubjectRequest { email: "not an email".into(), hand_over_management: false }).await,
        Code::InvalidArgument,
        "email"
    );
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_interrupted_part_way_is_completed() -> anyhow::Result<()> {
    logs();
    // Its own Redis, stopped in the middle: the sessions' revocations cannot be published,
    // so the erasure stops after invitations and folders did their part, before the account
    // is deleted (deleting sessions whose revocation Redis lacks would let a token live on).
    let (mut redis, cluster) = cluster_on_own_redis().await?;
    let port = redis.port;
    let s = story(&cluster, "int").await?;
    tokio::task::spawn_blocking(move || redis.stop()).await?;
    let interrupted = delete_account(&cluster, &s.bob, &s.bob.email).await;
    assert_code!(interrupted, Code::Unavailable);
    let db = cluster.database().await?;
    let job =
        db.collection::<bson::Document>("erasures").find_one(bson::doc! {}).await?.expect("the erasure is recorded");
    assert_eq!(job.get_str("state")?, "running");
    assert!(!documents_holding_id(&cluster, &s.bob.user_id).await?.is_empty(), "part-way: the account is still there");

    // Redis back (a new one on the same port), and the retention job's run completes it.
    let _redis = tokio::task::spawn_blocking(move || ts_testkit::ServerProcess::redis_on(port)).await??;
    let mut operator = privacy_operator(&cluster).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        // Past the time a live run could still be at it, so the run takes the erasure up.
        cluster.clock.advance(Duration::from_secs(700));
        match operator.run_retention(RunRetentionRequest {}).await.map(|r| r.into_inner()) {
            Ok(r) if r.erasures_completed == 1 => break r,
            other => anyhow::ensure!(tokio::time::Instant::now() < deadline, "not completed: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(report.erasures_completed, 1);
    let job = db.collection::<bson::Document>("erasures").find_one(bson::doc! {}).await?.expect("kept");
    assert_eq!(job.get_str("state")?, "done");
    assert!(!job.contains_key("email") && !job.contains_key("user_id"), "a finished erasure keeps no email: {job:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = places_holding_with(&cluster, port, &s.bob.email).await?;
    assert!(found.is_empty(), "bob's email is still in {found:?}");
    assert!(documents_holding_id(&cluster, &s.bob.user_id).await?.is_empty());
    let again = operator.run_retention(RunRetentionRequest {}).await?.into_inner();
    assert_eq!(again.erasures_completed, 0, "nothing left to complete");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_accept_or_invitation_cannot_bring_back_what_was_erased() -> anyhow::Result<()> {
    logs();
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice.race@example.com").await?;
    let bob = cluster.sign_in("bob.race@example.com").await?;
    let mut pending = Vec::new();
    for i in 0..6 {
        let folder = cluster.folders(&alice).await?.create(&format!("Race {i}")).await?;
        pending.push(cluster.invitations(&alice).await?.send(&folder, &bob.email, AccessLevel::View).await?.id);
    }
    // Bob accepts every invitation while his account is erased.
    let accepts = {
        let invitations = cluster.invitations(&bob).await?;
        let pending = pending.clone();
        tokio::spawn(async move {
            let mut accepted = 0;
            for id in pending {
                accepted += u32::from(invitations.clone().accept(&id).await.is_ok());
            }
            accepted
        })
    };
    let erased = delete_account(&cluster, &bob, &bob.email).await?;
    let _ = accepts.await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let found = documents_holding_id(&cluster, &bob.user_id).await?;
    assert!(found.is_empty(), "an accept brought bob's account back into {found:?}");
    let found = places_holding(&cluster, &bob.email).await?;
    assert!(found.is_empty(), "bob's email is in {found:?}");
    assert!(!erased.pseudonym.is_empty());

    // While an erasure of an address runs, nobody can invite it; afterwards they can again.
    let carol_email = "carol.race@example.com";
    let folder = cluster.folders(&alice).await?.create("After").await?;
    let mut invitations_as_auth =
        ts_proto::internal::invitation_privacy_service_client::InvitationPrivacyServiceClient::new(
            cluster.internal(Service::Invitations, Peer::Auth).await?,
        );
    let pseudonym = "erased-00000000000000000000";
    let running =
        BeginErasureRequest { user_id: String::new(), email: carol_email.into(), pseudonym: pseudonym.into() };
    invitations_as_auth.begin_erasure(running).await?;
    assert_code!(
        cluster.invitations(&alice).await?.send(&folder, carol_email, AccessLevel::View).await,
        Code::FailedPrecondition
    );
    let done = FinishErasureRequest { user_id: String::new(), email: carol_email.into(), pseudonym: pseudonym.into() };
    invitations_as_auth.finish_erasure(done).await?;
    cluster.invitations(&alice).await?.send(&folder, carol_email, AccessLevel::View).await?;
    cluster.stop().await
}
