//! A person's rights (PRIVACY.md): the export of everything held about them, and erasure.
//! Auth runs every erasure, the user's own (DeleteMyAccount) and an operator's (EraseSubject),
//! because it owns the account: it asks folders and invitations for their part and records
//! the erasure in `erasures` first, so that a crash part-way is completed by the next run
//! (the background runner, or the same request again). Every step is idempotent.
//!
//! The email is replaced everywhere it remains by a pseudonym: a keyed hash of the email
//! under auth's secret, so one person's history still reads as one person and nobody without
//! the secret can tell whose it is.

use std::time::{Duration, SystemTime};

use bson::doc;
use tonic::Code;
use ts_contract::audit::Event;
use ts_contract::email::Email;
use ts_contract::ids::UserId;
use ts_contract::status::Reason;
use ts_contract::user::UserContext;
use ts_proto::internal::{
    BeginErasureRequest, CheckErasureRequest, EraseUserRequest, FinishErasureRequest, PurgeAuditEventsRequest,
    PurgeClosedRequest, RunRetentionResponse,
};
use ts_proto::public::ExportedAccount;

use crate::sessions::user_generation_key;
use crate::state::{Auth, AuthError, AuthResult};
use crate::store::{ErasureDoc, Sessions};

/// An erasure whose last attempt began longer ago than this is taken up again by the
/// background runner: longer than a live run can last (`RUN_BUDGET`). Were one still
/// alive, it stops at its next step and cannot mark the erasure done (`ErasureDoc::attempt`).
const STALLED_AFTER: Duration = Duration::from_secs(600);
/// The longest one run of an erasure may last (then it stops, and is taken up again after
/// `STALLED_AFTER`): shorter than `STALLED_AFTER`, so two runs never overlap by design.
const RUN_BUDGET: Duration = Duration::from_secs(480);
/// How often the background runner looks for stalled erasures.
const RESUME_EVERY: Duration = Duration::from_secs(30);
/// Deadline of one call to folders or invitations for an erasure or export.
pub const PRIVACY_CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// What an erasure removed.
#[derive(Debug, Clone, Default)]
pub struct Erased {
    /// The pseudonym that replaced the email.
    pub pseudonym: String,
    /// The email had an account.
    pub had_account: bool,
    /// Folders deleted (the person was their only member).
    pub deleted_folder_ids: Vec<String>,
    /// Folders whose management was handed over.
    pub handed_over_folder_ids: Vec<String>,
    /// Memberships removed.
    pub memberships_removed: u32,
    /// Invitations removed.
    pub invitations_removed: u32,
    /// License address lists the email was taken out of.
    pub license_lists: u32,
}

/// Who asked for an erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// The person, with DeleteMyAccount.
    User,
    /// An operator, for a data-subject request.
    Operator,
}

impl Requester {
    fn name(self) -> &'static str {
        match self {
            Requester::User => "user",
            Requester::Operator => "operator",
        }
    }
}

fn bson_now(t: SystemTime) -> bson::DateTime {
    bson::DateTime::from_system_time(t)
}

fn timestamp(t: bson::DateTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t.to_system_time())
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n) * 86_400)
}

/// A failed call to folders or invitations, as auth answers it.
fn upstream(what: &str, status: tonic::Status) -> AuthError {
    match status.code() {
        Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound | Code::PermissionDenied => {
            AuthError::Internal(format!("{what}: {}", status.message()))
        }
        _ => AuthError::Upstream(format!("{what}: {}", status.message())),
    }
}

/// What the caller of an export sees when a part of it could not be read.
pub fn export_failed() -> tonic::Status {
    ts_contract::status::failure(
        Code::Unavailable,
        Reason::Unavailable,
        "the export could not be completed; retry later",
    )
}

impl Auth {
    /// The caller's account as an export's first part: the account, its license, whether the
    /// license lists the email or makes them an admin.
    pub async fn export_account(&self, user: &UserContext) -> AuthResult<ExportedAccount> {
        let doc = self.store.user(&user.user_id).await?.ok_or_else(|| AuthError::NotFound("no such account".into()))?;
        let view = self.user_view(&user.user_id).await?;
        let listing = self.store.licenses_listing(&doc.email).await?;
        let ts = |t: Option<bson::DateTime>| t.map(|t| prost_types::Timestamp::from(t.to_system_time()));
        Ok(ExportedAccount {
            user: Some(crate::grpc::user_message(&view)),
            create_time: ts(doc.created_at),
            verify_time: ts(doc.verified_at),
            unverified_reason: doc.unverified_reason.unwrap_or_default(),
            license_lists_email: listing.iter().any(|l| l.emails.contains(&doc.email)),
            license_admin: listing.iter().any(|l| l.admin_emails.contains(&doc.email)),
        })
    }

