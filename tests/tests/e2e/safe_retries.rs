//! Safe retries through the public gateway: AIP-155 `request_id` on CreateFolder, CreateItem
//! and CreateInvitation (a retry makes nothing twice: no second folder, member, data key, item,
//! invitation or email; a reused id is refused; concurrent and cut-short first attempts), the
//! refresh-token retry window (a lost RefreshSession answer can be asked for again, a replay
//! cannot), and the `google.rpc` error details every public error carries (a stable ErrorInfo
//! reason in the "teamshare.dev" domain, RetryInfo, BadRequest naming the field, and nothing
//! internal).

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use ts_config::Config;
use ts_contract::status::{reason_of, retry_delay};
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::license_admin_service_client::LicenseAdminServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{Folders, Invitations, Session, TestCluster, as_gateway, bearer, query_content};

/// A fresh client-chosen request id, as AIP-155 asks for: a lowercase canonical UUID.
/// One of several concurrent attempts: its answer, or its refusal's code and reason.
type Outcome<T> = Result<T, (Code, Option<String>)>;

/// Starts every attempt at once and reads each one's outcome.
async fn race<T, F>(attempts: Vec<F>) -> anyhow::Result<Vec<Outcome<T>>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, Status>> + Send + 'static,
{
    let running: Vec<_> = attempts
        .into_iter()
        .map(|attempt| tokio::spawn(async move { attempt.await.map_err(|s| (s.code(), reason_of(&s))) }))
        .collect();
    Ok(futures::future::try_join_all(running).await?)
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Asserts that `status` has `code` and a `google.rpc.ErrorInfo` of domain "teamshare.dev"
/// whose reason is `reason`, one of the public `ErrorReason` names.
#[track_caller]
fn assert_reason(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "teamshare.dev", "{status:?}");
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(reason_of(status).as_deref(), Some(reason));
    assert!(
        ErrorReason::from_str_name(&format!("ERROR_REASON_{reason}")).is_some(),
        "{reason} is not a name of the public ErrorReason enum"
    );
}

/// Asserts that `status` is INVALID_ARGUMENT (reason INVALID_FIELD) with a `BadRequest` field
/// violation naming `field`.
#[track_caller]
fn assert_bad_field(status: &Status, field: &str) {
    assert_reason(status, Code::InvalidArgument, "INVALID_FIELD");
    let bad = status.get_details_bad_request().unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    assert!(
        bad.field_violations.iter().any(|v| v.field == field),
        "{field} is not named by the BadRequest of {status:?}: {:?}",
        bad.field_violations
    );
}

/// Generous send rates, so that only the tests about them meet them.
fn generous_send_limits(c: &mut Config) {
    c.invitation_limits.inviter_burst = 1000;
    c.invitation_limits.per_inviter_per_minute = 60_000;
    c.invitation_limits.license_burst = 1000;
    c.invitation_limits.per_license_per_minute = 60_000;
}

fn create_folder_request(s: &Session, name: &str, request_id: &str) -> tonic::Request<CreateFolderRequest> {
    s.request(CreateFolderRequest { name: name.into(), request_id: request_id.into() })
}

async fn create_folder(ch: &Channel, s: &Session, name: &str, request_id: &str) -> Result<Folder, Status> {
    let reply = FolderServiceClient::new(ch.clone()).create_folder(create_folder_request(s, name, request_id)).await?;
    reply.into_inner().folder.ok_or_else(|| Status::internal("CreateFolder answered without a folder"))
}

