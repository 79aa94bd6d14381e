//! The `licenses` collection: groups of emails and domains with admins, written only by the
//! operator's upsert (ids checked by `licenses::check_license_id`).

use std::collections::BTreeSet;

use bson::{DateTime, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use ts_contract::ids::LicenseId;

use super::{Store, StoreResult};

/// A license as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseDoc {
    /// License id, chosen by the operator.
    #[serde(rename = "_id")]
    pub id: LicenseId,
    /// Admin emails (normalised).
    #[serde(default)]
    pub admin_emails: Vec<String>,
    /// Member emails (normalised).
    #[serde(default)]
    pub emails: Vec<String>,
    /// Member domains (lowercase).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Blocked by a license admin.
    #[serde(default)]
    pub blocked: bool,
    /// Switched on by the operator; on when absent.
    #[serde(default = "on")]
    pub sharing_enabled: bool,
    /// Last operator upsert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime>,
    /// Last change of `blocked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_changed_at: Option<DateTime>,
}

fn on() -> bool {
    true
}

/// A license's domains, read with a projection.
#[derive(Debug, Deserialize)]
struct DomainsOnly {
    #[serde(default)]
    domains: Vec<String>,
}

/// A license's listed emails, read with a projection.
#[derive(Debug, Deserialize)]
struct EmailsOnly {
    #[serde(rename = "_id")]
    id: LicenseId,
    #[serde(default)]
    emails: Vec<String>,
}

impl Store {
    /// A license, if there is one.
    pub async fn license(&self, id: &LicenseId) -> StoreResult<Option<LicenseDoc>> {
        self.licenses.find_one(doc! { "_id": id.as_str() }).await
    }

    /// Up to `limit` licenses with ids after `after`, by id.
    pub async fn licenses_after(&self, after: &str, limit: i64) -> StoreResult<Vec<LicenseDoc>> {
        self.licenses
            .find(doc! { "_id": { "$gt": after } })
            .sort(doc! { "_id": 1 })
            .limit(limit)
            .await?
            .try_collect()
            .await
    }

    /// The license listing `email` explicitly, the first by id when several do.
    pub async fn license_listing(&self, email: &str) -> StoreResult<Option<LicenseDoc>> {
        self.licenses.find_one(doc! { "emails": email }).sort(doc! { "_id": 1 }).await
    }

    /// The license claiming `domain`, the first by id when several do.
    pub async fn license_with_domain(&self, domain: &str) -> StoreResult<Option<LicenseDoc>> {
        self.licenses.find_one(doc! { "domains": domain }).sort(doc! { "_id": 1 }).await
    }

    /// Creates or replaces a license's admins and members at `now`; a new license starts
    /// unblocked and switched on.
    pub async fn upsert_license(
        &self,
        id: &LicenseId,
        admins: &[String],
        emails: &[String],
        domains: &[String],
        now: DateTime,
    ) -> StoreResult<()> {
        self.licenses
            .update_one(
                doc! { "_id": id.as_str() },
                doc! {
                    "$set": { "admin_emails": admins, "emails": emails, "domains": domains, "updated_at": now },
                    "$setOnInsert": { "blocked": false, "sharing_enabled": true },
                },
            )
            .upsert(true)
            .await
            .map(drop)
    }

    /// Sets a license admin's block.
    /// Whether it changed (false when the license was already so).
    pub async fn set_license_blocked(&self, id: &LicenseId, blocked: bool, now: DateTime) -> StoreResult<bool> {
        let r = self
            .licenses
            .update_one(
                doc! { "_id": id.as_str(), "blocked": { "$ne": blocked } },
                doc! { "$set": { "blocked": blocked, "blocked_changed_at": now } },
            )
            .await?;
        Ok(r.modified_count > 0)
    }

    /// Sets the operator's switch of a license; false when there is no such license.
    pub async fn set_license_sharing(&self, id: &LicenseId, enabled: bool) -> StoreResult<bool> {
        let r = self
            .licenses
            .update_one(doc! { "_id": id.as_str() }, doc! { "$set": { "sharing_enabled": enabled } })
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Those of `domains` that a license with an id before `id` also claims.
    pub async fn domains_claimed_before(&self, id: &LicenseId, domains: &[String]) -> StoreResult<BTreeSet<String>> {
        let earlier: Vec<DomainsOnly> = self
            .licenses
            .clone_with_type::<DomainsOnly>()
            .find(doc! { "_id": { "$lt": id.as_str() }, "domains": { "$in": domains } })
            .projection(doc! { "domains": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(earlier.into_iter().flat_map(|l| l.domains).collect())
    }

    /// The other licenses than `id` listing any of `emails`, with their listed emails.
    pub async fn listings_elsewhere(
        &self,
        id: &LicenseId,
        emails: &[String],
    ) -> StoreResult<Vec<(LicenseId, Vec<String>)>> {
        let found: Vec<EmailsOnly> = self
            .licenses
            .clone_with_type::<EmailsOnly>()
            .find(doc! { "_id": { "$ne": id.as_str() }, "emails": { "$in": emails } })
            .projection(doc! { "emails": 1 })
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(|l| (l.id, l.emails)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{keys, load, round_trip};
    use super::*;

    #[test]
    fn licenses_keep_their_stored_field_names() {
        let at = DateTime::from_millis(1_700_000_000_123);
        let l = LicenseDoc {
            id: LicenseId::parse("license_id", "acme-1").unwrap(),
            admin_emails: vec!["boss@acme.test".into()],
            emails: vec!["a@gmail.test".into()],
            domains: vec!["acme.test".into()],
            blocked: true,
            sharing_enabled: false,
            updated_at: Some(at),
            blocked_changed_at: Some(at),
        };
        assert_eq!(
            keys(&l),
            [
                "_id",
                "admin_emails",
                "emails",
                "domains",
                "blocked",
                "sharing_enabled",
                "updated_at",
                "blocked_changed_at"
            ]
        );
        let stored = bson::to_document(&l).unwrap();
        assert_eq!(stored.get_str("_id").unwrap(), "acme-1");
        assert_eq!(stored.get_array("domains").unwrap()[0].as_str(), Some("acme.test"));
        assert!(stored.get_bool("blocked").unwrap());
        let (a, b) = round_trip(&l);
        assert_eq!((a, b), (l.clone(), l));
    }

    #[test]
    fn licenses_without_optional_fields_load() {
        let l: LicenseDoc = load(doc! { "_id": "acme" });
        assert!(l.admin_emails.is_empty() && l.emails.is_empty() && l.domains.is_empty());
        assert!(!l.blocked, "unblocked when absent");
        assert!(l.sharing_enabled, "switched on when absent");
        assert_eq!((l.updated_at, l.blocked_changed_at), (None, None));
        let d: DomainsOnly = load(doc! { "_id": "acme" });
        assert!(d.domains.is_empty());
        let e: EmailsOnly = load(doc! { "_id": "acme", "emails": ["x@y.test"] });
        assert_eq!((e.id.as_str(), e.emails), ("acme", vec!["x@y.test".to_owned()]));
    }
}