    /// DeleteMyAccount: `confirm` must be the account's email, typed again.
    pub async fn delete_account(&self, user: &UserContext, confirm: &str) -> AuthResult<Erased> {
        let wrong = || AuthError::InvalidArgument("confirm_email must be the email of the signed-in account".into());
        let confirm = Email::parse(confirm).map_err(|_| wrong())?;
        let doc = self.store.user(&user.user_id).await?.ok_or_else(|| AuthError::NotFound("no such account".into()))?;
        if doc.email != confirm.as_str() {
            return Err(wrong());
        }
        self.erase(&confirm, Some(&user.user_id), false, Requester::User).await
    }

    /// The stable pseudonym of `email`.
    pub fn pseudonym(&self, email: &str) -> String {
        let mac = self.mac(&[b"teamshare pseudonym v1", email.as_bytes()]);
        ts_contract::pseudonym::from_mac(&mac)
    }

    /// The folders that stop `user_id`'s erasure: where they are the last MANAGE member of
    /// other members. FAILED_PRECONDITION (LAST_MANAGER) naming each, or nothing.
    async fn refuse_if_last_manager(&self, user_id: &UserId) -> AuthResult<()> {
        let mut folders = self.privacy.folders();
        let request = CheckErasureRequest { user_id: user_id.to_string() };
        let answer = folders.check_erasure(request).await.map_err(|s| upstream("folders", s))?.into_inner();
        if answer.blocking.is_empty() {
            return Ok(());
        }
        let folders = answer
            .blocking
            .into_iter()
            .map(|b| {
                let description =
                    format!("folder {:?} has {} other member(s) and no other manager", b.folder_name, b.other_members);
                (format!("folders/{}", b.folder_id), description)
            })
            .collect();
        Err(AuthError::LastManager(folders))
    }

    /// Erases `email` (an account, or only its traces). `user_id` is the signed-in caller's
    /// account for DeleteMyAccount. Refused with LAST_MANAGER unless `hand_over` (operator).
    pub async fn erase(
        &self,
        email: &Email,
        user_id: Option<&UserId>,
        hand_over: bool,
        by: Requester,
    ) -> AuthResult<Erased> {
        let user_id = match user_id {
            Some(u) => Some(u.clone()),
            None => self.store.user_id_by_email(email.as_str()).await?,
        };
        if let Some(u) = &user_id
            && !hand_over
        {
            self.refuse_if_last_manager(u).await?;
        }
        let pseudonym = self.pseudonym(email.as_str());
        let now = bson_now(self.now());
        let job = self.store.begin_erasure(&pseudonym, email.as_str(), user_id.as_ref(), by.name(), now).await?;
        tracing::info!(pseudonym = %job.pseudonym, by = by.name(), "erasure started");
        self.run_erasure(&job).await
    }

    /// Runs every step of `job` (all idempotent) and marks it done, if this run still owns
    /// it. An account made for the address after the erasure began is erased with it.
    async fn run_erasure(&self, job: &ErasureDoc) -> AuthResult<Erased> {
        let run = tokio::time::timeout(RUN_BUDGET, self.run_erasure_within_budget(job)).await;
        let result = run.unwrap_or_else(|_| Err(AuthError::Upstream("the erasure ran out of time; it resumes".into())));
        if result.is_err()
            && let Some(email) = &job.email
            && matches!(self.store.erasure(&job.pseudonym).await, Ok(Some(j)) if j.state == crate::store::DONE)
        {
            // Another run finished meanwhile; this one may have marked the address as being
            // erased again after that run's last step: take the mark away once more.
            let finish =
                FinishErasureRequest { user_id: String::new(), email: email.clone(), pseudonym: job.pseudonym.clone() };
            if let Err(s) = self.privacy.invitations().finish_erasure(finish).await {
                tracing::warn!(error = %s.message(), "an erasure overtaken by another could not tidy up");
            }
        }
        result
    }

