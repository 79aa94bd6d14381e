//! What the scenarios read and write, made through the public API as a client would (sign-in
//! by email code, folders, items, invitations), with concurrency. What merely fills the
//! system for the scale pairs is inserted into MongoDB directly, as the services' own
//! document types: invitations (they need no encryption), and items and folders beyond the
//! ones a first page shows (copies of a real one's stored document under new ids, placed
//! after every real one in the page order: their sealed fields are bound to the original's
//! ids and would not open, and no first page reads them). Through the API they are made at
//! 10–30 a second on this machine (a KMS data key per folder, a transaction per item), so
//! 100,000 items would take an hour.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use teamshare::Service;
use tonic::transport::Channel;
use ts_contract::Peer;
use ts_contract::clock::bson_date;
use ts_contract::ids::{FolderId, InvitationId, ItemId, UserId};
use ts_invitations::store::{InvitationDoc, InvitationState};
use ts_proto::internal::UpsertLicenseRequest;
use ts_proto::internal::license_operator_service_client::LicenseOperatorServiceClient;
use ts_proto::public::AccessLevel;
use ts_testkit::{Folders, Invitations, Items, ProcessStack, Session, query_content};

/// The license every bench user belongs to (by email domain), so that the per-license send
/// limit is in play too.
pub const LICENSE: &str = "bench";
/// The bench users' email domain.
pub const DOMAIN: &str = "bench.example";

/// Runs `f(0..n)` with `concurrency` at a time; the results in order, or the first error.
pub async fn many<T, F, Fut>(n: usize, concurrency: usize, f: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    futures::stream::iter((0..n).map(f)).buffered(concurrency.max(1)).try_collect().await
}

/// `n` of something made at `rate` per second, for the log.
pub fn rate_line(what: &str, n: usize, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    format!("{n} {what} in {secs:.1} s ({:.0}/s)", n as f64 / secs.max(1e-9))
}

/// Puts the bench domain under one license (operator call to auth).
pub async fn license(stack: &ProcessStack) -> anyhow::Result<()> {
    let mut operator = LicenseOperatorServiceClient::new(stack.internal(Service::Auth, Peer::Operator).await?);
    operator
        .upsert_license(UpsertLicenseRequest {
            license_id: LICENSE.into(),
            admin_emails: vec![format!("admin@{DOMAIN}")],
            emails: Vec::new(),
            domains: vec![DOMAIN.into()],
        })
        .await
        .context("UpsertLicense")?;
    Ok(())
}