fn create_item_request(
    s: &Session,
    folder_id: &str,
    name: &str,
    request_id: &str,
) -> tonic::Request<CreateItemRequest> {
    s.request(CreateItemRequest {
        folder_id: folder_id.into(),
        name: name.into(),
        description: "asked for twice".into(),
        content: Some(query_content(r#"{"status": "open"}"#)),
        request_id: request_id.into(),
    })
}

async fn create_item(
    ch: &Channel,
    s: &Session,
    folder_id: &str,
    name: &str,
    request_id: &str,
) -> Result<ItemSummary, Status> {
    let reply =
        ItemServiceClient::new(ch.clone()).create_item(create_item_request(s, folder_id, name, request_id)).await?;
    let item = reply.into_inner().item.and_then(|i| i.summary);
    item.ok_or_else(|| Status::internal("CreateItem answered without an item"))
}

fn create_invitation_request(
    s: &Session,
    folder_id: &str,
    email: &str,
    access: AccessLevel,
    request_id: &str,
) -> tonic::Request<CreateInvitationRequest> {
    s.request(CreateInvitationRequest {
        folder_id: folder_id.into(),
        invitee_email: email.into(),
        access: access as i32,
        request_id: request_id.into(),
    })
}

async fn create_invitation(
    ch: &Channel,
    s: &Session,
    folder_id: &str,
    email: &str,
    access: AccessLevel,
    request_id: &str,
) -> Result<Invitation, Status> {
    let request = create_invitation_request(s, folder_id, email, access, request_id);
    let reply = InvitationServiceClient::new(ch.clone()).create_invitation(request).await?;
    reply.into_inner().invitation.ok_or_else(|| Status::internal("CreateInvitation answered without an invitation"))
}

/// Documents of `collection` matching `filter`, in the cluster's database.
async fn count(db: &mongodb::Database, collection: &str, filter: bson::Document) -> anyhow::Result<u64> {
    Ok(db.collection::<bson::Document>(collection).count_documents(filter).await?)
}

/// The item count a folder's document keeps (raised by each item-slot transaction).
async fn folder_item_count(db: &mongodb::Database, folder_id: &str) -> anyhow::Result<i64> {
    let folder = db
        .collection::<bson::Document>("folders")
        .find_one(bson::doc! { "_id": folder_id })
        .await?
        .context("the folder document")?;
    match folder.get("items") {
        Some(bson::Bson::Int64(n)) => Ok(*n),
        Some(bson::Bson::Int32(n)) => Ok(i64::from(*n)),
        other => anyhow::bail!("the folder's item count is {other:?}"),
    }
}

/// Messages the development mailer sent to `email`.
fn mails_to(cluster: &TestCluster, email: &str) -> usize {
    ts_mail::FileMailer::read(&cluster.mail_dir, email).len()
}

/// Sends `request` so that its answer is lost, as a client that never heard back: on even
/// rungs with a client deadline of `ms` (the gateway and the service give up on it), on odd
/// rungs by hanging up after `ms` (the call is cancelled). Whatever happened is ignored.
async fn lose_the_answer<T, R, F, Fut>(rung: usize, ms: u64, mut request: tonic::Request<T>, call: F)
where
    F: FnOnce(tonic::Request<T>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, Status>>,
{
    let wait = Duration::from_millis(ms);
    if rung.is_multiple_of(2) {
        request.set_timeout(wait);
        let _ = call(request).await;
    } else {
        let _ = tokio::time::timeout(wait, call(request)).await;
    }
}

/// Deadlines (ms) that cut a first attempt short at different points of its work.
const CUTS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Asks `attempt` again while it answers ABORTED with reason CONTENTION ("a create with this
/// request_id is in progress; retry"), as a client does, for at most the harness's
/// `eventually` deadline; any other error fails.
async fn settled<T, F, Fut>(what: &str, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    ts_testkit::eventually(what, || {
        let answer = attempt();
        async move {
            match answer.await {
                Ok(v) => Ok(Some(v)),
                Err(s) if s.code() == Code::Aborted && reason_of(&s).as_deref() == Some("CONTENTION") => Ok(None),
                Err(s) => Err(anyhow::anyhow!("{what}: {s:?}")),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------
// AIP-155 request_id on creates
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_retried_create_folder_returns_the_same_folder_with_one_member_and_one_data_key() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let db = cluster.database().await?;
    let rid = new_request_id();
    let first = create_folder(&ch, &alice, "Retried reporting", &rid).await?;
    let again = create_folder(&ch, &alice, "Retried reporting", &rid).await?;
    let third = create_folder(&ch, &alice, "Retried reporting", &rid).await?;
    assert_eq!((again.id.as_str(), third.id.as_str()), (first.id.as_str(), first.id.as_str()));
    assert_eq!((again.name.as_str(), again.my_access), ("Retried reporting", AccessLevel::Manage as i32));

    assert_eq!(count(&db, "folders", bson::doc! {}).await?, 1, "one folder");
    assert_eq!(count(&db, "members", bson::doc! { "folder_id": &first.id }).await?, 1, "one member");
    assert_eq!(count(&db, "data_keys", bson::doc! { "folder_id": &first.id }).await?, 1, "one data key");
    assert_eq!(count(&db, "data_keys", bson::doc! {}).await?, 1, "no stray data key");
    let listed = FolderServiceClient::new(ch.clone())
        .list_folders(alice.request(ListFoldersRequest::default()))
        .await?
        .into_inner()
        .folders;
    assert_eq!(listed.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), [first.id.as_str()]);

    // The control: without a request_id, two calls are two folders.
    Folders::new(&ch, &alice).create("Retried reporting").await?;
    Folders::new(&ch, &alice).create("Retried reporting").await?;
    assert_eq!(count(&db, "folders", bson::doc! {}).await?, 3);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_folders_with_one_request_id_make_exactly_one_folder() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let rid = new_request_id();
    // Each create is its own task over its own connection, on a multi-threaded runtime that
    // also runs the services: the duplicates really race.
    let mut attempts = Vec::new();
    for _ in 0..8 {
        let mut folders = FolderServiceClient::new(cluster.gateway().await?);
        let request = create_folder_request(&alice, "Raced", &rid);
        attempts.push(async move {
            folders.create_folder(request).await.map(|r| r.into_inner().folder.map(|f| f.id).unwrap_or_default())
        });
    }
    let results = race(attempts).await?;
    let ids: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(!ids.is_empty(), "no attempt succeeded: {results:?}");
    assert!(ids.iter().all(|id| !id.is_empty() && *id == ids[0]), "different answers: {results:?}");
    assert!(
        results.iter().all(|r| match r {
            Ok(_) => true,
            Err((code, reason)) => *code == Code::Aborted && reason.as_deref() == Some("CONTENTION"),
        }),
        "only ABORTED (CONTENTION) may refuse a duplicate: {results:?}"
    );

    let db = cluster.database().await?;
    assert_eq!(count(&db, "folders", bson::doc! {}).await?, 1, "{results:?}");
    assert_eq!(count(&db, "members", bson::doc! { "folder_id": ids[0].as_str() }).await?, 1);
    assert_eq!(count(&db, "data_keys", bson::doc! {}).await?, 1, "one data key, for that one folder");
    assert_eq!(count(&db, "data_keys", bson::doc! { "folder_id": ids[0].as_str() }).await?, 1);
    // Once the race is over, the same request answers the same folder.
    let ch = cluster.gateway().await?;
    assert_eq!(&create_folder(&ch, &alice, "Raced", &rid).await?.id, ids[0]);
    cluster.stop().await
}

#[tokio::test]
async fn a_request_id_reused_with_another_name_is_already_exists_request_id_reused() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let rid = new_request_id();
    let made = create_folder(&ch, &alice, "Quarterly", &rid).await?;
    let err = create_folder(&ch, &alice, "Annual", &rid).await.expect_err("another request under a used request_id");
    assert_reason(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");

    let db = cluster.database().await?;
    assert_eq!(count(&db, "folders", bson::doc! {}).await?, 1, "nothing more was made");
    assert_eq!(count(&db, "data_keys", bson::doc! {}).await?, 1);
    let kept = FolderServiceClient::new(ch.clone())
        .get_folder(alice.request(GetFolderRequest { folder_id: made.id.clone() }))
        .await?
        .into_inner()
        .folder
        .context("folder")?;
    assert_eq!(kept.name, "Quarterly", "the refused request changed nothing");
    // The original request still retries to the folder it made.
    assert_eq!(create_folder(&ch, &alice, "Quarterly", &rid).await?.id, made.id);
    cluster.stop().await
}

#[tokio::test]
async fn two_users_with_the_same_request_id_get_two_folders_of_their_own() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let rid = new_request_id();
    let alices = create_folder(&ch, &alice, "Same name", &rid).await?;
    let bobs = create_folder(&ch, &bob, "Same name", &rid).await?;
    assert_ne!(alices.id, bobs.id, "a request id names a request of one user only");
    // Each retry finds the caller's own folder, never the other's.
    assert_eq!(create_folder(&ch, &bob, "Same name", &rid).await?.id, bobs.id);
    assert_eq!(create_folder(&ch, &alice, "Same name", &rid).await?.id, alices.id);
    // A third user, same request id, another name: a folder of her own, not REQUEST_ID_REUSED
    // (which would tell her that someone else used that id).
    let carol = cluster.sign_in("carol@example.com").await?;
    let carols = create_folder(&ch, &carol, "Something else", &rid).await?;
    assert!(carols.id != alices.id && carols.id != bobs.id);

    let err = FolderServiceClient::new(ch.clone())
        .get_folder(bob.request(GetFolderRequest { folder_id: alices.id.clone() }))
        .await
        .expect_err("bob is not in alice's folder");
    assert_reason(&err, Code::NotFound, "FOLDER_NOT_FOUND");
    let db = cluster.database().await?;
    assert_eq!(count(&db, "folders", bson::doc! {}).await?, 3);
    assert_eq!(count(&db, "members", bson::doc! { "folder_id": &alices.id }).await?, 1);
    assert_eq!(count(&db, "members", bson::doc! { "folder_id": &alices.id, "user_id": &alice.user_id }).await?, 1);
    assert_eq!(count(&db, "members", bson::doc! { "folder_id": &bobs.id, "user_id": &bob.user_id }).await?, 1);
    cluster.stop().await
}

#[tokio::test]
async fn a_malformed_request_id_is_invalid_argument_naming_request_id_and_makes_nothing() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(generous_send_limits).await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Inputs").await?;
    let u = uuid::Uuid::new_v4();
    let malformed = [
        ("three letters", "abc".to_owned()),
        ("uppercase", u.to_string().to_uppercase()),
        ("braces", format!("{{{u}}}")),
        ("no hyphens", u.simple().to_string()),
        ("urn", u.urn().to_string()),
        ("trailing space", format!("{u} ")),
        ("only spaces", "   ".to_owned()),
        ("ten kilobytes", "a".repeat(10_000)),
    ];
    for (what, raw) in &malformed {
        let folder = create_folder(&ch, &alice, "Never made", raw).await.expect_err(what);
        let item = create_item(&ch, &alice, &folder_id, "Never made", raw).await.expect_err(what);
        let invitation = create_invitation(&ch, &alice, &folder_id, "bob@example.com", AccessLevel::View, raw)
            .await
            .expect_err(what);
        for (rpc, err) in [("CreateFolder", &folder), ("CreateItem", &item), ("CreateInvitation", &invitation)] {
            assert_bad_field(err, "request_id");
            if raw.trim().len() > 3 {
                assert!(!err.message().contains(raw.trim()), "{rpc} {what}: the value is echoed: {}", err.message());
            }
            assert!(err.message().len() < 300, "{rpc} {what}: {} bytes of message", err.message().len());
        }
    }
    let db = cluster.database().await?;
    assert_eq!(count(&db, "folders", bson::doc! {}).await?, 1, "only the folder made without a request_id");
    assert_eq!(count(&db, "items", bson::doc! {}).await?, 0);
    assert_eq!(count(&db, "invitations", bson::doc! {}).await?, 0);
    assert_eq!(mails_to(&cluster, "bob@example.com"), 0);
    cluster.stop().await
}

#[tokio::test]
async fn a_retried_create_item_returns_the_same_item_and_after_a_move_is_already_exists() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let db = cluster.database().await?;
    let rid = new_request_id();
    // The same request id for the folder and the item: each kind of create is its own.
    let source = create_folder(&ch, &alice, "Source", &rid).await?.id;
    let target = Folders::new(&ch, &alice).create("Target").await?;
    let first = create_item(&ch, &alice, &source, "Open orders", &rid).await?;
    let again = create_item(&ch, &alice, &source, "Open orders", &rid).await?;
    assert_eq!((again.id.as_str(), again.version), (first.id.as_str(), 1));
    assert_ne!(first.id, source, "the item's id is not the folder's");
    assert_eq!(count(&db, "items", bson::doc! { "folder_id": &source }).await?, 1, "one item");
    assert_eq!(folder_item_count(&db, &source).await?, 1, "the folder counted one item");

    let err = create_item(&ch, &alice, &source, "Closed orders", &rid).await.expect_err("another item, same id");
    assert_reason(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    assert_eq!(count(&db, "items", bson::doc! {}).await?, 1);

    // Moved to another folder: a late retry of the create must not make a second copy in
    // the source.
    ItemServiceClient::new(ch.clone())
        .move_item(alice.request(MoveItemRequest {
            folder_id: source.clone(),
            item_id: first.id.clone(),
            expected_version: 1,
            target_folder_id: target.clone(),
        }))
        .await?;
    let err = create_item(&ch, &alice, &source, "Open orders", &rid).await.expect_err("a retry after the move");
    assert_reason(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    assert_eq!(count(&db, "items", bson::doc! {}).await?, 1, "still one item in all");
    assert_eq!(count(&db, "items", bson::doc! { "folder_id": &source }).await?, 0);
    assert_eq!(count(&db, "items", bson::doc! { "folder_id": &target }).await?, 1);
    assert_eq!(folder_item_count(&db, &source).await?, 0);
    assert_eq!(folder_item_count(&db, &target).await?, 1);
    cluster.stop().await
}

#[tokio::test]
async fn a_retried_create_invitation_makes_one_invitation_and_sends_one_email() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(generous_send_limits).await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Invites").await?;
    let rid = new_request_id();
    let first = create_invitation(&ch, &alice, &folder_id, "bob@example.com", AccessLevel::Edit, &rid).await?;
    assert_eq!(mails_to(&cluster, "bob@example.com"), 1);
    let again = create_invitation(&ch, &alice, &folder_id, "bob@example.com", AccessLevel::Edit, &rid).await?;
    assert_eq!(again.id, first.id);
    assert_eq!((again.state, again.access), (InvitationState::Pending as i32, AccessLevel::Edit as i32));
    assert_eq!(mails_to(&cluster, "bob@example.com"), 1, "a retry mails nobody again");
    let db = cluster.database().await?;
    assert_eq!(count(&db, "invitations", bson::doc! {}).await?, 1);

    // The same request id for another invitee, or another level: refused, nothing sent.
    for (email, access) in [("carol@example.com", AccessLevel::Edit), ("bob@example.com", AccessLevel::View)] {
        let err = create_invitation(&ch, &alice, &folder_id, email, access, &rid).await.expect_err(email);
        assert_reason(&err, Code::AlreadyExists, "REQUEST_ID_REUSED");
    }
    assert_eq!(mails_to(&cluster, "carol@example.com"), 0);
    assert_eq!(mails_to(&cluster, "bob@example.com"), 1);
    assert_eq!(count(&db, "invitations", bson::doc! {}).await?, 1);
    let list = ListFolderInvitationsRequest { folder_id: folder_id.clone(), page: None };
    let pending = InvitationServiceClient::new(ch.clone())
        .list_folder_invitations(alice.request(list))
        .await?
        .into_inner()
        .invitations;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].access, AccessLevel::Edit as i32, "the refused request did not change the level");
    // A new request id is a new request.
    create_invitation(&ch, &alice, &folder_id, "carol@example.com", AccessLevel::Edit, &new_request_id()).await?;
    assert_eq!(mails_to(&cluster, "carol@example.com"), 1);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_create_invitations_with_one_request_id_make_one_invitation_and_one_email() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(generous_send_limits).await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Raced invites").await?;
    let rid = new_request_id();
    let mut attempts = Vec::new();
    for _ in 0..8 {
        let mut invitations = InvitationServiceClient::new(cluster.gateway().await?);
        let request = create_invitation_request(&alice, &folder_id, "bob@example.com", AccessLevel::Edit, &rid);
        attempts.push(async move {
            invitations
                .create_invitation(request)
                .await
                .map(|r| r.into_inner().invitation.map(|i| i.id).unwrap_or_default())
        });
    }
    let results = race(attempts).await?;
    let ids: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(!ids.is_empty(), "no attempt succeeded: {results:?}");
    assert!(ids.iter().all(|id| *id == ids[0]), "different answers: {results:?}");
    let db = cluster.database().await?;
    assert_eq!(count(&db, "invitations", bson::doc! {}).await?, 1, "{results:?}");
    assert_eq!(mails_to(&cluster, "bob@example.com"), 1, "one create, one email, however many retries raced");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_folder_retried_after_a_lost_answer_makes_one_folder() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let db = cluster.database().await?;
    for (rung, ms) in CUTS.into_iter().enumerate() {
        let (rid, name) = (new_request_id(), format!("Lost answer {rung}"));
        let client = FolderServiceClient::new(ch.clone());
        lose_the_answer(rung, ms, create_folder_request(&alice, &name, &rid), move |r| async move {
            let mut client = client;
            client.create_folder(r).await
        })
        .await;
        let what = format!("rung {rung} ({ms} ms): the retried CreateFolder settles");
        let folder = settled(&what, || create_folder(&ch, &alice, &name, &rid)).await?;
        assert_eq!(folder.name, name, "{what}");
        assert_eq!(count(&db, "folders", bson::doc! { "_id": &folder.id }).await?, 1, "{what}");
        assert_eq!(count(&db, "members", bson::doc! { "folder_id": &folder.id }).await?, 1, "{what}");
        assert_eq!(count(&db, "data_keys", bson::doc! { "folder_id": &folder.id }).await?, 1, "{what}");
        assert_eq!(count(&db, "folders", bson::doc! {}).await?, rung as u64 + 1, "{what}: no second folder");
    }
    let n = CUTS.len() as u64;
    assert_eq!(count(&db, "members", bson::doc! {}).await?, n);
    assert_eq!(count(&db, "data_keys", bson::doc! {}).await?, n, "no data key of a folder that was never made");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_item_retried_after_a_lost_answer_makes_one_item() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Lost answers").await?;
    let db = cluster.database().await?;
    for (rung, ms) in CUTS.into_iter().enumerate() {
        let (rid, name) = (new_request_id(), format!("Lost answer {rung}"));
        let client = ItemServiceClient::new(ch.clone());
        lose_the_answer(rung, ms, create_item_request(&alice, &folder_id, &name, &rid), move |r| async move {
            let mut client = client;
            client.create_item(r).await
        })
        .await;
        let what = format!("rung {rung} ({ms} ms): the retried CreateItem settles");
        let item = settled(&what, || create_item(&ch, &alice, &folder_id, &name, &rid)).await?;
        assert_eq!((item.name.as_str(), item.version), (name.as_str(), 1), "{what}");
        assert_eq!(count(&db, "items", bson::doc! { "_id": &item.id }).await?, 1, "{what}");
        let made = rung as i64 + 1;
        assert_eq!(count(&db, "items", bson::doc! { "folder_id": &folder_id }).await?, made as u64, "{what}");
        assert_eq!(folder_item_count(&db, &folder_id).await?, made, "{what}: the folder counts each item once");
    }
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_invitation_retried_after_a_lost_answer_mails_the_invitee_exactly_once() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(generous_send_limits).await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Lost answers").await?;
    let db = cluster.database().await?;
    for (rung, ms) in CUTS.into_iter().enumerate() {
        let (rid, email) = (new_request_id(), format!("lost{rung}@example.com"));
        let client = InvitationServiceClient::new(ch.clone());
        let request = create_invitation_request(&alice, &folder_id, &email, AccessLevel::View, &rid);
        lose_the_answer(rung, ms, request, move |r| async move {
            let mut client = client;
            client.create_invitation(r).await
        })
        .await;
        let what = format!("rung {rung} ({ms} ms): the retried CreateInvitation settles");
        let invitation =
            settled(&what, || create_invitation(&ch, &alice, &folder_id, &email, AccessLevel::View, &rid)).await?;
        assert_eq!(invitation.state, InvitationState::Pending as i32, "{what}");
        assert_eq!(count(&db, "invitations", bson::doc! { "invitee_email": &email }).await?, 1, "{what}");
        assert_eq!(mails_to(&cluster, &email), 1, "{what}: the invitee is told exactly once");
    }
    cluster.stop().await
}

/// A cluster whose inviters may send two invitations at once, then one a minute; Alice signed
/// in with a folder named `name`.
async fn two_sends_then_one_a_minute(name: &str) -> anyhow::Result<(TestCluster, Channel, Session, String)> {
    let cluster = TestCluster::start_with(|c| {
        c.invitation_limits.inviter_burst = 2;
        c.invitation_limits.per_inviter_per_minute = 1;
    })
    .await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create(name).await?;
    Ok((cluster, ch, alice, folder_id))
}

#[tokio::test]
async fn a_retried_invitation_sends_no_email_but_counts_against_the_send_rate() -> anyhow::Result<()> {
    // Two sends at once, then one a minute. The retry sends nothing, but the gateway charges
    // every CreateInvitation before it can know it is a retry (documented in
    // invitations.proto): a client that retries in a loop meets the limit like any other.
    let (cluster, ch, alice, folder_id) = two_sends_then_one_a_minute("Budget").await?;
    let rid = new_request_id();
    let first = create_invitation(&ch, &alice, &folder_id, "bob@example.com", AccessLevel::View, &rid).await?;
    let again = create_invitation(&ch, &alice, &folder_id, "bob@example.com", AccessLevel::View, &rid).await?;
    assert_eq!(again.id, first.id);
    assert_eq!(mails_to(&cluster, "bob@example.com"), 1);
    let refused = create_invitation(&ch, &alice, &folder_id, "carol@example.com", AccessLevel::View, &new_request_id())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(mails_to(&cluster, "carol@example.com"), 0);
    cluster.stop().await
}

// ---------------------------------------------------------------------------------------
// The refresh-token retry window (REFRESH_RETRY_WINDOW = 10 s on the injected clock)
// ---------------------------------------------------------------------------------------

async fn refresh(ch: &Channel, token: &str) -> Result<SessionTokens, Status> {
    let reply = AuthServiceClient::new(ch.clone())
        .refresh_session(RefreshSessionRequest { refresh_token: token.into() })
        .await?;
    reply.into_inner().tokens.ok_or_else(|| Status::internal("RefreshSession answered without tokens"))
}

async fn me(ch: &Channel, access_token: &str) -> Result<String, Status> {
    let reply = AuthServiceClient::new(ch.clone()).get_me(bearer(access_token, GetMeRequest {})).await?;
    Ok(reply.into_inner().user.map(|u| u.email).unwrap_or_default())
}

/// Whether the session behind `refresh_token` is revoked, as auth's `sessions` collection has it.
async fn stored_revoked(cluster: &TestCluster, refresh_token: &str) -> anyhow::Result<bool> {
    let (sid, _) = refresh_token.split_once('.').context("a refresh token is <session id>.<secret>")?;
    let session = cluster
        .database()
        .await?
        .collection::<bson::Document>("sessions")
        .find_one(bson::doc! { "_id": sid })
        .await?
        .context("the session document")?;
    Ok(session.get_bool("revoked")?)
}

#[tokio::test]
async fn a_refresh_retried_within_the_window_returns_the_same_token_and_keeps_the_session() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let session = cluster.sign_in("grace@example.com").await?;
    let t2 = refresh(&ch, &session.refresh).await?;
    assert_ne!(t2.refresh_token, session.refresh);

    // The answer was lost; the client asks again with T1, just inside the window.
    cluster.clock.advance(Duration::from_secs(9));
    let again = refresh(&ch, &session.refresh).await?;
    assert_eq!(again.refresh_token, t2.refresh_token, "the same successor, not a third token");
    assert_eq!(me(&ch, &again.access_token).await?, "grace@example.com", "the retry's access token works");
    assert_eq!(me(&ch, &t2.access_token).await?, "grace@example.com", "the first access token still works");
    let third = refresh(&ch, &session.refresh).await?;
    assert_eq!(third.refresh_token, t2.refresh_token, "asking a third time changes nothing");
    assert!(!stored_revoked(&cluster, &session.refresh).await?, "a retry is not reuse");

    // The successor is the session's live token.
    let t3 = refresh(&ch, &t2.refresh_token).await?;
    assert!(t3.refresh_token != t2.refresh_token && t3.refresh_token != session.refresh);
    assert_eq!(me(&ch, &t3.access_token).await?, "grace@example.com");
    // And the rotation it made can be retried in its own window.
    assert_eq!(refresh(&ch, &t2.refresh_token).await?.refresh_token, t3.refresh_token);
    assert!(!stored_revoked(&cluster, &session.refresh).await?);
    cluster.stop().await
}

#[tokio::test]
async fn the_old_refresh_token_after_its_successor_was_used_is_reuse_and_revokes_the_session() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let session = cluster.sign_in("heidi@example.com").await?;
    let t2 = refresh(&ch, &session.refresh).await?;
    let t3 = refresh(&ch, &t2.refresh_token).await?;
    // Still within T1's window, but T2 was used since: T1 now can only be a replay.
    cluster.clock.advance(Duration::from_secs(1));
    let err = refresh(&ch, &session.refresh).await.expect_err("T1 after T2 was used");
    assert_reason(&err, Code::Unauthenticated, "REFRESH_TOKEN_REUSED");
    assert!(stored_revoked(&cluster, &session.refresh).await?, "the session is revoked");
    let err = refresh(&ch, &t3.refresh_token).await.expect_err("the newest token died with the session");
    assert_reason(&err, Code::Unauthenticated, "REFRESH_TOKEN_INVALID");
    let err = me(&ch, &t3.access_token).await.expect_err("an access token of the revoked session");
    assert_reason(&err, Code::Unauthenticated, "SESSION_REVOKED");
    let err = refresh(&ch, &t2.refresh_token).await.expect_err("T2 of the revoked session");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    cluster.stop().await
}

#[tokio::test]
async fn the_old_refresh_token_after_the_retry_window_is_reuse_and_revokes_the_session() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let session = cluster.sign_in("ivan@example.com").await?;
    let t2 = refresh(&ch, &session.refresh).await?;
    cluster.clock.advance(Duration::from_secs(11));
    let err = refresh(&ch, &session.refresh).await.expect_err("T1 after the window");
    assert_reason(&err, Code::Unauthenticated, "REFRESH_TOKEN_REUSED");
    assert!(stored_revoked(&cluster, &session.refresh).await?);
    let err = refresh(&ch, &t2.refresh_token).await.expect_err("T2 died with the session");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = me(&ch, &t2.access_token).await.expect_err("T2's access token died with the session");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_with_one_token_get_one_successor_and_keep_the_session() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let session = cluster.sign_in("judy@example.com").await?;
    let mut attempts = Vec::new();
    for _ in 0..6 {
        let ch = cluster.gateway().await?;
        let token = session.refresh.clone();
        attempts.push(async move { refresh(&ch, &token).await.map(|t| (t.refresh_token, t.access_token)) });
    }
    let results = race(attempts).await?;
    let successes: Vec<&(String, String)> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(!successes.is_empty(), "{results:?}");
    let t2 = successes[0].0.clone();
    assert!(successes.iter().all(|(r, _)| *r == t2), "more than one successor: {results:?}");
    assert_ne!(t2, session.refresh);

    // The session survived the race: every answer's access token works, the successor rotates.
    assert!(!stored_revoked(&cluster, &session.refresh).await?, "{results:?}");
    let ch = cluster.gateway().await?;
    for (_, access) in &successes {
        assert_eq!(me(&ch, access).await?, "judy@example.com");
    }
    let t3 = refresh(&ch, &t2).await?;
    assert_eq!(me(&ch, &t3.access_token).await?, "judy@example.com");
    cluster.stop().await
}

