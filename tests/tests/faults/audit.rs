//! The audit every fault test ends with must be able to fail: after a clean run it finds
//! nothing; after the database is tampered with the way a fault could leave it (an
//! acknowledged item lost, a counter off, a folder left without a manager, an accepted
//! invitation without its membership) it names each.

use bson::{Document, doc};
use futures::TryStreamExt;

use crate::support::{Fixture, assert_no_unexpected};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_names_what_a_fault_could_leave_behind() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    assert_no_unexpected(&fx.phase(120).await?, "the run");
    fx.audit().await?;

    let db = fx.stack.database().await?;
    let (items, folders, members, invitations) = (
        db.collection::<Document>("items"),
        db.collection::<Document>("folders"),
        db.collection::<Document>("members"),
        db.collection::<Document>("invitations"),
    );
    // An acknowledged item lost (whatever a replica still holds in memory).
    let item = items.find_one(doc! {}).await?.expect("the run made items");
    items.delete_one(doc! { "_id": item.get_str("_id")? }).await?;
    // A folder's item counter off by one.
    let counted = folders.find_one(doc! { "items": { "$gt": 0_i64 } }).await?.expect("a folder with items");
    folders.update_one(doc! { "_id": counted.get_str("_id")? }, doc! { "$inc": { "items": 1_i64 } }).await?;
    // An accepted invitation whose membership is gone (one whose invitee is still a member:
    // the mix removes members too).
    let mut joined = None;
    let mut cursor = invitations.find(doc! { "state": "accepted" }).await?;
    while let Some(invitation) = cursor.try_next().await? {
        let member =
            doc! { "folder_id": invitation.get_str("folder_id")?, "email": invitation.get_str("invitee_email")? };
        if let Some(m) = members.find_one(member).await? {
            joined = Some((invitation, m));
            break;
        }
    }
    let (accepted, joined) = joined.expect("an accepted invitation whose invitee is a member");
    let folder_of_accepted = accepted.get_str("folder_id")?.to_owned();
    members.delete_one(doc! { "_id": joined.get("_id").cloned().expect("_id") }).await?;
    // A folder whose only manager became a viewer.
    let manager = members
        .find_one(doc! { "folder_id": { "$ne": &folder_of_accepted }, "access": ts_proto::public::AccessLevel::Manage as i32 })
        .await?
        .expect("a manager");
    let unmanaged = manager.get_str("folder_id")?.to_owned();
    members
        .update_one(
            doc! { "_id": manager.get("_id").cloned().expect("_id") },
            doc! { "$set": { "access": ts_proto::public::AccessLevel::View as i32 } },
        )
        .await?;

    let audit = fx.workload.audit().await?;
    let said = |needle: &str| audit.violations.iter().any(|v| v.contains(needle));
    let item_id = item.get_str("_id")?;
    assert!(said(&format!("acknowledged item {item_id} is not in the database")), "{:#?}", audit.violations);
    assert!(said(&format!("folder {}: counter items", counted.get_str("_id")?)), "{:#?}", audit.violations);
    assert!(said(&format!("folder {unmanaged} has no member with MANAGE")), "{:#?}", audit.violations);
    let lost = format!("invitation {} of folder {folder_of_accepted} is accepted but user", accepted.get_str("_id")?);
    assert!(said(&lost), "the lost membership of {folder_of_accepted}: {:#?}", audit.violations);
    Ok(())
}
