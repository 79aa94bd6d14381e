//! Licenses (groups of emails and domains with admins), the license admins' block switch,
//! and the operator's Team Sharing switch for a license or the whole deployment.

use std::collections::BTreeSet;
use ts_contract::status::Reason;

use ts_contract::clock::bson_date;
use ts_contract::ids::{LicenseId, UserId};

use crate::email::{Email, valid_domain};
use crate::state::{Auth, AuthError, AuthResult};
use crate::store::{LicenseDoc, Sessions};

/// A license as its admins see it.
#[derive(Debug, Clone)]
pub struct License {
    /// Id.
    pub id: LicenseId,
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

impl From<LicenseDoc> for License {
    fn from(d: LicenseDoc) -> Self {
        License {
            id: d.id,
            admin_emails: d.admin_emails,
            emails: d.emails,
            domains: d.domains,
            blocked: d.blocked,
            sharing_enabled: d.sharing_enabled,
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

/// A license id from a request, checked by `check_license_id`.
fn license_id(id: &str) -> AuthResult<LicenseId> {
    let id = check_license_id(id)?;
    LicenseId::parse("license_id", id).map_err(|e| AuthError::InvalidArgument(e.to_string()))
}

impl Auth {
    /// Ends the sessions of these users and makes them verify their email again.
    async fn revoke_privileges(&self, user_ids: &BTreeSet<UserId>, reason: &str) -> AuthResult<()> {
        if user_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<UserId> = user_ids.iter().cloned().collect();
        let unverified = self.store.unverify(&ids, reason, bson_date(self.now())).await;
        let visible = self.sharing_changed().await;
        unverified?;
        visible?;
        self.revoke_sessions(Sessions::OfUsers(&ids), reason).await?;
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
        let id = license_id(id)?;
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
        let before = match self.store.license(&id).await? {
            Some(old) => self.store.associated_user_ids(&old.emails, &old.domains).await?,
            None => BTreeSet::new(),
        };
        let upserted = self.store.upsert_license(&id, &admins, &emails, &domains, bson_date(self.now())).await;
        let visible = self.sharing_changed().await;
        upserted?;
        visible?;
        let after = self.store.associated_user_ids(&emails, &domains).await?;
        let removed: BTreeSet<UserId> = before.difference(&after).cloned().collect();
        self.revoke_privileges(&removed, "removed from license").await?;
        tracing::info!(
            license_id = %id,
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
    pub async fn license_as_admin(&self, admin_user: &UserId, license_id: &str) -> AuthResult<License> {
        let denied = || AuthError::PermissionDenied(format!("you are not an admin of license {license_id:?}"));
        let user = self.user_view(admin_user).await.map_err(|_| denied())?;
        if !user.email_verified {
            return Err(AuthError::Precondition(Reason::EmailUnverified, "verify your email first".into()));
        }
        let license = License::from(self.store.license(&self::license_id(license_id)?).await?.ok_or_else(denied)?);
        if !license.admin_emails.contains(&user.email) {
            return Err(denied());
        }
        Ok(license)
    }

    /// Blocks or unblocks Team Sharing for a license (license admin). Blocking ends every
    /// associated user's sessions and makes them verify again.
    pub async fn set_license_blocked(&self, admin_user: &UserId, license_id: &str, blocked: bool) -> AuthResult<bool> {
        let license = self.license_as_admin(admin_user, license_id).await?;
        // Only a real change retires everyone's kept answers: an admin repeating the same
        // switch must not make every user of every license ask auth again.
        match self.store.set_license_blocked(&license.id, blocked, bson_date(self.now())).await {
            Ok(false) => {}
            Ok(true) => self.sharing_changed().await?,
            Err(e) => {
                // It may have landed before the error.
                let _retried_in_background = self.sharing_changed().await;
                return Err(e.into());
            }
        }
        if blocked {
            // License admins keep their sessions and verification: their sharing is blocked
            // like everyone's (the denial is the license's), but they must still be able to
            // manage the license, unblock included, without their own block locking them out.
            let users = self.store.associated_user_ids(&license.emails, &license.domains).await?;
            let admins = self.store.user_ids_with_emails(&license.admin_emails).await?;
            let members: BTreeSet<UserId> = users.difference(&admins).cloned().collect();
            self.revoke_privileges(&members, "license blocked team sharing").await?;
        }
        tracing::info!(license_id = %license.id, blocked, "license sharing block changed");
        Ok(blocked)
    }

    /// Switches Team Sharing for one license, or the deployment when `license_id` is empty
    /// (operator). Nothing else changes, so switching back restores everything.
    pub async fn set_sharing_enabled(&self, license_id: &str, enabled: bool) -> AuthResult<()> {
        if license_id.is_empty() {
            self.store.set_deployment_sharing(enabled).await?;
        } else if !self.store.set_license_sharing(&self::license_id(license_id)?, enabled).await? {
            return Err(AuthError::NotFound(format!("no license {license_id:?}")));
        }
        self.sharing_changed().await?;
        tracing::info!(license_id, enabled, "team sharing switch changed");
        Ok(())
    }

    /// Reads the switch for one license, or the deployment when `license_id` is empty.
    pub async fn sharing_enabled(&self, license_id: &str) -> AuthResult<bool> {
        if license_id.is_empty() {
            return self.deployment_sharing_enabled().await;
        }
        let l = self.store.license(&self::license_id(license_id)?).await?;
        l.map(|l| l.sharing_enabled).ok_or_else(|| AuthError::NotFound(format!("no license {license_id:?}")))
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
                .filter(|p| p[0] == license.id.as_str())
                .map(|mut p| p.remove(1))
                .ok_or_else(|| AuthError::InvalidArgument("page.page_token is not valid here".into()))?,
            None => String::new(),
        };
        // Domains that a license with a smaller id also claims are that license's.
        let taken = self.store.domains_claimed_before(&license.id, &license.domains).await?;
        let domains: Vec<String> = license.domains.iter().filter(|d| !taken.contains(*d)).cloned().collect();
        let (candidates, more) = self.store.associated_emails_page(&license.emails, &domains, &after, size).await?;
        // An address listed by another license belongs there when it matched here only by
        // domain, or when that license comes first.
        let elsewhere = self.store.listings_elsewhere(&license.id, &candidates).await?;
        let emails = candidates
            .iter()
            .filter(|e| {
                !elsewhere.iter().any(|(id, listed)| {
                    listed.contains(e) && (!license.emails.contains(e) || id.as_str() < license.id.as_str())
                })
            })
            .cloned()
            .collect();
        let next = match (more, candidates.last()) {
            (true, Some(last)) => plain_token(&[license.id.to_string(), last.clone()]),
            _ => String::new(),
        };
        Ok(AccountsPage { emails, next })
    }
}