#[tokio::test]
async fn the_rotated_refresh_token_is_never_stored_in_plaintext() -> anyhow::Result<()> {
    use base64::Engine;
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let session = cluster.sign_in("mallory@example.com").await?;
    let t2 = refresh(&ch, &session.refresh).await?.refresh_token;
    // Retried, so that whatever the retry path keeps is kept now.
    assert_eq!(refresh(&ch, &session.refresh).await?.refresh_token, t2);

    let db = cluster.database().await?;
    let stored = ts_testkit::raw_documents(&db).await?;
    assert!(
        ts_testkit::collections_containing(&stored, b"sealed_token").contains(&"sessions".to_owned()),
        "the scan sees the session's rotation"
    );
    let json = ts_testkit::dump_database(&db).await?;
    for token in [&session.refresh, &t2] {
        let (_, secret) = token.split_once('.').context("a refresh token is <session id>.<secret>")?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(secret)?;
        let standard = base64::engine::general_purpose::STANDARD.encode(&raw);
        for (what, needle) in [
            ("the token", token.as_bytes()),
            ("its secret", secret.as_bytes()),
            ("its secret's bytes", raw.as_slice()),
            ("its secret in standard base64", standard.as_bytes()),
        ] {
            let found = ts_testkit::collections_containing(&stored, needle);
            assert!(found.is_empty(), "{what} is stored in plaintext in {found:?}");
        }
        assert!(!json.contains(token.as_str()) && !json.contains(secret) && !json.contains(&standard));
    }
    cluster.stop().await
}

