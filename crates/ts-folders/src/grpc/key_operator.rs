//! `FolderKeyOperatorService`: the operator rotates a folder's data key and re-encrypts its
//! items. Every call is audited, whatever its outcome.

use tonic::{Code, Request, Response, Status};
use ts_contract::ids::FolderId;
use ts_proto::internal::folder_key_operator_service_server::FolderKeyOperatorService;
use ts_proto::internal::{
    ReencryptFolderRequest, ReencryptFolderResponse, RotateFolderKeyRequest, RotateFolderKeyResponse,
};

use super::FoldersApi;
use crate::audit::{AuditAction, AuditEntry};
use crate::rotation::ReencryptReport;

impl FoldersApi {
    /// Records an operator's key action on a folder (the id as sent, bounded).
    async fn audit_operator<R>(&self, folder_id: &str, action: AuditAction, result: &Result<R, Status>) {
        let code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
        let request_id = ts_runtime::server::current_request_id().map(|r| r.0).unwrap_or_default();
        let entry = AuditEntry {
            actor_email: ts_contract::audit::OPERATOR,
            folder_id,
            action: action.as_str(),
            status_code: ts_contract::status::code_name(code),
            request_id: &request_id,
            ..AuditEntry::default()
        };
        self.folders.record_audit(entry).await;
    }

    /// Runs an operator action on the folder `raw_folder_id` and audits it.
    async fn operate(&self, raw_folder_id: &str, action: AuditAction) -> Result<ReencryptReport, Status> {
        let result = async {
            let folder_id = FolderId::parse("folder_id", raw_folder_id)?;
            let report = match action {
                AuditAction::OperatorRotateFolderKey => self.folders.rotate_folder_key(&folder_id).await?,
                _ => self.folders.reencrypt_folder(&folder_id).await?,
            };
            Ok(report)
        }
        .await;
        self.audit_operator(raw_folder_id, action, &result).await;
        result
    }
}

#[tonic::async_trait]
impl FolderKeyOperatorService for FoldersApi {
    async fn rotate_folder_key(
        &self,
        request: Request<RotateFolderKeyRequest>,
    ) -> Result<Response<RotateFolderKeyResponse>, Status> {
        let r = self.operate(&request.get_ref().folder_id, AuditAction::OperatorRotateFolderKey).await?;
        Ok(Response::new(RotateFolderKeyResponse {
            key_version: r.key_version,
            reencrypted_items: r.reencrypted,
            retired_versions: r.retired,
        }))
    }

    async fn reencrypt_folder(
        &self,
        request: Request<ReencryptFolderRequest>,
    ) -> Result<Response<ReencryptFolderResponse>, Status> {
        let r = self.operate(&request.get_ref().folder_id, AuditAction::OperatorReencryptFolder).await?;
        Ok(Response::new(ReencryptFolderResponse {
            key_version: r.key_version,
            reencrypted_items: r.reencrypted,
            retired_versions: r.retired,
        }))
    }
}
