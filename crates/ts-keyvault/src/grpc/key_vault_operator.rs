//! `KeyVaultOperatorService` (internal, operator only): rewrapping every data key under a new
//! master key, and retiring the old one.

use tonic::{Request, Response, Status};
use ts_contract::audit::{Event, OPERATOR};
use ts_proto::internal::key_vault_operator_service_server::KeyVaultOperatorService;
use ts_proto::internal::*;
use ts_runtime::audit::audited;

use super::*;
use crate::store::Retirement;
use crate::vault::{DELETION_PENDING_DAYS, RetireStep};

/// The longest backup retention window accepted, in days (ten years).
const MAX_BACKUP_RETENTION_DAYS: u32 = 3650;

/// AWS KMS's default waiting period before a deletion, used when a request names none.
const DEFAULT_DELETION_PENDING_DAYS: u32 = 30;

/// The longest KMS key id, ARN or alias that KMS accepts.
const MAX_KMS_KEY_ID_LEN: usize = 2048;

/// An operator action as the audit trail records it. Key ids are not secrets, but they are
/// not the trail's business either.
fn operator_event(action: &str) -> Event {
    Event { actor_email: OPERATOR.into(), action: action.into(), ..Default::default() }
}

fn retirement(r: &Retirement) -> MasterKeyRetirement {
    MasterKeyRetirement {
        kms_key_id: r.master_key_id.clone(),
        disabled_at: Some(r.disabled_at.into()),
        backup_retention_days: r.backup_retention_days,
        deletion_scheduled_at: r.deletion_scheduled_at.map(Into::into),
        kms_deletion_date: r.kms_deletion_date.map(Into::into),
    }
}

fn step(s: RetireStep) -> MasterKeyRetirementStep {
    match s {
        RetireStep::Disabled => MasterKeyRetirementStep::Disabled,
        RetireStep::Waiting => MasterKeyRetirementStep::Waiting,
        RetireStep::DeletionScheduled => MasterKeyRetirementStep::DeletionScheduled,
        RetireStep::Done => MasterKeyRetirementStep::Done,
    }
}

/// A RetireMasterKey request's fields, checked: the old key, the backup retention window and
/// the deletion pending window, in days.
fn retire_args(req: &RetireMasterKeyRequest) -> Result<(&str, u32, u32), Status> {
    let old = req.old_kms_key_id.trim();
    if old.is_empty() {
        return Err(ts_contract::status::invalid("old_kms_key_id is required"));
    }
    if old.len() > MAX_KMS_KEY_ID_LEN {
        return Err(ts_contract::status::invalid(format!(
            "old_kms_key_id must be at most {MAX_KMS_KEY_ID_LEN} characters"
        )));
    }
    if !(1..=MAX_BACKUP_RETENTION_DAYS).contains(&req.backup_retention_days) {
        return Err(ts_contract::status::invalid(format!(
            "backup_retention_days must be between 1 and {MAX_BACKUP_RETENTION_DAYS}"
        )));
    }
    let pending = match req.deletion_pending_days {
        0 => DEFAULT_DELETION_PENDING_DAYS,
        days => days,
    };
    if !DELETION_PENDING_DAYS.contains(&pending) {
        return Err(ts_contract::status::invalid(format!(
            "deletion_pending_days must be between {} and {} (0 for {DEFAULT_DELETION_PENDING_DAYS})",
            DELETION_PENDING_DAYS.start(),
            DELETION_PENDING_DAYS.end()
        )));
    }
    Ok((old, req.backup_retention_days, pending))
}

#[tonic::async_trait]
impl KeyVaultOperatorService for KeyVaultApi {
    async fn rewrap_all(&self, request: Request<RewrapAllRequest>) -> Result<Response<RewrapAllResponse>, Status> {
        let req = request.into_inner();
        let result = if req.new_kms_key_id.trim().is_empty() {
            Err(Status::invalid_argument("new_kms_key_id is required"))
        } else {
            self.vault
                .rewrap_all(req.new_kms_key_id.trim(), (req.limit > 0).then_some(u64::from(req.limit)))
                .await
                .map_err(Status::from)
        };
        // The key id is not a secret, but it is not the audit trail's business either.
        self.audit.record_in_background(ts_contract::audit::Event {
            actor_email: ts_contract::audit::OPERATOR.into(),
            action: "operator.rewrap_all".into(),
            code: result.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok),
            ..Default::default()
        });
        let report = result?;
        Ok(Response::new(RewrapAllResponse {
            rewrapped: report.rewrapped,
            already_done: report.already_done,
            remaining: report.remaining,
        }))
    }

    async fn get_master_key_status(
        &self,
        _request: Request<GetMasterKeyStatusRequest>,
    ) -> Result<Response<GetMasterKeyStatusResponse>, Status> {
        let result = self.vault.master_key_status().await.map_err(Status::from);
        let status = audited(&self.audit, operator_event("operator.get_master_key_status"), false, result).await?;
        Ok(Response::new(GetMasterKeyStatusResponse {
            current_kms_key_id: status.current,
            configured_kms_key_id: status.configured,
            wrapped_data_keys: status
                .wrapped
                .into_iter()
                .map(|(kms_key_id, data_keys)| WrappedDataKeyCount { kms_key_id, data_keys })
                .collect(),
            retirements: status.retirements.iter().map(retirement).collect(),
        }))
    }

    async fn retire_master_key(
        &self,
        request: Request<RetireMasterKeyRequest>,
    ) -> Result<Response<RetireMasterKeyResponse>, Status> {
        let req = request.into_inner();
        let result = match retire_args(&req) {
            Ok((old, retention_days, pending_days)) => {
                self.vault.retire_master_key(old, retention_days, pending_days).await.map_err(Status::from)
            }
            Err(status) => Err(status),
        };
        // Only a call that disabled the key or scheduled its deletion changed anything.
        let mutating =
            matches!(&result, Ok(r) if matches!(r.step, RetireStep::Disabled | RetireStep::DeletionScheduled));
        let report = audited(&self.audit, operator_event("operator.retire_master_key"), mutating, result).await?;
        Ok(Response::new(RetireMasterKeyResponse {
            kms_key_id: report.retirement.master_key_id.clone(),
            step: step(report.step).into(),
            kms_key_state: report.kms_state.clone().unwrap_or_default(),
            retirement: Some(retirement(&report.retirement)),
            next_step_at: report.next_step_at.map(Into::into),
        }))
    }
}