// ---------------------------------------------------------------------------------------
// google.rpc error details through the gateway
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn leaving_or_lowering_the_last_manager_is_failed_precondition_last_manager() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Managed").await?;
    let err = FolderServiceClient::new(ch.clone())
        .leave_folder(alice.request(LeaveFolderRequest { folder_id: folder_id.clone() }))
        .await
        .expect_err("the last manager leaves");
    assert_reason(&err, Code::FailedPrecondition, "LAST_MANAGER");
    let err = MemberServiceClient::new(ch.clone())
        .update_member_access(alice.request(UpdateMemberAccessRequest {
            folder_id: folder_id.clone(),
            user_id: alice.user_id.clone(),
            access: AccessLevel::Edit as i32,
        }))
        .await
        .expect_err("the last manager lowers themself");
    assert_reason(&err, Code::FailedPrecondition, "LAST_MANAGER");
    cluster.stop().await
}

#[tokio::test]
async fn accepting_a_revoked_invitation_is_failed_precondition_invitation_revoked() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(generous_send_limits).await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Changed my mind").await?;
    let invitation =
        create_invitation(&ch, &alice, &folder_id, "bob@example.com", AccessLevel::Edit, &new_request_id()).await?;
    InvitationServiceClient::new(ch.clone())
        .revoke_invitation(alice.request(RevokeInvitationRequest { invitation_id: invitation.id.clone() }))
        .await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let err = Invitations::new(&ch, &bob).accept(&invitation.id).await.expect_err("a revoked invitation");
    assert_reason(&err, Code::FailedPrecondition, "INVITATION_REVOKED");
    let db = cluster.database().await?;
    assert_eq!(count(&db, "members", bson::doc! { "folder_id": &folder_id, "user_id": &bob.user_id }).await?, 0);
    cluster.stop().await
}

