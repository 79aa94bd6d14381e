//! Licenses (groups of emails and domains with admins), the license admins' block switch,
//! and the operator's Team Sharing switch for a license or the whole deployment.

use std::collections::BTreeSet;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use ts_contract::clock::bson_date;

use crate::email::{Email, valid_domain};
use crate::state::{Auth, AuthError, AuthResult};

/// A license as stored.
#[derive(Debug, Clone, Default)]
pub struct License {
    /// Id.
    pub id: String,
    /// Admin emails.
    pub admin_emails: Vec<String>,
    /// Member emails.
    pub emails: Vec<String>,
    /// Member domains.
    pub domains: Vec<String>,
    /// Blocked by a license admin.
    pub blocked: bool,
    /// Switched on by the operator.
    pub sharing_enabled: bool,
}

fn strings(d: &Document, key: &str) -> Vec<String> {
    d.get_array(key).map(|a| a.iter().filter_map(Bson::as_str).map(str::to_owned).collect()).unwrap_or_default()
}

impl From<&Document> for License {
    fn from(d: &Document) -> Self {
        License {
            id: d.get_str("_id").unwrap_or_default().to_owned(),
            admin_emails: strings(d, "admin_emails"),
            emails: strings(d, "emails"),
            domains: strings(d, "domains"),
            blocked: d.get_bool("blocked").unwrap_or(false),
            sharing_enabled: d.get_bool("sharing_enabled").unwrap_or(true),
        }
    }
}

/// License ids are chosen by the operator: bounded and printable.
pub fn check_license_id(id: &str) -> AuthResult<&str> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(AuthError::InvalidArgument("license_id must be 1-128 characters of [A-Za-z0-9._-]".into()));
    }
    Ok(id)
}

/// The users filter matching every email associated with `emails` or `domains`.
fn associated(emails: &[String], domains: &[String]) -> Document {
    let mut any = vec![Bson::Document(doc! { "email": { "$in": emails } })];
    if !domains.is_empty() {
        let alternatives: Vec<String> = domains.iter().map(|d| d.replace('.', "\\.")).collect();
        any.push(Bson::Document(doc! { "email": { "$regex": format!("@({})$", alternatives.join("|")) } }));
    }
    doc! { "$or": any }
}

impl Auth {
    async fn user_ids(&self, filter: Document) -> AuthResult<BTreeSet<String>> {
        let docs: Vec<Document> = self.users().find(filter).projection(doc! { "_id": 1 }).await?.try_collect().await?;
        Ok(docs.iter().filter_map(|d| d.get_str("_id").ok().map(str::to_owned)).collect())
    }

    /// Ends the sessions of these users and makes them verify their email again.
    async fn revoke_privileges(&self, user_ids: &BTreeSet<String>, reason: &str) -> AuthResult<()> {
        if user_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<&String> = user_ids.iter().collect();
        self.users().update_many(doc! { "_id": { "$in": &ids } }, doc! { "$set": { "email_verified": false, "unverified_at": bson_date(self.now()), "unverified_reason": reason } }).await?;
        self.revoke_sessions(doc! { "user_id": { "$in": &ids } }, reason).await?;
        Ok(())
    }