/// Signs in `emails` through the gateway (email code flow), `concurrency` at a time.
pub async fn sign_in(
    stack: &ProcessStack,
    gateway: &Channel,
    emails: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<Session>> {
    many(emails.len(), concurrency, |i| async move {
        ts_testkit::users::sign_in(gateway.clone(), &stack.mail_dir, &emails[i])
            .await
            .with_context(|| format!("cannot sign in {}", emails[i]))
    })
    .await
}

/// A folder of `owner` named `name` holding `items` query items; its id and the items' ids.
pub async fn folder_with_items(
    gateway: &Channel,
    owner: &Session,
    name: &str,
    items: usize,
    concurrency: usize,
) -> anyhow::Result<(String, Vec<String>)> {
    let folder_id = Folders::new(gateway, owner).create(name).await.context("CreateFolder")?;
    let ids = many(items, concurrency, |i| {
        let (mut client, folder_id) = (Items::new(gateway, owner), folder_id.clone());
        async move {
            let reply = client
                .create(&folder_id, &format!("Orders {i}"), query_content(&format!("{{\"n\": {i}}}")))
                .await
                .context("CreateItem")?;
            reply.item.and_then(|i| i.summary).map(|s| s.id).context("CreateItem answered no item")
        }
    })
    .await?;
    Ok((folder_id, ids))
}

/// `n` folders of `owner` (each with its own data key from KMS).
pub async fn folders(gateway: &Channel, owner: &Session, n: usize, concurrency: usize) -> anyhow::Result<()> {
    many(n, concurrency, |i| {
        let mut client = Folders::new(gateway, owner);
        async move { client.create(&format!("Team {i}")).await.context("CreateFolder").map(drop) }
    })
    .await?;
    Ok(())
}

/// Invites `invitee` into each of `folders` (which `inviter` manages), through the gateway.
pub async fn invite(gateway: &Channel, inviter: &Session, folders: &[String], invitee: &str) -> anyhow::Result<()> {
    let mut client = Invitations::new(gateway, inviter);
    for folder in folders {
        client.send(folder, invitee, AccessLevel::View).await.context("CreateInvitation")?;
    }
    Ok(())
}

/// Inserts `n` pending invitations of `folder_id` from `inviter` to other people, in bulk,
/// as the invitations service's own `InvitationDoc`s.
pub async fn filler_invitations(
    stack: &ProcessStack,
    inviter: &Session,
    folder_id: &str,
    n: usize,
    tag: &str,
) -> anyhow::Result<()> {
    const TTL: Duration = Duration::from_secs(7 * 24 * 3600);
    let folder_id = FolderId::parse("folder_id", folder_id)?;
    let inviter_user_id = UserId::parse("user_id", &inviter.user_id)?;
    let now = SystemTime::now();
    let docs: Vec<InvitationDoc> = (0..n)
        .map(|i| InvitationDoc {
            id: InvitationId::new(),
            folder_id: folder_id.clone(),
            invitee_email: format!("filler-{tag}-{i}@example.com"),
            inviter_email: inviter.email.clone(),
            inviter_user_id: Some(inviter_user_id.clone()),
            access: AccessLevel::View,
            inviter_manage_epoch: String::new(),
            state: InvitationState::Pending,
            created_at: bson_date(now),
            expires_at: bson_date(now + TTL),
            purge_at: bson_date(now + TTL + TTL),
            answered_at: None,
            request_keys: vec![],
        })
        .collect();
    let invitations = stack.database().await?.collection::<InvitationDoc>("invitations");
    for chunk in docs.chunks(1_000) {
        invitations.insert_many(chunk).await.context("inserting filler invitations")?;
    }
    Ok(())
}

/// Inserts `n` filler items into `folder_id`, after its real ones (see the module's note).
pub async fn filler_items(stack: &ProcessStack, folder_id: &str, n: usize) -> anyhow::Result<()> {
    use ts_folders::store::ItemDoc;
    let items = stack.database().await?.collection::<ItemDoc>("items");
    let model = items
        .find_one(bson::doc! { "folder_id": folder_id })
        .sort(bson::doc! { "created_at": -1 })
        .await?
        .context("the folder has no item to copy")?;
    let after = model.created_at.timestamp_millis() + 1_000;
    let docs: Vec<ItemDoc> = (0..n)
        .map(|i| {
            let at = bson::DateTime::from_millis(after + i as i64);
            ItemDoc { id: ItemId::new(), created_at: at, updated_at: at, ..model.clone() }
        })
        .collect();
    for chunk in docs.chunks(1_000) {
        items.insert_many(chunk).await.context("inserting filler items")?;
    }
    Ok(())
}

/// Inserts `n` filler folders with `member` as their only manager, after the member's real
/// folders in the listing order (folder ids starting `ffffffff`; see the module's note).
pub async fn filler_folders(stack: &ProcessStack, member: &Session, n: usize) -> anyhow::Result<()> {
    use ts_folders::store::{FolderDoc, MemberDoc};
    let db = stack.database().await?;
    let (folders, members) = (db.collection::<FolderDoc>("folders"), db.collection::<MemberDoc>("members"));
    let user_id = UserId::parse("user_id", &member.user_id)?;
    let model_member =
        members.find_one(bson::doc! { "user_id": user_id.as_str() }).await?.context("the user is in no folder")?;
    let model_folder = folders
        .find_one(bson::doc! { "_id": model_member.folder_id.as_str() })
        .await?
        .context("the user's folder is missing")?;
    let mut made_folders = Vec::with_capacity(n);
    let mut made_members = Vec::with_capacity(n);
    for _ in 0..n {
        let random = uuid::Uuid::new_v4().to_string();
        let id = FolderId::parse("folder_id", &format!("ffffffff{}", &random[8..]))?;
        made_members.push(MemberDoc {
            id: MemberDoc::id_of(&id, &user_id),
            folder_id: id.clone(),
            manage_epoch: Some(uuid::Uuid::new_v4().simple().to_string()),
            ..model_member.clone()
        });
        made_folders.push(FolderDoc { id, ..model_folder.clone() });
    }
    for (f, m) in made_folders.chunks(1_000).zip(made_members.chunks(1_000)) {
        folders.insert_many(f).await.context("inserting filler folders")?;
        members.insert_many(m).await.context("inserting filler memberships")?;
    }
    Ok(())
}

/// How many invitations the system holds.
pub async fn invitations_in_system(stack: &ProcessStack) -> anyhow::Result<u64> {
    let db = stack.database().await?;
    Ok(db.collection::<bson::Document>("invitations").count_documents(bson::doc! {}).await?)
}

/// Lists the first page of `page_size` of a user's folders once, as a sanity check that
/// seeding landed and so that the measurement starts warm: on the MongoDB-compatible server
/// the first read of 10,000 memberships sorts them all (MongoDB walks the index), and 64
/// concurrent first reads would queue behind one another there.
pub async fn check_folders(gateway: &Channel, member: &Session, page_size: usize) -> anyhow::Result<()> {
    use ts_proto::public::folder_service_client::FolderServiceClient;
    use ts_proto::public::{ListFoldersRequest, PageRequest};
    let page = Some(PageRequest { page_size: page_size as u32, page_token: String::new() });
    let mut client = FolderServiceClient::new(gateway.clone());
    // Twice: the first read keeps the page as a hint, the second under every generation.
    for _ in 0..2 {
        let listed = client
            .list_folders(member.request(ListFoldersRequest { page: page.clone() }))
            .await
            .context("ListFolders")?;
        let n = listed.into_inner().folders.len();
        anyhow::ensure!(n == page_size, "ListFolders shows {n} folders, expected {page_size}");
    }
    Ok(())
}

/// Waits until `n` items are listed in a folder (a sanity check that seeding landed).
pub async fn check_items(gateway: &Channel, owner: &Session, folder_id: &str, n: usize) -> anyhow::Result<()> {
    use ts_proto::public::ListItemsRequest;
    use ts_proto::public::item_service_client::ItemServiceClient;
    let mut client = ItemServiceClient::new(gateway.clone());
    let page = client
        .list_items(owner.request(ListItemsRequest { folder_id: folder_id.into(), page: None }))
        .await
        .context("ListItems")?
        .into_inner();
    let expected = n.min(100);
    anyhow::ensure!(page.items.len() == expected, "ListItems shows {} items, expected {expected}", page.items.len());
    Ok(())
}