#[tokio::test]
async fn sharing_blocked_by_the_license_admin_is_failed_precondition_license_blocked() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    cluster
        .license_operator()
        .await?
        .upsert_license(ts_proto::internal::UpsertLicenseRequest {
            license_id: "safe-retries-blocked".into(),
            admin_emails: vec!["admin@retries-blocked.test".into()],
            emails: vec![],
            domains: vec!["retries-blocked.test".into()],
        })
        .await?;
    let ch = cluster.gateway().await?;
    let admin = cluster.sign_in("admin@retries-blocked.test").await?;
    LicenseAdminServiceClient::new(ch.clone())
        .set_license_sharing_blocked(
            admin.request(SetLicenseSharingBlockedRequest { license_id: "safe-retries-blocked".into(), blocked: true }),
        )
        .await?;
    // The block ended every session of the license; signing in again works, sharing does not.
    let alice = cluster.sign_in("alice@retries-blocked.test").await?;
    let err = create_folder(&ch, &alice, "Not while blocked", &new_request_id()).await.expect_err("blocked");
    assert_reason(&err, Code::FailedPrecondition, "LICENSE_BLOCKED");
    let err = FolderServiceClient::new(ch.clone())
        .list_folders(alice.request(ListFoldersRequest::default()))
        .await
        .expect_err("blocked");
    assert_reason(&err, Code::FailedPrecondition, "LICENSE_BLOCKED");
    assert_eq!(count(&cluster.database().await?, "folders", bson::doc! {}).await?, 0);
    cluster.stop().await
}