    /// `run_erasure` without its time budget.
    async fn run_erasure_within_budget(&self, job: &ErasureDoc) -> AuthResult<Erased> {
        let Some(email) = job.email.clone() else {
            // Done already: its outcome is what it removed.
            return Ok(Erased { pseudonym: job.pseudonym.clone(), had_account: job.had_account, ..Erased::default() });
        };
        let pseudonym = job.pseudonym.clone();
        let mut user_id = job.user_id.clone();
        let mut out = Erased { pseudonym: pseudonym.clone(), had_account: job.had_account, ..Erased::default() };
        let attempt = job.attempt.clone().unwrap_or_default();
        // A run another one took over stops at its next step: its steps are the other's now.
        let overtaken = || async { Ok::<bool, AuthError>(!self.store.owns_erasure(&pseudonym, &attempt).await?) };
        for round in 0.. {
            if overtaken().await? {
                return Ok(out);
            }
            if let Some(found) = self.store.user_id_by_email(&email).await?
                && user_id.as_ref() != Some(&found)
            {
                // Signed up before the sign-in check could see this erasure (or before a
                // resumed run): erased too.
                self.store.erasure_found_account(&pseudonym, &found).await?;
                user_id = Some(found);
                out.had_account = true;
            }
            self.erase_steps(&email, &pseudonym, user_id.as_ref(), &mut out).await?;
            if self.store.user_id_by_email(&email).await?.is_none() {
                break;
            }
            if round == 2 {
                return Err(AuthError::Upstream("accounts keep being made for an address being erased".into()));
            }
        }
        if overtaken().await? {
            return Ok(out);
        }
        // A code asked for while the account was erased goes too (no new one is sent now).
        self.store.delete_code(&email).await?;
        // 5. Invitations to the address may be made again (a new fact, typed by someone else).
        let uid = user_id.as_ref().map(UserId::to_string).unwrap_or_default();
        let finish = FinishErasureRequest { user_id: uid, email: email.clone(), pseudonym: pseudonym.clone() };
        self.privacy.invitations().finish_erasure(finish).await.map_err(|s| upstream("invitations", s))?;
        let outcome = doc! {
            "deleted_folder_ids": out.deleted_folder_ids.clone(),
            "handed_over_folder_ids": out.handed_over_folder_ids.clone(),
            "memberships_removed": i64::from(out.memberships_removed),
            "invitations_removed": i64::from(out.invitations_removed),
            "license_lists": i64::from(out.license_lists),
        };
        if !self.store.finish_erasure(&pseudonym, &attempt, outcome, bson_now(self.now())).await? {
            // Another run took it over (a repeated request, the background runner): it
            // finishes the record, after its own last step.
            return Ok(out);
        }
        self.audit.record_in_background(Event {
            actor_email: if job.requested_by == Requester::Operator.name() {
                ts_contract::audit::OPERATOR.to_owned()
            } else {
                pseudonym.clone()
            },
            action: "privacy.erase".into(),
            ..Default::default()
        });
        tracing::info!(%pseudonym, "erasure finished");
        Ok(out)
    }

    /// Steps 1 to 4 of an erasure, for one account (or none).
    async fn erase_steps(
        &self,
        email: &str,
        pseudonym: &str,
        user_id: Option<&UserId>,
        out: &mut Erased,
    ) -> AuthResult<()> {
        let uid = user_id.map(UserId::to_string).unwrap_or_default();
        let (email, pseudonym) = (email.to_owned(), pseudonym.to_owned());
        // 1. Every session ends: nothing the person starts from now on gets past a gateway.
        if let Some(u) = user_id {
            self.revoke_sessions(Sessions::OfUsers(std::slice::from_ref(u)), "account erased").await?;
        }
        // 2. Invitations: none can be made to the email (until 5) or by the account (for
        //    good); those to the email and pending ones by the account are deleted.
        let begin = BeginErasureRequest { user_id: uid.clone(), email: email.clone(), pseudonym: pseudonym.clone() };
        let removed =
            self.privacy.invitations().begin_erasure(begin).await.map_err(|s| upstream("invitations", s))?.into_inner();
        out.invitations_removed += removed.removed;
        // 3. Folders: a tombstone first (no membership for the account again), memberships,
        //    folders they alone were in (keys destroyed), the email in items, folders and audit.
        let erase_user = EraseUserRequest { user_id: uid, email: email.clone(), pseudonym, hand_over_management: true };
        let folders =
            self.privacy.folders().erase_user(erase_user).await.map_err(|s| upstream("folders", s))?.into_inner();
        out.deleted_folder_ids.extend(folders.deleted_folder_ids);
        out.handed_over_folder_ids.extend(folders.handed_over_folder_ids);
        out.memberships_removed += folders.memberships_removed;
        // 4. Auth's own documents.
        self.store.delete_code(&email).await?;
        let lists = self.store.pull_license_email(&email).await?;
        out.license_lists += u32::try_from(lists).unwrap_or(u32::MAX);
        if lists > 0 {
            // Who belongs to which license changed.
            self.sharing_changed().await?;
        }
        if let Some(u) = user_id {
            // Again: a session a racing sign-in opened after step 1 ends too.
            self.revoke_sessions(Sessions::OfUsers(std::slice::from_ref(u)), "account erased").await?;
            if self.store.revocation_pending_of(u).await? {
                // Deleting the sessions now would let the outbox vouch for a Redis that does
                // not hold their revocation yet; the next run finishes once it does.
                return Err(AuthError::Upstream(
                    "session revocations are not in redis yet; the erasure resumes".into(),
                ));
            }
            self.store.delete_user(u).await?;
            let token_life = Duration::from_secs(self.policy.access_token_ttl_secs + 60);
            self.store.strip_sessions_of(u, bson_now(self.now() + token_life)).await?;
            self.views.remove(u);
            if !self.generations.invalidate(&user_generation_key(u)).await {
                return Err(AuthError::NotYetEverywhere);
            }
        }
        Ok(())
    }

