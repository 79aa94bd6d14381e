//! What every folders RPC does around its body: who is calling (the user the gateway
//! vouched for) and whether they may share right now, their access to the folder (cached in
//! Redis, invalidated on every change), and an audit event for every mutation and failure.

use std::time::{Duration, SystemTime};

use bson::doc;
use tonic::{Request, Status};
use ts_contract::user::UserContext;
use ts_proto::internal::CheckSharingAllowedRequest;
use ts_proto::public::AccessLevel;
use ts_runtime::server::RequestId;

use ts_contract::audit::bounded;

use crate::FoldersApi;

/// Membership answers stay in Redis this long at most.
const MEMBER_TTL: Duration = Duration::from_secs(30);

/// The caller of one RPC.
#[derive(Debug, Clone)]
pub struct Call {
    /// The signed-in user.
    pub user: UserContext,
    /// The request id, for the audit trail.
    pub request_id: String,
}

/// The cache key of a folder's generation: replaced by every change to its members or items,
/// so that no answer read before a change is cached after it (see `ts_stores::cache`). The
/// `{f:<id>}` hash tag keeps a folder's keys in one Redis Cluster slot.
pub fn folder_generation_key(folder_id: &str) -> String {
    format!("ts:{{f:{folder_id}}}:gen")
}

/// The cache key of a membership.
pub fn member_key(folder_id: &str, user_id: &str) -> String {
    format!("ts:{{f:{folder_id}}}:member:{user_id}")
}

/// The cache key of an item's stored (encrypted) document.
pub fn item_key(folder_id: &str, item_id: &str) -> String {
    format!("ts:{{f:{folder_id}}}:item:{item_id}")
}

/// How long an audit event is kept.
fn retention(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * 86_400)
}

fn level_name(level: AccessLevel) -> &'static str {
    match level {
        AccessLevel::View => "VIEW",
        AccessLevel::Edit => "EDIT",
        AccessLevel::Manage => "MANAGE",
        AccessLevel::Unspecified => "no",
    }
}

impl FoldersApi {
    /// Identifies the caller and checks with auth that they may share right now. A refusal
    /// is audited as `action`.
    pub(crate) async fn begin<T>(&self, request: &Request<T>, action: &str, folder_id: &str) -> Result<Call, Status> {
        let user = UserContext::from_metadata(request.metadata())?;
        let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        let call = Call { user, request_id };
        let reply = self
            .identity
            .clone()
            .check_sharing_allowed(CheckSharingAllowedRequest {
                user_id: call.user.user_id.to_string(),
                email: String::new(),
            })
            .await
            .map_err(|s| {
                tracing::warn!(code = ?s.code(), "cannot check sharing permission with auth");
                Status::unavailable("cannot check sharing permission right now; retry later")
            })?
            .into_inner();
        if !reply.allowed {
            let status = ts_contract::status::sharing_refusal(reply.denial);
            self.audit(&call, action, folder_id, status.code()).await;
            return Err(status);
        }
        Ok(call)
    }

    /// Runs one RPC body: identify and check the caller, run `body`, audit the outcome.
    pub(crate) async fn handle<T, R, F, Fut>(
        &self,
        request: &Request<T>,
        action: &str,
        folder_id: &str,
        mutating: bool,
        body: F,
    ) -> Result<R, Status>
    where
        F: FnOnce(Call) -> Fut,
        Fut: std::future::Future<Output = Result<R, Status>>,
    {
        // Nothing malformed reaches the stores, the cache keys or the audit trail.
        if !folder_id.is_empty() {
            ts_contract::ids::require_uuid("folder_id", folder_id)?;
        }
        let call = self.begin(request, action, folder_id).await?;
        let result = body(call.clone()).await;
        self.finish(&call, action, folder_id, mutating, result).await
    }

    /// Audits the outcome: every failure, and every success of a mutating action.
    pub(crate) async fn finish<R>(
        &self,
        call: &Call,
        action: &str,
        folder_id: &str,
        mutating: bool,
        result: Result<R, Status>,
    ) -> Result<R, Status> {
        match &result {
            Ok(_) if mutating => self.audit(call, action, folder_id, tonic::Code::Ok).await,
            Ok(_) => {}
            Err(s) => self.audit(call, action, folder_id, s.code()).await,
        }
        result
    }

    /// Appends an audit event; a failure to write it is logged, never hidden from operators.
    pub(crate) async fn audit(&self, call: &Call, action: &str, folder_id: &str, code: tonic::Code) {
        self.record_audit(
            &call.user.email,
            &call.user.user_id,
            folder_id,
            "",
            action,
            ts_contract::status::code_name(code),
            &call.request_id,
        )
        .await;
    }