#[tokio::test]
async fn a_call_without_a_usable_token_is_unauthenticated_access_token_invalid() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let err = FolderServiceClient::new(ch.clone())
        .list_folders(tonic::Request::new(ListFoldersRequest::default()))
        .await
        .expect_err("no token");
    assert_reason(&err, Code::Unauthenticated, "ACCESS_TOKEN_INVALID");
    let err =
        AuthServiceClient::new(ch.clone()).get_me(tonic::Request::new(GetMeRequest {})).await.expect_err("no token");
    assert_reason(&err, Code::Unauthenticated, "ACCESS_TOKEN_INVALID");
    let err = me(&ch, "not-a-jwt").await.expect_err("a malformed token");
    assert_reason(&err, Code::Unauthenticated, "ACCESS_TOKEN_INVALID");
    let err = refresh(&ch, "garbage").await.expect_err("a malformed refresh token");
    assert_reason(&err, Code::Unauthenticated, "REFRESH_TOKEN_INVALID");
    cluster.stop().await
}

#[tokio::test]
async fn an_expired_access_token_is_unauthenticated_access_token_expired() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    // Alice's token is verified (and kept by the gateway) before it expires; bob's is not.
    assert_eq!(me(&ch, &alice.access).await?, "alice@example.com");
    cluster.clock.advance(Duration::from_secs(15 * 60 + 1));
    for s in [&alice, &bob] {
        let err = me(&ch, &s.access).await.expect_err("expired");
        assert_reason(&err, Code::Unauthenticated, "ACCESS_TOKEN_EXPIRED");
        let err = FolderServiceClient::new(ch.clone())
            .list_folders(s.request(ListFoldersRequest::default()))
            .await
            .expect_err("expired");
        assert_reason(&err, Code::Unauthenticated, "ACCESS_TOKEN_EXPIRED");
        assert!(!err.message().contains(&s.access[..20]), "the token is echoed: {}", err.message());
    }
    // What the reason tells the client to do works.
    let renewed = refresh(&ch, &alice.refresh).await?;
    assert_eq!(me(&ch, &renewed.access_token).await?, "alice@example.com");
    cluster.stop().await
}

