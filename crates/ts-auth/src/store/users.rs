//! The `users` collection: one document per email, made on the first verified sign-in.

use std::collections::BTreeSet;

use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};
use ts_contract::ids::UserId;

use super::{Store, StoreResult, ids};

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserDoc {
    /// User id.
    #[serde(rename = "_id")]
    pub id: UserId,
    /// Normalised email (unique).
    pub email: String,
    /// Verified now (false after a license change or block made them verify again).
    #[serde(default)]
    pub email_verified: bool,
    /// When they last verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime>,
    /// How they last verified (`email`, `sso`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_via: Option<String>,
    /// When the account was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime>,
    /// When they were last made to verify again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unverified_at: Option<DateTime>,
    /// Why they were last made to verify again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unverified_reason: Option<String>,
}

/// The users filter matching every email associated with `emails` or `domains`.
pub(super) fn associated(emails: &[String], domains: &[String]) -> Document {
    let mut any = vec![Bson::Document(doc! { "email": { "$in": emails } })];
    if !domains.is_empty() {
        let alternatives: Vec<String> = domains.iter().map(|d| d.replace('.', "\\.")).collect();
        any.push(Bson::Document(doc! { "email": { "$regex": format!("@({})$", alternatives.join("|")) } }));
    }
    doc! { "$or": any }
}

fn id_list(ids: &[UserId]) -> Vec<&str> {
    ids.iter().map(UserId::as_str).collect()
}

impl Store {
    /// Marks `email` verified via `via` at `now`, making the user (as `new_id`) if there is
    /// none, in one atomic upsert; the user after the change. A concurrent first sign-in
    /// of the same email can fail this with a duplicate-key error.
    pub async fn mark_verified(
        &self,
        email: &str,
        via: &str,
        now: DateTime,
        new_id: &UserId,
    ) -> StoreResult<Option<UserDoc>> {
        self.users
            .find_one_and_update(
                doc! { "email": email },
                doc! {
                    "$set": { "email_verified": true, "verified_at": now, "verified_via": via },
                    "$setOnInsert": { "_id": new_id.as_str(), "created_at": now },
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
    }

    /// A user, if there is one.
    pub async fn user(&self, id: &UserId) -> StoreResult<Option<UserDoc>> {
        self.users.find_one(doc! { "_id": id.as_str() }).await
    }

    /// The id of the user with this email, if any.
    pub async fn user_id_by_email(&self, email: &str) -> StoreResult<Option<UserId>> {
        let found = self
            .users
            .clone_with_type::<super::IdOnly<UserId>>()
            .find_one(doc! { "email": email })
            .projection(doc! { "_id": 1 })
            .await?;
        Ok(found.map(|d| d.id))
    }

    /// The users whose email is listed in `emails` or is in one of `domains`.
    pub async fn associated_user_ids(&self, emails: &[String], domains: &[String]) -> StoreResult<BTreeSet<UserId>> {
        Ok(ids(&self.users, associated(emails, domains), None).await?.into_iter().collect())
    }

    /// The users with exactly these emails.
    pub async fn user_ids_with_emails(&self, emails: &[String]) -> StoreResult<BTreeSet<UserId>> {
        Ok(ids(&self.users, doc! { "email": { "$in": emails } }, None).await?.into_iter().collect())
    }

    /// Makes these users verify their email again, for `reason`.
    pub async fn unverify(&self, ids: &[UserId], reason: &str, now: DateTime) -> StoreResult<()> {
        self.users
            .update_many(
                doc! { "_id": { "$in": id_list(ids) } },
                doc! { "$set": { "email_verified": false, "unverified_at": now, "unverified_reason": reason } },
            )
            .await
            .map(drop)
    }

    /// Up to `size` emails, ascending after `after`, of the users associated with `emails`
    /// or `domains`; and whether more follow (one more is read to know).
    pub async fn associated_emails_page(
        &self,
        emails: &[String],
        domains: &[String],
        after: &str,
        size: usize,
    ) -> StoreResult<(Vec<String>, bool)> {
        let filter = doc! { "$and": [associated(emails, domains), { "email": { "$gt": after } }] };
        let limit = i64::try_from(size).unwrap_or(i64::MAX).saturating_add(1);
        let mut docs: Vec<UserDoc> =
            self.users.find(filter).sort(doc! { "email": 1 }).limit(limit).await?.try_collect().await?;
        let more = docs.len() > size;
        docs.truncate(size);
        Ok((docs.into_iter().map(|u| u.email).collect(), more))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{keys, load, round_trip};
    use super::*;

    fn sample() -> UserDoc {
        let at = DateTime::from_millis(1_700_000_000_123);
        UserDoc {
            id: UserId::new(),
            email: "alice@example.com".into(),
            email_verified: true,
            verified_at: Some(at),
            verified_via: Some("email".into()),
            created_at: Some(at),
            unverified_at: Some(at),
            unverified_reason: Some("removed from license".into()),
        }
    }

    #[test]
    fn users_keep_their_stored_field_names() {
        let u = sample();
        assert_eq!(
            keys(&u),
            [
                "_id",
                "email",
                "email_verified",
                "verified_at",
                "verified_via",
                "created_at",
                "unverified_at",
                "unverified_reason"
            ]
        );
        let stored = bson::to_document(&u).unwrap();
        assert_eq!(stored.get_str("_id").unwrap(), u.id.as_str());
        assert!(stored.get_bool("email_verified").unwrap());
        assert!(stored.get_datetime("verified_at").is_ok());
        let (a, b) = round_trip(&u);
        assert_eq!((a, b), (u.clone(), u));
    }

    #[test]
    fn users_with_only_id_and_email_load() {
        let id = UserId::new();
        let u: UserDoc = load(doc! { "_id": id.as_str(), "email": "bob@example.com" });
        assert_eq!(u.id, id);
        assert!(!u.email_verified);
        assert_eq!((u.verified_at, u.verified_via, u.created_at), (None, None, None));
        assert_eq!((u.unverified_at, u.unverified_reason), (None, None));
    }

    #[test]
    fn associated_is_the_old_filter() {
        let f = associated(&["a@x.test".into()], &["ex.co".into(), "b.org".into()]);
        assert_eq!(
            f,
            doc! { "$or": [ { "email": { "$in": ["a@x.test"] } }, { "email": { "$regex": "@(ex\\.co|b\\.org)$" } } ] }
        );
        assert_eq!(associated(&[], &[]), doc! { "$or": [ { "email": { "$in": [] } } ] });
    }
}