    /// Creates or replaces a license (operator). Users no longer associated with it lose
    /// their sessions and must verify again.
    pub async fn upsert_license(
        &self,
        id: &str,
        admins: &[String],
        emails: &[String],
        domains: &[String],
    ) -> AuthResult<()> {
        let id = check_license_id(id)?;
        let parse_all = |list: &[String], field: &str| -> AuthResult<Vec<String>> {
            list.iter()
                .map(|e| {
                    Email::parse(e)
                        .map(|e| e.as_str().to_owned())
                        .map_err(|m| AuthError::InvalidArgument(format!("{field}: {e:?} {m}")))
                })
                .collect()
        };
        let admins = parse_all(admins, "admin_emails")?;
        let emails = parse_all(emails, "emails")?;
        let domains: Vec<String> = domains.iter().map(|d| d.trim().to_lowercase()).collect();
        if let Some(bad) = domains.iter().find(|d| !valid_domain(d)) {
            return Err(AuthError::InvalidArgument(format!("domains: {bad:?} is not a valid domain")));
        }
        let before = match self.licenses().find_one(doc! { "_id": id }).await? {
            Some(old) => {
                let old = License::from(&old);
                self.user_ids(associated(&old.emails, &old.domains)).await?
            }
            None => BTreeSet::new(),
        };
        self.licenses()
            .update_one(
                doc! { "_id": id },
                doc! {
                    "$set": { "admin_emails": &admins, "emails": &emails, "domains": &domains, "updated_at": bson_date(self.now()) },
                    "$setOnInsert": { "blocked": false, "sharing_enabled": true },
                },
            )
            .upsert(true)
            .await?;
        let after = self.user_ids(associated(&emails, &domains)).await?;
        let removed: BTreeSet<String> = before.difference(&after).cloned().collect();
        self.revoke_privileges(&removed, "removed from license").await?;
        tracing::info!(
            license_id = id,
            admins = admins.len(),
            emails = emails.len(),
            domains = domains.len(),
            removed = removed.len(),
            "license upserted"
        );
        Ok(())
    }

    /// The license `license_id` if `admin_user` is a verified admin of it; otherwise
    /// PERMISSION_DENIED (also for a license that does not exist: no existence leak).
    pub async fn license_as_admin(&self, admin_user: &str, license_id: &str) -> AuthResult<License> {
        let denied = || AuthError::PermissionDenied(format!("you are not an admin of license {license_id:?}"));
        let user = self.user_view(admin_user).await.map_err(|_| denied())?;
        if !user.email_verified {
            return Err(AuthError::Precondition("verify your email first".into()));
        }
        let license =
            self.licenses().find_one(doc! { "_id": check_license_id(license_id)? }).await?.ok_or_else(denied)?;
        let license = License::from(&license);
        if !license.admin_emails.contains(&user.email) {
            return Err(denied());
        }
        Ok(license)
    }

    /// Blocks or unblocks Team Sharing for a license (license admin). Blocking ends every
    /// associated user's sessions and makes them verify again.
    pub async fn set_license_blocked(&self, admin_user: &str, license_id: &str, blocked: bool) -> AuthResult<bool> {
        let license = self.license_as_admin(admin_user, license_id).await?;
        self.licenses()
            .update_one(
                doc! { "_id": &license.id },
                doc! { "$set": { "blocked": blocked, "blocked_changed_at": bson_date(self.now()) } },
            )
            .await?;
        if blocked {
            // License admins keep their sessions and verification: their sharing is blocked
            // like everyone's (the denial is the license's), but they must still be able to
            // manage the license, unblock included, without their own block locking them out.
            let users = self.user_ids(associated(&license.emails, &license.domains)).await?;
            let admins = self.user_ids(doc! { "email": { "$in": &license.admin_emails } }).await?;
            let members: BTreeSet<String> = users.difference(&admins).cloned().collect();
            self.revoke_privileges(&members, "license blocked team sharing").await?;
        }
        tracing::info!(license_id = %license.id, blocked, "license sharing block changed");
        Ok(blocked)
    }

    /// Switches Team Sharing for one license, or the deployment when `license_id` is empty
    /// (operator). Nothing else changes, so switching back restores everything.
    pub async fn set_sharing_enabled(&self, license_id: &str, enabled: bool) -> AuthResult<()> {
        if license_id.is_empty() {
            self.settings()
                .update_one(doc! { "_id": "deployment" }, doc! { "$set": { "sharing_enabled": enabled } })
                .upsert(true)
                .await?;
        } else {
            let r = self
                .licenses()
                .update_one(
                    doc! { "_id": check_license_id(license_id)? },
                    doc! { "$set": { "sharing_enabled": enabled } },
                )
                .await?;
            if r.matched_count == 0 {
                return Err(AuthError::NotFound(format!("no license {license_id:?}")));
            }
        }
        tracing::info!(license_id, enabled, "team sharing switch changed");
        Ok(())
    }