#[tokio::test]
async fn a_stale_expected_version_is_aborted_version_conflict() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Versions").await?;
    let item = create_item(&ch, &alice, &folder_id, "Counter", &new_request_id()).await?;
    let mut items = ItemServiceClient::new(ch.clone());
    let update = |version: u64, name: &str| {
        alice.request(UpdateItemRequest {
            folder_id: folder_id.clone(),
            item_id: item.id.clone(),
            expected_version: version,
            name: name.into(),
            description: String::new(),
            content: Some(query_content("{}")),
        })
    };
    items.update_item(update(1, "Counter 2")).await?;
    let err = items.update_item(update(1, "Counter from a stale read")).await.expect_err("stale update");
    assert_reason(&err, Code::Aborted, "VERSION_CONFLICT");
    let delete = DeleteItemRequest { folder_id: folder_id.clone(), item_id: item.id.clone(), expected_version: 1 };
    let err = items.delete_item(alice.request(delete)).await.expect_err("stale delete");
    assert_reason(&err, Code::Aborted, "VERSION_CONFLICT");
    cluster.stop().await
}

#[tokio::test]
async fn an_empty_folder_name_is_invalid_argument_with_a_bad_request_naming_name() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    for name in ["", "   "] {
        let err = create_folder(&ch, &alice, name, "").await.expect_err("an empty name");
        assert_bad_field(&err, "name");
        let err = create_folder(&ch, &alice, name, &new_request_id()).await.expect_err("an empty name");
        assert_bad_field(&err, "name");
    }
    assert_eq!(count(&cluster.database().await?, "folders", bson::doc! {}).await?, 0);
    cluster.stop().await
}

#[tokio::test]
async fn the_invitation_send_rate_limit_is_resource_exhausted_rate_limited_with_retry_info() -> anyhow::Result<()> {
    let (cluster, ch, alice, folder_id) = two_sends_then_one_a_minute("Spammy").await?;
    for email in ["r1@example.com", "r2@example.com"] {
        create_invitation(&ch, &alice, &folder_id, email, AccessLevel::View, &new_request_id()).await?;
    }
    let err = create_invitation(&ch, &alice, &folder_id, "r3@example.com", AccessLevel::View, &new_request_id())
        .await
        .expect_err("over the burst");
    assert_reason(&err, Code::ResourceExhausted, "RATE_LIMITED");
    let wait = retry_delay(&err).expect("a RetryInfo detail");
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60), "one a minute: wait {wait:?}");
    assert_eq!(mails_to(&cluster, "r3@example.com"), 0);
    // Once the clock has moved by the wait, the same request goes through.
    cluster.clock.advance(wait);
    create_invitation(&ch, &alice, &folder_id, "r3@example.com", AccessLevel::View, &new_request_id()).await?;
    cluster.stop().await
}

#[tokio::test]
async fn an_unreachable_backend_is_unavailable_with_retry_info_and_nothing_internal() -> anyhow::Result<()> {
    // The gateway's invitations upstream points at a closed port; nothing else calls it.
    let cluster = TestCluster::start_with(|c| {
        c.upstreams.invitations = Some(ts_config::Upstream { url: "https://127.0.0.1:1".into(), server_name: None });
    })
    .await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let err = InvitationServiceClient::new(ch.clone())
        .list_my_invitations(alice.request(ListMyInvitationsRequest::default()))
        .await
        .expect_err("invitations is unreachable");
    assert_reason(&err, Code::Unavailable, "UNAVAILABLE");
    let wait = retry_delay(&err).expect("a RetryInfo detail");
    assert!(wait > Duration::ZERO, "{err:?}");
    assert!(err.get_details_bad_request().is_none() && err.get_details_debug_info().is_none(), "{err:?}");
    let message = err.message().to_lowercase();
    for leak in ["127.0.0.1", "https://", "tcp", "connect", "refused", "transport", "invitations", "dns"] {
        assert!(!message.contains(leak), "{leak:?} leaks in {message:?}");
    }
    cluster.stop().await
}

#[tokio::test]
async fn an_unreadable_stored_document_is_internal_with_nothing_internal() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Damaged").await?;
    // An item document that no longer fits its type (as after a bad hand edit).
    let planted = uuid::Uuid::new_v4().to_string();
    let detail = "hand-edited-version-7731";
    cluster
        .database()
        .await?
        .collection::<bson::Document>("items")
        .insert_one(bson::doc! {
            "_id": &planted,
            "folder_id": &folder_id,
            "kind": 2_i32,
            "version": detail,
            "created_at": bson::DateTime::now(),
            "updated_at": bson::DateTime::now(),
        })
        .await?;
    let err = ItemServiceClient::new(ch.clone())
        .get_item(alice.request(GetItemRequest { folder_id: folder_id.clone(), item_id: planted.clone() }))
        .await
        .expect_err("an unreadable item");
    assert_reason(&err, Code::Internal, "INTERNAL");
    assert!(err.get_details_bad_request().is_none() && err.get_details_debug_info().is_none(), "{err:?}");
    let message = err.message().to_lowercase();
    for leak in [detail, planted.as_str(), folder_id.as_str(), "bson", "deserializ", "invalid type", "mongo", "items"] {
        assert!(!message.contains(leak), "{leak:?} leaks in {message:?}");
    }
    cluster.stop().await
}