    /// Whether an erasure of `email` is running (no sign-in meanwhile).
    pub(crate) async fn erasure_running(&self, email: &str) -> AuthResult<bool> {
        Ok(self.store.erasure_is_running(&self.pseudonym(email)).await?)
    }

    /// Completes every erasure a crash (or a failing dependency) left unfinished; how many.
    pub async fn resume_erasures(&self) -> AuthResult<u64> {
        let mut done = 0;
        loop {
            let now = self.now();
            let stale = now.checked_sub(STALLED_AFTER).unwrap_or(SystemTime::UNIX_EPOCH);
            let Some(job) = self.store.claim_stalled_erasure(bson_now(stale), bson_now(now)).await? else {
                return Ok(done);
            };
            tracing::info!(pseudonym = %job.pseudonym, "resuming an unfinished erasure");
            // One that fails again waits for its next turn; the others still run now.
            match self.run_erasure(&job).await {
                Ok(_) => done += 1,
                Err(e) => {
                    tracing::warn!(pseudonym = %job.pseudonym, error = %e, "an erasure could not be completed yet")
                }
            }
        }
    }

    /// The retention job: purges what the settings say must go, and completes stalled
    /// erasures. Every replica may run it; each step is idempotent.
    pub async fn run_retention(&self) -> AuthResult<RunRetentionResponse> {
        let now = self.now();
        let before = |d: Duration| bson_now(now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH));
        let retention = &self.retention;
        let codes = self.store.purge_codes(bson_now(now)).await?;
        // Never a revocation an access token may still need (Redis may have to be given it
        // again), whatever the setting.
        let token_life = Duration::from_secs(self.policy.access_token_ttl_secs + 60);
        let ended = days(retention.ended_sessions_days).max(token_life);
        let sessions = self.store.purge_sessions(before(ended)).await?;
        let closed = PurgeClosedRequest { before: Some(timestamp(before(days(retention.closed_invitations_days)))) };
        let invitations = self
            .privacy
            .invitations()
            .purge_closed(closed)
            .await
            .map_err(|s| upstream("invitations", s))?
            .into_inner()
            .removed;
        let expired = PurgeAuditEventsRequest { before: Some(prost_types::Timestamp::from(now)) };
        let audit_events =
            self.privacy.folders().purge_audit_events(expired).await.map_err(|s| upstream("folders", s))?.into_inner();
        let erasures_completed = self.resume_erasures().await?;
        let report = RunRetentionResponse {
            codes,
            sessions,
            invitations,
            audit_events: audit_events.removed,
            erasures_completed,
        };
        tracing::info!(?report, "retention job ran");
        Ok(report)
    }

    /// Runs the retention job every `retention.interval_secs` and looks for stalled erasures
    /// every 30 s, until `stop` turns true.
    pub async fn run_privacy_jobs(self: std::sync::Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let interval = Duration::from_secs(self.retention.interval_secs.max(1));
        // Not at once: the services it calls start alongside.
        let first = tokio::time::Instant::now() + interval.min(Duration::from_secs(60));
        let mut retention = tokio::time::interval_at(first, interval);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resume = tokio::time::interval(RESUME_EVERY);
        resume.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Decided first, run after: the stop signal's guard must not live across the work.
            let retention_due = tokio::select! {
                _ = retention.tick() => true,
                _ = resume.tick() => false,
                _ = stop.wait_for(|s| *s) => return,
            };
            if retention_due {
                if let Err(e) = self.run_retention().await {
                    tracing::warn!(error = %e, "retention job failed; it runs again at the next interval");
                }
            } else if let Err(e) = self.resume_erasures().await {
                tracing::warn!(error = %e, "an unfinished erasure could not be completed yet");
            }
        }
    }
}
