//! `FolderKeyOperatorService`: the operator rotates a folder's data key and re-encrypts its
//! items. Every call is audited, whatever its outcome.

use tonic::{Request, Response, Status};
use ts_contract::ids::FolderId;
use ts_proto::internal::folder_key_operator_service_server::FolderKeyOperatorService;
use ts_proto::internal::{
    ReencryptFolderRequest, ReencryptFolderResponse, RotateFolderKeyRequest, RotateFolderKeyResponse,
};

use super::FoldersApi;
use ts_contract::audit::Event;
use ts_runtime::audit::audited;

use crate::audit::AuditAction;
use crate::rotation::ReencryptReport;

impl FoldersApi {
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
        // The id as sent, bounded: an operator's malformed id is worth seeing in the trail.
        let event = Event {
            actor_email: ts_contract::audit::OPERATOR.to_owned(),
            folder_id: ts_contract::audit::bounded(raw_folder_id),
            action: action.as_str().to_owned(),
            ..Default::default()
        };
        audited(&*self.folders, event, true, result).await
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