    /// Appends an audit event from its parts, each bounded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record_audit(
        &self,
        email: &str,
        user_id: &str,
        folder_id: &str,
        license_id: &str,
        action: &str,
        code: &str,
        request_id: &str,
    ) {
        let now = SystemTime::now();
        let expires = now + retention(self.audit_retention_days);
        let event = doc! {
            "_id": uuid::Uuid::new_v4().to_string(),
            "time": bson::DateTime::from_system_time(now),
            "actor_email": bounded(email),
            "actor_user_id": bounded(user_id),
            "folder_id": bounded(folder_id),
            "license_id": bounded(license_id),
            "action": bounded(action),
            "status_code": bounded(code),
            "request_id": bounded(request_id),
            "expires_at": bson::DateTime::from_system_time(expires),
        };
        if let Err(e) = self.db.collection::<bson::Document>("audit_events").insert_one(event).await {
            tracing::error!(error = %e, action, code, "cannot write audit event");
        }
    }

    /// The caller's access to a folder, from the cache or MongoDB.
    pub(crate) async fn access(&self, folder_id: &str, user_id: &str) -> Result<AccessLevel, Status> {
        let key = member_key(folder_id, user_id);
        if let Some(v) = self.cache.get(&key).await
            && let Some(level) = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<i32>().ok())
                .and_then(|n| AccessLevel::try_from(n).ok())
        {
            return Ok(level);
        }
        let generation = self.cache.generation(&folder_generation_key(folder_id)).await;
        let found = self
            .members()
            .find_one(doc! { "folder_id": folder_id, "user_id": user_id })
            .await
            .map_err(crate::store_error)?;
        let level = found
            .and_then(|m| m.get_i32("access").ok())
            .and_then(|n| AccessLevel::try_from(n).ok())
            .unwrap_or(AccessLevel::Unspecified);
        self.cache.set_if_generation(&generation, &key, (level as i32).to_string().into_bytes(), MEMBER_TTL).await;
        Ok(level)
    }

    /// Requires at least `min` access. Non-members get NOT_FOUND: a folder they cannot see
    /// does not exist for them.
    pub(crate) async fn require(&self, call: &Call, folder_id: &str, min: AccessLevel) -> Result<AccessLevel, Status> {
        if folder_id.is_empty() {
            return Err(Status::invalid_argument("folder_id is required"));
        }
        let level = self.access(folder_id, &call.user.user_id).await?;
        if level == AccessLevel::Unspecified {
            return Err(Status::not_found("folder not found"));
        }
        if level < min {
            return Err(Status::permission_denied(format!(
                "this needs {} access; you have {}",
                level_name(min),
                level_name(level)
            )));
        }
        Ok(level)
    }

    /// Forgets cached memberships after a change (and starts a new folder generation).
    pub(crate) async fn forget_members(&self, folder_id: &str, user_ids: &[String]) {
        let keys: Vec<String> = user_ids.iter().map(|u| member_key(folder_id, u)).collect();
        self.cache.invalidate(&folder_generation_key(folder_id), &keys).await;
    }

    /// Forgets cached items after a change (and starts a new folder generation).
    pub(crate) async fn forget_items(&self, folder_id: &str, item_ids: &[&str]) {
        let keys: Vec<String> = item_ids.iter().map(|i| item_key(folder_id, i)).collect();
        self.cache.invalidate(&folder_generation_key(folder_id), &keys).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag between the braces, which picks the Redis Cluster slot.
    fn tag(key: &str) -> &str {
        let open = key.find('{').map_or(0, |i| i + 1);
        let close = key[open..].find('}').map_or(key.len(), |i| open + i);
        &key[open..close]
    }

    #[test]
    fn a_folders_cache_keys_share_one_slot_and_no_two_folders_share_a_generation() {
        let (generation, member, item) = (folder_generation_key("f1"), member_key("f1", "u1"), item_key("f1", "i1"));
        assert_eq!(generation, "ts:{f:f1}:gen");
        assert_eq!((tag(&generation), tag(&member), tag(&item)), ("f:f1", "f:f1", "f:f1"), "one Lua call, one slot");
        assert_ne!(folder_generation_key("f1"), folder_generation_key("f2"));
        assert_ne!(member_key("f1", "u1"), member_key("f1", "u2"));
        assert_ne!(item_key("f1", "i1"), item_key("f2", "i1"));
    }

    #[test]
    fn audit_events_are_kept_for_their_retention_in_days() {
        assert_eq!(retention(365), Duration::from_secs(365 * 24 * 3600));
        assert_eq!(retention(1), Duration::from_secs(86_400));
    }
}