    /// Reads the switch for one license, or the deployment when `license_id` is empty.
    pub async fn sharing_enabled(&self, license_id: &str) -> AuthResult<bool> {
        if license_id.is_empty() {
            return self.deployment_sharing_enabled().await;
        }
        let l = self.licenses().find_one(doc! { "_id": check_license_id(license_id)? }).await?;
        l.map(|l| License::from(&l).sharing_enabled)
            .ok_or_else(|| AuthError::NotFound(format!("no license {license_id:?}")))
    }
}

/// Default and maximum page sizes of `ListLicenseEmails`' accounts.
const ACCOUNTS_PAGE: (u32, u32) = (100, 500);

/// A page of the accounts that belong to a license.
#[derive(Debug, Clone, Default)]
pub struct AccountsPage {
    /// Emails, ascending.
    pub emails: Vec<String>,
    /// Token of the next page, empty at the end.
    pub next: String,
}

impl Auth {
    /// The accounts that belong to `license` (as `license_of` decides: an explicit listing
    /// wins over a domain, and of two licenses the first by id wins), in email order from
    /// after the page token.
    pub async fn license_accounts(
        &self,
        license: &License,
        page: &Option<ts_proto::public::PageRequest>,
    ) -> AuthResult<AccountsPage> {
        use ts_contract::paging::{open_plain, page_size, plain_token, token};
        let size = page_size(page, ACCOUNTS_PAGE.0, ACCOUNTS_PAGE.1);
        let after = match token(page) {
            Some(t) => open_plain(t, 2)
                .ok()
                .filter(|p| p[0] == license.id)
                .map(|mut p| p.remove(1))
                .ok_or_else(|| AuthError::InvalidArgument("page.page_token is not valid here".into()))?,
            None => String::new(),
        };
        // Domains that a license with a smaller id also claims are that license's.
        let earlier: Vec<Document> = self
            .licenses()
            .find(doc! { "_id": { "$lt": &license.id }, "domains": { "$in": &license.domains } })
            .projection(doc! { "domains": 1 })
            .await?
            .try_collect()
            .await?;
        let taken: BTreeSet<String> = earlier.iter().flat_map(|d| strings(d, "domains")).collect();
        let domains: Vec<String> = license.domains.iter().filter(|d| !taken.contains(*d)).cloned().collect();
        let filter = doc! { "$and": [associated(&license.emails, &domains), { "email": { "$gt": &after } }] };
        let (docs, more) = ts_stores::find_page(&self.users(), filter, doc! { "email": 1 }, size).await?;
        let candidates: Vec<String> = docs.iter().filter_map(|d| d.get_str("email").ok().map(str::to_owned)).collect();
        // An address listed by another license belongs there when it matched here only by
        // domain, or when that license comes first.
        let elsewhere: Vec<Document> = self
            .licenses()
            .find(doc! { "_id": { "$ne": &license.id }, "emails": { "$in": &candidates } })
            .projection(doc! { "emails": 1 })
            .await?
            .try_collect()
            .await?;
        let emails = candidates
            .iter()
            .filter(|e| {
                !elsewhere.iter().any(|l| {
                    strings(l, "emails").contains(e)
                        && (!license.emails.contains(e) || l.get_str("_id").unwrap_or_default() < license.id.as_str())
                })
            })
            .cloned()
            .collect();
        let next = match (more, candidates.last()) {
            (true, Some(last)) => plain_token(&[license.id.clone(), last.clone()]),
            _ => String::new(),
        };
        Ok(AccountsPage { emails, next })
    }
}