#[tokio::test]
async fn a_create_folder_cut_between_the_folder_and_its_first_member_is_finished_by_its_retry() -> anyhow::Result<()> {
    // A crash after the folder document and before its first member (the server process
    // killed; a client cancel cannot cut it, the create runs in its own task): the member is
    // taken away by hand to leave exactly that state.
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let db = cluster.database().await?;
    let rid = new_request_id();
    let made = create_folder(&ch, &alice, "Half made", &rid).await?;
    db.collection::<bson::Document>("members").delete_many(bson::doc! { "folder_id": &made.id }).await?;
    // Mallory, another user, cannot finish it for herself with the same request id: her id
    // derives another folder.
    let mallory = cluster.sign_in("mallory@example.com").await?;
    let hers = create_folder(&ch, &mallory, "Half made", &rid).await?;
    assert_ne!(hers.id, made.id);
    let again = create_folder(&ch, &alice, "Half made", &rid).await?;
    assert_eq!(again.id, made.id);
    assert_eq!(again.my_access, AccessLevel::Manage as i32);
    assert_eq!(count(&db, "members", bson::doc! { "folder_id": &made.id }).await?, 1);
    let listed = FolderServiceClient::new(ch.clone())
        .get_folder(alice.request(GetFolderRequest { folder_id: made.id.clone() }))
        .await?
        .into_inner();
    assert_eq!(listed.folder.map(|f| f.name), Some("Half made".to_owned()));
    cluster.stop().await
}

#[tokio::test]
async fn a_create_folder_retried_after_its_folder_was_deleted_makes_nothing_and_brings_no_key_back()
-> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let db = cluster.database().await?;
    let rid = new_request_id();
    let made = create_folder(&ch, &alice, "Short lived", &rid).await?;
    FolderServiceClient::new(ch.clone())
        .delete_folder(alice.request(DeleteFolderRequest { folder_id: made.id.clone() }))
        .await?;
    let again = create_folder(&ch, &alice, "Short lived", &rid).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    assert_eq!(reason_of(&again).as_deref(), Some("REQUEST_ID_REUSED"));
    assert_eq!(count(&db, "folders", bson::doc! { "_id": &made.id }).await?, 0);
    assert_eq!(count(&db, "data_keys", bson::doc! { "folder_id": &made.id }).await?, 0, "no key for the spent id");
    cluster.stop().await
}

#[tokio::test]
async fn a_retry_of_an_invitation_refreshed_by_another_create_mails_nobody_again() -> anyhow::Result<()> {
    // Alice invites Bob (request A); Carol, another manager, invites Bob again (request C),
    // which refreshes the same pending invitation. Alice's retry of A must still be known.
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let carol = cluster.sign_in("carol@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Two managers").await?;
    cluster.add_member(&folder_id, &carol, AccessLevel::Manage).await?;
    let (a, c) = (new_request_id(), new_request_id());
    let first = create_invitation(&ch, &alice, &folder_id, "bob@example.com", AccessLevel::View, &a).await?;
    let second = create_invitation(&ch, &carol, &folder_id, "bob@example.com", AccessLevel::View, &c).await?;
    assert_eq!(first.id, second.id, "one pending invitation, refreshed");
    assert_eq!(mails_to(&cluster, "bob@example.com"), 2);
    let retried = create_invitation(&ch, &alice, &folder_id, "bob@example.com", AccessLevel::View, &a).await?;
    assert_eq!(retried.id, first.id);
    assert_eq!(mails_to(&cluster, "bob@example.com"), 2, "the retry mailed nobody");
    let retried = create_invitation(&ch, &carol, &folder_id, "bob@example.com", AccessLevel::View, &c).await?;
    assert_eq!(retried.id, first.id);
    assert_eq!(mails_to(&cluster, "bob@example.com"), 2);
    cluster.stop().await
}

#[tokio::test]
async fn one_request_id_raced_through_two_folders_replicas_makes_one_folder_and_one_item() -> anyhow::Result<()> {
    // Half the attempts reach the cluster's folders through the gateway, half a second
    // folders replica directly (as the gateway would call it): the replicas share MongoDB
    // and keyvault, nothing else.
    let cluster = TestCluster::start().await?;
    let replica = cluster.folders_replica().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let (folder_rid, item_rid) = (new_request_id(), new_request_id());
    let mut attempts = Vec::new();
    for i in 0..8 {
        let request = CreateFolderRequest { name: "Twice served".into(), request_id: folder_rid.clone() };
        let (mut folders, request) = if i % 2 == 0 {
            (FolderServiceClient::new(cluster.gateway().await?), alice.request(request))
        } else {
            (FolderServiceClient::new(replica.channel.clone()), as_gateway(&alice, request))
        };
        attempts.push(async move {
            folders.create_folder(request).await.map(|r| r.into_inner().folder.map(|f| f.id).unwrap_or_default())
        });
    }
    let results = race(attempts).await?;
    let ids: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(!ids.is_empty() && ids.iter().all(|id| *id == ids[0]), "{results:?}");
    let folder_id = ids[0].clone();
    let db = cluster.database().await?;
    assert_eq!(count(&db, "folders", bson::doc! {}).await?, 1, "{results:?}");
    assert_eq!(count(&db, "members", bson::doc! { "folder_id": &folder_id }).await?, 1);
    assert_eq!(count(&db, "data_keys", bson::doc! { "folder_id": &folder_id }).await?, 1, "one data key");

    let mut attempts = Vec::new();
    for i in 0..8 {
        let request = CreateItemRequest {
            folder_id: folder_id.clone(),
            name: "Once".into(),
            content: Some(query_content("{}")),
            request_id: item_rid.clone(),
            ..Default::default()
        };
        let (mut items, request) = if i % 2 == 0 {
            (ItemServiceClient::new(cluster.gateway().await?), alice.request(request))
        } else {
            (ItemServiceClient::new(replica.channel.clone()), as_gateway(&alice, request))
        };
        attempts.push(async move {
            items
                .create_item(request)
                .await
                .map(|r| r.into_inner().item.and_then(|i| i.summary).map(|s| s.id).unwrap_or_default())
        });
    }
    let results = race(attempts).await?;
    let ids: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert!(!ids.is_empty() && ids.iter().all(|id| *id == ids[0]), "{results:?}");
    assert_eq!(count(&db, "items", bson::doc! { "folder_id": &folder_id }).await?, 1, "{results:?}");
    let folder =
        db.collection::<bson::Document>("folders").find_one(bson::doc! { "_id": &folder_id }).await?.expect("folder");
    assert_eq!(folder.get_i64("items").ok(), Some(1), "the folder counts one item");
    drop(replica);
    cluster.stop().await
}
