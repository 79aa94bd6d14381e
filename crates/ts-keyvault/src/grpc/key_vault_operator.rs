//! `KeyVaultOperatorService` (internal, operator only): rewrapping every data key under a new master key.

use tonic::{Request, Response, Status};
use ts_proto::internal::key_vault_operator_service_server::KeyVaultOperatorService;
use ts_proto::internal::*;

use super::*;

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
}
